//! SYN cookies answered in XDP, end to end in the network-namespace lab:
//! `gateway run` with `[xdp] syn_cookies = "on"` in front of its own
//! terminator (and the echo origin), real clients in the client namespace.
//!
//! What each test shows, from the server namespace's own kernel: a refused
//! hello never makes a socket (`nstat` TcpPassiveOpens does not move, `ss`
//! never lists the connection, even between the handshake and the hello), the
//! client is reset within milliseconds of its hello, and a served one gets a
//! socket built from the cookie with the options its SYN asked for (`ss -tnie`
//! on the accepted socket). Figures are printed; run with `--nocapture`.
//!
//! The XDP mode is native unless `GATEWAY_SYNCOOKIE_LAB_MODE` names another
//! (`generic`); see `gateway_tests::cookie_lab`.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use gateway::hello::{ClientHello, records};
use gateway_common::syncookie::OUR_WSCALE;
use gateway_tests::{
    cookie_lab::{
        HOST, PLAIN_PORT, Snapshot, TERMINATOR_PORT, lab, lab_with, python_client, s_client,
        socket_options, xdp_mode,
    },
    lab::{IFACE, Lab, SERVER_V4, SERVER_V6, run},
    split::{
        End, chunks, require_program, send_chunks, send_chunks_from,
        server_sockets as split_server_sockets,
    },
};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");
/// The longest a refused client may wait for its reset after its hello.
const RESET_WITHIN: Duration = Duration::from_millis(10);

/// `ss -tan` in the server namespace.
fn server_sockets(lab: &Lab) -> String {
    let out = run(lab.in_server("ss").args(["-tan"])).expect("run ss");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lines of an `ss` listing about a client port.
fn lines_for_port(listing: &str, port: u16) -> Vec<String> {
    let needle = format!(":{port} ");
    listing
        .lines()
        .filter(|l| format!("{l} ").contains(&needle))
        .map(str::to_string)
        .collect()
}

/// A TLS 1.0 ClientHello for the lab host, in one record (one segment).
fn tls10_hello() -> Vec<u8> {
    records(
        &ClientHello::legacy(0x0301, Some(HOST)).message(),
        0x0301,
        usize::MAX,
    )
}

/// What a hand-made refused client saw.
#[derive(Debug)]
struct TimedRefusal {
    client_port: u16,
    /// `ss -tan` in the server namespace after the handshake, before the hello.
    before_hello: String,
    /// How long from sending the hello until the read failed.
    reset_after: Duration,
    /// How the read ended.
    read: String,
}

/// From the client namespace: connect, wait 50 ms (the bare ACK has long
/// arrived), list the server's sockets, send a TLS 1.0 hello and time until
/// the connection is reset.
fn timed_refusal(lab: &Lab, server: SocketAddr) -> TimedRefusal {
    let mut ss = lab.in_server("ss");
    ss.arg("-tan");
    lab.in_client_thread(move || {
        let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(3))
            .expect("the handshake with the cookie SYN-ACK completes");
        let client_port = stream.local_addr().expect("local address").port();
        std::thread::sleep(Duration::from_millis(50));
        let before_hello = String::from_utf8_lossy(&ss.output().expect("run ss").stdout).into();
        stream
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let hello = tls10_hello();
        let start = Instant::now();
        stream.write_all(&hello).expect("send the hello");
        let mut buf = [0u8; 64];
        let read = match stream.read(&mut buf) {
            Ok(n) => format!("read {n} bytes"),
            Err(e) => format!("{:?}: {e}", e.kind()),
        };
        TimedRefusal {
            client_port,
            before_hello,
            reset_after: start.elapsed(),
            read,
        }
    })
    .expect("client thread")
}

/// The server veth's native XDP_TX counters (`ethtool -S`: every queue's
/// `xdp_tx` and `xdp_tx_errors`); generic mode does not count there.
fn server_xdp_tx(lab: &Lab) -> (u64, u64) {
    let out = run(lab.in_server("ethtool").args(["-S", IFACE])).expect("run ethtool -S");
    let mut sums = (0, 0);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((name, value)) = line.trim().split_once(": ") else {
            continue;
        };
        let value: u64 = value.trim().parse().unwrap_or(0);
        if name.ends_with("_xdp_tx") {
            sums.0 += value;
        } else if name.ends_with("_xdp_tx_errors") {
            sums.1 += value;
        }
    }
    sums
}

