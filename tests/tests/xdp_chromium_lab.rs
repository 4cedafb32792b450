//! End to end in the network-namespace lab: headless Chromium, whose
//! post-quantum (X25519MLKEM768) ClientHello spans two TCP segments at MTU
//! 1500, loads a page through the gateway's terminator while the XDP filter
//! reassembles its hello and decides it in the kernel. Figures are printed;
//! run with `--nocapture` to see them.

use std::{path::Path, time::Instant};

use gateway_tests::{
    lab::{IFACE, Lab, SERVER_V4},
    split::{
        Capture, Counters, X25519_MLKEM768, client_hellos, client_offload_state, require_program,
        set_client_segmentation_offload,
    },
};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

/// Chromium runs at most this many times looking for a hello whose deciding
/// bytes are in its second segment (its extension order is random).
const CHROMIUM_RUNS: usize = 6;

#[test]
fn chromium_post_quantum_hello_in_two_segments_is_allowed_and_the_page_loads() {
    gateway_tests::require_root("the network-namespace lab and Chromium");
    let chromium = require_program("chromium", "chromium");
    let mut lab = Lab::create().expect("create the lab");
    lab.self_signed(&["browser.lab.test"])
        .expect("make a certificate");
    // The echo origin on the server's loopback, behind the gateway's terminator.
    lab.start_origin().expect("start the origin");
    let config = format!(
        "[xdp]\ninterface = \"{IFACE}\"\n\n[zone]\nmin_tls_version = \"1.2\"\n\n\
         [metrics]\nlisten = \"127.0.0.1:9100\"\n\n\
         [terminator]\nlisten = [\"{SERVER_V4}:443\"]\ncertificate = \"server.crt\"\nkey = \"server.key\"\n\n\
         [[hostname]]\nname = \"browser.lab.test\"\norigin = \"http://127.0.0.1:8080\"\n"
    );
    lab.start_gateway(Path::new(GATEWAY), &config)
        .expect("start the gateway");
    set_client_segmentation_offload(&lab, false).expect("offloads off on the client veth");
    println!("client veth: {}", client_offload_state(&lab));

    // Chromium shuffles its extensions for every connection: when both
    // server_name and supported_versions land in the first segment the filter
    // decides from that segment alone, which is not a split hello. Each run's
    // counters must match what its capture predicts; runs repeat until a hello
    // that needs both segments has been seen.
    let mut split_total = 0.0;
    for attempt in 1..=CHROMIUM_RUNS {
        let capture = Capture::start(&mut lab, &format!("tcpdump-chromium-{attempt}"))
            .expect("start tcpdump");
        let before = Counters::take(&lab);
        let profile = lab.dir.join(format!("chromium-profile-{attempt}"));
        std::fs::create_dir_all(&profile).unwrap();
        let marker = format!("split-hello-page-{attempt}");
        let url = format!("https://browser.lab.test/{marker}");
        let start = Instant::now();
        let out = lab
            .chromium_dump_dom(Path::new(&chromium), &profile, &url)
            .expect("run chromium");
        let elapsed = start.elapsed();
        let after = Counters::take(&lab);
        let pcap = capture.stop(&mut lab).expect("stop tcpdump");
        let dom = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr: String = String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| !l.contains("dbus"))
            .collect::<Vec<_>>()
            .join("\n");
        println!(
            "chromium run {attempt}: exited {} after {elapsed:.1?}; counters moved: {}",
            out.status,
            before.moved(&after)
        );
        let hellos = client_hellos(&pcap).expect("read the capture");
        for h in &hellos {
            println!(
                "  hello (port {}, sni {:?}): {} bytes in {} record(s), {} segments {:?}; deciding bytes end at {} ({}); key shares {:04x?}",
                h.client_port,
                h.sni.as_deref().unwrap_or("-"),
                h.message_len,
                h.records,
                h.segments,
                h.segment_sizes,
                h.decisive_end,
                if h.decidable_from_first_segment() {
                    "first segment"
                } else {
                    "second segment"
                },
                h.key_shares,
            );
        }
        assert!(
            !hellos.is_empty(),
            "the capture holds no ClientHello from Chromium (exit {}):\n{stderr}",
            out.status
        );
        let pq: Vec<_> = hellos
            .iter()
            .filter(|h| h.key_shares.contains(&X25519_MLKEM768))
            .collect();
        assert!(
            pq.len() == hellos.len(),
            "CHROMIUM DID NOT OFFER X25519MLKEM768 in every hello (no such key share): {hellos:#?}"
        );
        assert!(
            pq.iter().all(|h| h.segments >= 2),
            "CHROMIUM'S POST-QUANTUM HELLO FIT ONE SEGMENT, so it tests nothing here: {pq:#?}"
        );
        let expect_split = hellos
            .iter()
            .filter(|h| !h.decidable_from_first_segment())
            .count() as f64;
        let split = after.split("allowed") - before.split("allowed");
        let allowed = after.packets("pass", "allowed") - before.packets("pass", "allowed");
        let partial =
            after.packets("pass", "hello_partial") - before.packets("pass", "hello_partial");
        println!(
            "  {} hello(s), {expect_split} needing the second segment: allowed +{allowed}, split allowed +{split}, hello_partial +{partial}",
            hellos.len()
        );
        assert_eq!(after.dropped(), before.dropped(), "nothing dropped");
        assert_eq!(
            allowed,
            hellos.len() as f64,
            "every hello allowed in the kernel"
        );
        assert_eq!(
            split, expect_split,
            "split allowed counter against the capture's prediction"
        );
        assert_eq!(
            partial, expect_split,
            "one partial segment per hello decided from two segments"
        );
        assert!(
            dom.contains(&marker) && dom.contains("HeadlessChrome"),
            "the page did not load (exit {}); DOM:\n{dom}\nstderr:\n{stderr}\ngateway:\n{}",
            out.status,
            lab.log("gateway")
        );
        println!(
            "  DOM ({} bytes) shows the origin's echo of GET /{marker}",
            dom.len()
        );
        split_total += split;
        if split_total >= 1.0 {
            break;
        }
    }
    assert!(
        split_total >= 1.0,
        "in {CHROMIUM_RUNS} runs no Chromium hello needed its second segment to be decided, \
         so gateway_xdp_split_hellos_total{{outcome=\"allowed\"}} never moved"
    );
}
