//! `cargo xtask bench xdp`: the XDP filter's cost per packet, measured in the
//! kernel with BPF_PROG_TEST_RUN, against a program that only returns
//! `XDP_PASS` (the bare baseline) in the same run on the same frames. Needs root.
//!
//! Stateless frames (no per-flow state read or left: traffic that is not TLS,
//! application data, a whole hello of a flow whose SYN was not seen) are each
//! run `REPEAT` times per measurement, `ROUNDS` measurements, and the median
//! average per run is reported.
//!
//! Stateful frames cannot be rerun: the second run of a hello's first segment
//! is a retransmission, the second SYN finds its anchor written. So each case
//! opens `FLOWS` distinct flows (source addresses and ports in 198.18.0.0/15,
//! to 198.18.0.1:443) and sends each flow's frames once, in order: the untimed
//! ones set up its state (its SYN), the timed ones are each run with repeat = 1
//! on the bare program and then on the filter. A repeat=1 figure includes the
//! test run's fixed cost (its clock reads, about 50 ns, in whole nanoseconds),
//! the same for both programs, so the net cost (the difference of the means)
//! is the filter's own. A sample above 3x its series' median + 1 µs had an
//! interrupt or the hypervisor in its window and is left out (the count is
//! printed). Every flow touches flow-table slots of its own, as under real
//! load (the default tables take tens of MB): the "reopened" column repeats
//! the case on one 4-tuple, reopened by a new SYN each time, whose slots stay
//! in cache, so the difference is the cost of memory traffic. The median over
//! `FLOW_ROUNDS` rounds is reported; each round starts from a new flow-hash
//! seed (no round or case sees another's state), and every frame's outcome
//! counter is checked. repeat = 1 also runs the filter's code cold (branch
//! predictors, instruction cache): the typical hello of a flow without SYN is
//! stateless and timed both ways, which shows that cost.
//!
//! SYN cookies: a SYN to a port whose cookies are engaged goes through
//! `gateway_xdp` (counted, tail call) to `cookie_syn`, which turns it into
//! its SYN-ACK in place; each SYN is therefore a new frame (new source port),
//! run once (repeat = 1) on the filter and on the bare program, and the net
//! cost is the difference of the means, as for the stateful frames. A pure ACK
//! of an established flow on that port (its cookie check fails in both slots:
//! the worst case for ordinary traffic) is stateless and timed like the first
//! table.
//!
//! Refusal events: the refused hello of the stateless table with events off,
//! with every refusal sent to the ring (drained between measurements), and
//! past the CPU's budget (counted only); each at most 10 ns above off.
//!
//! Targets: traffic that is not a hello at most 1.2x bare; a hello with a
//! typical SNI at most 100 ns (stateless, large repeat); a hello split over
//! two segments (both, net, new flows) at most twice the net cost of a
//! typical one-segment hello of a flow opened by a SYN, measured the same way;
//! a SYN answered with a cookie at most 150 ns net.

use std::net::{IpAddr, Ipv4Addr};

use gateway::{
    config::RefuseMode,
    frame::{TcpFrame, flags},
    hello::{ClientHello, Ext, records},
    tls_version::TlsVersion,
    xdp::{Counters, ProgramLog, Stat, XdpFilter, XdpPolicy},
};
use gateway_common::{
    syncookie::{PORT_ANSWER, PORT_CHECK},
    version,
};

/// Runs per measurement and rounds per stateless case (the median round is reported).
const REPEAT: u32 = 1_000_000;
const ROUNDS: usize = 5;
/// Distinct flows per round and rounds per stateful case (the median round is reported).
const FLOWS: u32 = 20_000;
const FLOW_ROUNDS: usize = 5;
/// Where the split hello's first segment ends.
const SPLIT_AT: usize = 1400;

