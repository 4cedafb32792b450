//! The flood scenario's figures: per kind of flood and server, the steps and
//! the figures derived from them (share of the no-flood rate kept, breaking
//! points, CPU per refused hello), as terminal tables and JSON.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{FloodKind, KEPT, Server, Step, kind::rate_label};
use crate::flood::Generator;

/// How the figures are defined (printed under the tables).
pub const DEFINITIONS: &str = "legit/s: legitimate TLS 1.3 mTLS handshake+request cycles per \
second; vs 0: of the same server's no-flood step in the same sweep; proc %: the server's \
processes (+ XDP program) in % of one CPU, within a budget of the server CPU; srvcpu %: \
everything the server CPU did (its processes, the veth's receive path: XDP and the kernel's \
TCP stack); thr %: share of scheduling periods in which the server's budget ran out; rx drop: \
packets the server veth's receive ring dropped, full (legitimate ones among them); refused: \
stateless flood packets the server's veth took, or flood connections that sent their hello; \
gen: the stateless flood's generator (live: live XDP frames; afpkt: AF_PACKET, \
which also replaces live frames where the kernel refuses them); \
limit: what bounded the step (server: its budget ran out; rx-path: the server CPU's receive \
path saturated and dropped packets; generator: the flood fell short of the rate asked, under \
90%; clients: the generator CPU was saturated; latency: none of these, the server's own \
queues); judged: whether goals may use the step: only steps the server bounds (server, \
latency) are judged, the others are shown and not judged, and a goal on a rate uses the \
heaviest judged step; achieved: the flood rate the generator reached of the rate asked. \
Cost per refusal: server CPU in a flood-alone step over the flood units refused in it \
(a ratio, judged whatever bounded the step: a flood short of its rate only makes the \
cheaper server's fixed costs weigh more): whole (everything the server CPU did, others' work \
on it included), own (the goals' measure: the same less other tasks' time on that CPU; \
the server's processes and its veth's NAPI thread, where XDP and the kernel's TCP stack run, \
are pinned there, the clients' receive path is on the generator CPU), proc (processes and XDP program only); other %: others' work seen on either CPU \
(a step is run again above 10%).";

/// One server's steps under one kind of flood.
pub struct Series<'a> {
    /// The configuration.
    pub server: Server,
    /// The kind of flood.
    pub kind: FloodKind,
    /// Its steps, by increasing flood rate, the first without flood.
    pub steps: Vec<&'a Step>,
    /// Its step with the kind's heaviest flood and no legitimate load.
    pub flood_only: Option<&'a Step>,
    /// Why its ladder stopped.
    pub stop: String,
}

impl Series<'_> {
    /// The no-flood step.
    pub fn baseline(&self) -> Option<&Step> {
        self.steps.iter().copied().find(|s| s.flood_rate == 0)
    }

    /// A step's legitimate rate as a share of the no-flood one.
    pub fn share(&self, step: &Step) -> Option<f64> {
        let base = self.baseline()?.legit_rate;
        (base > 0.0).then(|| step.legit_rate / base)
    }

    /// The heaviest flood step.
    pub fn heaviest(&self) -> Option<&Step> {
        self.steps
            .iter()
            .copied()
            .filter(|s| s.flood_rate > 0)
            .max_by_key(|s| s.flood_rate)
    }

    /// The heaviest flood step the server bounded (see [`Limit::judged`](super::Limit::judged)).
    pub fn heaviest_judged(&self) -> Option<&Step> {
        self.steps
            .iter()
            .copied()
            .filter(|s| s.flood_rate > 0 && judged(s))
            .max_by_key(|s| s.flood_rate)
    }

    /// The first judged flood step at which the legitimate rate fell below
    /// 90% of no-flood (`None`: none did on the ladder).
    pub fn below_kept_step(&self) -> Option<&Step> {
        if !self.baseline().is_some_and(judged) {
            return None;
        }
        self.steps
            .iter()
            .copied()
            .filter(|s| s.flood_rate > 0 && judged(s))
            .find(|s| self.share(s).is_some_and(|k| k < KEPT))
    }

    /// The lowest flood rate of [`below_kept_step`](Self::below_kept_step).
    pub fn below_kept(&self) -> Option<u64> {
        self.below_kept_step().map(|s| s.flood_rate)
    }

    /// Whole server CPU per refused hello with the flood alone, seconds.
    pub fn cost_whole(&self) -> Option<f64> {
        let st = self.flood_only?;
        (st.refused() > 0).then(|| st.server_cpu_total() / st.refused() as f64)
    }

    /// The server's own CPU ([`Step::server_cpu_own`]) per refusal, flood alone, seconds.
    pub fn cost_own(&self) -> Option<f64> {
        let st = self.flood_only?;
        (st.refused() > 0).then(|| st.server_cpu_own() / st.refused() as f64)
    }

    /// The server's processes (+ XDP program) per refused hello, flood alone, seconds.
    pub fn cost_process(&self) -> Option<f64> {
        let st = self.flood_only?;
        (st.refused() > 0).then(|| st.server_cpu() / st.refused() as f64)
    }
}

