//! The terminator with real clients: client certificates of every kind through
//! `curl` and `openssl s_client`, what the origin receives, and the interim
//! "certificate required" rule.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use gateway_tests::{
    local::curl,
    mtls::MtlsSetup,
    pki::{Issued, x509_field},
};
use serde_json::Value;

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

fn with_cert(c: &Issued) -> Vec<String> {
    vec![
        "--cert".into(),
        c.cert.display().to_string(),
        "--key".into(),
        c.key.display().to_string(),
    ]
}

/// What the origin received, via the echo origin's JSON.
fn origin_saw(s: &MtlsSetup, host: &str, cert: Option<&Issued>, extra: &[&str]) -> (u16, Value) {
    let mut args: Vec<String> = cert.map(with_cert).unwrap_or_default();
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, body) = curl(host, s.port, "/whoami?x=1", s.ca(), &args);
    (
        code,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

fn header<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v["headers"][name][0].as_str()
}

#[test]
fn every_kind_of_client_certificate_is_recorded_and_forwarded() {
    let s = MtlsSetup::start(GATEWAY, "mtls-kinds", "");
    let cases: [(&str, Option<&Issued>, &str, &str, &str); 7] = [
        ("valid (corp CA)", Some(&s.alice), "true", "true", "false"),
        ("valid (managed CA)", Some(&s.dave), "true", "true", "false"),
        (
            "unassociated CA",
            Some(&s.mallory),
            "true",
            "false",
            "false",
        ),
        ("expired", Some(&s.old), "true", "false", "false"),
        ("revoked by CRL", Some(&s.bob), "true", "true", "true"),
        (
            "revoked through the managed CA",
            Some(&s.carol),
            "true",
            "true",
            "true",
        ),
        ("none", None, "false", "false", "false"),
    ];
    for (what, cert, presented, verified, revoked) in cases {
        let (code, seen) = origin_saw(&s, "api.test", cert, &[]);
        assert_eq!(code, 200, "{what}: {seen}");
        assert_eq!(
            header(&seen, "cf-cert-presented"),
            Some(presented),
            "{what}: {seen}"
        );
        assert_eq!(
            header(&seen, "cf-cert-verified"),
            Some(verified),
            "{what}: {seen}"
        );
        assert_eq!(
            header(&seen, "cf-cert-revoked"),
            Some(revoked),
            "{what}: {seen}"
        );
        assert_eq!(header(&seen, "x-forwarded-proto"), Some("https"));
        assert_eq!(header(&seen, "x-forwarded-for"), Some("127.0.0.1"));
        assert_eq!(seen["path"], "/whoami?x=1");
        if let Some(c) = cert {
            assert_eq!(
                header(&seen, "cf-cert-serial"),
                Some(c.serial.as_str()),
                "{what}"
            );
        } else {
            assert_eq!(header(&seen, "cf-client-cert-der-base64"), None);
        }
    }

    // Every format, checked against what `openssl x509` says of the certificate.
    let (_, seen) = origin_saw(&s, "api.test", Some(&s.alice), &[]);
    let fp = |alg: &str| {
        x509_field(&s.alice.cert, &["-fingerprint", alg])
            .replace(':', "")
            .to_ascii_lowercase()
    };
    assert_eq!(
        header(&seen, "cf-cert-fingerprint-sha256").unwrap(),
        fp("-sha256").as_str()
    );
    assert_eq!(
        header(&seen, "cf-client-cert-sha256").unwrap(),
        fp("-sha256").as_str()
    );
    assert_eq!(
        header(&seen, "cf-cert-fingerprint-sha1").unwrap(),
        fp("-sha1").as_str()
    );
    assert_eq!(
        header(&seen, "cf-cert-not-before").unwrap(),
        x509_field(&s.alice.cert, &["-startdate"])
    );
    assert_eq!(
        header(&seen, "cf-cert-not-after").unwrap(),
        x509_field(&s.alice.cert, &["-enddate"])
    );
    assert_eq!(
        header(&seen, "cf-cert-subject-dn-rfc2253").unwrap(),
        r"CN=alice,OU=Clients,O=Example\, Inc.,C=US"
    );
    assert_eq!(
        header(&seen, "cf-cert-subject-dn").unwrap(),
        "CN=alice,OU=Clients,O=Example, Inc.,C=US"
    );
    assert_eq!(
        header(&seen, "cf-cert-subject-dn-legacy").unwrap(),
        "/C=US/O=Example, Inc./OU=Clients/CN=alice"
    );
    assert_eq!(
        header(&seen, "cf-cert-issuer-dn-rfc2253").unwrap(),
        "CN=corp,O=Gateway Tests,C=US"
    );
    assert_eq!(
        header(&seen, "cf-cert-issuer-dn-legacy").unwrap(),
        "/C=US/O=Gateway Tests/CN=corp"
    );
    assert_eq!(
        header(&seen, "cf-cert-issuer-serial").unwrap(),
        x509_field(&s.corp.cert, &["-serial"])
    );
    let ski = |cert| {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-ext", "subjectKeyIdentifier", "-in"])
            .arg(cert)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .replace(':', "")
    };
    assert_eq!(header(&seen, "cf-cert-ski").unwrap(), ski(&s.alice.cert));
    assert_eq!(
        header(&seen, "cf-cert-issuer-ski").unwrap(),
        ski(&s.corp.cert)
    );
    let der = Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(&s.alice.cert)
        .output()
        .unwrap()
        .stdout;
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    assert_eq!(
        header(&seen, "cf-client-cert-der-base64").unwrap(),
        b64.as_str()
    );

    // RFC 9440 on admin.test.
    let (code, seen) = origin_saw(&s, "admin.test", Some(&s.alice), &[]);
    assert_eq!(code, 200);
    assert_eq!(header(&seen, "client-cert").unwrap(), format!(":{b64}:"));
    assert_eq!(
        header(&seen, "cf-cert-verified"),
        None,
        "only the configured forwarding form"
    );
}

