//! The flood scenario behind `cargo xtask bench flood`: for each kind of flood
//! ([`FloodKind`]), each server configuration ([`Server`]) and a rising ladder
//! of flood rates, legitimate mTLS clients at a fixed concurrency run against
//! the server while the flood runs beside them, until the server breaks (its
//! legitimate rate falls below half of its no-flood rate) or the generator
//! saturates. Each step records the legitimate rate and latency, the CPU of
//! every party and what limited the step. Then each server gets each kind of
//! flood alone, to charge it the CPU per refused hello. [`report`] prints,
//! writes and plots the figures.
//!
//! Every party has a known CPU: the server's processes a fixed budget of the
//! server CPU ([`budget`], the cgroup `cpu` controller, v1 or v2), the
//! server's receive path (the
//! veth's NAPI thread, where XDP runs) the rest of that CPU, and the flood
//! generator a fixed budget of the other CPU, leaving the legitimate clients
//! enough of it to keep the server's budget busy.

pub mod budget;
pub mod cpu;
pub mod crypto;
pub mod goals;
pub mod kind;
pub mod plot;
pub mod report;
pub mod servers;
mod steps;
mod sweep;

use std::time::Duration;

pub use kind::{FloodKind, UNPACED};
pub use servers::Server;
pub use sweep::{Outcome, max_steps, run};

use crate::{
    flood::{FloodResult, Generator, HelloShape, stateless},
    lab::{self, IFACE, Lab},
};

/// What a run does; [`Settings::default`] finishes in about ten minutes on two CPUs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The stateless flood's rates, packets per second, rising ([`UNPACED`]: as
    /// fast as the generator goes).
    pub stateless_rates: Vec<u64>,
    /// The SYN flood's rates, SYNs per second, rising ([`UNPACED`] as above).
    pub syn_rates: Vec<u64>,
    /// The server configurations a run may sweep (each kind takes those of
    /// them that [`Settings::servers`] gives it).
    pub servers: Vec<Server>,
    /// The connection floods' rates, connections per second, rising.
    pub connection_rates: Vec<u64>,
    /// The kinds of flood swept.
    pub kinds: Vec<FloodKind>,
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
    /// The server's processes' budget, a fraction of the server CPU.
    pub server_share: f64,
    /// The flood generator's budget, a fraction of the generator CPU.
    pub flood_share: f64,
    /// Runs of a step at most while other work on the machine is seen during it
    /// (the run with the least is kept).
    pub max_attempts: u32,
}

/// Other work seen on a CPU during a step above which the step is run again:
/// a fraction of the CPU.
pub const NOISE_THRESHOLD: f64 = 0.10;
/// Legitimate rate, as a share of no-flood, below which a server is broken and
/// its ladder stops.
pub const BROKEN: f64 = 0.5;
/// Legitimate rate, as a share of no-flood, a server should keep.
pub const KEPT: f64 = 0.9;

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            stateless_rates: vec![100_000, UNPACED],
            syn_rates: vec![100_000, UNPACED],
            servers: Server::ALL.to_vec(),
            connection_rates: vec![1_000, 4_000, 10_000],
            kinds: FloodKind::DEFAULT.to_vec(),
            step: Duration::from_secs(4),
            warmup: Duration::from_secs(2),
            concurrency: 16,
            server_cpu: 1,
            generator_cpu: 0,
            server_share: 0.35,
            flood_share: 0.5,
            max_attempts: 2,
        }
    }
}

impl Settings {
    /// The ladder of rates for `kind`.
    pub fn rates(&self, kind: FloodKind) -> &[u64] {
        match kind {
            FloodKind::Stateless => &self.stateless_rates,
            FloodKind::Syn => &self.syn_rates,
            FloodKind::Connections(_) => &self.connection_rates,
        }
    }

