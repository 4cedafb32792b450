//! The handshake log with real clients (openssl s_client, curl, a raw
//! socket): one event per failed handshake, and per handshake completed with
//! no or an unknown SNI or an unacceptable client certificate, each with its
//! reason, the peer, the SNI and the highest version offered.

use std::{io::Write, net::TcpStream, process::Command};

use gateway::hello::ClientHello;
use gateway_tests::{
    local::{Output, curl, output},
    logs::{the_line, wait_lines},
    mtls::MtlsSetup,
    pki::{Issued, new_p256_request},
};
use serde_json::Value;

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

const CONFIG: &str = "handshake_timeout_ms = 1500\n\n[log.handshake]\noutput = \"handshake.log\"\n";

/// Sends Python's ClientHello for open.test, then waits past the handshake timeout.
const STALLED_HELLO: &str = r#"
import socket, ssl, sys, time
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(incoming, outgoing, server_hostname="open.test")
try:
    tls.do_handshake()
except ssl.SSLWantReadError:
    pass
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
sock.sendall(outgoing.read())
time.sleep(2.5)
"#;

fn s_client(s: &MtlsSetup, args: &[&str]) -> Output {
    output(
        Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{}", s.port)])
            .args(args),
    )
}

/// A client certificate from `corp` whose EKU is serverAuth only.
fn server_eku_cert(s: &MtlsSetup) -> Issued {
    let ca_dir = s.corp.cert.parent().unwrap();
    let (key, csr, cert) = (s.path("eku.key"), s.path("eku.csr"), s.path("eku.pem"));
    let made = output(
        new_p256_request(None)
            .args(["-subj", "/CN=wrong-eku"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr),
    );
    assert!(made.ok, "{}", made.stderr);
    let ext = s.path("eku.ext");
    std::fs::write(
        &ext,
        "extendedKeyUsage = serverAuth\nauthorityKeyIdentifier = keyid\n",
    )
    .unwrap();
    let signed = output(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "30", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&s.corp.cert)
            .arg("-CAkey")
            .arg(ca_dir.join("ca.key"))
            .args(["-set_serial", "0x7777", "-extfile"])
            .arg(&ext)
            .arg("-out")
            .arg(&cert),
    );
    assert!(signed.ok, "{}", signed.stderr);
    Issued {
        cert,
        key,
        serial: "7777".into(),
    }
}

/// Checks `fields` of the one event with this reason.
fn event<'a>(events: &'a [Value], reason: &str, fields: &[(&str, Value)]) -> &'a Value {
    let e = the_line(events, "ClientTlsStatus", reason);
    for (name, want) in fields {
        assert_eq!(&e[*name], want, "{reason}: {name} in {e:#}");
    }
    assert_eq!(e["ClientIP"], "127.0.0.1", "{e}");
    assert!(e["ClientPort"].as_u64().unwrap() > 0, "{e}");
    e
}

fn failed_handshakes(s: &MtlsSetup) {
    let out = s_client(s, &["-servername", "strict.test", "-tls1_2"]);
    assert!(!out.ok, "TLS 1.2 to a TLS 1.3 hostname: {}", out.stdout);
    let out = s_client(
        s,
        &[
            "-servername",
            "ciphers.test",
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES128-GCM-SHA256",
        ],
    );
    assert!(
        !out.ok,
        "a cipher the hostname does not allow: {}",
        out.stdout
    );
    let plain = output(Command::new("curl").args([
        "-sS",
        "--max-time",
        "5",
        &format!("http://127.0.0.1:{}/", s.port),
    ]));
    assert!(!plain.ok, "plain HTTP to the TLS port");
    // curl refuses the gateway's certificate (it does not trust it) and says
    // so with an alert (TLS 1.2: in the clear, so the gateway reads it).
    let untrusted = output(Command::new("curl").args([
        "-sS",
        "--max-time",
        "5",
        "--tls-max",
        "1.2",
        "--resolve",
        &format!("open.test:{}:127.0.0.1", s.port),
        &format!("https://open.test:{}/", s.port),
    ]));
    assert!(!untrusted.ok, "curl without the gateway's CA");
    // Half a hello, then silence past the handshake timeout.
    let mut tcp = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    let hello = ClientHello::modern("open.test").record();
    tcp.write_all(&hello[..hello.len() / 2]).unwrap();
    // Python's real hello, whole, then silence: the handshake times out.
    let stalled = output(Command::new("python3").args(["-c", STALLED_HELLO, &s.port.to_string()]));
    assert!(stalled.ok, "{}", stalled.stderr);
}

