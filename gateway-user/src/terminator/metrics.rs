//! The terminator's Prometheus metrics.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Counters, histograms and gauges of the terminator.
pub struct TerminatorMetrics {
    /// Handshakes by result (`ok`, `failed`, `timeout`) and TLS version.
    pub handshakes: IntCounterVec,
    /// Client certificates on mTLS hostnames by status (`none`, `verified`, `invalid`, `revoked`).
    pub client_certs: IntCounterVec,
    /// Requests by hostname and status code.
    pub requests: IntCounterVec,
    /// Connections closed at once because the connection limit was reached.
    pub rejected_connections: IntCounter,
    /// Handshake duration.
    pub handshake_seconds: Histogram,
    /// Request duration, origin included.
    pub request_seconds: Histogram,
    /// Connections open now.
    pub open_connections: IntGauge,
    /// Rule matches by rule and action.
    pub rule_matches: IntCounterVec,
    /// Time to evaluate the rules on one request.
    pub rule_seconds: Histogram,
}

impl TerminatorMetrics {
    /// Creates the metrics and registers them.
    pub fn new(registry: &Registry) -> prometheus::Result<TerminatorMetrics> {
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
            client_certs: IntCounterVec::new(
                Opts::new(
                    "gateway_tls_client_certificates_total",
                    "Handshakes on mTLS hostnames by client certificate status.",
                ),
                &["status"],
            )?,
            requests: IntCounterVec::new(
                Opts::new(
                    "gateway_http_requests_total",
                    "HTTP requests by hostname and status.",
                ),
                &["host", "status"],
            )?,
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
        };
        registry.register(Box::new(m.handshakes.clone()))?;
        registry.register(Box::new(m.client_certs.clone()))?;
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.rejected_connections.clone()))?;
        registry.register(Box::new(m.handshake_seconds.clone()))?;
        registry.register(Box::new(m.request_seconds.clone()))?;
        registry.register(Box::new(m.open_connections.clone()))?;
        registry.register(Box::new(m.rule_matches.clone()))?;
        registry.register(Box::new(m.rule_seconds.clone()))?;
        Ok(m)
    }
}
