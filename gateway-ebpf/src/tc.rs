//! The TC ingress half of the SYN cookies: a first data segment that the XDP
//! program passed carries a valid cookie in its acknowledgment number; this
//! program checks it again and asks the kernel, through the
//! `bpf_sk_assign_tcp_reqsk` kfunc (Linux 6.9+), to build the connection with
//! the options the cookie carries, so the segment arrives as its first data.
//! A bare ACK with an invalid cookie that no connection owns is dropped and
//! counted (the kernel would only answer it with a reset).
//!
//! aya 0.14 does not resolve kfunc calls, so the call is written out as one
//! instruction (`BPF_CALL` with `src_reg = BPF_PSEUDO_KFUNC_CALL`) whose `imm`
//! is `KFUNC_PLACEHOLDER`; the loader puts the kernel's BTF id there.

use aya_ebpf::{
    bindings::{
        __sk_buff, TC_ACT_OK, TC_ACT_SHOT, bpf_sock_tuple,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 as Ipv4Tuple,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2 as Ipv6Tuple, tcp_sock,
    },
    helpers::generated::{
        bpf_sk_release, bpf_skb_load_bytes_relative, bpf_skc_lookup_tcp, bpf_skc_to_tcp_sock,
    },
    macros::classifier,
    programs::TcContext,
};
use gateway_common::syncookie::{
    CookieStat, KFUNC_PLACEHOLDER, MAX_OPTIONS, OPTION_BUF, OUR_WSCALE, SynOptions, walk_options,
};

use crate::{
    cookie,
    maps::{OPTIONS_READ, TC_WORK},
    reply::Headers,
};

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// `bpf_skb_load_bytes_relative`'s start: the network header.
const BPF_HDR_START_NET: u32 = 1;
const IPPROTO_TCP: u8 = 6;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
const TCP_FIN: u8 = 0x01;
/// `tcp_state` of a listening socket.
const TCP_LISTEN: u32 = 10;
/// The lookup's `netns` argument for the device's own namespace.
const BPF_F_CURRENT_NETNS: u64 = u64::MAX;

/// The kernel's `struct bpf_tcp_req_attrs` (include/net/tcp.h, Linux 6.9+).
#[repr(C)]
struct ReqAttrs {
    rcv_tsval: u32,
    rcv_tsecr: u32,
    mss: u16,
    rcv_wscale: u8,
    snd_wscale: u8,
    ecn_ok: u8,
    wscale_ok: u8,
    sack_ok: u8,
    tstamp_ok: u8,
    usec_ts_ok: u8,
    reserved: [u8; 3],
}

/// `call bpf_sk_assign_tcp_reqsk` as one instruction: opcode `BPF_JMP|BPF_CALL`,
/// `src_reg` 2 (`BPF_PSEUDO_KFUNC_CALL`), `off` 0 (vmlinux BTF), `imm` the placeholder.
const KFUNC_CALL_INSN: u64 = 0x85 | (0x20 << 8) | ((KFUNC_PLACEHOLDER as u64) << 32);

/// Hands connections with a valid cookie to the kernel; drops bad bare ACKs.
#[classifier]
pub(crate) fn gateway_tc(ctx: TcContext) -> i32 {
    decide(&ctx).unwrap_or(TC_ACT_OK)
}

/// An ACK-bearing segment (not SYN, not RST) as the TC program sees it
/// (kept in map memory: the program's frames share 512 bytes of stack).
pub(crate) struct AckSegment {
    headers: Headers,
    ipv6: bool,
    /// Offset of the TCP options from the network header.
    options_off: usize,
    /// Length of the TCP options.
    options_len: usize,
    payload_len: usize,
    dport: u16,
}

