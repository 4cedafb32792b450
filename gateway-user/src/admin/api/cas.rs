//! Bring-your-own CAs (`/accounts/A/mtls_certificates`) and their CRL sources.

use crate::clock;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Answer, ApiError, Call, Listing, method_not_allowed,
    page::{self, Paging},
};
use crate::control::{
    ControlPlane, crl,
    model::{Authority, AuthorityKind, State},
};
use crate::pki;

/// Bring-your-own CAs per account at most.
pub(super) const MAX_UPLOADED_CAS: usize = 5;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Upload {
    ca: bool,
    certificates: String,
    name: Option<String>,
    /// A file path or http:// URL to fetch the CA's CRL from.
    crl_source: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CrlBody {
    source: String,
}

/// `GET /accounts/A/mtls_certificates`: the uploaded CAs, oldest first (five at most).
pub(super) async fn list(plane: &ControlPlane, call: &Call) -> Listing {
    let paging = Paging::of(call, page::WHOLE)?;
    plane
        .read(|s| {
            let mut cas: Vec<&Authority> = uploaded(s).collect();
            cas.sort_by(|a, b| (a.uploaded_on, &a.id).cmp(&(b.uploaded_on, &b.id)));
            let total = cas.len();
            let page = paging.take(cas.into_iter());
            Ok(paging.reply(page.into_iter().map(|ca| view(s, ca)).collect(), total))
        })
        .await
}

/// `GET /accounts/A/mtls_certificates/ID/associations`: the services using
/// the CA, one per associated hostname (by name).
pub(super) async fn associations(plane: &ControlPlane, call: &Call, id: &str) -> Listing {
    let paging = Paging::of(call, page::WHOLE)?;
    plane
        .read(|s| {
            find(s, id)?;
            let names = s.associations(id);
            let total = names.len();
            let page = paging.take(names.into_iter());
            let result = page
                .into_iter()
                .map(|name| json!({"service": name, "status": "active"}))
                .collect();
            Ok(paging.reply(result, total))
        })
        .await
}

/// `/accounts/A/mtls_certificates[/ID[/crl[/refresh]]]` but the listings.
pub(super) async fn route(plane: &ControlPlane, call: &Call, rest: &[&str]) -> Answer {
    match (rest, &call.method) {
        ([], &Method::POST) => upload(plane, call).await,
        ([], _) => Err(method_not_allowed("GET or POST")),
        ([id], &Method::GET) => plane.read(|s| Ok(view(s, find(s, id)?))).await,
        ([id], &Method::DELETE) => {
            plane
                .change(|s| {
                    find(s, id)?;
                    let hosts = s.associations(id);
                    if !hosts.is_empty() {
                        return Err(ApiError::conflict(format!(
                            "mTLS certificate {id} is associated with {}: remove its hostname \
                             associations first (PUT hostname_associations with \"hostnames\": [])",
                            hosts.join(", ")
                        )));
                    }
                    s.cas.remove(*id);
                    Ok(json!({"id": id}))
                })
                .await
        }
        ([_], _) => Err(method_not_allowed("GET or DELETE")),
        ([id, "crl"], &Method::PUT) => {
            let body: CrlBody = call.json()?;
            crl::check_source(&body.source).map_err(|e| ApiError::invalid(e.to_string()))?;
            set_crl(plane, id, &body.source, true).await
        }
        ([id, "crl"], &Method::DELETE) => {
            plane
                .change(|s| {
                    find(s, id)?;
                    let ca = s.cas.get_mut(*id).expect("found above");
                    ca.crl = None;
                    Ok(view(s, &s.cas[*id]))
                })
                .await
        }
        ([_, "crl"], _) => Err(method_not_allowed("PUT or DELETE")),
        ([id, "crl", "refresh"], &Method::POST) => {
            let source = plane
                .read(|s| {
                    let ca = find(s, id)?;
                    ca.crl.as_ref().map(|c| c.source.clone()).ok_or_else(|| {
                        ApiError::invalid(format!(
                            "mTLS certificate {id} has no CRL source: set one with PUT …/crl"
                        ))
                    })
                })
                .await?;
            set_crl(plane, id, &source, false).await
        }
        ([_, "crl", "refresh"], _) => Err(method_not_allowed("POST")),
        _ => Err(ApiError::not_found("route", &rest.join("/"))),
    }
}

fn uploaded(s: &State) -> impl Iterator<Item = &Authority> {
    s.cas.values().filter(|c| c.kind == AuthorityKind::Uploaded)
}

fn find<'a>(s: &'a State, id: &str) -> Result<&'a Authority, ApiError> {
    s.cas
        .get(id)
        .filter(|c| c.kind == AuthorityKind::Uploaded)
        .ok_or_else(|| ApiError::not_found("mTLS certificate", id))
}

