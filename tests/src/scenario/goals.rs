//! The scenario's goals, reported by the benchmark and never asserted: each
//! is judged only on steps that the server bounded (see
//! [`Limit::judged`](super::Limit::judged)); a goal whose steps were bound
//! elsewhere is printed as undecided, with what bound them. Goals are made
//! for whatever kinds, rates and servers the run swept.

use std::fmt::Write as _;

use super::{
    FloodKind, KEPT, Server, Step, UNPACED,
    crypto::CryptoSpeed,
    kind::rate_label,
    report::{Series, achieved_label, handshakes_per_core, judged},
};
use crate::flood::HelloShape;

/// A goal and how this run did against it.
pub struct Goal {
    /// What is aimed at.
    pub what: String,
    /// What was measured.
    pub value: String,
    /// Whether it was met (`None`: could not be decided, or a figure only).
    pub met: Option<bool>,
}

impl Goal {
    fn figure(what: String, value: String) -> Goal {
        Goal {
            what,
            value,
            met: None,
        }
    }

    fn undecided(what: String, why: impl Into<String>) -> Goal {
        Goal {
            what,
            value: format!("not judged: {}", why.into()),
            met: None,
        }
    }
}

fn find<'a>(series: &'a [Series<'a>], server: Server, kind: FloodKind) -> Option<&'a Series<'a>> {
    series.iter().find(|s| s.server == server && s.kind == kind)
}

/// The gateway's default mode in this run: SYN cookies where the gateway
/// has them (its default, `auto`, engages above 1,000 SYNs/s per port, as
/// every flood-alone step here is), else reset mode.
pub fn default_mode(series: &[Series]) -> Server {
    if series.iter().any(|s| s.server == Server::GatewayXdpCookies) {
        Server::GatewayXdpCookies
    } else {
        Server::GatewayXdp
    }
}

/// A step as "93% at 8k (7.9k of 8k), limit server".
fn at(s: &Series, st: &Step) -> String {
    format!(
        "{:.1}% at {} ({}), limit {}",
        100.0 * s.share(st).unwrap_or(0.0),
        rate_label(st.flood_rate),
        achieved_label(st),
        st.limit().key()
    )
}

/// Why a no-flood step cannot be the measure of the others, if it cannot:
/// bound elsewhere than by the server, or legitimate clients failing with no
/// flood at all.
fn unfit_baseline(base: &Step) -> Option<String> {
    if !judged(base) {
        Some(format!(
            "the no-flood step was bound by {}",
            base.limit().key()
        ))
    } else if base.legit_errors > 0 {
        Some(format!(
            "the no-flood step had {} failed legitimate handshakes ({:.0}/s completed): the \
             server fails clients without any flood",
            base.legit_errors, base.legit_rate
        ))
    } else {
        None
    }
}

/// Legitimate rate kept under the heaviest flood of `kind` the server
/// bounded; with `at_max`, that step must be the unpaced one (the highest
/// rate the machine makes).
fn kept(series: &[Series], server: Server, kind: FloodKind, at_max: bool) -> Goal {
    let what = format!(
        "{}: legit handshakes/s under the heaviest {} flood{} >= 90% of no-flood",
        server.key(),
        kind.key(),
        if at_max { " (max)" } else { "" }
    );
    let Some(s) = find(series, server, kind) else {
        return Goal::undecided(what, "not run");
    };
    let Some(base) = s.baseline() else {
        return Goal::undecided(what, "no no-flood step");
    };
    if let Some(why) = unfit_baseline(base) {
        return Goal::undecided(what, why);
    }
    let top = s.heaviest();
    let Some(st) = s.heaviest_judged() else {
        let why = top.map_or("no flood step".into(), |t| {
            format!(
                "every flood step was bound elsewhere; heaviest {}",
                at(s, t)
            )
        });
        return Goal::undecided(what, why);
    };
    let mut value = at(s, st);
    if let Some(t) = top.filter(|t| t.flood_rate != st.flood_rate) {
        let _ = write!(value, "; heaviest step {} (not judged)", at(s, t));
    }
    if at_max && st.flood_rate != UNPACED {
        return Goal::undecided(what, format!("the max step was not judged; {value}"));
    }
    let share = s.share(st).unwrap_or(0.0);
    Goal {
        what,
        value,
        met: Some(share >= KEPT),
    }
}

