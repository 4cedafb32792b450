//! The order of the scenario's steps: servers started in their budgets, then
//! for each kind of flood a rising ladder of rates, the servers alternating
//! within each rate, each server's ladder stopping where it breaks; last, each
//! kind of flood alone against each server.

use std::sync::Arc;

use anyhow::Context;

use super::{
    BROKEN, FloodKind, Limit, NOISE_THRESHOLD, Server, Settings, Step, budget::CpuBudget, cpu,
    prepare_lab, servers, steps::Bench,
};
use crate::{
    flood::stateless::{self, Packet, Target},
    lab::{IFACE, Lab},
};

/// What [`run`] measured.
pub struct Outcome {
    /// How each server runs (the gateway's XDP attach line; empty for others).
    pub notes: Vec<(Server, String)>,
    /// Every step with legitimate load, in the order they ran.
    pub steps: Vec<Step>,
    /// One step per kind and server with that kind's heaviest flood and no
    /// legitimate load: the server CPU is then the flood's alone.
    pub flood_only: Vec<Step>,
    /// Why each server's ladder stopped, per kind.
    pub stops: Vec<(Server, FloodKind, String)>,
    /// One no-flood step per server process with no CPU budget: its handshakes
    /// per CPU second.
    pub capacity: Vec<Step>,
}

/// Upper bound on the steps a run makes (for a progress bar).
pub fn max_steps(settings: &Settings) -> u64 {
    settings
        .kinds
        .iter()
        .map(|k| (settings.servers(*k).len() * (settings.rates(*k).len() + 2)) as u64)
        .sum::<u64>()
        + Server::PROCESSES.len() as u64
}

/// Starts every server in its budget, prepares the lab, warms each server up,
/// measures each one's capacity, then runs the ladders and the flood-alone
/// steps, and stops the servers. The gateway reads `[xdp] syn_cookies` only
/// at start, so the SYN cookie variant runs last, in a phase of its own,
/// after its process is restarted with cookies on. A step during which other
/// work is seen is run again, up to [`Settings::max_attempts`] runs, and the
/// quietest kept. `progress` is called before each run of a step; it returns
/// false to stop early.
pub fn run(
    lab: &mut Lab,
    fixtures: &servers::Fixtures,
    gateway: &std::path::Path,
    settings: &Settings,
    mut progress: impl FnMut(Server, FloodKind, u64, u32) -> bool,
) -> anyhow::Result<Outcome> {
    let tag = std::process::id();
    let (mut notes, budgets) = start_servers(lab, fixtures, gateway, settings, tag)?;
    let mut napi = prepare_lab(lab, settings)?;
    warm_up(lab, fixtures, settings, &Server::PROCESSES)?;
    let target = Target::lab(lab, 443)?;
    let flood_budget = Arc::new(CpuBudget::create(
        &format!("gwbench-{tag}-flood"),
        settings.flood_share,
    )?);
    let frames: Vec<_> = [Packet::Hello, Packet::Syn]
        .into_iter()
        .map(|p| (p, Arc::new(stateless::frames(target, p))))
        .collect();
    let mut outcome = Outcome {
        notes: Vec::new(),
        steps: Vec::new(),
        flood_only: Vec::new(),
        stops: Vec::new(),
        capacity: Vec::new(),
    };
    for cookies in [false, true] {
        let wanted = settings
            .kinds
            .iter()
            .any(|k| settings.servers(*k).contains(&Server::GatewayXdpCookies));
        if cookies && !wanted {
            break;
        }
        if cookies {
            let note;
            (note, napi) = restart_with_cookies(lab, fixtures, gateway, settings, &budgets)?;
            notes.push((Server::GatewayXdpCookies, note));
        }
        let bench = Bench {
            lab,
            fixtures,
            settings,
            budgets: &budgets,
            flood_budget: flood_budget.clone(),
            target,
            frames: frames.clone(),
            xdp_prog: cpu::xdp_prog_id(&lab.server_link(IFACE)?)
                .context("no XDP program attached to the lab's veth")?,
            napi: napi.iter().map(|t| *t as u32).collect(),
        };
        let mut runner = Runner {
            bench: &bench,
            mode: if cookies {
                Server::GatewayXdpCookies
            } else {
                Server::GatewayXdp
            },
            cookies,
            progress: &mut progress,
        };
        runner.phase(&mut outcome)?;
    }
    drop(budgets);
    for server in Server::PROCESSES {
        servers::stop(lab, server)?;
    }
    outcome.notes = notes;
    Ok(outcome)
}