#[test]
fn a_required_certificate_must_be_valid_and_unrevoked() {
    let s = MtlsSetup::start(GATEWAY, "mtls-required", "");
    let cases: [(&str, Option<&Issued>, u16); 7] = [
        ("valid (corp CA)", Some(&s.alice), 200),
        ("valid (managed CA)", Some(&s.dave), 200),
        ("unassociated CA", Some(&s.mallory), 403),
        ("expired", Some(&s.old), 403),
        ("revoked by CRL", Some(&s.bob), 403),
        ("revoked through the managed CA", Some(&s.carol), 403),
        ("none", None, 403),
    ];
    for (what, cert, want) in cases {
        let (code, body) = origin_saw(&s, "admin.test", cert, &[]);
        assert_eq!(code, want, "{what} with curl: {body}");
        let got = s_client_get(&s, "admin.test", cert);
        assert!(
            got.starts_with(&format!("HTTP/1.1 {want}")),
            "{what} with s_client: {got}"
        );
    }
    let metrics = s.metrics();
    for status in ["verified", "invalid", "revoked", "none"] {
        assert!(
            metrics.contains(&format!(
                "gateway_tls_client_certificates_total{{status=\"{status}\"}}"
            )),
            "{status} missing from:\n{metrics}"
        );
    }
    assert!(metrics.contains("gateway_http_requests_total{host=\"admin.test\",status=\"403\"}"));
    assert!(metrics.contains("gateway_tls_handshakes_total{result=\"ok\",version=\"TLSv1.3\"}"));
}

/// `openssl s_client` sending one GET; returns the response from its status line on.
pub fn s_client_get(s: &MtlsSetup, host: &str, cert: Option<&Issued>) -> String {
    let mut cmd = Command::new("timeout");
    cmd.args([
        "10",
        "openssl",
        "s_client",
        "-quiet",
        "-ign_eof",
        "-connect",
        &format!("127.0.0.1:{}", s.port),
    ])
    .args(["-servername", host, "-CAfile"])
    .arg(s.ca());
    if let Some(c) = cert {
        cmd.arg("-cert").arg(&c.cert).arg("-key").arg(&c.key);
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    match text.find("HTTP/1.1") {
        Some(i) => text[i..].to_string(),
        None => format!(
            "no response; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}