/// The server's own CPU per refused flood unit (its processes, receive path
/// and softirq: [`Step::server_cpu_own`]), `cheap` against `other`, flood
/// alone, aimed at `factor` times lower; the whole CPU's figures beside.
fn cheaper(series: &[Series], cheap: Server, other: Server, kind: FloodKind, factor: f64) -> Goal {
    let what = format!(
        "server CPU per refusal, {} flood alone: >= {factor}x lower with {} than {}",
        kind.key(),
        cheap.key(),
        other.key()
    );
    let cost = |server, own: bool| {
        find(series, server, kind).and_then(|s| if own { s.cost_own() } else { s.cost_whole() })
    };
    match (cost(cheap, true), cost(other, true)) {
        (Some(x), Some(y)) if x > 0.0 => Goal {
            what,
            value: format!(
                "{:.2} µs vs {:.2} µs: {:.1}x (whole CPU: {})",
                x * 1e6,
                y * 1e6,
                y / x,
                match (cost(cheap, false), cost(other, false)) {
                    (Some(a), Some(b)) if a > 0.0 => {
                        format!("{:.2} vs {:.2} µs, {:.1}x", a * 1e6, b * 1e6, b / a)
                    }
                    _ => "-".into(),
                }
            ),
            met: Some(y / x >= factor),
        },
        _ => Goal::undecided(what, "a flood-alone step is missing or refused nothing"),
    }
}

/// Where `server` broke under connection flood `kind`: it should hold 90% to
/// the top of the ladder or to where the generator saturated.
fn breaking(series: &[Series], server: Server, kind: FloodKind) -> Goal {
    let what = format!(
        "{}: no breaking point (legit < 90%) under the {} flood up to the generator's limit",
        server.key(),
        kind.key()
    );
    let Some(s) = find(series, server, kind) else {
        return Goal::undecided(what, "not run");
    };
    if let Some(why) = s
        .baseline()
        .map_or(Some("no no-flood step".into()), unfit_baseline)
    {
        return Goal::undecided(what, why);
    }
    if let Some(st) = s.below_kept_step() {
        return Goal {
            what,
            value: format!("below 90%: {}", at(s, st)),
            met: Some(false),
        };
    }
    match s.heaviest_judged() {
        Some(st) => Goal {
            what,
            value: format!("held: {}; ladder {}", at(s, st), s.stop),
            met: Some(true),
        },
        None => Goal::undecided(what, "no judged flood step"),
    }
}

/// Legitimate set-up p50 with SYN cookies against reset mode, no flood.
fn setup_p50(series: &[Series]) -> Option<Goal> {
    let what = "legit connection set-up p50 with SYN cookies within +10% of without \
                (no-flood steps)"
        .to_string();
    let pairs: Vec<(&Step, &Step)> = series
        .iter()
        .filter(|s| s.server == Server::GatewayXdpCookies)
        .filter_map(|s| {
            Some((
                s.baseline()?,
                find(series, Server::GatewayXdp, s.kind)?.baseline()?,
            ))
        })
        .filter(|(a, b)| unfit_baseline(a).is_none() && unfit_baseline(b).is_none())
        .collect();
    if !series.iter().any(|s| s.server == Server::GatewayXdpCookies) {
        return None;
    }
    if pairs.is_empty() {
        return Some(Goal::undecided(
            what,
            "no pair of no-flood steps both judged and free of legitimate failures",
        ));
    }
    let mean =
        |f: fn(&(&Step, &Step)) -> f64| pairs.iter().map(f).sum::<f64>() / pairs.len() as f64;
    let (on, off) = (mean(|p| p.0.p50), mean(|p| p.1.p50));
    Some(Goal {
        what,
        value: format!(
            "{:.2} ms vs {:.2} ms: {:+.0}% ({} pairs)",
            on * 1e3,
            off * 1e3,
            100.0 * (on / off.max(1e-9) - 1.0),
            pairs.len()
        ),
        met: Some(on <= 1.1 * off),
    })
}