    /// The server configurations swept with `kind`, of those chosen
    /// ([`Settings::servers`]): drop mode for the stateless hello flood only
    /// (elsewhere it only makes clients wait); SYN cookies for the floods
    /// that open connections (SYN and connection floods) where the gateway
    /// has them ([`servers::syn_cookies_known`]), and then reset mode without
    /// cookies only where a goal compares with it (the stateless flood, the
    /// one-segment hello connections), to keep the run short.
    pub fn servers(&self, kind: FloodKind) -> Vec<Server> {
        let cookies = servers::syn_cookies_known();
        Server::ALL
            .into_iter()
            .filter(|s| self.servers.contains(s))
            .filter(|s| match s {
                Server::GatewayXdpDrop => kind == FloodKind::Stateless,
                Server::GatewayXdpCookies => kind != FloodKind::Stateless && cookies,
                Server::GatewayXdp => {
                    !cookies
                        || matches!(
                            kind,
                            FloodKind::Stateless | FloodKind::Connections(HelloShape::Whole)
                        )
                }
                _ => true,
            })
            .collect()
    }
}

/// What limited a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// The server's processes used their whole budget: the server is the bottleneck.
    Server,
    /// The server CPU's receive path (XDP, the kernel's TCP stack) fell behind
    /// and the veth's receive ring dropped packets (over 1% of those it took),
    /// legitimate ones among them.
    ReceivePath,
    /// The flood generator could not reach the rate asked for.
    Generator,
    /// The generator CPU, where the legitimate clients run, was saturated.
    Clients,
    /// None of these: latency (e.g. retransmissions after drops) set the rate.
    Latency,
}

impl Limit {
    /// Short name for tables and JSON.
    pub fn key(self) -> &'static str {
        match self {
            Limit::Server => "server",
            Limit::ReceivePath => "rx-path",
            Limit::Generator => "generator",
            Limit::Clients => "clients",
            Limit::Latency => "latency",
        }
    }

    /// Whether a step so bounded says something about the server, so that a
    /// goal may be judged on it: bound by its budget, or by nothing outside
    /// it (latency: its own queues and the kernel's). Steps bound by the
    /// generator, the receive path or the clients' CPU are shown, not judged.
    pub fn judged(self) -> bool {
        matches!(self, Limit::Server | Limit::Latency)
    }
}

/// What one step measured.
#[derive(Clone, Debug)]
pub struct Step {
    /// The server configuration.
    pub server: Server,
    /// The kind of flood.
    pub kind: FloodKind,
    /// The flood rate asked for ([`UNPACED`]: as fast as it goes).
    pub flood_rate: u64,
    /// What the flood generator did.
    pub flood: FloodResult,
    /// Which generator sent a stateless flood (`None`: no flood, or connections).
    pub generator: Option<Generator>,
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
    /// Wall time between the step's two readings, seconds.
    pub wall: f64,
    /// utime + stime of the server's processes over the step, seconds.
    pub process_cpu: f64,
    /// utime + stime of the server veth's NAPI threads over the step (its
    /// receive path: XDP, the kernel's TCP stack), seconds.
    pub napi_cpu: f64,
    /// Run time of the XDP program over the step (kernel BPF statistics), seconds.
    pub xdp_cpu: f64,
    /// Runs of the XDP program over the step (every packet the server's veth took).
    pub xdp_runs: u64,
    /// Packets the server's veth received over the step.
    pub rx_packets: u64,
    /// Packets its receive ring dropped, full, over the step.
    pub rx_dropped: u64,
    /// Handshakes the gateway's terminator saw fail (flood connections that
    /// reached userspace; 0 for nginx, which has no counter).
    pub userspace_failures: f64,
    /// SYNs the gateway answered with a cookie over the step
    /// (`gateway_syn_cookies_total{outcome="sent"}`; 0 without the counter).
    pub syn_cookies_sent: f64,
    /// Sockets the kernel made for cookie connections whose hello passed
    /// (`gateway_syn_cookies_total{outcome="socket_made"}`).
    pub syn_cookie_sockets: f64,
    /// Segments with a bad cookie and no socket, dropped
    /// (`gateway_syn_cookies_total{outcome="bad_cookie"}`).
    pub syn_cookies_bad: f64,
    /// Packets the XDP program refused (`gateway_xdp_packets_total{verdict="drop"}`).
    pub xdp_drops: f64,
    /// Share of scheduling periods in which the server's budget ran out.
    pub server_throttled: f64,
    /// Busy and softirq fractions of each CPU over the step.
    pub cpu_busy: Vec<(f64, f64)>,
    /// The server's CPU number (index into `cpu_busy`).
    pub server_cpu_number: usize,
    /// The generator's CPU number.
    pub generator_cpu_number: usize,
    /// utime + stime of this process (legitimate load, flood, origin), seconds.
    pub generator_cpu: f64,
    /// Work of others seen during the step, as a fraction of a CPU (errs
    /// low): busy - softirq - this run's processes on the generator CPU, or
    /// busy - softirq - the server's processes and its receive path's NAPI
    /// thread on the server CPU, whichever is more.
    pub foreign_load: f64,
    /// Runs of this step made (see [`Settings::max_attempts`]).
    pub attempts: u32,
}