/// What a figure must stay within.
#[derive(Clone, Copy)]
enum Target {
    None,
    /// Filter ns at most this times bare ns.
    Ratio(f64),
    /// Filter ns at most this.
    Nanos(f64),
}

impl Target {
    /// The target column for a row, counting a miss.
    fn mark(self, filter_ns: f64, bare_ns: f64, missed: &mut usize) -> String {
        match self {
            Target::None => "-".to_string(),
            Target::Ratio(t) => check(format!("<={t:.1}x"), filter_ns <= t * bare_ns, missed),
            Target::Nanos(t) => check(format!("<={t:.0}ns"), filter_ns <= t, missed),
        }
    }
}

fn check(label: String, ok: bool, missed: &mut usize) -> String {
    if ok {
        format!("{label} ok")
    } else {
        *missed += 1;
        format!("{label} MISS")
    }
}

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    expect: Stat,
    target: Target,
}

/// The ClientHellos of the cases, as TLS records.
struct Hellos {
    /// A browser-like TLS 1.3 hello with a typical SNI (about 420 bytes), one record.
    typical: Vec<u8>,
    /// The same message in five records (sent in one segment).
    five_records: Vec<u8>,
    /// A post-quantum-sized TLS 1.3 hello (about 2,100 bytes, X25519MLKEM768 key
    /// share), `supported_versions` last so only its second segment decides it.
    large: Vec<u8>,
}

impl Hellos {
    fn new() -> Hellos {
        let mut typical = ClientHello::modern("www.example.com");
        typical.extensions.as_mut().unwrap().push(Ext::padding(200));
        let message = typical.message();
        let five_records = records(&message, version::TLS1_0, message.len().div_ceil(5));
        let mut large = ClientHello::modern("www.example.com");
        let exts = large.extensions.as_mut().unwrap();
        exts.retain(|e| !matches!(e, Ext::SupportedVersions(_)));
        exts.push(Ext::key_share(1220));
        // The padding extension's header and supported_versions take 13 more bytes.
        let short = large.record().len() + 13;
        let exts = large.extensions.as_mut().unwrap();
        exts.push(Ext::padding(2100usize.saturating_sub(short)));
        exts.push(Ext::SupportedVersions(vec![0x3a3a, version::TLS1_3]));
        Hellos {
            typical: typical.record(),
            five_records,
            large: large.record(),
        }
    }
}

/// A frame of the stateless cases: one flow that never sends a SYN.
fn frame(dport: u16, payload: Vec<u8>) -> Vec<u8> {
    let (src, dst): (IpAddr, IpAddr) =
        ("198.18.0.2".parse().unwrap(), "198.18.0.1".parse().unwrap());
    TcpFrame::new(src, dst, 40000, dport, payload).build()
}

fn cases(hellos: &Hellos) -> Vec<Case> {
    let http =
        b"GET /index.html HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: bench\r\n\r\n".to_vec();
    let mut app_data = vec![23, 3, 3, 0x04, 0xb0];
    app_data.resize(5 + 0x4b0, 0x5c);
    let long_sni = format!("{}.example.com", "a".repeat(228));
    let tls10 = ClientHello::legacy(version::TLS1_0, Some("www.example.com")).record();
    let case = |name, frame, expect, target| Case {
        name,
        frame,
        expect,
        target,
    };
    vec![
        case(
            "non-TLS, other port (80)",
            frame(80, http.clone()),
            Stat::PassOtherPort,
            Target::Ratio(1.2),
        ),
        case(
            "non-TLS payload on 443",
            frame(443, http),
            Stat::PassNotTls,
            Target::Ratio(1.2),
        ),
        case(
            "TLS application data on 443",
            frame(443, app_data),
            Stat::PassNotTls,
            Target::Ratio(1.2),
        ),
        case(
            "pure ACK on 443",
            frame(443, Vec::new()),
            Stat::PassControl,
            Target::Ratio(1.2),
        ),
        case(
            "TLS 1.3 hello, typical SNI, passed",
            frame(443, hellos.typical.clone()),
            Stat::PassAllowed,
            Target::Nanos(100.0),
        ),
        case(
            "TLS 1.0 hello, typical SNI, dropped",
            frame(443, tls10),
            Stat::DropTls10,
            Target::Nanos(100.0),
        ),
        case(
            "TLS 1.3 hello, 242-byte SNI, passed",
            frame(443, ClientHello::modern(&long_sni).record()),
            Stat::PassAllowed,
            Target::None,
        ),
    ]
}

