//! TLS session resumption: the `session_resumption` setting through the
//! admin API (store mode), and 0-RTT early data refused even from a client
//! that sends it.

use std::process::Command;

use gateway_tests::{
    control::StoreGateway,
    local::{TempDir, output},
    mtls::MtlsSetup,
    sessions::s_client,
};
use serde_json::{Value, json};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

/// `openssl s_client` arguments for TLS 1.3 with a session file.
fn tls13(flag: &str, file: &std::path::Path) -> [String; 3] {
    ["-tls1_3".into(), flag.into(), file.display().to_string()]
}

/// Rewrites an OpenSSL session file (PEM) so that it allows 16 KiB of early
/// data: field `[15] max_early_data` of OpenSSL's SSL_SESSION_ASN1, set or
/// inserted in tag order. What a client that sends 0-RTT anyway would do.
const ALLOW_EARLY_DATA: &str = r#"
import base64, sys
src, dst = sys.argv[1:3]
der = base64.b64decode("".join(l for l in open(src).read().splitlines() if not l.startswith("-----")))
def tlv(buf, i):
    length, j = buf[i + 1], i + 2
    if length & 0x80:
        n = length & 0x7F
        length, j = int.from_bytes(buf[j:j + n], "big"), j + n
    return buf[i], j, j + length
def enc_len(n):
    if n < 128:
        return bytes([n])
    b = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(b)]) + b
tag, start, end = tlv(der, 0)
assert tag == 0x30, "not a session"
kids, i = [], start
while i < end:
    t, _, e = tlv(der, i)
    kids.append((t, der[i:e]))
    i = e
kids = [k for k in kids if k[0] != 0xAF]
at = next((n for n, (t, _) in enumerate(kids) if 0xAF < t <= 0xBE), len(kids))
kids.insert(at, (0xAF, bytes([0xAF, 4, 2, 2, 0x40, 0])))
body = b"".join(w for _, w in kids)
out = base64.encodebytes(bytes([0x30]) + enc_len(len(body)) + body).decode()
open(dst, "w").write("-----BEGIN SSL SESSION PARAMETERS-----\n" + out + "-----END SSL SESSION PARAMETERS-----\n")
"#;

#[test]
fn early_data_is_refused() {
    let s = MtlsSetup::start(GATEWAY, "resume-0rtt", "");
    let open = |args: &[String], path: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        s_client(s.port, "open.test", &args, None, path)
    };
    let run = open(&tls13("-sess_out", &s.path("e.sess")), "/");
    assert_eq!(run.status, "200", "{}", run.out);
    // The ticket allows no early data.
    let printed = output(
        Command::new("openssl")
            .args(["sess_id", "-noout", "-text", "-in"])
            .arg(s.path("e.sess")),
    );
    assert!(
        printed.stdout.contains("Max Early Data: 0"),
        "{}{}",
        printed.stdout,
        printed.stderr
    );
    // Honest clients send none.
    let early = s.path("early.txt");
    std::fs::write(&early, "GET /early HTTP/1.1\r\nHost: open.test\r\n\r\n").unwrap();
    let with_early = |session: &str| {
        let mut args = tls13("-sess_in", &s.path(session)).to_vec();
        args.extend(["-early_data".into(), early.display().to_string()]);
        args
    };
    let run = open(&with_early("e.sess"), "/late");
    assert!(run.out.contains("Early data was not sent"), "{}", run.out);
    // A client whose session says 0-RTT is allowed sends it: rejected, never served.
    let forged = output(
        Command::new("python3")
            .args(["-c", ALLOW_EARLY_DATA])
            .arg(s.path("e.sess"))
            .arg(s.path("forged.sess")),
    );
    assert!(forged.ok, "{}", forged.stderr);
    let run = open(&with_early("forged.sess"), "/late");
    assert!(
        run.out.contains("Early data was rejected"),
        "the forged session sent no early data, or it was accepted:\n{}",
        run.out
    );
    assert!(
        !run.out.contains("\"path\": \"/early\""),
        "0-RTT data was served:\n{}",
        run.out
    );
    assert!(run.out.contains("\"path\": \"/late\""), "{}", run.out);
}

#[test]
fn the_setting_follows_the_admin_api_per_zone_and_per_hostname() {
    gateway_tests::require_root("the store-mode resumption test (run as CI does)");
    let dir = TempDir::new("resume-store");
    let gw = StoreGateway::start(GATEWAY.as_ref(), &dir.0.join("data"), None, &[]);
    let zone = gw.zone();
    let host = gw.ok(
        "POST",
        &format!("zones/{zone}/custom_hostnames"),
        Some(&json!({"hostname": "r.test"})),
    );
    let host_path = format!(
        "zones/{zone}/custom_hostnames/{}",
        host["id"].as_str().unwrap()
    );
    assert_eq!(
        host["ssl"]["settings"]["effective_session_resumption"],
        true
    );
    // Whether a fresh TLS 1.3 session on `sni` resumes.
    let resumes = |sni: &str, name: &str| {
        let file = dir.0.join(name).display().to_string();
        let _ = std::fs::remove_file(&file);
        s_client(
            gw.tls_port,
            sni,
            &["-tls1_3", "-sess_out", &file],
            None,
            "/",
        );
        dir.0.join(name).exists()
            && s_client(gw.tls_port, sni, &["-tls1_3", "-sess_in", &file], None, "/").reused
    };
    assert!(resumes("r.test", "on.sess"), "on by default");
    let setting = format!("zones/{zone}/settings/session_resumption");
    assert_eq!(gw.ok("GET", &setting, None)["value"], true);
    let off = json!({"value": false});
    assert_eq!(gw.ok("PATCH", &setting, Some(&off))["value"], false);
    assert!(
        !resumes("r.test", "zone-off.sess"),
        "the zone's off applies"
    );
    // The hostname's own setting overrides the zone's; null goes back to it.
    let own = |value: Value| {
        let body = json!({"ssl": {"settings": {"session_resumption": value}}});
        gw.ok("PATCH", &host_path, Some(&body))["ssl"]["settings"].clone()
    };
    let settings = own(true.into());
    assert_eq!(settings["effective_session_resumption"], true, "{settings}");
    assert!(
        resumes("r.test", "host-on.sess"),
        "the hostname's own on applies"
    );
    assert!(
        !resumes("localhost", "default.sess"),
        "the zone's off still applies elsewhere"
    );
    let settings = own(Value::Null);
    assert_eq!(settings["session_resumption"], Value::Null);
    assert_eq!(
        settings["effective_session_resumption"], false,
        "{settings}"
    );
    assert!(!resumes("r.test", "back.sess"));
}
