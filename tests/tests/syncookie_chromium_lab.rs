//! Headless Chromium through SYN cookies answered in XDP: its post-quantum
//! (X25519MLKEM768) ClientHello spans two TCP segments at MTU 1500; the first
//! segment carries the cookie, the TC program has the kernel build the socket
//! from it, and the page loads through the gateway's terminator. Figures are
//! printed; run with `--nocapture`.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use gateway_tests::{
    cookie_lab::{HOST, Snapshot, lab},
    split::{
        Capture, X25519_MLKEM768, client_hellos, require_program, set_client_segmentation_offload,
    },
};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

#[test]
fn chromium_post_quantum_two_segment_hello_is_served_through_cookies() {
    gateway_tests::require_root("the network-namespace lab and Chromium");
    let chromium = require_program("chromium", "chromium");
    let mut lab = lab(Path::new(GATEWAY));
    set_client_segmentation_offload(&lab, false).expect("offloads off on the client veth");
    let capture = Capture::start(&mut lab, "tcpdump-chromium").expect("start tcpdump");
    let before = Snapshot::take(&lab);
    let profile = lab.dir.join("chromium-profile");
    std::fs::create_dir_all(&profile).unwrap();
    let url = format!("https://{HOST}/cookie-page");
    let start = Instant::now();
    let out = lab
        .chromium_dump_dom(Path::new(&chromium), &profile, &url)
        .expect("run chromium");
    let elapsed = start.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let after = Snapshot::take(&lab);
    let pcap = capture.stop(&mut lab).expect("stop tcpdump");
    let moves = before.moved(&after);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    println!(
        "chromium exited {} after {elapsed:.1?}; {moves:?}",
        out.status
    );
    let hellos = client_hellos(&pcap).expect("read the capture");
    for h in &hellos {
        println!(
            "  hello (port {}): {} bytes, {} segments {:?}, key shares {:04x?}",
            h.client_port, h.message_len, h.segments, h.segment_sizes, h.key_shares
        );
    }
    assert!(
        !hellos.is_empty(),
        "the capture holds no ClientHello from Chromium (exit {}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        hellos
            .iter()
            .all(|h| h.key_shares.contains(&X25519_MLKEM768) && h.segments >= 2),
        "CHROMIUM DID NOT SEND A POST-QUANTUM HELLO IN TWO SEGMENTS, so this tests nothing: \
         {hellos:#?}"
    );
    assert!(
        dom.contains("/cookie-page") && dom.contains("HeadlessChrome"),
        "the page did not load (exit {}); DOM:\n{dom}\ngateway:\n{}",
        out.status,
        lab.log("gateway")
    );
    let n = hellos.len() as f64;
    assert!(
        moves.sent >= n,
        "a cookie SYN-ACK per connection: {moves:?}"
    );
    assert_eq!(moves.socket_made, n, "a socket per hello: {moves:?}");
    // One per hello, plus the terminator's connections to the origin.
    assert!(moves.passive_opens >= n as i64, "{moves:?}");
    assert_eq!(moves.assign_failed, 0.0, "{moves:?}");
    assert_eq!(moves.refused, 0.0, "{moves:?}");
    assert_eq!(moves.bad_cookie, 0.0, "{moves:?}");
}
