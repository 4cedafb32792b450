//! Expiry alerts: CAs, issued client certificates and server certificates
//! that expire within 30 and within 14 days get a log line when they cross
//! each threshold, and every one has a gauge
//! `gateway_certificate_expiry_timestamp_seconds{kind,id}`.

use crate::clock;
use std::{collections::HashMap, sync::Mutex};

use prometheus::{GaugeVec, Opts, Registry};
use serde::Serialize;

use imbl::ordmap::DiffItem;

use super::model::{Authority, AuthorityKind, CertStatus, ClientCert, Hostname, State, Table};

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

fn entry(kind: &'static str, id: &str, name: &str, at: i64, now: i64) -> Expiring {
    Expiring {
        kind,
        id: id.to_string(),
        name: name.to_string(),
        expires_on: clock::rfc3339(at),
        expires_at: at,
        days_left: (at - now).div_euclid(86_400),
    }
}

fn of_ca(ca: &Authority, now: i64) -> Expiring {
    let kind = match ca.kind {
        AuthorityKind::Managed => "managed_ca",
        AuthorityKind::Uploaded => "ca",
        AuthorityKind::Server => "server_ca",
    };
    entry(kind, &ca.id, &ca.name, ca.expires_on, now)
}

/// An issued certificate, while it is in use (active).
fn of_cert(c: &ClientCert, now: i64) -> Option<Expiring> {
    (c.status == CertStatus::Active).then(|| {
        entry(
            "client_certificate",
            &c.id,
            &c.common_name,
            c.expires_on,
            now,
        )
    })
}

fn of_hostname(h: &Hostname, now: i64) -> Expiring {
    let at = h.certificate.expires_on;
    entry("server_certificate", &h.id, &h.name, at, now)
}

/// Every certificate in the state that is in use, soonest first.
pub fn all(state: &State, now: i64) -> Vec<Expiring> {
    let mut out: Vec<Expiring> = state
        .cas
        .values()
        .map(|ca| of_ca(ca, now))
        .chain(state.certs.values().filter_map(|c| of_cert(c, now)))
        .chain(state.hostnames.values().map(|h| of_hostname(h, now)))
        .collect();
    out.sort_by_key(|e| e.expires_at);
    out
}

/// What a change did to the certificates in use: those that left, and those
/// that came or changed.
fn changed(old: &State, new: &State, now: i64) -> (Vec<Expiring>, Vec<Expiring>) {
    fn walk<T: Clone + PartialEq>(
        old: &Table<T>,
        new: &Table<T>,
        view: impl Fn(&T) -> Option<Expiring>,
        (gone, came): &mut (Vec<Expiring>, Vec<Expiring>),
    ) {
        for item in old.diff(new) {
            match item {
                DiffItem::Remove(_, v) => gone.extend(view(v)),
                DiffItem::Add(_, v) => came.extend(view(v)),
                DiffItem::Update {
                    old: (_, a),
                    new: (_, b),
                } => {
                    gone.extend(view(a));
                    came.extend(view(b));
                }
            }
        }
    }
    let mut out = (Vec::new(), Vec::new());
    walk(&old.cas, &new.cas, |c| Some(of_ca(c, now)), &mut out);
    walk(&old.certs, &new.certs, |c| of_cert(c, now), &mut out);
    walk(
        old.hostnames.table(),
        new.hostnames.table(),
        |h| Some(of_hostname(h, now)),
        &mut out,
    );
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
    /// last look (at start and hourly: thresholds are crossed as time passes).
    pub fn observe(&self, state: &State) {
        let now = clock::now();
        let all = all(state, now);
        self.gauge.reset();
        // The lock is held to copy and to swap, not for the whole look, so a
        // change's `observe_change` waits milliseconds, not the look's second.
        let before = self.crossed().clone();
        let mut seen = HashMap::with_capacity(all.len());
        for e in &all {
            let level = self.look(e, before.get(&e.id).copied().unwrap_or(0), now);
            seen.insert(e.id.clone(), level);
        }
        *self.crossed() = seen;
    }

    /// Follows a change: only the certificates it touched are looked at.
    pub fn observe_change(&self, old: &State, new: &State) {
        let now = clock::now();
        let (gone, came) = changed(old, new, now);
        let mut crossed = self.crossed();
        // A record that changed keeps the thresholds it had crossed.
        let before: HashMap<String, usize> = came
            .iter()
            .filter_map(|e| Some((e.id.clone(), *crossed.get(&e.id)?)))
            .collect();
        for e in &gone {
            let _ = self.gauge.remove_label_values(&[e.kind, &e.id]);
            crossed.remove(&e.id);
        }
        for e in &came {
            let level = self.look(e, before.get(&e.id).copied().unwrap_or(0), now);
            crossed.insert(e.id.clone(), level);
        }
    }

    /// The thresholds crossed so far, by id (a panic elsewhere does not poison them).
    fn crossed(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.crossed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets one gauge and logs a threshold crossed above `before`; returns the
    /// thresholds crossed. A level that went down (a renewed certificate, a
    /// later expiry) is kept as it is, so the alerts fire again for the new one.
    fn look(&self, e: &Expiring, before: usize, now: i64) -> usize {
        self.gauge
            .with_label_values(&[e.kind, &e.id])
            .set(e.expires_at as f64);
        let level = THRESHOLDS
            .iter()
            .filter(|days| e.expires_at - now <= *days * 86_400)
            .count();
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
        level
    }
}
