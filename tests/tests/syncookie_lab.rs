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
//! (`generic`).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use gateway::hello::{ClientHello, records};
use gateway_tests::{
    lab::{IFACE, Lab, SERVER_V4, SERVER_V6, metric, run},
    split::require_program,
};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");
const HOST: &str = "lab.test";
/// The longest a refused client may wait for its reset after its hello.
const RESET_WITHIN: Duration = Duration::from_millis(10);

fn xdp_mode() -> String {
    std::env::var("GATEWAY_SYNCOOKIE_LAB_MODE").unwrap_or_else(|_| "native".into())
}

fn config() -> String {
    format!(
        "[xdp]\ninterface = \"{IFACE}\"\nmode = \"{mode}\"\nsyn_cookies = \"on\"\n\n\
         [zone]\nmin_tls_version = \"1.2\"\n\n\
         [metrics]\nlisten = \"127.0.0.1:9100\"\n\n\
         [terminator]\nlisten = [\"{SERVER_V4}:443\", \"[{SERVER_V6}]:443\"]\n\
         certificate = \"server.crt\"\nkey = \"server.key\"\n\n\
         [[hostname]]\nname = \"{HOST}\"\norigin = \"http://127.0.0.1:8080\"\n",
        mode = xdp_mode()
    )
}

/// The lab with the origin and the gateway (cookies on) running; fails
/// loudly if the gateway could not turn SYN cookies on.
fn lab() -> Lab {
    gateway_tests::require_root("the network-namespace lab");
    require_program("openssl", "openssl");
    require_program("nstat", "iproute2");
    let mut lab = Lab::create().expect("create the lab");
    lab.self_signed(&[HOST]).expect("make a certificate");
    let origin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lab_origin.py");
    let mut cmd = lab.in_server("python3");
    cmd.arg(origin).args(["--port", "8080"]);
    lab.spawn("origin", cmd).expect("start the origin");
    lab.wait_for("origin", Duration::from_secs(10), |lab| {
        lab.log("origin").contains("listening")
    })
    .expect("origin listening");
    lab.start_gateway(Path::new(GATEWAY), &config())
        .expect("start the gateway");
    let log = lab.log("gateway");
    assert!(
        !log.contains("SYN cookies unavailable"),
        "!!! SYN COOKIES UNAVAILABLE on this kernel or interface (needs the kfunc \
         bpf_sk_assign_tcp_reqsk, Linux 6.9+, and TC ingress); nothing here can be tested:\n{log}"
    );
    let engaged = metric(
        &lab.metrics().expect("scrape"),
        "gateway_syn_cookies_engaged",
        &[("port", "443")],
    );
    assert_eq!(engaged, 1.0, "cookies not engaged on port 443:\n{log}");
    println!("gateway up, XDP mode {}", xdp_mode());
    lab
}

/// The server namespace's kernel and the gateway's cookie counters at one moment.
#[derive(Debug, Clone)]
struct Snapshot {
    passive_opens: u64,
    scrape: String,
}

impl Snapshot {
    /// Reads TcpPassiveOpens first, then scrapes (the scrape is itself a
    /// passive open, which then falls before the reading).
    fn take(lab: &Lab) -> Snapshot {
        let passive_opens = passive_opens(lab);
        let scrape = lab.metrics().expect("scrape the gateway");
        Snapshot {
            passive_opens,
            scrape,
        }
    }

    fn cookies(&self, outcome: &str) -> f64 {
        metric(
            &self.scrape,
            "gateway_syn_cookies_total",
            &[("outcome", outcome)],
        )
    }

    /// Counter moves from `self` to `after`: PassiveOpens (without the
    /// scrape between them) and each cookie outcome.
    fn moved(&self, after: &Snapshot) -> Moves {
        let outcome = |o: &str| after.cookies(o) - self.cookies(o);
        Moves {
            // The scrape of `self` came after its nstat reading: one passive open.
            passive_opens: after.passive_opens as i64 - self.passive_opens as i64 - 1,
            sent: outcome("sent"),
            not_answered: outcome("not_answered"),
            ack_dropped: outcome("ack_dropped"),
            bad_cookie: outcome("bad_cookie"),
            refused: outcome("refused_without_socket"),
            socket_made: outcome("socket_made"),
            assign_failed: outcome("assign_failed"),
        }
    }
}

