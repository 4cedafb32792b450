//! Restarts without a protection gap: a gateway run with a pin directory
//! leaves its XDP link and maps pinned when it stops, so old hellos are still
//! refused in the kernel while no gateway runs; the next gateway reuses the
//! pins (same layout) and swaps its program in; `gateway xdp detach` removes
//! everything. Each test mounts a bpffs of its own (pins are global, and
//! `ip netns exec` hides /sys/fs/bpf), unmounted at the end.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use gateway_tests::lab::{IFACE, Lab, SERVER_V4, metric, run};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

/// A bpffs instance mounted for one test; unmounted (releasing every pin in
/// it) and removed on drop.
struct Bpffs {
    mount: PathBuf,
}

impl Bpffs {
    fn mount(name: &str) -> Bpffs {
        let mount = std::env::temp_dir().join(format!("gw-bpffs-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&mount).expect("make the bpffs mount point");
        run(Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&mount))
            .expect("mount a bpffs for the test's pins");
        Bpffs { mount }
    }

    fn pin_dir(&self) -> PathBuf {
        self.mount.join("gateway")
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
        let _ = std::fs::remove_dir(&self.mount);
    }
}

fn config(pin_dir: &Path, extra: &str) -> String {
    format!(
        "[xdp]\ninterface = \"{IFACE}\"\npin_dir = \"{}\"\n{extra}\n\
         [zone]\nmin_tls_version = \"1.2\"\n\n[[hostname]]\nname = \"lab.test\"\n",
        pin_dir.display()
    )
}

fn dropped(lab: &Lab) -> f64 {
    let scrape = lab.metrics().expect("scrape the gateway");
    metric(
        &scrape,
        "gateway_xdp_packets_total",
        &[("verdict", "drop"), ("reason", "below_min_tls1_0")],
    )
}

/// A `-tls1` client fails fast and the TLS server never sees its hello.
fn tls1_refused(lab: &Lab, when: &str) {
    let hellos = lab.tls_events("client_hello").len();
    let client = lab.s_client(SERVER_V4, "lab.test", &["-tls1"]);
    assert!(!client.ok, "{when}: -tls1 must fail:\n{}", client.output);
    assert!(
        client.elapsed < Duration::from_secs(2),
        "{when}: -tls1 took {:?}",
        client.elapsed
    );
    assert_eq!(
        lab.tls_events("client_hello").len(),
        hellos,
        "{when}: the TLS server saw the -tls1 hello:\n{}",
        lab.log("tls-events")
    );
}

/// A lab with the TLS server (every version allowed) and no gateway yet.
fn lab_with_server() -> Lab {
    let mut lab = Lab::create().expect("create the lab");
    let (cert, key) = lab.self_signed(&["lab.test"]).expect("make a certificate");
    lab.start_tls_server(&cert, &key)
        .expect("start the TLS server");
    lab
}

fn pins(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Waits (up to 3 s) until `ip link` shows no XDP program on the server's veth.
fn wait_detached(lab: &Lab) -> String {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let link = lab.server_link(IFACE).expect("ip link");
        if !link.contains("xdp") || Instant::now() > deadline {
            return link;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pinned CONFIG map as `bpftool` dumps it (the policy's minimums and
/// the random flow-hash seed), or `None` (said loudly) without bpftool.
fn pinned_config(pin_dir: &Path) -> Option<String> {
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(pin_dir.join("CONFIG"))
        .output();
    match out {
        Ok(out) if out.status.success() => Some(String::from_utf8_lossy(&out.stdout).into()),
        other => {
            eprintln!("!!! bpftool cannot dump the pinned CONFIG ({other:?}): seed not compared");
            None
        }
    }
}

fn detach(pin_dir: &Path) -> String {
    let out = run(Command::new(GATEWAY)
        .args(["xdp", "detach", "--pin-dir"])
        .arg(pin_dir))
    .expect("gateway xdp detach");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_stopped_gateway_keeps_refusing_and_the_next_one_reuses_the_pins() {
    let mut lab = lab_with_server();
    let bpffs = Bpffs::mount("reuse");
    let pin_dir = bpffs.pin_dir();
    lab.start_gateway(Path::new(GATEWAY), &config(&pin_dir, ""))
        .expect("start the gateway");
    let log = lab.log("gateway");
    assert!(log.contains("no pinned XDP filter"), "{log}");
    assert!(log.contains("XDP link pinned at"), "{log}");
    let before = dropped(&lab);
    tls1_refused(&lab, "first gateway");
    let first = dropped(&lab);
    assert!(first > before, "the XDP drop counter did not move");

    let config_before = pinned_config(&pin_dir);
    assert!(
        lab.stop("gateway").unwrap(),
        "clean exit:\n{}",
        lab.log("gateway")
    );
    let log = lab.log("gateway");
    assert!(log.contains("left attached"), "{log}");
    let link = lab.server_link(IFACE).unwrap();
    assert!(link.contains("xdp"), "still attached while stopped: {link}");
    let pinned = pins(&pin_dir);
    assert!(
        pinned.contains(&format!("link_native_{IFACE}")) && pinned.contains(&"STATS".into()),
        "pins while stopped: {pinned:?}"
    );
    for _ in 0..3 {
        tls1_refused(&lab, "no gateway running");
    }
    let modern = lab.s_client(SERVER_V4, "lab.test", &["-tls1_2"]);
    assert!(modern.ok, "-tls1_2 with no gateway: {}", modern.output);

    lab.start_gateway(Path::new(GATEWAY), &config(&pin_dir, ""))
        .expect("restart the gateway");
    let log = lab.log("gateway");
    assert!(log.contains("reusing the pinned XDP maps"), "{log}");
    assert!(log.contains("swapped into the pinned link"), "{log}");
    assert!(log.contains("(pins reused)"), "{log}");
    if let (Some(before), Some(after)) = (config_before, pinned_config(&pin_dir)) {
        assert!(before.contains("\"value\""), "bpftool's dump: {before}");
        assert_eq!(
            before, after,
            "the same policy and the kept flow-hash seed: CONFIG unchanged"
        );
    }
    let kept = dropped(&lab);
    assert!(
        kept >= first + 3.0,
        "the pinned counters kept the refusals made while stopped: {first} then {kept}"
    );
    tls1_refused(&lab, "second gateway");
    assert!(dropped(&lab) > kept, "the new program counts its drops");
    assert!(lab.stop("gateway").unwrap());

    let said = detach(&pin_dir);
    assert!(said.contains("removed"), "{said}");
    assert!(!pin_dir.exists(), "pin directory gone");
    let link = wait_detached(&lab);
    assert!(!link.contains("xdp"), "detached: {link}");
    let old = lab.s_client(SERVER_V4, "lab.test", &["-tls1"]);
    assert!(
        old.ok,
        "with the filter gone, -tls1 reaches the server: {}",
        old.output
    );
}

#[test]
fn a_resized_table_replaces_the_pins_and_says_so() {
    let mut lab = lab_with_server();
    let bpffs = Bpffs::mount("resize");
    let pin_dir = bpffs.pin_dir();
    lab.start_gateway(Path::new(GATEWAY), &config(&pin_dir, ""))
        .expect("start the gateway");
    assert!(lab.stop("gateway").unwrap());
    lab.start_gateway(
        Path::new(GATEWAY),
        &config(&pin_dir, "flow_anchors = 1024\n"),
    )
    .expect("start the gateway with another table size");
    let log = lab.log("gateway");
    assert!(log.contains("has another layout"), "{log}");
    assert!(log.contains("FLOW_ANCHORS"), "{log}");
    assert!(!log.contains("reusing the pinned"), "{log}");
    tls1_refused(&lab, "after the replacement");
    assert!(lab.stop("gateway").unwrap());
    let said = detach(&pin_dir);
    assert!(said.contains("removed"), "{said}");
    let link = wait_detached(&lab);
    assert!(!link.contains("xdp"), "detached: {link}");
}

#[test]
fn ten_restarts_let_no_old_hello_through() {
    let mut lab = lab_with_server();
    let bpffs = Bpffs::mount("loop");
    let pin_dir = bpffs.pin_dir();
    let config = config(&pin_dir, "");
    lab.start_gateway(Path::new(GATEWAY), &config)
        .expect("start the gateway");
    let mut clients = lab.in_client("sh");
    clients.arg("-c").arg(format!(
        "while :; do echo attempt; timeout 3 openssl s_client -connect {SERVER_V4}:443 \
         -servername lab.test -tls1 -cipher DEFAULT:@SECLEVEL=0 </dev/null >/dev/null 2>&1; \
         sleep 0.05; done"
    ));
    lab.spawn("tls1-loop", clients)
        .expect("start the -tls1 loop");
    for i in 0..10 {
        assert!(
            lab.stop("gateway").unwrap(),
            "stop {i}:\n{}",
            lab.log("gateway")
        );
        // A while with no gateway at all: only the pinned program refuses.
        std::thread::sleep(Duration::from_millis(300));
        lab.start_gateway(Path::new(GATEWAY), &config)
            .unwrap_or_else(|e| panic!("restart {i}: {e:#}"));
        let log = lab.log("gateway");
        assert!(
            log.contains("swapped into the pinned link"),
            "restart {i}:\n{log}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let _ = lab.stop("tls1-loop");
    let attempts = lab.log("tls1-loop").matches("attempt").count();
    let drops = dropped(&lab);
    eprintln!("{attempts} -tls1 clients over 10 restarts; {drops} refused in XDP");
    assert!(attempts >= 10, "the -tls1 loop ran only {attempts} times");
    assert_eq!(
        lab.tls_events("client_hello").len(),
        0,
        "a -tls1 hello reached the TLS server during the restarts:\n{}",
        lab.log("tls-events")
    );
    assert!(
        drops >= (attempts - 1) as f64,
        "{attempts} -tls1 clients, {drops} XDP refusals counted across the restarts"
    );
    assert!(lab.stop("gateway").unwrap());
    detach(&pin_dir);
    let link = wait_detached(&lab);
    assert!(!link.contains("xdp"), "detached: {link}");
    // The instrument works: without the filter, the server sees the hello.
    let old = lab.s_client(SERVER_V4, "lab.test", &["-tls1"]);
    assert!(old.ok, "-tls1 with no filter: {}", old.output);
    assert!(
        !lab.tls_events("client_hello").is_empty(),
        "the TLS server logs the hellos it sees"
    );
}

#[test]
fn the_units_capabilities_pin_and_reuse_as_an_unprivileged_user() {
    use std::os::unix::fs::PermissionsExt;
    gateway_tests::split::require_program("setpriv", "util-linux");
    let mut lab = lab_with_server();
    let bpffs = Bpffs::mount("nobody");
    let pin_dir = bpffs.pin_dir();
    std::fs::create_dir(&pin_dir).expect("make the pin directory");
    std::os::unix::fs::chown(&pin_dir, Some(65534), Some(65534)).expect("chown to nobody");
    let dir = lab.dir.join("nobody");
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("gateway");
    std::fs::copy(GATEWAY, &bin).expect("copy the gateway binary");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let toml = dir.join("gateway.toml");
    std::fs::write(&toml, config(&pin_dir, "")).unwrap();
    std::fs::set_permissions(&toml, std::fs::Permissions::from_mode(0o644)).unwrap();
    for d in [&dir, &lab.dir] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let caps = gateway_tests::unit::capabilities();
    for (round, says) in [
        (0, "XDP link pinned at"),
        (1, "swapped into the pinned link"),
    ] {
        let mut cmd = gateway_tests::unit::as_nobody(&lab, &bin, &caps);
        cmd.args(["run", "--config"]).arg(&toml);
        lab.spawn("gateway", cmd)
            .expect("start the gateway as nobody");
        lab.wait_for("gateway", Duration::from_secs(20), |lab| {
            lab.metrics().is_ok()
        })
        .unwrap_or_else(|e| panic!("round {round}: not up ({e:#}):\n{}", lab.log("gateway")));
        let log = lab.log("gateway");
        assert!(log.contains(says), "round {round}:\n{log}");
        tls1_refused(&lab, &format!("as nobody, round {round}"));
        assert!(lab.stop("gateway").unwrap(), "{}", lab.log("gateway"));
        tls1_refused(&lab, &format!("stopped after round {round}"));
    }
    detach(&pin_dir);
    let link = wait_detached(&lab);
    assert!(!link.contains("xdp"), "detached: {link}");
}
