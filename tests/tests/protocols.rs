//! WebSockets and gRPC through the gateway, with real implementations (the
//! Python `websockets` and `grpcio` libraries, in the venv `scripts/setup.sh`
//! makes under `target/python/protocols`), over TLS with a client certificate:
//! a WebSocket echo (idle longer than the origin timeout, the client
//! certificate's headers at the origin), a rule-blocked upgrade (403), and
//! gRPC unary, server-streaming (longer than the origin timeout) and failing
//! calls to an `h2c://` origin, trailers and `grpc-status` intact, in file
//! mode and with an `h2c://` origin set through the store-mode API.

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    path::{Path, PathBuf},
    process::Command,
};

use gateway_tests::{
    control::StoreGateway,
    local::{Background, TempDir, free_port, gateway, output},
    pki::{Issued, TestCa, server_cert},
};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/python/protocols.py");

/// The venv's Python, when it has both libraries; `None` said loudly.
fn python() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join("target/python/protocols/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import websockets, grpc"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "!!! {} lacks websockets or grpcio: run scripts/setup.sh; \
             only what curl can check runs",
            python.display()
        );
    }
    ok.then_some(python)
}

/// A gateway with `ws.test` (mTLS, Cloudflare headers, HTTP/1.1 origin) and
/// `grpc.test` (mTLS, `h2c://` origin), a rule blocking `/blocked` and the
/// gRPC method `Blocked`, and a 1 s origin timeout.
struct Setup {
    port: u16,
    metrics_port: u16,
    server: Issued,
    alice: Issued,
    gateway: Background,
    _origins: Vec<Background>,
    _dir: TempDir,
}

fn config(port: u16, metrics: u16, ws: u16, grpc: u16) -> String {
    format!(
        r#"[terminator]
listen = ["127.0.0.1:{port}"]
certificate = "server.pem"
key = "server.key"
origin_timeout_ms = 1000

[metrics]
listen = "127.0.0.1:{metrics}"

[[ca]]
name = "corp"
certificate = "corp/ca.pem"

[[rule]]
id = "no-blocked"
description = "blocked paths"
expression = 'http.request.uri.path in {{"/blocked" "/test.Echo/Blocked"}}'
action = "block"

[[hostname]]
name = "ws.test"
origin = "http://127.0.0.1:{ws}"
mtls = true
cas = ["corp"]
forward_client_cert = "cloudflare"

[[hostname]]
name = "grpc.test"
origin = "h2c://127.0.0.1:{grpc}"
mtls = true
cas = ["corp"]
forward_client_cert = "cloudflare"

[[hostname]]
name = "down.test"
origin = "h2c://127.0.0.1:{dead}"
"#,
        dead = free_port(),
    )
}

impl Setup {
    fn start(test: &str, python: Option<&Path>) -> Setup {
        gateway_tests::require_root("the terminator tests (run as CI does)");
        let dir = TempDir::new(test);
        let d = dir.0.as_path();
        let server = server_cert(d, "server", &["ws.test", "grpc.test", "down.test"]);
        let alice = TestCa::new(d, "corp").client("alice", None);
        let (port, metrics_port) = (free_port(), free_port());
        let (ws, grpc) = (free_port(), free_port());
        let mut origins = Vec::new();
        if let Some(python) = python {
            for (kind, port) in [("ws-origin", ws), ("grpc-origin", grpc)] {
                let mut cmd = Command::new(python);
                cmd.args([SCRIPT, kind, &port.to_string()]);
                let log = d.join(format!("{kind}.log"));
                origins.push(Background::start(cmd, log, "listening"));
            }
        }
        let gateway = gateway(GATEWAY, d, &config(port, metrics_port, ws, grpc));
        Setup {
            port,
            metrics_port,
            server,
            alice,
            gateway,
            _origins: origins,
            _dir: dir,
        }
    }

    /// Runs the script's client `kind` with `args` after the port (then the
    /// CA, alice's certificate and key); returns its `key value` lines.
    fn client(&self, python: &Path, kind: &str, args: &[&str]) -> BTreeMap<String, Vec<String>> {
        let mut all: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        all.extend([&self.server.cert, &self.alice.cert, &self.alice.key].map(|p| p.as_os_str()));
        run_client(python, kind, self.port, &all, &self.gateway.log())
    }

