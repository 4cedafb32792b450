//! The flood generators against the XDP filter in a lab: bounded, stopping by
//! themselves, and every sub-minimum hello refused in the kernel.

use std::{net::SocketAddr, path::Path, time::Duration};

use gateway_tests::{
    flood::{self, Bounds, stateless},
    lab::{IFACE, Lab, SERVER_V4, SERVER_V6, metric},
};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

fn drops(lab: &Lab) -> f64 {
    let m = lab.metrics().unwrap();
    metric(
        &m,
        "gateway_xdp_packets_total",
        &[("reason", "below_min_tls1_0")],
    ) + metric(
        &m,
        "gateway_xdp_packets_total",
        &[("reason", "below_min_tls1_1")],
    )
}

fn lab_with_filter(tls_server: bool) -> Lab {
    let mut lab = Lab::create().unwrap();
    if tls_server {
        let (cert, key) = lab.self_signed(&["lab.test"]).unwrap();
        lab.start_tls_server(&cert, &key).unwrap();
    }
    let config = format!("[xdp]\ninterface = \"{IFACE}\"\n\n[zone]\nmin_tls_version = \"1.2\"\n");
    lab.start_gateway(Path::new(GATEWAY), &config).unwrap();
    lab
}

#[test]
fn a_stateless_flood_is_bounded_and_refused_in_xdp() {
    let lab = lab_with_filter(false);
    stateless::route_spoofed_sources(&lab).unwrap();
    let target = stateless::Target {
        macs: (lab.mac(false).unwrap(), lab.mac(true).unwrap()),
        v4: SERVER_V4.parse().unwrap(),
        v6: SERVER_V6.parse().unwrap(),
        port: 443,
    };
    let frames = stateless::hello_frames(target);
    let before = drops(&lab);
    let bounds = Bounds {
        count: 5_000,
        rate: 10_000,
        max_time: Duration::from_secs(10),
    };
    let result = lab
        .in_client_thread(move || stateless::blast(IFACE, &frames, bounds))
        .unwrap()
        .unwrap();
    assert_eq!(result.sent, 5_000, "{result:?}");
    assert!(
        result.elapsed >= Duration::from_millis(450),
        "paced at 10,000/s: {result:?}"
    );
    assert!(result.elapsed < Duration::from_secs(10), "{result:?}");
    std::thread::sleep(Duration::from_millis(300));
    let refused = drops(&lab) - before;
    assert!(
        refused >= 4_950.0,
        "XDP refused {refused} of 5,000 crafted hellos"
    );
    assert!(
        refused <= 5_000.0,
        "XDP counted {refused} refusals for 5,000 frames"
    );
}

#[test]
fn a_connection_flood_never_reaches_the_tls_server() {
    let lab = lab_with_filter(true);
    let before = drops(&lab);
    let server: SocketAddr = format!("{SERVER_V4}:443").parse().unwrap();
    let bounds = Bounds {
        count: 200,
        rate: 400,
        max_time: Duration::from_secs(20),
    };
    let result = lab
        .in_client_thread(move || flood::connections(server, bounds, 32))
        .unwrap();
    assert_eq!(result.sent + result.errors, 200, "{result:?}");
    assert!(result.elapsed < Duration::from_secs(20), "{result:?}");
    std::thread::sleep(Duration::from_millis(300));
    let refused = drops(&lab) - before;
    assert!(
        refused >= 200.0,
        "XDP refused {refused} hellos of 200 connections"
    );
    assert_eq!(
        lab.tls_events("client_hello").len(),
        0,
        "the server saw a flooded hello"
    );
}
