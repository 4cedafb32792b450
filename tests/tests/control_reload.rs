//! Hot reload under load: mTLS clients in a network-namespace lab keep doing
//! full TLS 1.3 handshakes and requests while 100 changes go through the admin
//! API; none fails, a keep-alive connection opened before the changes is
//! still served after them, and the last change is in force in both layers
//! (the XDP filter refuses what it now must). Once on a new store, once on a
//! store of 10,000 hostnames.

use std::{
    io::{Read, Write},
    path::Path,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use gateway_tests::{
    lab::{IFACE, Lab, SERVER_V4, metric},
    load::MtlsClient,
};
use serde_json::{Value, json};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");
const ADMIN: &str = "127.0.0.1:9101";

/// Calls the admin API inside the server namespace; fails unless it succeeds.
#[track_caller]
fn api(lab: &Lab, token: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let mut cmd = lab.in_server("curl");
    cmd.args(["-s", "--max-time", "10", "-X", method])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("http://{ADMIN}/client/v4/{path}"));
    if let Some(b) = body {
        cmd.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &b.to_string(),
        ]);
    }
    let out = cmd.output().unwrap();
    let answer: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}: {:?}", out.stdout));
    assert_eq!(answer["success"], true, "{method} {path}: {answer:#}");
    answer["result"].clone()
}

#[test]
fn a_hundred_changes_under_load_drop_nothing() {
    changes_under_load(0);
}

#[test]
fn a_hundred_changes_under_load_among_10000_hostnames_drop_nothing() {
    changes_under_load(10_000);
}

fn preloaded(i: usize) -> String {
    format!("h{i}.preloaded.test")
}

