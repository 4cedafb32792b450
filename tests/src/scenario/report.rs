//! The flood scenario's figures: the cost per refused handshake derived from the
//! steps, the terminal table, the JSON file and the report against the goals.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{Server, Settings, Step};

/// How the cost per refused handshake is computed (printed with the table).
pub const COST_DEFINITION: &str = "CPU per refused handshake, under load (main table) = (server CPU \
in the step - baseline server CPU per legitimate handshake x legitimate handshakes in the step) / \
refused handshakes in the step, the baseline being the same server's no-flood step; with the flood \
alone (second table, used for the goals) = server CPU in that step / refused handshakes, nothing to \
subtract. Refused handshakes = flood connections that sent their sub-minimum hello. Server CPU, two \
measures: \"proc\" = utime+stime of the server's processes (/proc/PID/stat, all threads, nginx's \
workers included) plus, for gateway+xdp, the XDP program's own run time (kernel BPF statistics); \
\"cpu\" = everything the server's CPU did (/proc/stat busy), which adds the kernel's TCP receive \
work steered there by RPS and any other work on that CPU. This kernel has no IRQ time accounting: \
softirq work is also charged to the process it interrupts, so \"proc\" holds a share of it. XDP \
drop counts packets: a refused hello and its retransmission.";

/// What the table's columns are.
pub const COLUMNS: &str = "flood/s: asked; achieved: flood connections/s that sent their hello; \
legit/s: legitimate handshake+request cycles/s; vs 0 %: of the no-flood step; p50/p99: handshake \
latency (TCP connect to TLS established); errors: failed legitimate cycles; proc %: the server's \
processes (+ XDP program) in % of one CPU; srvcpu %: the server's CPU busy; gen %: this process \
(legitimate clients, flood, origin) on the generator CPU; usr fail: handshakes the gateway's \
terminator saw fail (flood connections that reached userspace); µs/ref: CPU per refused handshake, proc \
and cpu measures; other %: work of others seen on a CPU during the step (busy - softirq - this \
run's processes; errs low); runs: runs of the step made (the quietest kept).";

/// Which figure stands for the server's CPU.
#[derive(Clone, Copy, Debug)]
pub enum Measure {
    /// The server's processes (+ the XDP program).
    Process,
    /// Everything the server's CPU did.
    WholeCpu,
}

impl Measure {
    fn of(self, step: &Step) -> f64 {
        match self {
            Measure::Process => step.server_cpu(),
            Measure::WholeCpu => step.server_cpu_total(),
        }
    }
}

/// One server's steps with the figures derived from them.
pub struct Series<'a> {
    /// The configuration.
    pub server: Server,
    /// How it ran (e.g. the XDP attach mode).
    pub note: String,
    /// Its steps, by increasing flood rate, the first without flood.
    pub steps: &'a [Step],
    /// Its step with the heaviest flood and no legitimate load.
    pub flood_only: Option<&'a Step>,
}

impl Series<'_> {
    /// Server CPU per legitimate handshake without flood, seconds.
    fn baseline_cpu_per_legit(&self, m: Measure) -> Option<f64> {
        let base = self.steps.iter().find(|s| s.flood_rate == 0)?;
        (base.legit_completed > 0).then(|| m.of(base) / base.legit_completed as f64)
    }

    /// CPU beyond what the step's legitimate handshakes cost, seconds.
    fn extra_cpu(&self, step: &Step, m: Measure) -> Option<f64> {
        Some(m.of(step) - self.baseline_cpu_per_legit(m)? * step.legit_completed as f64)
    }

    /// CPU per refused handshake in a flood step, seconds (see [`COST_DEFINITION`]).
    pub fn cost_per_refused(&self, step: &Step, m: Measure) -> Option<f64> {
        (step.refused() > 0).then_some(())?;
        Some(self.extra_cpu(step, m)? / step.refused() as f64)
    }

    /// The same over every flood step pooled, seconds.
    pub fn pooled_cost(&self, m: Measure) -> Option<f64> {
        let flood: Vec<&Step> = self.steps.iter().filter(|s| s.refused() > 0).collect();
        let refused: u64 = flood.iter().map(|s| s.refused()).sum();
        let extra: f64 = flood
            .iter()
            .map(|s| self.extra_cpu(s, m))
            .sum::<Option<f64>>()?;
        (refused > 0).then(|| extra / refused as f64)
    }

    /// Server CPU per refused handshake with the flood alone, seconds: all the
    /// server's CPU in that step over the handshakes refused.
    pub fn flood_only_cost(&self, m: Measure) -> Option<f64> {
        let st = self.flood_only?;
        (st.refused() > 0).then(|| m.of(st) / st.refused() as f64)
    }

    /// Legitimate rate of the heaviest flood step over the no-flood one.
    pub fn retained(&self) -> Option<f64> {
        let base = self.steps.iter().find(|s| s.flood_rate == 0)?;
        let heaviest = self.steps.iter().max_by_key(|s| s.flood_rate)?;
        (base.legit_rate > 0.0).then(|| heaviest.legit_rate / base.legit_rate)
    }
}

