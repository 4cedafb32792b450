//! The SYN-cookie stage of `gateway_xdp`: on a port where userspace turned
//! cookies on (`COOKIE_PORTS`), the kernel sees nothing of a handshake until
//! its first data, and nothing at all of a connection whose hello is refused.
//!
//! - A SYN is turned, in place, into the SYN-ACK that answers it, whose
//!   sequence number is a cookie carrying the agreed options
//!   (`gateway_common::syncookie`), and sent back (XDP_TX).
//! - A bare ACK whose acknowledgment number is a valid cookie completes such
//!   a handshake: dropped, nothing to remember.
//! - The first data segment carries the cookie too: the caller decides its
//!   hello; a refusal is turned into a RST back to the client ([`reset_client`]),
//!   anything else passes, and the TC program (`tc.rs`) has the kernel build
//!   the connection.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_ktime_get_coarse_ns, bpf_xdp_load_bytes},
    macros::xdp,
    programs::XdpContext,
};
use gateway_common::{
    Stat,
    syncookie::{
        ALLOW_TIMESTAMPS, CookieKey, CookieStat, Handshake, MAX_OPTIONS, OPTION_BUF, PORT_ANSWER,
        PORT_CHECK, SYN_COUNTERS, SYNACK_WINDOW, SynOptions, check, key_index, mint, time_slot,
        walk_options, write_synack_options,
    },
};

use crate::{
    maps::{
        COOKIE_CONFIG, COOKIE_KEYS, COOKIE_PORTS, COOKIE_PROGS, COOKIE_STATS, OPTIONS_READ,
        REPLY_WORK, STATS, SYN_COUNTS,
    },
    packet::{self, Segment, TCP_ACK, TCP_RST, TCP_SYN},
    reply::{Headers, Place, Reply, headers, read_headers, send_back},
};

/// Not XDP actions: `filter`'s requests to hand the packet to a cookie program.
/// A SYN to answer ([`cookie_syn`]).
pub(crate) const TAIL_SYN: u32 = 0x100;
/// A bare ACK to check ([`cookie_ack`]).
pub(crate) const TAIL_ACK: u32 = 0x101;
/// A refused hello with no connection: reset its client if its cookie is
/// valid ([`cookie_reset`]).
pub(crate) const TAIL_RESET: u32 = 0x102;

/// Tail-calls the cookie program for `action` (one of the `TAIL_*`);
/// returns only if it is missing.
#[inline(always)]
pub(crate) fn hand_off(ctx: &XdpContext, action: u32) {
    // SAFETY: the program's own context; on success this does not return.
    let _ = unsafe { COOKIE_PROGS.tail_call(ctx, action - TAIL_SYN) };
}

