//! `gateway_http_requests_total{host,status}` with a bounded number of host
//! labels: the first `per_host_limit` hostnames to serve a request get a label
//! of their own, every later one is counted under `host="_other"`, so 100 000
//! hostnames cost at most `per_host_limit + 2` host labels, not 100 000.
//!
//! A hostname's counters ([`HostRequests`]) are resolved once (the terminator
//! keeps them in the hostname's snapshot entry); counting a request is then
//! one atomic add, with no lock and no label lookup. The series are made at
//! scrape time from the counters that moved.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use prometheus::{
    IntCounterVec, Opts,
    core::{Collector, Desc},
    proto::MetricFamily,
};

/// The label of the hostnames past the limit.
pub const OTHER_HOST: &str = "_other";

/// The label of requests on connections no hostname is configured for.
pub const NO_HOST: &str = "(none)";

/// The lowest status code counted (`http::StatusCode` ranges 100 to 999).
const LOWEST_STATUS: u16 = 100;

/// How many status codes a label counts: 100 to 999.
const STATUSES: usize = 900;

/// One host label's request counters, by status code.
pub struct HostRequests {
    host: Arc<str>,
    by_status: Box<[AtomicU64]>,
}

impl HostRequests {
    fn new(host: Arc<str>) -> HostRequests {
        HostRequests {
            host,
            by_status: (0..STATUSES).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Counts one request answered with `status` (a code outside 100-999 is not counted).
    pub fn count(&self, status: u16) {
        let slot = usize::from(status.wrapping_sub(LOWEST_STATUS));
        if let Some(counter) = self.by_status.get(slot) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The host label these counters are exported under.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The requests counted with `status`.
    pub fn get(&self, status: u16) -> u64 {
        let slot = usize::from(status.wrapping_sub(LOWEST_STATUS));
        self.by_status
            .get(slot)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// The labels handed out so far.
struct Labels {
    /// Hostnames with a label of their own (at most the limit).
    own: HashMap<Arc<str>, Arc<HostRequests>>,
    /// Labelled hostnames in the order they got their label (the scrape's order).
    order: Vec<Arc<HostRequests>>,
}

struct Shared {
    template: IntCounterVec,
    per_host_limit: usize,
    labels: Mutex<Labels>,
    other: Arc<HostRequests>,
    none: Arc<HostRequests>,
}

/// `gateway_http_requests_total`, a Prometheus collector (register a clone).
#[derive(Clone)]
pub struct RequestsByHost {
    shared: Arc<Shared>,
}

/// The family's name, help and labels.
fn family() -> prometheus::Result<IntCounterVec> {
    IntCounterVec::new(
        Opts::new(
            "gateway_http_requests_total",
            "HTTP requests by hostname and status.",
        ),
        &["host", "status"],
    )
}

impl RequestsByHost {
    /// Counters that give at most `per_host_limit` hostnames a label of their own.
    pub fn new(per_host_limit: usize) -> prometheus::Result<RequestsByHost> {
        Ok(RequestsByHost {
            shared: Arc::new(Shared {
                template: family()?,
                per_host_limit,
                labels: Mutex::new(Labels {
                    own: HashMap::new(),
                    order: Vec::new(),
                }),
                other: Arc::new(HostRequests::new(Arc::from(OTHER_HOST))),
                none: Arc::new(HostRequests::new(Arc::from(NO_HOST))),
            }),
        })
    }

    /// The counters of `hostname` (empty: no hostname): its own while fewer
    /// than the limit have one, else the shared `_other` ones. Takes a lock:
    /// call it once per hostname entry, not per request.
    pub fn resolve(&self, hostname: &Arc<str>) -> Arc<HostRequests> {
        let shared = &self.shared;
        if hostname.is_empty() {
            return shared.none.clone();
        }
        let mut labels = shared.labels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(own) = labels.own.get(hostname) {
            return own.clone();
        }
        if labels.own.len() >= shared.per_host_limit {
            return shared.other.clone();
        }
        let own = Arc::new(HostRequests::new(hostname.clone()));
        labels.own.insert(hostname.clone(), own.clone());
        labels.order.push(own.clone());
        own
    }

    /// Drops the labels of the hostnames `keep` refuses (hostnames no longer
    /// served), with their series, and frees their places under the limit.
    /// Takes the lock once; costs the labels there are, not the hostnames.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut labels = self.shared.labels.lock().unwrap_or_else(|e| e.into_inner());
        let before = labels.order.len();
        labels.order.retain(|h| keep(h.host()));
        if labels.order.len() != before {
            labels.own.retain(|name, _| keep(name));
        }
    }

    /// How many hostnames have a label of their own.
    pub fn labelled(&self) -> usize {
        let labels = self.shared.labels.lock().unwrap_or_else(|e| e.into_inner());
        labels.order.len()
    }
}

impl Collector for RequestsByHost {
    fn desc(&self) -> Vec<&Desc> {
        self.shared.template.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // A fresh vector per scrape, holding only the counters that moved.
        let Ok(out) = family() else {
            return Vec::new();
        };
        let shared = &self.shared;
        let labelled: Vec<Arc<HostRequests>> = {
            let labels = shared.labels.lock().unwrap_or_else(|e| e.into_inner());
            labels.order.clone()
        };
        let fixed = [&shared.none, &shared.other];
        for host in fixed.into_iter().chain(&labelled) {
            for (slot, counter) in host.by_status.iter().enumerate() {
                let n = counter.load(Ordering::Relaxed);
                if n == 0 {
                    continue;
                }
                let status = (slot + usize::from(LOWEST_STATUS)).to_string();
                out.with_label_values(&[host.host(), &status]).inc_by(n);
            }
        }
        out.collect()
    }
}

#[cfg(test)]
mod tests {
    use prometheus::Registry;

    use super::*;

    /// Series of `gateway_http_requests_total` in `registry`.
    fn series(registry: &Registry) -> usize {
        registry
            .gather()
            .iter()
            .filter(|f| f.name() == "gateway_http_requests_total")
            .map(|f| f.get_metric().len())
            .sum()
    }

    #[test]
    fn a_hostname_that_is_gone_loses_its_series_and_its_place() {
        let registry = Registry::new();
        let requests = RequestsByHost::new(2).unwrap();
        registry.register(Box::new(requests.clone())).unwrap();
        requests.resolve(&Arc::from("a.test")).count(200);
        requests.resolve(&Arc::from("b.test")).count(200);
        requests.resolve(&Arc::from("c.test")).count(200);
        assert_eq!(series(&registry), 3, "a, b and _other");
        requests.retain(|name| name != "a.test");
        assert_eq!(requests.labelled(), 1);
        assert_eq!(series(&registry), 2, "b and _other");
        // The place a.test held goes to the next hostname.
        assert_eq!(requests.resolve(&Arc::from("d.test")).host(), "d.test");
        assert_eq!(requests.resolve(&Arc::from("e.test")).host(), OTHER_HOST);
    }

    #[test]
    fn hostnames_past_the_limit_share_one_label() {
        const HOSTNAMES: usize = 100_000;
        const LIMIT: usize = 1000;
        let registry = Registry::new();
        let requests = RequestsByHost::new(LIMIT).unwrap();
        registry.register(Box::new(requests.clone())).unwrap();
        let handles: Vec<Arc<HostRequests>> = (0..HOSTNAMES)
            .map(|i| requests.resolve(&Arc::from(format!("host{i}.example.com"))))
            .collect();
        for handle in &handles {
            handle.count(200);
        }
        handles[0].count(404);
        requests.resolve(&Arc::from("")).count(421);
        let n = series(&registry);
        println!(
            "{HOSTNAMES} hostnames, per_host_limit {LIMIT}: {n} series of \
             gateway_http_requests_total, {} host labels",
            requests.labelled() + 2
        );
        // Own labels for the first LIMIT, one `_other`, one `(none)`; one more
        // series for the 404.
        assert_eq!(requests.labelled(), LIMIT);
        assert_eq!(n, LIMIT + 1 + 1 + 1);
        assert_eq!(handles[0].host(), "host0.example.com");
        assert_eq!(handles[LIMIT].host(), OTHER_HOST);
        assert_eq!(handles[LIMIT].get(200), (HOSTNAMES - LIMIT) as u64);
        // A hostname keeps its label when resolved again (a new snapshot entry).
        let again = requests.resolve(&Arc::from("host0.example.com"));
        assert!(Arc::ptr_eq(&again, &handles[0]));
        assert_eq!(
            requests.resolve(&Arc::from("late.example.com")).host(),
            OTHER_HOST
        );
    }

    #[test]
    fn only_counters_that_moved_are_series_and_values_are_exact() {
        let registry = Registry::new();
        let requests = RequestsByHost::new(10).unwrap();
        registry.register(Box::new(requests.clone())).unwrap();
        let open = requests.resolve(&Arc::from("open.test"));
        assert_eq!(series(&registry), 0);
        open.count(200);
        open.count(200);
        open.count(999);
        open.count(1000); // not a status code: not counted
        open.count(99);
        let text = crate::metrics::render(&registry);
        assert!(
            text.contains("gateway_http_requests_total{host=\"open.test\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("gateway_http_requests_total{host=\"open.test\",status=\"999\"} 1"),
            "{text}"
        );
        assert_eq!(series(&registry), 2);
    }
}