/// Restarts the XDP gateway with `syn_cookies = "on"` in its budget, pins
/// its new receive path and warms it up; returns its note and its veth's new
/// NAPI threads.
fn restart_with_cookies(
    lab: &mut Lab,
    fixtures: &servers::Fixtures,
    gateway: &std::path::Path,
    settings: &Settings,
    budgets: &Budgets,
) -> anyhow::Result<(String, Vec<i32>)> {
    let server = Server::GatewayXdpCookies;
    servers::stop(lab, server)?;
    let note = servers::start(lab, server, fixtures, gateway, settings.server_cpu)
        .with_context(|| format!("restart the XDP gateway as {}", server.key()))?;
    let budget = budgets
        .iter()
        .find(|(s, _)| *s == server.host())
        .map(|(_, b)| b)
        .context("no budget for the XDP gateway")?;
    for pid in servers::pids(lab, server)? {
        budget.add_process(pid)?;
    }
    let napi = super::pin_receive_path(lab, settings)?;
    warm_up(lab, fixtures, settings, &[server])?;
    Ok((note, napi))
}

/// How each server runs (its note).
type Notes = Vec<(Server, String)>;
/// Each server process's budget.
type Budgets = Vec<(Server, CpuBudget)>;

/// Starts each server process and puts it in its own budget.
fn start_servers(
    lab: &mut Lab,
    fixtures: &servers::Fixtures,
    gateway: &std::path::Path,
    settings: &Settings,
    tag: u32,
) -> anyhow::Result<(Notes, Budgets)> {
    let (mut notes, mut budgets) = (Vec::new(), Vec::new());
    for server in Server::PROCESSES {
        let note = servers::start(lab, server, fixtures, gateway, settings.server_cpu)
            .with_context(|| format!("start {}", server.key()))?;
        notes.push((server, note));
        let budget = CpuBudget::create(
            &format!("gwbench-{tag}-{}", server.key()),
            settings.server_share,
        )?;
        for pid in servers::pids(lab, server)? {
            budget.add_process(pid)?;
        }
        budgets.push((server, budget));
    }
    Ok((notes, budgets))
}

/// Legitimate load on each of `which` before anything is measured.
fn warm_up(
    lab: &Lab,
    fixtures: &servers::Fixtures,
    settings: &Settings,
    which: &[Server],
) -> anyhow::Result<()> {
    for &server in which {
        let (client, conc, time) = (
            fixtures.client(server),
            settings.concurrency,
            settings.warmup,
        );
        let warm = lab.in_client_thread(move || -> anyhow::Result<_> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(client.run(conc, time))
        })??;
        anyhow::ensure!(
            warm.completed > 0,
            "{}: no legitimate handshake completed during the warm-up ({} errors):\n{}",
            server.key(),
            warm.errors,
            lab.log(server.process())
        );
    }
    Ok(())
}

/// Runs steps: the XDP gateway's mode, the phase, the progress callback, re-runs.
struct Runner<'a, P> {
    bench: &'a Bench<'a>,
    mode: Server,
    /// The SYN cookie phase (only [`Server::GatewayXdpCookies`]), or the
    /// first (every other server).
    cookies: bool,
    progress: &'a mut P,
}