impl Step {
    /// The CPU charged to the server's processes plus its XDP program.
    pub fn server_cpu(&self) -> f64 {
        self.process_cpu + self.xdp_cpu
    }

    /// Everything the server's CPU did over the step, seconds: its processes,
    /// the veth's receive path (XDP, the kernel's TCP stack) and anything else.
    pub fn server_cpu_total(&self) -> f64 {
        self.busy(self.server_cpu_number) * self.wall
    }

    /// The server's own CPU over the step, seconds: everything the server CPU
    /// did ([`server_cpu_total`](Self::server_cpu_total)) but the work of
    /// others' tasks on it, which is its busy time outside softirq less the
    /// server's processes and its receive path's NAPI thread (clipped at 0).
    /// Its processes and NAPI thread are pinned there; the softirq time
    /// (the TCP stack behind RPS, timers, retransmissions) is the server's.
    /// Tick-based accounting charges a tick spent in a softirq both to the
    /// thread it interrupted and to softirq time, so adding the parts would
    /// count the receive path twice; this errs towards the server instead.
    pub fn server_cpu_own(&self) -> f64 {
        let (busy, softirq) = self
            .cpu_busy
            .get(self.server_cpu_number)
            .copied()
            .unwrap_or_default();
        let ours = self.process_cpu + self.napi_cpu;
        let others = ((busy - softirq) * self.wall - ours).max(0.0);
        (busy * self.wall - others).max(0.0)
    }

    fn busy(&self, cpu: usize) -> f64 {
        self.cpu_busy.get(cpu).map_or(0.0, |c| c.0)
    }

    /// Refused flood units: for the stateless flood, the flood packets the
    /// server's veth took (each is a hello refused, by XDP or by the kernel's
    /// TCP stack); for the SYN flood, the SYNs it took (each answered, by XDP
    /// or the kernel); for connection floods, connections that sent their
    /// hello (idle ones: that were opened).
    pub fn refused(&self) -> u64 {
        match self.kind {
            FloodKind::Stateless | FloodKind::Syn if self.flood_rate > 0 => self.rx_packets,
            FloodKind::Stateless | FloodKind::Syn => 0,
            FloodKind::Connections(_) => self.flood.sent,
        }
    }

    /// Flood units per second the generator achieved.
    pub fn flood_achieved(&self) -> f64 {
        self.flood.sent as f64 / self.flood.elapsed.as_secs_f64().max(1e-9)
    }

    /// What limited the step, from the most to the least specific sign.
    pub fn limit(&self) -> Limit {
        let asked = self.flood_rate;
        // A receive ring that overflowed drops legitimate packets with the
        // flood's, whether the receive path's CPU was saturated or only late.
        // A flood short of its rate did not test the server at that rate, even
        // where the server's budget ran out too (as it does under legitimate
        // load alone), so the generator comes before the server.
        if self.rx_dropped as f64 > 0.01 * self.rx_packets.max(1) as f64 {
            Limit::ReceivePath
        } else if asked != UNPACED && asked > 0 && self.flood_achieved() < 0.9 * asked as f64 {
            Limit::Generator
        } else if self.server_throttled >= 0.5 {
            Limit::Server
        } else if self.busy(self.generator_cpu_number) > 0.97 {
            Limit::Clients
        } else {
            Limit::Latency
        }
    }
}

