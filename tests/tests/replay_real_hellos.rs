//! Real clients' ClientHellos, cut up adversarially, through `gateway xdp replay`.
//!
//! The hellos are captured on loopback from `openssl s_client`, Python's `ssl`
//! and `curl` at every TLS version they offer, to `old.test` and `strict.test`
//! (and in capitals, and without a name). Each is then sent as many flows: cut
//! into two segments at every field and record boundary and at chosen and random
//! offsets; its first 50 bytes one byte a segment; re-framed into 2 and 5 TLS
//! records (the handshake message split across them) and cut again; padded to a
//! post-quantum browser's ~2,100 bytes; in three segments; with its first
//! segment retransmitted or a middle one duplicated; with sequence numbers that
//! wrap inside it; over IPv6. Every flow is written twice, with and without its
//! SYN, one flow a pcap file, and all are replayed through the real program under
//! a zone minimum of TLS 1.2 and 1.3 for strict.test.
//!
//! The expectation is computed from the captured bytes by this test's own parser:
//! a hello is refused iff its highest offered version is below its SNI's minimum.
//! Every such flow must have a packet dropped with `below_min_*` (and that
//! packet's SNI and version must be the hello's); no packet of any other flow may
//! be dropped. The test prints a table per kind of variant and then every
//! miss, frame by frame.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::PathBuf,
    process::Command,
    time::Instant,
};

use gateway::{
    frame::{TcpFrame, flags},
    pcap::write_pcap,
};
use gateway_tests::{CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6, require_root};
use rand::{Rng, SeedableRng, rngs::StdRng};
use real_hellos::{Captured, Hello, capture_all, reframe, version_name};
use serde_json::Value;

mod real_hellos;

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");
const POLICY: [&str; 4] = ["--zone-min-tls", "1.2", "--host-min-tls", "strict.test=1.3"];
const SEED: u64 = 0x5eed_4e11;
/// Payload of a full-sized segment over IPv4 / IPv6 with TCP timestamps.
const MSS_V4: usize = 1448;
const MSS_V6: usize = 1428;

/// One flow: a stream of bytes (the client's, or re-framed or padded) and the
/// segments it arrives in, in order, as byte ranges of that stream.
struct Flow {
    hello: usize,
    category: &'static str,
    desc: String,
    stream: Vec<u8>,
    segments: Vec<(usize, usize)>,
    v6: bool,
    isn: u32,
}

/// Segments of a stream of `len` bytes cut at `cuts` (out-of-range and repeated cuts ignored).
fn cut(len: usize, cuts: &[usize]) -> Vec<(usize, usize)> {
    let mut b: Vec<usize> = cuts.iter().copied().filter(|&c| c > 0 && c < len).collect();
    b.sort_unstable();
    b.dedup();
    b.insert(0, 0);
    b.push(len);
    b.windows(2).map(|w| (w[0], w[1])).collect()
}

const WHOLE: &str = "one segment, as the client sent it";
const FIELD: &str = "two segments, cut at a field or record boundary";
const CHOSEN: &str = "two segments, cut at 1/3/5/6/9/11/44/76/middle/last byte";
const RANDOM: &str = "two segments, cut at a random offset";
const BYTES: &str = "first 50 bytes in 1-byte segments, then the rest";
const REC2: &str = "2 records, cut into segments";
const REC5: &str = "5 records, cut into segments";
const PADDED: &str = "padded to 2,100 bytes, two full segments (or 536-byte ones)";
const THREE: &str = "three segments";
const RETRANS: &str = "first segment retransmitted (same seq, same bytes), then the rest";
const DUP: &str = "a middle segment duplicated";
const V6: &str = "IPv6 (halved, 1-byte prefix, 5 records, padded)";
const WRAP: &str = "sequence numbers wrap (to 0) at the middle of the hello";

