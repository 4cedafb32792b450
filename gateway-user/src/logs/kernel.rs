//! The XDP filter's refusals in the handshake log (`Layer: "xdp"`).
//!
//! The filter sends a record per refused hello, within each CPU's budget a
//! second (`[log] xdp_events_per_cpu`), and counts the ones past it. Here a
//! second's records become at most `xdp_lines_per_second` lines, one per
//! client, SNI, offered version and split; the others of the second are
//! folded into one summary line, which also counts what the filter did not
//! send and names the most frequent clients among the folded. So a flood
//! writes a bounded number of lines, and every refusal is either a line of
//! its own or counted in a summary: the `Refusals` fields add up to the
//! filter's drop counters.

use std::{collections::HashMap, net::IpAddr, sync::Arc, time::Duration, time::SystemTime};

use prometheus::{IntCounterVec, Opts, Registry};
use serde::Serialize;

use super::{
    Logs, handshake,
    line::{self, FieldMask, Line},
};
use crate::xdp::events::{Refusal, RefusalEvents, Unsent};

/// Clients a summary line names at most.
pub const TOP: usize = 10;

/// Distinct (client, SNI, version, split) keys remembered per second; the
/// refusals of keys beyond are still counted.
const MAX_KEYS: usize = 4096;

/// How often the ring is drained.
const DRAIN: Duration = Duration::from_millis(100);

/// The key refusals are itemised and folded by.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Key {
    ip: IpAddr,
    sni: Option<Vec<u8>>,
    offered: u16,
    split: bool,
}

/// One client of a summary's `Top`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TopEntry {
    #[serde(rename = "ClientIP")]
    client_ip: IpAddr,
    client_tls_client_hello_server_name: String,
    client_tls_offered_protocol: &'static str,
    split_hello: bool,
    refusals: u64,
}

/// `gateway_xdp_refusal_events_total{outcome}`.
#[derive(Clone)]
pub struct RefusalCounters {
    itemised: prometheus::IntCounter,
    summarised: prometheus::IntCounter,
    not_sent: prometheus::IntCounter,
}

impl RefusalCounters {
    /// Registers the counters in `registry`.
    pub fn register(registry: &Registry) -> anyhow::Result<RefusalCounters> {
        let vec = IntCounterVec::new(
            Opts::new(
                "gateway_xdp_refusal_events_total",
                "XDP refusals in the handshake log, by outcome (itemised: a line of \
                 their own; summarised: folded into a summary line; not_sent: counted \
                 by the filter past its budget or with its ring full, in a summary).",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(vec.clone()))?;
        Ok(RefusalCounters {
            itemised: vec.with_label_values(&["itemised"]),
            summarised: vec.with_label_values(&["summarised"]),
            not_sent: vec.with_label_values(&["not_sent"]),
        })
    }
}

/// One second's worth of refusals on their way to lines.
pub struct KernelRefusals {
    lines_per_second: u32,
    fields: FieldMask,
    itemised: u32,
    /// This second's keys, with the refusals of each folded.
    keys: HashMap<Key, u64>,
    /// This second's refusals folded (keys beyond `MAX_KEYS` included).
    folded: u64,
    /// The filter's counts when this second began.
    unsent: Unsent,
    counters: Option<RefusalCounters>,
}

impl KernelRefusals {
    /// Lines for a log writing `fields`, at most `lines_per_second` itemised;
    /// `unsent`: the filter's counts now.
    pub fn new(lines_per_second: u32, fields: FieldMask, unsent: Unsent) -> KernelRefusals {
        KernelRefusals {
            lines_per_second,
            fields,
            itemised: 0,
            keys: HashMap::new(),
            folded: 0,
            unsent,
            counters: None,
        }
    }

    /// Counts its outcomes in these counters.
    pub fn with_counters(mut self, counters: RefusalCounters) -> KernelRefusals {
        self.counters = Some(counters);
        self
    }

    /// One refusal: its line, if it gets one (`sampled`: the log's sample
    /// rate keeps it); else it is folded into this second's summary.
    pub fn refusal(&mut self, r: &Refusal, sampled: bool) -> Option<Vec<u8>> {
        let key = Key {
            ip: r.peer.ip(),
            sni: r.sni.clone(),
            offered: r.offered,
            split: r.split,
        };
        let first = !self.keys.contains_key(&key);
        let room = self.keys.len() < MAX_KEYS;
        if first && sampled && self.itemised < self.lines_per_second {
            if room {
                self.keys.insert(key, 0);
            }
            self.itemised += 1;
            if let Some(c) = &self.counters {
                c.itemised.inc();
            }
            return Some(self.line(r));
        }
        match self.keys.get_mut(&key) {
            Some(n) => *n += 1,
            None if room => {
                self.keys.insert(key, 1);
            }
            None => {}
        }
        self.folded += 1;
        if let Some(c) = &self.counters {
            c.summarised.inc();
        }
        None
    }