async fn upload(plane: &ControlPlane, call: &Call) -> Answer {
    let body: Upload = call.json()?;
    if !body.ca {
        return Err(ApiError::invalid(
            "only CA certificates can verify client certificates: set \"ca\": true",
        ));
    }
    let now = clock::now();
    let info = pki::check_uploaded_ca(&body.certificates, now)
        .map_err(|e| ApiError::invalid(format!("certificates: {e:#}")))?;
    let crl = match &body.crl_source {
        None => None,
        Some(source) => {
            crl::check_source(source).map_err(|e| ApiError::invalid(e.to_string()))?;
            let fetched = crl::fetch(source).await;
            match crl::updated(None, source, fetched, &body.certificates) {
                (c, None) => Some(c),
                (_, Some(e)) => return Err(ApiError::invalid(format!("crl_source: {e}"))),
            }
        }
    };
    plane
        .change(|s| {
            let count = uploaded(s).count();
            if count >= MAX_UPLOADED_CAS {
                return Err(ApiError::invalid(format!(
                    "the account already has {count} CAs, the limit is {MAX_UPLOADED_CAS}: \
                     delete one first"
                )));
            }
            let name = match body.name.as_deref().map(str::trim) {
                None => info.subject.clone(),
                Some("") => {
                    return Err(ApiError::invalid(
                        "\"name\" is empty: give a name or leave it out",
                    ));
                }
                Some(n) => n.to_string(),
            };
            if let Some(other) = uploaded(s).find(|c| c.name == name) {
                return Err(ApiError::conflict(format!(
                    "an mTLS certificate named {name:?} exists already ({})",
                    other.id
                )));
            }
            if let Some(other) =
                uploaded(s).find(|c| c.serial_number == info.serial && c.issuer == info.issuer)
            {
                return Err(ApiError::conflict(format!(
                    "this CA was uploaded already as {} ({:?})",
                    other.id, other.name
                )));
            }
            let ca = Authority {
                id: pki::random_id(),
                name,
                kind: AuthorityKind::Uploaded,
                certificate: body.certificates.clone(),
                key: None,
                issuer: info.issuer.clone(),
                serial_number: info.serial.clone(),
                signature: info.signature.into(),
                uploaded_on: now,
                expires_on: info.not_after,
                crl: crl.clone(),
            };
            let out = view(s, &ca);
            s.cas.insert(ca.id.clone(), ca);
            Ok(out)
        })
        .await
}

/// Fetches the CRL from `source` and stores it for CA `id`. A new source must
/// give a good CRL; a refresh that fails keeps the previous CRL, records the
/// error, and answers 502.
async fn set_crl(plane: &ControlPlane, id: &str, source: &str, new: bool) -> Answer {
    let fetched = crl::fetch(source).await;
    let mut failure = None;
    let answer = plane
        .change(|s| {
            let ca = find(s, id)?;
            if !new && ca.crl.as_ref().map(|c| c.source.as_str()) != Some(source) {
                // The source was replaced or removed while this refresh fetched
                // the old one: that change stands.
                return Ok(view(s, ca));
            }
            let (updated, error) = crl::updated(
                ca.crl.as_ref(),
                source,
                crl::again(&fetched),
                &ca.certificate,
            );
            if let Some(e) = error {
                if new {
                    return Err(ApiError::invalid(format!("CRL source: {e}")));
                }
                failure = Some(e);
            }
            s.cas.get_mut(id).expect("found above").crl = Some(updated);
            Ok(view(s, &s.cas[id]))
        })
        .await?;
    match failure {
        None => Ok(answer),
        Some(e) => {
            let mut error = ApiError::internal(format!(
                "the CRL refresh failed, the previous CRL stays in force: {e}"
            ));
            error.status = StatusCode::BAD_GATEWAY;
            Err(error)
        }
    }
}

fn view(s: &State, ca: &Authority) -> Value {
    json!({
        "id": ca.id,
        "name": ca.name,
        "ca": true,
        "issuer": ca.issuer,
        "serial_number": ca.serial_number,
        "signature": ca.signature,
        "certificates": ca.certificate,
        "uploaded_on": clock::rfc3339(ca.uploaded_on),
        "expires_on": clock::rfc3339(ca.expires_on),
        "hostnames": s.associations(&ca.id),
        "crl": ca.crl.as_ref().map(|c| json!({
            "source": c.source,
            "fetched_on": c.fetched_on.map(clock::rfc3339),
            "next_update": c.next_update.map(clock::rfc3339),
            "revoked": c.revoked,
            "last_error": c.last_error,
        })),
    })
}