/// Legitimate handshakes per second of server process CPU in a step.
pub fn handshakes_per_core(step: &Step) -> Option<f64> {
    (step.process_cpu > 0.0).then(|| step.legit_completed as f64 / step.process_cpu)
}

/// The capacity steps: each server with no budget, no flood.
pub fn capacity_table(capacity: &[Step]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Capacity (no budget, no flood): handshakes per server CPU second\n{:<17} {:>8} {:>7} {:>8} {:>10}",
        "server", "legit/s", "proc %", "p99 ms", "hs/cpu-s"
    );
    for st in capacity {
        let _ = writeln!(
            t,
            "{:<19} {:>8.0} {:>7.0} {:>8.2} {:>10}",
            st.server.key(),
            st.legit_rate,
            100.0 * st.process_cpu / st.wall,
            st.p99 * 1e3,
            handshakes_per_core(st).map_or("-".into(), |h| format!("{h:.0}")),
        );
    }
    t
}

/// Groups the steps into series, one per kind and server, in run order.
pub fn series<'a>(
    steps: &'a [Step],
    flood_only: &'a [Step],
    stops: &[(Server, FloodKind, String)],
) -> Vec<Series<'a>> {
    let mut out: Vec<Series> = Vec::new();
    for st in steps {
        match out
            .iter_mut()
            .find(|s| s.server == st.server && s.kind == st.kind)
        {
            Some(s) => s.steps.push(st),
            None => out.push(Series {
                server: st.server,
                kind: st.kind,
                steps: vec![st],
                flood_only: flood_only
                    .iter()
                    .find(|f| f.server == st.server && f.kind == st.kind),
                stop: stops
                    .iter()
                    .find(|(s, k, _)| *s == st.server && *k == st.kind)
                    .map(|x| x.2.clone())
                    .unwrap_or_default(),
            }),
        }
    }
    out
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{:.0}", 100.0 * x))
}

/// The steps of one kind of flood, one row each.
pub fn table(series: &[Series], kind: FloodKind) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "{} (rates in {})", kind.describe(), kind.unit());
    let _ = writeln!(
        t,
        "{:<19} {:>6} {:<5} {:>13} {:>7} {:>5} {:>7} {:>8} {:>6} {:>6} {:>8} {:>5} {:>9} {:>9} {:>9} {:<9} {:<6} {:>4}",
        "server",
        "flood",
        "gen",
        "achieved",
        "legit/s",
        "vs 0",
        "p50 ms",
        "p99 ms",
        "errors",
        "proc %",
        "srvcpu %",
        "thr %",
        "rx drop",
        "XDP drop",
        "refused",
        "limit",
        "judged",
        "runs"
    );
    for s in series.iter().filter(|s| s.kind == kind) {
        for st in &s.steps {
            let _ = writeln!(
                t,
                "{:<19} {:>6} {:<5} {:>13} {:>7.0} {:>5} {:>7.2} {:>8.2} {:>6} {:>6.0} {:>8.0} {:>5.0} {:>9} {:>9.0} {:>9} {:<9} {:<6} {:>4}",
                s.server.key(),
                if st.flood_rate == 0 {
                    "0".into()
                } else {
                    rate_label(st.flood_rate)
                },
                generator_label(st),
                achieved_label(st),
                st.legit_rate,
                pct(s.share(st)),
                st.p50 * 1e3,
                st.p99 * 1e3,
                st.legit_errors,
                100.0 * st.server_cpu() / st.wall,
                100.0 * st.server_cpu_total() / st.wall,
                100.0 * st.server_throttled,
                st.rx_dropped,
                st.xdp_drops,
                st.refused(),
                st.limit().key(),
                if judged(st) { "yes" } else { "no" },
                st.attempts,
            );
        }
    }
    t
}

/// A count per second with k/M suffixes, e.g. 193k, 2.1M.
pub fn short(x: f64) -> String {
    match x {
        x if x >= 1e6 => format!("{:.1}M", x / 1e6),
        x if x >= 1e4 => format!("{:.0}k", x / 1e3),
        x if x >= 1e3 => format!("{:.1}k", x / 1e3),
        x => format!("{x:.0}"),
    }
}

/// What the flood generator achieved of what was asked, e.g. "193k of 750k"
/// ("-" without flood).
pub fn achieved_label(st: &Step) -> String {
    if st.flood_rate == 0 {
        return "-".into();
    }
    format!(
        "{} of {}",
        short(st.flood_achieved()),
        rate_label(st.flood_rate)
    )
}

/// Where each server broke, per kind.
pub fn breaking_table(series: &[Series]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Breaking points: the lowest flood rate at which the legitimate rate fell below 90% of \
         no-flood (judged steps only), and why the ladder stopped\n{:<19} {:<13} {:>10}  ladder",
        "server", "flood", "below 90%"
    );
    for s in series {
        let _ = writeln!(
            t,
            "{:<19} {:<13} {:>10}  {}",
            s.server.key(),
            s.kind.key(),
            s.below_kept().map_or("never".into(), rate_label),
            s.stop
        );
    }
    t
}