/// A frame a stateful flow sends.
#[derive(Clone)]
enum Send {
    /// The flow's SYN.
    Syn,
    /// A segment with these bytes at this offset of the client's stream.
    Data(usize, Vec<u8>),
}

/// Which 4-tuples the flows of a round use.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flows {
    /// `FLOWS` distinct flows: each touches flow-table slots of its own, as
    /// under real load (the default tables are tens of MB).
    New,
    /// One 4-tuple used `FLOWS` times (in the cases with a SYN, a new SYN with
    /// a new ISN restarts its state): its slots stay in cache, so the
    /// difference from `New` is the cost of memory traffic.
    Reopened,
}

/// One frame of every flow of a stateful case.
struct Step {
    send: Send,
    expect: Stat,
    /// The row its timings are reported in; `None`: run untimed (sets up the flow).
    row: Option<&'static str>,
}

impl Step {
    /// The frame of the `i`th flow of a round: its own ISN, and (for new
    /// flows) its own source address and port in 198.18.0.0/15.
    fn frame(&self, i: u32, flows: Flows) -> Vec<u8> {
        let tuple = if flows == Flows::New { i } else { FLOWS + 1 };
        let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 1, 0)) + tuple);
        let dst = Ipv4Addr::new(198, 18, 0, 1);
        let sport = 1024 + (tuple % 64_000) as u16;
        let isn = i.wrapping_mul(0x9e37_79b9);
        let mut f = TcpFrame::new(src.into(), dst.into(), sport, 443, Vec::new());
        match &self.send {
            Send::Syn => {
                f.flags = flags::SYN;
                f.seq = isn;
                f.ack = 0;
            }
            Send::Data(offset, bytes) => {
                f.seq = isn.wrapping_add(1 + *offset as u32);
                f.payload = bytes.clone();
            }
        }
        f.build()
    }
}

fn step(send: Send, expect: Stat, row: Option<&'static str>) -> Step {
    Step { send, expect, row }
}

const ROW_SYN: &str = "SYN to 443, each a new flow";
const ROW_TYPICAL: &str = "TLS 1.3 hello, typical, after SYN";
const ROW_FIRST: &str = "split hello: first 1400 B";
const ROW_SECOND: &str = "split hello: completing segment";
const ROW_WHOLE: &str = "split hello: both segments";
const ROW_FIVE: &str = "hello in 5 records, 1 segment";
const ROW_NO_SYN: &str = "TLS 1.3 hello, typical, no SYN";

/// The stateful cases: each a list of frames every flow sends in order.
fn flow_cases(hellos: &Hellos) -> Vec<Vec<Step>> {
    let syn = || step(Send::Syn, Stat::PassControl, None);
    let data = |bytes: &[u8]| Send::Data(0, bytes.to_vec());
    let (first, rest) = hellos.large.split_at(SPLIT_AT);
    vec![
        vec![step(Send::Syn, Stat::PassControl, Some(ROW_SYN))],
        vec![
            syn(),
            step(data(&hellos.typical), Stat::PassAllowed, Some(ROW_TYPICAL)),
        ],
        vec![
            syn(),
            step(data(first), Stat::PassHelloPartial, Some(ROW_FIRST)),
            step(
                Send::Data(SPLIT_AT, rest.to_vec()),
                Stat::PassAllowed,
                Some(ROW_SECOND),
            ),
        ],
        vec![
            syn(),
            step(
                data(&hellos.five_records),
                Stat::PassAllowed,
                Some(ROW_FIVE),
            ),
        ],
        // Stateless, but timed like the others: the cost of repeat = 1 itself.
        vec![step(
            data(&hellos.typical),
            Stat::PassAllowed,
            Some(ROW_NO_SYN),
        )],
    ]
}

