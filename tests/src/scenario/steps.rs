//! One step of the flood scenario: the counters read around it, the
//! legitimate load and the flood run beside each other, and the [`Step`] made
//! of them.

use std::{sync::Arc, time::Instant};

use anyhow::Context;

use super::{
    FloodKind, Server, Settings, Step, UNPACED,
    budget::{CpuBudget, Throttling},
    cpu, servers,
};
use crate::{
    flood::{
        self, Bounds, FloodResult, Generator,
        stateless::{self, Packet, Target},
    },
    lab::{self, IFACE, Lab, metric},
    load::{LoadResult, MtlsClient},
};

/// The gateway's SYN cookie counter, by outcome.
const SYN_COOKIES: &str = "gateway_syn_cookies_total";

/// Flood connections open at once at most: a hello refused in XDP ends its
/// connection only at the client's first retransmission (~200 ms later), so
/// 16,000/s keeps about 3,200 open.
pub(super) const FLOOD_IN_FLIGHT: usize = 8192;

/// What a step needs besides its server, kind and rate.
pub(super) struct Bench<'a> {
    /// The lab.
    pub lab: &'a Lab,
    /// The certificates.
    pub fixtures: &'a servers::Fixtures,
    /// The run's settings.
    pub settings: &'a Settings,
    /// Each server process's budget.
    pub budgets: &'a [(Server, CpuBudget)],
    /// The flood generator's budget.
    pub flood_budget: Arc<CpuBudget>,
    /// Where stateless floods go.
    pub target: Target,
    /// The spoofed floods' frames to port 443 (hellos, SYNs), sent with
    /// AF_PACKET (the unpaced flood comes from live XDP frames where the
    /// kernel allows them, see [`FloodKind::Stateless`]).
    pub frames: Vec<(Packet, Arc<Vec<Vec<u8>>>)>,
    /// The XDP program's id.
    pub xdp_prog: u32,
    /// The server veth's NAPI threads (its receive path: XDP, the kernel's
    /// TCP stack), by thread id.
    pub napi: Vec<u32>,
}

/// Counters read before and after a step.
struct Reading {
    at: Instant,
    process: f64,
    napi: f64,
    generator: f64,
    xdp: (u64, u64),
    rx: (u64, u64),
    drops: f64,
    failures: f64,
    cookies: (f64, f64, f64),
    throttling: Throttling,
    cpus: cpu::CpuTimes,
}

