//! `gateway run` as an operator meets it: attach and detach, the generic-mode
//! fallback, and clear errors for bad configurations.

use std::{path::Path, process::Command};

use gateway_tests::lab::{IFACE, Lab, METRICS, run};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

/// `STATUS BODY` of a GET of `path` on the metrics listener.
fn health(lab: &Lab, path: &str) -> String {
    let out = run(lab.in_server("curl").args([
        "-s",
        "--max-time",
        "2",
        "-w",
        "%{http_code} ",
        "-o",
        "/dev/stderr",
        &format!("http://{METRICS}{path}"),
    ]))
    .expect("curl the metrics listener");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

#[test]
fn attaches_natively_to_veth_and_detaches_on_sigterm() {
    let mut lab = Lab::create().unwrap();
    assert!(!lab.server_link(IFACE).unwrap().contains("xdp"));
    lab.start_gateway(
        Path::new(GATEWAY),
        &format!("[xdp]\ninterface = \"{IFACE}\"\n"),
    )
    .unwrap();
    let link = lab.server_link(IFACE).unwrap();
    assert!(
        link.contains("xdp") && !link.contains("xdpgeneric"),
        "native XDP: {link}"
    );
    assert!(
        lab.log("gateway").contains("native mode"),
        "{}",
        lab.log("gateway")
    );
    assert_eq!(health(&lab, "/healthz"), "200 alive");
    assert_eq!(health(&lab, "/readyz"), "200 ready");
    assert!(
        lab.stop("gateway").unwrap(),
        "clean exit:\n{}",
        lab.log("gateway")
    );
    let link = lab.server_link(IFACE).unwrap();
    assert!(!link.contains("xdp"), "detached on exit: {link}");
}

#[test]
fn falls_back_to_generic_mode_and_says_so() {
    let mut lab = Lab::create().unwrap();
    // A bridge has no native XDP support.
    run(lab
        .in_server("ip")
        .args(["link", "add", "br0", "type", "bridge"]))
    .unwrap();
    run(lab.in_server("ip").args(["link", "set", "br0", "up"])).unwrap();
    lab.start_gateway(Path::new(GATEWAY), "[xdp]\ninterface = \"br0\"\n")
        .unwrap();
    let log = lab.log("gateway");
    assert!(log.contains("using generic mode"), "{log}");
    assert!(log.contains("(generic mode)"), "{log}");
    assert!(lab.server_link("br0").unwrap().contains("xdpgeneric"));
    assert!(lab.stop("gateway").unwrap());
    assert!(!lab.server_link("br0").unwrap().contains("xdp"));
}

fn run_with_config(config: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!(
        "gateway-run-{}-{}",
        std::process::id(),
        config.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(GATEWAY)
        .arg("run")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configurations_are_refused_with_a_clear_error() {
    gateway_tests::require_root("gateway run");
    let cases = [
        ("[zone]\nmin_tls_version = \"1.4\"\n", "1.4"),
        ("[xdp]\ninterface = \"lo\"\nmode = \"turbo\"\n", "turbo"),
        ("[zone]\nminimum = \"1.2\"\n", "minimum"),
        (
            "[[hostname]]\nname = \"*.example.com\"\n",
            "wildcard = true",
        ),
        ("[zone\n", "TOML"),
        ("", "no interface"),
        ("[xdp]\ninterface = \"no-such-if0\"\n", "no-such-if0"),
    ];
    for (config, expect) in cases {
        let (ok, stderr) = run_with_config(config);
        assert!(!ok, "{config:?} must be refused");
        assert!(
            stderr.contains(expect),
            "{config:?}: expected {expect:?} in:\n{stderr}"
        );
    }
}