/// Every variant of one captured hello.
fn variants(index: usize, c: &Captured, rng: &mut StdRng) -> Vec<Flow> {
    let s = &c.stream;
    let n = s.len();
    let (msg, rv) = (&c.hello.message, c.hello.record_version);
    let keeps = |stream: &[u8]| {
        let h = Hello::parse(stream);
        let same = (h.sni.as_ref(), h.max_version()) == (c.hello.sni.as_ref(), c.max);
        assert!(
            same,
            "{}: re-framing or padding changed the hello",
            c.client.label
        );
    };
    let mut out = Vec::new();
    let mut add = |category, desc: String, stream: &[u8], segments| {
        let (stream, v6, isn) = (stream.to_vec(), category == V6, 0);
        out.push(Flow {
            hello: index,
            category,
            desc,
            stream,
            segments,
            v6,
            isn,
        });
    };
    let rand_cuts = |len: usize, k: usize, rng: &mut StdRng| -> Vec<usize> {
        (0..k).map(|_| rng.random_range(1..len)).collect()
    };
    add(WHOLE, "whole".into(), s, cut(n, &[]));
    for &at in &c.hello.stream_cuts() {
        add(FIELD, format!("cut at {at}"), s, cut(n, &[at]));
    }
    for at in [1, 3, 5, 6, 9, 11, 44, 76, n / 2, n - 1] {
        add(CHOSEN, format!("cut at {at}"), s, cut(n, &[at]));
    }
    for at in rand_cuts(n, 3, rng) {
        add(RANDOM, format!("cut at {at}"), s, cut(n, &[at]));
    }
    let bytes: Vec<usize> = (1..=50).collect();
    add(BYTES, "1-byte x50".into(), s, cut(n, &bytes));
    let uneven = vec![1, 4, 39, (39 + msg.len()) / 2];
    for (what, rec_cuts) in [
        ("2 records (message halved)", vec![msg.len() / 2]),
        ("2 records (after the handshake header)", vec![4]),
        (
            "5 records (even)",
            (1..5).map(|i| i * msg.len() / 5).collect(),
        ),
        ("5 records (1, 3, 35 bytes, then halves)", uneven.clone()),
    ] {
        let r = reframe(msg, rv, &rec_cuts);
        keeps(&r);
        // Where each record after the first begins, in the stream.
        let starts: Vec<usize> = (rec_cuts.iter().enumerate())
            .map(|(i, &m)| m + 5 * (i + 1))
            .collect();
        let category = if rec_cuts.len() == 1 { REC2 } else { REC5 };
        let mut segmentations = vec![
            ("one segment".to_string(), vec![]),
            ("each record a segment".into(), starts.clone()),
            (
                "cut inside each record header".into(),
                starts.iter().map(|s| s + 3).collect(),
            ),
            (
                "cut before each record's last byte".into(),
                starts.iter().map(|s| s - 1).collect(),
            ),
            ("cut at the middle".into(), vec![r.len() / 2]),
        ];
        for k in [1, 2] {
            let rc = rand_cuts(r.len(), k, rng);
            segmentations.push((format!("cut at random {rc:?}"), rc));
        }
        for (how, cuts) in segmentations {
            add(category, format!("{what}, {how}"), &r, cut(r.len(), &cuts));
        }
    }
    // A post-quantum browser's size: ~2,100 bytes on the wire.
    let padded = c.hello.padded(2100 - 5);
    let p1 = gateway::hello::records(&padded, rv, 16384);
    let p2 = reframe(&padded, rv, &[padded.len() / 2]);
    keeps(&p1);
    keeps(&p2);
    let small = [536, 1072, 1608];
    add(
        PADDED,
        format!("one record, cut at {MSS_V4}"),
        &p1,
        cut(p1.len(), &[MSS_V4]),
    );
    add(
        PADDED,
        format!("2 records, cut at {MSS_V4}"),
        &p2,
        cut(p2.len(), &[MSS_V4]),
    );
    add(
        PADDED,
        "one record, 536-byte segments".into(),
        &p1,
        cut(p1.len(), &small),
    );
    let mut pairs = vec![(5, 9), (1, n - 1), (n / 3, 2 * n / 3), (44, 76)];
    pairs.extend((0..2).map(|_| (rng.random_range(1..n), rng.random_range(1..n))));
    for (a, b) in pairs {
        add(THREE, format!("cuts at {a} and {b}"), s, cut(n, &[a, b]));
    }
    for at in [1, 6, 11, n / 2, n - 1] {
        add(
            RETRANS,
            format!("cut at {at}"),
            s,
            vec![(0, at), (0, at), (at, n)],
        );
    }
    for (a, b) in [(n / 3, 2 * n / 3), (5, 9), (11, n / 2)] {
        let segments = vec![(0, a), (a, b), (a, b), (b, n)];
        add(
            DUP,
            format!("cuts at {a} and {b}, [{a}..{b}) twice"),
            s,
            segments,
        );
    }
    let r5 = reframe(msg, rv, &uneven);
    let r5_cuts = [9, 17, 57, (39 + msg.len()) / 2 + 23]; // inside each record header
    add(V6, "cut at the middle".into(), s, cut(n, &[n / 2]));
    add(
        V6,
        "first 50 bytes in 1-byte segments".into(),
        s,
        cut(n, &bytes),
    );
    add(
        V6,
        "5 records, cut in headers".into(),
        &r5,
        cut(r5.len(), &r5_cuts),
    );
    add(
        V6,
        format!("padded, cut at {MSS_V6}"),
        &p1,
        cut(p1.len(), &[MSS_V6]),
    );
    add(WRAP, "at a boundary".into(), s, cut(n, &[n / 2]));
    add(WRAP, "inside one".into(), s, cut(n, &[n / 3, 2 * n / 3]));
    for f in &mut out {
        // Random ISNs, but for WRAP one that makes the sequence number wrap at the middle.
        f.isn = if f.category == WRAP {
            0u32.wrapping_sub(1 + (n / 2) as u32)
        } else {
            rng.random()
        };
    }
    out
}

