//! End to end in a network-namespace lab: `gateway run` attaches the XDP filter
//! to the server's veth, a real TLS server listens behind it, and real
//! `openssl s_client` runs connect from the client namespace.

use std::{path::Path, time::Duration};

use gateway_tests::lab::{IFACE, Lab, SERVER_V4, SERVER_V6, metric};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

fn config(strict_min: &str) -> String {
    format!(
        "[xdp]\ninterface = \"{IFACE}\"\n\n[zone]\nmin_tls_version = \"1.2\"\n\n\
         [[hostname]]\nname = \"strict.lab.test\"\nmin_tls_version = \"{strict_min}\"\n\n\
         [[hostname]]\nname = \"lab.test\"\n"
    )
}

fn dropped(lab: &Lab, reason: &str) -> f64 {
    let scrape = lab.metrics().expect("scrape the gateway");
    metric(
        &scrape,
        "gateway_xdp_packets_total",
        &[("verdict", "drop"), ("reason", reason)],
    )
}

/// A lab with the TLS server and the gateway running.
fn lab_with_gateway() -> Lab {
    let mut lab = Lab::create().expect("create the lab");
    let (cert, key) = lab
        .self_signed(&["lab.test", "strict.lab.test"])
        .expect("make a certificate");
    lab.start_tls_server(&cert, &key)
        .expect("start the TLS server");
    lab.start_gateway(Path::new(GATEWAY), &config("1.3"))
        .expect("start the gateway");
    lab
}

#[test]
fn old_clients_are_refused_in_the_kernel_and_new_ones_get_through() {
    let lab = lab_with_gateway();
    for offload in [true, false] {
        lab.set_client_offload(offload).unwrap();
        for (flag, reason, server) in [
            ("-tls1", "below_min_tls1_0", SERVER_V4),
            ("-tls1_1", "below_min_tls1_1", SERVER_V4),
            ("-tls1", "below_min_tls1_0", SERVER_V6),
        ] {
            let hellos_before = lab.tls_events("client_hello").len();
            let drops_before = dropped(&lab, reason);
            let run = lab.s_client(server, "lab.test", &[flag]);
            assert!(
                !run.ok,
                "{flag} to {server} (offload {offload}) must fail:\n{}",
                run.output
            );
            assert!(
                run.elapsed < Duration::from_secs(2),
                "{flag} (offload {offload}) took {:?} to fail; a refused client must not hang:\n{}",
                run.elapsed,
                run.output
            );
            assert!(
                dropped(&lab, reason) > drops_before,
                "{flag} (offload {offload}): the XDP drop counter {reason} did not move:\n{}\n{}",
                run.output,
                lab.metrics().unwrap_or_default()
            );
            assert_eq!(
                lab.tls_events("client_hello").len(),
                hellos_before,
                "{flag} (offload {offload}): the TLS server saw the refused ClientHello:\n{}",
                lab.log("tls-events")
            );
        }
        for (flag, protocol) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
            let run = lab.s_client(SERVER_V4, "lab.test", &[flag]);
            assert!(
                run.ok,
                "{flag} (offload {offload}) must complete:\n{}",
                run.output
            );
            assert!(
                run.output.contains(protocol),
                "{flag}: negotiated {protocol}:\n{}",
                run.output
            );
        }
    }
    let handshakes = lab.tls_events("handshake");
    assert!(
        handshakes.iter().any(|e| e["version"] == "TLSv1.3"),
        "{handshakes:?}"
    );
    assert!(
        handshakes
            .iter()
            .all(|e| e["version"] != "TLSv1" && e["version"] != "TLSv1.1")
    );
}

#[test]
fn a_per_host_minimum_refuses_tls12_for_that_sni_only_and_follows_the_config() {
    let lab = lab_with_gateway();
    let before = dropped(&lab, "below_min_tls1_2");
    let strict = lab.s_client(SERVER_V4, "strict.lab.test", &["-tls1_2"]);
    assert!(
        !strict.ok,
        "TLS 1.2 to the 1.3-only host must fail:\n{}",
        strict.output
    );
    assert!(
        strict.elapsed < Duration::from_secs(2),
        "took {:?}",
        strict.elapsed
    );
    assert!(dropped(&lab, "below_min_tls1_2") > before);
    let upper = lab.s_client(SERVER_V4, "STRICT.lab.test", &["-tls1_2"]);
    assert!(
        !upper.ok,
        "the SNI is matched case-insensitively:\n{}",
        upper.output
    );
    let other = lab.s_client(SERVER_V4, "lab.test", &["-tls1_2"]);
    assert!(
        other.ok,
        "TLS 1.2 to another host completes:\n{}",
        other.output
    );
    let strict13 = lab.s_client(SERVER_V4, "strict.lab.test", &["-tls1_3"]);
    assert!(
        strict13.ok,
        "TLS 1.3 to the strict host completes:\n{}",
        strict13.output
    );

    // Lower the host's minimum in the configuration: the running gateway follows.
    lab.write_gateway_config(&config("1.2")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let run = lab.s_client(SERVER_V4, "strict.lab.test", &["-tls1_2"]);
        if run.ok {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new policy never applied:\n{}",
            lab.log("gateway")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn without_the_filter_the_same_old_client_completes() {
    // The control: the TLS server itself accepts TLS 1.0, so the refusals above
    // are the filter's doing.
    let mut lab = Lab::create().unwrap();
    let (cert, key) = lab.self_signed(&["lab.test"]).unwrap();
    lab.start_tls_server(&cert, &key).unwrap();
    let run = lab.s_client(SERVER_V4, "lab.test", &["-tls1"]);
    assert!(
        run.ok,
        "TLS 1.0 straight to the server completes:\n{}",
        run.output
    );
    assert_eq!(lab.tls_events("client_hello").len(), 1);
}