/// Whether the cookie variant's flood steps had SYN cookies on (its
/// configuration switch took effect): cookies sent in each, and sockets made
/// against cookies sent for its one-segment hello flood alone.
fn cookies_on(series: &[Series]) -> Option<Goal> {
    let mine: Vec<&Series> = series
        .iter()
        .filter(|s| s.server == Server::GatewayXdpCookies)
        .collect();
    if mine.is_empty() {
        return None;
    }
    let flood_steps = mine
        .iter()
        .flat_map(|s| s.steps.iter().copied().chain(s.flood_only))
        .filter(|st| st.flood_rate > 0);
    let (mut steps, mut without, mut sent, mut sockets) = (0, 0, 0.0, 0.0);
    for st in flood_steps {
        steps += 1;
        without += usize::from(st.syn_cookies_sent < 1.0);
        sent += st.syn_cookies_sent;
        sockets += st.syn_cookie_sockets;
    }
    Some(Goal {
        what: "gateway+xdp-cookies: SYN cookies answered in every flood step (the switch took \
               effect)"
            .into(),
        value: format!(
            "{without} of {steps} flood steps without a cookie sent; {sent:.0} cookies sent, \
             {sockets:.0} sockets made (legitimate clients' and passing hellos')"
        ),
        met: Some(without == 0 && steps > 0),
    })
}

/// The goals on the floods of `kind` swept.
fn kind_goals(series: &[Series], kind: FloodKind, goals: &mut Vec<Goal>) {
    let default = default_mode(series);
    let cookies = default == Server::GatewayXdpCookies;
    match kind {
        FloodKind::Stateless => {
            goals.push(kept(series, Server::GatewayXdp, kind, false));
            goals.push(kept(series, Server::GatewayXdpDrop, kind, false));
            for other in [Server::GatewayUserspace, Server::Nginx] {
                goals.push(cheaper(series, Server::GatewayXdp, other, kind, 10.0));
            }
        }
        FloodKind::Syn => {
            goals.push(kept(series, default, kind, true));
            if cookies && find(series, Server::GatewayXdp, kind).is_some() {
                goals.push(kept(series, Server::GatewayXdp, kind, true));
            }
        }
        FloodKind::Connections(HelloShape::Idle) => {
            goals.push(kept(series, default, kind, false));
        }
        FloodKind::Connections(shape) => {
            goals.push(kept(series, default, kind, false));
            goals.push(breaking(series, default, kind));
            let factor = if shape == HelloShape::Whole {
                10.0
            } else {
                5.0
            };
            goals.push(cheaper(
                series,
                default,
                Server::GatewayUserspace,
                kind,
                factor,
            ));
            if cookies && shape == HelloShape::Whole {
                goals.push(cheaper(series, default, Server::GatewayXdp, kind, 5.0));
            }
        }
    }
}

/// The headline: the server's own CPU per refused hello in the gateway's
/// default mode against userspace refusal, for the connection flood of
/// one-segment hellos (else the first hello flood swept).
pub fn headline(series: &[Series]) -> Option<String> {
    let default = default_mode(series);
    let kind = [
        FloodKind::Connections(HelloShape::Whole),
        FloodKind::Connections(HelloShape::TwoSegments),
        FloodKind::Connections(HelloShape::Records),
        FloodKind::Stateless,
    ]
    .into_iter()
    .find(|k| find(series, default, *k).is_some_and(|s| s.cost_own().is_some()))?;
    let x = find(series, default, kind)?.cost_own()?;
    let y = find(series, Server::GatewayUserspace, kind)?.cost_own()?;
    Some(format!(
        "Headline: the gateway's default mode ({}) refuses a {} flood at {:.2} µs of \
         server CPU per refusal against {:.2} µs in userspace: {:.1}x less",
        default.key(),
        kind.key(),
        x * 1e6,
        y * 1e6,
        y / x.max(1e-12)
    ))
}

