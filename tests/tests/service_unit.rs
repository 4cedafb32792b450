//! The packaged unit's privileges are enough, and each is needed: `gateway
//! run` as an unprivileged user (nobody) with exactly the capabilities of
//! `gateway-user/packaging/gateway.service` (`setpriv`: ambient, inheritable
//! and bounding sets), in the network-namespace lab, attaches its XDP filter
//! and SYN cookies, serves TLS 1.3 on 443 and refuses TLS 1.0 in XDP; without
//! `CAP_PERFMON` it stops at start, naming what is missing.

use std::{os::unix::fs::PermissionsExt, path::Path, time::Duration};

use gateway_tests::{
    cookie_lab::{HOST, config},
    lab::{IFACE, Lab, SERVER_V4, metric},
    split::require_program,
    unit,
};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

/// A lab whose scratch files and gateway binary an unprivileged user can read.
fn lab_for_nobody() -> (Lab, std::path::PathBuf) {
    gateway_tests::require_root("the network-namespace lab and setpriv");
    require_program("setpriv", "util-linux");
    require_program("openssl", "openssl");
    let mut lab = Lab::create().expect("create the lab");
    lab.self_signed(&[HOST]).expect("make a certificate");
    lab.start_origin().expect("start the origin");
    let bin = lab.dir.join("gateway");
    std::fs::copy(GATEWAY, &bin).expect("copy the gateway binary");
    for entry in std::fs::read_dir(&lab.dir).unwrap().flatten() {
        let mode = if entry.path() == bin { 0o755 } else { 0o644 };
        let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode));
    }
    std::fs::set_permissions(&lab.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(lab.dir.join("gateway.toml"), config("on")).expect("write the config");
    (lab, bin)
}

/// Starts the gateway as nobody with exactly `caps` (setpriv's `+name,...`).
fn start_as_nobody(lab: &mut Lab, bin: &Path, caps: &str) {
    let mut cmd = unit::as_nobody(lab, bin, caps);
    cmd.args(["run", "--config"])
        .arg(lab.dir.join("gateway.toml"));
    lab.spawn("gateway", cmd)
        .expect("start the gateway under setpriv");
}

#[test]
fn the_units_capabilities_serve_and_refuse_in_xdp_as_an_unprivileged_user() {
    let caps = unit::capabilities();
    assert_eq!(caps, "+bpf,+perfmon,+net_admin,+net_bind_service");
    let (mut lab, bin) = lab_for_nobody();
    start_as_nobody(&mut lab, &bin, &caps);
    lab.wait_for("gateway", Duration::from_secs(20), |lab| {
        lab.metrics().is_ok()
    })
    .unwrap_or_else(|e| {
        panic!(
            "the gateway did not come up ({e:#}):\n{}",
            lab.log("gateway")
        )
    });
    let log = lab.log("gateway");
    assert!(log.contains("SYN cookies on"), "{log}");
    let link = lab.server_link(IFACE).expect("ip link");
    assert!(link.contains("xdp"), "no XDP program on {IFACE}:\n{link}");
    let uid = std::fs::read_to_string(format!("/proc/{}/status", lab.pid("gateway").unwrap()))
        .unwrap_or_default();
    assert!(
        uid.lines()
            .any(|l| l.starts_with("Uid:") && l.contains("65534")),
        "the gateway does not run as nobody:\n{uid}"
    );
    let served = lab.s_client(SERVER_V4, HOST, &["-tls1_3"]);
    assert!(served.ok, "TLS 1.3 not served: {served:?}");
    let before = metric(
        &lab.metrics().unwrap(),
        "gateway_xdp_packets_total",
        &[("verdict", "drop")],
    );
    let refused = lab.s_client(SERVER_V4, HOST, &["-tls1"]);
    let after = metric(
        &lab.metrics().unwrap(),
        "gateway_xdp_packets_total",
        &[("verdict", "drop")],
    );
    assert!(!refused.ok, "TLS 1.0 was served: {refused:?}");
    assert!(
        after > before,
        "XDP refused nothing ({before} -> {after}): {refused:?}"
    );
}

#[test]
fn without_cap_perfmon_the_gateway_names_it_and_stops() {
    let caps = unit::capabilities().replace("+perfmon,", "");
    let (mut lab, bin) = lab_for_nobody();
    start_as_nobody(&mut lab, &bin, &caps);
    lab.wait_for("gateway", Duration::from_secs(20), |lab| {
        lab.log("gateway").contains("lacks kernel capabilities")
    })
    .unwrap_or_else(|e| panic!("no capability error ({e:#}):\n{}", lab.log("gateway")));
    let log = lab.log("gateway");
    assert!(log.contains("CAP_PERFMON for the verifier"), "{log}");
    assert!(log.contains("missing: CAP_PERFMON"), "{log}");
    assert!(!log.contains("CAP_BPF "), "{log}");
}
