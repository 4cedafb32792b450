//! The terminator's Prometheus metrics, and the handles the request path
//! counts with: resolved once (per hostname entry, per compiled rule set, per
//! label of a connection counter), so that counting takes no registry lock.

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::{
    metrics::hosts::{HostRequests, RequestsByHost},
    rules::RuleSet,
    tls::{
        HostTls,
        resumption::{Kind, Refused},
    },
};

/// Counters, histograms and gauges of the terminator.
pub struct TerminatorMetrics {
    /// Handshakes by result (`ok`, `failed`, `timeout`) and TLS version.
    pub handshakes: IntCounterVec,
    /// Client certificates on mTLS hostnames by status (`none`, `verified`, `invalid`, `revoked`).
    pub client_certs: IntCounterVec,
    /// Completed handshakes by kind (`full`, `resumed`).
    pub handshake_kinds: IntCounterVec,
    /// Sessions offered but not resumed, by reason (`disabled`,
    /// `unknown_ticket_key`, `not_resumable`).
    pub resumption_refused: IntCounterVec,
    /// Requests by hostname (a bounded number of them) and status code.
    pub requests: RequestsByHost,
    /// Connections closed at once because the connection limit was reached.
    pub rejected_connections: IntCounter,
    /// Handshake duration.
    pub handshake_seconds: Histogram,
    /// Request duration, origin included.
    pub request_seconds: Histogram,
    /// Connections open now.
    pub open_connections: IntGauge,
    /// WebSocket upgrades the origin accepted (101), tunnels opened.
    pub websocket_upgrades: IntCounter,
    /// WebSocket tunnels open now.
    pub open_tunnels: IntGauge,
    /// Rule matches by rule and action.
    pub rule_matches: IntCounterVec,
    /// Time to evaluate the rules on one request.
    pub rule_seconds: Histogram,
    /// The match counters of the rule set that served the last request.
    rule_counters: ArcSwap<RuleCounters>,
    /// Handles of the connection counters' fixed labels.
    connection_counters: ConnectionCounters,
}

impl TerminatorMetrics {
    /// Creates the metrics and registers them; at most `per_host_limit`
    /// hostnames get a `host` label of their own (see [`RequestsByHost`]).
    pub fn new(
        registry: &Registry,
        per_host_limit: usize,
    ) -> prometheus::Result<TerminatorMetrics> {
        let buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let m = TerminatorMetrics {
            handshakes: IntCounterVec::new(
                Opts::new(
                    "gateway_tls_handshakes_total",
                    "TLS handshakes by result and version.",
                ),
                &["result", "version"],
            )?,
            client_certs: counter_vec(
                "gateway_tls_client_certificates_total",
                "Handshakes on mTLS hostnames by client certificate status.",
                "status",
            )?,
            handshake_kinds: counter_vec(
                "gateway_tls_handshake_kinds_total",
                "Completed TLS handshakes by kind: full or resumed.",
                "kind",
            )?,
            resumption_refused: counter_vec(
                "gateway_tls_resumption_refused_total",
                "Sessions offered by clients and not resumed (a full handshake instead), by reason.",
                "reason",
            )?,
            requests: RequestsByHost::new(per_host_limit)?,
            rejected_connections: IntCounter::new(
                "gateway_tls_rejected_connections_total",
                "Connections closed at once because max_connections was reached.",
            )?,
            handshake_seconds: Histogram::with_opts(
                HistogramOpts::new("gateway_tls_handshake_seconds", "TLS handshake duration.")
                    .buckets(buckets.clone()),
            )?,
            request_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "gateway_http_request_seconds",
                    "HTTP request duration, origin included.",
                )
                .buckets(buckets),
            )?,
            open_connections: IntGauge::new(
                "gateway_tls_open_connections",
                "TLS connections open now.",
            )?,
            websocket_upgrades: IntCounter::new(
                "gateway_websocket_upgrades_total",
                "WebSocket upgrades the origin accepted (tunnels opened).",
            )?,
            open_tunnels: IntGauge::new(
                "gateway_websocket_open_tunnels",
                "WebSocket tunnels open now.",
            )?,
            rule_matches: IntCounterVec::new(
                Opts::new(
                    "gateway_rule_matches_total",
                    "Firewall rule matches by rule and action.",
                ),
                &["rule_id", "action"],
            )?,
            rule_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "gateway_rule_evaluation_seconds",
                    "Time to evaluate the rules on a request.",
                )
                .buckets(vec![
                    1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 5e-5, 1e-4, 1e-3,
                ]),
            )?,
            rule_counters: ArcSwap::from_pointee(RuleCounters::new(Arc::default())),
            connection_counters: ConnectionCounters::default(),
        };
        m.register(registry)?;
        Ok(m)
    }

    /// Registers every metric in `registry`.
    fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.handshakes.clone()))?;
        registry.register(Box::new(self.client_certs.clone()))?;
        registry.register(Box::new(self.handshake_kinds.clone()))?;
        registry.register(Box::new(self.resumption_refused.clone()))?;
        registry.register(Box::new(self.requests.clone()))?;
        registry.register(Box::new(self.rejected_connections.clone()))?;
        registry.register(Box::new(self.handshake_seconds.clone()))?;
        registry.register(Box::new(self.request_seconds.clone()))?;
        registry.register(Box::new(self.open_connections.clone()))?;
        registry.register(Box::new(self.websocket_upgrades.clone()))?;
        registry.register(Box::new(self.open_tunnels.clone()))?;
        registry.register(Box::new(self.rule_matches.clone()))?;
        registry.register(Box::new(self.rule_seconds.clone()))?;
        Ok(())
    }
}

