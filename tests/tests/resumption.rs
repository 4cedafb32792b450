//! TLS session resumption with real clients (`openssl s_client`, Python's
//! `ssl`): sessions resume on mTLS hostnames and carry the client certificate,
//! and every way a session could be carried past the policy it satisfied
//! falls back to a full handshake (or, for a revocation, to a refused request).

use std::{
    process::Command,
    time::{Duration, Instant},
};

use gateway_tests::{
    local::{curl, gateway},
    mtls::{MtlsSetup, config},
    pki::Issued,
    sessions::{self, Run},
};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

/// What the resumption tests add to the shared setup: `a.test` (mTLS, the
/// corp CA only), `b.test` (mTLS, the managed CA only), `c.test` (mTLS,
/// `c_cas`), `d.test` (no mTLS, minimum `d_min`); a verified, unrevoked
/// certificate is required on the first three.
fn extra(s: &MtlsSetup, c_cas: &str, d_min: &str) -> String {
    let origin = format!("http://127.0.0.1:{}", s.ports.origin);
    let mut text = String::from(
        r#"
[[rule]]
id = "resume-needs-valid-cert"
expression = '(http.host in {"a.test" "b.test" "c.test"} and (not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked))'
action = "block"
"#,
    );
    for (name, mtls) in [
        ("a.test", "mtls = true\ncas = [\"corp\"]"),
        ("b.test", "mtls = true\ncas = [\"managed\"]"),
        ("c.test", &format!("mtls = true\ncas = [{c_cas}]")),
        ("d.test", &format!("min_tls_version = \"{d_min}\"")),
    ] {
        text.push_str(&format!(
            "\n[[hostname]]\nname = \"{name}\"\norigin = \"{origin}\"\n{mtls}\n\
             forward_client_cert = \"cloudflare\"\n"
        ));
    }
    text
}

/// The whole configuration: the shared one, `revoked` added to the managed
/// CA's revocations, and [`extra`].
fn full_config(s: &MtlsSetup, revoked: &str, c_cas: &str, d_min: &str) -> String {
    let serials = match revoked {
        "" => s.carol.serial.clone(),
        more => format!("{}\", \"{more}", s.carol.serial),
    };
    format!(
        "{}{}",
        config(s.ports, &serials, ""),
        extra(s, c_cas, d_min)
    )
}