    fn metric(&self, name: &str) -> Option<f64> {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let text = output(Command::new("curl").args(["-sf", &url])).stdout;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

/// Runs the script's client `kind` against `port` with `args`; returns its
/// `key value` lines (`log`: the gateway's, shown if the client fails).
fn run_client(
    python: &Path,
    kind: &str,
    port: u16,
    args: &[&OsStr],
    log: &str,
) -> BTreeMap<String, Vec<String>> {
    let mut cmd = Command::new(python);
    cmd.args([SCRIPT, kind, &port.to_string()]).args(args);
    let out = output(&mut cmd);
    assert!(out.ok, "{kind} failed: {out:?}\ngateway log:\n{log}");
    let mut facts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in out.stdout.lines() {
        let (k, v) = line.split_once(' ').unwrap_or((line, ""));
        facts.entry(k.into()).or_default().push(v.into());
    }
    facts
}

fn fact<'a>(facts: &'a BTreeMap<String, Vec<String>>, key: &str) -> Vec<&'a str> {
    facts
        .get(key)
        .map(|v| v.iter().map(String::as_str).collect())
        .unwrap_or_default()
}

/// curl with alice's certificate to `https://{host}{path}` with `args`: the
/// response's status line and headers.
fn curl_head(s: &Setup, host: &str, path: &str, args: &[&str]) -> String {
    let out = output(
        curl_as_alice(s, host)
            .args(["-D", "-"])
            .args(args)
            .arg(format!("https://{host}:{}{path}", s.port)),
    );
    out.stdout.to_ascii_lowercase()
}

/// curl to `host` on the gateway, trusting its server certificate and
/// presenting alice's, its body discarded; the caller adds the rest.
fn curl_as_alice(s: &Setup, host: &str) -> Command {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "5", "-o", "/dev/null", "--resolve"])
        .arg(format!("{host}:{}:127.0.0.1", s.port))
        .arg("--cacert")
        .arg(&s.server.cert)
        .arg("--cert")
        .arg(&s.alice.cert)
        .arg("--key")
        .arg(&s.alice.key);
    cmd
}

/// curl's WebSocket upgrade to `path` on ws.test with alice's certificate: the status.
fn curl_upgrade(s: &Setup, path: &str) -> String {
    let out = output(
        curl_as_alice(s, "ws.test")
            .args(["--http1.1", "-w", "%{http_code}"])
            .args(["-H", "Connection: Upgrade", "-H", "Upgrade: websocket"])
            .args(["-H", "Sec-WebSocket-Version: 13"])
            .args(["-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="])
            .arg(format!("https://ws.test:{}{path}", s.port)),
    );
    out.stdout
}