fn changes_under_load(preload: usize) {
    let mut lab = Lab::create().unwrap();
    let data = lab.dir.join("data");
    gateway_tests::control::bulk_load(&data, preload, preloaded).unwrap();
    let token = gateway::control::rotate_token(&data).unwrap();
    let origin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lab_origin.py");
    let mut o = lab.in_server("python3");
    o.arg(&origin)
        .args(["--listen", "127.0.0.1", "--port", "8080"]);
    lab.spawn("origin", o).unwrap();
    let mut gw = lab.in_server(GATEWAY);
    gw.arg("run")
        .arg("--data-dir")
        .arg(&data)
        .args(["--interface", IFACE, "--mode", "generic"])
        .args(["--listen", &format!("{SERVER_V4}:443"), "--admin", ADMIN])
        .env("RUST_LOG", "info");
    lab.spawn("gateway", gw).unwrap();
    lab.wait_for("gateway", Duration::from_secs(20), |lab| {
        lab.metrics().is_ok()
    })
    .unwrap();
    let zone = api(&lab, &token, "GET", "zones", None)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let z = |rest: &str| format!("zones/{zone}/{rest}");

    // api.lab.test: mTLS with the managed CA, to the origin; other.lab.test: the one we change.
    api(
        &lab,
        &token,
        "POST",
        &z("custom_hostnames"),
        Some(json!({
            "hostname": "api.lab.test",
            "custom_origin_server": "http://127.0.0.1:8080",
            "mtls": {"enabled": true},
        })),
    );
    let other = api(
        &lab,
        &token,
        "POST",
        &z("custom_hostnames"),
        Some(json!({"hostname": "other.lab.test"})),
    );
    let other_id = other["id"].as_str().unwrap().to_string();
    let issued = api(
        &lab,
        &token,
        "POST",
        &z("client_certificates"),
        Some(json!({
            "generate_key": true, "common_name": "loader", "validity_days": 1,
        })),
    );
    let (cert, key) = (lab.dir.join("loader.pem"), lab.dir.join("loader.key"));
    std::fs::write(&cert, issued["certificate"].as_str().unwrap()).unwrap();
    std::fs::write(&key, issued["private_key"].as_str().unwrap()).unwrap();
    api(
        &lab,
        &token,
        "POST",
        &z("rulesets/phases/http_request_firewall_custom/entrypoint/rules"),
        Some(json!({
            "expression": "http.host eq \"api.lab.test\" and not cf.tls_client_auth.cert_verified",
            "action": "block",
        })),
    );

    // A keep-alive connection opened before the changes.
    let mut keep = lab.in_client("openssl");
    keep.args([
        "s_client",
        "-quiet",
        "-ign_eof",
        "-connect",
        &format!("{SERVER_V4}:443"),
    ])
    .args(["-servername", "api.lab.test", "-CAfile"])
    .arg(data.join("server-ca.pem"))
    .arg("-cert")
    .arg(&cert)
    .arg("-key")
    .arg(&key)
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let mut keep = keep.spawn().unwrap();
    let mut keep_in = keep.stdin.take().unwrap();
    keep_in
        .write_all(b"GET /before HTTP/1.1\r\nHost: api.lab.test\r\n\r\n")
        .unwrap();

    let client = MtlsClient {
        addr: format!("{SERVER_V4}:443").parse().unwrap(),
        host: "api.lab.test".into(),
        ca: data.join("server-ca.pem"),
        cert: cert.clone(),
        key: key.clone(),
    };
    // The load runs until the changes are done (two minutes at most).
    let stop = Arc::new(AtomicBool::new(false));
    let mut keep_alive_requests = 1;
    let (load, changes_took) = thread::scope(|s| {
        let load = s.spawn(|| {
            let stop = stop.clone();
            lab.in_client_thread(move || {
                tokio::runtime::Runtime::new()
                    .unwrap()
                    .block_on(client.run_until(4, stop, Duration::from_secs(120)))
            })
        });
        thread::sleep(Duration::from_secs(1));
        let started = Instant::now();
        let rules = z("rulesets/phases/http_request_firewall_custom/entrypoint/rules");
        let mut rule_id = None;
        for i in 0..100 {
            // The kept connection carries a request every ten changes (it is
            // never idle long enough to be closed for idleness).
            if i % 10 == 5 {
                let request = format!("GET /during-{i} HTTP/1.1\r\nHost: api.lab.test\r\n\r\n");
                keep_in
                    .write_all(request.as_bytes())
                    .expect("the kept connection was closed during the changes");
                keep_alive_requests += 1;
            }
            match i % 4 {
                0 => {
                    let v = if i % 8 == 0 { "1.3" } else { "1.2" };
                    api(
                        &lab,
                        &token,
                        "PATCH",
                        &z(&format!("custom_hostnames/{other_id}")),
                        Some(json!({"ssl": {"settings": {"min_tls_version": v}}})),
                    );
                }
                1 => {
                    let r = api(
                        &lab,
                        &token,
                        "POST",
                        &rules,
                        Some(json!({
                            "expression": format!("http.request.uri.path eq \"/change-{i}\""),
                            "action": "block",
                        })),
                    );
                    rule_id = r["rules"].as_array().unwrap().last().unwrap()["id"]
                        .as_str()
                        .map(String::from);
                }
                2 => {
                    let id = rule_id.take().unwrap();
                    api(&lab, &token, "DELETE", &format!("{rules}/{id}"), None);
                }
                _ => {
                    api(
                        &lab,
                        &token,
                        "PATCH",
                        &z("settings/ciphers"),
                        Some(json!({
                            "value": if i % 8 == 3 { json!(["ECDHE-ECDSA-AES128-GCM-SHA256"]) } else { json!([]) },
                        })),
                    );
                }
            }
        }
        // The last change: other.lab.test needs TLS 1.3.
        api(
            &lab,
            &token,
            "PATCH",
            &z(&format!("custom_hostnames/{other_id}")),
            Some(json!({"ssl": {"settings": {"min_tls_version": "1.3"}}})),
        );
        let took = started.elapsed();
        stop.store(true, Ordering::Relaxed);
        keep_in
            .write_all(b"GET /after HTTP/1.1\r\nHost: api.lab.test\r\nConnection: close\r\n\r\n")
            .expect("the kept connection was closed after the changes");
        keep_alive_requests += 1;
        drop(keep_in);
        (load.join().unwrap().unwrap().unwrap(), took)
    });
    assert!(
        load.completed > 20,
        "only {} cycles completed: {load:?}",
        load.completed
    );
    assert_eq!(
        load.errors,
        0,
        "{} of {} handshake+request cycles failed during the changes",
        load.errors,
        load.completed + load.errors
    );
    eprintln!(
        "{preload} preloaded hostnames; 101 changes in {changes_took:?} under load: {} mTLS \
         cycles ({:.0}/s), 0 errors",
        load.completed,
        load.rate()
    );

    // The keep-alive connection is still served (the request went after the changes).
    let mut answer = String::new();
    let mut out = keep.stdout.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match out.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    let _ = keep.kill();
    let _ = keep.wait();
    assert_eq!(
        answer.matches("HTTP/1.1 200").count(),
        keep_alive_requests,
        "the connection opened before the changes: {answer}"
    );
    assert!(answer.contains("/after"), "{answer}");

    // The last change is in force in the XDP filter: TLS 1.2 to other.lab.test is
    // refused in the kernel; api.lab.test still takes TLS 1.2.
    let drops = |lab: &Lab| {
        let m = lab.metrics().unwrap();
        metric(&m, "gateway_xdp_packets_total", &[("verdict", "drop")])
    };
    let before = drops(&lab);
    let refused = lab.s_client(SERVER_V4, "other.lab.test", &["-tls1_2"]);
    assert!(
        !refused.ok,
        "TLS 1.2 to other.lab.test was not refused: {refused:?}"
    );
    assert!(drops(&lab) > before, "the XDP filter did not refuse it");
    let passed = lab.s_client(SERVER_V4, "api.lab.test", &["-tls1_2"]);
    assert!(passed.ok, "TLS 1.2 to api.lab.test: {passed:?}");
    if preload > 0 {
        let name = preloaded(preload / 2);
        let served = lab.s_client(SERVER_V4, &name, &[]);
        assert!(served.ok, "a preloaded hostname, {name}: {served:?}");
    }
}