/// Writes a configuration and waits until `applied` holds.
fn reconfigure(s: &MtlsSetup, text: &str, applied: impl Fn() -> bool) {
    s.write_config(text);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !applied() {
        assert!(
            Instant::now() < deadline,
            "the configuration never applied:\n{}",
            s.gateway.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The setup with the resumption hostnames added.
fn setup(test: &str) -> MtlsSetup {
    let s = MtlsSetup::start(GATEWAY, test, "");
    let text = full_config(&s, "", "\"corp\", \"managed\"", "1.2");
    reconfigure(&s, &text, || get(&s, "a.test", Some(&s.alice)) == 200);
    s
}

/// A GET with curl (the server certificate is not checked: it does not name
/// the added hostnames); the status.
fn get(s: &MtlsSetup, host: &str, cert: Option<&Issued>) -> u16 {
    let mut args = vec!["-k".to_string()];
    if let Some(c) = cert {
        args.extend(c.curl_args());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(host, s.port, "/", s.ca(), &args).0
}

/// [`sessions::s_client`] to the setup's gateway.
fn s_client(s: &MtlsSetup, sni: &str, args: &[&str], cert: Option<&Issued>, path: &str) -> Run {
    sessions::s_client(s.port, sni, args, cert, path)
}

/// `-sess_out FILE` or `-sess_in FILE` for the session file `name`.
fn sess(s: &MtlsSetup, flag: &'static str, name: &str) -> [String; 2] {
    [flag.to_string(), s.path(name).display().to_string()]
}

fn args<'a>(version: &'a str, session: &'a [String; 2]) -> [&'a str; 3] {
    [version, &session[0], &session[1]]
}

/// The value of a metric series in the gateway's metrics (0 when absent).
fn metric(s: &MtlsSetup, series: &str) -> f64 {
    sessions::metric(&s.metrics(), series)
}

#[test]
fn openssl_sessions_resume_on_an_mtls_hostname_and_carry_the_client_certificate() {
    let s = setup("resume-openssl");
    // TLS 1.2 and 1.3 tickets, and TLS 1.2 session IDs (no ticket).
    for (version, extra) in [("-tls1_2", ""), ("-tls1_3", ""), ("-tls1_2", "-no_ticket")] {
        let what = format!("{version} {extra}");
        let name = format!("api{version}{extra}.sess");
        let mut first: Vec<String> = sess(&s, "-sess_out", &name).into();
        let mut again: Vec<String> = sess(&s, "-sess_in", &name).into();
        for a in [&mut first, &mut again] {
            a.push(version.into());
            if !extra.is_empty() {
                a.push(extra.into());
            }
        }
        let first: Vec<&str> = first.iter().map(String::as_str).collect();
        let again: Vec<&str> = again.iter().map(String::as_str).collect();
        let run = s_client(&s, "api.test", &first, Some(&s.alice), "/first");
        assert!(!run.reused && run.asked_cert, "{what}: {}", run.out);
        assert_eq!(run.status, "200", "{what}: {}", run.out);
        // Resumed without presenting the certificate again: the session carries it.
        let run = s_client(&s, "api.test", &again, None, "/again");
        assert!(run.reused, "{what}: not resumed:\n{}", run.out);
        assert!(
            !run.asked_cert,
            "{what}: a resumed handshake asked a certificate"
        );
        assert_eq!(run.status, "200", "{what}: {}", run.out);
        let serial = format!("\"cf-cert-serial\": [\"{}\"]", s.alice.serial);
        assert!(
            run.out.contains(&serial) && run.out.contains("\"cf-cert-verified\": [\"true\"]"),
            "{what}: the origin did not get the certificate of the resumed session:\n{}",
            run.out
        );
    }
    assert!(metric(&s, "gateway_tls_handshake_kinds_total{kind=\"resumed\"}") >= 3.0);
    assert!(metric(&s, "gateway_tls_handshake_kinds_total{kind=\"full\"}") >= 3.0);
}

const PYTHON_CLIENT: &str = r#"
import json, socket, ssl, sys
host, port, ca, cert, key, version = sys.argv[1:7]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(ca)
ctx.load_cert_chain(cert, key)
v = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[version]
ctx.minimum_version = v
ctx.maximum_version = v
def get(session, send_cert):
    with socket.create_connection(("127.0.0.1", int(port))) as raw:
        with ctx.wrap_socket(raw, server_hostname=host, session=session) as s:
            s.sendall(("GET /py HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host).encode())
            data = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except (ssl.SSLError, OSError):
                pass
            return s.session, s.session_reused, data.decode(errors="replace")
session, first, body1 = get(None, True)
_, second, body2 = get(session, False)
print(json.dumps({"first": first, "second": second, "body1": body1, "body2": body2}))
"#;

#[test]
fn python_ssl_sessions_resume_on_an_mtls_hostname() {
    let s = setup("resume-python");
    for version in ["1.2", "1.3"] {
        let out = gateway_tests::local::output(
            Command::new("python3")
                .args(["-c", PYTHON_CLIENT, "api.test", &s.port.to_string()])
                .arg(s.ca())
                .arg(&s.alice.cert)
                .arg(&s.alice.key)
                .arg(version),
        );
        assert!(out.ok, "TLS {version}: python3 failed: {}", out.stderr);
        let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
        assert_eq!(v["first"], false, "TLS {version}: {v}");
        assert_eq!(v["second"], true, "TLS {version}: not resumed: {v}");
        let body = v["body2"].as_str().unwrap_or_default();
        assert!(
            body.starts_with("HTTP/1.1 200") && body.contains(&s.alice.serial),
            "TLS {version}: {body}"
        );
    }
}

#[test]
fn curl_reuses_its_session_across_connections() {
    let s = setup("resume-curl");
    let resumed = || metric(&s, "gateway_tls_handshake_kinds_total{kind=\"resumed\"}");
    for version in ["--tlsv1.2", "--tlsv1.3"] {
        let before = resumed();
        // Three URLs, each on a new connection (HTTP/1.1, closed after each;
        // HTTP/2 would share one): the second and third resume the first's
        // session from curl's cache. `-v` says what happened when it fails.
        let url = format!("https://api.test:{}/curl", s.port);
        let out = gateway_tests::local::output(
            Command::new("curl")
                .args([
                    "-v",
                    "-sS",
                    "--http1.1",
                    "--max-time",
                    "10",
                    "-k",
                    version,
                    "--tls-max",
                ])
                .arg(&version[6..])
                .args(["--resolve", &format!("api.test:{}:127.0.0.1", s.port)])
                .arg("--cert")
                .arg(&s.alice.cert)
                .arg("--key")
                .arg(&s.alice.key)
                .args(["-H", "Connection: close", &url, &url, &url]),
        );
        assert!(out.ok, "{version}: {}", out.stderr);
        assert_eq!(
            out.stdout.matches(&s.alice.serial).count(),
            3,
            "{version}: {}",
            out.stdout
        );
        let after = resumed();
        assert!(
            after - before >= 2.0,
            "{version}: curl's connections resumed {} times\n{}",
            after - before,
            out.stderr
        );
    }
}

#[test]
fn a_session_offered_on_another_mtls_hostname_gets_a_full_handshake_and_is_refused() {
    let s = setup("resume-cross");
    for version in ["-tls1_2", "-tls1_3"] {
        // A session from a.test (corp CA) with alice, and one from open.test (no mTLS).
        for (from, cert) in [("a.test", Some(&s.alice)), ("open.test", None)] {
            let name = format!("{from}{version}.sess");
            let out = sess(&s, "-sess_out", &name);
            let run = s_client(&s, from, &args(version, &out), cert, "/");
            assert_eq!(run.status, "200", "{from} {version}: {}", run.out);
            let back = sess(&s, "-sess_in", &name);
            let run = s_client(&s, from, &args(version, &back), None, "/");
            assert!(run.reused, "{from} {version}: the control did not resume");
            // Offered on b.test (the managed CA only), without a certificate.
            let run = s_client(&s, "b.test", &args(version, &back), None, "/");
            assert!(
                !run.reused,
                "{from} {version}: resumed on b.test:\n{}",
                run.out
            );
            assert!(
                run.asked_cert,
                "{from} {version}: b.test's certificate was not asked:\n{}",
                run.out
            );
            assert_eq!(run.status, "403", "{from} {version}: {}", run.out);
        }
    }
    assert!(
        metric(
            &s,
            "gateway_tls_resumption_refused_total{reason=\"not_resumable\"}"
        ) >= 4.0,
        "{}",
        s.metrics()
    );
}

#[test]
fn a_certificate_revoked_after_its_session_began_is_refused_on_the_next_request() {
    let s = setup("resume-revoked");
    for version in ["-tls1_2", "-tls1_3"] {
        let name = format!("b{version}.sess");
        let run = s_client(
            &s,
            "b.test",
            &args(version, &sess(&s, "-sess_out", &name)),
            Some(&s.dave),
            "/",
        );
        assert_eq!(run.status, "200", "{version}: {}", run.out);
    }
    // Dave's certificate is revoked through the managed CA.
    let text = full_config(&s, &s.dave.serial, "\"corp\", \"managed\"", "1.2");
    reconfigure(&s, &text, || get(&s, "b.test", Some(&s.dave)) == 403);
    for version in ["-tls1_2", "-tls1_3"] {
        let name = format!("b{version}.sess");
        let run = s_client(
            &s,
            "b.test",
            &args(version, &sess(&s, "-sess_in", &name)),
            None,
            "/",
        );
        eprintln!("{version}: the revoked session resumed: {}", run.reused);
        assert_eq!(
            run.status, "403",
            "{version}: a revoked certificate's session was served:\n{}",
            run.out
        );
        assert!(run.out.contains("resume-needs-valid-cert"), "{}", run.out);
    }
}

#[test]
fn removing_a_ca_or_raising_the_minimum_ends_resumption() {
    let s = setup("resume-policy");
    // Dave (managed CA) on c.test, which trusts both CAs; alice on d.test (minimum 1.2).
    let run = s_client(
        &s,
        "c.test",
        &args("-tls1_3", &sess(&s, "-sess_out", "c.sess")),
        Some(&s.dave),
        "/",
    );
    assert_eq!(run.status, "200", "{}", run.out);
    let run = s_client(
        &s,
        "d.test",
        &args("-tls1_3", &sess(&s, "-sess_out", "d.sess")),
        None,
        "/",
    );
    assert_eq!(run.status, "200", "{}", run.out);
    let c_in = sess(&s, "-sess_in", "c.sess");
    let d_in = sess(&s, "-sess_in", "d.sess");
    assert!(s_client(&s, "c.test", &args("-tls1_3", &c_in), None, "/").reused);
    assert!(s_client(&s, "d.test", &args("-tls1_3", &d_in), None, "/").reused);
    // The managed CA is removed from c.test: a full handshake, dave's session refused.
    let text = full_config(&s, "", "\"corp\"", "1.2");
    reconfigure(&s, &text, || get(&s, "c.test", Some(&s.dave)) == 403);
    let run = s_client(&s, "c.test", &args("-tls1_3", &c_in), None, "/");
    assert!(
        !run.reused,
        "resumed after its CA was removed:\n{}",
        run.out
    );
    assert!(run.asked_cert, "{}", run.out);
    assert_eq!(run.status, "403", "{}", run.out);
    // The minimum of d.test is raised to 1.3: a full handshake (served).
    assert!(s_client(&s, "d.test", &args("-tls1_3", &d_in), None, "/").reused);
    let text = full_config(&s, "", "\"corp\"", "1.3");
    let tls12 = || s_client(&s, "d.test", &["-tls1_2"], None, "/").status;
    reconfigure(&s, &text, || tls12().is_empty());
    let run = s_client(&s, "d.test", &args("-tls1_3", &d_in), None, "/");
    assert!(
        !run.reused,
        "resumed after the minimum was raised:\n{}",
        run.out
    );
    assert_eq!(run.status, "200", "{}", run.out);
}

#[test]
fn a_hostname_with_resumption_off_resumes_nothing() {
    let s = setup("resume-off");
    let text = full_config(&s, "", "\"corp\", \"managed\"", "1.2")
        .replacen("[zone]\n", "[zone]\nsession_resumption = false\n", 1)
        .replacen(
            "name = \"a.test\"\n",
            "name = \"a.test\"\nsession_resumption = true\n",
            1,
        );
    // Applied when a TLS 1.3 connection to open.test gets no ticket to save.
    reconfigure(&s, &text, || {
        let _ = std::fs::remove_file(s.path("probe.sess"));
        let out = sess(&s, "-sess_out", "probe.sess");
        s_client(&s, "open.test", &args("-tls1_3", &out), None, "/").status == "200"
            && !s.path("probe.sess").exists()
    });
    for version in ["-tls1_2", "-tls1_3"] {
        // a.test keeps it on.
        let name = format!("on{version}.sess");
        s_client(
            &s,
            "a.test",
            &args(version, &sess(&s, "-sess_out", &name)),
            Some(&s.alice),
            "/",
        );
        let run = s_client(
            &s,
            "a.test",
            &args(version, &sess(&s, "-sess_in", &name)),
            None,
            "/",
        );
        assert!(
            run.reused,
            "{version}: a.test's own setting was not applied"
        );
        assert_eq!(run.status, "200");
        let name = format!("off{version}.sess");
        let run = s_client(
            &s,
            "open.test",
            &args(version, &sess(&s, "-sess_out", &name)),
            None,
            "/",
        );
        assert_eq!(run.status, "200", "{version}: {}", run.out);
        if !s.path(&name).exists() {
            // TLS 1.3 without a ticket: the client has no session to offer.
            assert_eq!(
                version, "-tls1_3",
                "a TLS 1.2 session (an ID) was not saved"
            );
            continue;
        }
        // TLS 1.2: the session ID is not resumed.
        let run = s_client(
            &s,
            "open.test",
            &args(version, &sess(&s, "-sess_in", &name)),
            None,
            "/",
        );
        assert!(!run.reused, "{version}: resumed with resumption off");
        assert_eq!(run.status, "200", "{version}: {}", run.out);
    }
    assert!(
        metric(
            &s,
            "gateway_tls_resumption_refused_total{reason=\"disabled\"}"
        ) >= 1.0
    );
}

#[test]
fn a_ticket_from_a_stopped_gateway_gets_a_full_handshake() {
    let mut s = setup("resume-restart");
    let run = s_client(
        &s,
        "a.test",
        &args("-tls1_3", &sess(&s, "-sess_out", "r.sess")),
        Some(&s.alice),
        "/",
    );
    assert_eq!(run.status, "200", "{}", run.out);
    // The same configuration, a new process: new ticket keys, never stored.
    let text = std::fs::read_to_string(s.path("gateway.toml")).unwrap();
    gateway_tests::child::signal_group(s.gateway.pid(), libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(200));
    s.gateway = gateway(GATEWAY, &s.dir.0, &text);
    let run = s_client(
        &s,
        "a.test",
        &args("-tls1_3", &sess(&s, "-sess_in", "r.sess")),
        None,
        "/",
    );
    assert!(!run.reused, "a ticket survived the restart:\n{}", run.out);
    assert!(run.asked_cert);
    assert_eq!(run.status, "403");
    assert!(
        metric(
            &s,
            "gateway_tls_resumption_refused_total{reason=\"unknown_ticket_key\"}"
        ) >= 1.0,
        "{}",
        s.metrics()
    );
}
