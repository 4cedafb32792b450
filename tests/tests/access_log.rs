//! The access log with real clients: one mTLS request per outcome, checked
//! field by field; hostile values that must stay inside their strings;
//! rotation by SIGHUP under load; and a log that cannot keep up (a full
//! tmpfs, a pipe nobody reads) while requests go on succeeding.

use std::{fs, process::Command, thread, time::Duration};

use gateway_tests::{
    local::{curl, output},
    logs::{lines, metric, raw_client, the_line, wait_lines},
    mtls::MtlsSetup,
    pki::{Issued, x509_field},
};
use serde_json::Value;

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

/// The `[log]` text for an access log to `access` (relative to the
/// configuration) and a handshake log beside it, after `[terminator]` keys.
fn logs_config(access: &str, queue: usize) -> String {
    format!(
        "\n[log.access]\noutput = \"{access}\"\nqueue = {queue}\n\
         [log.handshake]\noutput = \"handshake.log\"\n"
    )
}

/// A request through curl with this User-Agent (the line's key); returns the
/// status and the response's `cf-ray`.
fn request(
    s: &MtlsSetup,
    host: &str,
    cert: Option<&Issued>,
    ua: &str,
    extra: &[&str],
) -> (u16, String) {
    let headers = s.path(&format!("headers-{ua}"));
    let mut args: Vec<String> = vec![
        "--http1.1".into(),
        "-A".into(),
        ua.into(),
        "-D".into(),
        headers.display().to_string(),
    ];
    if let Some(c) = cert {
        args.extend(c.curl_args());
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, body) = curl(host, s.port, "/whoami?x=1", s.ca(), &args);
    let head = fs::read_to_string(&headers).unwrap_or_default();
    let ray = head
        .lines()
        .find_map(|l| l.strip_prefix("cf-ray: "))
        .unwrap_or_else(|| panic!("no cf-ray in the response: {head}\n{body}"))
        .trim()
        .to_string();
    if code == 200 {
        let seen: Value = serde_json::from_str(body.trim()).unwrap();
        assert_eq!(
            seen["headers"]["cf-ray"][0],
            ray.as_str(),
            "the origin got the ray id"
        );
    }
    (code, ray)
}

fn fingerprint(c: &Issued) -> String {
    x509_field(&c.cert, &["-fingerprint", "-sha256"])
        .replace(':', "")
        .to_ascii_lowercase()
}

/// Checks `fields` of `line`.
fn check(line: &Value, what: &str, fields: &[(&str, Value)]) {
    for (name, want) in fields {
        assert_eq!(&line[*name], want, "{what}: {name} in {line:#}");
    }
}

/// A request: its User-Agent (its key in the log), host, certificate, extra
/// curl arguments and expected status.
type Case<'a> = (&'a str, &'a str, Option<&'a Issued>, &'a [&'a str], u16);