#[derive(Debug, PartialEq)]
struct Moves {
    passive_opens: i64,
    sent: f64,
    not_answered: f64,
    ack_dropped: f64,
    bad_cookie: f64,
    refused: f64,
    socket_made: f64,
    assign_failed: f64,
}

/// TcpPassiveOpens of the server namespace (`nstat -az`, history untouched).
fn passive_opens(lab: &Lab) -> u64 {
    let out = run(lab.in_server("nstat").args(["-asz", "TcpPassiveOpens"])).expect("run nstat");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some("TcpPassiveOpens")).then(|| f.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no TcpPassiveOpens in nstat's output:\n{text}"))
}

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

/// Checks one hand-made refusal: no socket between handshake and hello, a
/// reset within [`RESET_WITHIN`], nothing built; returns the reset time.
fn assert_refused_without_socket(lab: &Lab, server: SocketAddr) -> Duration {
    let before = Snapshot::take(lab);
    let r = timed_refusal(lab, server);
    let after = Snapshot::take(lab);
    let moves = before.moved(&after);
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

/// `openssl s_client` with `flag` to `server` is refused without a socket.
fn assert_s_client_refused(lab: &Lab, server: &str, flag: &str) {
    let before = Snapshot::take(lab);
    let run = lab.s_client(server, HOST, &[flag]);
    let listing = server_sockets(lab);
    let after = Snapshot::take(lab);
    let moves = before.moved(&after);
    println!(
        "s_client {flag} to {server}: ok={} after {:?} (process included); {moves:?}",
        run.ok, run.elapsed
    );
    assert!(!run.ok, "{flag} must fail:\n{}", run.output);
    assert!(
        run.elapsed < Duration::from_secs(1),
        "{flag} took {:?} to fail:\n{}",
        run.elapsed,
        run.output
    );
    assert_eq!(moves.passive_opens, 0, "{flag}: a socket was made: {moves:?}");
    assert_eq!(moves.refused, 1.0, "{flag}: {moves:?}");
    assert_eq!(moves.socket_made, 0.0, "{flag}: {moves:?}");
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

/// `openssl s_client -tls1_3` to `server` is served, with one socket made from a cookie.
fn assert_s_client_served(lab: &Lab, server: &str) {
    let before = Snapshot::take(lab);
    let run = lab.s_client(server, HOST, &["-tls1_3"]);
    let after = Snapshot::take(lab);
    let moves = before.moved(&after);
    println!(
        "s_client -tls1_3 to {server}: ok={} after {:?}; {moves:?}",
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
    let lab = lab();
    for flag in ["-tls1", "-tls1_1"] {
        assert_s_client_refused(&lab, SERVER_V4, flag);
    }
    let server: SocketAddr = format!("{SERVER_V4}:443").parse().unwrap();
    let times: Vec<Duration> = (0..5)
        .map(|_| assert_refused_without_socket(&lab, server))
        .collect();
    println!("IPv4 reset after the hello, 5 runs: {times:?}");
}

#[test]
fn tls13_and_curl_are_served_with_a_socket_built_from_the_cookie() {
    let lab = lab();
    require_program("curl", "curl");
    for _ in 0..3 {
        assert_s_client_served(&lab, SERVER_V4);
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
fn ipv6_is_served_and_refused_the_same_way() {
    let lab = lab();
    assert_s_client_refused(&lab, SERVER_V6, "-tls1");
    assert_s_client_served(&lab, SERVER_V6);
    let server: SocketAddr = format!("[{SERVER_V6}]:443").parse().unwrap();
    let times: Vec<Duration> = (0..3)
        .map(|_| assert_refused_without_socket(&lab, server))
        .collect();
    println!("IPv6 reset after the hello, 3 runs: {times:?}");
}

/// A Python `ssl` client that completes a handshake, prints its port and
/// holds the connection for a few seconds.
const PY_CLIENT: &str = r#"
import socket, ssl, sys, time
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
raw = socket.create_connection((sys.argv[1], 443), timeout=5)
tls = ctx.wrap_socket(raw, server_hostname=sys.argv[2])
print("connected", tls.getsockname()[1], tls.version(), flush=True)
time.sleep(6)
"#;

/// The TCP options `ss -tnie` shows for one connection.
#[derive(Debug, PartialEq)]
struct SocketOptions {
    /// (snd_wscale, rcv_wscale).
    wscale: Option<(u8, u8)>,
    sack: bool,
    ts: bool,
    mss: Option<u32>,
    line: String,
}

fn socket_options(cmd: &mut Command, port: u16, local: bool) -> SocketOptions {
    let filter = if local {
        format!("sport = :{port}")
    } else {
        format!("dport = :{port}")
    };
    let out = run(cmd.args(["-tnieH", "state", "established"]).args(filter.split(' ')))
        .expect("run ss -tnie");
    let line = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let words: Vec<&str> = line.split(' ').collect();
    let wscale = words
        .iter()
        .find_map(|w| w.strip_prefix("wscale:"))
        .and_then(|v| {
            let (a, b) = v.split_once(',')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        });
    let mss = words
        .iter()
        .find_map(|w| w.strip_prefix("mss:"))
        .and_then(|v| v.parse().ok());
    SocketOptions {
        wscale,
        sack: words.contains(&"sack"),
        ts: words.contains(&"ts"),
        mss,
        line,
    }
}

#[test]
fn python_ssl_with_and_without_timestamps_gets_the_options_it_asked_for() {
    let mut lab = lab();
    let py = require_program("python3", "python3");
    for timestamps in [true, false] {
        let value = if timestamps { "1" } else { "0" };
        run(lab
            .in_client("sysctl")
            .args(["-qw", &format!("net.ipv4.tcp_timestamps={value}")]))
        .expect("set the client's tcp_timestamps");
        let before = Snapshot::take(&lab);
        let name = format!("py-ts-{value}");
        let mut cmd = lab.in_client(&py);
        cmd.args(["-c", PY_CLIENT, SERVER_V4, HOST]);
        lab.spawn(&name, cmd).expect("start the Python client");
        lab.wait_for(&name, Duration::from_secs(10), |lab| {
            lab.log(&name).contains("connected")
        })
        .expect("the Python client connects");
        let said = lab.log(&name);
        let port: u16 = said
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {said:?}"));
        let server = socket_options(&mut lab.in_server("ss"), port, false);
        let client = socket_options(&mut lab.in_client("ss"), port, true);
        lab.stop(&name).ok();
        let after = Snapshot::take(&lab);
        let moves = before.moved(&after);
        println!("timestamps {timestamps}: {said}  server: {}", server.line);
        println!("  client: {}\n  {moves:?}", client.line);
        assert!(said.contains("TLSv1.3"), "{said}");
        assert_eq!(moves.socket_made, 1.0, "{moves:?}");
        assert_eq!(server.ts, timestamps, "server socket's ts: {}", server.line);
        assert_eq!(client.ts, timestamps, "client socket's ts: {}", client.line);
        assert!(server.sack, "server socket lacks sack: {}", server.line);
        let (ws, wc) = (server.wscale, client.wscale);
        let (Some((s_snd, s_rcv)), Some((c_snd, c_rcv))) = (ws, wc) else {
            panic!("no window scale: server {ws:?}, client {wc:?}");
        };
        assert_eq!(s_rcv, gateway_common::syncookie::OUR_WSCALE, "{}", server.line);
        assert_eq!(s_snd, c_rcv, "the client's shift, as the cookie carried it");
        assert_eq!(c_snd, s_rcv, "the shift the SYN-ACK announced");
        let want_mss = if timestamps { 1448 } else { 1460 };
        assert_eq!(server.mss, Some(want_mss), "{}", server.line);
    }
}