/// Answers a SYN with a cookie SYN-ACK (or passes it to the kernel).
#[xdp(frags)]
pub(crate) fn cookie_syn(ctx: XdpContext) -> u32 {
    let Ok(seg) = packet::parse_segment(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    let action = answer_syn(&ctx, &seg);
    if action == NOT_ANSWERED {
        count_stat(Stat::PassControl);
        return xdp_action::XDP_PASS;
    }
    count_stat(Stat::AnswerSynCookie);
    action
}

/// Drops a bare ACK that completes a cookie handshake; passes any other.
#[xdp(frags)]
pub(crate) fn cookie_ack(ctx: XdpContext) -> u32 {
    let Ok(seg) = packet::parse_segment(&ctx) else {
        return xdp_action::XDP_PASS;
    };
    match bare_ack(&ctx, &seg) {
        Some(action) => {
            count_stat(Stat::DropCookieAck);
            action
        }
        None => {
            count_stat(Stat::PassControl);
            xdp_action::XDP_PASS
        }
    }
}

/// A refused hello that no connection owns: if its acknowledgment number is a
/// valid cookie, its client is answered with a RST; else (spoofed) dropped.
/// The refusal itself was counted by `gateway_xdp`.
#[xdp(frags)]
pub(crate) fn cookie_reset(ctx: XdpContext) -> u32 {
    let Ok(seg) = packet::parse_segment(&ctx) else {
        return xdp_action::XDP_DROP;
    };
    reset_client(&ctx, &seg)
}

/// Bumps one of the filter's outcome counters.
#[inline(always)]
fn count_stat(stat: Stat) {
    if let Some(slot) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}

const TCP_FIN: u8 = 0x01;
/// ECN-Echo: in a SYN-ACK, "ECN agreed".
const TCP_ECE: u8 = 0x40;
const TCP_HDR_LEN: usize = 20;

/// The port's cookie flags (`PORT_*`), 0 where cookies are off.
#[inline(always)]
pub(crate) fn port_flags(port: u16) -> u8 {
    COOKIE_PORTS.get(port as u32).copied().unwrap_or(0)
}

/// Counts a SYN toward its port's rate (what `auto` mode watches).
#[inline(always)]
pub(crate) fn count_syn(port: u16) {
    if let Some(slot) = SYN_COUNTS.get_ptr_mut(port as u32 % SYN_COUNTERS) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}

/// Bumps a cookie counter.
#[inline(always)]
pub(crate) fn count(stat: CookieStat) {
    if let Some(slot) = COOKIE_STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}

/// The monotonic clock at the last tick (`CLOCK_MONOTONIC_COARSE`, the clock
/// userspace keys the slots by, behind by at most a tick): a slot lasts about
/// 69 s and our TSval counts about milliseconds, so a tick is fine, and the
/// coarse clock costs a load where the precise one reads the TSC (tens of ns
/// in a VM).
#[inline(always)]
pub(crate) fn now_ns() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// The key ring and the current slot.
#[inline(always)]
pub(crate) fn keys() -> ([CookieKey; 3], u64) {
    let slot = time_slot(now_ns());
    let at = |i: u32| COOKIE_KEYS.get(i).copied().unwrap_or_default();
    ([at(0), at(1), at(2)], slot)
}

#[inline(always)]
fn word(b: &[u8], at: usize) -> u64 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as u64
}

/// The handshake the headers identify; `isn_offset` is 0 for a SYN and 1 for
/// the segments after it.
#[inline(always)]
pub(crate) fn handshake(h: &Headers, ipv6: bool, isn_offset: u32) -> Handshake {
    let addrs = if ipv6 {
        [
            word(&h.ip, 8) | word(&h.ip, 12) << 32,
            word(&h.ip, 16) | word(&h.ip, 20) << 32,
            word(&h.ip, 24) | word(&h.ip, 28) << 32,
            word(&h.ip, 32) | word(&h.ip, 36) << 32,
        ]
    } else {
        [word(&h.ip, 12) | word(&h.ip, 16) << 32, 0, 0, 0]
    };
    let seq = u32::from_be_bytes([h.tcp[4], h.tcp[5], h.tcp[6], h.tcp[7]]);
    Handshake {
        addrs,
        ports: u32::from_ne_bytes([h.tcp[0], h.tcp[1], h.tcp[2], h.tcp[3]]),
        client_isn: seq.wrapping_sub(isn_offset),
        ipv6,
    }
}

/// [`valid_cookie`]'s answer for a valid cookie: its option bits with this bit set.
pub(crate) const VALID: u32 = 0x100;

/// Whether an ACK-bearing segment's acknowledgment number is a valid cookie
/// for its flow: `VALID | option bits` if so, else 0. (A plain integer: a
/// called BPF function must return something every path defines.)
#[inline(always)]
pub(crate) fn valid_cookie(ctx: &XdpContext, seg: &Segment) -> u32 {
    if seg.flags & (TCP_SYN | TCP_RST | TCP_ACK) != TCP_ACK {
        return 0;
    }
    match headers(ctx, &Place::of(seg)) {
        Some(h) => cookie_of(&h, seg.ipv6),
        None => 0,
    }
}

