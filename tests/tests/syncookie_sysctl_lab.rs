//! SYN cookies follow the server namespace's TCP sysctls (read again every
//! second): an option the server's kernel refuses is never offered in a cookie
//! SYN-ACK, so the socket built from the cookie goes without it; with
//! `tcp_syncookies = 0` the kernel would refuse sockets built from cookies,
//! so the gateway pauses them and the kernel answers SYNs itself.

use std::{path::Path, time::Duration};

use gateway_tests::{
    cookie_lab::{PLAIN_PORT, Snapshot, lab, python_client, s_client, socket_options},
    lab::{Lab, SERVER_V4, metric, run},
    split::require_program,
};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

/// Sets `net.ipv4.NAME` in the server namespace and waits until the gateway
/// has read it (it reads the sysctls once a second).
fn server_sysctl(lab: &Lab, name: &str, value: u8) {
    run(lab
        .in_server("sysctl")
        .args(["-qw", &format!("net.ipv4.{name}={value}")]))
    .expect("set a server sysctl");
    std::thread::sleep(Duration::from_millis(1500));
}

fn engaged(lab: &Lab) -> f64 {
    let scrape = lab.metrics().expect("scrape the gateway");
    metric(&scrape, "gateway_syn_cookies_engaged", &[("port", "443")])
}

#[test]
fn options_the_server_refuses_are_not_offered() {
    let mut lab = lab(Path::new(GATEWAY));
    let py = require_program("python3", "python3");
    for (i, name) in ["tcp_timestamps", "tcp_sack", "tcp_window_scaling"]
        .into_iter()
        .enumerate()
    {
        server_sysctl(&lab, name, 0);
        let before = Snapshot::take(&lab);
        let process = format!("py-{name}");
        let (port, said) = python_client(&mut lab, &py, &process);
        let server = socket_options(&mut lab.in_server("ss"), port, false);
        let client = socket_options(&mut lab.in_client("ss"), port, true);
        lab.stop(&process).ok();
        let moves = before.moved(&Snapshot::take(&lab));
        println!("server {name}=0: {}", said.trim());
        println!("  server: {}\n  {moves:?}", server.line);
        assert_eq!(moves.socket_made, 1.0, "served through a cookie: {moves:?}");
        let got = [
            (server.ts, client.ts),
            (server.sack, client.sack),
            (server.wscale.is_some(), client.wscale.is_some()),
        ];
        for (j, (s, c)) in got.into_iter().enumerate() {
            let want = i != j;
            assert_eq!(
                (s, c),
                (want, want),
                "option {j} with {name}=0: {}",
                server.line
            );
        }
        server_sysctl(&lab, name, 1);
    }
}

#[test]
fn with_tcp_syncookies_off_the_kernel_answers_and_cookies_resume_after() {
    let lab = lab(Path::new(GATEWAY));
    server_sysctl(&lab, "tcp_syncookies", 0);
    assert_eq!(
        engaged(&lab),
        0.0,
        "cookies still engaged with tcp_syncookies=0"
    );
    assert!(
        lab.log("gateway").contains("SYN cookies paused"),
        "{}",
        lab.log("gateway")
    );
    let before = Snapshot::take(&lab);
    let refused = s_client(&lab, SERVER_V4, PLAIN_PORT, &["-tls1"]);
    let served = s_client(&lab, SERVER_V4, PLAIN_PORT, &["-tls1_3"]);
    let moves = before.moved(&Snapshot::take(&lab));
    println!(
        "tcp_syncookies=0: -tls1 ok={}, -tls1_3 ok={}; {moves:?}",
        refused.ok, served.ok
    );
    assert!(
        !refused.ok && served.ok,
        "{}\n{}",
        refused.output,
        served.output
    );
    assert_eq!(moves.sent, 0.0, "{moves:?}");
    assert_eq!(
        moves.passive_opens, 2,
        "the kernel made both sockets: {moves:?}"
    );

    server_sysctl(&lab, "tcp_syncookies", 1);
    assert_eq!(engaged(&lab), 1.0, "cookies did not resume");
    let before = Snapshot::take(&lab);
    let refused = s_client(&lab, SERVER_V4, PLAIN_PORT, &["-tls1"]);
    let moves = before.moved(&Snapshot::take(&lab));
    println!("tcp_syncookies=1 again: -tls1 ok={}; {moves:?}", refused.ok);
    assert!(!refused.ok, "{}", refused.output);
    assert_eq!((moves.refused, moves.passive_opens), (1.0, 0), "{moves:?}");
}