/// Checks one hand-made refusal: no socket between handshake and hello, a
/// reset within [`RESET_WITHIN`], nothing built; returns the reset time.
fn assert_refused_without_socket(lab: &Lab, server: SocketAddr) -> Duration {
    let tx_before = server_xdp_tx(lab);
    let before = Snapshot::take(lab);
    let r = timed_refusal(lab, server);
    let after = Snapshot::take(lab);
    let moves = before.moved(&after);
    let tx_after = server_xdp_tx(lab);
    if xdp_mode() == "native" {
        // The SYN-ACK and the RST left through the veth's native XDP_TX.
        assert_eq!(tx_after.0 - tx_before.0, 2, "native xdp_tx on {IFACE}");
        assert_eq!(tx_after.1, tx_before.1, "xdp_tx_errors on {IFACE}");
    }
    println!(
        "hand-made TLS 1.0 hello to {server} from port {}: {} after {:?}; {moves:?}",
        r.client_port, r.read, r.reset_after
    );
    assert!(
        lines_for_port(&r.before_hello, r.client_port).is_empty(),
        "the server has a socket for the completed handshake before any hello:\n{}",
        r.before_hello
    );
    assert!(
        r.read.starts_with("ConnectionReset"),
        "the refused client was not reset: {}",
        r.read
    );
    assert!(
        r.reset_after <= RESET_WITHIN,
        "the reset came {:?} after the hello (limit {RESET_WITHIN:?})",
        r.reset_after
    );
    assert_eq!(moves.passive_opens, 0, "a socket was made: {moves:?}");
    assert_eq!(moves.sent, 1.0, "one cookie SYN-ACK: {moves:?}");
    assert_eq!(moves.ack_dropped, 1.0, "the bare ACK dropped: {moves:?}");
    assert_eq!(moves.refused, 1.0, "refused without a socket: {moves:?}");
    assert_eq!(moves.socket_made, 0.0, "{moves:?}");
    assert_eq!(moves.bad_cookie, 0.0, "{moves:?}");
    let now = server_sockets(lab);
    assert!(
        lines_for_port(&now, r.client_port).is_empty(),
        "the server lists the refused connection:\n{now}"
    );
    r.reset_after
}

/// `openssl s_client` with `flag` to `server`:`port` is refused without a socket.
fn assert_s_client_refused(lab: &Lab, server: &str, port: u16, flag: &str) {
    let hellos = lab.tls_events("client_hello").len();
    let before = Snapshot::take(lab);
    let run = s_client(lab, server, port, &[flag]);
    let listing = server_sockets(lab);
    let after = Snapshot::take(lab);
    let moves = before.moved(&after);
    println!(
        "s_client {flag} to {server}:{port}: ok={} after {:?} (process included); {moves:?}",
        run.ok, run.elapsed
    );
    assert!(!run.ok, "{flag} must fail:\n{}", run.output);
    assert!(
        run.elapsed < Duration::from_secs(1),
        "{flag} took {:?} to fail:\n{}",
        run.elapsed,
        run.output
    );
    assert_eq!(
        moves.passive_opens, 0,
        "{flag}: a socket was made: {moves:?}"
    );
    assert_eq!(moves.refused, 1.0, "{flag}: {moves:?}");
    assert_eq!(moves.socket_made, 0.0, "{flag}: {moves:?}");
    assert_eq!(
        lab.tls_events("client_hello").len(),
        hellos,
        "the TLS server saw it"
    );
    let client = if server.contains(':') {
        gateway_tests::lab::CLIENT_V6
    } else {
        gateway_tests::lab::CLIENT_V4
    };
    assert!(
        !listing.contains(client),
        "{flag}: the server lists a connection from {client}:\n{listing}"
    );
}

/// `openssl s_client -tls1_3` to `server`:`port` is served, with one socket made from a cookie.
fn assert_s_client_served(lab: &Lab, server: &str, port: u16) {
    let before = Snapshot::take(lab);
    let run = s_client(lab, server, port, &["-tls1_3"]);
    let after = Snapshot::take(lab);
    let moves = before.moved(&after);
    println!(
        "s_client -tls1_3 to {server}:{port}: ok={} after {:?}; {moves:?}",
        run.ok, run.elapsed
    );
    assert!(
        run.ok && run.output.contains("TLSv1.3"),
        "-tls1_3 to {server} must complete:\n{}\n{}",
        run.output,
        lab.log("gateway")
    );
    assert_eq!(moves.passive_opens, 1, "one socket: {moves:?}");
    assert_eq!(moves.sent, 1.0, "{moves:?}");
    assert_eq!(moves.socket_made, 1.0, "{moves:?}");
    assert_eq!(moves.assign_failed, 0.0, "{moves:?}");
    assert_eq!(moves.refused, 0.0, "{moves:?}");
}