/// [`valid_cookie`] of headers already read.
#[inline(always)]
pub(crate) fn cookie_of(h: &Headers, ipv6: bool) -> u32 {
    let ack = u32::from_be_bytes([h.tcp[8], h.tcp[9], h.tcp[10], h.tcp[11]]);
    let (ring, slot) = keys();
    match check(&ring, &handshake(h, ipv6, 1), slot, ack.wrapping_sub(1)) {
        Some(opts) => VALID | opts.bits(),
        None => 0,
    }
}

/// A bare ACK on a port that checks cookies: dropped (and counted) when it
/// completes a cookie handshake; `None` lets it pass.
#[inline(always)]
pub(crate) fn bare_ack(ctx: &XdpContext, seg: &Segment) -> Option<u32> {
    if seg.flags & TCP_FIN != 0 {
        return None;
    }
    if valid_cookie(ctx, seg) == 0 {
        return None;
    }
    count(CookieStat::AckDropped);
    Some(xdp_action::XDP_DROP)
}

/// [`answer_syn`]'s answer when it did not answer: the kernel will.
pub(crate) const NOT_ANSWERED: u32 = u32::MAX;

/// Answers a SYN with a cookie SYN-ACK: the XDP action (XDP_TX), or
/// [`NOT_ANSWERED`] when it cannot (no key for this slot yet, IP options).
#[inline(always)]
pub(crate) fn answer_syn(ctx: &XdpContext, seg: &Segment) -> u32 {
    let place = Place::of(seg);
    let Some(work) = REPLY_WORK.get_ptr_mut(0) else {
        count(CookieStat::NotAnswered);
        return NOT_ANSWERED;
    };
    // SAFETY: the per-CPU entry belongs to this CPU for the program's run.
    let work = unsafe { &mut *work };
    if !read_headers(ctx, &place, &mut work.headers) || socket_holds(ctx, seg) != 0 {
        count(CookieStat::NotAnswered);
        return NOT_ANSWERED;
    }
    let now = now_ns();
    let slot = time_slot(now);
    let Some(entry) = COOKIE_KEYS.get(key_index(slot)).copied() else {
        count(CookieStat::NotAnswered);
        return NOT_ANSWERED;
    };
    let allow = COOKIE_CONFIG.get(0).map_or(0, |c| c.allow);
    let mut agreed = Agreed {
        ours: (now >> 20) as u32,
        ..Agreed::default()
    };
    if entry.slot != slot || agree(ctx, seg, work.headers.tcp[13], allow, &mut agreed) == 0 {
        count(CookieStat::NotAnswered);
        return NOT_ANSWERED;
    }
    let Some(opts) = SynOptions::from_bits(agreed.bits) else {
        count(CookieStat::NotAnswered);
        return NOT_ANSWERED;
    };
    let flow = handshake(&work.headers, seg.ipv6, 0);
    let cookie = mint(entry.key, &flow, slot, &opts);
    let ts = match agreed.timestamps {
        0 => None,
        _ => Some((agreed.ours, agreed.theirs)),
    };
    let len = write_synack_options(&opts, opts.mss(seg.ipv6), ts, &mut work.options);
    let reply = Reply {
        seq: cookie,
        ack: flow.client_isn.wrapping_add(1),
        flags: TCP_SYN | TCP_ACK | if opts.ecn { TCP_ECE } else { 0 },
        window: SYNACK_WINDOW,
        options_len: len,
    };
    let action = send_back(ctx, &place, &reply, work);
    if action == xdp_action::XDP_TX {
        count(CookieStat::Sent);
    }
    action
}