/// Prepares the lab for floods:
/// - a wide port range, TIME_WAIT reuse and no autocorking for the clients
///   (each write of a split hello leaves as its own segment);
/// - routes back to the stateless flood's spoofed sources;
/// - the server veth's NAPI in a thread pinned to the server CPU, at real-time
///   priority, so that its receive path, XDP included, runs there and takes
///   precedence over processes as it would behind a NIC (the client veth's
///   likewise on the generator CPU);
/// - each side's receive path after it steered (RPS) to its own CPU.
///
/// Call after the XDP program is attached (a veth has NAPI only then).
/// Returns the server veth's NAPI threads.
pub fn prepare_lab(lab: &Lab, settings: &Settings) -> anyhow::Result<Vec<i32>> {
    lab::run(lab.in_client("sysctl").args([
        "-qw",
        "net.ipv4.ip_local_port_range=1024 65000",
        "net.ipv4.tcp_tw_reuse=1",
        "net.ipv4.tcp_autocorking=0",
    ]))?;
    stateless::route_spoofed_sources(lab)?;
    pin_receive_path(lab, settings)
}

/// Steers each side's receive path (RPS) to its own CPU and runs each veth's
/// NAPI in a thread pinned there at real-time priority (see [`prepare_lab`]);
/// again after the XDP program was attached anew. Returns the server veth's
/// NAPI threads, whose time is the server's.
///
/// The client veth's NAPI (it has one: the lab's pass program, so that
/// `XDP_TX` frames reach it) runs in a thread on the generator CPU too: as a
/// softirq it would run where the server's `XDP_TX` scheduled it, the server
/// CPU, and the clients' receive path would be charged to the server. Both
/// veths are named alike, so the client's thread is told apart as the one its
/// own `threaded` switch starts.
pub fn pin_receive_path(lab: &Lab, settings: &Settings) -> anyhow::Result<Vec<i32>> {
    for (mut cmd, cpu) in [
        (lab.in_server("sh"), settings.server_cpu),
        (lab.in_client("sh"), settings.generator_cpu),
    ] {
        let mask = format!("{:x}", 1u64 << cpu);
        lab::run(cmd.arg("-c").arg(format!(
            "echo {mask} > /sys/class/net/{IFACE}/queues/rx-0/rps_cpus"
        )))?;
    }
    let threaded = |mut cmd: std::process::Command, on: u8| {
        lab::run(
            cmd.arg("-c")
                .arg(format!("echo {on} > /sys/class/net/{IFACE}/threaded")),
        )
    };
    threaded(lab.in_server("sh"), 1)?;
    threaded(lab.in_client("sh"), 0)?;
    let server = cpu::napi_threads(IFACE);
    anyhow::ensure!(
        !server.is_empty(),
        "no NAPI thread for the server's {IFACE} after enabling threaded NAPI"
    );
    threaded(lab.in_client("sh"), 1)?;
    let client: Vec<i32> = cpu::napi_threads(IFACE)
        .into_iter()
        .filter(|t| !server.contains(t))
        .collect();
    if client.is_empty() {
        // A kernel that keeps a NAPI thread once made cannot tell them apart.
        threaded(lab.in_client("sh"), 0)?;
        eprintln!(
            "!!! the client veth's NAPI thread cannot be told from the server's on this \
             kernel: it runs as a softirq, partly on the server CPU, and counts there"
        );
    }
    for (threads, cpu) in [
        (&server, settings.server_cpu),
        (&client, settings.generator_cpu),
    ] {
        for &tid in threads {
            cpu::pin_thread(tid, cpu)?;
            if let Err(e) = cpu::make_real_time(tid) {
                eprintln!(
                    "!!! {e:#}: a veth's NAPI thread runs at normal priority, so its \
                     receive ring may drop packets a NIC's softirq would have taken"
                );
            }
        }
    }
    Ok(server)
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
