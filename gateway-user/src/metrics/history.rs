//! The last 15 minutes of both layers' counters, for the dashboard's charts.
//!
//! Every [`INTERVAL`] a task reads the gateway's own Prometheus registry (the
//! XDP program's per-CPU counters, summed, and the terminator's counters) and
//! keeps the totals of the families the charts show. A chart is the rate
//! between consecutive samples, series by series. Nothing here is on the data
//! path: the samples sit behind a mutex that only the sampler and the admin API
//! take.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use prometheus::{Registry, proto::MetricFamily};
use serde_json::{Value, json};

/// How often the counters are read.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// How far back the charts reach.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);

/// Samples kept: the window's intervals, plus the one they start from.
const KEPT: usize = (WINDOW.as_secs() / INTERVAL.as_secs()) as usize + 1;

/// One chart: which counter family it draws, and how its series are named.
struct Chart {
    id: &'static str,
    title: &'static str,
    unit: &'static str,
    family: &'static str,
    /// The labels that name a series; other labels are summed over.
    labels: &'static [&'static str],
}

/// The charts, in the order the dashboard shows them.
const CHARTS: [Chart; 5] = [
    Chart {
        id: "xdp",
        title: "XDP verdicts by reason",
        unit: "packets/s",
        family: "gateway_xdp_packets_total",
        labels: &["verdict", "reason"],
    },
    Chart {
        id: "handshakes",
        title: "TLS handshakes by result and version",
        unit: "handshakes/s",
        family: "gateway_tls_handshakes_total",
        labels: &["result", "version"],
    },
    Chart {
        id: "client_certs",
        title: "Client certificate outcomes",
        unit: "handshakes/s",
        family: "gateway_tls_client_certificates_total",
        labels: &["status"],
    },
    Chart {
        id: "rules",
        title: "Rule matches",
        unit: "matches/s",
        family: "gateway_rule_matches_total",
        labels: &["rule_id", "action"],
    },
    Chart {
        id: "requests",
        title: "HTTP requests by status",
        unit: "requests/s",
        family: "gateway_http_requests_total",
        labels: &["status"],
    },
];

/// Totals at one moment: (chart index, series name) → counter value.
type Totals = BTreeMap<(usize, String), f64>;

/// One reading of the counters.
struct Sample {
    /// Unix time, milliseconds: the chart's labels.
    at_ms: i64,
    /// Milliseconds on a monotonic clock: the rates' intervals (a step of the
    /// wall clock does not distort them).
    mono_ms: i64,
    totals: Totals,
}

/// The samples of the last [`WINDOW`], oldest first.
pub struct History {
    registry: Registry,
    samples: Mutex<VecDeque<Sample>>,
}

impl History {
    /// An empty history over `registry`'s counters.
    pub fn new(registry: Registry) -> Arc<History> {
        Arc::new(History {
            registry,
            samples: Mutex::new(VecDeque::with_capacity(KEPT)),
        })
    }

    /// Reads the counters every [`INTERVAL`], for as long as the task runs.
    pub async fn run(self: Arc<History>) {
        let start = Instant::now();
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let mono_ms = i64::try_from(start.elapsed().as_millis()).unwrap_or(i64::MAX);
            self.sample(crate::clock::now_ms(), mono_ms);
        }
    }

    /// Reads the counters and keeps the totals: `at_ms` is the Unix time,
    /// `mono_ms` the time on a monotonic clock (both in milliseconds).
    pub fn sample(&self, at_ms: i64, mono_ms: i64) {
        let totals = totals(&self.registry.gather());
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back(Sample {
            at_ms,
            mono_ms,
            totals,
        });
    }

    /// The charts as the admin API answers them: for each, the series that
    /// moved in the window, with their rate per interval and latest total.
    pub fn charts(&self) -> Value {
        let samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        let pairs: Vec<(&Sample, &Sample)> = samples.iter().zip(samples.iter().skip(1)).collect();
        let times: Vec<i64> = pairs.iter().map(|(_, b)| b.at_ms / 1000).collect();
        let latest = samples.back().map(|s| &s.totals);
        let charts: Vec<Value> = CHARTS
            .iter()
            .enumerate()
            .map(|(index, chart)| {
                let names = latest
                    .into_iter()
                    .flat_map(|t| t.keys())
                    .filter(|(c, _)| *c == index);
                let series: Vec<Value> = names
                    .filter_map(|key| {
                        let rates: Vec<f64> = pairs.iter().map(|(a, b)| rate(a, b, key)).collect();
                        rates.iter().any(|r| *r > 0.0).then(|| {
                            json!({
                                "label": key.1,
                                "rates": rates,
                                "total": latest.and_then(|t| t.get(key)).copied().unwrap_or(0.0),
                            })
                        })
                    })
                    .collect();
                json!({"id": chart.id, "title": chart.title, "unit": chart.unit, "series": series})
            })
            .collect();
        json!({
            "interval_seconds": INTERVAL.as_secs(),
            "window_seconds": WINDOW.as_secs(),
            "times": times,
            "charts": charts,
        })
    }
}

