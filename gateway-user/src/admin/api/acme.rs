//! ACME in the admin API: the zone's ACME settings
//! (`zones/Z/settings/acme`), a hostname's `ssl.method: "tls-alpn"` (its
//! certificate source becomes `acme`), and the `ssl` object's ACME fields.

use http::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Answer, ApiError, Call, method_not_allowed};
use crate::{
    clock,
    control::{
        ControlPlane,
        acme_state::{AcmeMethod, AcmeOrder, AcmeZone, SslStatus},
        model::{Hostname, State},
    },
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Setting {
    value: Option<Settings>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    directory: String,
    #[serde(default)]
    contact: Vec<String>,
    directory_ca: Option<String>,
    roots: Option<String>,
    renew_after_secs: Option<i64>,
}

/// The settings as shown (never the account key).
fn shown(acme: Option<&AcmeZone>) -> Value {
    let value = acme.map(|a| {
        json!({
            "directory": a.directory,
            "contact": a.contact,
            "directory_ca": a.directory_ca,
            "roots": a.roots,
            "renew_after_secs": a.renew_after_secs,
            "account_key": a.account_key.is_some(),
        })
    });
    json!({"id": "acme", "value": value, "editable": true})
}

/// `GET|PATCH /zones/Z/settings/acme`: `{"value": {"directory": "https://…",
/// "contact": ["mailto:…"], "directory_ca": "/path.pem", "roots": "/path.pem",
/// "renew_after_secs": N}}`
/// or `{"value": null}` (refused while a hostname uses ACME).
pub(super) async fn setting(plane: &ControlPlane, call: &Call) -> Answer {
    match call.method {
        Method::GET => plane.read(|s| Ok(shown(s.zone.acme.as_ref()))).await,
        Method::PATCH => {
            let body: Setting = call.json()?;
            if let Some(v) = &body.value {
                check(v)?;
            }
            plane
                .change(|s| {
                    s.zone.acme = match &body.value {
                        None if s.hostnames.values().any(|h| h.acme.is_some()) => {
                            return Err(ApiError::conflict(
                                "hostnames use ACME: give them another certificate first",
                            ));
                        }
                        None => None,
                        Some(v) => Some(AcmeZone {
                            directory: v.directory.clone(),
                            contact: v.contact.clone(),
                            directory_ca: v.directory_ca.clone(),
                            roots: v.roots.clone(),
                            renew_after_secs: v.renew_after_secs,
                            // The account stays while the server does.
                            account_key: s
                                .zone
                                .acme
                                .as_ref()
                                .filter(|a| a.directory == v.directory)
                                .and_then(|a| a.account_key.clone()),
                        }),
                    };
                    Ok(shown(s.zone.acme.as_ref()))
                })
                .await
        }
        _ => Err(method_not_allowed("GET or PATCH")),
    }
}

fn check(v: &Settings) -> Result<(), ApiError> {
    let uri: http::Uri = v
        .directory
        .parse()
        .map_err(|_| ApiError::invalid(format!("{:?} is not a URL", v.directory)))?;
    if uri.scheme_str() != Some("https") || uri.host().is_none() {
        return Err(ApiError::invalid(format!(
            "directory {:?}: an ACME directory is an https:// URL",
            v.directory
        )));
    }
    if let Some(c) = v.contact.iter().find(|c| !c.starts_with("mailto:")) {
        return Err(ApiError::invalid(format!(
            "contact {c:?}: give mailto: URLs"
        )));
    }
    if v.directory_ca.as_ref().is_some_and(|p| !p.starts_with('/')) {
        return Err(ApiError::invalid(
            "directory_ca: give an absolute file path",
        ));
    }
    if v.renew_after_secs.is_some_and(|r| r < 1) {
        return Err(ApiError::invalid("renew_after_secs: at least 1"));
    }
    Ok(())
}

/// Applies `ssl.method`: `tls-alpn` makes the certificate source `acme`
/// (the zone must have ACME settings; not for a wildcard hostname). Other
/// methods (`http`, `txt`, the reference's) are accepted and change nothing.
pub(super) fn apply_method(s: &State, host: &mut Hostname, method: &str) -> Result<(), ApiError> {
    if method != "tls-alpn" {
        return Ok(());
    }
    if s.zone.acme.is_none() {
        return Err(ApiError::invalid(
            "ssl.method tls-alpn: the zone has no ACME settings (PATCH settings/acme first)",
        ));
    }
    if host.acme.is_none() {
        host.acme = Some(AcmeOrder::new(AcmeMethod::TlsAlpn));
    }
    check_wildcard(host)
}

/// A wildcard hostname cannot be validated by TLS-ALPN-01.
pub(super) fn check_wildcard(host: &Hostname) -> Result<(), ApiError> {
    if host.wildcard && host.acme.is_some() {
        return Err(ApiError::invalid(
            "a wildcard hostname cannot use ssl.method tls-alpn (TLS-ALPN-01 validates one name)",
        ));
    }
    Ok(())
}

/// The `ssl.status` of a hostname: its ACME status, else `active`.
pub(super) fn ssl_status(h: &Hostname) -> &'static str {
    match h.acme.as_ref().map(|a| a.status) {
        None | Some(SslStatus::Active) => "active",
        Some(SslStatus::Initializing) => "initializing",
        Some(SslStatus::PendingValidation) => "pending_validation",
        Some(SslStatus::PendingIssuance) => "pending_issuance",
        Some(SslStatus::PendingRenewal) => "pending_renewal",
    }
}

/// The `ssl` object's source-dependent fields.
pub(super) fn ssl_fields(h: &Hostname) -> Value {
    let Some(a) = &h.acme else {
        return json!({
            "status": "active",
            // The reference's `certificate_authority` names public CAs only.
            "issued_by": if h.certificate.managed { "gateway" } else { "custom" },
            "method": "http",
            "certificate_source": if h.certificate.managed { "gateway" } else { "uploaded" },
            "validation_errors": [],
        });
    };
    let errors: Vec<Value> = a
        .validation_errors
        .iter()
        .map(|e| json!({"message": e}))
        .collect();
    let active = matches!(a.status, SslStatus::Active | SslStatus::PendingRenewal);
    json!({
        "status": a.status,
        "issued_by": if active { "acme" } else { "gateway" },
        "method": a.method,
        "certificate_source": "acme",
        "certificate_authority": a.certificate_authority,
        "validation_errors": errors,
        "renew_on": a.renew_on.map(clock::rfc3339),
    })
}
