//! ACME in XDP mode: the gateway runs in the lab's server namespace with its
//! XDP filter attached to the veth; Pebble and its DNS
//! (`pebble-challtestsrv`, every name → the gateway's address) run in the
//! client namespace, so Pebble's validator reaches the gateway through the
//! XDP program. The hostname (minimum TLS 1.3, to show the validator's hello
//! is not refused by XDP: Go's crypto/tls offers 1.2 and 1.3) goes to
//! `active`, and curl in the client namespace verifies the served chain
//! against Pebble's root.

use std::{
    fs,
    process::Command,
    time::{Duration, Instant},
};

use gateway_tests::lab::{CLIENT_V4, IFACE, Lab, METRICS, SERVER_V4, metric, run};
use serde_json::{Value, json};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");
const ADMIN: &str = "127.0.0.1:9101";
const HOST: &str = "shop.example.com";

/// Calls the admin API inside the server namespace: (success, result).
fn api(lab: &Lab, token: &str, method: &str, path: &str, body: Option<&Value>) -> (bool, Value) {
    let mut cmd = lab.in_server("curl");
    cmd.args(["-s", "--max-time", "10", "-X", method])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("http://{ADMIN}/client/v4/{path}"));
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/json", "--data-binary"])
            .arg(b.to_string());
    }
    let out = cmd.output().unwrap();
    let answer: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}: {:?}", out.stdout));
    (answer["success"] == true, answer["result"].clone())
}

#[track_caller]
fn ok(lab: &Lab, token: &str, method: &str, path: &str, body: Option<&Value>) -> Value {
    let (success, result) = api(lab, token, method, path, body);
    assert!(success, "{method} {path}: {result:#}");
    result
}

/// Pebble's DNS and Pebble in the client namespace; the validator dials
/// `SERVER_V4:443`. Returns the directory URL and the HTTPS certificate file.
fn start_pebble(lab: &mut Lab) -> (String, std::path::PathBuf) {
    let mut dns = lab.in_client("pebble-challtestsrv");
    dns.args(["-dns01", "127.0.0.1:8053", "-http01", "", "-https01", ""])
        .args(["-tlsalpn01", "", "-management", "127.0.0.1:8055"])
        .args(["-defaultIPv4", SERVER_V4, "-defaultIPv6", ""]);
    lab.spawn("dns", dns).unwrap();
    let (cert, key) = (lab.dir.join("pebble.pem"), lab.dir.join("pebble.key"));
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=pebble"])
        .args(["-addext", &format!("subjectAltName=IP:{CLIENT_V4}")])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert))
    .unwrap();
    let config = json!({"pebble": {
        "listenAddress": format!("{CLIENT_V4}:14000"),
        "managementListenAddress": format!("{CLIENT_V4}:15000"),
        "certificate": cert, "privateKey": key,
        "httpPort": 80, "tlsPort": 443,
        "ocspResponderURL": "", "externalAccountBindingRequired": false,
    }});
    let path = lab.dir.join("pebble.json");
    fs::write(&path, config.to_string()).unwrap();
    let mut pebble = lab.in_client("pebble");
    pebble
        .arg("-config")
        .arg(&path)
        .args(["-dnsserver", "127.0.0.1:8053"])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_VA_ALWAYS_VALID", "0")
        .env("PEBBLE_AUTHZREUSE", "0");
    lab.spawn("pebble", pebble).unwrap();
    lab.wait_for("pebble", Duration::from_secs(20), |lab| {
        lab.log("pebble").contains("Listening on:")
    })
    .unwrap();
    (format!("https://{CLIENT_V4}:14000/dir"), cert)
}