fn ms(s: f64) -> String {
    format!("{:.2}", s * 1e3)
}

fn us(cost: Option<f64>) -> String {
    cost.map_or("-".into(), |c| format!("{:.1}", c * 1e6))
}

/// The terminal table: one row per step.
pub fn table(series: &[Series]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<15} {:>7} {:>8} {:>8} {:>6} {:>7} {:>8} {:>6} {:>7} {:>7} {:>7} {:>8} {:>8} {:>8} {:>10} {:>10} {:>7} {:>4}",
        "server",
        "flood/s",
        "achieved",
        "legit/s",
        "vs 0 %",
        "p50 ms",
        "p99 ms",
        "errors",
        "proc %",
        "srvcpu %",
        "gen %",
        "XDP drop",
        "refused",
        "usr fail",
        "µs/ref proc",
        "µs/ref cpu",
        "other %",
        "runs"
    );
    for s in series {
        let base = s
            .steps
            .iter()
            .find(|x| x.flood_rate == 0)
            .map(|x| x.legit_rate);
        for st in s.steps {
            let vs = base
                .filter(|b| *b > 0.0)
                .map_or("-".into(), |b| format!("{:.0}", 100.0 * st.legit_rate / b));
            let _ = writeln!(
                t,
                "{:<15} {:>7} {:>8.0} {:>8.0} {:>6} {:>7} {:>8} {:>6} {:>7.0} {:>7.0} {:>7.0} {:>8.0} {:>8} {:>8} {:>10} {:>10} {:>7.0} {:>4}",
                s.server.key(),
                st.flood_rate,
                st.flood_achieved(),
                st.legit_rate,
                vs,
                ms(st.p50),
                ms(st.p99),
                st.legit_errors,
                100.0 * st.server_cpu() / st.wall,
                100.0 * st.server_cpu_total() / st.wall,
                100.0 * st.generator_cpu / st.wall,
                st.xdp_drops,
                st.refused(),
                match s.server {
                    Server::Nginx => "-".to_string(),
                    _ => format!("{:.0}", st.userspace_failures),
                },
                us(s.cost_per_refused(st, Measure::Process)),
                us(s.cost_per_refused(st, Measure::WholeCpu)),
                100.0 * st.foreign_load.max(0.0),
                st.attempts,
            );
        }
    }
    t
}

/// The flood-only steps: the server's CPU per refused handshake with no
/// legitimate load beside the flood (no baseline to subtract).
pub fn flood_only_table(series: &[Series]) -> String {
    let mut t = String::new();
    let Some(rate) = series
        .iter()
        .find_map(|s| s.flood_only)
        .map(|s| s.flood_rate)
    else {
        return t;
    };
    let _ = writeln!(
        t,
        "Flood alone ({rate}/s asked, no legitimate load): server CPU per refused handshake\n\
         {:<15} {:>8} {:>8} {:>7} {:>8} {:>8} {:>8} {:>11} {:>10} {:>7} {:>4}",
        "server",
        "achieved",
        "refused",
        "proc %",
        "srvcpu %",
        "XDP drop",
        "usr fail",
        "µs/ref proc",
        "µs/ref cpu",
        "other %",
        "runs"
    );
    for s in series {
        let Some(st) = s.flood_only else { continue };
        let _ = writeln!(
            t,
            "{:<15} {:>8.0} {:>8} {:>7.0} {:>8.0} {:>8.0} {:>8} {:>11} {:>10} {:>7.0} {:>4}",
            s.server.key(),
            st.flood_achieved(),
            st.refused(),
            100.0 * st.server_cpu() / st.wall,
            100.0 * st.server_cpu_total() / st.wall,
            st.xdp_drops,
            match s.server {
                Server::Nginx => "-".to_string(),
                _ => format!("{:.0}", st.userspace_failures),
            },
            us(s.flood_only_cost(Measure::Process)),
            us(s.flood_only_cost(Measure::WholeCpu)),
            100.0 * st.foreign_load.max(0.0),
            st.attempts,
        );
    }
    t
}