    /// Ends the second: its summary line, if it saw any refusal (`unsent`:
    /// the filter's counts now). A second's lines end with its summary, so a
    /// reader can check the limit; `Refusals` there counts the folded and the
    /// unsent only (the itemised lines count themselves).
    pub fn end_second(&mut self, unsent: Unsent) -> Option<Vec<u8>> {
        let not_sent = (unsent.over_budget + unsent.lost)
            .saturating_sub(self.unsent.over_budget + self.unsent.lost);
        self.unsent = unsent;
        let folded = std::mem::take(&mut self.folded);
        let keys = std::mem::take(&mut self.keys);
        let itemised = std::mem::take(&mut self.itemised);
        if folded + not_sent == 0 && itemised == 0 {
            return None;
        }
        if let Some(c) = &self.counters {
            c.not_sent.inc_by(not_sent);
        }
        let mut top: Vec<(Key, u64)> = keys.into_iter().filter(|(_, n)| *n > 0).collect();
        top.sort_unstable_by_key(|(_, n)| std::cmp::Reverse(*n));
        top.truncate(TOP);
        let top: Vec<TopEntry> = top
            .into_iter()
            .map(|(k, n)| TopEntry {
                client_ip: k.ip,
                client_tls_client_hello_server_name: sni_text(k.sni.as_deref()),
                client_tls_offered_protocol: handshake::version_name(k.offered),
                split_hello: k.split,
                refusals: n,
            })
            .collect();
        let mut l = Line::new(handshake::FIELDS, self.fields);
        l.field("Timestamp", &crate::clock::rfc3339_ms(SystemTime::now()));
        l.field("ClientTlsStatus", "version_below_minimum");
        l.field("HandshakeCompleted", &false);
        l.field("Layer", "xdp");
        l.field("Summary", &true);
        l.field("Refusals", &(folded + not_sent));
        l.field("RefusalsNotSent", &not_sent);
        l.field("Top", &top);
        Some(l.finish())
    }

