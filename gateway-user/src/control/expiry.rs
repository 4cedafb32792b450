//! Expiry alerts: CAs, issued client certificates and server certificates
//! that expire within 30 and within 14 days get a log line when they cross
//! each threshold, and every one the operator renews has a gauge
//! `gateway_certificate_expiry_timestamp_seconds{kind,id}`. Server
//! certificates the gateway issued have none: it renews them itself 30 days
//! ahead, and a gauge per hostname would cost more than the hostname (an
//! alert still fires if one is not renewed).

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

/// A certificate in use, as the state holds it (nothing copied).
#[derive(Clone, Copy)]
struct Cert<'a> {
    kind: &'static str,
    id: &'a str,
    name: &'a str,
    expires_at: i64,
    /// Whether it has a gauge (not a server certificate the gateway renews).
    gauged: bool,
}

impl Cert<'_> {
    fn listed(&self, now: i64) -> Expiring {
        Expiring {
            kind: self.kind,
            id: self.id.to_string(),
            name: self.name.to_string(),
            expires_on: clock::rfc3339(self.expires_at),
            expires_at: self.expires_at,
            days_left: (self.expires_at - now).div_euclid(86_400),
        }
    }
}

fn of_ca(ca: &Authority) -> Cert<'_> {
    let kind = match ca.kind {
        AuthorityKind::Managed => "managed_ca",
        AuthorityKind::Uploaded => "ca",
        AuthorityKind::Server => "server_ca",
    };
    Cert {
        kind,
        id: &ca.id,
        name: &ca.name,
        expires_at: ca.expires_on,
        gauged: true,
    }
}

/// An issued certificate, while it is in use (active).
fn of_cert(c: &ClientCert) -> Option<Cert<'_>> {
    (c.status == CertStatus::Active).then_some(Cert {
        kind: "client_certificate",
        id: &c.id,
        name: &c.common_name,
        expires_at: c.expires_on,
        gauged: true,
    })
}

fn of_hostname(h: &Hostname) -> Cert<'_> {
    Cert {
        kind: "server_certificate",
        id: &h.id,
        name: &h.name,
        expires_at: h.certificate.expires_on,
        gauged: !h.certificate.managed,
    }
}

/// Every certificate in the state that is in use.
fn in_use(state: &State) -> impl Iterator<Item = Cert<'_>> {
    state
        .cas
        .values()
        .map(of_ca)
        .chain(state.certs.values().filter_map(of_cert))
        .chain(state.hostnames.values().map(of_hostname))
}

/// What a change did to the certificates in use: those that left, and those
/// that came or changed.
fn changed<'a>(old: &'a State, new: &'a State) -> (Vec<Cert<'a>>, Vec<Cert<'a>>) {
    fn walk<'a, T: Clone + PartialEq>(
        old: &'a Table<T>,
        new: &'a Table<T>,
        view: impl Fn(&'a T) -> Option<Cert<'a>>,
        (gone, came): &mut (Vec<Cert<'a>>, Vec<Cert<'a>>),
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
    walk(&old.cas, &new.cas, |c| Some(of_ca(c)), &mut out);
    walk(&old.certs, &new.certs, of_cert, &mut out);
    walk(
        old.hostnames.table(),
        new.hostnames.table(),
        |h| Some(of_hostname(h)),
        &mut out,
    );
    out
}

/// Those in use that expire within `days`, soonest first.
pub fn within(state: &State, now: i64, days: i64) -> Vec<Expiring> {
    let mut out: Vec<Expiring> = in_use(state)
        .filter(|c| c.expires_at - now <= days * 86_400)
        .map(|c| c.listed(now))
        .collect();
    out.sort_by_key(|e| e.expires_at);
    out
}

/// The gauge and which thresholds each certificate has crossed already.
pub struct Expiry {
    gauge: GaugeVec,
    /// Whether crossed thresholds are logged (in a fleet, by the leader only).
    alerting: std::sync::atomic::AtomicBool,
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
            alerting: std::sync::atomic::AtomicBool::new(true),
            crossed: Mutex::new(HashMap::new()),
        })
    }

    /// Sets the gauges from `state` and logs each threshold crossed since the
    /// last look (at start and hourly: thresholds are crossed as time passes).
    pub fn observe(&self, state: &State) {
        let now = clock::now();
        self.gauge.reset();
        // The lock is held to copy and to swap, not for the whole look, so a
        // change's `observe_change` waits milliseconds, not the look's second.
        let before = self.crossed().clone();
        let mut seen = HashMap::new();
        for c in in_use(state) {
            let level = self.look(&c, before.get(c.id).copied().unwrap_or(0), now);
            if level > 0 {
                seen.insert(c.id.to_string(), level);
            }
        }
        *self.crossed() = seen;
    }

    /// Turns alerts on or off (a fleet's nodes alert only while leader;
    /// thresholds are still tracked, so a new leader does not alert again).
    pub fn set_alerting(&self, on: bool) {
        self.alerting
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Follows a change: only the certificates it touched are looked at.
    pub fn observe_change(&self, old: &State, new: &State) {
        let now = clock::now();
        let (gone, came) = changed(old, new);
        let mut crossed = self.crossed();
        // A record that changed keeps the thresholds it had crossed.
        let before: HashMap<&str, usize> = came
            .iter()
            .filter_map(|c| Some((c.id, *crossed.get(c.id)?)))
            .collect();
        for c in &gone {
            if c.gauged {
                let _ = self.gauge.remove_label_values(&[c.kind, c.id]);
            }
            crossed.remove(c.id);
        }
        for c in &came {
            let level = self.look(c, before.get(c.id).copied().unwrap_or(0), now);
            if level > 0 {
                crossed.insert(c.id.to_string(), level);
            }
        }
    }

    /// The thresholds crossed so far, by id, of those that crossed one (a
    /// panic elsewhere does not poison them).
    fn crossed(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.crossed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets one gauge and logs a threshold crossed above `before`; returns the
    /// thresholds crossed. A level that went down (a renewed certificate, a
    /// later expiry) is kept as it is, so the alerts fire again for the new one.
    fn look(&self, c: &Cert<'_>, before: usize, now: i64) -> usize {
        if c.gauged {
            self.gauge
                .with_label_values(&[c.kind, c.id])
                .set(c.expires_at as f64);
        }
        let level = THRESHOLDS
            .iter()
            .filter(|days| c.expires_at - now <= *days * 86_400)
            .count();
        if level > before && self.alerting.load(std::sync::atomic::Ordering::Relaxed) {
            let days = THRESHOLDS[level - 1];
            log::warn!(
                "certificate expiry: {} {} ({}) expires on {}, within {days} days",
                c.kind,
                c.id,
                c.name,
                clock::rfc3339(c.expires_at)
            );
        }
        level
    }
}