/// Filter and bare means (ns per run) of one timed step.
#[derive(Clone, Copy, Debug)]
struct Timing {
    filter: f64,
    bare: f64,
}

impl Timing {
    fn net(&self) -> f64 {
        self.filter - self.bare
    }
}

/// Runs one flow's frames through `run_frame`, checking each outcome.
fn probe_flow(filter: &mut XdpFilter, steps: &[Step]) -> anyhow::Result<()> {
    filter.forget_flows()?;
    for (n, s) in steps.iter().enumerate() {
        let verdict = filter.run_frame(&s.frame(FLOWS, Flows::New))?;
        anyhow::ensure!(
            verdict.stat == s.expect,
            "{}: frame {n} decided {:?}, expected {:?}",
            s.row.unwrap_or("setup"),
            verdict.stat,
            s.expect
        );
    }
    Ok(())
}

/// Checks that the outcome counters moved by exactly one round of the case.
fn check_counts(steps: &[Step], before: &Counters, after: &Counters) -> anyhow::Result<()> {
    for (stat, n) in after.outcomes() {
        let frames = steps.iter().filter(|s| s.expect == stat).count() as u64;
        let (got, expected) = (n - before.get(stat), frames * u64::from(FLOWS));
        anyhow::ensure!(
            got == expected,
            "{stat:?} counted {got} times in a round, expected {expected}"
        );
    }
    Ok(())
}

/// The mean of repeat=1 samples without the interrupted ones: a sample above
/// 3x the median + 1 µs had an interrupt or the hypervisor in its window.
/// `left_out` counts (samples left out, samples).
fn clean_mean(mut v: Vec<f64>, left_out: &mut (usize, usize)) -> f64 {
    v.sort_by(f64::total_cmp);
    let cut = 3.0 * v[v.len() / 2] + 1000.0;
    let kept = v.partition_point(|&x| x <= cut);
    left_out.0 += v.len() - kept;
    left_out.1 += v.len();
    v[..kept].iter().sum::<f64>() / kept as f64
}

/// One round of a stateful case: every timed step's means over `FLOWS` flows.
/// Each frame is timed once on the bare program, then once on the filter.
fn flow_round(
    filter: &mut XdpFilter,
    steps: &[Step],
    flows: Flows,
    left_out: &mut (usize, usize),
) -> anyhow::Result<Vec<Timing>> {
    filter.forget_flows()?;
    let before = filter.stats().read()?;
    let timed = steps.iter().filter(|s| s.row.is_some()).count();
    let n = FLOWS as usize;
    let mut samples = vec![(Vec::with_capacity(n), Vec::with_capacity(n)); timed];
    for i in 0..FLOWS {
        let mut k = 0;
        for s in steps {
            let frame = s.frame(i, flows);
            if s.row.is_none() {
                filter.time_frame(&frame, 1, false)?;
                continue;
            }
            samples[k].1.push(filter.time_frame(&frame, 1, true)?);
            samples[k].0.push(filter.time_frame(&frame, 1, false)?);
            k += 1;
        }
    }
    check_counts(steps, &before, &filter.stats().read()?)?;
    Ok(samples
        .into_iter()
        .map(|(f, b)| Timing {
            filter: clean_mean(f, left_out),
            bare: clean_mean(b, left_out),
        })
        .collect())
}

/// One stateful row: new flows and the reopened flow (the median round by net cost each).
struct FlowRow {
    name: &'static str,
    new: Timing,
    reopened: Timing,
}