    fn line(&self, r: &Refusal) -> Vec<u8> {
        let mut l = Line::new(handshake::FIELDS, self.fields);
        l.field("Timestamp", &crate::clock::rfc3339_ms(SystemTime::now()));
        l.field("ClientIP", &r.peer.ip());
        l.field("ClientPort", &r.peer.port());
        l.field(
            "ClientTlsClientHelloServerName",
            &sni_text(r.sni.as_deref()),
        );
        l.field(
            "ClientTlsOfferedProtocol",
            handshake::version_name(r.offered),
        );
        l.field("ClientTlsStatus", "version_below_minimum");
        l.field("HandshakeCompleted", &false);
        l.field("Layer", "xdp");
        l.field("XdpAction", r.action.as_str());
        l.field("SplitHello", &r.split);
        l.field("Summary", &false);
        l.field("Refusals", &1u64);
        l.finish()
    }
}

/// An SNI as log text (empty when none).
fn sni_text(sni: Option<&[u8]>) -> String {
    line::text(sni.unwrap_or_default()).into_owned()
}

/// Drains the filter's refusal events into the handshake log until the
/// runtime stops: every 100 ms, and a summary line a second.
pub async fn follow(
    mut events: RefusalEvents,
    logs: Arc<Logs>,
    lines_per_second: u32,
    counters: RefusalCounters,
) {
    let Some(log) = logs.handshake.as_ref() else {
        return;
    };
    let unsent = events.unsent().unwrap_or_default();
    let mut refusals =
        KernelRefusals::new(lines_per_second, log.fields(), unsent).with_counters(counters);
    let mut tick = tokio::time::interval(DRAIN);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut second = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        events.drain(|r| {
            if let Some(line) = refusals.refusal(&r, log.sampled()) {
                log.send(line);
            }
        });
        if second.elapsed() < Duration::from_secs(1) {
            continue;
        }
        second = tokio::time::Instant::now();
        match events.unsent() {
            Ok(unsent) => {
                if let Some(line) = refusals.end_second(unsent) {
                    log.send(line);
                }
            }
            Err(e) => log::debug!("reading the refusal events' counts: {e:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xdp::events::RefusalAction;

    fn refusal(ip: &str, sni: Option<&str>) -> Refusal {
        Refusal {
            peer: format!("{ip}:40000").parse().unwrap(),
            port: 443,
            sni: sni.map(|s| s.as_bytes().to_vec()),
            offered: 0x0301,
            stat: Some(crate::xdp::Stat::DropTls10),
            split: false,
            action: RefusalAction::Reset,
        }
    }

    fn all() -> FieldMask {
        FieldMask::select(handshake::FIELDS, &[]).unwrap()
    }

    fn json(line: &[u8]) -> serde_json::Value {
        serde_json::from_slice(line).unwrap()
    }

    #[test]
    fn a_refusal_is_a_line_with_its_client_sni_version_and_action() {
        let mut k = KernelRefusals::new(10, all(), Unsent::default());
        let line = k.refusal(&refusal("198.18.0.2", Some("api.test")), true);
        let v = json(&line.unwrap());
        assert_eq!(v["Layer"], "xdp");
        assert_eq!(v["ClientIP"], "198.18.0.2");
        assert_eq!(v["ClientPort"], 40000);
        assert_eq!(v["ClientTlsClientHelloServerName"], "api.test");
        assert_eq!(v["ClientTlsOfferedProtocol"], "TLSv1");
        assert_eq!(v["ClientTlsStatus"], "version_below_minimum");
        assert_eq!(v["XdpAction"], "reset");
        assert_eq!(v["Summary"], false);
        assert_eq!(v["Refusals"], 1);
        let summary = json(&k.end_second(Unsent::default()).unwrap());
        assert_eq!(summary["Summary"], true);
        assert_eq!(summary["Refusals"], 0, "nothing folded");
        assert!(k.end_second(Unsent::default()).is_none(), "a quiet second");
    }

    #[test]
    fn a_second_writes_at_most_its_lines_and_folds_the_rest_into_one_summary() {
        let mut k = KernelRefusals::new(3, all(), Unsent::default());
        let mut lines = 0;
        for i in 0..50 {
            let ip = format!("198.18.1.{}", i % 5);
            lines += k.refusal(&refusal(&ip, Some("api.test")), true).is_some() as u64;
        }
        assert_eq!(lines, 3);
        let unsent = Unsent {
            sent: 50,
            over_budget: 20,
            lost: 2,
        };
        let v = json(&k.end_second(unsent).unwrap());
        assert_eq!(v["Summary"], true);
        assert_eq!(v["Refusals"], 47 + 22, "folded and not sent");
        assert_eq!(v["RefusalsNotSent"], 22);
        let top = v["Top"].as_array().unwrap();
        assert_eq!(top.len(), 5);
        let sum: u64 = top.iter().map(|t| t["Refusals"].as_u64().unwrap()).sum();
        assert_eq!(sum, 47, "every folded refusal is in its client's entry");
        assert!(top[0]["Refusals"].as_u64() >= top[4]["Refusals"].as_u64());
        // The next second starts afresh; the filter's counts are now its base.
        assert!(k.refusal(&refusal("198.18.1.0", None), true).is_some());
        let next = json(&k.end_second(unsent).unwrap());
        assert_eq!(next["Refusals"], 0);
    }

    #[test]
    fn a_client_repeating_itself_gets_one_line_a_second() {
        let mut k = KernelRefusals::new(100, all(), Unsent::default());
        let r = refusal("198.18.0.9", Some("api.test"));
        assert!(k.refusal(&r, true).is_some());
        assert!(k.refusal(&r, true).is_none());
        let v = json(&k.end_second(Unsent::default()).unwrap());
        assert_eq!(v["Refusals"], 1);
        assert_eq!(v["Top"][0]["ClientIP"], "198.18.0.9");
    }

    #[test]
    fn a_sampled_out_refusal_is_counted_in_the_summary() {
        let mut k = KernelRefusals::new(100, all(), Unsent::default());
        assert!(k.refusal(&refusal("198.18.0.9", None), false).is_none());
        let v = json(&k.end_second(Unsent::default()).unwrap());
        assert_eq!(v["Refusals"], 1);
    }

    #[test]
    fn a_hostile_sni_stays_inside_its_string() {
        let mut k = KernelRefusals::new(100, all(), Unsent::default());
        let mut r = refusal("198.18.0.9", None);
        r.sni = Some(b"a\"}\r\n{\"Forged\":1,\xff\x00".to_vec());
        let line = k.refusal(&r, true).unwrap();
        assert_eq!(line.iter().filter(|b| **b == b'\n').count(), 1);
        let v = json(&line);
        assert!(v.get("Forged").is_none());
        assert!(
            v["ClientTlsClientHelloServerName"]
                .as_str()
                .unwrap()
                .contains('\u{fffd}')
        );
    }
}