/// The rate of one series between two samples (a series that is new in `b`
/// counts from zero; a counter never runs backwards, so a drop reads as 0).
fn rate(a: &Sample, b: &Sample, key: &(usize, String)) -> f64 {
    let seconds = (b.mono_ms - a.mono_ms) as f64 / 1000.0;
    let (before, after) = (
        a.totals.get(key).copied().unwrap_or(0.0),
        b.totals.get(key).copied().unwrap_or(0.0),
    );
    if seconds <= 0.0 {
        return 0.0;
    }
    ((after - before) / seconds).max(0.0)
}

/// The charted families' totals, summed per series name.
fn totals(families: &[MetricFamily]) -> Totals {
    let mut totals = Totals::new();
    for family in families {
        let Some(index) = CHARTS.iter().position(|c| c.family == family.name()) else {
            continue;
        };
        for metric in family.get_metric() {
            let name: Vec<&str> = CHARTS[index]
                .labels
                .iter()
                .map(|wanted| {
                    metric
                        .get_label()
                        .iter()
                        .find(|l| l.name() == *wanted)
                        .map_or("", |l| l.value())
                })
                .collect();
            *totals.entry((index, name.join(" "))).or_default() += metric.get_counter().get_value();
        }
    }
    totals
}

#[cfg(test)]
mod tests {
    use prometheus::{IntCounterVec, Opts};

    use super::*;

    fn history() -> (Arc<History>, IntCounterVec) {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("gateway_http_requests_total", "requests"),
            &["host", "status"],
        )
        .unwrap();
        registry.register(Box::new(requests.clone())).unwrap();
        (History::new(registry), requests)
    }

    #[test]
    fn rates_are_per_second_between_samples_and_summed_over_hosts() {
        let (history, requests) = history();
        history.sample(0, 0);
        requests.with_label_values(&["a", "200"]).inc_by(30);
        requests.with_label_values(&["b", "200"]).inc_by(20);
        requests.with_label_values(&["a", "403"]).inc_by(5);
        // The wall clock stepped back an hour: the rates keep the monotonic interval.
        history.sample(5_000 - 3_600_000, 5_000);
        history.sample(10_000, 10_000);
        let charts = history.charts();
        assert_eq!(charts["times"], json!([5 - 3_600, 10]));
        let requests = &charts["charts"][4];
        assert_eq!(requests["id"], "requests");
        assert_eq!(
            requests["series"],
            json!([
                {"label": "200", "rates": [10.0, 0.0], "total": 50.0},
                {"label": "403", "rates": [1.0, 0.0], "total": 5.0},
            ])
        );
        assert_eq!(
            charts["charts"][0]["series"],
            json!([]),
            "nothing moved in XDP"
        );
    }

    #[test]
    fn the_window_keeps_fifteen_minutes() {
        let (history, requests) = history();
        for i in 0..KEPT as i64 + 10 {
            requests.with_label_values(&["a", "200"]).inc();
            history.sample(i * 5_000, i * 5_000);
        }
        let times = history.charts()["times"].as_array().unwrap().len();
        assert_eq!(times as u64, WINDOW.as_secs() / INTERVAL.as_secs());
    }
}