impl<P: FnMut(Server, FloodKind, u64, u32) -> bool> Runner<'_, P> {
    /// The servers of this phase swept with `kind`.
    fn servers(&self, kind: FloodKind) -> Vec<Server> {
        let mut servers = self.bench.settings.servers(kind);
        servers.retain(|s| (*s == Server::GatewayXdpCookies) == self.cookies);
        servers
    }

    /// The phase's steps: capacity (first phase only), ladders, flood alone.
    fn phase(&mut self, outcome: &mut Outcome) -> anyhow::Result<()> {
        if !self.cookies {
            outcome.capacity = self.capacity()?;
        }
        for &kind in &self.bench.settings.kinds {
            self.ladder(kind, &mut outcome.steps, &mut outcome.stops)?;
        }
        // At each kind's heaviest rate over both phases, so that the cookie
        // phase's cost per refusal is measured at the same rate as the others'.
        let alone = self.flood_alone(&outcome.steps)?;
        outcome.flood_only.extend(alone);
        Ok(())
    }

    /// Each server's handshake rate per CPU second, with no budget holding it back.
    fn capacity(&mut self) -> anyhow::Result<Vec<Step>> {
        let mut capacity = Vec::new();
        for (server, budget) in self.bench.budgets {
            budget.limit(false)?;
            if !(self.progress)(*server, FloodKind::Stateless, 0, 1) {
                anyhow::bail!("interrupted");
            }
            let concurrency = self.bench.settings.concurrency;
            let step = self
                .bench
                .measure(*server, FloodKind::Stateless, 0, concurrency);
            budget.limit(true)?;
            capacity.push(step?);
        }
        Ok(capacity)
    }

    /// One step, run again while other work was seen; the quietest run.
    fn quietest(
        &mut self,
        server: Server,
        kind: FloodKind,
        rate: u64,
        concurrency: usize,
    ) -> anyhow::Result<Step> {
        let b = self.bench;
        servers::select(b.lab, server, b.fixtures, &mut self.mode)?;
        let mut best: Option<Step> = None;
        for attempt in 1..=b.settings.max_attempts.max(1) {
            if !(self.progress)(server, kind, rate, attempt) {
                anyhow::bail!("interrupted");
            }
            let mut step = b.measure(server, kind, rate, concurrency)?;
            step.attempts = attempt;
            let quiet = step.foreign_load <= NOISE_THRESHOLD;
            if best
                .as_ref()
                .is_none_or(|x| step.foreign_load < x.foreign_load)
            {
                best = Some(step);
            }
            if quiet {
                break;
            }
        }
        best.context("no step ran")
    }

    /// The no-flood steps, then the rising rates of `kind`, the servers
    /// alternating within each rate, each one's ladder stopping where it breaks.
    fn ladder(
        &mut self,
        kind: FloodKind,
        steps: &mut Vec<Step>,
        stops: &mut Vec<(Server, FloodKind, String)>,
    ) -> anyhow::Result<()> {
        let settings = self.bench.settings;
        let mut active = self.servers(kind);
        let mut baseline = Vec::new();
        for &server in &active {
            let step = self.quietest(server, kind, 0, settings.concurrency)?;
            baseline.push((server, step.legit_rate));
            steps.push(step);
        }
        for &rate in settings.rates(kind) {
            let mut still = Vec::new();
            for server in active {
                let step = self.quietest(server, kind, rate, settings.concurrency)?;
                let base = baseline
                    .iter()
                    .find(|(s, _)| *s == server)
                    .map_or(0.0, |b| b.1);
                match stop_reason(&step, step.legit_rate / base.max(1e-9)) {
                    Some(why) => stops.push((server, kind, why)),
                    None => still.push(server),
                }
                steps.push(step);
            }
            active = still;
            if active.is_empty() {
                break;
            }
        }
        for server in active {
            stops.push((server, kind, "held to the top of the ladder".into()));
        }
        Ok(())
    }

    /// Each kind's heaviest flood alone (no legitimate load) against each server.
    fn flood_alone(&mut self, steps: &[Step]) -> anyhow::Result<Vec<Step>> {
        let settings = self.bench.settings;
        let mut flood_only = Vec::new();
        for &kind in &settings.kinds {
            let Some(heaviest) = steps
                .iter()
                .filter(|s| s.kind == kind)
                .map(|s| s.flood_rate)
                .max()
                .filter(|r| *r > 0)
            else {
                continue;
            };
            for server in self.servers(kind) {
                flood_only.push(self.quietest(server, kind, heaviest, 0)?);
            }
        }
        Ok(flood_only)
    }
}

/// Why a server's ladder stops after this step, if it does.
fn stop_reason(step: &Step, share: f64) -> Option<String> {
    if share < BROKEN {
        Some(format!(
            "broken: {:.0}% of its no-flood rate at {}",
            100.0 * share,
            super::kind::rate_label(step.flood_rate)
        ))
    } else if step.limit() == Limit::Generator
        && !(step.kind.spoofed() && step.flood_rate != super::UNPACED)
    {
        // (A paced spoofed step's generator is AF_PACKET; the unpaced one,
        // live XDP frames where the kernel allows them, goes further, so that
        // ladder goes on to it.)
        Some(format!(
            "generator saturated: {:.0} of {} asked",
            step.flood_achieved(),
            super::kind::rate_label(step.flood_rate)
        ))
    } else {
        None
    }
}