/// Reads an ACK-bearing segment from an IP header without options or
/// extension headers (the only ones the XDP program answers SYNs for).
#[inline(always)]
fn ack_segment(ctx: &TcContext, out: &mut AckSegment) -> Option<()> {
    // SAFETY: the context's socket buffer.
    let proto = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
    let mut ip = [0u8; 40];
    let (ipv6, ip_len, l4_len) = match proto {
        ETH_P_IPV4 => {
            let v4 = load_net::<[u8; 20]>(ctx, 0)?;
            let fragment = u16::from_be_bytes([v4[6], v4[7]]) & 0x3fff != 0;
            if v4[0] != 0x45 || v4[9] != IPPROTO_TCP || fragment {
                return None;
            }
            ip[..20].copy_from_slice(&v4);
            let total = u16::from_be_bytes([v4[2], v4[3]]) as usize;
            (false, 20, total.checked_sub(20)?)
        }
        ETH_P_IPV6 => {
            ip = load_net::<[u8; 40]>(ctx, 0)?;
            if ip[0] >> 4 != 6 || ip[6] != IPPROTO_TCP {
                return None;
            }
            (true, 40, u16::from_be_bytes([ip[4], ip[5]]) as usize)
        }
        _ => return None,
    };
    let tcp = load_net::<[u8; 20]>(ctx, ip_len)?;
    if tcp[13] & (TCP_SYN | TCP_RST | TCP_ACK) != TCP_ACK {
        return None;
    }
    let doff = ((tcp[12] >> 4) as usize) * 4;
    if doff < 20 || doff > l4_len {
        return None;
    }
    *out = AckSegment {
        dport: u16::from_be_bytes([tcp[2], tcp[3]]),
        headers: Headers { ip, tcp },
        ipv6,
        options_off: ip_len + 20,
        options_len: doff - 20,
        payload_len: l4_len - doff,
    };
    Some(())
}

/// `T` read at `off` bytes from the network header (wherever the socket
/// buffer's data begins: the link header, or not, depending on the path).
#[inline(always)]
fn load_net<T>(ctx: &TcContext, off: usize) -> Option<T> {
    let mut value = core::mem::MaybeUninit::<T>::uninit();
    // SAFETY: the helper writes size_of::<T>() bytes into `value` or fails.
    let rc = unsafe {
        bpf_skb_load_bytes_relative(
            ctx.skb.skb.cast(),
            off as u32,
            value.as_mut_ptr().cast(),
            core::mem::size_of::<T>() as u32,
            BPF_HDR_START_NET,
        )
    };
    // SAFETY: the helper filled `value` (it returned 0).
    (rc == 0).then(|| unsafe { value.assume_init() })
}

#[inline(always)]
fn decide(ctx: &TcContext) -> Option<i32> {
    let seg = TC_WORK.get_ptr_mut(0)?;
    // SAFETY: the per-CPU entry belongs to this CPU for the program's run.
    let seg = unsafe { &mut *seg };
    ack_segment(ctx, seg)?;
    let flags = cookie::port_flags(seg.dport);
    if !cookie::checks(flags) {
        return None;
    }
    let bare = seg.payload_len == 0 && seg.headers.tcp[13] & TCP_FIN == 0;
    let cookie = check_cookie(seg);
    if cookie != 0 && bare {
        cookie::count(CookieStat::AckDropped);
        return Some(TC_ACT_SHOT);
    }
    if cookie != 0 && seg.payload_len > 0 {
        hand_over(ctx, seg, cookie & 0xff);
        return None;
    }
    if cookie == 0 && bare && cookie::answers(flags) && only_listener(ctx, seg) {
        cookie::count(CookieStat::BadCookie);
        return Some(TC_ACT_SHOT);
    }
    None
}

/// `cookie::VALID | option bits` if the segment's acknowledgment number is a
/// valid cookie, else 0. Its own frame: the caller's stack is full.
#[inline(never)]
fn check_cookie(seg: &AckSegment) -> u32 {
    cookie::cookie_of(&seg.headers, seg.ipv6)
}

/// Whether only a listener matches the segment's flow (no connection, no
/// request, no time-wait socket). Its own frame: the caller's stack is full.
#[inline(never)]
fn only_listener(ctx: &TcContext, seg: &AckSegment) -> bool {
    let mut found = false;
    with_listener(ctx, seg, |_| found = true);
    found
}