impl TerminatorMetrics {
    /// The request counters of a hostname entry: resolved on the entry's first
    /// request and kept in it, so later requests only add.
    pub fn host_requests<'a>(&self, host: &'a HostTls) -> &'a HostRequests {
        host.request_counters
            .get_or_init(|| self.requests.resolve(&host.name))
    }

    /// The match counters of `rules`: resolved when a rule set serves its
    /// first request (after each rules change), then shared by every request.
    pub fn rule_counters(&self, rules: &Arc<RuleSet>) -> arc_swap::Guard<Arc<RuleCounters>> {
        let current = self.rule_counters.load();
        if Arc::ptr_eq(&current.rules, rules) {
            return current;
        }
        let fresh = Arc::new(RuleCounters::new(rules.clone()));
        self.rule_counters.store(fresh.clone());
        arc_swap::Guard::from_inner(fresh)
    }

    /// Counts a rule match: rule `index` of `counters`' rule set.
    pub fn rule_matched(&self, counters: &RuleCounters, index: usize) {
        let Some((cell, rule)) = counters
            .by_index
            .get(index)
            .zip(counters.rules.rules().get(index))
        else {
            return;
        };
        cached(cell, &self.rule_matches, &[&rule.id, rule.action.as_str()]).inc();
    }

    /// Counts a handshake that did not complete (`failed` or `timeout`).
    pub fn handshake_failed(&self, timeout: bool) {
        let (cell, result) = match timeout {
            true => (&self.connection_counters.timeout, "timeout"),
            false => (&self.connection_counters.failed, "failed"),
        };
        cached(cell, &self.handshakes, &[result, "none"]).inc();
    }

    /// Counts a completed handshake of version `version` (as BoringSSL names it).
    pub fn handshake_ok(&self, version: &str) {
        let known = ConnectionCounters::VERSIONS
            .iter()
            .position(|v| *v == version);
        match known {
            Some(i) => cached(
                &self.connection_counters.ok[i],
                &self.handshakes,
                &["ok", version],
            )
            .inc(),
            None => self.handshakes.with_label_values(&["ok", version]).inc(),
        }
    }

    /// Counts a completed handshake by kind, and an offered session that was
    /// not resumed by why.
    pub fn handshake_kind(&self, kind: Kind, refused: Option<Refused>) {
        let counters = &self.connection_counters;
        let i = kind as usize;
        cached(&counters.kinds[i], &self.handshake_kinds, &[kind.as_str()]).inc();
        if let Some(why) = refused {
            let i = why as usize;
            cached(
                &counters.refused[i],
                &self.resumption_refused,
                &[why.as_str()],
            )
            .inc();
        }
    }

    /// Counts a client certificate outcome on an mTLS hostname.
    pub fn client_cert(&self, status: ClientCertStatus) {
        let i = status as usize;
        cached(
            &self.connection_counters.client_certs[i],
            &self.client_certs,
            &[status.as_str()],
        )
        .inc();
    }
}

/// A counter vector with one label.
fn counter_vec(name: &str, help: &str, label: &str) -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(Opts::new(name, help), &[label])
}

/// A counter's handle, resolved on first use (so that a series appears only
/// once it counts something, as with `with_label_values`) and kept.
fn cached<'a>(
    cell: &'a OnceLock<IntCounter>,
    vec: &IntCounterVec,
    labels: &[&str],
) -> &'a IntCounter {
    cell.get_or_init(|| vec.with_label_values(labels))
}

/// A client certificate's outcome on an mTLS hostname, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientCertStatus {
    /// None was presented.
    None,
    /// Verified and not revoked.
    Verified,
    /// Presented but not verified.
    Invalid,
    /// Verified, and revoked.
    Revoked,
}

