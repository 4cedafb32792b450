//! Expiry alerts: CAs, issued client certificates and server certificates
//! that expire within 30 and within 14 days get a log line when they cross
//! each threshold, and every one has a gauge
//! `gateway_certificate_expiry_timestamp_seconds{kind,id}`.

use crate::clock;
use std::{collections::HashMap, sync::Mutex};

use prometheus::{GaugeVec, Opts, Registry};
use serde::Serialize;

use super::model::{AuthorityKind, CertStatus, State};

/// The alert thresholds, in days, widest first.
pub const THRESHOLDS: [i64; 2] = [30, 14];

/// One certificate and when it expires.
#[derive(Clone, Debug, Serialize)]
pub struct Expiring {
    /// `managed_ca`, `ca` (bring-your-own), `server_ca`, `client_certificate` or
    /// `server_certificate`.
    pub kind: &'static str,
    /// The CA's, client certificate's or hostname's id.
    pub id: String,
    /// A name for people (CA name, common name or hostname).
    pub name: String,
    /// Expiry, RFC 3339.
    pub expires_on: String,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// Whole days left (negative: expired).
    pub days_left: i64,
}

/// Every certificate in the state that is in use, soonest first.
pub fn all(state: &State, now: i64) -> Vec<Expiring> {
    let entry = |kind, id: &str, name: &str, at: i64| Expiring {
        kind,
        id: id.to_string(),
        name: name.to_string(),
        expires_on: clock::rfc3339(at),
        expires_at: at,
        days_left: (at - now).div_euclid(86_400),
    };
    let mut out: Vec<Expiring> = state
        .cas
        .values()
        .map(|ca| {
            let kind = match ca.kind {
                AuthorityKind::Managed => "managed_ca",
                AuthorityKind::Uploaded => "ca",
                AuthorityKind::Server => "server_ca",
            };
            entry(kind, &ca.id, &ca.name, ca.expires_on)
        })
        .chain(
            state
                .certs
                .values()
                .filter(|c| c.status == CertStatus::Active)
                .map(|c| entry("client_certificate", &c.id, &c.common_name, c.expires_on)),
        )
        .chain(state.hostnames.values().map(|h| {
            entry(
                "server_certificate",
                &h.id,
                &h.name,
                h.certificate.expires_on,
            )
        }))
        .collect();
    out.sort_by_key(|e| e.expires_at);
    out
}

/// Those that expire within `days`.
pub fn within(state: &State, now: i64, days: i64) -> Vec<Expiring> {
    let mut all = all(state, now);
    all.retain(|e| e.expires_at - now <= days * 86_400);
    all
}

/// The gauge and which thresholds each certificate has crossed already.
pub struct Expiry {
    gauge: GaugeVec,
    crossed: Mutex<HashMap<String, usize>>,
}

impl Expiry {
    /// Registers the gauge.
    pub fn new(registry: &Registry) -> anyhow::Result<Expiry> {
        let gauge = GaugeVec::new(
            Opts::new(
                "gateway_certificate_expiry_timestamp_seconds",
                "When each CA, issued client certificate and server certificate expires \
                 (Unix seconds).",
            ),
            &["kind", "id"],
        )?;
        registry.register(Box::new(gauge.clone()))?;
        Ok(Expiry {
            gauge,
            crossed: Mutex::new(HashMap::new()),
        })
    }

    /// Sets the gauges from `state` and logs each threshold crossed since the
    /// last look.
    pub fn observe(&self, state: &State) {
        let now = clock::now();
        let all = all(state, now);
        self.gauge.reset();
        let mut crossed = self.crossed.lock().unwrap_or_else(|e| e.into_inner());
        let mut seen = HashMap::new();
        for e in &all {
            self.gauge
                .with_label_values(&[e.kind, &e.id])
                .set(e.expires_at as f64);
            let level = THRESHOLDS
                .iter()
                .filter(|days| e.expires_at - now <= *days * 86_400)
                .count();
            let before = crossed.get(&e.id).copied().unwrap_or(0);
            if level > before {
                let days = THRESHOLDS[level - 1];
                log::warn!(
                    "certificate expiry: {} {} ({}) expires on {}, within {days} days",
                    e.kind,
                    e.id,
                    e.name,
                    e.expires_on
                );
            }
            // A level that went down (a renewed certificate, a later expiry)
            // is kept as it is, so that the alerts fire again for the new one.
            seen.insert(e.id.clone(), level);
        }
        *crossed = seen;
    }
}