fn step_json(s: &Series, st: &Step) -> Value {
    json!({
        "flood_rate_target": st.flood_rate,
        "flood_rate_achieved": st.flood_achieved(),
        "flood_connections_sent": st.flood.sent,
        "flood_connection_errors": st.flood.errors,
        "flood_seconds": st.flood.elapsed.as_secs_f64(),
        "legit_completed": st.legit_completed,
        "legit_errors": st.legit_errors,
        "legit_handshakes_per_second": st.legit_rate,
        "handshake_p50_seconds": st.p50,
        "handshake_p99_seconds": st.p99,
        "step_wall_seconds": st.wall,
        "server_process_cpu_seconds": st.process_cpu,
        "xdp_program_cpu_seconds": st.xdp_cpu,
        "server_cpu_seconds": st.server_cpu(),
        "server_whole_cpu_seconds": st.server_cpu_total(),
        "generator_process_cpu_seconds": st.generator_cpu,
        "xdp_drops": st.xdp_drops,
        "gateway_userspace_handshake_failures": st.userspace_failures,
        "refused_handshakes": st.refused(),
        "cpu_per_refused_handshake_seconds": s.cost_per_refused(st, Measure::Process),
        "whole_cpu_per_refused_handshake_seconds": s.cost_per_refused(st, Measure::WholeCpu),
        "foreign_load_fraction": st.foreign_load,
        "runs": st.attempts,
        "cpu_busy_fraction": st.cpu_busy.iter().map(|c| c.0).collect::<Vec<_>>(),
        "cpu_softirq_fraction": st.cpu_busy.iter().map(|c| c.1).collect::<Vec<_>>(),
    })
}

/// Every figure, for the JSON file; `background` is each CPU's busy fraction
/// just before the run, with none of it going on (other users of the machine).
pub fn json(settings: &Settings, series: &[Series], goals: &[Goal], background: &[f64]) -> Value {
    let configs: Vec<Value> = series
        .iter()
        .map(|s| {
            let steps: Vec<Value> = s
                .steps
                .iter()
                .map(|st| step_json(s, st))
                .collect();
            json!({
                "server": s.server.key(),
                "description": s.server.describe(),
                "note": s.note,
                "baseline_cpu_per_legit_handshake_seconds": s.baseline_cpu_per_legit(Measure::Process),
                "baseline_whole_cpu_per_legit_handshake_seconds": s.baseline_cpu_per_legit(Measure::WholeCpu),
                "pooled_cpu_per_refused_handshake_seconds": s.pooled_cost(Measure::Process),
                "pooled_whole_cpu_per_refused_handshake_seconds": s.pooled_cost(Measure::WholeCpu),
                "legit_rate_retained_at_heaviest_flood": s.retained(),
                "flood_only_cpu_per_refused_handshake_seconds": s.flood_only_cost(Measure::Process),
                "flood_only_whole_cpu_per_refused_handshake_seconds": s.flood_only_cost(Measure::WholeCpu),
                "flood_only_step": s.flood_only.map(|st| step_json(s, st)),
                "steps": steps,
            })
        })
        .collect();
    json!({
        "flood": "connection flood: real TCP connections, each sending one TLS 1.0/1.1 ClientHello and waiting for the server to end it",
        "legit_load": format!("{} concurrent clients, TLS 1.3 full handshakes (ECDSA P-256) with a client certificate, one GET per connection", settings.concurrency),
        "step_seconds": settings.step.as_secs_f64(),
        "server_cpu": settings.server_cpu,
        "generator_cpu": settings.generator_cpu,
        "servers_at_once": "all three servers run for the whole run (ports 443, 8443, 9443; the XDP program inspects 443 only); steps alternate between them within each flood rate",
        "background_cpu_busy_fraction_before": background,
        "cost_definition": COST_DEFINITION,
        "configurations": configs,
        "goals": goals.iter().map(|g| json!({"goal": g.what, "value": g.value, "met": g.met})).collect::<Vec<_>>(),
    })
}