/// 1 if a socket other than a listener holds the SYN's 4-tuple (a connection
/// in TIME_WAIT that the client's port came back to, or one still open): the
/// kernel answers such a SYN itself (it recycles a TIME_WAIT, which a
/// connection built from a cookie could not replace). Its own frame: the
/// caller's stack is full.
#[inline(never)]
fn socket_holds(ctx: &XdpContext, seg: &Segment) -> u32 {
    match packet::flow_key(ctx, seg.l3_off, seg.ipv6, seg.tcp_off) {
        Some(flow) => packet::held_by_connection(ctx, &flow, seg.ipv6) as u32,
        None => 1,
    }
}

/// What a SYN's options were agreed to, as plain integers.
#[derive(Default)]
struct Agreed {
    /// `SynOptions::bits`.
    bits: u32,
    /// 1 if both sides use timestamps.
    timestamps: u32,
    /// Our TSval (set by the caller: the clock in about milliseconds).
    ours: u32,
    /// The client's TSval, to echo.
    theirs: u32,
}

/// Agrees a SYN's options with its sender (within `allow`) into `out`:
/// 1, or 0 if its options cannot be read.
#[inline(never)]
fn agree(ctx: &XdpContext, seg: &Segment, flags: u8, allow: u32, out: &mut Agreed) -> u32 {
    let mut area = [0u8; OPTION_BUF];
    let len = seg.payload_off - seg.tcp_off - TCP_HDR_LEN;
    let n = packet::opaque(len);
    if n > 0 && n <= MAX_OPTIONS {
        // SAFETY: 1..=40 bytes into a 64-byte stack buffer.
        let rc = unsafe {
            bpf_xdp_load_bytes(
                ctx.ctx,
                (seg.tcp_off + TCP_HDR_LEN) as u32,
                area.as_mut_ptr().cast(),
                n as u32,
            )
        };
        if rc < 0 {
            return 0;
        }
    }
    let Some(offered) = OPTIONS_READ.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: the per-CPU entry belongs to this CPU for the program's run.
    let offered = unsafe { &mut *offered };
    walk_options(&area, len.min(MAX_OPTIONS), flags, offered);
    out.bits = SynOptions::agree(offered, allow, seg.ipv6).bits();
    if let Some((theirs, _)) = offered.timestamps
        && allow & ALLOW_TIMESTAMPS != 0
    {
        out.timestamps = 1;
        out.theirs = theirs;
    }
    1
}

/// Turns a refused first data segment (whose connection exists only in its
/// cookie) into a RST back to the client, at the sequence number it expects.
#[inline(always)]
fn reset_client(ctx: &XdpContext, seg: &Segment) -> u32 {
    let place = Place::of(seg);
    let Some(work) = REPLY_WORK.get_ptr_mut(0) else {
        return xdp_action::XDP_DROP;
    };
    // SAFETY: the per-CPU entry belongs to this CPU for the program's run.
    let work = unsafe { &mut *work };
    let acks = seg.flags & (TCP_SYN | TCP_RST | TCP_ACK) == TCP_ACK;
    if !acks || !read_headers(ctx, &place, &mut work.headers) {
        return xdp_action::XDP_DROP;
    }
    if cookie_of(&work.headers, seg.ipv6) == 0 {
        count(CookieStat::BadCookie);
        return xdp_action::XDP_DROP;
    }
    let t = &work.headers.tcp;
    let reply = Reply {
        seq: u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
        ack: 0,
        flags: TCP_RST,
        window: 0,
        options_len: 0,
    };
    let action = send_back(ctx, &place, &reply, work);
    if action == xdp_action::XDP_TX {
        count(CookieStat::RefusedWithoutSocket);
    }
    action
}

/// Whether cookies are checked on this port's ACKs / answered for its SYNs.
#[inline(always)]
pub(crate) fn checks(flags: u8) -> bool {
    flags & PORT_CHECK != 0
}

/// Whether this port's SYNs are answered with cookies.
#[inline(always)]
pub(crate) fn answers(flags: u8) -> bool {
    flags & PORT_ANSWER != 0
}