/// Every timed row of every stateful case, and (samples left out as interrupted, samples).
fn measure_flows(
    filter: &mut XdpFilter,
    hellos: &Hellos,
) -> anyhow::Result<(Vec<FlowRow>, (usize, usize))> {
    let mut rows = Vec::new();
    let mut left_out = (0, 0);
    for steps in flow_cases(hellos) {
        probe_flow(filter, &steps)?;
        let mut medians = Vec::new();
        for flows in [Flows::New, Flows::Reopened] {
            let mut rounds = Vec::new();
            for _ in 0..FLOW_ROUNDS {
                rounds.push(flow_round(filter, &steps, flows, &mut left_out)?);
            }
            medians.push(move |k: usize| {
                let mut per_round: Vec<Timing> = rounds.iter().map(|r| r[k]).collect();
                per_round.sort_by(|a, b| a.net().total_cmp(&b.net()));
                per_round[per_round.len() / 2]
            });
        }
        for (k, name) in steps.iter().filter_map(|s| s.row).enumerate() {
            rows.push(FlowRow {
                name,
                new: medians[0](k),
                reopened: medians[1](k),
            });
        }
    }
    Ok((rows, left_out))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The stateless table; returns the targets missed.
fn stateless_table(filter: &XdpFilter, hellos: &Hellos) -> anyhow::Result<usize> {
    println!(
        "Stateless frames: {REPEAT} runs x {ROUNDS} rounds (median)\n\n{:<40} {:>10} {:>10} {:>7} {:>13}",
        "case", "filter ns", "bare ns", "ratio", "target"
    );
    let mut missed = 0;
    for case in cases(hellos) {
        let verdict = filter.run_frame(&case.frame)?;
        anyhow::ensure!(
            verdict.stat == case.expect,
            "{}: the filter decided {:?}, expected {:?}",
            case.name,
            verdict.stat,
            case.expect
        );
        let mut filter_ns = Vec::new();
        let mut bare_ns = Vec::new();
        for _ in 0..ROUNDS {
            bare_ns.push(filter.time_frame(&case.frame, REPEAT, true)?);
            filter_ns.push(filter.time_frame(&case.frame, REPEAT, false)?);
        }
        let (f, b) = (median(filter_ns), median(bare_ns));
        let target = case.target.mark(f, b, &mut missed);
        println!(
            "{:<40} {:>10.1} {:>10.1} {:>6.2}x {:>13}",
            case.name,
            f,
            b,
            f / b,
            target
        );
    }
    Ok(missed)
}

/// The stateful table; returns the targets missed.
fn stateful_table(filter: &mut XdpFilter, hellos: &Hellos) -> anyhow::Result<usize> {
    let (mut rows, (left_out, samples)) = measure_flows(filter, hellos)?;
    let get = |name| rows.iter().find(|r| r.name == name).unwrap();
    let sum = |a: Timing, b: Timing| Timing {
        filter: a.filter + b.filter,
        bare: a.bare + b.bare,
    };
    let (first, second) = (get(ROW_FIRST), get(ROW_SECOND));
    let whole = FlowRow {
        name: ROW_WHOLE,
        new: sum(first.new, second.new),
        reopened: sum(first.reopened, second.reopened),
    };
    let typical_net = get(ROW_TYPICAL).new.net();
    let pos = rows.iter().position(|r| r.name == ROW_SECOND).unwrap() + 1;
    rows.insert(pos, whole);
    println!(
        "\nStateful frames: {FLOWS} new flows x {FLOW_ROUNDS} rounds (median), each frame once \
         (repeat = 1);\nreopened: one flow reopened {FLOWS} times, its table slots cached\n\n\
         {:<40} {:>10} {:>10} {:>7} {:>7} {:>9} {:>13}",
        "case", "filter ns", "bare ns", "net ns", "ratio", "reopened", "target"
    );
    let mut missed = 0;
    for r in rows {
        let (t, net) = (r.new, r.new.net());
        let target = match r.name {
            ROW_WHOLE => check("<=2x hello".into(), net <= 2.0 * typical_net, &mut missed),
            _ => "-".to_string(),
        };
        println!(
            "{:<40} {:>10.1} {:>10.1} {:>7.1} {:>6.2}x {:>9.1} {:>13}",
            r.name,
            t.filter,
            t.bare,
            net,
            t.filter / t.bare,
            r.reopened.net(),
            target
        );
    }
    println!("({left_out} of {samples} samples left out as interrupted)");
    Ok(missed)
}

/// A Linux-like SYN from 198.18.x.y:`sport` to 198.18.0.1:443 (MSS, SACK,
/// timestamps, window scale).
fn cookie_syn(sport: u16) -> Vec<u8> {
    let options = [
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
    ];
    let src = IpAddr::V4(Ipv4Addr::new(198, 18, (sport >> 8) as u8, sport as u8));
    let dst = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
    TcpFrame {
        seq: 0x1234_5678 ^ u32::from(sport),
        ack: 0,
        flags: flags::SYN,
        tcp_options: options.to_vec(),
        ..TcpFrame::new(src, dst, sport, 443, Vec::new())
    }
    .build()
}

/// The SYN-cookie table; returns the targets missed.
fn cookie_table(filter: &mut XdpFilter) -> anyhow::Result<usize> {
    {
        let control = filter.cookie_control();
        let mut control = gateway::xdp::cookies::lock(&control);
        control.rotate_keys()?;
        control.write_allow(0xf)?;
        control.set_port_flags(443, PORT_ANSWER | PORT_CHECK)?;
    }
    let mut missed = 0;
    let mut rounds = Vec::new();
    for round in 0..FLOW_ROUNDS {
        let (mut filter_ns, mut bare_ns) = (Vec::new(), Vec::new());
        for i in 0..FLOWS.min(20_000) {
            let frame = cookie_syn((1024 + i + round as u32 * 7) as u16);
            bare_ns.push(filter.time_frame(&frame, 1, true)?);
            filter_ns.push(filter.time_frame(&frame, 1, false)?);
        }
        let mut left_out = (0, 0);
        let f = clean_mean(filter_ns, &mut left_out);
        let b = clean_mean(bare_ns, &mut left_out);
        rounds.push(f - b);
    }
    let net = median(rounds);
    let (action, _) = filter.run_program("gateway_xdp", &cookie_syn(999))?;
    anyhow::ensure!(
        action == gateway::xdp::XDP_TX,
        "the SYN was not answered (action {action})"
    );
    let target = Target::Nanos(150.0).mark(net, 0.0, &mut missed);
    println!(
        "
SYN cookies (port 443 engaged): {FLOWS} new SYNs x {FLOW_ROUNDS} rounds (median),          repeat = 1

{:<40} {:>10} {:>13}
{:<40} {:>10.1} {:>13}",
        "case", "net ns", "target", "SYN answered with a cookie (XDP_TX)", net, target
    );
    let ack = TcpFrame {
        seq: 7,
        ack: 99,
        flags: flags::ACK,
        ..TcpFrame::new(
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)),
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
            40000,
            443,
            Vec::new(),
        )
    }
    .build();
    let (mut f, mut b) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        b.push(filter.time_frame(&ack, REPEAT, true)?);
        f.push(filter.time_frame(&ack, REPEAT, false)?);
    }
    let (f, b) = (median(f), median(b));
    println!(
        "{:<40} {:>10.1} {:>13}  (bare {b:.1} ns, {:.2}x)",
        "pure ACK, established flow, cookies on",
        f - b,
        "-",
        f / b
    );
    Ok(missed)
}

