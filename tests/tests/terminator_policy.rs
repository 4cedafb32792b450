//! The terminator's per-hostname TLS policy and the ways around it an attacker
//! would try: old versions and ciphers, no SNI, SNI ≠ Host, resumption across
//! hostnames, spoofed certificate headers, slow and half-open clients, a dead
//! origin; and CRL changes taking effect live.

use std::{
    io::{BufRead, Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use gateway_tests::{
    local::{curl, output},
    mtls::MtlsSetup,
};
use serde_json::Value;

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

/// `openssl s_client` handshake only (stdin closed at once); `(ok, output)`.
fn handshake(s: &MtlsSetup, sni: &str, args: &[&str]) -> (bool, String) {
    let out = output(
        Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &format!("127.0.0.1:{}", s.port),
                "-servername",
                sni,
            ])
            .args(["-cipher", "ALL:@SECLEVEL=0"])
            .args(args),
    );
    (
        out.ok && out.stdout.contains("Cipher is") && !out.stdout.contains("Cipher is (NONE)"),
        format!("{}{}", out.stdout, out.stderr),
    )
}

#[test]
fn minimum_versions_and_ciphers_are_per_hostname() {
    let s = MtlsSetup::start(GATEWAY, "tls-policy", "");
    let cases: [(&str, &[&str], bool); 9] = [
        ("open.test", &["-tls1_2"], true),
        ("open.test", &["-tls1_3"], true),
        ("open.test", &["-tls1_1"], false),
        ("open.test", &["-tls1"], false),
        ("strict.test", &["-tls1_2"], false),
        ("strict.test", &["-tls1_3"], true),
        (
            "ciphers.test",
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"],
            false,
        ),
        (
            "ciphers.test",
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"],
            true,
        ),
        // Cipher restrictions govern TLS 1.2 and below only.
        ("ciphers.test", &["-tls1_3"], true),
    ];
    for (sni, args, ok) in cases {
        let (got, out) = handshake(&s, sni, args);
        assert_eq!(got, ok, "{sni} {args:?}:\n{out}");
    }
    let metrics = s.metrics();
    assert!(
        metrics.contains("gateway_tls_handshakes_total{result=\"failed\",version=\"none\"}"),
        "{metrics}"
    );
}

#[test]
fn requests_must_match_the_sni_and_cannot_spoof_certificate_headers() {
    let s = MtlsSetup::start(GATEWAY, "tls-bypass", "");
    // No SNI at all (an IP literal): the zone's default policy, no hostname.
    let (code, body) = curl(
        "127.0.0.1",
        s.port,
        "/",
        s.ca(),
        &["-k", "-H", "Host: admin.test"],
    );
    assert_eq!(code, 421, "{body}");
    // SNI of an open hostname, Host of an mTLS one.
    let (code, body) = curl(
        "open.test",
        s.port,
        "/",
        s.ca(),
        &["-H", "Host: admin.test"],
    );
    assert_eq!(code, 421, "{body}");
    assert!(body.contains("open a new connection"), "{body}");
    // A request target, or a second Host header, naming another host than the
    // one checked: refused outright.
    for request in [
        "GET https://open.test/ HTTP/1.1\r\nHost: admin.test\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: open.test\r\nHost: admin.test\r\nConnection: close\r\n\r\n",
    ] {
        let status = raw_request(&s, "open.test", request);
        assert!(status.starts_with("HTTP/1.1 400"), "{request:?}: {status}");
    }
    // Host with a port and in upper case is the same host.
    let (code, _) = curl(
        "open.test",
        s.port,
        "/",
        s.ca(),
        &["-H", "Host: OPEN.test:443"],
    );
    assert_eq!(code, 200);
    // Forged certificate headers never reach the origin.
    let forged = [
        "Cf-Client-Cert-Sha256: forged",
        "Cf-Client-Cert-Der-Base64: Zm9yZ2Vk",
        "cf-cert-verified: true",
        "cf-cert-presented: true",
        "Client-Cert: :Zm9yZ2Vk:",
        "Client-Cert-Chain: :Zm9yZ2Vk:",
    ];
    let mut args = Vec::new();
    for h in forged {
        args.extend(["-H", h]);
    }
    for host in ["api.test", "admin.test", "open.test"] {
        let (code, body) = curl(host, s.port, "/", s.ca(), &args);
        if host == "admin.test" {
            assert_eq!(
                code, 403,
                "forged headers do not satisfy the requirement: {body}"
            );
            continue;
        }
        assert_eq!(code, 200, "{body}");
        let seen: Value = serde_json::from_str(&body).unwrap();
        let headers = seen["headers"].as_object().unwrap();
        assert!(
            !headers.contains_key("cf-client-cert-sha256"),
            "{host}: {seen}"
        );
        assert!(
            !headers.contains_key("cf-client-cert-der-base64"),
            "{host}: {seen}"
        );
        assert!(
            !headers.contains_key("client-cert") && !headers.contains_key("client-cert-chain"),
            "{host}: {seen}"
        );
        let verified = headers
            .get("cf-cert-verified")
            .map(|v| v[0].as_str().unwrap());
        assert_ne!(verified, Some("true"), "{host}: {seen}");
    }
}