/// The flood-alone steps: server CPU per refusal.
pub fn flood_only_table(series: &[Series]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Flood alone (each kind's heaviest rate, no legitimate load): server CPU per refusal\n\
         {:<19} {:<13} {:>6} {:<5} {:>13} {:>10} {:>8} {:>6} {:>7} {:>9} {:>12} {:>10} {:>11} {:<9}",
        "server",
        "flood",
        "asked",
        "gen",
        "achieved",
        "refused",
        "srvcpu %",
        "own %",
        "other %",
        "rx drop",
        "whole µs/ref",
        "own µs/ref",
        "proc µs/ref",
        "limit"
    );
    for s in series {
        let Some(st) = s.flood_only else { continue };
        let us = |c: Option<f64>| c.map_or("-".into(), |c| format!("{:.3}", c * 1e6));
        let _ = writeln!(
            t,
            "{:<19} {:<13} {:>6} {:<5} {:>13} {:>10} {:>8.0} {:>6.0} {:>7.0} {:>9} {:>12} {:>10} {:>11} {:<9}",
            s.server.key(),
            s.kind.key(),
            rate_label(st.flood_rate),
            generator_label(st),
            achieved_label(st),
            st.refused(),
            100.0 * st.server_cpu_total() / st.wall,
            100.0 * st.server_cpu_own() / st.wall,
            100.0 * st.foreign_load,
            st.rx_dropped,
            us(s.cost_whole()),
            us(s.cost_own()),
            us(s.cost_process()),
            st.limit().key(),
        );
    }
    t
}

/// The stateless flood's generator in a table's "gen" column ("-": none).
fn generator_label(st: &Step) -> &'static str {
    match st.generator {
        Some(Generator::LiveFrames) => "live",
        Some(Generator::AfPacket) => "afpkt",
        None => "-",
    }
}

fn step_json(s: &Series, st: &Step) -> Value {
    json!({
        "flood_generator": st.generator.map(Generator::key),
        "flood_rate_target": if st.flood_rate == super::UNPACED { Value::from("max") } else { Value::from(st.flood_rate) },
        "flood_rate_achieved": st.flood_achieved(),
        "flood_sent": st.flood.sent,
        "flood_errors": st.flood.errors,
        "flood_seconds": st.flood.elapsed.as_secs_f64(),
        "legit_completed": st.legit_completed,
        "legit_errors": st.legit_errors,
        "legit_handshakes_per_second": st.legit_rate,
        "legit_share_of_no_flood": s.share(st),
        "handshake_p50_seconds": st.p50,
        "handshake_p99_seconds": st.p99,
        "step_wall_seconds": st.wall,
        "server_process_cpu_seconds": st.process_cpu,
        "xdp_program_cpu_seconds": st.xdp_cpu,
        "xdp_program_runs": st.xdp_runs,
        "server_whole_cpu_seconds": st.server_cpu_total(),
        "server_napi_cpu_seconds": st.napi_cpu,
        "server_own_cpu_seconds": st.server_cpu_own(),
        "server_budget_throttled_share": st.server_throttled,
        "server_veth_rx_packets": st.rx_packets,
        "server_veth_rx_dropped": st.rx_dropped,
        "xdp_drops": st.xdp_drops,
        "gateway_userspace_handshake_failures": st.userspace_failures,
        "syn_cookies_sent": st.syn_cookies_sent,
        "syn_cookie_sockets_made": st.syn_cookie_sockets,
        "syn_cookies_bad": st.syn_cookies_bad,
        "refused_hellos": st.refused(),
        "generator_process_cpu_seconds": st.generator_cpu,
        "foreign_load_fraction": st.foreign_load,
        "limit": st.limit().key(),
        "judged": judged(st),
        "runs": st.attempts,
        "cpu_busy_fraction": st.cpu_busy.iter().map(|c| c.0).collect::<Vec<_>>(),
        "cpu_softirq_fraction": st.cpu_busy.iter().map(|c| c.1).collect::<Vec<_>>(),
    })
}

/// Every figure of every series, for the JSON file.
pub fn series_json(series: &[Series]) -> Vec<Value> {
    series
        .iter()
        .map(|s| {
            json!({
                "server": s.server.key(),
                "server_description": s.server.describe(),
                "flood": s.kind.key(),
                "flood_description": s.kind.describe(),
                "rate_unit": s.kind.unit(),
                "ladder_stopped": s.stop,
                "first_rate_below_90_percent": s.below_kept(),
                "flood_only_whole_cpu_per_refused_seconds": s.cost_whole(),
                "flood_only_process_cpu_per_refused_seconds": s.cost_process(),
                "flood_only_own_cpu_per_refused_seconds": s.cost_own(),
                "flood_only_step": s.flood_only.map(|st| step_json(s, st)),
                "steps": s.steps.iter().map(|st| step_json(s, st)).collect::<Vec<_>>(),
            })
        })
        .collect()
}

/// Whether a step's figures are the server's (see [`Limit::judged`](super::Limit::judged)): steps
/// bound by the generator, the receive path or the legitimate clients' CPU
/// say nothing about the server.
pub fn judged(step: &Step) -> bool {
    step.limit().judged()
}