#[test]
fn old_clients_are_refused_without_a_socket_and_reset_within_ten_ms() {
    let lab = lab(Path::new(GATEWAY));
    for port in [TERMINATOR_PORT, PLAIN_PORT] {
        for flag in ["-tls1", "-tls1_1"] {
            assert_s_client_refused(&lab, SERVER_V4, port, flag);
        }
        let server = SocketAddr::new(SERVER_V4.parse().unwrap(), port);
        let times: Vec<Duration> = (0..5)
            .map(|_| assert_refused_without_socket(&lab, server))
            .collect();
        println!("IPv4 port {port}: reset after the hello, 5 runs: {times:?}");
    }
}

#[test]
fn tls13_and_curl_are_served_with_a_socket_built_from_the_cookie() {
    let lab = lab(Path::new(GATEWAY));
    require_program("curl", "curl");
    for port in [TERMINATOR_PORT, PLAIN_PORT, TERMINATOR_PORT, PLAIN_PORT] {
        assert_s_client_served(&lab, SERVER_V4, port);
    }
    let before = Snapshot::take(&lab);
    let out = lab
        .in_client("curl")
        .args(["-sk", "--max-time", "10", "--resolve"])
        .arg(format!("{HOST}:443:{SERVER_V4}"))
        .arg(format!("https://{HOST}/through-cookies"))
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    let after = Snapshot::take(&lab);
    let moves = before.moved(&after);
    let body = String::from_utf8_lossy(&out.stdout);
    println!("curl: {} {body}; {moves:?}", out.status);
    assert!(
        out.status.success() && body.contains("/through-cookies"),
        "curl was not served: {}\n{body}{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        lab.log("gateway")
    );
    assert_eq!(moves.socket_made, 1.0, "{moves:?}");
    assert_eq!(moves.sent, 1.0, "{moves:?}");
    // The client's connection, and the terminator's to the origin (not through XDP).
    assert!(
        (1..=2).contains(&moves.passive_opens),
        "PassiveOpens moved {}: {moves:?}",
        moves.passive_opens
    );
}

#[test]
fn a_refused_two_segment_hello_gets_a_socket_then_a_reset() {
    let lab = lab(Path::new(GATEWAY));
    let server: SocketAddr = format!("{SERVER_V4}:443").parse().unwrap();
    let before = Snapshot::take(&lab);
    // 20 bytes first: no SNI yet, so the first segment cannot be decided.
    let parts = chunks(&tls10_hello(), &[20]);
    let pause = Duration::from_millis(30);
    let run = send_chunks(&lab, server, parts, pause, Duration::from_secs(5)).expect("send");
    let after = Snapshot::take(&lab);
    let moves = before.moved(&after);
    let left = split_server_sockets(&lab, run.local_port).expect("ss");
    println!(
        "two-segment TLS 1.0 hello: {:?} {:?} after the last write; {moves:?}",
        run.end, run.after_last_write
    );
    assert_eq!(run.end, End::Reset, "{run:?}");
    assert_eq!(
        moves.socket_made, 1.0,
        "the first segment made the socket: {moves:?}"
    );
    assert_eq!(moves.passive_opens, 1, "{moves:?}");
    assert!(
        run.after_last_write < Duration::from_secs(2),
        "the reset took {:?}",
        run.after_last_write
    );
    assert!(left.is_empty(), "the server still has the socket:\n{left}");
}

