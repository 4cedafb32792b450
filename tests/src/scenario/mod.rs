//! The flood scenario behind `cargo xtask bench flood`: for each server
//! configuration ([`Server`]) and each flood rate, legitimate mTLS clients at a
//! fixed concurrency run against the server in the lab while a connection flood
//! of sub-minimum ClientHellos runs beside them; each step records the
//! legitimate handshake rate and latency, the server's CPU time and the XDP
//! drops. [`report`] derives the cost per refused handshake and prints, writes
//! and plots the figures.

pub mod cpu;
pub mod plot;
pub mod report;
pub mod servers;

use std::time::{Duration, Instant};

use anyhow::Context;
pub use servers::Server;

use crate::{
    flood::{self, Bounds, FloodResult},
    lab::{self, IFACE, Lab, metric},
    load::MtlsClient,
};

/// What a run does; [`Settings::default`] finishes in a few minutes on two CPUs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Flood rates, connections per second (0: no flood, the baseline).
    pub rates: Vec<u64>,
    /// How long each step's legitimate load runs.
    pub step: Duration,
    /// Legitimate load before the first step of each server (not measured).
    pub warmup: Duration,
    /// Legitimate clients in flight at once.
    pub concurrency: usize,
    /// The CPU the server runs on.
    pub server_cpu: usize,
    /// The CPU the generators (legitimate load, flood) and the origin run on.
    pub generator_cpu: usize,
    /// Runs of a step at most while other work on the machine is seen during it
    /// (the run with the least is kept).
    pub max_attempts: u32,
}

/// Other work seen on a CPU during a step above which the step is run again:
/// a fraction of the CPU.
pub const NOISE_THRESHOLD: f64 = 0.10;

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            rates: vec![0, 500, 1000, 2000, 4000],
            step: Duration::from_secs(6),
            warmup: Duration::from_secs(2),
            concurrency: 16,
            server_cpu: 1,
            generator_cpu: 0,
            max_attempts: 3,
        }
    }
}

/// Flood connections open at once at most: a hello refused in XDP ends its
/// connection only at the client's first retransmission (~200 ms later), so
/// 4,000/s keeps about 800 open.
pub const FLOOD_IN_FLIGHT: usize = 4096;

/// What one step measured.
#[derive(Clone, Debug)]
pub struct Step {
    /// The server configuration.
    pub server: Server,
    /// The flood rate asked for (connections per second).
    pub flood_rate: u64,
    /// What the flood did: connections that sent their hello, failures, time.
    pub flood: FloodResult,
    /// Legitimate cycles (handshake + one request) completed.
    pub legit_completed: u64,
    /// Legitimate cycles that failed.
    pub legit_errors: u64,
    /// Legitimate cycles per second.
    pub legit_rate: f64,
    /// Median handshake latency (TCP connect to TLS established), seconds.
    pub p50: f64,
    /// 99th percentile handshake latency, seconds.
    pub p99: f64,
    /// Wall time between the step's two CPU readings, seconds.
    pub wall: f64,
    /// utime + stime of the server's processes over the step, seconds.
    pub process_cpu: f64,
    /// Run time of the XDP program over the step (kernel BPF statistics), seconds.
    pub xdp_cpu: f64,
    /// Handshakes the gateway's terminator saw fail over the step (flood
    /// connections that reached userspace; 0 for nginx, which has no counter).
    pub userspace_failures: f64,
    /// Packets the XDP program dropped or refused over the step
    /// (`gateway_xdp_packets_total{verdict="drop"}`).
    pub xdp_drops: f64,
    /// Busy and softirq fractions of each CPU over the step.
    pub cpu_busy: Vec<(f64, f64)>,
    /// The server's CPU number (index into `cpu_busy`).
    pub server_cpu_number: usize,
    /// utime + stime of this process (legitimate load, flood, origin), seconds.
    pub generator_cpu: f64,
    /// Work of others seen during the step: the larger, over the two CPUs, of
    /// busy - softirq - this run's processes on it, as a fraction of the CPU.
    /// Softirq time is also charged to the process it interrupts, so this
    /// errs low (it is often a little negative on a quiet machine).
    pub foreign_load: f64,
    /// Runs of this step made (see [`Settings::max_attempts`]).
    pub attempts: u32,
}

impl Step {
    /// The CPU charged to the server: its processes plus its XDP program.
    pub fn server_cpu(&self) -> f64 {
        self.process_cpu + self.xdp_cpu
    }

    /// Everything the server's CPU did over the step, seconds: its processes,
    /// the XDP program, the kernel's receive path steered there, and anything
    /// else that ran on it.
    pub fn server_cpu_total(&self) -> f64 {
        self.cpu_busy
            .get(self.server_cpu_number)
            .map_or(0.0, |c| c.0 * self.wall)
    }

