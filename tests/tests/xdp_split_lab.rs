//! End to end in the network-namespace lab, for ClientHellos that span several
//! TCP segments or TLS records: the XDP filter (attached natively to the
//! server's veth by `gateway run`) reassembles them and decides in the kernel.
//!
//! - `openssl s_client -max_send_frag 512` with a large ALPN list sends its
//!   hello in several TLS records: TLS 1.0 and 1.1 are refused (the client fails
//!   at once), TLS 1.3 is allowed.
//! - The project's hello builder, padded to a browser's size, sent over a real
//!   TCP connection in two segments and in dozens of 1-byte segments: refused
//!   by the zone minimum or a per-host minimum (the client is reset at once and
//!   the server socket is gone), allowed for another host.
//!
//! Headless Chromium's post-quantum hello is in `xdp_chromium_lab.rs`.
//!
//! Every figure (timings, counter deltas, segment and record counts) is
//! printed; run with `--nocapture` to see them.

use std::{net::SocketAddr, path::Path, time::Duration};

use gateway::hello::{ClientHello, Ext};
use gateway_common::version;
use gateway_tests::{
    lab::{IFACE, Lab, SERVER_V4, SERVER_V6},
    split::{
        Capture, Counters, End, chunks, client_hellos, client_offload_state, send_chunks,
        server_sockets, set_client_segmentation_offload, wait_until,
    },
};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

/// Refused clients must fail well within this.
const PROMPT: Duration = Duration::from_secs(1);

fn config() -> String {
    format!(
        "[xdp]\ninterface = \"{IFACE}\"\n\n[zone]\nmin_tls_version = \"1.2\"\n\n\
         [[hostname]]\nname = \"strict.lab.test\"\nmin_tls_version = \"1.3\"\n\n\
         [[hostname]]\nname = \"lab.test\"\n"
    )
}

/// A lab with the TLS server (1.0 to 1.3 accepted) and the gateway running,
/// offloads off on the client's veth.
fn lab_with_gateway() -> Lab {
    let mut lab = Lab::create().expect("create the lab");
    let (cert, key) = lab
        .self_signed(&["lab.test", "strict.lab.test"])
        .expect("make a certificate");
    lab.start_tls_server(&cert, &key)
        .expect("start the TLS server");
    lab.start_gateway(Path::new(GATEWAY), &config())
        .expect("start the gateway");
    set_client_segmentation_offload(&lab, false).expect("offloads off on the client veth");
    println!("client veth: {}", client_offload_state(&lab));
    lab
}

/// The TLS server's events of a kind that name an SNI.
fn hellos_for(lab: &Lab, sni: &str) -> usize {
    lab.tls_events("client_hello")
        .iter()
        .filter(|e| e["sni"] == sni)
        .count()
}

/// `handshake_failed` events of the TLS server caused by a reset.
fn resets_seen_by_server(lab: &Lab) -> usize {
    // The reset reaches the server as ECONNRESET, or, when its socket already
    // reported the error before OpenSSL read again, as an end of stream in the
    // middle of the hello it had half read (the client sent no FIN).
    lab.tls_events("handshake_failed")
        .iter()
        .filter(|e| {
            let detail = e["detail"].as_str().unwrap_or_default();
            e["error"] == "ConnectionResetError"
                || detail.contains("reset")
                || detail.contains("Closed before TLS handshake with data in recv buffer")
        })
        .count()
}

// ---------------------------------------------------------------------------
// 1. openssl s_client with small records
// ---------------------------------------------------------------------------