#[test]
fn websockets_echo_through_the_gateway_and_a_blocked_upgrade_gets_403() {
    let python = python();
    let s = Setup::start("protocols-ws", python.as_deref());
    assert_eq!(
        curl_upgrade(&s, "/blocked"),
        "403",
        "a rule-blocked upgrade is refused before the origin"
    );
    let upgrade = [
        "--http1.1",
        "-H",
        "Connection: Upgrade",
        "-H",
        "Upgrade: websocket",
    ];
    let h2c = curl_head(&s, "grpc.test", "/", &upgrade);
    assert!(
        h2c.starts_with("http/1.1 502") && h2c.contains("content-type: text/plain"),
        "a WebSocket to an h2c:// origin: {h2c}"
    );
    let Some(python) = python else { return };
    let ws = |path| s.client(&python, "ws-client", &["ws.test", path]);
    // While the client idles in its tunnel: one tunnel, one connection.
    let (facts, during) = std::thread::scope(|scope| {
        let chat = scope.spawn(|| ws("/chat"));
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let during = (
            s.metric("gateway_websocket_open_tunnels"),
            s.metric("gateway_tls_open_connections"),
        );
        (chat.join().expect("the client thread"), during)
    });
    assert_eq!(
        during,
        (Some(1.0), Some(1.0)),
        "an open tunnel counts as a connection"
    );
    assert_eq!(fact(&facts, "open"), [""], "{facts:?}");
    assert_eq!(
        fact(&facts, "reply"),
        ["echo:hello", "echo:after-idle"],
        "the tunnel outlives the 1 s origin timeout while idle"
    );
    assert_eq!(fact(&facts, "origin-cf-cert-verified"), ["true"]);
    assert_eq!(fact(&facts, "origin-x-forwarded-proto"), ["https"]);
    assert_eq!(fact(&facts, "closed"), ["1000"], "{facts:?}");
    let blocked = ws("/blocked");
    assert_eq!(fact(&blocked, "status"), ["403"], "{blocked:?}");
    assert!(fact(&blocked, "open").is_empty());
    let closed = ws("/origin-closes");
    assert_eq!(
        fact(&closed, "origin-closed"),
        ["4000"],
        "the origin's close reaches the client: {closed:?}"
    );
    assert_eq!(s.metric("gateway_websocket_upgrades_total"), Some(2.0));
    // The closed tunnels are gone (a tunnel ends when both sides closed).
    let gone = |s: &Setup| {
        let names = [
            "gateway_websocket_open_tunnels",
            "gateway_tls_open_connections",
        ];
        names.map(|n| s.metric(n))
    };
    let mut open = gone(&s);
    for _ in 0..50 {
        if open == [Some(0.0); 2] {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        open = gone(&s);
    }
    assert_eq!(open, [Some(0.0); 2], "tunnels and connections ended");
}

#[test]
fn grpc_unary_streaming_and_status_pass_through_to_an_h2c_origin() {
    let Some(python) = python() else {
        let s = Setup::start("protocols-grpc", None);
        assert!(s.metric("gateway_tls_open_connections").is_some());
        eprintln!("!!! only checked that an h2c:// origin is accepted in the configuration");
        return;
    };
    let s = Setup::start("protocols-grpc", Some(&python));
    let grpc = [
        "--http2",
        "-X",
        "POST",
        "-H",
        "content-type: application/grpc",
    ];
    let http1 = curl_head(&s, "ws.test", "/x", &grpc);
    assert!(
        http1.starts_with("http/2 200")
            && http1.contains("grpc-status: 14")
            && http1.contains("grpc-message: grpc needs an h2c:// origin"),
        "a gRPC call to an http:// origin: {http1}"
    );
    let facts = s.client(&python, "grpc-client", &["grpc.test"]);
    assert_eq!(fact(&facts, "unary"), ["echo:hi"], "{facts:?}");
    assert_eq!(fact(&facts, "unary-code"), ["OK"]);
    assert_eq!(
        fact(&facts, "trailer"),
        ["true"],
        "the origin saw the certificate header, and its trailer came back"
    );
    assert_eq!(fact(&facts, "stream"), ["0:s 1:s 2:s 3:s"], "{facts:?}");
    let seconds: f64 = fact(&facts, "stream-seconds")[0].parse().unwrap();
    assert!(
        seconds > 1.5,
        "the stream took {seconds} s: longer than the 1 s origin timeout"
    );
    assert_eq!(fact(&facts, "fail"), ["NOT_FOUND no such thing"]);
    assert_eq!(
        fact(&facts, "blocked"),
        ["PERMISSION_DENIED Access denied by the gateway's firewall rules."],
        "a rule-blocked call gets a gRPC status with the block message"
    );
    let down = s.client(&python, "grpc-client", &["down.test"]);
    let unary = fact(&down, "unary-error");
    assert!(
        unary
            .first()
            .is_some_and(|u| u.starts_with("UNAVAILABLE origin h2c://")),
        "a dead origin gets UNAVAILABLE with the gateway's reason: {down:?}"
    );
}

#[test]
fn a_store_mode_hostname_takes_an_h2c_origin_from_the_api() {
    let Some(python) = python() else {
        eprintln!("!!! without grpcio the store-mode gRPC call cannot run");
        return;
    };
    gateway_tests::require_root("the terminator tests (run as CI does)");
    let dir = TempDir::new("protocols-store");
    let grpc = free_port();
    let mut cmd = Command::new(&python);
    cmd.args([SCRIPT, "grpc-origin", &grpc.to_string()]);
    let _origin = Background::start(cmd, dir.0.join("grpc-origin.log"), "listening");
    let alice = TestCa::new(&dir.0, "corp").client("alice", None);
    let gw = StoreGateway::start(Path::new(GATEWAY), &dir.0.join("data"), None, &[]);
    let base = format!("zones/{}/custom_hostnames", gw.zone());
    let localhost = &gw.ok("GET", &base, None)[0];
    assert_eq!(localhost["hostname"], "localhost");
    let one = format!("{base}/{}", localhost["id"].as_str().unwrap());
    let (status, ftp) = gw.call(
        "PATCH",
        &one,
        Some(&serde_json::json!({"custom_origin_server": "ftp://127.0.0.1:1"})),
    );
    assert_eq!(status, 400, "other schemes are still refused: {ftp}");
    let origin = format!("h2c://127.0.0.1:{grpc}");
    let patched = gw.ok(
        "PATCH",
        &one,
        Some(&serde_json::json!({"custom_origin_server": origin})),
    );
    assert_eq!(patched["custom_origin_server"], origin.as_str());
    let ca = gw.server_ca();
    let args = [OsStr::new("localhost"), ca.as_os_str()];
    let args = [&args[..], &[alice.cert.as_os_str(), alice.key.as_os_str()]].concat();
    // The change applies from the next request; give it a few tries.
    let mut facts = BTreeMap::new();
    for _ in 0..20 {
        facts = run_client(
            &python,
            "grpc-client",
            gw.tls_port,
            &args,
            &gw.process.log(),
        );
        if fact(&facts, "unary") == ["echo:hi"] {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(fact(&facts, "unary"), ["echo:hi"], "{facts:?}");
    assert_eq!(fact(&facts, "stream"), ["0:s 1:s 2:s 3:s"], "{facts:?}");
    assert_eq!(fact(&facts, "fail"), ["NOT_FOUND no such thing"]);
}
