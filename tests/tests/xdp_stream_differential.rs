//! Differential test over whole flows: the XDP program (in the kernel, through
//! BPF_PROG_TEST_RUN) and the userspace reference model
//! (`gateway::hello::reference::Flow`) agree on every segment of random
//! ClientHellos put into records of random sizes (1-byte records included,
//! some headers mutated) and cut into TCP segments at random boundaries (runs
//! of 1-byte segments included), with or without a SYN first, with identical
//! retransmissions, reordering, losses, repacketised and corrupted
//! retransmissions.
//!
//! Each case is one flow with its own addresses and port, so cases share no
//! state in the program (the flow tables are forgotten between cases too).
//!
//! `GATEWAY_DIFF_CASES` sets the number of cases over all the tests of this
//! file (default 100,000), e.g. for a long run:
//! `GATEWAY_DIFF_CASES=5000000 cargo test --release -p gateway-tests --test xdp_stream_differential -- --nocapture`

use std::{
    cell::RefCell,
    collections::{BTreeMap, HashMap},
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

use gateway::{
    config::RefuseMode,
    frame::{TPID_8021Q, TcpFrame, flags, tcp_view},
    hello::reference::{Action, Flow, Judgement},
    tls_version::TlsVersion,
    xdp::{FrameVerdict, XDP_DROP, XDP_PASS, XdpPolicy},
};
use gateway_common::Stat;
use gateway_tests::{SERVER_V4, SERVER_V6, loaded_filter, policy};
use stream_cases::{Case, Plan, plan};

mod stream_cases;
use proptest::{
    prelude::*,
    test_runner::{Config, FileFailurePersistence, RngAlgorithm, TestCaseError, TestRunner},
};

/// Cases over all the tests of this file unless `GATEWAY_DIFF_CASES` says otherwise.
const DEFAULT_CASES: u64 = 100_000;

/// This test's share of the cases, in percent of `GATEWAY_DIFF_CASES`.
fn cases(percent: u64) -> u32 {
    let total = std::env::var("GATEWAY_DIFF_CASES")
        .ok()
        .map(|v| {
            v.parse::<u64>()
                .expect("GATEWAY_DIFF_CASES: a number of cases")
        })
        .unwrap_or(DEFAULT_CASES);
    (total * percent / 100).max(1) as u32
}

/// The policy: a zone minimum, hostnames above and below it, reset mode.
fn zone_policy() -> XdpPolicy {
    policy(
        TlsVersion::Tls12,
        &[
            ("api.test", TlsVersion::Tls13),
            ("old.test", TlsVersion::Tls10),
            ("x.y.z.test", TlsVersion::Tls11),
        ],
    )
}

/// A client address and port no other case of this process uses.
fn fresh_client(v6: bool) -> (IpAddr, u16) {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let port = 1024 + (n % 60_000) as u16;
    let host = 2 + (n / 60_000) as u32;
    let addr = if v6 {
        IpAddr::V6(Ipv6Addr::new(
            0xfd00,
            0,
            0,
            1,
            0,
            0,
            (host >> 16) as u16,
            host as u16,
        ))
    } else {
        // 198.18.0.0/15, beside the server's 198.18.0.1.
        IpAddr::V4(Ipv4Addr::from(0xc612_0000 | (host & 0x1_ffff)))
    };
    (addr, port)
}

/// Runs `percent` of the cases of `strategy` through a filter loaded with
/// `policy` and through the model, and fails with the first disagreement.
fn differential(
    name: &str,
    percent: u64,
    policy: XdpPolicy,
    strategy: impl Strategy<Value = Plan>,
) {
    let mut filter = loaded_filter(&policy);
    let runner = RefCell::new(filter.frame_runner().expect("a frame runner"));
    let cases = cases(percent);
    let config = Config {
        cases,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        // ChaCha, the default, costs more than the rest of a case in a debug build.
        rng_algorithm: RngAlgorithm::XorShift,
        ..Config::default()
    };
    // Outcomes seen (stat, hello reported, split counter), to show what was covered.
    let tally = RefCell::new(HashMap::<(Stat, bool, Option<Stat>), u64>::new());
    let started = Instant::now();
    let result = TestRunner::new(config).run(&strategy, |plan| {
        let mut runner = runner.borrow_mut();
        runner.forget_flows().expect("forget flows");
        let case = plan.case();
        let mut tally = tally.borrow_mut();
        let mut run = |frame: &[u8]| {
            let v = runner.run(frame).expect("BPF_PROG_TEST_RUN");
            *tally
                .entry((v.stat, v.hello.is_some(), v.split))
                .or_default() += 1;
            v
        };
        check_flow(&mut run, &policy, &case)
    });
    let tally: BTreeMap<String, u64> = tally
        .into_inner()
        .into_iter()
        .map(|((stat, hello, split), n)| {
            let hello = if hello { " +hello" } else { "" };
            let split = split.map_or(String::new(), |s| format!(" {s:?}"));
            (format!("{stat:?}{hello}{split}"), n)
        })
        .collect();
    eprintln!(
        "{name}: {cases} cases, {} frames (shrinking included) in {:.1?}; outcomes: {tally:?}",
        tally.values().sum::<u64>(),
        started.elapsed()
    );
    if let Err(e) = result {
        panic!("{name}: program and model disagree: {e}");
    }
}

/// Sends the case's frames one by one to the program and to the model.
fn check_flow(
    run: &mut dyn FnMut(&[u8]) -> FrameVerdict,
    policy: &XdpPolicy,
    case: &Case,
) -> Result<(), TestCaseError> {
    let wire = case.wire;
    let (src, sport) = fresh_client(wire.v6);
    let dst = if wire.v6 { SERVER_V6 } else { SERVER_V4 };
    let mut model = Flow::new(policy);
    let mut seen = Vec::new();
    for (i, send) in case.sends.iter().enumerate() {
        let mut frame = TcpFrame::new(src, dst, sport, 443, Vec::new());
        (frame.flags, frame.seq, frame.payload) = case.segment(send);
        if wire.vlan {
            frame.vlans = vec![(TPID_8021Q, 7)];
        }
        if wire.timestamps {
            frame.tcp_options = vec![1, 1, 8, 10, 0, 1, 2, 3, 0, 0, 0, 0];
        }
        let mut bytes = frame.build();
        if wire.pad && bytes.len() < 60 {
            bytes.resize(60, 0);
        }
        let got = run(&bytes);
        let want = model.segment(frame.seq, frame.flags, &frame.payload);
        if let Some(why) = disagreement(&got, &want, &bytes) {
            let mut trace = String::new();
            for (j, (send, v)) in case.sends.iter().zip(&seen).enumerate() {
                let _ = writeln!(trace, "  {j:>3} {send:?}: {}", summary(v));
            }
            return Err(TestCaseError::fail(format!(
                "segment {i} ({send:?}): {why}\n  program: {}\n  model:   {want:?}\n\
                 segments before, with the program's verdicts (the model agreed):\n\
                 {trace}case: {}",
                summary(&got),
                case.describe(),
            )));
        }
        seen.push(got);
    }
    Ok(())
}

fn summary(v: &FrameVerdict) -> String {
    format!(
        "{:?} hello {:?} split {:?} action {}",
        v.stat,
        v.hello.as_ref().map(|h| (h.max_version, &h.sni)),
        v.split,
        v.action
    )
}

/// What differs between the program's verdict on `frame` and the model's.
fn disagreement(got: &FrameVerdict, want: &Judgement, frame: &[u8]) -> Option<String> {
    if got.stat != want.stat {
        return Some(format!("stat {:?} != model {:?}", got.stat, want.stat));
    }
    let seen = got.hello.as_ref().map(|h| (h.max_version, h.sni.clone()));
    if seen != want.hello() {
        return Some(format!("hello {seen:?} != model {:?}", want.hello()));
    }
    if got.split != want.split {
        return Some(format!("split {:?} != model {:?}", got.split, want.split));
    }
    let acted = match want.action {
        Action::Pass => got.action == XDP_PASS && got.output == frame,
        Action::Drop => got.action == XDP_DROP,
        Action::Reset => {
            got.action == XDP_PASS
                && tcp_view(&got.output)
                    .is_some_and(|t| t.flags == flags::RST | flags::ACK && t.checksum_ok)
        }
    };
    (!acted).then(|| {
        format!(
            "action {} / output not what {:?} means",
            got.action, want.action
        )
    })
}

#[test]
fn browser_hellos_over_segments_and_records_agree() {
    differential("browser", 40, zone_policy(), plan(true));
}

#[test]
fn random_and_mutated_hellos_over_segments_and_records_agree() {
    differential("random", 55, zone_policy(), plan(false));
}

#[test]
fn refusals_in_drop_mode_agree() {
    let mut p = zone_policy();
    p.refuse = RefuseMode::Drop;
    differential("drop mode", 5, p, plan(false));
}