/// An ALPN list of about 1 KB: openssl's hello grows past `-max_send_frag 512`
/// (the smallest value openssl accepts) and goes out in several records, yet
/// stays within one MSS.
fn big_alpn() -> String {
    (b'a'..=b'e')
        .map(|c| String::from_utf8(vec![c; 200]).unwrap())
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn openssl_hellos_in_several_records_are_decided_in_the_kernel() {
    let mut lab = lab_with_gateway();
    let alpn = big_alpn();
    let capture = Capture::start(&mut lab, "tcpdump-openssl").expect("start tcpdump");
    let small = ["-max_send_frag", "512", "-alpn", alpn.as_str()];

    // max_send_frag below 512 is refused by openssl itself: say so in the output.
    let tiny = lab.s_client(SERVER_V4, "lab.test", &["-tls1_3", "-max_send_frag", "64"]);
    println!(
        "openssl -tls1_3 -max_send_frag 64: ok={}: {}",
        tiny.ok,
        tiny.output.lines().take(3).collect::<Vec<_>>().join(" | ")
    );

    let mut expected_hellos = Vec::new();
    for (flag, reason) in [
        ("-tls1", "below_min_tls1_0"),
        ("-tls1_1", "below_min_tls1_1"),
    ] {
        let before = Counters::take(&lab);
        let server_hellos = lab.tls_events("client_hello").len();
        let mut args = vec![flag];
        args.extend(small);
        let run = lab.s_client(SERVER_V4, "lab.test", &args);
        let after = Counters::take(&lab);
        println!(
            "openssl {flag} -max_send_frag 512: ok={} failed after {:?}; counters moved: {}",
            run.ok,
            run.elapsed,
            before.moved(&after)
        );
        assert!(!run.ok, "{flag} must be refused:\n{}", run.output);
        assert!(
            run.elapsed < PROMPT,
            "{flag}: the refused client took {:?} to fail:\n{}",
            run.elapsed,
            run.output
        );
        assert_eq!(
            after.packets("drop", reason) - before.packets("drop", reason),
            1.0,
            "{flag}: drop counter {reason}"
        );
        assert_eq!(
            after.split("refused") - before.split("refused"),
            1.0,
            "{flag}: split refused counter (was the hello really in several records?)"
        );
        assert_eq!(
            lab.tls_events("client_hello").len(),
            server_hellos,
            "{flag}: the TLS server saw the refused hello:\n{}",
            lab.log("tls-events")
        );
        expected_hellos.push(flag);
    }

    let before = Counters::take(&lab);
    let mut args = vec!["-tls1_3"];
    args.extend(small);
    let run = lab.s_client(SERVER_V4, "lab.test", &args);
    let after = Counters::take(&lab);
    println!(
        "openssl -tls1_3 -max_send_frag 512: ok={} in {:?}; counters moved: {}",
        run.ok,
        run.elapsed,
        before.moved(&after)
    );
    assert!(run.ok, "-tls1_3 must complete:\n{}", run.output);
    assert!(run.output.contains("TLSv1.3"), "{}", run.output);
    assert_eq!(after.split("allowed") - before.split("allowed"), 1.0);
    assert_eq!(after.dropped(), before.dropped(), "nothing dropped");
    expected_hellos.push("-tls1_3");

    // The capture shows what openssl really sent.
    let pcap = capture.stop(&mut lab).expect("stop tcpdump");
    let hellos = client_hellos(&pcap).expect("read the capture");
    // The first connection is the rejected -max_send_frag 64 attempt, if it connected.
    let hellos: Vec<_> = hellos.iter().filter(|h| h.message_len > 600).collect();
    for (flag, h) in expected_hellos.iter().zip(&hellos) {
        println!(
            "  {flag}: hello of {} bytes in {} records, {} segments {:?}",
            h.message_len, h.records, h.segments, h.segment_sizes
        );
    }
    assert_eq!(
        hellos.len(),
        expected_hellos.len(),
        "one large hello per run in the capture: {hellos:?}"
    );
    for (flag, h) in expected_hellos.iter().zip(&hellos) {
        assert!(
            h.records >= 2,
            "{flag}: openssl sent its hello in {} record(s), not several: {h:?}",
            h.records
        );
    }
}

// ---------------------------------------------------------------------------
// 2. The hello builder over a real TCP connection, segment by segment
// ---------------------------------------------------------------------------

/// Browser-sized hello record (`total` bytes) offering only `legacy` (no
/// supported_versions). `sni_last`: the padding goes before the SNI, so the
/// name arrives in the last segment.
fn padded_hello(legacy: u16, sni: &str, total: usize, sni_last: bool) -> Vec<u8> {
    let with_padding = |pad: usize| {
        let mut h = ClientHello::legacy(legacy, None);
        let exts = h.extensions.as_mut().unwrap();
        if sni_last {
            exts.push(Ext::padding(pad));
            exts.push(Ext::sni(sni));
        } else {
            exts.insert(0, Ext::sni(sni));
            exts.push(Ext::padding(pad));
        }
        h.record()
    };
    let record = with_padding(total - with_padding(0).len());
    assert_eq!(record.len(), total);
    record
}

/// How a hello is cut into writes.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Two writes: the first 1,000 bytes, then the rest.
    Two,
    /// The first 50 bytes one by one, then the rest.
    Bytes50,
}