/// Starts the gateway in the server namespace with XDP on the veth; its token.
fn start_gateway(lab: &mut Lab) -> String {
    let mut gw = lab.in_server(GATEWAY);
    gw.arg("run")
        .arg("--data-dir")
        .arg(lab.dir.join("data"))
        .args(["--interface", IFACE])
        .args(["--listen", &format!("{SERVER_V4}:443")])
        .args(["--admin", ADMIN, "--metrics", METRICS])
        .args(["--default-hostname", "lab.test"])
        .env("RUST_LOG", "info");
    lab.spawn("gateway", gw).unwrap();
    lab.wait_for("gateway", Duration::from_secs(20), |lab| {
        lab.log("gateway").contains("admin API on http://")
    })
    .unwrap();
    let log = lab.log("gateway");
    log.lines()
        .find_map(|l| {
            l.split_once("GATEWAY_TOKEN): ")
                .map(|(_, t)| t.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no token printed:\n{log}"))
}

/// Issuance through the XDP filter, the chain verified by curl.
#[test]
fn in_xdp_mode_a_hostname_at_minimum_tls_1_3_gets_an_acme_certificate() {
    gateway_tests::require_root("the lab's namespaces and XDP");
    let tools = ["pebble", "pebble-challtestsrv"].iter().all(|t| {
        Command::new("which")
            .arg(t)
            .output()
            .is_ok_and(|o| o.status.success())
    });
    assert!(tools, "!!! pebble missing: scripts/setup.sh installs it");
    let mut lab = Lab::create().unwrap();
    let (directory, https_ca) = start_pebble(&mut lab);
    let token = start_gateway(&mut lab);
    let zones = ok(&lab, &token, "GET", "zones", None);
    let zone = zones[0]["id"].as_str().unwrap().to_string();
    let account = zones[0]["account"]["id"].as_str().unwrap().to_string();
    let charts = ok(
        &lab,
        &token,
        "GET",
        &format!("accounts/{account}/gateway/charts"),
        None,
    );
    if charts["xdp_attached"] != true {
        eprintln!("!!! the XDP program is not attached: {charts:#}");
    }
    assert_eq!(
        charts["xdp_attached"], true,
        "XDP mode is the point of this test"
    );
    let z = |rest: &str| format!("zones/{zone}/{rest}");
    let settings = json!({"value": {
        "directory": directory, "contact": ["mailto:ops@example.com"],
        "directory_ca": https_ca,
    }});
    ok(&lab, &token, "PATCH", &z("settings/acme"), Some(&settings));
    let hellos_13 = || {
        let scrape = lab.metrics().unwrap();
        metric(
            &scrape,
            "gateway_xdp_client_hellos_total",
            &[("max_version", "1.3")],
        )
    };
    let before = hellos_13();
    let body = json!({"hostname": HOST, "ssl": {"method": "tls-alpn",
        "settings": {"min_tls_version": "1.3"}}});
    let id = ok(&lab, &token, "POST", &z("custom_hostnames"), Some(&body))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let h = ok(
            &lab,
            &token,
            "GET",
            &z(&format!("custom_hostnames/{id}")),
            None,
        );
        if h["ssl"]["status"] == "active" {
            println!("active: {:#}", h["ssl"]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not active in 90 s: {:#}\n{}\n{}",
            h["ssl"],
            lab.log("gateway"),
            lab.log("pebble")
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // The validator's TLS 1.3 hellos went through the XDP program.
    let after = hellos_13();
    assert!(
        after > before,
        "XDP saw no TLS 1.3 hello: {before} -> {after}"
    );
    println!(
        "TLS 1.3 hellos through XDP during the order: {}",
        after - before
    );
    let root = lab.dir.join("root.pem");
    let fetched = lab
        .in_client("curl")
        .args(["-sf", "--cacert"])
        .arg(&https_ca)
        .arg(format!("https://{CLIENT_V4}:15000/roots/0"))
        .arg("-o")
        .arg(&root)
        .status()
        .unwrap();
    assert!(fetched.success(), "Pebble's root from its management port");
    let out = lab
        .in_client("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{ssl_verify_result}",
        ])
        .args(["--resolve", &format!("{HOST}:443:{SERVER_V4}"), "--cacert"])
        .arg(&root)
        .arg(format!("https://{HOST}/"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "curl must verify the chain against Pebble's root: {said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.ends_with(" 0"), "{said}");
    println!("curl through XDP: {said}");
}