    /// Refused handshakes: flood connections that sent their hello.
    pub fn refused(&self) -> u64 {
        self.flood.sent
    }

    /// Flood connections per second achieved.
    pub fn flood_achieved(&self) -> f64 {
        self.flood.sent as f64 / self.flood.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Prepares the lab for floods: a wide port range and TIME_WAIT reuse for the
/// clients, and each side's receive path steered (RPS) to its own CPU, so that
/// the server's kernel TCP work runs on the server's CPU as it would behind a
/// NIC, not on the generator's CPU that sent the packets over the veth.
pub fn prepare_lab(lab: &Lab, settings: &Settings) -> anyhow::Result<()> {
    lab::run(lab.in_client("sysctl").args([
        "-qw",
        "net.ipv4.ip_local_port_range=1024 65000",
        "net.ipv4.tcp_tw_reuse=1",
    ]))?;
    for (mut cmd, cpu) in [
        (lab.in_server("sh"), settings.server_cpu),
        (lab.in_client("sh"), settings.generator_cpu),
    ] {
        let mask = format!("{:x}", 1u64 << cpu);
        lab::run(cmd.arg("-c").arg(format!(
            "echo {mask} > /sys/class/net/{IFACE}/queues/rx-0/rps_cpus"
        )))?;
    }
    Ok(())
}

/// How busy each CPU is with nothing of this run going on: a one-second
/// sample, to show work of other users of the machine that skews the figures.
pub fn background_busy() -> Vec<f64> {
    let before = cpu::CpuTimes::now();
    std::thread::sleep(Duration::from_secs(1));
    cpu::CpuTimes::now()
        .since(&before)
        .into_iter()
        .map(|c| c.0)
        .collect()
}

/// Counters read before and after a step.
struct Reading {
    at: Instant,
    process: f64,
    all_servers: f64,
    generator: f64,
    xdp_ns: u64,
    drops: f64,
    failures: f64,
    cpus: cpu::CpuTimes,
}

fn read(
    lab: &Lab,
    server: Server,
    pids: &[u32],
    all_pids: &[u32],
    xdp_prog: Option<u32>,
) -> anyhow::Result<Reading> {
    let (drops, failures) = match server {
        Server::Nginx => (0.0, 0.0),
        _ => {
            let m = servers::scrape(lab, server)?;
            let handshakes = "gateway_tls_handshakes_total";
            (
                metric(&m, "gateway_xdp_packets_total", &[("verdict", "drop")]),
                metric(&m, handshakes, &[]) - metric(&m, handshakes, &[("result", "ok")]),
            )
        }
    };
    let xdp_ns = match xdp_prog {
        Some(id) => cpu::bpf_prog_stats(id)?.0,
        None => 0,
    };
    Ok(Reading {
        at: Instant::now(),
        process: cpu::process_seconds(pids),
        all_servers: cpu::process_seconds(all_pids),
        generator: cpu::process_seconds(&[std::process::id()]),
        xdp_ns,
        drops,
        failures,
        cpus: cpu::CpuTimes::now(),
    })
}

/// Runs the legitimate load for `duration`, with a connection flood at `rate`
/// beside it (none at 0), from the client namespace.
fn load_and_flood(
    lab: &Lab,
    client: &MtlsClient,
    concurrency: usize,
    duration: Duration,
    rate: u64,
) -> anyhow::Result<(crate::load::LoadResult, FloodResult)> {
    let client = client.clone();
    lab.in_client_thread(move || -> anyhow::Result<_> {
        let target = client.addr;
        let flood = (rate > 0).then(|| {
            // Time is the binding limit (a second of slack in the count), so the
            // flood runs beside the whole load at the rate asked for.
            let bounds = Bounds {
                count: rate * (duration.as_secs() + 1),
                rate,
                max_time: duration,
            };
            std::thread::spawn(move || flood::connections_evented(target, bounds, FLOOD_IN_FLIGHT))
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let load = runtime.block_on(client.run(concurrency, duration));
        let flood = match flood {
            Some(h) => h
                .join()
                .map_err(|_| anyhow::anyhow!("the flood thread panicked"))?,
            None => FloodResult::default(),
        };
        Ok((load?, flood))
    })?
}

/// One step: the legitimate load against `server` with a flood at `rate`
/// beside it, and the counters around it.
fn measure(
    lab: &Lab,
    fixtures: &servers::Fixtures,
    settings: &Settings,
    server: Server,
    rate: u64,
    concurrency: usize,
    prog: Option<u32>,
) -> anyhow::Result<Step> {
    let pids = servers::pids(lab, server)?;
    let mut all_pids = Vec::new();
    for s in Server::ALL {
        all_pids.extend(servers::pids(lab, s)?);
    }
    let client = fixtures.client(server);
    let before = read(lab, server, &pids, &all_pids, prog)?;
    let (load, flood) = load_and_flood(lab, &client, concurrency, settings.step, rate)?;
    let after = read(lab, server, &pids, &all_pids, prog)?;
    let wall = (after.at - before.at).as_secs_f64();
    let cpu_busy = after.cpus.since(&before.cpus);
    let ours = [
        (settings.generator_cpu, after.generator - before.generator),
        (settings.server_cpu, after.all_servers - before.all_servers),
    ];
    let foreign_load = ours
        .iter()
        .filter_map(|(cpu, seconds)| {
            let (busy, softirq) = cpu_busy.get(*cpu)?;
            Some(busy - softirq - seconds / wall.max(1e-9))
        })
        .fold(f64::MIN, f64::max);
    Ok(Step {
        server,
        flood_rate: rate,
        flood,
        legit_completed: load.completed,
        legit_errors: load.errors,
        legit_rate: load.rate(),
        p50: load.percentile(50.0).as_secs_f64(),
        p99: load.percentile(99.0).as_secs_f64(),
        wall,
        process_cpu: after.process - before.process,
        xdp_cpu: after.xdp_ns.saturating_sub(before.xdp_ns) as f64 / 1e9,
        xdp_drops: after.drops - before.drops,
        userspace_failures: after.failures - before.failures,
        cpu_busy,
        server_cpu_number: settings.server_cpu,
        generator_cpu: after.generator - before.generator,
        foreign_load,
        attempts: 1,
    })
}

/// What [`run`] measured.
pub struct Outcome {
    /// How each server runs (the gateway's XDP attach line; empty for others).
    pub notes: Vec<(Server, String)>,
    /// Every step with legitimate load, in the order they ran.
    pub steps: Vec<Step>,
    /// One step per server with the heaviest flood and no legitimate load: the
    /// server's CPU is then the flood's alone.
    pub flood_only: Vec<Step>,
}

/// Starts every server, warms each up, then runs the steps rate by rate, the
/// servers alternating within each rate (so that load from other users of the
/// machine falls on all of them alike), and stops the servers. A step during
/// which other work is seen ([`Step::foreign_load`] above [`NOISE_THRESHOLD`])
/// is run again, up to [`Settings::max_attempts`] runs, and the quietest kept.
/// Last, each server gets the heaviest flood with no legitimate load.
/// `progress` is called before each run of a step with its server, rate and
/// attempt number; it returns false to stop early.
pub fn run(
    lab: &mut Lab,
    fixtures: &servers::Fixtures,
    gateway: &std::path::Path,
    settings: &Settings,
    mut progress: impl FnMut(Server, u64, u32) -> bool,
) -> anyhow::Result<Outcome> {
    let mut notes = Vec::new();
    for server in Server::ALL {
        let note = servers::start(lab, server, fixtures, gateway, settings.server_cpu)
            .with_context(|| format!("start {}", server.key()))?;
        notes.push((server, note));
    }
    for server in Server::ALL {
        let client = fixtures.client(server);
        let warm = load_and_flood(lab, &client, settings.concurrency, settings.warmup, 0)?.0;
        anyhow::ensure!(
            warm.completed > 0,
            "{}: no legitimate handshake completed during the warm-up ({} errors):\n{}",
            server.key(),
            warm.errors,
            lab.log(server.process())
        );
    }
    let xdp_prog = cpu::xdp_prog_id(&lab.server_link(IFACE)?)
        .context("no XDP program attached to the lab's veth")?;
    let mut quietest = |server: Server, rate: u64, concurrency: usize| {
        let mut best: Option<Step> = None;
        for attempt in 1..=settings.max_attempts.max(1) {
            if !progress(server, rate, attempt) {
                anyhow::bail!("interrupted");
            }
            let prog = (server == Server::GatewayXdp).then_some(xdp_prog);
            let mut step = measure(lab, fixtures, settings, server, rate, concurrency, prog)?;
            step.attempts = attempt;
            let quiet = step.foreign_load <= NOISE_THRESHOLD;
            if best
                .as_ref()
                .is_none_or(|b| step.foreign_load < b.foreign_load)
            {
                best = Some(step);
            }
            if quiet {
                break;
            }
        }
        best.context("no step ran")
    };
    let mut steps = Vec::new();
    for &rate in &settings.rates {
        for server in Server::ALL {
            steps.push(quietest(server, rate, settings.concurrency)?);
        }
    }
    let heaviest = settings.rates.iter().copied().max().unwrap_or(0);
    let mut flood_only = Vec::new();
    if heaviest > 0 {
        for server in Server::ALL {
            flood_only.push(quietest(server, heaviest, 0)?);
        }
    }
    for server in Server::ALL {
        servers::stop(lab, server)?;
    }
    Ok(Outcome {
        notes,
        steps,
        flood_only,
    })
}
