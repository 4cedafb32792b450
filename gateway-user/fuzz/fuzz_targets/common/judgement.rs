//! Invariants of one verdict of the reference model
//! (`gateway::hello::reference::Judgement`), whatever led to it.

#![allow(dead_code)] // each target uses its own part

use gateway::{
    config::RefuseMode,
    hello::reference::{Action, Judgement},
    xdp::XdpPolicy,
};
use gateway_common::{MAX_SNI_LEN, Stat, version};

/// A refusal by the policy (a `Drop*` counter other than `DropRetransmit`).
pub fn is_refusal(stat: Stat) -> bool {
    matches!(
        stat,
        Stat::DropTls10 | Stat::DropTls11 | Stat::DropTls12 | Stat::DropSsl3 | Stat::DropSsl2
    )
}

/// The counter of a hello refused while offering at most `v`, from the
/// counters' documentation (independently of the model's code).
pub fn drop_counter(v: u16) -> Stat {
    match v {
        version::TLS1_0 => Stat::DropTls10,
        version::TLS1_1 => Stat::DropTls11,
        version::TLS1_2 => Stat::DropTls12,
        version::SSL2 => Stat::DropSsl2,
        _ => Stat::DropSsl3,
    }
}

/// The outcomes whose counter the policy's minimums can change; every other
/// outcome is a property of the bytes alone.
pub fn policy_dependent(stat: Stat) -> bool {
    is_refusal(stat)
        || matches!(
            stat,
            Stat::PassAllowed | Stat::PassUndecidable | Stat::PassHelloPartial | Stat::PassTooLarge
        )
}

/// Checks what must hold of any one verdict under `policy`; `what` names the
/// verdict in the panic message.
///
/// - the counter is an outcome counter;
/// - the action follows from the counter: a refusal is rewritten into a RST
///   (reset mode) or dropped (drop mode), everything else passes unchanged;
/// - a refusal reports its hello, offering a version below the minimum that
///   applies to the SNI reported (no SNI reported: the no-SNI minimum, above
///   the floor that applies while the SNI is unseen), and is counted by that
///   version;
/// - an allowed hello reports its hello, at or above the minimum for its SNI;
/// - only allowed, refused and undecidable hellos (and a refusal turned into a
///   retransmission) report a hello;
/// - a reported SNI is 1 to 255 characters, none an ASCII capital (255 bytes
///   on the wire at most; a byte that is not UTF-8 is reported as U+FFFD,
///   three bytes of the `String`);
/// - a split counter goes with a decision of the same kind.
pub fn check(policy: &XdpPolicy, j: &Judgement, what: &dyn Fn() -> String) {
    let what = Lazy(what);
    assert!(
        j.stat.verdict().is_some(),
        "{what}: {:?} is not an outcome counter: {j:?}",
        j.stat
    );
    let want = if !is_refusal(j.stat) {
        Action::Pass
    } else if policy.refuse == RefuseMode::Reset {
        Action::Reset
    } else {
        Action::Drop
    };
    assert_eq!(
        j.action, want,
        "{what}: action does not fit {:?}: {j:?}",
        j.stat
    );

    if let Some(sni) = &j.sni {
        assert!(
            j.max_version.is_some(),
            "{what}: an SNI without a hello: {j:?}"
        );
        let chars = sni.chars().count();
        assert!(
            (1..=MAX_SNI_LEN).contains(&chars),
            "{what}: SNI of {chars} characters: {j:?}"
        );
        assert!(
            !sni.bytes().any(|b| b.is_ascii_uppercase()),
            "{what}: SNI not lowercased: {j:?}"
        );
    }
    let min = policy.min_for(j.sni.as_deref()).wire();
    if is_refusal(j.stat) {
        let v = j
            .max_version
            .unwrap_or_else(|| panic!("{what}: a refusal reports no hello: {j:?}"));
        assert!(
            v < min,
            "{what}: refused {v:#06x} at or above the minimum {min:#06x} for {:?}: {j:?}",
            j.sni
        );
        assert_eq!(
            j.stat,
            drop_counter(v),
            "{what}: refusal counted by the wrong version: {j:?}"
        );
    }
    if j.stat == Stat::PassAllowed {
        let v = j
            .max_version
            .unwrap_or_else(|| panic!("{what}: an allowed hello reports no hello: {j:?}"));
        assert!(
            v >= min,
            "{what}: allowed {v:#06x} below the minimum {min:#06x} for {:?}: {j:?}",
            j.sni
        );
    }
    if j.max_version.is_some() {
        assert!(
            is_refusal(j.stat)
                || matches!(
                    j.stat,
                    Stat::PassAllowed | Stat::PassUndecidable | Stat::DropRetransmit
                ),
            "{what}: {:?} reports a hello: {j:?}",
            j.stat
        );
    }
    match j.split {
        None => {}
        Some(Stat::SplitAllowed) => assert_eq!(
            j.stat,
            Stat::PassAllowed,
            "{what}: SplitAllowed without an allowed hello: {j:?}"
        ),
        Some(Stat::SplitRefused) => assert!(
            is_refusal(j.stat) || j.stat == Stat::DropRetransmit,
            "{what}: SplitRefused without a refused hello: {j:?}"
        ),
        Some(other) => panic!("{what}: {other:?} is not a split counter: {j:?}"),
    }
}

/// Shows what a closure says, computed only when shown (in a failure message).
struct Lazy<'a>(&'a dyn Fn() -> String);

impl std::fmt::Display for Lazy<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&(self.0)())
    }
}
