//! `[xdp] syn_cookies = "auto"` in a lab: a port's SYN cookies engage when a
//! flood of real connections passes `syn_cookie_rate`, the flood's sub-minimum
//! hellos are then refused without the kernel building their sockets, and
//! legitimate clients still get through; the mode follows a configuration
//! reload live. Needs root and Linux 6.9+ (the kfunc); says so loudly otherwise.

use std::{net::SocketAddr, path::Path, time::Duration};

use gateway_tests::{
    flood::{self, Bounds},
    lab::{IFACE, Lab, SERVER_V4, metric},
};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

fn config(mode: &str) -> String {
    format!(
        "[xdp]\ninterface = \"{IFACE}\"\nports = [443]\nsyn_cookies = \"{mode}\"\n\
         syn_cookie_rate = 200\n\n[zone]\nmin_tls_version = \"1.2\"\n\n\
         [[hostname]]\nname = \"lab.test\"\n"
    )
}

/// The lab with its TLS server and the gateway; `None` (said loudly) when the
/// kernel cannot take SYN cookies.
fn lab(mode: &str) -> Option<Lab> {
    gateway_tests::require_root("attaching the XDP and TC programs");
    let mut lab = Lab::create().expect("create the lab");
    let (cert, key) = lab.self_signed(&["lab.test"]).expect("certificate");
    lab.start_tls_server(&cert, &key).expect("TLS server");
    lab.start_gateway(Path::new(GATEWAY), &config(mode))
        .expect("start the gateway");
    let banner = lab.log("gateway");
    if let Some(line) = banner
        .lines()
        .find(|l| l.contains("SYN cookies unavailable"))
    {
        eprintln!("\n!!! SYN-COOKIE LAB NOT RUN: {line}\n");
        return None;
    }
    Some(lab)
}

fn cookies(lab: &Lab, outcome: &str) -> f64 {
    let scrape = lab.metrics().expect("scrape the gateway");
    metric(
        &scrape,
        "gateway_syn_cookies_total",
        &[("outcome", outcome)],
    )
}

fn engaged(lab: &Lab) -> f64 {
    let scrape = lab.metrics().expect("scrape the gateway");
    metric(&scrape, "gateway_syn_cookies_engaged", &[("port", "443")])
}

/// `PassiveOpens` of the server namespace's TCP stack: connections it built.
fn passive_opens(lab: &Lab) -> f64 {
    let out = gateway_tests::lab::run(lab.in_server("cat").arg("/proc/net/snmp"))
        .expect("read /proc/net/snmp");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (
        tcp.next().expect("Tcp names"),
        tcp.next().expect("Tcp values"),
    );
    let i = names
        .split_whitespace()
        .position(|n| n == "PassiveOpens")
        .expect("PassiveOpens column");
    values
        .split_whitespace()
        .nth(i)
        .and_then(|v| v.parse().ok())
        .expect("PassiveOpens value")
}

#[test]
fn auto_engages_under_a_connection_flood_and_refuses_without_sockets() {
    let Some(lab) = lab("auto") else { return };
    assert_eq!(
        engaged(&lab),
        0.0,
        "no flood yet: cookies must not be engaged"
    );
    // Below the threshold: the kernel answers.
    let run = lab.s_client(SERVER_V4, "lab.test", &["-tls1_3"]);
    assert!(run.ok, "a TLS 1.3 client before the flood:\n{}", run.output);
    assert_eq!(
        cookies(&lab, "sent"),
        0.0,
        "one SYN must not engage cookies"
    );
    let opens = passive_opens(&lab);
    let server: SocketAddr = format!("{SERVER_V4}:443").parse().expect("address");
    let bounds = Bounds {
        count: 1500,
        rate: 1000,
        max_time: Duration::from_secs(20),
    };
    let result = lab
        .in_client_thread(move || flood::connections(server, bounds, 64))
        .expect("flood from the client namespace");
    assert_eq!(result.sent + result.errors, 1500, "{result:?}");
    let built = passive_opens(&lab) - opens;
    let refused = cookies(&lab, "refused_without_socket");
    println!(
        "flood of 1500 TLS 1.0 connections at 1000/s: {} cookies sent, {refused} refused \
         without a socket, {built} sockets built by the kernel",
        cookies(&lab, "sent")
    );
    assert_eq!(engaged(&lab), 1.0, "the flood must engage cookies on 443");
    assert!(
        refused >= 1000.0,
        "most of the flood must be refused without a socket: {refused}"
    );
    assert!(
        built < 500.0,
        "the kernel built {built} sockets for 1500 refused connections"
    );
    assert_eq!(
        lab.tls_events("client_hello").len(),
        1,
        "the TLS server must see only the legitimate client's hello"
    );
    // Engaged, a legitimate client is served through a cookie.
    let made = cookies(&lab, "socket_made");
    let run = lab.s_client(SERVER_V4, "lab.test", &["-tls1_3"]);
    assert!(run.ok, "a TLS 1.3 client under cookies:\n{}", run.output);
    assert_eq!(cookies(&lab, "socket_made"), made + 1.0);
}

#[test]
fn the_mode_follows_a_configuration_reload() {
    let Some(lab) = lab("on") else { return };
    let run = lab.s_client(SERVER_V4, "lab.test", &["-tls1_3"]);
    assert!(run.ok, "{}", run.output);
    let sent = cookies(&lab, "sent");
    assert!(sent >= 1.0, "mode on: the SYN must be answered in XDP");
    lab.write_gateway_config(&config("off"))
        .expect("rewrite the configuration");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while engaged(&lab) != 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "cookies still engaged 10 s after the reload"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let run = lab.s_client(SERVER_V4, "lab.test", &["-tls1_3"]);
    assert!(run.ok, "{}", run.output);
    assert_eq!(
        cookies(&lab, "sent"),
        sent,
        "mode off: the kernel must answer the SYN"
    );
    let refused = lab.s_client(SERVER_V4, "lab.test", &["-tls1"]);
    assert!(!refused.ok, "TLS 1.0 must still be refused in XDP");
}
