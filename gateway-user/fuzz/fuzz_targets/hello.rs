//! The ClientHello reference parser on one segment:
//! `gateway::hello::reference::judge(payload, &policy)`, the input being the
//! TCP payload of the first segment the filter sees of a flow whose SYN it did
//! not see (seeds: hellos in one or more records, SSL 2.0 format, real
//! clients'; `gateway-user/fuzz/examples/seeds.rs` writes them).
//!
//! Invariants, under the zone policy of `common/stream_input.rs` (zone TLS 1.2,
//! `api.test` 1.3, `old.test` 1.0, `x.y.z.test` 1.1):
//!
//! - every verdict passes `common/judgement.rs`'s checks: a refusal only
//!   below the minimum `policy.min_for` gives the reported SNI, counted by the
//!   version offered; an allowed hello at or above it; a reported SNI
//!   lowercase and at most 255 characters; the action consistent with the
//!   counter;
//! - the same payload judged twice gives the same verdict;
//! - drop mode gives the same verdict with `Drop` where reset mode says
//!   `Reset`;
//! - a SYN seen first changes nothing of the verdict on the stream's first
//!   segment;
//! - the policy only moves the line between allowed and refused: under a
//!   policy whose every minimum (and floor) is at least another's, a hello the
//!   lower one refuses is refused with the same counter, hello and split
//!   counter, one the higher one allows is allowed with the same hello and
//!   split counter, a hello both report is the same, and every outcome the
//!   policy cannot change (not TLS, malformed, ...) is the same. Checked for
//!   uniform TLS 1.0 ≤ the zone policy ≤ uniform TLS 1.3;
//! - the terminator's hello gate (`hello_gate::hello_state`) never changes its
//!   mind as bytes arrive: what it says of a prefix, unless "incomplete", it
//!   says of the whole payload.

#![no_main]

#[path = "common/judgement.rs"]
mod judgement;
#[path = "common/stream_input.rs"]
mod stream_input;

use gateway::{
    config::RefuseMode,
    frame::flags,
    hello::reference::{Action, Flow, Judgement, judge},
    terminator::hello_gate::{Hello, hello_state},
    tls_version::TlsVersion,
    xdp::XdpPolicy,
};
use gateway_common::Stat;
use judgement::{check, is_refusal, policy_dependent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|payload: &[u8]| {
    let gate = hello_state(payload);
    for cut in [payload.len() / 2, payload.len().saturating_sub(1)] {
        let prefix = hello_state(&payload[..cut]);
        assert!(
            prefix == Hello::Incomplete || prefix == gate,
            "the hello gate said {prefix:?} of {cut} bytes and {gate:?} of all"
        );
    }
    let zone = stream_input::zone_policy();
    let j = judge(payload, &zone);
    check(&zone, &j, &|| "zone policy".into());
    assert_eq!(judge(payload, &zone), j, "judged twice, two answers");

    let mut drop_mode = zone.clone();
    drop_mode.refuse = RefuseMode::Drop;
    let d = judge(payload, &drop_mode);
    check(&drop_mode, &d, &|| "drop mode".into());
    let as_dropped = Judgement {
        action: if j.action == Action::Reset {
            Action::Drop
        } else {
            j.action
        },
        ..j.clone()
    };
    assert_eq!(
        d, as_dropped,
        "drop mode differs from reset mode beyond the action"
    );

    let mut flow = Flow::new(&zone);
    let syn = flow.segment(0, flags::SYN, &[]);
    assert_eq!(syn.stat, Stat::PassControl);
    assert_eq!(
        flow.segment(1, flags::PSH | flags::ACK, payload),
        j,
        "a SYN first changed the verdict on the first segment"
    );

    let low = XdpPolicy::uniform(TlsVersion::Tls10);
    let high = XdpPolicy::uniform(TlsVersion::Tls13);
    let l = judge(payload, &low);
    let h = judge(payload, &high);
    check(&low, &l, &|| "uniform TLS 1.0".into());
    check(&high, &h, &|| "uniform TLS 1.3".into());
    monotone((&low, &l), (&zone, &j));
    monotone((&zone, &j), (&high, &h));
    monotone((&low, &l), (&high, &h));
});

/// The verdicts under two policies, every minimum of `high` at least `low`'s.
fn monotone((lp, l): (&XdpPolicy, &Judgement), (hp, h): (&XdpPolicy, &Judgement)) {
    debug_assert!(hp.floor() >= lp.floor());
    let ctx = || format!("\n  lower {lp:?}: {l:?}\n  higher {hp:?}: {h:?}");
    if is_refusal(l.stat) {
        assert!(
            h.stat == l.stat && h.hello() == l.hello() && h.split == l.split,
            "refused under the lower policy, not the same under the higher:{}",
            ctx()
        );
    }
    if h.stat == Stat::PassAllowed {
        assert!(
            l.stat == Stat::PassAllowed && l.hello() == h.hello() && l.split == h.split,
            "allowed under the higher policy, not the same under the lower:{}",
            ctx()
        );
    }
    if l.max_version.is_some() && h.max_version.is_some() {
        assert_eq!(l.hello(), h.hello(), "two policies, two hellos:{}", ctx());
    }
    assert_eq!(
        policy_dependent(l.stat),
        policy_dependent(h.stat),
        "one policy decides by version, the other by the bytes:{}",
        ctx()
    );
    if !policy_dependent(l.stat) {
        assert_eq!(
            l,
            h,
            "an outcome of the bytes alone changed with the policy:{}",
            ctx()
        );
    }
}
