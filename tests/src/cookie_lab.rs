//! The SYN-cookie lab: `gateway run` with `[xdp] syn_cookies = "on"` in front
//! of its own terminator and the echo origin, and what the server
//! namespace's kernel and the gateway count (for the `syncookie_*lab` tests).

use std::{path::Path, process::Command, time::Duration};

use crate::{
    lab::{IFACE, Lab, SERVER_V4, SERVER_V6, metric, run},
    split::require_program,
};

/// The hostname the lab serves.
pub const HOST: &str = "lab.test";
/// The port of the gateway's terminator, which accepts with `TCP_DEFER_ACCEPT`
/// (without cookies, a refused hello there leaves only a request socket).
pub const TERMINATOR_PORT: u16 = 443;
/// The port of the lab's plain TLS server (`scripts/lab_tls_server.py`, every
/// version from 1.0 allowed, no `TCP_DEFER_ACCEPT`: without cookies, every
/// handshake there makes a socket, a TcpPassiveOpens).
pub const PLAIN_PORT: u16 = 8443;

/// The XDP mode the lab runs in: native unless `GATEWAY_SYNCOOKIE_LAB_MODE`
/// names another (`generic`).
pub fn xdp_mode() -> String {
    std::env::var("GATEWAY_SYNCOOKIE_LAB_MODE").unwrap_or_else(|_| "native".into())
}

/// The gateway's configuration: `syn_cookies = cookies` (`on`, `auto`,
/// `off`), its terminator on both lab addresses in front of the echo origin,
/// [`HOST`] with the zone's TLS 1.2 minimum.
pub fn config(cookies: &str) -> String {
    format!(
        "[xdp]\ninterface = \"{IFACE}\"\nports = [{TERMINATOR_PORT}, {PLAIN_PORT}]\nmode = \"{mode}\"\nsyn_cookies = \"{cookies}\"\n\n\
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
pub fn lab(gateway: &Path) -> Lab {
    lab_with(gateway, "on")
}

/// [`lab`] with `syn_cookies = cookies`; with `on`, cookies must be engaged on 443.
pub fn lab_with(gateway: &Path, cookies: &str) -> Lab {
    crate::require_root("the network-namespace lab");
    require_program("openssl", "openssl");
    require_program("nstat", "iproute2");
    let mut lab = Lab::create().expect("create the lab");
    let (cert, key) = lab.self_signed(&[HOST]).expect("make a certificate");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lab_tls_server.py");
    let mut cmd = lab.in_server("python3");
    cmd.arg(script)
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key);
    cmd.args(["--port", &PLAIN_PORT.to_string()]);
    cmd.arg("--log").arg(lab.log_path("tls-events"));
    lab.spawn("tls-server", cmd).expect("start the TLS server");
    lab.wait_for("tls-server", Duration::from_secs(10), |lab| {
        lab.log("tls-events").contains("listening")
    })
    .expect("TLS server listening");
    lab.start_origin().expect("start the origin");
    lab.start_gateway(gateway, &config(cookies))
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
    let want = if cookies == "on" { 1.0 } else { 0.0 };
    assert_eq!(
        engaged, want,
        "gateway_syn_cookies_engaged on 443 at start:\n{log}"
    );
    println!("gateway up, XDP mode {}, syn_cookies {cookies}", xdp_mode());
    lab
}

/// The server namespace's kernel and the gateway's cookie counters at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// TcpPassiveOpens.
    pub passive_opens: u64,
    /// The gateway's metrics.
    pub scrape: String,
}

impl Snapshot {
    /// Reads TcpPassiveOpens first, then scrapes (the scrape is itself a
    /// passive open, which then falls before the reading).
    pub fn take(lab: &Lab) -> Snapshot {
        let passive_opens = passive_opens(lab);
        let scrape = lab.metrics().expect("scrape the gateway");
        Snapshot {
            passive_opens,
            scrape,
        }
    }

    /// `gateway_syn_cookies_total{outcome}`.
    pub fn cookies(&self, outcome: &str) -> f64 {
        metric(
            &self.scrape,
            "gateway_syn_cookies_total",
            &[("outcome", outcome)],
        )
    }

    /// Counter moves from `self` to `after`: PassiveOpens (without the
    /// scrape between them) and each cookie outcome.
    pub fn moved(&self, after: &Snapshot) -> Moves {
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

/// How the counters moved between two [`Snapshot`]s.
#[derive(Debug, PartialEq)]
pub struct Moves {
    /// Sockets the server's kernel made (TcpPassiveOpens).
    pub passive_opens: i64,
    /// `outcome="sent"`.
    pub sent: f64,
    /// `outcome="not_answered"`.
    pub not_answered: f64,
    /// `outcome="ack_dropped"`.
    pub ack_dropped: f64,
    /// `outcome="bad_cookie"`.
    pub bad_cookie: f64,
    /// `outcome="refused_without_socket"`.
    pub refused: f64,
    /// `outcome="socket_made"`.
    pub socket_made: f64,
    /// `outcome="assign_failed"`.
    pub assign_failed: f64,
}

/// TcpPassiveOpens of the server namespace (`nstat -az`, history untouched).
pub fn passive_opens(lab: &Lab) -> u64 {
    let out = run(lab.in_server("nstat").args(["-asz", "TcpPassiveOpens"])).expect("run nstat");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some("TcpPassiveOpens")).then(|| f.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no TcpPassiveOpens in nstat's output:\n{text}"))
}

/// Runs `openssl s_client` from the client namespace against `server`:`port`
/// with `args` (e.g. `-tls1`), stdin closed at once.
pub fn s_client(lab: &Lab, server: &str, port: u16, args: &[&str]) -> crate::lab::ClientRun {
    lab.s_client_port(server, port, HOST, args)
}

/// A Python `ssl` client that completes a handshake, prints its port and
/// holds the connection for a few seconds.
pub const PY_CLIENT: &str = r#"
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
pub struct SocketOptions {
    /// (snd_wscale, rcv_wscale).
    pub wscale: Option<(u8, u8)>,
    /// SACK agreed.
    pub sack: bool,
    /// Timestamps agreed.
    pub ts: bool,
    /// ECN agreed.
    pub ecn: bool,
    /// The socket's MSS.
    pub mss: Option<u32>,
    /// The whole `ss` line.
    pub line: String,
}

/// What `ss -tnie` (run by `cmd`, in one namespace) shows of the established
/// connection whose local (`local`) or peer port is `port`.
pub fn socket_options(cmd: &mut Command, port: u16, local: bool) -> SocketOptions {
    let filter = if local {
        format!("sport = :{port}")
    } else {
        format!("dport = :{port}")
    };
    let out = run(cmd
        .args(["-tnieH", "state", "established"])
        .args(filter.split(' ')))
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
        ecn: words.contains(&"ecn"),
        mss,
        line,
    }
}

/// Runs [`PY_CLIENT`] once from the client namespace to the terminator, as process `name`; returns its port and what it printed.
pub fn python_client(lab: &mut Lab, py: &Path, name: &str) -> (u16, String) {
    let mut cmd = lab.in_client(py);
    cmd.args(["-c", PY_CLIENT, SERVER_V4, HOST]);
    lab.spawn(name, cmd).expect("start the Python client");
    lab.wait_for(name, Duration::from_secs(10), |lab| {
        lab.log(name).contains("connected")
    })
    .expect("the Python client connects");
    let said = lab.log(name);
    let port = said
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {said:?}"));
    (port, said)
}
