//! The control plane end to end, from an empty data directory: hostname →
//! bring-your-own CA → association → the documented mTLS rule → real curl with
//! and without a client certificate → revocation → blocked. And a crash test:
//! `kill -9` during a stream of writes loses nothing that was acknowledged.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use gateway_tests::{
    control::StoreGateway,
    local::{TempDir, curl, free_port, origin},
    pki::{Issued, TestCa},
};
use serde_json::{Value, json};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

fn cert_args(c: &Issued) -> Vec<String> {
    vec![
        "--cert".into(),
        c.cert.display().to_string(),
        "--key".into(),
        c.key.display().to_string(),
    ]
}

fn status(gw: &StoreGateway, host: &str, client: Option<&[String]>) -> (u16, String) {
    let args: Vec<&str> = client
        .unwrap_or_default()
        .iter()
        .map(String::as_str)
        .collect();
    curl(host, gw.tls_port, "/api/v1", &gw.server_ca(), &args)
}

#[test]
fn from_an_empty_data_directory_to_a_blocked_revoked_client() {
    let dir = TempDir::new("control-e2e");
    let origin_port = free_port();
    let _origin = origin(&dir.0, origin_port);
    let data = dir.0.join("data");
    let gw = StoreGateway::start(GATEWAY.as_ref(), &data, None, &[]);
    let zone = gw.zone();
    let account = gw.account();

    // The first run serves its default hostname with a certificate from its server CA.
    let (code, _) = status(&gw, "localhost", None);
    assert_ne!(code, 0, "the default hostname does not answer over TLS");

    // 1. Add the hostname.
    let host = gw.ok(
        "POST",
        &format!("zones/{zone}/custom_hostnames"),
        Some(&json!({
            "hostname": "api.e2e.test",
            "custom_origin_server": format!("http://127.0.0.1:{origin_port}"),
            "mtls": {"forward_client_cert": "cloudflare"},
        })),
    );
    assert_eq!(host["mtls"]["enabled"], false);
    let (code, body) = status(&gw, "api.e2e.test", None);
    assert_eq!(code, 200, "{body}");

    // 2. Upload a CA, with its CRL as a file source.
    let corp = TestCa::new(&dir.0.join("corp"), "Corp Clients");
    let alice = corp.client("alice", None);
    let crl = dir.0.join("corp.crl");
    corp.crl(&crl, false);
    let ca = gw.ok(
        "POST",
        &format!("accounts/{account}/mtls_certificates"),
        Some(&json!({
            "ca": true,
            "name": "corp",
            "certificates": std::fs::read_to_string(&corp.cert).unwrap(),
            "crl_source": crl.display().to_string(),
        })),
    );
    let ca_id = ca["id"].as_str().unwrap().to_string();

    // 3. Associate it with the hostname: mTLS is on for it.
    let assoc = gw.ok(
        "PUT",
        &format!("zones/{zone}/certificate_authorities/hostname_associations"),
        Some(&json!({"hostnames": ["api.e2e.test"], "mtls_certificate_id": ca_id})),
    );
    assert_eq!(assoc["hostnames"], json!(["api.e2e.test"]));

    // 4. The documented rule (and revoked certificates too).
    gw.ok(
        "POST",
        &format!("zones/{zone}/rulesets/phases/http_request_firewall_custom/entrypoint/rules"),
        Some(&json!({
            "expression": "(http.host in {\"api.e2e.test\"} and (not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked))",
            "action": "block",
            "description": "mTLS required",
        })),
    );

    // 5. Real curl: without a certificate blocked, with alice's let through,
    //    and the origin sees her certificate.
    let (code, body) = status(&gw, "api.e2e.test", None);
    assert_eq!(code, 403, "no certificate: {body}");
    let (code, body) = status(&gw, "api.e2e.test", Some(&cert_args(&alice)));
    assert_eq!(code, 200, "alice: {body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["headers"]["cf-cert-verified"][0], "true", "{seen}");

    // 6. Revoke her at the CA, publish the CRL, refresh the source: blocked.
    corp.revoke(&alice);
    corp.crl(&crl, false);
    let refreshed = gw.ok(
        "POST",
        &format!("accounts/{account}/mtls_certificates/{ca_id}/crl/refresh"),
        None,
    );
    assert_eq!(refreshed["crl"]["revoked"], 1, "{refreshed}");
    let (code, body) = status(&gw, "api.e2e.test", Some(&cert_args(&alice)));
    assert_eq!(code, 403, "alice after revocation: {body}");

    // 7. The managed CA the same way: issue, associate (no id = managed), use, revoke.
    let issued = gw.ok(
        "POST",
        &format!("zones/{zone}/client_certificates"),
        Some(&json!({"generate_key": true, "common_name": "dave", "validity_days": 30})),
    );
    let dave = Issued {
        cert: dir.0.join("dave.pem"),
        key: dir.0.join("dave.key"),
        serial: issued["serial_number"].as_str().unwrap().to_string(),
    };
    std::fs::write(&dave.cert, issued["certificate"].as_str().unwrap()).unwrap();
    std::fs::write(&dave.key, issued["private_key"].as_str().unwrap()).unwrap();
    let (code, _) = status(&gw, "api.e2e.test", Some(&cert_args(&dave)));
    assert_eq!(code, 403, "the managed CA is not associated yet");
    gw.ok(
        "PUT",
        &format!("zones/{zone}/certificate_authorities/hostname_associations"),
        Some(&json!({"hostnames": ["api.e2e.test"]})),
    );
    let (code, body) = status(&gw, "api.e2e.test", Some(&cert_args(&dave)));
    assert_eq!(code, 200, "dave: {body}");
    let id = issued["id"].as_str().unwrap();
    let revoked = gw.ok(
        "DELETE",
        &format!("zones/{zone}/client_certificates/{id}"),
        None,
    );
    assert_eq!(revoked["status"], "revoked");
    let (code, _) = status(&gw, "api.e2e.test", Some(&cert_args(&dave)));
    assert_eq!(code, 403, "dave after revocation");
    gw.ok(
        "PATCH",
        &format!("zones/{zone}/client_certificates/{id}"),
        Some(&json!({"reactivate": true})),
    );
    let (code, _) = status(&gw, "api.e2e.test", Some(&cert_args(&dave)));
    assert_eq!(code, 200, "dave reactivated");

    // Trust taken away reaches connections already open: dave's keep-alive
    // connection is blocked from its next request once the managed CA is no
    // longer associated with the hostname.
    let mut conn = std::process::Command::new("openssl")
        .args(["s_client", "-quiet", "-ign_eof", "-connect"])
        .arg(format!("127.0.0.1:{}", gw.tls_port))
        .args(["-servername", "api.e2e.test", "-cert"])
        .arg(&dave.cert)
        .arg("-key")
        .arg(&dave.key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut to_server = conn.stdin.take().unwrap();
    let request = |last: bool| {
        format!(
            "GET /kept HTTP/1.1\r\nHost: api.e2e.test\r\n{}\r\n",
            if last { "Connection: close\r\n" } else { "" }
        )
    };
    use std::io::{Read, Write};
    to_server.write_all(request(false).as_bytes()).unwrap();
    thread::sleep(Duration::from_millis(500));
    gw.ok(
        "PUT",
        &format!("zones/{zone}/certificate_authorities/hostname_associations"),
        Some(&json!({"hostnames": []})),
    );
    to_server.write_all(request(true).as_bytes()).unwrap();
    drop(to_server);
    let mut answer = String::new();
    conn.stdout
        .take()
        .unwrap()
        .read_to_string(&mut answer)
        .unwrap();
    let _ = conn.wait();
    let statuses: Vec<&str> = answer
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &answer[i..i + 12])
        .collect();
    assert_eq!(statuses, ["HTTP/1.1 200", "HTTP/1.1 403"], "{answer}");
    gw.ok(
        "PUT",
        &format!("zones/{zone}/certificate_authorities/hostname_associations"),
        Some(&json!({"hostnames": ["api.e2e.test"]})),
    );

    // Everything survives a restart, with the same token.
    let token = gw.token.clone();
    drop(gw);
    let gw = StoreGateway::start(GATEWAY.as_ref(), &data, Some(&token), &[]);
    let (code, _) = status(&gw, "api.e2e.test", Some(&cert_args(&alice)));
    assert_eq!(code, 403, "alice is still revoked after a restart");
    let (code, _) = status(&gw, "api.e2e.test", Some(&cert_args(&dave)));
    assert_eq!(code, 200, "dave still valid after a restart");
}

#[test]
fn kill_9_during_writes_loses_nothing_acknowledged() {
    let dir = TempDir::new("control-crash");
    let data = dir.0.join("data");
    let mut token = None;
    let mut acknowledged: Vec<String> = Vec::new();
    let mut next = 0u32;
    for round in 0..3 {
        let gw = StoreGateway::start(GATEWAY.as_ref(), &data, token.as_deref(), &[]);
        token = Some(gw.token.clone());
        let zone = gw.zone();

        // Everything acknowledged before is there, exactly once.
        let list = gw.list_all(&format!("zones/{zone}/custom_hostnames"));
        let names: Vec<String> = list
            .iter()
            .map(|h| h["hostname"].as_str().unwrap().to_string())
            .collect();
        for name in &acknowledged {
            assert_eq!(
                names.iter().filter(|n| *n == name).count(),
                1,
                "round {round}: acknowledged {name} is missing or doubled: {names:?}"
            );
        }

        // A writer streams creations while the gateway is killed under it.
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (stop, api, token) = (stop.clone(), gw.api.clone(), gw.token.clone());
            let zone = zone.clone();
            let start = next;
            thread::spawn(move || {
                let mut acked = Vec::new();
                let mut i = start;
                while !stop.load(Ordering::Relaxed) {
                    let name = format!("h{i}.crash.test");
                    i += 1;
                    let out = std::process::Command::new("curl")
                        .args([
                            "-s",
                            "--max-time",
                            "5",
                            "-o",
                            "/dev/null",
                            "-w",
                            "%{http_code}",
                        ])
                        .args(["-H", &format!("Authorization: Bearer {token}")])
                        .args(["-H", "Content-Type: application/json", "-X", "POST"])
                        .args(["--data-binary", &json!({"hostname": name}).to_string()])
                        .arg(format!("{api}/client/v4/zones/{zone}/custom_hostnames"))
                        .output()
                        .unwrap();
                    if out.stdout == b"200" {
                        acked.push(name);
                    }
                }
                (acked, i)
            })
        };
        thread::sleep(Duration::from_millis(700 + 300 * round));
        // SAFETY: sending SIGKILL to our own child process.
        unsafe { libc::kill(gw.process.pid() as i32, libc::SIGKILL) };
        thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        let (acked, i) = writer.join().unwrap();
        assert!(
            !acked.is_empty(),
            "round {round}: no write was acknowledged"
        );
        acknowledged.extend(acked);
        next = i;
        drop(gw);
    }
    let gw = StoreGateway::start(GATEWAY.as_ref(), &data, token.as_deref(), &[]);
    let zone = gw.zone();
    let count = gw.list_all(&format!("zones/{zone}/custom_hostnames")).len();
    // The default hostname, every acknowledged one, and at most one per round
    // that committed but whose answer the kill cut off.
    assert!(
        count > acknowledged.len() && count <= acknowledged.len() + 1 + 3,
        "{count} hostnames for {} acknowledged",
        acknowledged.len()
    );
}