/// Runs per measurement of the events table: fewer records than the ring holds.
const EVENT_REPEAT: u32 = 2_000;

/// The refusal events' cost on the refused hello of the stateless table
/// (dropped, typical SNI), net of events off: every refusal sent (the ring
/// drained between measurements), and past the CPU's budget (counted only).
/// Target: at most 10 ns more than off for each. Returns the targets missed.
fn events_table(filter: &mut XdpFilter) -> anyhow::Result<usize> {
    let frame = frame(
        443,
        ClientHello::legacy(version::TLS1_0, Some("www.example.com")).record(),
    );
    let mut events = filter.take_refusal_events(0)?;
    let mut measure = |filter: &mut XdpFilter, budget: u32| -> anyhow::Result<(f64, usize)> {
        filter.set_event_budget(budget)?;
        let mut ns = Vec::new();
        let mut sent = 0;
        for _ in 0..ROUNDS * 20 {
            ns.push(filter.time_frame(&frame, EVENT_REPEAT, false)?);
            sent += events.drain(|_| {});
        }
        Ok((median(ns), sent))
    };
    let (off, none) = measure(filter, 0)?;
    let (on, sent) = measure(filter, u32::MAX)?;
    let (over, few) = measure(filter, 1)?;
    anyhow::ensure!(none == 0, "events off, yet {none} records came");
    let runs = (ROUNDS * 20) as u32 * EVENT_REPEAT;
    anyhow::ensure!(sent as u32 == runs, "{sent} records of {runs} refusals");
    anyhow::ensure!(few <= 3, "past the budget, {few} records came");
    let mut missed = 0;
    println!(
        "\nRefusal events: the TLS 1.0 hello above, {EVENT_REPEAT} runs x {} (median)\n\n\
         {:<40} {:>10} {:>10} {:>13}",
        ROUNDS * 20,
        "case",
        "ns",
        "+ns",
        "target"
    );
    println!("{:<40} {:>10.1} {:>10} {:>13}", "events off", off, "-", "-");
    for (name, ns) in [("every refusal sent", on), ("past the CPU's budget", over)] {
        let target = Target::Nanos(10.0).mark(ns - off, 0.0, &mut missed);
        println!("{name:<40} {ns:>10.1} {:>10.1} {target:>13}", ns - off);
    }
    filter.set_event_budget(0)?;
    Ok(missed)
}

