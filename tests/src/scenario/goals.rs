//! The scenario's goals, reported by the benchmark and never asserted: each
//! is judged only on steps that the server, not the clients' CPU, bounded.

use std::fmt::Write as _;

use super::{
    FloodKind, KEPT, Server, Step,
    crypto::CryptoSpeed,
    report::{Series, handshakes_per_core, judged},
};

/// A goal and how this run did against it.
pub struct Goal {
    /// What is aimed at.
    pub what: String,
    /// What was measured.
    pub value: String,
    /// Whether it was met (`None`: could not be decided, or a figure only).
    pub met: Option<bool>,
}

fn find<'a>(series: &'a [Series<'a>], server: Server, kind: FloodKind) -> Option<&'a Series<'a>> {
    series.iter().find(|s| s.server == server && s.kind == kind)
}

/// Legitimate rate kept under the heaviest flood of `kind`.
fn kept(series: &[Series], server: Server, kind: FloodKind) -> Goal {
    let what = format!(
        "{}: legit handshakes/s under the heaviest {} flood >= 90% of no-flood",
        server.key(),
        kind.key()
    );
    let Some(s) = find(series, server, kind) else {
        return Goal {
            what,
            value: "not run".into(),
            met: None,
        };
    };
    let (Some(base), Some(top)) = (s.baseline(), s.heaviest()) else {
        return Goal {
            what,
            value: "n/a".into(),
            met: None,
        };
    };
    let share = s.share(top).unwrap_or(0.0);
    let at = format!(
        "{:.0}% at {} {} ({:.0} achieved), limit {}",
        100.0 * share,
        super::kind::rate_label(top.flood_rate),
        kind.unit(),
        top.flood_achieved(),
        top.limit().key()
    );
    if !judged(base) || !judged(top) {
        return Goal {
            what,
            value: format!("{at}: not judged, the clients' CPU bounded a compared step"),
            met: None,
        };
    }
    Goal {
        what,
        value: at,
        met: Some(share >= KEPT),
    }
}

/// Whole-server CPU per refused hello, XDP against `other`, flood alone.
fn cheaper(series: &[Series], xdp: Server, other: Server, kind: FloodKind) -> Goal {
    let what = format!(
        "whole-server CPU per refused hello, {} flood alone: >= 10x lower with {} than {}",
        kind.key(),
        xdp.key(),
        other.key()
    );
    let costs = (
        find(series, xdp, kind).and_then(Series::cost_whole),
        find(series, other, kind).and_then(Series::cost_whole),
    );
    match costs {
        (Some(x), Some(y)) if x > 0.0 => Goal {
            what,
            value: format!("{:.3} µs vs {:.3} µs: {:.1}x", x * 1e6, y * 1e6, y / x),
            met: Some(y / x >= 10.0),
        },
        _ => Goal {
            what,
            value: "n/a".into(),
            met: None,
        },
    }
}

/// Every goal of the run.
pub fn goals(series: &[Series], capacity: &[Step], speed: Option<&CryptoSpeed>) -> Vec<Goal> {
    let mut goals = Vec::new();
    for kind in FloodKind::ALL {
        if kind == FloodKind::Stateless {
            goals.push(kept(series, Server::GatewayXdpDrop, kind));
        }
        goals.push(kept(series, Server::GatewayXdp, kind));
    }
    for kind in FloodKind::ALL
        .into_iter()
        .filter(|k| *k == FloodKind::Stateless || k.evasive())
    {
        let xdp = if kind == FloodKind::Stateless {
            Server::GatewayXdpDrop
        } else {
            Server::GatewayXdp
        };
        for other in [Server::GatewayUserspace, Server::Nginx] {
            goals.push(cheaper(series, xdp, other, kind));
        }
    }
    if let Some(st) =
        find(series, Server::GatewayXdpDrop, FloodKind::Stateless).and_then(|s| s.flood_only)
    {
        let whole = st.rx_packets as f64 / st.server_cpu_total().max(1e-9) / 1e6;
        let program = st.xdp_runs as f64 / st.xdp_cpu.max(1e-9) / 1e6;
        goals.push(Goal {
            what: "XDP drop rate on one core (the XDP paper: 24 Mpps per core on a physical NIC)".into(),
            value: format!(
                "{whole:.2} Mpps per server-CPU second on the veth ({:.0} ns a packet), the program \
                 alone {program:.2} Mpps ({:.0} ns, with BPF statistics on); the rest is veth's: \
                 its ring, its NAPI thread and frames that cross from the other CPU's cache",
                1e3 / whole.max(1e-9),
                1e3 / program.max(1e-9),
            ),
            met: None,
        });
    }
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

/// The goals as lines for the terminal.
pub fn goal_lines(goals: &[Goal]) -> String {
    let mut t = String::new();
    for g in goals {
        let verdict = match g.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None if g.value.contains("not judged") || g.value == "n/a" => "undecided",
            None => "figure",
        };
        let _ = writeln!(t, "  [{verdict:^9}] {}: {}", g.what, g.value);
    }
    t
}