#[test]
fn every_outcome_is_one_line_checked_field_by_field() {
    let s = MtlsSetup::start(GATEWAY, "access-outcomes", &logs_config("access.log", 1024));
    let cases: [Case<'_>; 5] = [
        ("allowed", "api.test", Some(&s.alice), &[], 200),
        ("rule-blocked", "admin.test", Some(&s.mallory), &[], 403),
        ("revoked", "admin.test", Some(&s.bob), &[], 403),
        ("no-certificate", "api.test", None, &[], 200),
        (
            "wrong-host",
            "api.test",
            Some(&s.alice),
            &["-H", "Host: open.test"],
            421,
        ),
    ];
    let mut rays = Vec::new();
    for (ua, host, cert, extra, want) in cases {
        let (code, ray) = request(&s, host, cert, ua, extra);
        assert_eq!(code, want, "{ua}");
        rays.push(ray);
    }
    let log = wait_lines(&s.path("access.log"), cases.len());
    assert_eq!(log.len(), cases.len(), "one line per request: {log:#?}");
    let alice = s.alice.serial.as_str();
    for ((ua, host, _, _, status), ray) in cases.iter().zip(&rays) {
        let line = the_line(&log, "ClientRequestUserAgent", ua);
        check(
            line,
            ua,
            &[
                ("RayID", ray.as_str().into()),
                ("ClientIP", "127.0.0.1".into()),
                ("ClientRequestMethod", "GET".into()),
                ("ClientRequestURI", "/whoami?x=1".into()),
                ("ClientRequestProtocol", "HTTP/1.1".into()),
                ("ClientSSLProtocol", "TLSv1.3".into()),
                ("ClientTlsClientHelloServerName", (*host).into()),
                ("EdgeResponseStatus", (*status).into()),
                ("GatewayResponseComplete", true.into()),
            ],
        );
        assert!(line["ClientSrcPort"].as_u64().unwrap() > 0, "{line}");
        assert!(
            line["ClientSSLCipher"].as_str().unwrap().contains("AES")
                || line["ClientSSLCipher"].as_str().unwrap().contains("CHACHA"),
            "{line}"
        );
        assert!(line["EdgeResponseBytes"].as_u64().unwrap() > 0, "{line}");
        assert!(
            line["EdgeStartTimestamp"].as_str().unwrap().ends_with('Z'),
            "{line}"
        );
        assert!(
            line["EdgeStartTimestamp"].as_str() <= line["EdgeEndTimestamp"].as_str(),
            "{line}"
        );
    }
    let line = the_line(&log, "ClientRequestUserAgent", "allowed");
    check(
        line,
        "allowed",
        &[
            ("ClientRequestHost", format!("api.test:{}", s.port).into()),
            ("ClientMTLSAuthStatus", "ok".into()),
            (
                "ClientMTLSAuthCertFingerprint",
                fingerprint(&s.alice).into(),
            ),
            ("ClientMTLSAuthCertSerial", alice.into()),
            (
                "ClientMTLSAuthCertSubject",
                r"CN=alice,OU=Clients,O=Example\, Inc.,C=US".into(),
            ),
            ("SecurityAction", "log".into()),
            ("SecurityRuleID", "log-api".into()),
            (
                "SecurityRuleDescription",
                "count requests to api.test".into(),
            ),
            ("OriginResponseStatus", 200.into()),
            ("GatewayStage", "response".into()),
        ],
    );
    assert!(
        !line["ClientMTLSAuthCertIssuerSKI"]
            .as_str()
            .unwrap()
            .is_empty(),
        "{line}"
    );
    let line = the_line(&log, "ClientRequestUserAgent", "rule-blocked");
    check(
        line,
        "rule-blocked",
        &[
            ("ClientMTLSAuthStatus", "untrusted".into()),
            ("SecurityAction", "block".into()),
            ("SecurityRuleID", "admin-needs-valid-cert".into()),
            ("OriginResponseStatus", 0.into()),
            ("GatewayStage", "firewall".into()),
        ],
    );
    let line = the_line(&log, "ClientRequestUserAgent", "revoked");
    check(
        line,
        "revoked",
        &[
            ("ClientMTLSAuthStatus", "revoked".into()),
            ("ClientMTLSAuthCertSerial", s.bob.serial.as_str().into()),
            ("SecurityAction", "block".into()),
            ("SecurityRuleID", "no-revoked".into()),
            (
                "SecurityRuleDescription",
                "revoked certificates are refused on admin.test".into(),
            ),
            ("GatewayStage", "firewall".into()),
        ],
    );
    let line = the_line(&log, "ClientRequestUserAgent", "no-certificate");
    check(
        line,
        "no-certificate",
        &[
            ("ClientMTLSAuthStatus", "absent".into()),
            ("ClientMTLSAuthCertFingerprint", "".into()),
            ("OriginResponseStatus", 200.into()),
        ],
    );
    let line = the_line(&log, "ClientRequestUserAgent", "wrong-host");
    check(
        line,
        "wrong-host",
        &[
            ("ClientRequestHost", "open.test".into()),
            ("ClientTlsClientHelloServerName", "api.test".into()),
            ("SecurityAction", "".into()),
            ("GatewayStage", "sni_host".into()),
            ("OriginResponseStatus", 0.into()),
        ],
    );
    // The handshakes without an acceptable certificate are in the handshake log.
    let events = wait_lines(&s.path("handshake.log"), 3);
    for reason in [
        "client_cert_unknown_ca",
        "client_cert_revoked",
        "client_cert_missing",
    ] {
        let e = the_line(&events, "ClientTlsStatus", reason);
        assert_eq!(e["HandshakeCompleted"], true, "{e}");
    }
    let text = s.metrics();
    assert_eq!(
        metric(&text, "gateway_log_lines_total{log=\"access\"}"),
        5.0,
        "{text}"
    );
}

