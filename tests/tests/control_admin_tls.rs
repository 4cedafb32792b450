//! The admin API over TLS: `--admin-tls` serves HTTPS with a certificate from
//! the server CA that curl and the CLI verify; plain HTTP on an address other
//! than loopback is refused at start unless `--admin-insecure` says so.

use std::{path::Path, process::Command};

use gateway_tests::{
    control::StoreGateway,
    local::{TempDir, free_port, output},
};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

#[test]
fn the_admin_api_serves_https_that_curl_and_the_cli_verify() {
    let dir = TempDir::new("admin-tls");
    let gw = StoreGateway::start(
        Path::new(GATEWAY),
        &dir.0.join("data"),
        None,
        &["--admin-tls"],
    );
    assert!(gw.api.starts_with("https://"), "{}", gw.api);
    // curl with the server CA: the zone; the CLI likewise (GATEWAY_CA).
    let zone = gw.zone();
    assert_eq!(zone.len(), 32);
    let shown = gw.cli(&["--json", "zone", "show"]);
    assert!(shown.ok && shown.stdout.contains(&zone), "{shown:?}");
    // Without the CA, or in plain HTTP, there is no answer.
    let url = format!("{}/client/v4/zones", gw.api);
    let unverified = output(Command::new("curl").args(["-s", "--max-time", "10", &url]));
    assert!(
        !unverified.ok,
        "curl trusted the admin API without its CA: {unverified:?}"
    );
    let plain = output(Command::new("curl").args([
        "-s",
        "--max-time",
        "10",
        &url.replace("https://", "http://"),
    ]));
    assert!(
        !plain.stdout.contains("\"success\""),
        "plain HTTP was answered: {plain:?}"
    );
    let cli_without_ca = output(
        Command::new(GATEWAY)
            .args(["zone", "show"])
            .env("GATEWAY_API", &gw.api)
            .env("GATEWAY_TOKEN", &gw.token)
            .env_remove("GATEWAY_CA"),
    );
    assert!(
        !cli_without_ca.ok && cli_without_ca.stderr.contains("TLS"),
        "{cli_without_ca:?}"
    );
}

#[test]
fn plain_http_beyond_loopback_is_refused_at_start_unless_asked_for() {
    let dir = TempDir::new("admin-insecure");
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(GATEWAY);
        cmd.arg("run")
            .arg("--data-dir")
            .arg(dir.0.join("data"))
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            // A lab address this host does not have: nothing is ever bound.
            .args(["--admin", "198.18.0.1:9101"])
            .args(["--metrics", &format!("127.0.0.1:{}", free_port())])
            .args(extra);
        output(&mut cmd)
    };
    let refused = run(&[]);
    assert!(!refused.ok, "{refused:?}");
    assert!(
        refused.stderr.contains("in plain HTTP") && refused.stderr.contains("--admin-tls"),
        "{refused:?}"
    );
    // Asked for: past the check, to the bind (which fails: the address is not here).
    let asked = run(&["--admin-insecure"]);
    assert!(
        !asked.ok
            && asked
                .stderr
                .contains("cannot listen for the admin API on 198.18.0.1"),
        "{asked:?}"
    );
}
