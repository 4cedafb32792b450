//! The flood generators against the XDP filter in a lab: bounded, stopping by
//! themselves, and every sub-minimum hello refused in the kernel.

use std::{net::SocketAddr, path::Path, time::Duration};

use gateway_tests::{
    flood::{self, Bounds, Generator, stateless},
    lab::{IFACE, Lab, SERVER_V4, metric},
};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

fn drops(lab: &Lab) -> f64 {
    let m = lab.metrics().unwrap();
    metric(
        &m,
        "gateway_xdp_packets_total",
        &[("reason", "below_min_tls1_0")],
    ) + metric(
        &m,
        "gateway_xdp_packets_total",
        &[("reason", "below_min_tls1_1")],
    )
}

fn lab_with_filter(tls_server: bool) -> Lab {
    let mut lab = Lab::create().unwrap();
    if tls_server {
        let (cert, key) = lab.self_signed(&["lab.test"]).unwrap();
        lab.start_tls_server(&cert, &key).unwrap();
    }
    let config = format!("[xdp]\ninterface = \"{IFACE}\"\n\n[zone]\nmin_tls_version = \"1.2\"\n");
    lab.start_gateway(Path::new(GATEWAY), &config).unwrap();
    lab
}

/// Segments the server namespace's TCP stack has received (`/proc/net/snmp`).
fn tcp_segments_in(lab: &Lab) -> f64 {
    let out = gateway_tests::lab::run(lab.in_server("cat").arg("/proc/net/snmp")).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
    let i = names
        .split_whitespace()
        .position(|n| n == "InSegs")
        .unwrap();
    values.split_whitespace().nth(i).unwrap().parse().unwrap()
}

/// In the default (reset) mode too: a spoofed hello has no connection to reset,
/// so it is dropped and the server's TCP stack never sees it.
#[test]
fn a_stateless_flood_is_bounded_and_refused_in_xdp() {
    let lab = lab_with_filter(true);
    stateless::route_spoofed_sources(&lab).unwrap();
    let target = stateless::Target::lab(&lab, 443).unwrap();
    let frames = stateless::hello_frames(target);
    let before = drops(&lab);
    let segments = tcp_segments_in(&lab);
    let bounds = Bounds {
        count: 5_000,
        rate: 10_000,
        max_time: Duration::from_secs(10),
    };
    let result = lab
        .in_client_thread(move || stateless::blast(IFACE, &frames, bounds))
        .unwrap()
        .unwrap();
    assert_eq!(result.sent, 5_000, "{result:?}");
    assert!(
        result.elapsed >= Duration::from_millis(450),
        "paced at 10,000/s: {result:?}"
    );
    assert!(result.elapsed < Duration::from_secs(10), "{result:?}");
    std::thread::sleep(Duration::from_millis(300));
    let refused = drops(&lab) - before;
    assert!(
        refused >= 4_950.0,
        "XDP refused {refused} of 5,000 crafted hellos"
    );
    assert!(
        refused <= 5_000.0,
        "XDP counted {refused} refusals for 5,000 frames"
    );
    let reached = tcp_segments_in(&lab) - segments;
    assert!(
        reached < 100.0,
        "{reached} of 5,000 spoofed hellos reached the server's TCP stack"
    );
}

#[test]
fn a_connection_flood_never_reaches_the_tls_server() {
    let lab = lab_with_filter(true);
    let before = drops(&lab);
    let server: SocketAddr = format!("{SERVER_V4}:443").parse().unwrap();
    let bounds = Bounds {
        count: 200,
        rate: 400,
        max_time: Duration::from_secs(20),
    };
    let result = lab
        .in_client_thread(move || flood::connections(server, bounds, 32))
        .unwrap();
    assert_eq!(result.sent + result.errors, 200, "{result:?}");
    assert!(result.elapsed < Duration::from_secs(20), "{result:?}");
    std::thread::sleep(Duration::from_millis(300));
    let refused = drops(&lab) - before;
    assert!(
        refused >= 200.0,
        "XDP refused {refused} hellos of 200 connections"
    );
    assert_eq!(
        lab.tls_events("client_hello").len(),
        0,
        "the server saw a flooded hello"
    );
}

