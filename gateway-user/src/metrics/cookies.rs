//! The SYN cookies' counters and state, exported at scrape time.

use std::sync::{Arc, Mutex};

use log::warn;
use prometheus::{
    GaugeVec, IntCounterVec, IntGaugeVec, Opts,
    core::{Collector, Desc},
    proto::MetricFamily,
};

use crate::xdp::cookies::{self, CookieControl};

/// Exposes `gateway_syn_cookies_total{outcome}`, `gateway_syn_cookies_engaged{port}`
/// and `gateway_syn_rate{port}`.
pub struct CookieCollector {
    control: Arc<Mutex<CookieControl>>,
    families: Families,
}

struct Families {
    outcomes: IntCounterVec,
    engaged: IntGaugeVec,
    rate: GaugeVec,
}

impl CookieCollector {
    /// A collector over the filter's cookie control.
    pub fn new(control: Arc<Mutex<CookieControl>>) -> CookieCollector {
        CookieCollector {
            control,
            families: Self::families(),
        }
    }

    fn families() -> Families {
        let outcomes = IntCounterVec::new(
            Opts::new(
                "gateway_syn_cookies_total",
                "SYN cookies by outcome: sent, not_answered, ack_dropped, bad_cookie, \
                 refused_without_socket, socket_made, assign_failed.",
            ),
            &["outcome"],
        );
        let engaged = IntGaugeVec::new(
            Opts::new(
                "gateway_syn_cookies_engaged",
                "1 while the port's SYNs are answered with cookies in XDP.",
            ),
            &["port"],
        );
        let rate = GaugeVec::new(
            Opts::new(
                "gateway_syn_rate",
                "SYNs per second to the TLS port, as the last 100 ms saw them.",
            ),
            &["port"],
        );
        // The names and labels above are valid constants.
        Families {
            outcomes: outcomes.expect("valid metric"),
            engaged: engaged.expect("valid metric"),
            rate: rate.expect("valid metric"),
        }
    }
}

impl Collector for CookieCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = self.families.outcomes.desc();
        d.extend(self.families.engaged.desc());
        d.extend(self.families.rate.desc());
        d
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let (counters, engaged, rates) = {
            let control = cookies::lock(&self.control);
            (control.counters(), control.engaged(), control.syn_rates())
        };
        let counters = match counters {
            Ok(c) => c,
            Err(e) => {
                warn!("reading SYN cookie counters: {e:#}");
                return Vec::new();
            }
        };
        let f = Self::families();
        for (stat, value) in counters {
            f.outcomes.with_label_values(&[stat.label()]).inc_by(value);
        }
        for (port, rate) in rates {
            let label = port.to_string();
            f.rate.with_label_values(&[&label]).set(rate);
            let on = engaged.contains(&port) as i64;
            f.engaged.with_label_values(&[&label]).set(on);
        }
        let mut out = f.outcomes.collect();
        out.extend(f.engaged.collect());
        out.extend(f.rate.collect());
        out
    }
}