/// Keeps every measurement on one CPU, so baseline and filter see the same caches.
fn pin_to_last_cpu() {
    // SAFETY: plain libc calls on a zeroed cpu_set_t owned by this frame.
    unsafe {
        let cpus = libc::sysconf(libc::_SC_NPROCESSORS_ONLN).max(1) as usize;
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpus - 1, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn main() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("bench xdp: needs root to load the XDP program and run BPF_PROG_TEST_RUN");
        std::process::exit(1);
    }
    pin_to_last_cpu();
    // Repeated runs reuse one frame, so a refused hello must stay as it was:
    // the bench uses `refuse = "drop"` (a reset rewrites the frame in place).
    let mut policy = XdpPolicy::uniform(TlsVersion::Tls12);
    policy.set_host("api.example.com", Some(TlsVersion::Tls13))?;
    policy.refuse = RefuseMode::Drop;
    let mut filter = XdpFilter::load(ProgramLog::Off)?;
    filter.apply(&policy)?;
    let hellos = Hellos::new();

    println!(
        "XDP filter vs a bare XDP_PASS program, BPF_PROG_TEST_RUN; hellos: typical {} B, \
         split {} B cut at {SPLIT_AT} B, 5 records {} B\n",
        hellos.typical.len(),
        hellos.large.len(),
        hellos.five_records.len()
    );
    filter.forget_flows()?;
    let mut missed = stateless_table(&filter, &hellos)?;
    missed += stateful_table(&mut filter, &hellos)?;
    missed += events_table(&mut filter)?;
    missed += cookie_table(&mut filter)?;
    println!("\n{missed} target(s) missed");
    Ok(())
}