/// A gateway that terminates TLS itself on 443, with the XDP filter in front.
fn lab_with_terminator() -> Lab {
    let mut lab = Lab::create().unwrap();
    let (cert, key) = lab.self_signed(&["lab.test"]).unwrap();
    let config = format!(
        "[xdp]\ninterface = \"{IFACE}\"\nports = [443]\n\n[zone]\nmin_tls_version = \"1.2\"\n\n\
         [terminator]\nlisten = [\"{SERVER_V4}:443\"]\n\n\
         [[hostname]]\nname = \"lab.test\"\ncertificate = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    lab.start_gateway(Path::new(GATEWAY), &config).unwrap();
    lab
}

#[test]
fn the_terminator_starts_tls_only_on_a_whole_hello() {
    let lab = lab_with_terminator();
    let server: SocketAddr = format!("{SERVER_V4}:443").parse().unwrap();
    for shape in [flood::HelloShape::TwoSegments, flood::HelloShape::Records] {
        let before = lab.metrics().unwrap();
        let bounds = Bounds {
            count: 100,
            rate: 200,
            max_time: Duration::from_secs(20),
        };
        let result = lab
            .in_client_thread(move || flood::connections_evented(server, shape, bounds, 64))
            .unwrap();
        assert_eq!(result.sent + result.errors, 100, "{shape:?}: {result:?}");
        std::thread::sleep(Duration::from_millis(300));
        let after = lab.metrics().unwrap();
        let moved = |name: &str, labels: &[(&str, &str)]| {
            metric(&after, name, labels) - metric(&before, name, labels)
        };
        let refused = moved(
            "gateway_xdp_packets_total",
            &[("reason", "below_min_tls1_0")],
        ) + moved(
            "gateway_xdp_packets_total",
            &[("reason", "below_min_tls1_1")],
        );
        assert!(
            refused >= 100.0,
            "{shape:?}: XDP refused {refused} of 100 hellos"
        );
        if shape == flood::HelloShape::TwoSegments {
            let split = moved("gateway_xdp_split_hellos_total", &[("outcome", "refused")]);
            assert!(
                split >= 100.0,
                "{shape:?}: {split} split hellos refused of 100"
            );
        }
        // Without the hello gate each connection's first segment started a
        // BoringSSL handshake that the reset then failed.
        let handshakes = moved("gateway_tls_handshakes_total", &[]);
        assert_eq!(
            handshakes, 0.0,
            "{shape:?}: the terminator started handshakes"
        );
    }
    // A legitimate hello split over segments (a 300-byte MTU on the client's
    // veth) passes the gate at once and is served.
    gateway_tests::split::set_client_segmentation_offload(&lab, false).unwrap();
    gateway_tests::lab::run(
        lab.in_client("ip")
            .args(["link", "set", IFACE, "mtu", "300"]),
    )
    .unwrap();
    let before = lab.metrics().unwrap();
    let started = std::time::Instant::now();
    let out = lab
        .in_client("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "8",
        ])
        .arg("--resolve")
        .arg(format!("lab.test:443:{SERVER_V4}"))
        .arg("https://lab.test/")
        .output()
        .unwrap();
    let took = started.elapsed();
    let code = String::from_utf8_lossy(&out.stdout).into_owned();
    let allowed = metric(
        &lab.metrics().unwrap(),
        "gateway_xdp_split_hellos_total",
        &[("outcome", "allowed")],
    ) - metric(
        &before,
        "gateway_xdp_split_hellos_total",
        &[("outcome", "allowed")],
    );
    assert!(
        allowed >= 1.0,
        "curl's hello was not split ({allowed} split hellos allowed)"
    );
    assert!(
        code.starts_with('5') || code.starts_with('2') || code.starts_with('4'),
        "curl said {code:?}"
    );
    assert!(
        took < Duration::from_secs(2),
        "a split hello waited {took:?} at the gate"
    );
}

/// The unpaced stateless flood from live XDP frames where the kernel runs
/// them: bounded by its count, far faster than a socket's, and every frame a
/// hello the filter refuses. Where the kernel refuses live frames it says so
/// loudly and checks the AF_PACKET flood that replaces them instead.
#[test]
fn live_xdp_frames_flood_fast_and_are_refused_in_xdp() {
    let generator = an_unpaced_flood_is_refused_in_xdp(Generator::preferred());
    if generator == Generator::AfPacket {
        eprintln!(
            "!!! LIVE XDP FRAMES NOT USED ({}): this test checked the AF_PACKET fallback, \
             not the live-frames generator",
            flood::fastest::live_frames_refusal()
                .map(str::to_string)
                .unwrap_or_else(|| format!("{}=1", flood::fastest::NO_LIVE_FRAMES_ENV))
        );
    }
}

/// The fallback, forced: the unpaced flood sent with AF_PACKET, as where the
/// kernel refuses live frames, is bounded, fast enough and refused in XDP.
#[test]
fn without_live_frames_the_unpaced_flood_falls_back_to_af_packet() {
    let generator = an_unpaced_flood_is_refused_in_xdp(Generator::AfPacket);
    assert_eq!(generator, Generator::AfPacket);
}

