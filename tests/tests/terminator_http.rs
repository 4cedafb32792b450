//! The terminator as an HTTP server: IPv4 and IPv6, HTTP/2 by ALPN, the
//! per-connection request limit, wildcard hostnames, metrics (a deleted
//! hostname's series go with it), and a graceful shutdown.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use gateway_tests::{
    local::{curl, output},
    mtls::{self, MtlsSetup},
};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

#[test]
fn serves_ipv4_and_ipv6_with_http2_by_alpn() {
    let s = MtlsSetup::start(GATEWAY, "http-basics", "max_requests_per_connection = 2");
    for (family, resolve) in [("IPv4", "127.0.0.1"), ("IPv6", "[::1]")] {
        for (flag, want) in [("--http2", "2 200"), ("--http1.1", "1.1 200")] {
            let out = output(
                Command::new("curl")
                    .args([
                        "-sS",
                        flag,
                        "--resolve",
                        &format!("open.test:{}:{resolve}", s.port),
                        "--cacert",
                    ])
                    .arg(s.ca())
                    .args(["-o", "/dev/null", "-w", "%{http_version} %{http_code}"])
                    .arg(format!("https://open.test:{}/", s.port)),
            );
            assert_eq!(out.stdout, want, "{family} {flag}: {out:?}");
        }
    }
    // Five requests on HTTP/1.1 with at most two per connection: three connections.
    let url = format!("https://open.test:{}/", s.port);
    let out = output(
        Command::new("curl")
            .args([
                "-sS",
                "--http1.1",
                "--resolve",
                &format!("open.test:{}:127.0.0.1", s.port),
                "--cacert",
            ])
            .arg(s.ca())
            .args([
                "-o",
                "/dev/null",
                "-o",
                "/dev/null",
                "-o",
                "/dev/null",
                "-o",
                "/dev/null",
                "-o",
                "/dev/null",
            ])
            .args(["-w", "%{num_connects}\n", &url, &url, &url, &url, &url]),
    );
    let connects: u32 = out
        .stdout
        .lines()
        .map(|l| l.trim().parse::<u32>().unwrap_or(0))
        .sum();
    assert_eq!(connects, 3, "{out:?}");
}

#[test]
fn a_wildcard_entry_gives_its_subdomains_the_zone_minimum() {
    let s = MtlsSetup::start(GATEWAY, "http-wildcard", "");
    let tls12 = |host: &str| curl(host, s.port, "/", s.ca(), &["--tls-max", "1.2"]).0;
    assert_eq!(tls12("wild.test"), 0, "wild.test itself needs TLS 1.3");
    let sub = curl("a.wild.test", s.port, "/", s.ca(), &["--tls-max", "1.2"]);
    assert_eq!(sub.0, 200, "its subdomains use the zone's 1.2: {}", sub.1);
    assert_eq!(curl("wild.test", s.port, "/", s.ca(), &[]).0, 200);
    // A name under an entry without `wildcard` is not served by it.
    assert_eq!(curl("a.open.test", s.port, "/", s.ca(), &["-k"]).0, 421);
}

#[test]
fn metrics_cover_handshakes_requests_and_connections() {
    let s = MtlsSetup::start(GATEWAY, "http-metrics", "");
    assert_eq!(curl("open.test", s.port, "/", s.ca(), &[]).0, 200);
    let m = s.metrics();
    for needle in [
        "gateway_tls_handshakes_total{result=\"ok\",version=\"TLSv1.3\"} 1",
        "gateway_http_requests_total{host=\"open.test\",status=\"200\"} 1",
        "gateway_tls_handshake_seconds_count 1",
        "gateway_http_request_seconds_count 1",
        "gateway_tls_open_connections",
    ] {
        assert!(m.contains(needle), "{needle} missing from:\n{m}");
    }
}

#[test]
fn a_deleted_hostname_loses_its_request_series() {
    let s = MtlsSetup::start(GATEWAY, "http-series", "");
    assert_eq!(curl("open.test", s.port, "/", s.ca(), &[]).0, 200);
    assert_eq!(curl("strict.test", s.port, "/", s.ca(), &[]).0, 200);
    let series =
        |host: &str| format!("gateway_http_requests_total{{host=\"{host}\",status=\"200\"}} 1");
    let m = s.metrics();
    assert!(m.contains(&series("open.test")), "{m}");
    // The same configuration without open.test.
    let text = mtls::config(s.ports, &s.carol.serial, "");
    let start = text.find("[[hostname]]\nname = \"open.test\"").unwrap();
    let end = start + 1 + text[start + 1..].find("[[hostname]]").unwrap();
    s.write_config(&format!("{}{}", &text[..start], &text[end..]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while curl("open.test", s.port, "/", s.ca(), &[]).0 == 200 {
        assert!(Instant::now() < deadline, "open.test was never deleted");
        std::thread::sleep(Duration::from_millis(100));
    }
    let m = s.metrics();
    assert!(
        !m.contains("host=\"open.test\""),
        "a deleted hostname's series stayed:\n{m}"
    );
    assert!(m.contains(&series("strict.test")), "the others stay:\n{m}");
}

#[test]
fn sigterm_lets_a_request_in_flight_finish() {
    let mut s = MtlsSetup::start(GATEWAY, "http-shutdown", "");
    // A slow upload keeps a request in flight while the gateway is told to stop.
    let url = format!("https://open.test:{}/upload", s.port);
    let upload = Command::new("curl")
        .args([
            "-sS",
            "--resolve",
            &format!("open.test:{}:127.0.0.1", s.port),
            "--cacert",
        ])
        .arg(s.ca())
        .args([
            "--limit-rate",
            "20k",
            "--data-binary",
            &"x".repeat(40_000),
            "-w",
            "\n%{http_code}",
            &url,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    // SAFETY: kill(2) on our child process.
    unsafe { libc::kill(s.gateway.pid() as i32, libc::SIGTERM) };
    let out = upload.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.ends_with("200"),
        "the request in flight completed: {text}"
    );
    assert!(text.contains("\"body_len\": 40000"), "{text}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !s.gateway.running(),
        "the gateway exited after its last request"
    );
    assert_eq!(
        curl("open.test", s.port, "/", s.ca(), &[]).0,
        0,
        "and accepts no new ones"
    );
}