/// Every goal of the run, for the kinds it swept.
pub fn goals(
    series: &[Series],
    kinds: &[FloodKind],
    capacity: &[Step],
    speed: Option<&CryptoSpeed>,
) -> Vec<Goal> {
    let mut goals = Vec::new();
    for &kind in kinds {
        kind_goals(series, kind, &mut goals);
    }
    goals.extend(setup_p50(series));
    goals.extend(cookies_on(series));
    if let Some(st) =
        find(series, Server::GatewayXdpDrop, FloodKind::Stateless).and_then(|s| s.flood_only)
    {
        goals.push(drop_rate(st));
    }
    goals.extend(capacity_goals(capacity, speed));
    goals
}

/// The XDP drop rate on one core, from the drop mode's flood-alone step.
fn drop_rate(st: &Step) -> Goal {
    let whole = st.rx_packets as f64 / st.server_cpu_total().max(1e-9) / 1e6;
    let program = st.xdp_runs as f64 / st.xdp_cpu.max(1e-9) / 1e6;
    Goal::figure(
        "XDP drop rate on one core (the XDP paper: 24 Mpps per core on a physical NIC)".into(),
        format!(
            "{whole:.2} Mpps per server-CPU second on the veth ({:.0} ns a packet), the program \
             alone {program:.2} Mpps ({:.0} ns, with BPF statistics on); the rest is veth's: \
             its ring, its NAPI thread and frames that cross from the other CPU's cache",
            1e3 / whole.max(1e-9),
            1e3 / program.max(1e-9),
        ),
    )
}

/// Handshakes per core against the crypto bound and against nginx.
fn capacity_goals(capacity: &[Step], speed: Option<&CryptoSpeed>) -> Vec<Goal> {
    let mut goals = Vec::new();
    let per_core = |server| {
        capacity
            .iter()
            .find(|s| s.server == server)
            .and_then(handshakes_per_core)
    };
    if let (Some(gw), Some(speed)) = (per_core(Server::GatewayUserspace), speed) {
        let bound = speed.handshakes_bound();
        goals.push(Goal {
            what: "mTLS handshakes/s per server core >= 70% of this machine's crypto bound".into(),
            value: format!(
                "{gw:.0}/s = {:.0}% of {bound:.0}/s (openssl speed: P-256 sign {:.0}/s, verify \
                 {:.0}/s, X25519 {:.0}/s)",
                100.0 * gw / bound,
                speed.sign,
                speed.verify,
                speed.x25519
            ),
            met: Some(gw >= 0.7 * bound),
        });
    }
    if let (Some(gw), Some(nginx)) = (per_core(Server::GatewayUserspace), per_core(Server::Nginx)) {
        goals.push(Goal {
            what: "mTLS handshakes/s per server core >= 2.5x nginx".into(),
            value: format!("{gw:.0}/s vs {nginx:.0}/s: {:.2}x", gw / nginx.max(1e-9)),
            met: Some(gw >= 2.5 * nginx),
        });
    }
    goals
}

