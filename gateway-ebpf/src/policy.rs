//! The policy stage: what a parsed ClientHello's version and SNI mean under the
//! minimums userspace wrote. Shared by single-segment and reassembled hellos.

use gateway_common::{HelloSummary, SNI_ABSENT, SNI_PRESENT, SNI_UNKNOWN, Scratch, Stat, version};

use crate::{
    hello::{self, Slots, slot},
    maps::{CONFIG, HOST_POLICY},
};

/// The answer for one hello, as far as its bytes so far allow.
pub(crate) enum Verdict {
    /// At or above the minimum for its hostname.
    Allow,
    /// Below the minimum: refuse, counted as this drop counter.
    Refuse(Stat),
    /// Not decidable from these bytes; more of the stream may decide it.
    Wait,
    /// Never decidable (malformed, not a ClientHello): pass, counted as this.
    Pass(Stat),
}

/// Applies the policy to the parse of the hello in `buf` (its result is in
/// `scratch.slots`), leaving what was learned in `scratch.summary`/`scratch.sni`.
#[inline(always)]
pub(crate) fn judge(buf: *const u8, scratch: &mut Scratch, parsed: Result<(), Stat>) -> Verdict {
    scratch.summary = HelloSummary::default();
    match parsed {
        Ok(()) => {}
        Err(Stat::PassUndecidable) => return Verdict::Wait,
        Err(stat) => return Verdict::Pass(stat),
    }
    let slots = Slots(&mut scratch.slots);
    let max_version = slots.get(slot::MAX_VERSION) as u16;
    let sni_state = slots.get(slot::SNI_STATE) as u8;
    let config = CONFIG.get(0).copied().unwrap_or_default();
    let mut sni_len = 0;
    let min = match sni_state {
        SNI_PRESENT => {
            sni_len = slots.get(slot::SNI_LEN) & 0xff;
            if sni_len == 0 {
                return Verdict::Pass(Stat::PassMalformed);
            }
            let from = slots.get(slot::SNI_OFF) & hello::MASK;
            // Hashed where it lies, and copied word by word into `sni`.
            let [key, check] = hello::fingerprint(buf, from, &mut scratch.sni, &slots);
            // SAFETY: the value is copied out at once; userspace replaces entries whole.
            match unsafe { HOST_POLICY.get(&key) } {
                Some(host) if host.check == check => host.min_version,
                _ => config.zone_min,
            }
        }
        SNI_ABSENT => config.no_sni_min,
        _ => config.floor_min,
    };
    scratch.summary = HelloSummary {
        max_version,
        sni_state,
        sni_len: sni_len as u8,
    };
    if max_version < min {
        Verdict::Refuse(drop_stat(max_version))
    } else if sni_state == SNI_UNKNOWN {
        // Offers at least the lowest minimum, but we cannot tell whose yet.
        Verdict::Wait
    } else {
        Verdict::Allow
    }
}

/// The verdict on an SSL 2.0-format hello whose header was recognised: it
/// offers SSL 2 and carries no SNI, so the no-SNI minimum applies (and it can
/// never offer TLS 1.3). Leaves the summary in `scratch`.
#[inline(always)]
pub(crate) fn judge_sslv2(scratch: &mut Scratch) -> Verdict {
    scratch.summary = HelloSummary {
        max_version: version::SSL2,
        sni_state: SNI_ABSENT,
        sni_len: 0,
    };
    let min = CONFIG.get(0).map_or(0, |c| c.no_sni_min);
    if version::SSL2 < min {
        Verdict::Refuse(Stat::DropSsl2)
    } else {
        Verdict::Allow
    }
}

/// The per-version hello counter.
#[inline(always)]
pub(crate) fn hello_stat(v: u16) -> Stat {
    match v {
        version::SSL2 => Stat::HelloSsl2,
        version::SSL3 => Stat::HelloSsl3,
        version::TLS1_0 => Stat::HelloTls10,
        version::TLS1_1 => Stat::HelloTls11,
        version::TLS1_2 => Stat::HelloTls12,
        v if v < version::TLS1_0 => Stat::HelloSsl3,
        _ => Stat::HelloTls13,
    }
}

/// The drop counter for a refused hello.
#[inline(always)]
pub(crate) fn drop_stat(v: u16) -> Stat {
    match v {
        version::TLS1_0 => Stat::DropTls10,
        version::TLS1_1 => Stat::DropTls11,
        version::TLS1_2 => Stat::DropTls12,
        version::SSL2 => Stat::DropSsl2,
        _ => Stat::DropSsl3,
    }
}
