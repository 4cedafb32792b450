//! The real XDP program against the reference model, flow by flow: the
//! long-run differential fuzz target. Needs root (it loads the program and
//! runs it with BPF_PROG_TEST_RUN); without root it panics at the first input
//! and says so.
//!
//! The input is `hello_stream`'s (`common/stream_input.rs`): a header that
//! chooses the delivery (SYN first or not, reset or drop mode, IPv4 or IPv6,
//! VLAN tag, TCP timestamps, 60-byte padding, sequence numbers, cut points,
//! duplicates, reordering, losses, overlapping and changed retransmissions,
//! ACKs, SYNs, RSTs), then the client's stream. Each segment goes as an
//! Ethernet frame through the program (`XdpFilter::frame_runner`, every
//! counter read after each frame) and through `reference::Flow`, and they must
//! agree on the outcome counter, the hello reported (highest version, SNI), the
//! split counter and the action (passed unchanged, rewritten into a valid
//! RST+ACK, or dropped), as in `tests/tests/xdp_stream_differential.rs`. The
//! model's verdicts must also pass `common/judgement.rs`'s checks.
//!
//! Two filters are loaded once, the zone policy of `common/stream_input.rs`
//! applied to both, one in reset mode and one in drop mode; each input forgets
//! the flows of the one it uses (`forget_flows`) and comes from a client
//! address and port of its own. Each frame costs two system calls or three, so
//! this target runs thousands of inputs a second, not millions.

#![no_main]

#[path = "common/judgement.rs"]
mod judgement;
#[path = "common/stream_input.rs"]
mod stream_input;

use std::{cell::RefCell, fmt::Write as _};

use gateway::{
    config::RefuseMode,
    frame::{flags, tcp_view},
    hello::reference::{Action, Flow, Judgement},
    xdp::{FrameRunner, FrameVerdict, ProgramLog, XDP_DROP, XDP_PASS, XdpFilter, XdpPolicy},
};
use libfuzzer_sys::fuzz_target;
use stream_input::{Input, client, server};

/// The loaded filters and their runners, for the life of the process.
struct Lab {
    reset: (XdpPolicy, FrameRunner<'static>),
    drop: (XdpPolicy, FrameRunner<'static>),
    /// Inputs run so far (each gets its own client address and port).
    inputs: u64,
}

thread_local! {
    static LAB: RefCell<Option<Lab>> = const { RefCell::new(None) };
}

impl Lab {
    fn new() -> Lab {
        require_root();
        let mut reset = stream_input::zone_policy();
        reset.refuse = RefuseMode::Reset;
        let mut drop = reset.clone();
        drop.refuse = RefuseMode::Drop;
        Lab {
            reset: (reset.clone(), runner(&reset)),
            drop: (drop.clone(), runner(&drop)),
            inputs: 0,
        }
    }
}

/// A filter loaded with `policy`, kept for the life of the process, and its runner.
fn runner(policy: &XdpPolicy) -> FrameRunner<'static> {
    let mut filter = XdpFilter::load(ProgramLog::Off)
        .unwrap_or_else(|e| panic!("xdp_differential: loading the XDP program: {e:#}"));
    filter
        .apply(policy)
        .unwrap_or_else(|e| panic!("xdp_differential: applying the policy: {e:#}"));
    let filter: &'static mut XdpFilter = Box::leak(Box::new(filter));
    filter
        .frame_runner()
        .unwrap_or_else(|e| panic!("xdp_differential: a frame runner: {e:#}"))
}

/// Panics, saying why, unless the process runs as root.
fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .map(str::to_string);
    assert!(
        euid.as_deref() == Some("0"),
        "xdp_differential needs root: it loads the XDP program and runs it with \
         BPF_PROG_TEST_RUN (effective uid {}). Run it as root (CI does), e.g. \
         `sudo cargo xtask fuzz xdp_differential`.",
        euid.as_deref().unwrap_or("unknown")
    );
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    LAB.with_borrow_mut(|lab| {
        let lab = lab.get_or_insert_with(Lab::new);
        let n = lab.inputs;
        lab.inputs += 1;
        let (policy, runner) = if input.policy().refuse == RefuseMode::Drop {
            (&lab.drop.0, &mut lab.drop.1)
        } else {
            (&lab.reset.0, &mut lab.reset.1)
        };
        runner.forget_flows().expect("forget the flows");
        differential(runner, policy, &input, n);
    });
});

/// Runs the input's delivery through the program and the model, segment by
/// segment, and panics at the first disagreement.
fn differential(runner: &mut FrameRunner<'_>, policy: &XdpPolicy, input: &Input, n: u64) {
    let v6 = input.v6();
    let (src, sport) = client(v6, n);
    let dst = server(v6);
    let sends = input.delivery();
    let mut model = Flow::new(policy);
    let mut seen: Vec<FrameVerdict> = Vec::with_capacity(sends.len());
    for (i, send) in sends.iter().enumerate() {
        let frame = input.frame(send, src, dst, sport);
        let mut bytes = frame.build();
        if input.pad() && bytes.len() < 60 {
            bytes.resize(60, 0);
        }
        let got = runner
            .run(&bytes)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN on segment {i} ({send:?}): {e:#}"));
        let want = model.segment(frame.seq, frame.flags, &frame.payload);
        judgement::check(policy, &want, &|| format!("model, segment {i} ({send:?})"));
        if let Some(why) = disagreement(&got, &want, &bytes) {
            let mut trace = String::new();
            for (j, (send, v)) in sends.iter().zip(&seen).enumerate() {
                let _ = writeln!(trace, "  {j:>3} {send:?}: {}", summary(v));
            }
            panic!(
                "program and model disagree on segment {i} ({send:?}, seq {:#x}, flags {:#04x}, \
                 {} payload bytes): {why}\n  program: {}\n  model:   {want:?}\n\
                 segments before, with the program's verdicts (the model agreed):\n{trace}\
                 policy: {policy:?}\ninput: {}",
                frame.seq,
                frame.flags,
                frame.payload.len(),
                summary(&got),
                input.describe(),
            );
        }
        seen.push(got);
    }
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

/// What differs between the program's verdict on `frame` and the model's
/// (the comparison of `tests/tests/xdp_stream_differential.rs`).
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