#[test]
fn hostile_values_never_break_or_forge_a_line() {
    let s = MtlsSetup::start(GATEWAY, "access-hostile", &logs_config("access.log", 1024));
    let big = "A".repeat(64 * 1024);
    let raw: Vec<Vec<u8>> = vec![
        b"GET /q?a=%22x%22&b=%0d%0a%7B HTTP/1.1\r\nHost: open.test\r\nUser-Agent: quote\" back\\slash {\"RayID\":\"f\"}\r\nConnection: close\r\n\r\n".to_vec(),
        b"GET / HTTP/1.1\r\nHost: open.test\r\nUser-Agent: bytes \xff\xfe\xc3( \tend\r\nConnection: close\r\n\r\n".to_vec(),
        format!("GET / HTTP/1.1\r\nHost: open.test\r\nUser-Agent: {big}\r\nConnection: close\r\n\r\n").into_bytes(),
        b"GET / HTTP/1.1\r\nHost: \"open.test\r\nUser-Agent: odd-host\r\nConnection: close\r\n\r\n".to_vec(),
    ];
    let file = s.path("raw-requests");
    fs::write(&file, raw.join(&b"\n----\n"[..])).unwrap();
    let statuses = raw_client(s.port, "open.test", &[file.to_str().unwrap()]);
    assert_eq!(statuses.len(), raw.len(), "{statuses:?}");
    let answered = statuses.iter().filter(|s| s.as_str() != "None").count();
    // A weird SNI too (the handshake completes on the default certificate).
    let weird = raw_client(s.port, "we\"ird\\sni.test", &["--repeat", "1", "open.test"]);
    assert_eq!(weird, ["421"], "the SNI names no hostname");
    let log = wait_lines(&s.path("access.log"), answered + 1);
    assert_eq!(log.len(), answered + 1, "{statuses:?} {log:#?}");
    let quote = log
        .iter()
        .find(|l| {
            l["ClientRequestUserAgent"]
                .as_str()
                .is_some_and(|u| u.starts_with("quote"))
        })
        .expect("the quoted request's line");
    assert_eq!(
        quote["ClientRequestUserAgent"],
        "quote\" back\\slash {\"RayID\":\"f\"}"
    );
    assert_ne!(
        quote["RayID"], "f",
        "a forged field stays inside its string"
    );
    assert!(
        quote["ClientRequestURI"]
            .as_str()
            .unwrap()
            .starts_with("/q?a="),
        "{quote}"
    );
    let bytes = log
        .iter()
        .find(|l| {
            l["ClientRequestUserAgent"]
                .as_str()
                .is_some_and(|u| u.starts_with("bytes"))
        })
        .expect("the invalid UTF-8 line");
    assert_eq!(
        bytes["ClientRequestUserAgent"],
        "bytes \u{fffd}\u{fffd}\u{fffd}( \tend"
    );
    let long = log
        .iter()
        .find(|l| {
            l["ClientRequestUserAgent"]
                .as_str()
                .is_some_and(|u| u.starts_with("AAAA"))
        })
        .expect("the 64 KiB header's line");
    let ua = long["ClientRequestUserAgent"].as_str().unwrap();
    assert!(
        ua.len() <= 4096 + 3 && ua.ends_with('…'),
        "cut: {} bytes",
        ua.len()
    );
    let sni = the_line(&log, "ClientTlsClientHelloServerName", "we\"ird\\sni.test");
    assert_eq!(sni["GatewayStage"], "sni_host");
    let events = wait_lines(&s.path("handshake.log"), 1);
    let e = the_line(
        &events,
        "ClientTlsClientHelloServerName",
        "we\"ird\\sni.test",
    );
    assert_eq!(e["ClientTlsStatus"], "unknown_sni");
}

