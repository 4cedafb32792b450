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
    bindings::{xdp_action, xdp_md},
    helpers::generated::{bpf_ktime_get_ns, bpf_xdp_adjust_tail, bpf_xdp_load_bytes},
    macros::xdp,
    programs::XdpContext,
};
use gateway_common::{
    Stat,
    syncookie::{
        ALLOW_TIMESTAMPS, CookieKey, CookieStat, Handshake, MAX_OPTIONS, OPTION_BUF, PORT_ANSWER,
        PORT_CHECK, SYN_COUNTERS, SYNACK_OPTIONS_MAX, SYNACK_WINDOW, SynOptions, check, key_index,
        mint, time_slot, walk_options, write_synack_options,
    },
};

use crate::{
    maps::{
        COOKIE_CONFIG, COOKIE_KEYS, COOKIE_PORTS, COOKIE_PROGS, COOKIE_STATS, OPTIONS_READ,
        REPLY_WORK, STATS, SYN_COUNTS,
    },
    packet::{self, Segment, TCP_ACK, TCP_RST, TCP_SYN, bytes_at},
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
const IPV4_HDR_LEN: usize = 20;
const IPV6_HDR_LEN: usize = 40;
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

/// The key ring and the current slot.
#[inline(always)]
pub(crate) fn keys() -> ([CookieKey; 3], u64) {
    // SAFETY: a helper without arguments.
    let slot = time_slot(unsafe { bpf_ktime_get_ns() });
    let at = |i: u32| COOKIE_KEYS.get(i).copied().unwrap_or_default();
    ([at(0), at(1), at(2)], slot)
}

/// The IP and TCP headers of a segment, copied (an IPv4 header fills the
/// first 20 bytes of `ip`).
pub(crate) struct Headers {
    /// The IP header.
    pub ip: [u8; IPV6_HDR_LEN],
    /// The TCP header, options excluded.
    pub tcp: [u8; TCP_HDR_LEN],
}

/// Copies the headers of a segment whose IP header has no options or
/// extension headers (the only ones this stage answers).
#[inline(always)]
fn headers(ctx: &XdpContext, at: &Place) -> Option<Headers> {
    let mut h = Headers {
        ip: [0; IPV6_HDR_LEN],
        tcp: [0; TCP_HDR_LEN],
    };
    read_headers(ctx, at, &mut h).then_some(h)
}

/// [`headers`] into `out` (map memory, in the programs that build a reply).
#[inline(always)]
fn read_headers(ctx: &XdpContext, at: &Place, out: &mut Headers) -> bool {
    let ip_len = if at.ipv6 { IPV6_HDR_LEN } else { IPV4_HDR_LEN };
    if at.tcp_off != at.l3_off + ip_len {
        return false;
    }
    if at.ipv6 {
        let Some(ip) = read::<IPV6_HDR_LEN>(ctx, at.l3_off) else {
            return false;
        };
        out.ip = ip;
    } else {
        let Some(ip) = read::<IPV4_HDR_LEN>(ctx, at.l3_off) else {
            return false;
        };
        out.ip[..IPV4_HDR_LEN].copy_from_slice(&ip);
    }
    match read::<TCP_HDR_LEN>(ctx, at.tcp_off) {
        Some(tcp) => {
            out.tcp = tcp;
            true
        }
        None => false,
    }
}

/// Where a segment's headers are in the frame.
struct Place {
    l3_off: usize,
    tcp_off: usize,
    ipv6: bool,
}

impl Place {
    #[inline(always)]
    fn of(seg: &Segment) -> Place {
        Place {
            l3_off: seg.l3_off,
            tcp_off: seg.tcp_off,
            ipv6: seg.ipv6,
        }
    }
}

#[inline(always)]
fn read<const N: usize>(ctx: &XdpContext, off: usize) -> Option<[u8; N]> {
    // SAFETY: bytes_at checked that [off, off + N) lies inside the frame.
    bytes_at::<N>(ctx, off).map(|p| unsafe { *p })
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
    if !read_headers(ctx, &place, &mut work.headers) {
        count(CookieStat::NotAnswered);
        return NOT_ANSWERED;
    }
    // SAFETY: a helper without arguments.
    let slot = time_slot(unsafe { bpf_ktime_get_ns() });
    let Some(entry) = COOKIE_KEYS.get(key_index(slot)).copied() else {
        count(CookieStat::NotAnswered);
        return NOT_ANSWERED;
    };
    let allow = COOKIE_CONFIG.get(0).map_or(0, |c| c.allow);
    let mut agreed = Agreed::default();
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

/// What a SYN's options were agreed to, as plain integers.
#[derive(Default)]
struct Agreed {
    /// `SynOptions::bits`.
    bits: u32,
    /// 1 if both sides use timestamps.
    timestamps: u32,
    /// Our TSval.
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
    walk_options(&area, flags, offered);
    out.bits = SynOptions::agree(offered, allow, seg.ipv6).bits();
    if let Some((theirs, _)) = offered.timestamps
        && allow & ALLOW_TIMESTAMPS != 0
    {
        out.timestamps = 1;
        // SAFETY: a helper without arguments.
        out.ours = (unsafe { bpf_ktime_get_ns() } >> 20) as u32;
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

/// A segment to send back where the frame came from (its options are in
/// [`ReplyWork::options`]).
struct Reply {
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    options_len: usize,
}

/// Per-CPU working memory for building a reply: map memory rather than the
/// stack, whose 512 bytes the program's frames share.
pub(crate) struct ReplyWork {
    /// The headers of the segment answered.
    headers: Headers,
    /// The reply's IP header (an IPv4 one fills the first 20 bytes).
    ip: [u8; IPV6_HDR_LEN],
    /// The reply's TCP header.
    tcp: [u8; TCP_HDR_LEN],
    /// The reply's TCP options.
    options: [u8; SYNACK_OPTIONS_MAX],
}

/// Rewrites the frame, in place, into `reply` from the frame's destination to
/// its source, trims or grows it, and returns XDP_TX (XDP_DROP if it cannot).
#[inline(never)]
fn send_back(ctx: &XdpContext, seg: &Place, reply: &Reply, work: &mut ReplyWork) -> u32 {
    let h = &work.headers;
    let opt_len = if reply.options_len > SYNACK_OPTIONS_MAX {
        SYNACK_OPTIONS_MAX
    } else {
        reply.options_len & !3
    };
    let tcp_len = TCP_HDR_LEN + opt_len;
    let ports = [h.tcp[2], h.tcp[3], h.tcp[0], h.tcp[1]];
    let tcp = &mut work.tcp;
    *tcp = [0; TCP_HDR_LEN];
    tcp[..4].copy_from_slice(&ports);
    tcp[4..8].copy_from_slice(&reply.seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&reply.ack.to_be_bytes());
    tcp[12] = ((tcp_len / 4) as u8) << 4;
    tcp[13] = reply.flags;
    tcp[14..16].copy_from_slice(&reply.window.to_be_bytes());
    let ip = &mut work.ip;
    *ip = [0; IPV6_HDR_LEN];
    let pseudo = if seg.ipv6 {
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
        ip[6] = 6;
        ip[7] = 64;
        ip[8..24].copy_from_slice(&h.ip[24..40]);
        ip[24..40].copy_from_slice(&h.ip[8..24]);
        sum_words(&ip[8..40], 6 + tcp_len as u32)
    } else {
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((IPV4_HDR_LEN + tcp_len) as u16).to_be_bytes());
        ip[6] = 0x40; // don't fragment
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&h.ip[16..20]);
        ip[16..20].copy_from_slice(&h.ip[12..16]);
        let ip_sum = !fold(sum_words(&ip[..IPV4_HDR_LEN], 0));
        ip[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        sum_words(&ip[12..20], 6 + tcp_len as u32)
    };
    let sum = sum_words(&work.tcp, pseudo);
    let sum = sum_options(&work.options, opt_len, sum);
    work.tcp[16..18].copy_from_slice(&(!fold(sum)).to_be_bytes());
    if !resize(ctx, seg.tcp_off + tcp_len) {
        return xdp_action::XDP_DROP;
    }
    if write_frame(ctx, seg, work, opt_len) {
        xdp_action::XDP_TX
    } else {
        xdp_action::XDP_DROP
    }
}

/// Trims or grows the frame to `wanted` bytes.
#[inline(always)]
fn resize(ctx: &XdpContext, wanted: usize) -> bool {
    let frame_len = ctx.data_end() - ctx.data();
    if frame_len == wanted {
        return true;
    }
    let delta = wanted as i32 - frame_len as i32;
    // SAFETY: the program's own context; the kernel checks the new length.
    unsafe { bpf_xdp_adjust_tail(ctx.ctx as *mut xdp_md, delta) == 0 }
}

/// Writes the swapped MACs, the IP header, the TCP header and its options
/// into the (resized) frame.
#[inline(always)]
fn write_frame(ctx: &XdpContext, seg: &Place, work: &ReplyWork, opt_len: usize) -> bool {
    let (ip, tcp, options) = (&work.ip, &work.tcp, &work.options);
    let Some(eth) = bytes_at::<12>(ctx, 0) else {
        return false;
    };
    // SAFETY: bytes_at checked the two MAC addresses lie inside the frame.
    unsafe {
        let macs = *eth;
        let mut swapped = [0u8; 12];
        swapped[..6].copy_from_slice(&macs[6..]);
        swapped[6..].copy_from_slice(&macs[..6]);
        *eth = swapped;
    }
    let l3 = packet::opaque(seg.l3_off);
    if seg.ipv6 {
        let Some(at) = bytes_at::<IPV6_HDR_LEN>(ctx, l3) else {
            return false;
        };
        // SAFETY: bytes_at checked the 40 bytes lie inside the frame.
        unsafe { *at = *ip };
    } else {
        let Some(at) = bytes_at::<IPV4_HDR_LEN>(ctx, l3) else {
            return false;
        };
        let mut v4 = [0u8; IPV4_HDR_LEN];
        v4.copy_from_slice(&ip[..IPV4_HDR_LEN]);
        // SAFETY: bytes_at checked the 20 bytes lie inside the frame.
        unsafe { *at = v4 };
    }
    let tcp_off = packet::opaque(seg.tcp_off);
    let Some(at) = bytes_at::<TCP_HDR_LEN>(ctx, tcp_off) else {
        return false;
    };
    // SAFETY: bytes_at checked the 20 bytes lie inside the frame.
    unsafe { *at = *tcp };
    for i in 0..SYNACK_OPTIONS_MAX / 4 {
        if i * 4 >= opt_len {
            break;
        }
        let Some(at) = bytes_at::<4>(ctx, tcp_off + TCP_HDR_LEN + i * 4) else {
            return false;
        };
        let chunk = [
            options[i * 4],
            options[i * 4 + 1],
            options[i * 4 + 2],
            options[i * 4 + 3],
        ];
        // SAFETY: bytes_at checked the 4 bytes lie inside the frame.
        unsafe { *at = chunk };
    }
    true
}

/// The one's-complement sum of big-endian 16-bit words, plus `start`.
#[inline(always)]
fn sum_words(bytes: &[u8], start: u32) -> u32 {
    let mut sum = start;
    let mut i = 0;
    while i + 1 < bytes.len() {
        sum += u16::from_be_bytes([bytes[i], bytes[i + 1]]) as u32;
        i += 2;
    }
    sum
}

/// [`sum_words`] over the first `len` bytes of an option area.
#[inline(always)]
fn sum_options(options: &[u8; SYNACK_OPTIONS_MAX], len: usize, start: u32) -> u32 {
    let mut sum = start;
    for i in 0..SYNACK_OPTIONS_MAX / 2 {
        if i * 2 < len {
            sum += u16::from_be_bytes([options[i * 2], options[i * 2 + 1]]) as u32;
        }
    }
    sum
}

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
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
