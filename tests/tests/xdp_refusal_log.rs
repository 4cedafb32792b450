//! The XDP filter's refusals in the handshake log, end to end in the
//! network-namespace lab: `gateway run` (XDP only, in front of the lab's TLS
//! server) with the handshake log on.
//!
//! - A refused whole hello (openssl, IPv4 and IPv6) and a refused split hello
//!   (two segments) each get a line with the client, the SNI, the offered
//!   version, split or whole, and what the filter did.
//! - A flood of real connections with sub-minimum hellos: the log writes at
//!   most its stated lines a second, every line parses, and the `Refusals` of
//!   its lines (itemised and summaries, including what the filter counted past
//!   its budget) add up to the filter's drop counters.

use std::{
    net::{Shutdown, SocketAddr, TcpStream},
    path::Path,
    time::{Duration, Instant},
};

use gateway::hello::{ClientHello, Ext};
use gateway_common::version;
use gateway_tests::{
    lab::{CLIENT_V4, CLIENT_V6, IFACE, Lab, SERVER_V4, SERVER_V6, metric},
    split::{Counters, chunks, send_chunks, wait_until},
};
use serde_json::Value;

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

/// The log's own limits in the flood test.
const LINES_PER_SECOND: u64 = 20;
const EVENTS_PER_CPU: u64 = 50;

fn config(extra_log: &str) -> String {
    format!(
        "[xdp]\ninterface = \"{IFACE}\"\n\n[zone]\nmin_tls_version = \"1.2\"\n\n\
         [[hostname]]\nname = \"strict.lab.test\"\nmin_tls_version = \"1.3\"\n\n\
         [[hostname]]\nname = \"lab.test\"\n\n\
         [log]\n{extra_log}\n[log.handshake]\noutput = \"handshake.log\"\n"
    )
}

fn lab_with_gateway(extra_log: &str) -> Lab {
    let mut lab = Lab::create().expect("create the lab");
    let (cert, key) = lab
        .self_signed(&["lab.test", "strict.lab.test"])
        .expect("make a certificate");
    lab.start_tls_server(&cert, &key)
        .expect("start the TLS server");
    lab.start_gateway(Path::new(GATEWAY), &config(extra_log))
        .expect("start the gateway");
    lab
}