impl ClientCertStatus {
    /// The `status` label.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientCertStatus::None => "none",
            ClientCertStatus::Verified => "verified",
            ClientCertStatus::Invalid => "invalid",
            ClientCertStatus::Revoked => "revoked",
        }
    }
}

/// Handles of the connection counters, one per fixed label set.
#[derive(Default)]
struct ConnectionCounters {
    ok: [OnceLock<IntCounter>; 4],
    failed: OnceLock<IntCounter>,
    timeout: OnceLock<IntCounter>,
    client_certs: [OnceLock<IntCounter>; 4],
    kinds: [OnceLock<IntCounter>; 2],
    refused: [OnceLock<IntCounter>; 3],
}

impl ConnectionCounters {
    /// The versions whose `ok` handle is kept (BoringSSL's names).
    const VERSIONS: [&str; 4] = ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"];
}

/// The match counters of one compiled rule set, by rule index: each resolved
/// on its rule's first match in this set, then only incremented.
pub struct RuleCounters {
    rules: Arc<RuleSet>,
    by_index: Vec<OnceLock<IntCounter>>,
}

impl RuleCounters {
    fn new(rules: Arc<RuleSet>) -> RuleCounters {
        RuleCounters {
            by_index: (0..rules.len()).map(|_| OnceLock::new()).collect(),
            rules,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{Action, RuleSpec, sample};

    fn rule(id: &str, expression: &str, action: Action) -> RuleSpec {
        RuleSpec {
            id: id.into(),
            description: String::new(),
            expression: expression.into(),
            action,
            enabled: true,
        }
    }

    #[test]
    fn rule_counters_are_resolved_once_per_rule_set_and_count_exactly() {
        let registry = Registry::new();
        let metrics = TerminatorMetrics::new(&registry, 10).unwrap();
        let rules = Arc::new(
            RuleSet::compile(&[
                rule("log-all", "ssl", Action::Log),
                rule("never", r#"http.host eq "nowhere""#, Action::Block),
            ])
            .unwrap(),
        );
        let first = metrics.rule_counters(&rules);
        let request = sample::blank();
        for _ in 0..3 {
            let counters = metrics.rule_counters(&rules);
            assert!(Arc::ptr_eq(&first, &counters), "resolved again");
            rules.decide(&request, |i| metrics.rule_matched(&counters, i));
        }
        let text = crate::metrics::render(&registry);
        assert!(
            text.contains("gateway_rule_matches_total{action=\"log\",rule_id=\"log-all\"} 3"),
            "{text}"
        );
        // A rule that never matched has no series (as with `with_label_values`).
        assert!(!text.contains("rule_id=\"never\""), "{text}");
        // Another rule set (a rules change) gets its own handles, same series.
        let next = Arc::new(RuleSet::compile(&[rule("log-all", "ssl", Action::Log)]).unwrap());
        let counters = metrics.rule_counters(&next);
        assert!(!Arc::ptr_eq(&first, &counters));
        next.decide(&request, |i| metrics.rule_matched(&counters, i));
        let text = crate::metrics::render(&registry);
        assert!(
            text.contains("gateway_rule_matches_total{action=\"log\",rule_id=\"log-all\"} 4"),
            "{text}"
        );
    }

    #[test]
    fn connection_counters_appear_once_they_count() {
        let registry = Registry::new();
        let metrics = TerminatorMetrics::new(&registry, 10).unwrap();
        assert!(!crate::metrics::render(&registry).contains("gateway_tls_handshakes_total{"));
        metrics.handshake_ok("TLSv1.3");
        metrics.handshake_ok("TLSv1.3");
        metrics.handshake_ok("SSLv9");
        metrics.handshake_failed(true);
        metrics.client_cert(ClientCertStatus::Revoked);
        metrics.handshake_kind(Kind::Resumed, None);
        metrics.handshake_kind(Kind::Full, Some(Refused::UnknownKey));
        let text = crate::metrics::render(&registry);
        for needle in [
            "gateway_tls_handshakes_total{result=\"ok\",version=\"TLSv1.3\"} 2",
            "gateway_tls_handshakes_total{result=\"ok\",version=\"SSLv9\"} 1",
            "gateway_tls_handshakes_total{result=\"timeout\",version=\"none\"} 1",
            "gateway_tls_client_certificates_total{status=\"revoked\"} 1",
            "gateway_tls_handshake_kinds_total{kind=\"resumed\"} 1",
            "gateway_tls_handshake_kinds_total{kind=\"full\"} 1",
            "gateway_tls_resumption_refused_total{reason=\"unknown_ticket_key\"} 1",
        ] {
            assert!(text.contains(needle), "{needle} missing:\n{text}");
        }
        assert!(!text.contains("result=\"failed\""), "{text}");
        assert!(!text.contains("status=\"verified\""), "{text}");
    }
}