/// A goal of the scenario and how this run did against it.
pub struct Goal {
    /// What is aimed at.
    pub what: String,
    /// What was measured.
    pub value: String,
    /// Whether it was met (`None`: could not be decided).
    pub met: Option<bool>,
}

/// The goals: legitimate rate kept under the heaviest flood with XDP, and
/// refusal at least ten times cheaper with XDP than without it and than nginx.
pub fn goals(series: &[Series]) -> Vec<Goal> {
    let find = |k: Server| series.iter().find(|s| s.server == k);
    let mut goals = Vec::new();
    if let Some(xdp) = find(Server::GatewayXdp) {
        let kept = xdp.retained();
        // The two steps compared: if other work ran during either, the ratio is its.
        let compared = [
            xdp.steps.iter().find(|s| s.flood_rate == 0),
            xdp.steps.iter().max_by_key(|s| s.flood_rate),
        ];
        let noisy = compared
            .iter()
            .flatten()
            .any(|st| st.foreign_load > super::NOISE_THRESHOLD);
        goals.push(Goal {
            what: "gateway+xdp: legit handshakes/s under the heaviest flood >= 90% of the no-flood rate".into(),
            value: match kept {
                Some(k) if noisy => format!(
                    "{:.0}%, not meaningful: other work on the machine during the compared steps",
                    100.0 * k
                ),
                Some(k) => format!("{:.0}%", 100.0 * k),
                None => "n/a".into(),
            },
            met: kept.filter(|_| !noisy).map(|k| k >= 0.9),
        });
        for (other, m) in [Server::GatewayUserspace, Server::Nginx]
            .into_iter()
            .flat_map(|o| [(o, Measure::Process), (o, Measure::WholeCpu)])
        {
            let Some(o) = find(other) else { continue };
            let (x, y) = (xdp.flood_only_cost(m), o.flood_only_cost(m));
            let noisy = [xdp.flood_only, o.flood_only]
                .iter()
                .flatten()
                .any(|st| st.foreign_load > super::NOISE_THRESHOLD);
            let (value, met) = match (x, y) {
                (Some(x), Some(y)) if noisy && matches!(m, Measure::WholeCpu) => (
                    format!(
                        "{:.1} µs vs {:.1} µs, not meaningful: other work kept the server's CPU busy",
                        x * 1e6,
                        y * 1e6
                    ),
                    None,
                ),
                (Some(x), Some(y)) if x > 0.0 => (
                    format!("{:.1} µs vs {:.1} µs: {:.1}x", x * 1e6, y * 1e6, y / x),
                    Some(y / x >= 10.0),
                ),
                (Some(x), Some(y)) => (
                    format!(
                        "{:.1} µs (at or below the baseline: within noise) vs {:.1} µs",
                        x * 1e6,
                        y * 1e6
                    ),
                    Some(y > 0.0),
                ),
                _ => ("n/a".into(), None),
            };
            let measure = match m {
                Measure::Process => "proc",
                Measure::WholeCpu => "whole server CPU",
            };
            goals.push(Goal {
                what: format!(
                    "CPU per refused handshake ({measure}, flood alone) >= 10x lower with XDP than {}",
                    other.key()
                ),
                value,
                met,
            });
        }
    }
    goals
}

/// The goals as lines for the terminal.
pub fn goal_lines(goals: &[Goal]) -> String {
    let mut t = String::new();
    for g in goals {
        let verdict = match g.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "undecided",
        };
        let _ = writeln!(t, "  [{verdict:^9}] {}: {}", g.what, g.value);
    }
    t
}