/// Live frames go above this many per second (one core, unpaced).
const LIVE_FRAMES_MIN_RATE: f64 = 200_000.0;
/// AF_PACKET goes above this many frames per second unpaced: measured 119,000
/// to 253,000/s in a debug build on two shared cores (the veth pushes back
/// rather than drop, so every frame sent reached XDP); a quarter of that
/// slowest figure still tells a working batched sender from a broken one.
const AF_PACKET_MIN_RATE: f64 = 30_000.0;

/// Floods the filter unpaced with `first` (AF_PACKET where the kernel refuses
/// live frames) and checks the flood; returns the generator that ran.
fn an_unpaced_flood_is_refused_in_xdp(first: Generator) -> Generator {
    let lab = lab_with_filter(true);
    let target = stateless::Target::lab(&lab, 443).unwrap();
    let frames = stateless::hello_frames(target);
    let before = drops(&lab);
    let bounds = Bounds {
        count: 200_000,
        rate: 0,
        max_time: Duration::from_secs(10),
    };
    let (generator, result) = lab
        .in_client_thread(move || flood::fastest::blast_with(first, IFACE, target, &frames, bounds))
        .unwrap()
        .unwrap();
    assert_eq!(
        result.sent + result.errors,
        200_000,
        "{generator:?}: {result:?}"
    );
    let rate = result.sent as f64 / result.elapsed.as_secs_f64();
    eprintln!("{generator:?}: {rate:.0} frames/s sent: {result:?}");
    let min_rate = match generator {
        Generator::LiveFrames => LIVE_FRAMES_MIN_RATE,
        Generator::AfPacket => AF_PACKET_MIN_RATE,
    };
    assert!(
        rate > min_rate,
        "{generator:?}: only {rate:.0} frames/s: {result:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let refused = drops(&lab) - before;
    let rx = lab.server_link(IFACE).unwrap();
    eprintln!("{generator:?}: XDP refused {refused} of 200,000");
    // The veth's ring (256 frames) drops what the filter cannot take in time;
    // what it takes is refused, one for one.
    assert!(
        refused >= 10_000.0,
        "{generator:?}: XDP refused {refused} of 200,000 frames; {rx}"
    );
    assert!(
        refused <= 200_000.0,
        "{generator:?}: XDP counted {refused} for 200,000 frames"
    );
    generator
}

/// A CPU budget holds a busy thread to its share, and says it did. Where
/// cgroup v2 cannot take a thread apart from its process, it says so loudly
/// and checks a busy process in the budget instead.
#[test]
fn a_cpu_budget_holds_a_busy_thread_to_its_share() {
    use gateway_tests::scenario::budget::{CpuBudget, Hierarchy};
    let name = format!("gwtest-{}", std::process::id());
    let budget = match CpuBudget::create(&name, 0.2) {
        Ok(b) => std::sync::Arc::new(b),
        Err(e) if Hierarchy::find().is_err() => {
            eprintln!(
                "!!! NO CGROUP CPU CONTROLLER ON THIS MACHINE, CPU budgets not checked: {e:#}"
            );
            return;
        }
        Err(e) => panic!("a CPU budget in {:?}: {e:#}", Hierarchy::find()),
    };
    let before = budget.throttling();
    let inside = budget.clone();
    let (placed, spent) = std::thread::spawn(move || {
        if !inside.enter().unwrap() {
            return (false, 0.0);
        }
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(1) {
            std::hint::black_box(0u64);
        }
        // SAFETY: rusage is plain integers; all zeroes is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage writes into the struct owned here.
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
        let spent = usage.ru_utime.tv_sec as f64
            + usage.ru_utime.tv_usec as f64 / 1e6
            + usage.ru_stime.tv_sec as f64
            + usage.ru_stime.tv_usec as f64 / 1e6;
        (true, spent)
    })
    .join()
    .unwrap();
    let spent = if placed {
        spent
    } else {
        eprintln!(
            "!!! {}: a thread cannot join the budget; checking a busy process in it instead",
            budget.hierarchy().describe()
        );
        busy_process_seconds(&budget)
    };
    assert!(
        spent < 0.35,
        "a 20% budget let a thread spend {spent:.2} s of 1 s"
    );
    assert!(spent > 0.05, "the thread got only {spent:.2} s");
    let throttled = budget.throttling().since(&before);
    assert!(
        throttled > 0.3,
        "throttled in {:.0}% of periods",
        100.0 * throttled
    );
}

/// CPU seconds a busy shell loop spends in `budget` over one second.
fn busy_process_seconds(budget: &gateway_tests::scenario::budget::CpuBudget) -> f64 {
    let mut child = std::process::Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .expect("sh starts");
    let placed = budget.add_process(child.id());
    std::thread::sleep(Duration::from_secs(1));
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id()));
    let _ = child.kill();
    let _ = child.wait();
    placed.expect("a process joins the budget");
    let stat = stat.expect("the busy process's /proc stat");
    // utime and stime: fields 14 and 15, the 12th and 13th after the name.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}
