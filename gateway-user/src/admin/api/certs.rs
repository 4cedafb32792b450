//! Client certificates issued by the zone's managed CA: issue (from a CSR, or
//! with a key generated for the caller), list, revoke, reactivate.

use crate::clock;
use http::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Answer, ApiError, Call, Listing, method_not_allowed,
    page::{self, Paging},
};
use crate::control::{
    ControlPlane,
    model::{CertStatus, ClientCert, State},
};
use crate::pki::{self, MAX_VALIDITY_DAYS, Usage};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Issue {
    csr: Option<String>,
    #[serde(default = "default_validity")]
    validity_days: u32,
    /// Generate the key pair here (the private key is returned once, never stored).
    #[serde(default)]
    generate_key: bool,
    /// The subject's common name, with `generate_key`.
    common_name: Option<String>,
}

fn default_validity() -> u32 {
    MAX_VALIDITY_DAYS
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Edit {
    reactivate: Option<bool>,
}

/// `GET /zones/Z/client_certificates`: oldest first, a page at a time,
/// `status` `all` (the default), `active` or `revoked` (nothing is ever
/// pending here: a revocation is in force at once).
pub(super) async fn list(plane: &ControlPlane, call: &Call) -> Listing {
    let paging = Paging::of(call, page::STANDARD)?;
    let status = match call.query.get("status").map(String::as_str) {
        None | Some("all") => None,
        Some(st @ ("active" | "revoked" | "pending_reactivation" | "pending_revocation")) => {
            Some(st.to_string())
        }
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "status={other:?}: give all, active, revoked, pending_reactivation or \
                 pending_revocation"
            )));
        }
    };
    plane
        .read(|s| {
            let mut list: Vec<&ClientCert> = s
                .certs
                .values()
                .filter(|c| status.as_deref().is_none_or(|st| status_name(c) == st))
                .collect();
            list.sort_by(|a, b| (a.issued_on, &a.id).cmp(&(b.issued_on, &b.id)));
            let total = list.len();
            let page = paging.take(list.into_iter());
            Ok(paging.reply(page.into_iter().map(|c| view(s, c)).collect(), total))
        })
        .await
}

/// `/zones/Z/client_certificates[/ID]` but the listing.
pub(super) async fn route(plane: &ControlPlane, call: &Call, rest: &[&str]) -> Answer {
    match (rest, &call.method) {
        ([], &Method::POST) => issue(plane, call).await,
        ([], _) => Err(method_not_allowed("GET or POST")),
        ([id], &Method::GET) => plane.read(|s| Ok(view(s, find(s, id)?))).await,
        ([id], &Method::DELETE) => set_status(plane, id, CertStatus::Revoked).await,
        ([id], &Method::PATCH) => {
            // The reference's edit sends no body, or `{}`: it reactivates.
            let body: Edit = if call.body.iter().all(u8::is_ascii_whitespace) {
                Edit { reactivate: None }
            } else {
                call.json()?
            };
            if body.reactivate == Some(false) {
                return Err(ApiError::invalid(
                    "the only change is {\"reactivate\": true}; DELETE revokes",
                ));
            }
            set_status(plane, id, CertStatus::Active).await
        }
        ([_], _) => Err(method_not_allowed("GET, PATCH or DELETE")),
        _ => Err(ApiError::not_found("route", &rest.join("/"))),
    }
}

/// `GET /zones/Z/managed_ca`: the managed CA's certificate, for clients and origins.
pub(super) async fn managed_ca(plane: &ControlPlane, call: &Call) -> Answer {
    if call.method != Method::GET {
        return Err(method_not_allowed("GET"));
    }
    plane
        .read(|s| {
            let ca = s
                .managed_ca()
                .ok_or_else(|| ApiError::internal("the store has no managed CA"))?;
            Ok(json!({
                "id": ca.id,
                "name": ca.name,
                "certificate": ca.certificate,
                "serial_number": ca.serial_number,
                "expires_on": clock::rfc3339(ca.expires_on),
                "hostnames": s.associations(&ca.id),
            }))
        })
        .await
}

fn find<'a>(s: &'a State, id: &str) -> Result<&'a ClientCert, ApiError> {
    s.certs
        .get(id)
        .ok_or_else(|| ApiError::not_found("client certificate", id))
}