/// Waits until the gateway counted `n` access lines, written or dropped;
/// returns (written, dropped for a full queue, dropped for a write error).
fn accounted(s: &MtlsSetup, n: f64) -> (f64, f64, f64) {
    let mut last = (0.0, 0.0, 0.0);
    for _ in 0..100 {
        let text = s.metrics();
        last = (
            metric(&text, "gateway_log_lines_total{log=\"access\"}"),
            metric(
                &text,
                "gateway_log_dropped_total{log=\"access\",reason=\"queue_full\"}",
            ),
            metric(
                &text,
                "gateway_log_dropped_total{log=\"access\",reason=\"write_error\"}",
            ),
        );
        if last.0 + last.1 + last.2 >= n {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    last
}

#[test]
fn sighup_rotation_loses_no_line_under_load() {
    // Requests the gateway answers itself (421: the Host is not the SNI's),
    // thousands a second, so that rotations happen under load.
    const N: usize = 3000;
    let s = MtlsSetup::start(GATEWAY, "access-rotate", &logs_config("access.log", 8192));
    let port = s.port;
    let load = thread::spawn(move || {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/raw_tls_client.py");
        output(Command::new("python3").args([
            script,
            &port.to_string(),
            "open.test",
            "--repeat",
            &N.to_string(),
            "elsewhere.test",
        ]))
    });
    let mut files = Vec::new();
    for i in 0..5 {
        thread::sleep(Duration::from_millis(100));
        let to = s.path(&format!("access.log.{i}"));
        if fs::rename(s.path("access.log"), &to).is_ok() {
            files.push(to);
        }
        let hup = Command::new("kill")
            .args(["-HUP", &s.gateway.pid().to_string()])
            .status()
            .unwrap();
        assert!(hup.success());
    }
    let load = load.join().unwrap();
    let ok = load.stdout.lines().filter(|c| *c == "421").count();
    assert_eq!(ok, N, "{}\ngateway: {}", load.stderr, s.gateway.log());
    let (written, full, failed) = accounted(&s, N as f64);
    assert_eq!((written, full, failed), (N as f64, 0.0, 0.0));
    files.push(s.path("access.log"));
    let per_file: Vec<usize> = files.iter().map(|f| lines(f).len()).collect();
    assert_eq!(
        per_file.iter().sum::<usize>(),
        N,
        "lines per file: {per_file:?}"
    );
    assert!(
        per_file.iter().filter(|&&n| n > 0).count() >= 3,
        "the rotations happened under load: {per_file:?}"
    );
}

/// A directory outside the test's scratch one (created before the gateway
/// starts), unmounted and removed when dropped.
struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_full_disk_drops_lines_counts_them_and_requests_succeed() {
    const N: usize = 200;
    gateway_tests::require_root("mounting a small tmpfs");
    let mount =
        Mount(std::env::temp_dir().join(format!("gateway-full-disk-{}", std::process::id())));
    fs::create_dir_all(&mount.0).unwrap();
    let mounted = output(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16k", "tmpfs"])
            .arg(&mount.0),
    );
    assert!(mounted.ok, "mount a 16 KiB tmpfs: {}", mounted.stderr);
    let log = mount.0.join("access.log");
    let s = MtlsSetup::start(
        GATEWAY,
        "access-full-disk",
        &logs_config(log.to_str().unwrap(), 1024),
    );
    let statuses = raw_client(
        s.port,
        "open.test",
        &["--repeat", &N.to_string(), "open.test"],
    );
    assert_eq!(
        statuses.iter().filter(|c| *c == "200").count(),
        N,
        "requests succeed on a full disk"
    );
    let (written, full, failed) = accounted(&s, N as f64);
    assert_eq!(
        written + full + failed,
        N as f64,
        "every line written or counted as dropped"
    );
    assert!(
        failed > 0.0,
        "the disk filled: {written} written, {failed} dropped"
    );
    let kept = lines(&log);
    assert_eq!(
        kept.len() as f64,
        written,
        "the file holds whole lines only, every written one"
    );
}

#[test]
fn a_writer_that_cannot_write_never_holds_up_a_request() {
    const N: usize = 300;
    let dir = Mount(std::env::temp_dir().join(format!("gateway-stuck-log-{}", std::process::id())));
    let _ = fs::remove_dir_all(&dir.0);
    fs::create_dir_all(&dir.0).unwrap();
    let fifo = dir.0.join("pipe");
    let made = output(Command::new("mkfifo").arg(&fifo));
    assert!(made.ok, "mkfifo: {}", made.stderr);
    // Held open for reading (so the gateway can open it) and never read: its
    // writer blocks once the pipe's 64 KiB are full, like a disk that hangs.
    let _reader = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fifo)
        .unwrap();
    let s = MtlsSetup::start(
        GATEWAY,
        "access-stuck",
        &logs_config(fifo.to_str().unwrap(), 4),
    );
    let started = std::time::Instant::now();
    let statuses = raw_client(
        s.port,
        "open.test",
        &["--repeat", &N.to_string(), "open.test"],
    );
    assert_eq!(statuses.iter().filter(|c| *c == "200").count(), N);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    let (written, full, _) = accounted(&s, N as f64);
    assert!(
        full > 0.0,
        "a full queue drops lines and counts them ({written} written)"
    );
    // A batch stuck in the pipe is neither written nor dropped yet.
    assert!(written + full <= N as f64, "{written} + {full}");
}