fn completed_handshakes(s: &MtlsSetup) -> Issued {
    let out = s_client(s, &["-noservername"]);
    assert!(
        out.stdout.contains("BEGIN CERTIFICATE") || out.stdout.contains("Server certificate"),
        "{}",
        out.stderr
    );
    let out = s_client(s, &["-servername", "nowhere.test"]);
    assert!(out.stdout.contains("Server certificate"), "{}", out.stderr);
    let future = s
        .corp
        .client("future", Some(("20990101000000Z", "20991231000000Z")));
    let eku = server_eku_cert(s);
    for cert in [
        None,
        Some(&s.mallory),
        Some(&s.old),
        Some(&s.bob),
        Some(&future),
        Some(&eku),
    ] {
        let args = cert.map(Issued::curl_args).unwrap_or_default();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, body) = curl("api.test", s.port, "/", s.ca(), &args);
        assert_eq!(code, 200, "api.test lets every certificate through: {body}");
    }
    future
}

#[test]
fn every_handshake_failure_reason_is_logged() {
    let s = MtlsSetup::start(GATEWAY, "handshake-log", CONFIG);
    failed_handshakes(&s);
    let future = completed_handshakes(&s);
    let events = wait_lines(&s.path("handshake.log"), 14);
    let no = || Value::from(false);
    event(
        &events,
        "version_below_minimum",
        &[
            ("ClientTlsClientHelloServerName", "strict.test".into()),
            ("ClientTlsOfferedProtocol", "TLSv1.2".into()),
            ("Hostname", "strict.test".into()),
            ("HandshakeCompleted", no()),
        ],
    );
    event(
        &events,
        "cipher_below_policy",
        &[
            ("ClientTlsClientHelloServerName", "ciphers.test".into()),
            ("ClientTlsOfferedProtocol", "TLSv1.2".into()),
            ("HandshakeCompleted", no()),
        ],
    );
    event(
        &events,
        "not_tls",
        &[("ClientTlsOfferedProtocol", "".into())],
    );
    event(
        &events,
        "alert_received",
        &[
            ("ClientTlsClientHelloServerName", "open.test".into()),
            ("ClientTlsAlert", "unknown_ca".into()),
            ("ClientTlsOfferedProtocol", "TLSv1.2".into()),
        ],
    );
    event(&events, "hello_incomplete", &[("HandshakeCompleted", no())]);
    event(
        &events,
        "handshake_timeout",
        &[("HandshakeCompleted", no())],
    );
    let yes = || Value::from(true);
    event(
        &events,
        "no_sni",
        &[
            ("ClientTlsClientHelloServerName", "".into()),
            ("HandshakeCompleted", yes()),
            ("Hostname", "".into()),
        ],
    );
    event(
        &events,
        "unknown_sni",
        &[
            ("ClientTlsClientHelloServerName", "nowhere.test".into()),
            ("HandshakeCompleted", yes()),
        ],
    );
    for (reason, serial) in [
        ("client_cert_missing", ""),
        ("client_cert_unknown_ca", s.mallory.serial.as_str()),
        ("client_cert_expired", s.old.serial.as_str()),
        ("client_cert_revoked", s.bob.serial.as_str()),
        ("client_cert_not_yet_valid", future.serial.as_str()),
        ("client_cert_wrong_eku", "7777"),
    ] {
        event(
            &events,
            reason,
            &[
                ("ClientTlsClientHelloServerName", "api.test".into()),
                ("Hostname", "api.test".into()),
                ("HandshakeCompleted", yes()),
                ("ClientTlsProtocol", "TLSv1.3".into()),
                ("ClientTlsOfferedProtocol", "TLSv1.3".into()),
                ("ClientMTLSAuthCertSerial", serial.into()),
            ],
        );
    }
    assert_eq!(events.len(), 14, "no other event: {events:#?}");
}