/// Looks the segment's flow up and runs `then` with the listener if only a
/// listener matches (no connection, no request, no time-wait socket).
#[inline(always)]
fn with_listener(ctx: &TcContext, seg: &AckSegment, then: impl FnOnce(*mut tcp_sock)) {
    let h = &seg.headers;
    // SAFETY: a zeroed tuple is a valid value of this plain-data union.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    let word = |at: usize| u32::from_ne_bytes([h.ip[at], h.ip[at + 1], h.ip[at + 2], h.ip[at + 3]]);
    let sport = u16::from_ne_bytes([h.tcp[0], h.tcp[1]]);
    let dport = u16::from_ne_bytes([h.tcp[2], h.tcp[3]]);
    let size = if seg.ipv6 {
        tuple.__bindgen_anon_1.ipv6 = Ipv6Tuple {
            saddr: [word(8), word(12), word(16), word(20)],
            daddr: [word(24), word(28), word(32), word(36)],
            sport,
            dport,
        };
        core::mem::size_of::<Ipv6Tuple>()
    } else {
        tuple.__bindgen_anon_1.ipv4 = Ipv4Tuple {
            saddr: word(12),
            daddr: word(16),
            sport,
            dport,
        };
        core::mem::size_of::<Ipv4Tuple>()
    };
    // SAFETY: the context, a tuple of the size passed, flags the helper takes;
    // a socket it returns is released below.
    let sk = unsafe {
        bpf_skc_lookup_tcp(
            ctx.skb.skb.cast(),
            &mut tuple,
            size as u32,
            BPF_F_CURRENT_NETNS,
            0,
        )
    };
    if sk.is_null() {
        return;
    }
    // SAFETY: a socket the lookup returned; `state` is readable on any.
    if unsafe { (*sk).state } == TCP_LISTEN {
        // SAFETY: converts the referenced socket; NULL if it is no TCP socket.
        let listener = unsafe { bpf_skc_to_tcp_sock(sk.cast()) };
        if !listener.is_null() {
            then(listener);
        }
    }
    // SAFETY: releases the reference the lookup took.
    unsafe { bpf_sk_release(sk.cast()) };
}

/// Has the kernel build the connection the cookie (whose option bits are
/// `bits`) describes, if only a listener owns the flow. Its own frame: the
/// caller's stack is full.
#[inline(never)]
fn hand_over(ctx: &TcContext, seg: &AckSegment, bits: u32) {
    let Some(opts) = SynOptions::from_bits(bits) else {
        return;
    };
    with_listener(ctx, seg, |listener| assign(ctx, seg, &opts, listener));
}

/// Asks the kernel to build the connection from `listener`.
#[inline(always)]
fn assign(ctx: &TcContext, seg: &AckSegment, opts: &SynOptions, listener: *mut tcp_sock) {
    let mut area = [0u8; OPTION_BUF];
    let n = crate::packet::opaque(seg.options_len);
    let timestamps = if n > 0 && n <= MAX_OPTIONS {
        // SAFETY: 1..=40 bytes into a 64-byte stack buffer.
        let rc = unsafe {
            bpf_skb_load_bytes_relative(
                ctx.skb.skb.cast(),
                seg.options_off as u32,
                area.as_mut_ptr().cast(),
                n as u32,
                BPF_HDR_START_NET,
            )
        };
        match rc {
            0 => match OPTIONS_READ.get_ptr_mut(0) {
                Some(offered) => {
                    // SAFETY: the per-CPU entry belongs to this CPU for the program's run.
                    let offered = unsafe { &mut *offered };
                    walk_options(&area, n, 0, offered);
                    offered.timestamps
                }
                None => None,
            },
            _ => None,
        }
    } else {
        None
    };
    let (tsval, tsecr) = timestamps.unwrap_or((0, 0));
    let mut attrs = ReqAttrs {
        rcv_tsval: tsval,
        rcv_tsecr: tsecr,
        mss: opts.mss(seg.ipv6),
        rcv_wscale: if opts.wscale.is_some() { OUR_WSCALE } else { 0 },
        snd_wscale: opts.wscale.unwrap_or(0),
        ecn_ok: opts.ecn as u8,
        wscale_ok: opts.wscale.is_some() as u8,
        sack_ok: opts.sack as u8,
        tstamp_ok: timestamps.is_some() as u8,
        usec_ts_ok: 0,
        reserved: [0; 3],
    };
    let status = assign_request(ctx.skb.skb, listener, &mut attrs);
    cookie::count(if status == 0 {
        CookieStat::SocketMade
    } else {
        CookieStat::AssignFailed
    });
}

/// `bpf_sk_assign_tcp_reqsk(skb, listener, attrs, sizeof *attrs)`: 0 when the
/// kernel took the connection.
#[inline(always)]
fn assign_request(skb: *mut __sk_buff, listener: *mut tcp_sock, attrs: &mut ReqAttrs) -> i64 {
    let status: i64;
    // SAFETY: the kfunc takes the context, a referenced listener (the lookup's,
    // converted), the attributes and their size; it clobbers r1-r5 like any call.
    unsafe {
        core::arch::asm!(
            ".quad {insn}",
            insn = const KFUNC_CALL_INSN,
            inout("r1") skb => _,
            inout("r2") listener => _,
            inout("r3") attrs as *mut ReqAttrs => _,
            inout("r4") core::mem::size_of::<ReqAttrs>() as u64 => _,
            lateout("r0") status,
            lateout("r5") _,
        );
    }
    status
}
