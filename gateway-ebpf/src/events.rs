//! Refusal events: a record per refused hello into the ring userspace
//! drains into the handshake log, within each CPU's budget per second (see
//! `gateway_common::events`). Past the budget a refusal costs one counter.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use gateway_common::{
    Scratch, Stat,
    events::{
        ACTION_COOKIE_RESET, ACTION_DROP, ACTION_RESET, EVENT_IPV6, EVENT_SPLIT, EVENT_WINDOW_NS,
        RefusalEvent,
    },
    sni::SNI_WORDS,
};

use crate::{
    cookie,
    maps::{CONFIG, EVENT_COUNTS, REFUSAL_EVENTS},
    packet, staged,
};

/// Reports the hello refused with `stat` and answered with `action` (the
/// XDP action, or `cookie::TAIL_RESET`), if the CPU's budget allows.
#[inline(always)]
pub(crate) fn report(ctx: &XdpContext, scratch: &Scratch, stat: Stat, split: bool, action: u32) {
    let budget = CONFIG.get(0).map_or(0, |c| c.event_budget) as u64;
    if budget == 0 {
        return;
    }
    let Some(counts) = EVENT_COUNTS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
    let counts = unsafe { &mut *counts };
    let now = cookie::now_ns();
    if now.wrapping_sub(counts.window_start) >= EVENT_WINDOW_NS {
        counts.window_start = now;
        counts.used = 0;
    }
    if counts.used >= budget {
        counts.over_budget += 1;
        return;
    }
    counts.used += 1;
    let action = match action {
        xdp_action::XDP_PASS => ACTION_RESET,
        cookie::TAIL_RESET => ACTION_COOKIE_RESET,
        _ => ACTION_DROP,
    };
    let flags = if split { EVENT_SPLIT } else { 0 };
    if send(ctx, scratch, stat as u32, flags as u32, action as u32) == 0 {
        counts.lost += 1;
    } else {
        counts.sent += 1;
    }
}

/// Writes the record into the ring: 1, or 0 if the ring is full. Its own
/// frame, so the verifier walks it once and the hot path's stack stays free.
#[inline(never)]
fn send(ctx: &XdpContext, scratch: &Scratch, stat: u32, flags: u32, action: u32) -> u32 {
    let Some(mut entry) = REFUSAL_EVENTS.reserve::<RefusalEvent>(0) else {
        return 0;
    };
    let seg = staged::read(scratch);
    let flow = packet::flow_key(ctx, seg.l3_off(), seg.ipv6(), seg.tcp_off()).unwrap_or_default();
    let ipv6 = if seg.ipv6() { EVENT_IPV6 } else { 0 };
    // SAFETY: the reservation is a RefusalEvent's size; every field is written.
    unsafe {
        let event = entry.as_mut_ptr();
        (*event).saddr = flow.saddr;
        (*event).sport = flow.sport;
        (*event).dport = flow.dport;
        (*event).max_version = scratch.summary.max_version;
        (*event).stat = stat as u8;
        (*event).flags = flags as u8 | ipv6;
        (*event).action = action as u8;
        (*event).sni_state = scratch.summary.sni_state;
        (*event).sni_len = scratch.summary.sni_len;
        (*event).reserved = 0;
        // Only the words that hold the name (userspace reads `sni_len` bytes).
        let words = (scratch.summary.sni_len as usize).div_ceil(8);
        for i in 0..SNI_WORDS {
            if i >= words {
                break;
            }
            (*event).sni[i] = scratch.sni[i];
        }
    }
    // No wakeup: userspace polls the ring (every 100 ms), so the program
    // never pays for waking it.
    entry.submit(BPF_RB_NO_WAKEUP);
    1
}

/// `BPF_RB_NO_WAKEUP`: submit without notifying a waiting reader.
const BPF_RB_NO_WAKEUP: u64 = 1;