/// Sends `request` as is over TLS to `sni`; returns the status line.
fn raw_request(s: &MtlsSetup, sni: &str, request: &str) -> String {
    let out = output(Command::new("python3").arg("-c").arg(format!(
        "import socket,ssl,sys\n\
         c=ssl.create_default_context(cafile='{ca}')\n\
         t=c.wrap_socket(socket.create_connection(('127.0.0.1',{port})),server_hostname='{sni}')\n\
         t.sendall({request:?}.encode())\n\
         print(t.recv(200).decode().splitlines()[0])\n",
        ca = s.ca().display(),
        port = s.port,
    )));
    format!("{}{}", out.stdout, out.stderr)
}

/// Runs `s_client` with a session file; returns whether the session was reused
/// and the HTTP response to a GET for `sni`.
fn resume(s: &MtlsSetup, sni: &str, version: &str, sess: &str, cert: bool) -> (bool, String) {
    let path = s.path(sess);
    let mut cmd = Command::new("timeout");
    cmd.args([
        "10",
        "openssl",
        "s_client",
        "-ign_eof",
        "-connect",
        &format!("127.0.0.1:{}", s.port),
    ])
    .args(["-servername", sni, version]);
    if path.exists() {
        cmd.arg("-sess_in").arg(&path);
    } else {
        cmd.arg("-sess_out").arg(&path);
    }
    if cert {
        cmd.arg("-cert")
            .arg(&s.alice.cert)
            .arg("-key")
            .arg(&s.alice.key);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: {sni}\r\nConnection: close\r\n\r\n");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.as_bytes())
        .unwrap();
    let out = String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned();
    let reused = out.contains("Reused, TLS");
    let response = out
        .find("HTTP/1.1")
        .map(|i| out[i..i + 12].to_string())
        .unwrap_or_default();
    (reused, response)
}

#[test]
fn sessions_never_resume_across_hostnames_and_carry_client_auth() {
    let s = MtlsSetup::start(GATEWAY, "tls-resume", "");
    for v in ["-tls1_2", "-tls1_3"] {
        let sess = format!("open{v}.sess");
        // The control: a session resumes on its own hostname.
        let (reused, response) = resume(&s, "open.test", v, &sess, false);
        assert!(
            !reused && response.contains("200"),
            "{v}: first connection: {response}"
        );
        let (reused, response) = resume(&s, "open.test", v, &sess, false);
        assert!(reused, "{v}: the session resumes on the same hostname");
        assert!(response.contains("200"));
        // The same session offered to the mTLS hostname: a full handshake, no certificate, refused.
        let (reused, response) = resume(&s, "admin.test", v, &sess, false);
        assert!(!reused, "{v}: a session of open.test resumed on admin.test");
        assert!(response.contains("403"), "{v}: {response}");
        // A verified client's session on admin.test resumes, and carries the
        // client certificate it was verified with (see tests/tests/resumption.rs).
        let sess = format!("admin{v}.sess");
        let (_, response) = resume(&s, "admin.test", v, &sess, true);
        assert!(response.contains("200"), "{v}: {response}");
        let (reused, response) = resume(&s, "admin.test", v, &sess, false);
        assert!(reused, "{v}: an mTLS session was not resumed");
        assert!(
            response.contains("200"),
            "{v}: resumption lost the client auth: {response}"
        );
    }
}

#[test]
fn a_dead_origin_answers_502_at_once() {
    let s = MtlsSetup::start(GATEWAY, "tls-origin", "");
    let started = Instant::now();
    let (code, body) = curl("down.test", s.port, "/", s.ca(), &[]);
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("unreachable"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn slow_and_half_open_clients_cannot_exhaust_the_terminator() {
    let s = MtlsSetup::start(
        GATEWAY,
        "tls-slow",
        "max_handshakes = 2\nhandshake_timeout_ms = 1500\nheader_timeout_ms = 1500",
    );
    let addr = format!("127.0.0.1:{}", s.port);
    // Half-open: connections that never send a byte.
    let idle: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    // A client that sends part of a ClientHello and stalls.
    let mut stalled = TcpStream::connect(&addr).unwrap();
    stalled.write_all(&[22, 3, 1, 0, 200, 1, 0]).unwrap();
    // Working clients still get through at once.
    let started = Instant::now();
    for _ in 0..3 {
        let (code, body) = curl("open.test", s.port, "/", s.ca(), &[]);
        assert_eq!(code, 200, "{body}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    // And the idle ones are closed by the handshake timeout.
    for mut conn in idle.into_iter().take(5).chain([stalled]) {
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let n = conn.read(&mut buf).unwrap_or(usize::MAX);
        assert!(
            n == 0 || n < 64,
            "connection not closed by the server (read {n})"
        );
    }
    // Slowloris over TLS: headers that never finish are cut off.
    let out = output(
        Command::new("python3").arg("-c").arg(format!(
            "import socket,ssl,time\n\
             c=ssl.create_default_context(cafile='{ca}')\n\
             s=c.wrap_socket(socket.create_connection(('127.0.0.1',{port})),server_hostname='open.test')\n\
             s.sendall(b'GET / HTTP/1.1\\r\\nHost: open.test\\r\\nX-a: 1\\r\\n')\n\
             t=time.time()\n\
             try:\n  d=s.recv(100)\nexcept Exception as e:\n  d=b''\n\
             print(round(time.time()-t,1), d[:12])\n",
            ca = s.ca().display(),
            port = s.port
        )),
    );
    let waited: f64 = out
        .stdout
        .split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or(99.0);
    assert!(
        waited < 4.0,
        "a half-sent request held the connection for {waited} s: {out:?}"
    );
    assert!(
        s.metrics()
            .contains("gateway_tls_handshakes_total{result=\"timeout\",version=\"none\"}")
    );
}

#[test]
fn a_crl_replaced_on_disk_applies_without_restart_or_dropped_connections() {
    let mut s = MtlsSetup::start(GATEWAY, "tls-crl", "");
    let pid = s.gateway.pid();
    let cert_args = |c: &gateway_tests::pki::Issued| {
        vec![
            "--cert".to_string(),
            c.cert.display().to_string(),
            "--key".into(),
            c.key.display().to_string(),
        ]
    };
    let args = cert_args(&s.alice);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(curl("admin.test", s.port, "/", s.ca(), &args).0, 200);
    // A client holding a keep-alive connection across the change.
    let go = s.path("go");
    let mut held = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import http.client,ssl,os,time\n\
             c=ssl.create_default_context(cafile='{ca}')\n\
             c.load_cert_chain('{cert}','{key}')\n\
             h=http.client.HTTPSConnection('admin.test',{port},context=c)\n\
             h.sock=None\n\
             import socket\n\
             raw=socket.create_connection(('127.0.0.1',{port}))\n\
             h.sock=c.wrap_socket(raw,server_hostname='admin.test')\n\
             h.request('GET','/');r=h.getresponse();r.read();print(r.status,flush=True)\n\
             t=time.time()\n\
             while not os.path.exists('{go}') and time.time()-t<30: time.sleep(0.05)\n\
             h.request('GET','/');r=h.getresponse();r.read();print(r.status,flush=True)\n",
            ca = s.ca().display(),
            cert = s.alice.cert.display(),
            key = s.alice.key.display(),
            port = s.port,
            go = go.display()
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Its first request is answered before anything changes.
    let mut lines = std::io::BufReader::new(held.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert_eq!(first, "200", "first request on the held connection");
    // Revoke alice and publish the CRL (DER this time) over the old file.
    s.corp.revoke(&s.alice);
    s.corp.crl(&s.path("corp.crl"), true);
    let deadline = Instant::now() + Duration::from_secs(10);
    while curl("admin.test", s.port, "/", s.ca(), &args).0 != 403 {
        assert!(
            Instant::now() < deadline,
            "the new CRL never applied:\n{}",
            s.gateway.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(&go, "").unwrap();
    let second = lines.next().unwrap().unwrap();
    held.wait().unwrap();
    assert_eq!(
        [first.as_str(), second.as_str()],
        ["200", "403"],
        "the held connection stays open, and the revocation applies to its next request"
    );
    assert!(s.gateway.running() && s.gateway.pid() == pid, "no restart");
    // A CRL that does not verify is refused and the previous set stays.
    std::fs::write(
        s.path("corp.crl"),
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        s.gateway
            .log()
            .contains("keeping the previous configuration"),
        "{}",
        s.gateway.log()
    );
    assert_eq!(curl("admin.test", s.port, "/", s.ca(), &args).0, 403);
    let dave = cert_args(&s.dave);
    let dave: Vec<&str> = dave.iter().map(String::as_str).collect();
    assert_eq!(curl("admin.test", s.port, "/", s.ca(), &dave).0, 200);
}

#[test]
fn a_keep_alive_connection_follows_an_origin_change_from_its_next_request() {
    let s = MtlsSetup::start(GATEWAY, "tls-origin-change", "");
    let go = s.path("go");
    let mut held = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import http.client,ssl,os,socket,time\n\
             c=ssl.create_default_context(cafile='{ca}')\n\
             h=http.client.HTTPSConnection('open.test',{port},context=c)\n\
             h.sock=c.wrap_socket(socket.create_connection(('127.0.0.1',{port})),server_hostname='open.test')\n\
             h.request('GET','/');r=h.getresponse();r.read();print(r.status,flush=True)\n\
             t=time.time()\n\
             while not os.path.exists('{go}') and time.time()-t<30: time.sleep(0.05)\n\
             h.request('GET','/');r=h.getresponse();b=r.read();print(r.status,b[:80],flush=True)\n",
            ca = s.ca().display(),
            port = s.port,
            go = go.display()
        ))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(held.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "200", "before the change");
    // open.test now points at a port where nothing listens.
    let dead = gateway_tests::local::free_port();
    let text = gateway_tests::mtls::config(s.ports, &s.carol.serial, "").replace(
        &format!(
            "name = \"open.test\"\norigin = \"http://127.0.0.1:{}\"",
            s.ports.origin
        ),
        &format!("name = \"open.test\"\norigin = \"http://127.0.0.1:{dead}\""),
    );
    assert!(
        text.contains(&format!(":{dead}\"")),
        "the origin line was found"
    );
    s.write_config(&text);
    let deadline = Instant::now() + Duration::from_secs(10);
    while curl("open.test", s.port, "/", s.ca(), &[]).0 != 502 {
        assert!(Instant::now() < deadline, "the change never applied");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(&go, "").unwrap();
    let second = lines.next().unwrap().unwrap();
    held.wait().unwrap();
    assert!(
        second.starts_with("502") && second.contains(&dead.to_string()),
        "the held connection's next request goes to the new origin: {second}"
    );
}