fn status_name(c: &ClientCert) -> &'static str {
    match c.status {
        CertStatus::Active => "active",
        CertStatus::Revoked => "revoked",
    }
}

async fn issue(plane: &ControlPlane, call: &Call) -> Answer {
    let body: Issue = call.json()?;
    if !(1..=MAX_VALIDITY_DAYS).contains(&body.validity_days) {
        return Err(ApiError::invalid(format!(
            "validity_days must be 1 to {MAX_VALIDITY_DAYS}"
        )));
    }
    let (key_pem, public, cn) = match (&body.csr, body.generate_key) {
        (Some(csr), false) => {
            let (public, cn) = pki::read_csr(csr).map_err(|e| ApiError::invalid(e.to_string()))?;
            (None, public, cn)
        }
        (None, true) => {
            let cn = body
                .common_name
                .clone()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| ApiError::invalid("generate_key needs a \"common_name\""))?;
            pki::check_common_name(&cn)
                .map_err(|e| ApiError::invalid(format!("{cn:?} cannot be a common name: {e}")))?;
            let key = pki::new_key()?;
            let public = public_of(&key)?;
            (Some(pki::key_pem(&key)?), public, cn)
        }
        _ => {
            return Err(ApiError::invalid(
                "give either \"csr\" (PEM) or \"generate_key\": true with a \"common_name\"",
            ));
        }
    };
    plane
        .change(|s| {
            let ca = s
                .managed_ca()
                .ok_or_else(|| ApiError::internal("the store has no managed CA"))?;
            let ends = clock::now() + i64::from(body.validity_days) * 86_400;
            if ends > ca.expires_on {
                return Err(ApiError::invalid(format!(
                    "validity_days {} would outlast the managed CA, which expires on {}",
                    body.validity_days,
                    clock::rfc3339(ca.expires_on)
                )));
            }
            let signer =
                pki::Signer::from_pem(&ca.certificate, ca.key.as_deref().unwrap_or_default())?;
            let cert = pki::issue(&signer, &cn, &public, Usage::Client, body.validity_days)
                .map_err(|e| ApiError::invalid(format!("{e:#}")))?;
            let der = cert.to_der().map_err(anyhow::Error::from)?;
            let (info, _) = pki::info(&der)?;
            let record = ClientCert {
                id: pki::random_id(),
                ca_id: ca.id.clone(),
                serial_number: info.serial,
                common_name: cn.clone(),
                certificate: pki::cert_pem(&cert)?,
                csr: body.csr.clone(),
                fingerprint_sha256: info.fingerprint_sha256,
                status: CertStatus::Active,
                issued_on: clock::now(),
                expires_on: info.not_after,
                revoked_on: None,
            };
            let mut out = view(s, &record);
            if let Some(key) = &key_pem {
                out["private_key"] = json!(key);
            }
            s.certs.insert(record.id.clone(), record);
            Ok(out)
        })
        .await
}

async fn set_status(plane: &ControlPlane, id: &str, status: CertStatus) -> Answer {
    plane
        .change(|s| {
            find(s, id)?;
            let cert = s.certs.get_mut(id).expect("found above");
            if cert.status != status {
                cert.status = status;
                cert.revoked_on = (status == CertStatus::Revoked).then(clock::now);
            }
            Ok(view(s, &s.certs[id]))
        })
        .await
}

fn view(s: &State, c: &ClientCert) -> Value {
    let ca_name = s.cas.get(&c.ca_id).map(|ca| ca.name.clone());
    json!({
        "id": c.id,
        "status": status_name(c),
        "common_name": c.common_name,
        "serial_number": c.serial_number,
        "fingerprint_sha256": c.fingerprint_sha256,
        "certificate": c.certificate,
        "csr": c.csr,
        "issued_on": clock::rfc3339(c.issued_on),
        "expires_on": clock::rfc3339(c.expires_on),
        "revoked_at": c.revoked_on.map(clock::rfc3339),
        "certificate_authority": {"id": c.ca_id, "name": ca_name},
    })
}

fn public_of(
    key: &boring::pkey::PKey<boring::pkey::Private>,
) -> anyhow::Result<boring::pkey::PKey<boring::pkey::Public>> {
    Ok(boring::pkey::PKey::public_key_from_der(
        &key.public_key_to_der()?,
    )?)
}
