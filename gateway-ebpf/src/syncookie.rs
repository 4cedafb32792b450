//! SYN cookies (spike, issue 24): the maps and helpers that the XDP program
//! (`syncookie_xdp`) and the TC ingress program (`syncookie_tc`) share.
//!
//! Userspace writes the key and the port into `SYNCOOKIE_CONFIG`; both
//! programs mint and check cookies with `gateway_common::syncookie`.

use aya_ebpf::{
    helpers::generated::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, PerCpuArray},
};
use gateway_common::syncookie::{
    CONFIG_KEY0, CONFIG_KEY1, CONFIG_PORT, CONFIG_SLOTS, Handshake, STAT_COUNT, time_slot,
};

/// The SipHash key and the guarded port (written by userspace).
#[map]
pub(crate) static SYNCOOKIE_CONFIG: Array<u64> = Array::with_max_entries(CONFIG_SLOTS, 0);

/// Per-CPU counters, indexed by `gateway_common::syncookie::STAT_*`.
#[map]
pub(crate) static SYNCOOKIE_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// What the programs need from `SYNCOOKIE_CONFIG`, read once per segment.
pub(crate) struct Settings {
    /// The SipHash key.
    pub key: [u64; 2],
    /// The current time slot.
    pub slot: u64,
}

#[inline(always)]
fn config(index: u32) -> u64 {
    SYNCOOKIE_CONFIG.get(index).copied().unwrap_or(0)
}

/// The settings for a segment to `dport`, or `None` unless that is the
/// guarded port (none while userspace has set none): the clock and the key
/// are read only for segments to the guarded port.
#[inline(always)]
pub(crate) fn settings(dport: u16) -> Option<Settings> {
    let port = config(CONFIG_PORT) as u16;
    if port == 0 || port != dport {
        return None;
    }
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    Some(Settings {
        key: [config(CONFIG_KEY0), config(CONFIG_KEY1)],
        slot: time_slot(now),
    })
}

/// Bumps a counter.
#[inline(always)]
pub(crate) fn count(stat: u32) {
    if let Some(slot) = SYNCOOKIE_STATS.get_ptr_mut(stat) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}

/// The handshake an IPv4 header (20 bytes) and a TCP header's first 8 bytes
/// identify; `client_isn` is the sequence number minus `isn_offset` (0 for a
/// SYN, 1 for the segments after it).
#[inline(always)]
pub(crate) fn handshake(ip: &[u8; 20], tcp: &[u8; 20], isn_offset: u32) -> Handshake {
    let saddr = u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]) as u64;
    let daddr = u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]) as u64;
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    Handshake {
        addrs: saddr | (daddr << 32),
        ports: u32::from_ne_bytes([tcp[0], tcp[1], tcp[2], tcp[3]]),
        client_isn: seq.wrapping_sub(isn_offset),
    }
}

/// The acknowledgment number of a TCP header, host order.
#[inline(always)]
pub(crate) fn ack_number(tcp: &[u8; 20]) -> u32 {
    u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]])
}