/// A client port comes round (as it does every few seconds for a busy client
/// behind one address): the new connection on the same 4-tuple is answered
/// with a cookie, and its refused hello must be decided afresh, not taken for
/// a retransmission of the earlier connection's refused hello (whose flow
/// state the filter still holds) and passed to a socket and to userspace.
#[test]
fn a_client_port_that_comes_round_is_refused_afresh_without_a_socket() {
    let lab = lab(Path::new(GATEWAY));
    let server: SocketAddr = format!("{SERVER_V4}:443").parse().unwrap();
    let pause = Duration::from_millis(30);
    let wait = Duration::from_secs(5);
    // Split, so the filter keeps the flow's state: refused at its second segment.
    let parts = chunks(&tls10_hello(), &[20]);
    let first = send_chunks(&lab, server, parts, pause, wait).expect("send");
    assert_eq!(first.end, End::Reset, "the split hello: {first:?}");
    let port = first.local_port;
    let before = Snapshot::take(&lab);
    let again = send_chunks_from(&lab, Some(port), server, vec![tls10_hello()], pause, wait)
        .expect("send again from the same port");
    let moves = before.moved(&Snapshot::take(&lab));
    println!("the same port {port} again: {again:?}; {moves:?}");
    assert_eq!(again.local_port, port);
    assert_eq!(again.end, End::Reset, "{again:?}");
    assert_eq!(moves.sent, 1.0, "answered with a cookie: {moves:?}");
    assert_eq!(moves.refused, 1.0, "refused without a socket: {moves:?}");
    assert_eq!(moves.socket_made, 0.0, "{moves:?}");
    assert_eq!(moves.passive_opens, 0, "{moves:?}");
}

/// `gateway_syn_cookies_engaged{port="443"}` now.
fn engaged(lab: &Lab) -> f64 {
    let scrape = lab.metrics().expect("scrape the gateway");
    gateway_tests::lab::metric(&scrape, "gateway_syn_cookies_engaged", &[("port", "443")])
}

/// Opens and closes `n` connections to `server` from the client namespace as
/// fast as it can; returns how long that took.
fn connection_burst(lab: &Lab, server: SocketAddr, n: usize) -> Duration {
    lab.in_client_thread(move || {
        let start = Instant::now();
        for _ in 0..n {
            let _ = TcpStream::connect_timeout(&server, Duration::from_secs(1));
        }
        start.elapsed()
    })
    .expect("client thread")
}

