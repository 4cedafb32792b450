//! The logs as `gateway run`'s flags set them (output, fields, sample rate),
//! an HTTP/2 request's access line, and a response the client cut short.

use std::{fs, process::Command, thread, time::Duration};

use gateway_tests::{
    local::curl,
    logs::{lines, raw_client, the_line, wait_lines},
    mtls::MtlsSetup,
};
use serde_json::Value;

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

#[test]
fn run_flags_choose_the_output_the_fields_and_the_sample_rate() {
    use gateway_tests::{
        local::{Background, TempDir, free_port, origin},
        pki::server_cert,
    };
    const N: usize = 400;
    gateway_tests::require_root("the terminator tests (run as CI does)");
    let dir = TempDir::new("access-flags");
    let d = dir.0.as_path();
    server_cert(d, "server", &["open.test"]);
    let (tls, metrics, origin_port) = (free_port(), free_port(), free_port());
    let _origin = origin(d, origin_port);
    let config = write_config(d, (tls, metrics, origin_port), "");
    let access = d.join("flags.log");
    let mut cmd = Command::new(GATEWAY);
    cmd.arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--access-log")
        .arg(&access)
        .args([
            "--access-log-fields",
            "RayID,EdgeResponseStatus,ClientRequestURI",
            "--access-log-sample-rate",
            "0.5",
            "--handshake-log",
            "stdout",
        ]);
    let gateway = Background::start(cmd, d.join("gateway.log"), "gateway: ");
    let statuses = raw_client(
        tls,
        "open.test",
        &["--repeat", &N.to_string(), "elsewhere.test"],
    );
    assert_eq!(statuses.iter().filter(|c| *c == "421").count(), N);
    let unknown = raw_client(tls, "nowhere.test", &["--repeat", "1", "nowhere.test"]);
    assert_eq!(unknown, ["421"]);
    thread::sleep(Duration::from_millis(500));
    let kept = lines(&access);
    assert!(
        (120..=280).contains(&kept.len()),
        "about half of {N} requests kept: {}",
        kept.len()
    );
    for line in &kept {
        let fields: Vec<&String> = line.as_object().unwrap().keys().collect();
        assert_eq!(
            fields,
            ["ClientRequestURI", "EdgeResponseStatus", "RayID"],
            "{line}"
        );
    }
    let stdout = gateway.log();
    let event = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["ClientTlsStatus"] == "unknown_sni")
        .unwrap_or_else(|| panic!("the handshake event on stdout:\n{stdout}"));
    assert_eq!(event["ClientTlsClientHelloServerName"], "nowhere.test");
}

#[test]
fn an_http2_request_is_logged_with_its_authority() {
    let s = MtlsSetup::start(
        GATEWAY,
        "access-h2",
        "\n[log.access]\noutput = \"access.log\"\n",
    );
    let (code, body) = curl(
        "api.test",
        s.port,
        "/h2?x=1",
        s.ca(),
        &[
            "--http2",
            "-A",
            "h2-client",
            "--cert",
            s.alice.cert.to_str().unwrap(),
            "--key",
            s.alice.key.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 200, "{body}");
    let log = wait_lines(&s.path("access.log"), 1);
    let line = the_line(&log, "ClientRequestUserAgent", "h2-client");
    assert_eq!(line["ClientRequestProtocol"], "HTTP/2", "{line}");
    assert_eq!(
        line["ClientRequestHost"],
        format!("api.test:{}", s.port),
        "{line}"
    );
    assert_eq!(line["ClientRequestURI"], "/h2?x=1", "{line}");
    assert_eq!(line["ClientMTLSAuthStatus"], "ok", "{line}");
    assert_eq!(line["GatewayResponseComplete"], true, "{line}");
    assert!(line["EdgeResponseBytes"].as_u64().unwrap() > 0, "{line}");
}

/// An origin answering every request with 64 MiB (too much for the socket
/// buffers between the gateway and a client that stops reading).
const BIG_ORIGIN: &str = r#"
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Big(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        size = 64 << 20
        self.send_response(200)
        self.send_header("content-length", str(size))
        self.end_headers()
        chunk = b"x" * (1 << 20)
        try:
            for _ in range(64):
                self.wfile.write(chunk)
        except OSError:
            pass
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Big)
print("listening", flush=True)
server.serve_forever()
"#;

/// Reads the response's first 64 KiB, then closes the connection.
const IMPATIENT_CLIENT: &str = r#"
import socket, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.set_alpn_protocols(["http/1.1"])
sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1]))), server_hostname="open.test")
sock.sendall(b"GET /big HTTP/1.1\r\nHost: open.test\r\nUser-Agent: impatient\r\n\r\n")
got = 0
while got < 65536:
    data = sock.recv(16384)
    if not data:
        break
    got += len(data)
print(got)
sock.close()
"#;

#[test]
fn a_response_cut_by_the_client_is_logged_as_incomplete() {
    use gateway_tests::{
        local::{Background, TempDir, free_port, output},
        pki::server_cert,
    };
    gateway_tests::require_root("the terminator tests (run as CI does)");
    let dir = TempDir::new("access-cut");
    let d = dir.0.as_path();
    server_cert(d, "server", &["open.test"]);
    let (tls, metrics, origin_port) = (free_port(), free_port(), free_port());
    let mut origin = Command::new("python3");
    origin.args(["-c", BIG_ORIGIN, &origin_port.to_string()]);
    let _origin = Background::start(origin, d.join("origin.log"), "listening");
    let config = write_config(
        d,
        (tls, metrics, origin_port),
        "[log.access]\noutput = \"access.log\"\n",
    );
    let mut cmd = Command::new(GATEWAY);
    cmd.arg("run").arg("--config").arg(&config);
    let _gateway = Background::start(cmd, d.join("gateway.log"), "gateway: ");
    let client = output(Command::new("python3").args(["-c", IMPATIENT_CLIENT, &tls.to_string()]));
    assert!(client.ok, "{}", client.stderr);
    let log = wait_lines(&d.join("access.log"), 1);
    let line = the_line(&log, "ClientRequestUserAgent", "impatient");
    assert_eq!(line["EdgeResponseStatus"], 200, "{line}");
    assert_eq!(line["OriginResponseStatus"], 200, "{line}");
    assert_eq!(line["GatewayResponseComplete"], false, "{line}");
    let sent = line["EdgeResponseBytes"].as_u64().unwrap();
    assert!(sent < 64 << 20, "cut short: {sent} bytes");
}

/// Writes `d/gateway.toml`: TLS on 127.0.0.1:`tls` with the server
/// certificate, metrics on `metrics`, `log` (a `[log]` section or nothing),
/// and open.test to the origin on `origin_port`. Returns its path.
fn write_config(
    d: &std::path::Path,
    (tls, metrics, origin_port): (u16, u16, u16),
    log: &str,
) -> std::path::PathBuf {
    let config = d.join("gateway.toml");
    fs::write(
        &config,
        format!(
            "[terminator]\nlisten = [\"127.0.0.1:{tls}\"]\ncertificate = \"server.pem\"\n\
             key = \"server.key\"\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n{log}\
             [[hostname]]\nname = \"open.test\"\norigin = \"http://127.0.0.1:{origin_port}\"\n"
        ),
    )
    .unwrap();
    config
}
