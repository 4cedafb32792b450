//! The stream model `gateway::hello::reference::Flow` on one flow whose
//! delivery the input chooses: a header (`common/stream_input.rs`: SYN first or
//! not, reset or drop mode, sequence numbers, up to 8 cut points, up to 4
//! events — duplicates, reordering, losses, overlapping and changed
//! retransmissions, empty ACKs, SYNs, RSTs) and the client's stream.
//!
//! Invariants (every one under the zone policy of `common/stream_input.rs`, in
//! the mode the header says):
//!
//! 1. Nothing panics, and every verdict passes `common/judgement.rs`'s checks
//!    (refusal only below the minimum for the reported SNI, action consistent
//!    with the counter, SNI lowercase, ...), in every delivery below.
//! 2. At most one refusal (the delivery the header describes): in reset mode
//!    no sequence number is refused twice (the second is `DropRetransmit`); in
//!    either mode, when a SYN came first and no other SYN follows, at most one
//!    segment of the flow is refused and every data segment after it is
//!    `DropRetransmit`. (Without a SYN nothing more holds: a flow whose start
//!    the filter did not see has no anchor after a hello decided in one
//!    segment, so a later segment that begins like a hello is judged as the
//!    start of the stream, rule 5 — the model's semantics, not a bug; and in
//!    drop mode a retransmission of a dropped hello is dropped again.)
//! 3. Segmentation (the stream delivered in order without overlaps: in one
//!    segment, `O`, or cut at the input's cut points, `C`; each with and
//!    without a SYN first). The *settling* segment of a delivery is its first
//!    data segment whose counter is not `PassHelloPartial` (none: the hello
//!    was still waiting when the stream ended).
//!    - (a) With and without a SYN the verdicts are the same on every data
//!      segment up to and including the settling one (a SYN only changes what
//!      the flow remembers afterwards).
//!    - (b) If `O` refuses, `C`'s settling segment refuses with the same counter
//!      and the same highest version (the SNI may differ: a prefix can be
//!      refused below the floor before its SNI is seen).
//!    - (c) If `O` allows, `C`'s settling segment allows the same hello.
//!    - (d) If `C`'s settling segment refuses or allows while `O` does not do
//!      the same, `O` is `PassMalformed`: a cut may decide early, from a
//!      prefix, what the whole stream then shows to be malformed (a second
//!      `server_name`, a bad length further on, a bad record header later).
//!      `O` can be neither undecidable nor too large then, since a prefix
//!      that decides shows everything the whole stream decides by.
//!    - (e) If `O` is undecidable or too large, so is `C`'s settling segment, with
//!      the same hello reported.
//!    - (f) If `O` waits (`PassHelloPartial`), `C` has no settling segment; if
//!      `C` has none, `O` waits or is `PassNotTls` / `PassNotClientHello`:
//!      one segment is classified by its first bytes (rule 4), while a cut
//!      delivery's short first segment begins reassembly, which judges them
//!      only once a whole record header and handshake header have arrived,
//!      and a short stream may end before that.
//!    - (g) With a SYN first, `C` refuses no segment but its settling one, and
//!      after a refusal every segment is `DropRetransmit`.
//!
//!    An SSL 2.0-format stream is no exception: one cut inside its 11-byte
//!    header is reassembled and decided like a TLS hello.

#![no_main]

#[path = "common/judgement.rs"]
mod judgement;
#[path = "common/stream_input.rs"]
mod stream_input;

