//! A real Prometheus (Debian's) scrapes the gateway in a lab during a short
//! flood of sub-minimum handshakes and a few legitimate mTLS clients; its query
//! API must show the XDP drops and the handshakes. The shipped rules must pass
//! `promtool check rules`.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use gateway_tests::{
    lab::{IFACE, Lab, SERVER_V4, run},
    pki::{TestCa, server_cert},
};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

fn rules_file() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/prometheus/gateway-rules.yml")
}

#[test]
fn shipped_rules_pass_promtool() {
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(rules_file())
        .output()
        .expect("promtool (Debian package prometheus, installed by scripts/setup.sh)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs a PromQL query inside the server namespace; returns the first value.
fn query(lab: &Lab, promql: &str) -> Option<f64> {
    let out = lab
        .in_server("curl")
        .args([
            "-sf",
            "--get",
            "--data-urlencode",
            &format!("query={promql}"),
            "http://127.0.0.1:9090/api/v1/query",
        ])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_sees_the_flood_and_the_handshakes() {
    let mut lab = Lab::create().expect("lab");
    let d = lab.dir.clone();
    let server = server_cert(&d, "server", &["lab.test"]);
    let corp = TestCa::new(&d, "corp");
    let alice = corp.client("alice", None);

    let origin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lab_origin.py");
    let mut cmd = lab.in_server("python3");
    cmd.arg(origin).args(["--port", "8080"]);
    lab.spawn("origin", cmd).unwrap();

    let config = format!(
        "[xdp]\ninterface = \"{IFACE}\"\n\n[terminator]\nlisten = [\"{SERVER_V4}:443\"]\n\n\
         [[ca]]\nname = \"corp\"\ncertificate = \"{ca}\"\n\n\
         [[hostname]]\nname = \"lab.test\"\ncertificate = \"{cert}\"\nkey = \"{key}\"\n\
         origin = \"http://127.0.0.1:8080\"\nmtls = true\ncas = [\"corp\"]\n",
        ca = corp.cert.display(),
        cert = server.cert.display(),
        key = server.key.display(),
    );
    lab.start_gateway(Path::new(GATEWAY), &config).unwrap();

    std::fs::copy(rules_file(), d.join("gateway-rules.yml")).unwrap();
    std::fs::write(
        d.join("prometheus.yml"),
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - gateway-rules.yml\n\
         scrape_configs:\n  - job_name: gateway\n    static_configs:\n      - targets: [\"127.0.0.1:9100\"]\n",
    )
    .unwrap();
    let mut cmd = lab.in_server("prometheus");
    cmd.arg(format!(
        "--config.file={}",
        d.join("prometheus.yml").display()
    ))
    .arg(format!("--storage.tsdb.path={}", d.join("tsdb").display()))
    .arg("--web.listen-address=127.0.0.1:9090");
    lab.spawn("prometheus", cmd).unwrap();
    lab.wait_for("prometheus", Duration::from_secs(30), |lab| {
        run(lab
            .in_server("curl")
            .args(["-sf", "http://127.0.0.1:9090/-/ready"]))
        .is_ok()
    })
    .unwrap();

    // Prometheus must have the counters at rest before the flood, so that rates show it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while query(&lab, r#"up{job="gateway"}"#) != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the gateway:\n{}",
            lab.log("prometheus")
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The flood: 30 TLS 1.0 clients, ten at a time; then five legitimate clients.
    for _ in 0..3 {
        let batch: Vec<_> = (0..10)
            .map(|_| {
                lab.in_client("timeout")
                    .args([
                        "5",
                        "openssl",
                        "s_client",
                        "-connect",
                        &format!("{SERVER_V4}:443"),
                        "-servername",
                        "lab.test",
                    ])
                    .args(["-tls1", "-cipher", "DEFAULT:@SECLEVEL=0"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut c in batch {
            c.wait().unwrap();
        }
    }
    for _ in 0..5 {
        let out = lab
            .in_client("curl")
            .args([
                "-sS",
                "--max-time",
                "5",
                "--resolve",
                &format!("lab.test:443:{SERVER_V4}"),
                "--cacert",
            ])
            .arg(&server.cert)
            .arg("--cert")
            .arg(&alice.cert)
            .arg("--key")
            .arg(&alice.key)
            .args(["-o", "/dev/null", "-w", "%{http_code}", "https://lab.test/"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "200",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let drops = query(
            &lab,
            r#"sum(gateway_xdp_packets_total{verdict="drop",reason="below_min_tls1_0"})"#,
        );
        let ok = query(&lab, r#"sum(gateway_tls_handshakes_total{result="ok"})"#);
        let verified = query(
            &lab,
            r#"sum(gateway_tls_client_certificates_total{status="verified"})"#,
        );
        let rate = query(&lab, "gateway:xdp_drops:rate1m");
        if drops >= Some(30.0) && ok >= Some(5.0) && verified >= Some(5.0) && rate > Some(0.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus saw drops={drops:?} handshakes ok={ok:?} verified={verified:?} drop rate={rate:?}\n{}",
            lab.log("prometheus")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