impl Cut {
    fn sizes(self) -> Vec<usize> {
        match self {
            Cut::Two => vec![1000],
            Cut::Bytes50 => vec![1; 50],
        }
    }
}

/// What a builder case expects.
#[derive(Clone, Copy, Debug)]
enum Expect {
    Refused(&'static str),
    Allowed,
}

struct Case {
    label: &'static str,
    legacy: u16,
    sni: &'static str,
    sni_last: bool,
    server: &'static str,
    cut: Cut,
    expect: Expect,
}

const HELLO_SIZE: usize = 2100;

fn run_case(lab: &Lab, case: &Case) -> String {
    let hello = padded_hello(case.legacy, case.sni, HELLO_SIZE, case.sni_last);
    let pieces = chunks(&hello, &case.cut.sizes());
    let addr: SocketAddr = if case.server.contains(':') {
        format!("[{}]:443", case.server).parse().unwrap()
    } else {
        format!("{}:443", case.server).parse().unwrap()
    };
    let before = Counters::take(lab);
    let server_hellos = hellos_for(lab, case.sni);
    let server_resets = resets_seen_by_server(lab);
    let run = send_chunks(
        lab,
        addr,
        pieces,
        Duration::from_millis(3),
        Duration::from_secs(3),
    )
    .expect("run the chunked client");
    let after = Counters::take(lab);
    let partial = after.packets("pass", "hello_partial") - before.packets("pass", "hello_partial");
    let line = format!(
        "{:<34} {:?} {:>3} writes -> {:?} after {:>9.1?} (total {:>9.1?}); partial segments {partial}; moved: {}",
        case.label,
        case.cut,
        run.writes,
        run.end,
        run.after_last_write,
        run.total,
        before.moved(&after)
    );
    println!("{line}");
    let what = format!("{} ({:?}, port {})", case.label, case.cut, run.local_port);
    // Segmentation is checked, not assumed: every write before the deciding
    // segment must have been a segment of its own.
    assert!(
        partial >= (run.writes - 1) as f64,
        "{what}: {} writes but only {partial} partial segments: the kernel coalesced them",
        run.writes
    );
    match case.expect {
        Expect::Refused(reason) => {
            assert_eq!(
                run.end,
                End::Reset,
                "{what}: the refused client must see ECONNRESET"
            );
            assert!(
                run.after_last_write < PROMPT,
                "{what}: the refused client took {:?} to fail",
                run.after_last_write
            );
            assert_eq!(
                after.packets("drop", reason) - before.packets("drop", reason),
                1.0,
                "{what}: drop counter {reason}"
            );
            assert_eq!(
                after.split("refused") - before.split("refused"),
                1.0,
                "{what}: split refused counter"
            );
            assert_eq!(after.split("allowed"), before.split("allowed"));
            // The client learns of the reset by retransmitting into the torn-down flow.
            assert!(
                after.packets("drop", "refused_retransmit")
                    > before.packets("drop", "refused_retransmit"),
                "{what}: no retransmission of the refused hello was seen"
            );
            let sockets = server_sockets(lab, run.local_port).expect("ss");
            assert!(
                sockets.is_empty(),
                "{what}: the server still has a socket for the refused client:\n{sockets}"
            );
            assert!(
                wait_until(Duration::from_secs(2), || resets_seen_by_server(lab)
                    > server_resets),
                "{what}: the TLS server did not see its half-read connection reset:\n{}",
                lab.log("tls-events")
            );
            assert_eq!(
                hellos_for(lab, case.sni),
                server_hellos,
                "{what}: the TLS server read the refused hello:\n{}",
                lab.log("tls-events")
            );
        }
        Expect::Allowed => {
            assert!(
                matches!(run.end, End::Data(_)),
                "{what}: the allowed hello must be answered by the server, got {:?}",
                run.end
            );
            assert_eq!(
                after.split("allowed") - before.split("allowed"),
                1.0,
                "{what}: split allowed counter"
            );
            assert_eq!(after.dropped(), before.dropped(), "{what}: nothing dropped");
            assert!(
                wait_until(Duration::from_secs(2), || hellos_for(lab, case.sni)
                    > server_hellos),
                "{what}: the TLS server never read the allowed hello:\n{}",
                lab.log("tls-events")
            );
        }
    }
    line
}

#[test]
fn builder_hellos_split_over_segments_are_refused_or_allowed_in_the_kernel() {
    let lab = lab_with_gateway();
    let refused10 = Expect::Refused("below_min_tls1_0");
    let refused12 = Expect::Refused("below_min_tls1_2");
    let mut cases = Vec::new();
    for cut in [Cut::Two, Cut::Bytes50] {
        cases.push(Case {
            label: "TLS 1.0 lab.test (zone 1.2)",
            legacy: version::TLS1_0,
            sni: "lab.test",
            sni_last: false,
            server: SERVER_V4,
            cut,
            expect: refused10,
        });
        cases.push(Case {
            label: "TLS 1.2 strict.lab.test (host 1.3)",
            legacy: version::TLS1_2,
            sni: "strict.lab.test",
            sni_last: false,
            server: SERVER_V4,
            cut,
            expect: refused12,
        });
        cases.push(Case {
            label: "TLS 1.2 lab.test (zone 1.2)",
            legacy: version::TLS1_2,
            sni: "lab.test",
            sni_last: false,
            server: SERVER_V4,
            cut,
            expect: Expect::Allowed,
        });
    }
    cases.push(Case {
        label: "TLS 1.2 strict.lab.test, SNI last",
        legacy: version::TLS1_2,
        sni: "strict.lab.test",
        sni_last: true,
        server: SERVER_V4,
        cut: Cut::Two,
        expect: refused12,
    });
    cases.push(Case {
        label: "TLS 1.2 lab.test, SNI last",
        legacy: version::TLS1_2,
        sni: "lab.test",
        sni_last: true,
        server: SERVER_V4,
        cut: Cut::Two,
        expect: Expect::Allowed,
    });
    cases.push(Case {
        label: "TLS 1.0 lab.test over IPv6",
        legacy: version::TLS1_0,
        sni: "lab.test",
        sni_last: false,
        server: SERVER_V6,
        cut: Cut::Two,
        expect: refused10,
    });
    cases.push(Case {
        label: "TLS 1.2 strict.lab.test over IPv6",
        legacy: version::TLS1_2,
        sni: "strict.lab.test",
        sni_last: false,
        server: SERVER_V6,
        cut: Cut::Bytes50,
        expect: refused12,
    });
    let lines: Vec<String> = cases.iter().map(|c| run_case(&lab, c)).collect();
    println!("\nsummary of the builder cases:");
    for l in lines {
        println!("  {l}");
    }
}