use gateway::{
    frame::flags,
    hello::reference::{Flow, Judgement},
    xdp::XdpPolicy,
};
use gateway_common::Stat;
use judgement::{check, is_refusal};
use libfuzzer_sys::fuzz_target;
use stream_input::{Input, Send};

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::parse(data) else {
        return;
    };
    let policy = input.policy();
    let ctx = |what: &str| format!("{what}; input {}", input.describe());

    // 1 and 2: the delivery the header describes.
    let sends = input.delivery();
    let verdicts = run(&policy, &input, &sends, input.syn());
    once(&policy, &input, &sends, &verdicts, &ctx);

    // 3: in order, without overlaps.
    if input.stream.is_empty() {
        return;
    }
    let whole = input.in_order(false);
    let cut = input.in_order(true);
    let o_syn = run(&policy, &input, &whole, true);
    let o = run(&policy, &input, &whole, false);
    let c_syn = run(&policy, &input, &cut, true);
    let c = run(&policy, &input, &cut, false);
    let (o_syn, o, c_syn, c) = (
        data_only(&o_syn),
        data_only(&o),
        data_only(&c_syn),
        data_only(&c),
    );

    // a
    assert_eq!(
        o_syn,
        o,
        "{}",
        ctx("one segment: a SYN first changed the verdict")
    );
    let settle = settling(&c);
    let upto = settle.map_or(c.len(), |i| i + 1);
    assert_eq!(
        c_syn[..upto],
        c[..upto],
        "{}",
        ctx("cut: a SYN first changed a verdict up to the settling segment")
    );
    assert_eq!(
        settling(&c_syn),
        settle,
        "{}",
        ctx("cut: a SYN first moved the settling segment")
    );

    let one = &o[0];
    let settled = settle.map(|i| &c[i]);
    let show = |what: &str| {
        ctx(&format!(
            "{what}\n  one segment: {one:?}\n  cut at {:?}: {:?}",
            input.cut_points(),
            c
        ))
    };
    // b
    if is_refusal(one.stat) {
        assert!(
            settled.is_some_and(|s| s.stat == one.stat && s.max_version == one.max_version),
            "{}",
            show("one segment refuses, the cut delivery does not refuse the same")
        );
    }
    // c
    if one.stat == Stat::PassAllowed {
        assert!(
            settled.is_some_and(|s| s.stat == one.stat && s.hello() == one.hello()),
            "{}",
            show("one segment allows, the cut delivery does not allow the same")
        );
    }
    // d
    if let Some(s) = settled {
        let decided = |j: &Judgement| {
            if is_refusal(j.stat) {
                Some(true)
            } else if j.stat == Stat::PassAllowed {
                Some(false)
            } else {
                None
            }
        };
        if decided(s).is_some() && decided(s) != decided(one) {
            assert_eq!(
                one.stat,
                Stat::PassMalformed,
                "{}",
                show(
                    "the cut delivery decides what one segment does not, and one segment is not malformed"
                )
            );
        }
    }
    // e
    if matches!(one.stat, Stat::PassUndecidable | Stat::PassTooLarge) {
        assert!(
            settled.is_some_and(|s| s.stat == one.stat && s.hello() == one.hello()),
            "{}",
            show("one segment gives up, the cut delivery does not give up the same way")
        );
    }
    // f
    if one.stat == Stat::PassHelloPartial {
        assert!(
            settle.is_none(),
            "{}",
            show("one segment waits, the cut delivery settles")
        );
    }
    if settle.is_none() {
        assert!(
            matches!(
                one.stat,
                Stat::PassHelloPartial | Stat::PassNotTls | Stat::PassNotClientHello
            ),
            "{}",
            show(
                "the cut delivery never settles, one segment decides by more than the first bytes"
            )
        );
    }
    // g
    if let Some(i) = settle {
        for (k, j) in c_syn.iter().enumerate().skip(i + 1) {
            if is_refusal(c[i].stat) {
                assert_eq!(
                    j.stat,
                    Stat::DropRetransmit,
                    "{}",
                    show(&format!("with a SYN, segment {k} after the refusal"))
                );
            } else {
                assert!(
                    !is_refusal(j.stat),
                    "{}",
                    show(&format!(
                        "with a SYN, segment {k} refused after the settling one"
                    ))
                );
            }
        }
    }
});

/// The model's verdicts on `sends` (with a SYN first when `syn`), each checked.
fn run(
    policy: &XdpPolicy,
    input: &Input,
    sends: &[Send],
    syn: bool,
) -> Vec<(Send, u8, u32, Judgement)> {
    let mut flow = Flow::new(policy);
    let first = input.first_seq(syn);
    let mut out = Vec::with_capacity(sends.len() + 1);
    let syn_send = [Send::Syn];
    let extra: &[Send] = if syn && sends.first() != Some(&Send::Syn) {
        &syn_send
    } else {
        &[]
    };
    for (i, send) in extra.iter().chain(sends).enumerate() {
        let (tcp_flags, seq, payload) = input.segment(send, first);
        let j = flow.segment(seq, tcp_flags, &payload);
        check(policy, &j, &|| {
            format!(
                "segment {i} ({send:?}, seq {seq:#x}); input {}",
                input.describe()
            )
        });
        if payload.is_empty() || tcp_flags & (flags::SYN | flags::RST) != 0 {
            assert_eq!(j.stat, Stat::PassControl, "control segment {i}: {j:?}");
        }
        out.push((*send, tcp_flags, seq, j));
    }
    out
}

/// The verdicts on data segments only.
fn data_only(v: &[(Send, u8, u32, Judgement)]) -> Vec<Judgement> {
    v.iter()
        .filter(|(s, ..)| matches!(s, Send::Data { .. }))
        .map(|(.., j)| j.clone())
        .collect()
}

/// The first verdict that is not `PassHelloPartial`.
fn settling(v: &[Judgement]) -> Option<usize> {
    v.iter().position(|j| j.stat != Stat::PassHelloPartial)
}

/// Invariant 2 on the delivery the header describes.
fn once(
    policy: &XdpPolicy,
    input: &Input,
    sends: &[Send],
    verdicts: &[(Send, u8, u32, Judgement)],
    ctx: &dyn Fn(&str) -> String,
) {
    let trace = || {
        verdicts
            .iter()
            .enumerate()
            .map(|(i, (s, _, seq, j))| format!("\n  {i:>2} {s:?} seq {seq:#x}: {j:?}"))
            .collect::<String>()
    };
    if policy.refuse == gateway::config::RefuseMode::Reset {
        let mut reset = std::collections::HashSet::new();
        for (_, _, seq, j) in verdicts {
            if is_refusal(j.stat) {
                assert!(
                    reset.insert(*seq),
                    "{}",
                    ctx(&format!(
                        "sequence number {seq:#x} refused twice:{}",
                        trace()
                    ))
                );
            }
        }
    }
    let later_syn = sends.iter().skip(1).any(|s| *s == Send::Syn);
    if input.syn() && !later_syn {
        let mut refused = None;
        for (i, (send, _, _, j)) in verdicts.iter().enumerate() {
            let data = matches!(send, Send::Data { .. });
            match refused {
                None if is_refusal(j.stat) => refused = Some(i),
                Some(r) if data => assert_eq!(
                    j.stat,
                    Stat::DropRetransmit,
                    "{}",
                    ctx(&format!("segment {i} after the refusal at {r}:{}", trace()))
                ),
                _ => {}
            }
        }
    }
}