/// The goals as lines for the terminal (a line saying so where there are none).
pub fn goal_lines(goals: &[Goal]) -> String {
    let mut t = String::new();
    for g in goals {
        let verdict = match g.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None if g.value.starts_with("not judged") => "undecided",
            None => "figure",
        };
        let _ = writeln!(t, "  [{verdict:^9}] {}: {}", g.what, g.value);
    }
    if goals.is_empty() {
        t.push_str("  (none: no kind of flood with a goal was swept)\n");
    }
    t
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::flood::FloodResult;

    /// A step of `server` under `kind` at `rate` asked, `achieved` per second
    /// over 4 s, `legit` handshakes/s, the server's budget exhausted.
    fn step(server: Server, kind: FloodKind, rate: u64, achieved: u64, legit: f64) -> Step {
        Step {
            server,
            kind,
            flood_rate: rate,
            flood: FloodResult {
                sent: achieved * 4,
                errors: 0,
                elapsed: Duration::from_secs(4),
            },
            generator: None,
            legit_completed: (legit * 4.0) as u64,
            legit_errors: 0,
            legit_rate: legit,
            p50: 0.009,
            p99: 0.017,
            wall: 4.0,
            process_cpu: 1.4,
            napi_cpu: 0.2,
            syn_cookies_sent: 0.0,
            syn_cookie_sockets: 0.0,
            syn_cookies_bad: 0.0,
            xdp_cpu: 0.0,
            xdp_runs: 0,
            rx_packets: 100_000,
            rx_dropped: 0,
            userspace_failures: 0.0,
            xdp_drops: 0.0,
            server_throttled: 0.9,
            cpu_busy: vec![(0.5, 0.0), (0.6, 0.05)],
            server_cpu_number: 1,
            generator_cpu_number: 0,
            generator_cpu: 1.0,
            foreign_load: 0.0,
            attempts: 1,
        }
    }

    #[test]
    fn goals_are_made_for_rates_without_max_and_skip_unjudged_steps() {
        let kind = FloodKind::Connections(HelloShape::Whole);
        let xdp = Server::GatewayXdp;
        let steps = vec![
            step(xdp, kind, 0, 0, 700.0),
            step(xdp, kind, 1_000, 1_000, 680.0),
            // The generator reached half the rate asked: shown, not judged.
            step(xdp, kind, 16_000, 8_000, 300.0),
        ];
        assert!(judged(&steps[1]));
        assert!(!judged(&steps[2]), "{:?}", steps[2].limit());
        let series = crate::scenario::report::series(&steps, &[], &[]);
        let goals = goals(&series, &[kind], &[], None);
        let lines = goal_lines(&goals);
        let kept = goals
            .iter()
            .find(|g| g.what.contains("heaviest connections flood"))
            .expect("a goal on the legitimate rate kept");
        assert_eq!(kept.met, Some(true), "{lines}");
        assert!(kept.value.contains("97.1% at 1k"), "{}", kept.value);
        assert!(kept.value.contains("8.0k of 16k"), "{}", kept.value);
        let cost = goals
            .iter()
            .find(|g| g.what.contains("per refusal"))
            .expect("a cost goal");
        assert_eq!(cost.met, None, "no flood-alone step: undecided");
        assert!(lines.contains("[undecided]"), "{lines}");
    }

    #[test]
    fn own_cpu_is_the_server_cpu_less_others_tasks_and_never_above_it() {
        let mut st = step(Server::GatewayXdp, FloodKind::Syn, 0, 0, 0.0);
        // Server CPU 60% busy over 4 s (2.4 s), 5% of it softirq; the server's
        // processes and NAPI thread 1.6 s: 0.68 s of others' tasks.
        let others = (0.6 - 0.05) * 4.0 - 1.6;
        assert!((st.server_cpu_own() - (2.4 - others)).abs() < 1e-9);
        // Ticks counted both in softirq and in the NAPI thread (more than the
        // CPU's task time): nothing is taken away, nothing added.
        st.napi_cpu = 1.0;
        assert!((st.server_cpu_own() - st.server_cpu_total()).abs() < 1e-9);
    }

    #[test]
    fn a_run_with_no_goal_says_so() {
        assert!(goal_lines(&[]).contains("none"));
    }
}
