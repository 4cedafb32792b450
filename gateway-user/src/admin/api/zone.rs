//! The zone: listing, its TLS settings, and the expiry listing.

use http::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Answer, ApiError, Call, Listing, method_not_allowed,
    page::{self, Paging},
    to_value,
};
use crate::{
    clock,
    control::{ControlPlane, expiry, model::State},
    tls_version::TlsVersion,
};

/// The zone as the API shows it, with the fields the reference's zone has
/// (it was created with the store, at the first run).
pub(super) fn view(s: &State) -> Value {
    let created = clock::rfc3339(s.server_ca().map_or(0, |ca| ca.uploaded_on));
    json!({
        "id": s.meta.zone_id,
        "name": s.meta.zone_name,
        "status": "active",
        "type": "full",
        "paused": false,
        "development_mode": 0,
        "name_servers": [],
        "original_name_servers": [],
        "created_on": created,
        "modified_on": created,
        "activated_on": created,
        "account": {"id": s.meta.account_id, "name": "gateway"},
        "owner": {"id": s.meta.account_id, "name": "gateway", "type": "organization"},
        "plan": {"id": "gateway", "name": "Gateway", "is_subscribed": true},
        "meta": {"custom_certificate_quota": 0, "page_rule_quota": 0, "phishing_detected": false},
        "permissions": [],
        "default_hostname": s.meta.default_hostname,
    })
}

/// `GET /zones`: the one zone, filtered by `name` if given.
pub(super) async fn list(plane: &ControlPlane, call: &Call) -> Listing {
    let paging = Paging::of(call, page::STANDARD)?;
    let name = call.query.get("name").map(|n| n.to_ascii_lowercase());
    plane
        .read(|s| {
            let zones: Vec<Value> = Some(view(s))
                .filter(|_| name.as_ref().is_none_or(|n| *n == s.meta.zone_name))
                .into_iter()
                .collect();
            let total = zones.len();
            Ok(paging.reply(paging.take(zones.into_iter()), total))
        })
        .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Setting<T> {
    value: T,
}

/// `GET|PATCH /zones/Z/settings/{min_tls_version,ciphers,session_resumption}`.
pub(super) async fn settings(plane: &ControlPlane, call: &Call, rest: &[&str]) -> Answer {
    let setting = |id: &str, value: Value| json!({"id": id, "value": value, "editable": true});
    match (rest, &call.method) {
        (["min_tls_version"], &Method::GET) => {
            plane
                .read(|s| Ok(setting("min_tls_version", json!(s.zone.min_tls_version))))
                .await
        }
        (["min_tls_version"], &Method::PATCH) => {
            let body: Setting<TlsVersion> = call.json()?;
            plane
                .change(|s| {
                    s.zone.min_tls_version = body.value;
                    Ok(setting("min_tls_version", json!(body.value)))
                })
                .await
        }
        (["ciphers"], &Method::GET) => {
            plane
                .read(|s| Ok(setting("ciphers", json!(s.zone.ciphers))))
                .await
        }
        (["ciphers"], &Method::PATCH) => {
            let body: Setting<Vec<String>> = call.json()?;
            plane
                .change(|s| {
                    s.zone.ciphers = body.value.clone();
                    Ok(setting("ciphers", json!(body.value)))
                })
                .await
        }
        (["session_resumption"], &Method::GET) => {
            plane
                .read(|s| {
                    Ok(setting(
                        "session_resumption",
                        json!(s.zone.session_resumption),
                    ))
                })
                .await
        }
        (["session_resumption"], &Method::PATCH) => {
            let body: Setting<bool> = call.json()?;
            plane
                .change(|s| {
                    s.zone.session_resumption = body.value;
                    Ok(setting("session_resumption", json!(body.value)))
                })
                .await
        }
        (["acme"], _) => super::acme::setting(plane, call).await,
        (["min_tls_version" | "ciphers" | "session_resumption"], _) => {
            Err(method_not_allowed("GET or PATCH"))
        }
        _ => Err(ApiError::not_found("zone setting", &rest.join("/"))),
    }
}

/// `GET /zones/Z/expiring_certificates?days=30`: what expires within that many days.
pub(super) async fn expiring(plane: &ControlPlane, call: &Call) -> Listing {
    if call.method != Method::GET {
        return Err(method_not_allowed("GET"));
    }
    let days = match call.query.get("days") {
        None => expiry::THRESHOLDS[0],
        Some(d) => d
            .parse::<i64>()
            .ok()
            .filter(|d| (0..=36_500).contains(d))
            .ok_or_else(|| ApiError::invalid(format!("days={d:?}: give a whole number of days")))?,
    };
    let paging = Paging::of(call, page::STANDARD)?;
    let list = plane.read(|s| expiry::within(s, clock::now(), days)).await;
    let total = list.len();
    let page = paging
        .take(list.into_iter())
        .into_iter()
        .map(to_value)
        .collect::<Result<_, _>>()?;
    Ok(paging.reply(page, total))
}