/// The frames of `flow`, with or without its SYN (whose seq is the ISN; data starts at ISN + 1).
fn frames(flow: &Flow, syn: bool) -> Vec<Vec<u8>> {
    let (src, dst): (IpAddr, IpAddr) = if flow.v6 {
        (CLIENT_V6, SERVER_V6)
    } else {
        (CLIENT_V4, SERVER_V4)
    };
    // Every file is the same connection: the replay must start each file afresh.
    let mut f = TcpFrame::new(src, dst, 40000, 443, Vec::new());
    let mut out = Vec::new();
    if syn {
        f.flags = flags::SYN;
        f.seq = flow.isn;
        f.ack = 0;
        out.push(f.build());
    }
    for &(a, b) in &flow.segments {
        f.flags = flags::PSH | flags::ACK;
        f.seq = flow.isn.wrapping_add(1 + a as u32);
        f.ack = 1;
        f.payload = flow.stream[a..b].to_vec();
        out.push(f.build());
    }
    out
}

/// How a category fared, with and without SYN.
#[derive(Default)]
struct Tally {
    expected: usize,
    refused: usize,
    allowed: usize,
    false_drops: usize,
    decided_allowed: usize,
}

#[test]
fn real_hellos_cut_up_are_refused_below_the_minimum_and_never_dropped_above() {
    require_root("BPF_PROG_TEST_RUN in `gateway xdp replay`");
    let start = Instant::now();
    let captured = capture_all();

    let mut rng = StdRng::seed_from_u64(SEED);
    let flows: Vec<Flow> = (0..captured.len())
        .flat_map(|i| variants(i, &captured[i], &mut rng))
        .collect();
    let dir = std::env::temp_dir().join(format!("gateway-real-hellos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files: Vec<(PathBuf, usize, bool, usize)> = Vec::new(); // path, flow, syn, frames
    for (i, flow) in flows.iter().enumerate() {
        for syn in [true, false] {
            let path = dir.join(format!("{i:05}-{}.pcap", if syn { "syn" } else { "nosyn" }));
            let fr = frames(flow, syn);
            write_pcap(std::fs::File::create(&path).unwrap(), &fr).unwrap();
            files.push((path, i, syn, fr.len()));
        }
    }
    let built = Instant::now();
    let mut lines: HashMap<String, Vec<Value>> = HashMap::new();
    for chunk in files.chunks(2500) {
        let out = Command::new(GATEWAY)
            .args(["xdp", "replay"])
            .args(POLICY)
            .args(chunk.iter().map(|f| &f.0))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "replay failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for l in String::from_utf8(out.stdout).unwrap().lines() {
            let v: Value = serde_json::from_str(l).expect("every stdout line is JSON");
            lines
                .entry(v["file"].as_str().unwrap().to_string())
                .or_default()
                .push(v);
        }
    }
    eprintln!(
        "{} flows, {} files, replayed in {:.1?} ({:.1?} building them)",
        flows.len(),
        files.len(),
        built.elapsed(),
        built - start
    );

    let mut tally: BTreeMap<(usize, &str, bool), Tally> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    let mut failures = Vec::new();
    for (path, i, syn, count) in &files {
        let (flow, c) = (&flows[*i], &captured[flows[*i].hello]);
        if !order.contains(&flow.category) {
            order.push(flow.category);
        }
        let rank = order.iter().position(|x| *x == flow.category).unwrap();
        let got = &lines[&path.display().to_string()];
        assert_eq!(got.len(), *count, "{}: one line per packet", path.display());
        let t = tally.entry((rank, flow.category, !*syn)).or_default();
        let drop = got.iter().find(|l| l["verdict"] == "drop");
        let problem = if c.refused {
            t.expected += 1;
            let want = format!("below_min_tls1_{}", c.max - 0x0301);
            match drop {
                None => Some("NOT REFUSED (sub-minimum hello passed)".to_string()),
                Some(l) => {
                    let sni_ok = l["sni"].as_str().map(str::to_ascii_lowercase)
                        == c.hello.sni.as_deref().map(str::to_ascii_lowercase);
                    if l["reason"] == want.as_str()
                        && l["max_version"] == version_name(c.max).as_str()
                        && sni_ok
                    {
                        t.refused += 1;
                        None
                    } else {
                        Some(format!("refused, but not as {want} for this hello: {l}"))
                    }
                }
            }
        } else {
            t.allowed += 1;
            if got.iter().any(|l| l["reason"] == "allowed") {
                t.decided_allowed += 1;
            }
            drop.map(|l| {
                t.false_drops += 1;
                format!("FALSE DROP of an allowed hello: {l}")
            })
        };
        if let Some(p) = problem {
            failures.push(describe(path, flow, c, *syn, got, &p));
        }
    }

    eprintln!(
        "\nzone minimum 1.2, strict.test 1.3 ({} real hellos, each variant with and without SYN):",
        captured.len()
    );
    for ((_, category, no_syn), t) in &tally {
        eprintln!(
            "  {category} [{}]: {} of {} refused; {} false drops ({} allowed flows, {} decided \"allowed\" in the kernel)",
            if *no_syn { "no SYN" } else { "SYN" },
            t.refused,
            t.expected,
            t.false_drops,
            t.allowed,
            t.decided_allowed
        );
    }
    eprintln!("total run time {:.1?}", start.elapsed());
    for f in &failures {
        eprintln!("\n{f}");
    }
    assert!(
        failures.is_empty(),
        "{} flows went wrong (see above)",
        failures.len()
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// A failed flow, frame by frame, with the program's line for each.
fn describe(
    path: &std::path::Path,
    flow: &Flow,
    c: &Captured,
    syn: bool,
    got: &[Value],
    problem: &str,
) -> String {
    let mut s = format!(
        "{problem}\n  file {} ({}, {}): {} to {:?}, max {} offered; {}: {}; ISN {:#010x}",
        path.display(),
        if flow.v6 { "IPv6" } else { "IPv4" },
        if syn { "SYN first" } else { "no SYN" },
        c.client.label,
        c.hello.sni,
        version_name(c.max),
        flow.category,
        flow.desc,
        flow.isn
    );
    let mut ranges = Vec::new();
    if syn {
        ranges.push("SYN".to_string());
    }
    ranges.extend(
        flow.segments
            .iter()
            .map(|(a, b)| format!("stream [{a}..{b}) {} B", b - a)),
    );
    for (r, l) in ranges.iter().zip(got) {
        s += &format!(
            "\n    packet {}: {r:<26} {} {}",
            l["packet"], l["verdict"], l["reason"]
        );
    }
    s
}