impl Bench<'_> {
    fn budget(&self, server: Server) -> Option<&CpuBudget> {
        self.budgets
            .iter()
            .find(|(s, _)| *s == server.host())
            .map(|(_, b)| b)
    }

    fn read(&self, server: Server, pids: &[u32]) -> anyhow::Result<Reading> {
        let (drops, failures, cookies) = match server {
            Server::Nginx => (0.0, 0.0, (0.0, 0.0, 0.0)),
            _ => {
                let m = servers::scrape(self.lab, server)?;
                let handshakes = "gateway_tls_handshakes_total";
                let cookies = |outcome| metric(&m, SYN_COOKIES, &[("outcome", outcome)]);
                (
                    metric(&m, "gateway_xdp_packets_total", &[("verdict", "drop")]),
                    metric(&m, handshakes, &[]) - metric(&m, handshakes, &[("result", "ok")]),
                    (
                        cookies("sent"),
                        cookies("socket_made"),
                        cookies("bad_cookie"),
                    ),
                )
            }
        };
        Ok(Reading {
            at: Instant::now(),
            process: cpu::process_seconds(pids),
            napi: cpu::process_seconds(&self.napi),
            generator: cpu::process_seconds(&[std::process::id()]),
            xdp: cpu::bpf_prog_stats(self.xdp_prog)?,
            rx: rx_counters(self.lab)?,
            drops,
            failures,
            cookies,
            throttling: self
                .budget(server)
                .map(CpuBudget::throttling)
                .unwrap_or_default(),
            cpus: cpu::CpuTimes::now(),
        })
    }

    /// Ends the server namespace's TIME_WAIT sockets (`ss -K`), so that each
    /// step starts as on a fresh server. All the lab's clients share one
    /// address, and their ports come round every few seconds at these rates:
    /// a SYN that meets a TIME_WAIT left by an earlier step (another server's
    /// or mode's) is the kernel's to answer, with or without SYN cookies,
    /// which would charge one step's server for another's connections.
    fn forget_time_wait(&self) -> anyhow::Result<()> {
        lab::run(
            self.lab
                .in_server("ss")
                .args(["-K", "-t", "state", "time-wait"]),
        )
        .map(drop)
        .context("ending the server namespace's TIME_WAIT sockets (ss -K)")
    }

    /// One step: the legitimate load against `server` (none at concurrency 0)
    /// with a flood of `kind` at `rate` beside it (none at 0).
    pub(super) fn measure(
        &self,
        server: Server,
        kind: FloodKind,
        rate: u64,
        concurrency: usize,
    ) -> anyhow::Result<Step> {
        let pids = servers::pids(self.lab, server.host())?;
        self.forget_time_wait()?;
        let before = self.read(server, &pids)?;
        let (load, flood_generator, flood) =
            self.load_and_flood(server, kind, rate, concurrency)?;
        let after = self.read(server, &pids)?;
        let wall = (after.at - before.at).as_secs_f64();
        let cpu_busy = after.cpus.since(&before.cpus);
        let generator = after.generator - before.generator;
        let (g, sc) = (self.settings.generator_cpu, self.settings.server_cpu);
        let (process, napi) = (after.process - before.process, after.napi - before.napi);
        let others = |cpu: usize, ours: f64| {
            cpu_busy.get(cpu).map_or(0.0, |(busy, softirq)| {
                busy - softirq - ours / wall.max(1e-9)
            })
        };
        let foreign_load = if g == sc {
            others(g, generator + process + napi)
        } else {
            others(g, generator).max(others(sc, process + napi))
        };
        Ok(Step {
            server,
            kind,
            flood_rate: rate,
            flood,
            generator: flood_generator,
            legit_completed: load.completed,
            legit_errors: load.errors,
            legit_rate: load.rate(),
            p50: load.percentile(50.0).as_secs_f64(),
            p99: load.percentile(99.0).as_secs_f64(),
            wall,
            process_cpu: process,
            napi_cpu: napi,
            xdp_cpu: after.xdp.0.saturating_sub(before.xdp.0) as f64 / 1e9,
            xdp_runs: after.xdp.1.saturating_sub(before.xdp.1),
            rx_packets: after.rx.0.saturating_sub(before.rx.0),
            rx_dropped: after.rx.1.saturating_sub(before.rx.1),
            xdp_drops: after.drops - before.drops,
            userspace_failures: after.failures - before.failures,
            syn_cookies_sent: after.cookies.0 - before.cookies.0,
            syn_cookie_sockets: after.cookies.1 - before.cookies.1,
            syn_cookies_bad: after.cookies.2 - before.cookies.2,
            server_throttled: after.throttling.since(&before.throttling),
            cpu_busy,
            server_cpu_number: self.settings.server_cpu,
            generator_cpu_number: g,
            generator_cpu: generator,
            foreign_load,
            attempts: 1,
        })
    }

    /// Runs the legitimate load for the step's time with the flood beside it,
    /// from the client namespace; the flood thread runs in its budget. Says
    /// which generator sent a stateless flood.
    fn load_and_flood(
        &self,
        server: Server,
        kind: FloodKind,
        rate: u64,
        concurrency: usize,
    ) -> anyhow::Result<(LoadResult, Option<Generator>, FloodResult)> {
        let client: MtlsClient = self.fixtures.client(server);
        let duration = self.settings.step;
        let (budget, mut target) = (self.flood_budget.clone(), self.target);
        target.port = server.port();
        let packet = match kind {
            FloodKind::Syn => Packet::Syn,
            _ => Packet::Hello,
        };
        let frames = match self.frames.iter().find(|(p, _)| *p == packet) {
            Some((_, frames)) if server.port() == 443 => frames.clone(),
            _ if kind.spoofed() && rate > 0 => Arc::new(stateless::frames(target, packet)),
            _ => Arc::new(Vec::new()),
        };
        self.lab.in_client_thread(move || -> anyhow::Result<_> {
            let flood = (rate > 0).then(|| {
                // Time is the binding limit (a second of slack in the count).
                let bounds = Bounds {
                    count: match rate {
                        UNPACED => u64::MAX,
                        r => r * (duration.as_secs() + 1),
                    },
                    rate: if rate == UNPACED { 0 } else { rate },
                    max_time: duration,
                };
                let server_addr = client.addr;
                std::thread::spawn(
                    move || -> anyhow::Result<(Option<Generator>, FloodResult)> {
                        budget.enter()?; // unbudgeted where cgroup v2 cannot (said once)
                        Ok(match kind {
                            FloodKind::Stateless | FloodKind::Syn => {
                                // Paced floods use AF_PACKET (see `live::blast`).
                                let first = match rate {
                                    UNPACED => Generator::preferred(),
                                    _ => Generator::AfPacket,
                                };
                                let (generator, result) = flood::fastest::blast_packets(
                                    first, IFACE, target, packet, &frames, bounds,
                                )?;
                                (Some(generator), result)
                            }
                            FloodKind::Connections(shape) => (
                                None,
                                flood::connections_evented(
                                    server_addr,
                                    shape,
                                    bounds,
                                    FLOOD_IN_FLIGHT,
                                ),
                            ),
                        })
                    },
                )
            });
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let load = if concurrency > 0 {
                runtime.block_on(client.run(concurrency, duration))?
            } else {
                std::thread::sleep(duration);
                LoadResult::default()
            };
            let (generator, flood) = match flood {
                Some(h) => h
                    .join()
                    .map_err(|_| anyhow::anyhow!("the flood thread panicked"))??,
                None => (None, FloodResult::default()),
            };
            Ok((load, generator, flood))
        })?
    }
}

/// `(rx_packets, rx_dropped)` of the server's veth.
fn rx_counters(lab: &Lab) -> anyhow::Result<(u64, u64)> {
    let dir = format!("/sys/class/net/{IFACE}/statistics");
    let out = crate::lab::run(
        lab.in_server("cat")
            .arg(format!("{dir}/rx_packets"))
            .arg(format!("{dir}/rx_dropped")),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut n = text.split_whitespace().map(str::parse::<u64>);
    match (n.next(), n.next()) {
        (Some(Ok(p)), Some(Ok(d))) => Ok((p, d)),
        _ => anyhow::bail!("unreadable veth counters {text:?}"),
    }
}