/// Every line of the handshake log, each parsed (a line that does not parse fails).
fn log_lines(lab: &Lab) -> Vec<Value> {
    let text = std::fs::read_to_string(lab.dir.join("handshake.log")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect()
}

fn xdp_lines(lab: &Lab) -> Vec<Value> {
    log_lines(lab)
        .into_iter()
        .filter(|l| l["Layer"] == "xdp")
        .collect()
}

/// The XDP lines of single refusals (not the summaries).
fn itemised_lines(lab: &Lab) -> Vec<Value> {
    (xdp_lines(lab).into_iter())
        .filter(|l| l["Summary"] == false)
        .collect()
}

/// Waits until the log holds `n` itemised XDP lines (the ring is drained
/// every 100 ms).
fn wait_for_xdp_lines(lab: &Lab, n: usize) -> Vec<Value> {
    wait_until(Duration::from_secs(5), || itemised_lines(lab).len() >= n);
    itemised_lines(lab)
}

/// A TLS 1.1 hello of 2,100 bytes for `sni`, the SNI after the padding.
fn split_hello(sni: &str) -> Vec<u8> {
    let with_padding = |pad: usize| {
        let mut h = ClientHello::legacy(version::TLS1_1, None);
        let exts = h.extensions.as_mut().unwrap();
        exts.push(Ext::padding(pad));
        exts.push(Ext::sni(sni));
        h.record()
    };
    with_padding(2100 - with_padding(0).len())
}

#[test]
fn kernel_refusals_of_whole_and_split_hellos_are_logged_with_their_client_sni_and_version() {
    let lab = lab_with_gateway("");
    let before = Counters::take(&lab);

    let whole = lab.s_client(SERVER_V4, "lab.test", &["-tls1"]);
    assert!(!whole.ok, "TLS 1.0 must be refused:\n{}", whole.output);
    let lines = wait_for_xdp_lines(&lab, 1);
    println!("whole, IPv4: {lines:?}");
    assert_eq!(lines.len(), 1, "one line: {lines:#?}");
    let l = &lines[0];
    assert_eq!(l["ClientIP"], CLIENT_V4);
    assert!(l["ClientPort"].as_u64().unwrap() > 0);
    assert_eq!(l["ClientTlsClientHelloServerName"], "lab.test");
    assert_eq!(l["ClientTlsOfferedProtocol"], "TLSv1");
    assert_eq!(l["ClientTlsStatus"], "version_below_minimum");
    assert_eq!(l["SplitHello"], false);
    assert_eq!(l["XdpAction"], "reset");
    assert_eq!(l["Summary"], false);
    assert_eq!(l["Refusals"], 1);
    assert!(l["Timestamp"].as_str().unwrap().ends_with('Z'));

    let server: SocketAddr = format!("{SERVER_V4}:443").parse().unwrap();
    let hello = split_hello("strict.lab.test");
    let run = send_chunks(
        &lab,
        server,
        chunks(&hello, &[1000]),
        Duration::from_millis(3),
        Duration::from_secs(3),
    )
    .expect("send the split hello");
    let lines = wait_for_xdp_lines(&lab, 2);
    println!("split: {:?}", lines.get(1));
    let l = &lines[1];
    assert_eq!(l["ClientIP"], CLIENT_V4);
    assert_eq!(l["ClientPort"], run.local_port);
    assert_eq!(l["ClientTlsClientHelloServerName"], "strict.lab.test");
    assert_eq!(l["ClientTlsOfferedProtocol"], "TLSv1.1");
    assert_eq!(l["SplitHello"], true, "decided from two segments: {l}");

    let v6 = lab.s_client(SERVER_V6, "strict.lab.test", &["-tls1_2"]);
    assert!(
        !v6.ok,
        "TLS 1.2 to a 1.3 hostname must be refused:\n{}",
        v6.output
    );
    let lines = wait_for_xdp_lines(&lab, 3);
    println!("whole, IPv6: {:?}", lines.get(2));
    let l = &lines[2];
    assert_eq!(l["ClientIP"], CLIENT_V6);
    assert_eq!(l["ClientTlsClientHelloServerName"], "strict.lab.test");
    assert_eq!(l["ClientTlsOfferedProtocol"], "TLSv1.2");

    // An allowed hello leaves no line.
    let ok = lab.s_client(SERVER_V4, "lab.test", &["-tls1_3"]);
    assert!(ok.ok, "TLS 1.3 must pass:\n{}", ok.output);
    std::thread::sleep(Duration::from_millis(1500));
    let itemised = itemised_lines(&lab);
    assert_eq!(itemised.len(), 3, "{itemised:#?}");
    let summaries: u64 = (xdp_lines(&lab).iter())
        .filter(|l| l["Summary"] == true)
        .map(|l| l["Refusals"].as_u64().unwrap())
        .sum();
    assert_eq!(summaries, 0, "nothing folded");
    let after = Counters::take(&lab);
    let refused = refusals(&after) - refusals(&before);
    assert_eq!(refused, 3.0, "moved: {}", before.moved(&after));
    let scrape = lab.metrics().unwrap();
    let itemised = metric(
        &scrape,
        "gateway_xdp_refusal_events_total",
        &[("outcome", "itemised")],
    );
    assert_eq!(itemised, 3.0);
}

/// Refused hellos by the filter's counters (retransmissions of refused
/// hellos are not refusals of their own).
fn refusals(c: &Counters) -> f64 {
    [
        "sslv2",
        "ssl3",
        "below_min_tls1_0",
        "below_min_tls1_1",
        "below_min_tls1_2",
    ]
    .iter()
    .map(|reason| c.packets("drop", reason))
    .sum()
}

/// Opens `count` connections from the client namespace, each sending a TLS
/// 1.0 hello to one of 50 SNIs, on `threads` threads (started inside the
/// namespace, so they are in it too); stops after 20 s whatever happened.
/// Returns the connections made.
fn flood(lab: &Lab, count: usize, threads: usize) -> usize {
    lab.in_client_thread(move || {
        let handles: Vec<_> = (0..threads)
            .map(|t| std::thread::spawn(move || flood_thread(t, threads, count)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    })
    .expect("flood from the client namespace")
}

/// One flood thread: connections `t`, `t + threads`, … below `count`.
fn flood_thread(t: usize, threads: usize, count: usize) -> usize {
    use std::io::Write;
    let server: SocketAddr = format!("{SERVER_V4}:443").parse().unwrap();
    let hellos: Vec<Vec<u8>> = (0..50)
        .map(|i| ClientHello::legacy(version::TLS1_0, Some(&format!("c{i}.lab.test"))).record())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut made = 0;
    for i in (t..count).step_by(threads) {
        if Instant::now() > deadline {
            break;
        }
        let Ok(mut s) = TcpStream::connect_timeout(&server, Duration::from_secs(1)) else {
            continue;
        };
        if s.write_all(&hellos[i % hellos.len()]).is_ok() {
            made += 1;
        }
        let _ = s.shutdown(Shutdown::Both);
    }
    made
}

#[test]
fn a_flood_of_refused_hellos_writes_at_most_its_rate_and_every_refusal_is_counted() {
    let lab = lab_with_gateway(&format!(
        "xdp_lines_per_second = {LINES_PER_SECOND}\nxdp_events_per_cpu = {EVENTS_PER_CPU}\n"
    ));
    let before = Counters::take(&lab);
    let start = Instant::now();
    let made = flood(&lab, 4000, 4);
    let took = start.elapsed();
    println!("flood: {made} connections with a TLS 1.0 hello in {took:.1?}");
    assert!(made > 1000, "the flood made only {made} connections");
    // The last second's summary comes at most a second and a drain later.
    let after = Counters::take(&lab);
    let refused = refusals(&after) - refusals(&before);
    let counted = |lines: &[Value]| -> u64 {
        lines
            .iter()
            .map(|l| l["Refusals"].as_u64().expect("Refusals"))
            .sum()
    };
    wait_until(Duration::from_secs(5), || {
        counted(&xdp_lines(&lab)) as f64 >= refused
    });
    std::thread::sleep(Duration::from_millis(1200));
    let lines = xdp_lines(&lab);
    let itemised: Vec<&Value> = lines.iter().filter(|l| l["Summary"] == false).collect();
    let summaries: Vec<&Value> = lines.iter().filter(|l| l["Summary"] == true).collect();
    let not_sent: u64 = summaries
        .iter()
        .map(|l| l["RefusalsNotSent"].as_u64().unwrap())
        .sum();
    println!(
        "refused by the filter: {refused}; log: {} itemised lines, {} summaries ({} refusals \
         summarised, {not_sent} of them not sent by the filter past its budget); {} lines in all",
        itemised.len(),
        summaries.len(),
        counted(&lines) - itemised.len() as u64,
        lines.len()
    );
    if let Some(s) = summaries.first() {
        println!("a summary: {s}");
    }
    assert!(
        refused >= made as f64 * 0.9,
        "the filter refused {refused} of {made}"
    );
    assert_eq!(
        counted(&lines) as f64,
        refused,
        "the lines' Refusals must add up to the filter's drop counters"
    );
    assert!(not_sent > 0, "the filter's budget was never spent");
    // Between two summaries (a second each), at most the stated lines.
    let mut run = 0;
    for l in &lines {
        if l["Summary"] == true {
            run = 0;
        } else {
            run += 1;
            assert!(
                run <= LINES_PER_SECOND,
                "more than {LINES_PER_SECOND} lines in a second"
            );
        }
    }
    let seconds = took.as_secs_f64().ceil() as u64 + 3;
    assert!(
        itemised.len() as u64 <= LINES_PER_SECOND * seconds,
        "{} itemised lines in about {seconds} s",
        itemised.len()
    );
    for s in &summaries {
        let top = s["Top"].as_array().expect("Top");
        assert!(top.len() <= 10);
        for t in top {
            assert_eq!(t["ClientIP"], CLIENT_V4);
            assert!(
                t["ClientTlsClientHelloServerName"]
                    .as_str()
                    .unwrap()
                    .ends_with(".lab.test")
            );
        }
    }
    let scrape = lab.metrics().unwrap();
    let written = metric(&scrape, "gateway_log_lines_total", &[("log", "handshake")]);
    assert_eq!(
        written,
        log_lines(&lab).len() as f64,
        "every line counted as written"
    );
}