#[test]
fn auto_mode_engages_on_a_syn_burst_and_calms_down() {
    let lab = lab_with(Path::new(GATEWAY), "auto");
    // Not engaged: a refused hello costs a socket on the plain server, and a
    // request socket on the terminator's (TCP_DEFER_ACCEPT), as without
    // cookies; the checks the other tests make would see both.
    let before = Snapshot::take(&lab);
    let run = s_client(&lab, SERVER_V4, PLAIN_PORT, &["-tls1"]);
    let moves = before.moved(&Snapshot::take(&lab));
    println!("auto, idle: -tls1 to {PLAIN_PORT} ok={} {moves:?}", run.ok);
    assert!(!run.ok, "{}", run.output);
    assert_eq!((moves.sent, moves.passive_opens), (0.0, 1), "{moves:?}");
    let terminator = SocketAddr::new(SERVER_V4.parse().unwrap(), TERMINATOR_PORT);
    let r = timed_refusal(&lab, terminator);
    let request = lines_for_port(&r.before_hello, r.client_port);
    println!(
        "auto, idle: before the hello the server lists {request:?}; {}",
        r.read
    );
    assert!(
        request.iter().any(|l| l.contains("SYN-RECV")),
        "without cookies, the handshake leaves a request socket:\n{}",
        r.before_hello
    );

    let took = connection_burst(&lab, terminator, 1500);
    println!(
        "1500 connections in {took:?} ({:.0}/s)",
        1500.0 / took.as_secs_f64()
    );
    // The control ticks every 100 ms: give it a few.
    let deadline = Instant::now() + Duration::from_secs(2);
    while engaged(&lab) != 1.0 {
        assert!(
            Instant::now() < deadline,
            "auto did not engage after the burst:\n{}",
            lab.log("gateway")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Per port: the burst went to the terminator's port only.
    let plain = gateway_tests::lab::metric(
        &lab.metrics().expect("scrape"),
        "gateway_syn_cookies_engaged",
        &[("port", &PLAIN_PORT.to_string())],
    );
    assert_eq!(
        plain, 0.0,
        "port {PLAIN_PORT} engaged by another port's SYNs"
    );
    let reset_after = assert_refused_without_socket(&lab, terminator);
    println!("auto, engaged: refused without a socket, reset after {reset_after:?}");

    let start = Instant::now();
    while engaged(&lab) == 1.0 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "auto never calmed down"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    println!(
        "auto disengaged {:?} after the burst",
        start.elapsed() + took
    );
    assert!(
        lab.log("gateway")
            .contains("SYN cookies disengaged on port 443")
    );
}

#[test]
fn ipv6_is_served_and_refused_the_same_way() {
    let lab = lab(Path::new(GATEWAY));
    for port in [TERMINATOR_PORT, PLAIN_PORT] {
        assert_s_client_refused(&lab, SERVER_V6, port, "-tls1");
        assert_s_client_served(&lab, SERVER_V6, port);
        let server = SocketAddr::new(SERVER_V6.parse().unwrap(), port);
        let times: Vec<Duration> = (0..3)
            .map(|_| assert_refused_without_socket(&lab, server))
            .collect();
        println!("IPv6 port {port}: reset after the hello, 3 runs: {times:?}");
    }
}

/// Client sysctls for one run of the Python client, and what the server's
/// socket must show for them.
struct Variant {
    /// `net.ipv4.tcp_timestamps`, `tcp_sack`, `tcp_window_scaling`, `tcp_ecn`.
    sysctls: [u8; 4],
}

impl Variant {
    fn name(&self) -> String {
        let [ts, sack, ws, ecn] = self.sysctls;
        format!("timestamps={ts} sack={sack} window_scaling={ws} ecn={ecn}")
    }
}

/// One variant: served through a cookie, and the server's socket has the
/// options the client's SYN asked for, as the client's own socket sees them.
fn check_variant(lab: &mut Lab, py: &Path, v: &Variant) {
    for (name, value) in [
        "tcp_timestamps",
        "tcp_sack",
        "tcp_window_scaling",
        "tcp_ecn",
    ]
    .iter()
    .zip(v.sysctls)
    {
        run(lab
            .in_client("sysctl")
            .args(["-qw", &format!("net.ipv4.{name}={value}")]))
        .expect("set a client sysctl");
    }
    let [ts, sack, ws, ecn] = v.sysctls.map(|x| x != 0);
    let ecn = ecn && v.sysctls[3] == 1;
    let before = Snapshot::take(lab);
    let name = format!("py-{}", v.sysctls.map(|x| x.to_string()).join(""));
    let (port, said) = python_client(lab, py, &name);
    let server = socket_options(&mut lab.in_server("ss"), port, false);
    let client = socket_options(&mut lab.in_client("ss"), port, true);
    lab.stop(&name).ok();
    let moves = before.moved(&Snapshot::take(lab));
    println!("{}: {}", v.name(), said.trim());
    println!(
        "  server: {}\n  client: {}\n  {moves:?}",
        server.line, client.line
    );
    assert!(said.contains("TLSv1.3"), "{said}");
    assert_eq!(moves.socket_made, 1.0, "{moves:?}");
    assert_eq!(moves.passive_opens, 1, "{moves:?}");
    assert_eq!((server.ts, client.ts), (ts, ts), "ts: {}", server.line);
    assert_eq!(
        (server.sack, client.sack),
        (sack, sack),
        "sack: {}",
        server.line
    );
    assert_eq!((server.ecn, client.ecn), (ecn, ecn), "ecn: {}", server.line);
    if ws {
        let (Some((s_snd, s_rcv)), Some((c_snd, c_rcv))) = (server.wscale, client.wscale) else {
            panic!("no window scale: {}\n{}", server.line, client.line);
        };
        assert_eq!(s_rcv, OUR_WSCALE, "{}", server.line);
        assert_eq!(s_snd, c_rcv, "the client's shift, as the cookie carried it");
        assert_eq!(c_snd, s_rcv, "the shift the SYN-ACK announced");
    } else {
        assert_eq!(
            (server.wscale, client.wscale),
            (None, None),
            "{}",
            server.line
        );
    }
    let want_mss = if ts { 1448 } else { 1460 };
    assert_eq!(server.mss, Some(want_mss), "{}", server.line);
}

#[test]
fn python_ssl_with_and_without_timestamps_gets_the_options_it_asked_for() {
    let mut lab = lab(Path::new(GATEWAY));
    let py = require_program("python3", "python3");
    for sysctls in [
        [1, 1, 1, 2],
        [0, 1, 1, 2],
        [1, 0, 1, 1],
        [0, 1, 0, 1],
        [1, 1, 0, 2],
    ] {
        check_variant(&mut lab, &py, &Variant { sysctls });
    }
}
