//! TC ingress half of the SYN cookies (spike, issue 24): a first data segment
//! that the XDP program passed carries a valid cookie in its acknowledgment
//! number; this program checks it again and asks the kernel, through the
//! `bpf_sk_assign_tcp_reqsk` kfunc, to build the connection from it, so the
//! segment arrives as the connection's first data.
//!
//! aya 0.14 does not resolve kfunc calls, so the call is written out as one
//! instruction (`BPF_CALL` with `src_reg = BPF_PSEUDO_KFUNC_CALL`) whose `imm`
//! is `KFUNC_PLACEHOLDER`; the loader puts the kernel's BTF id there.

use aya_ebpf::{
    bindings::{
        __sk_buff, TC_ACT_OK, bpf_sock_tuple,
        bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 as Ipv4Tuple, tcp_sock,
    },
    helpers::generated::{bpf_sk_release, bpf_skc_lookup_tcp, bpf_skc_to_tcp_sock},
    macros::classifier,
    programs::TcContext,
};
use gateway_common::syncookie::{
    KFUNC_PLACEHOLDER, STAT_TC_ASSIGN_FAILED, STAT_TC_ASSIGNED, STAT_TC_NO_LISTENER, check,
};

use crate::syncookie::{ack_number, count, handshake, settings};

const ETH_HDR_LEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const IPPROTO_TCP: u8 = 6;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
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

/// Hands the connection of a segment with a valid cookie to the kernel.
#[classifier]
pub(crate) fn syncookie_tc(ctx: TcContext) -> i32 {
    hand_over(&ctx);
    TC_ACT_OK
}

/// The IPv4 and TCP headers of a non-SYN data segment.
#[inline(always)]
fn data_segment(ctx: &TcContext) -> Option<([u8; 20], [u8; 20])> {
    let proto = u16::from_be(ctx.load::<u16>(12).ok()?);
    if proto != ETH_P_IPV4 {
        return None;
    }
    let ip = ctx.load::<[u8; 20]>(ETH_HDR_LEN).ok()?;
    // No IP options, TCP, not a fragment.
    if ip[0] != 0x45 || ip[9] != IPPROTO_TCP || u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return None;
    }
    let tcp = ctx.load::<[u8; 20]>(ETH_HDR_LEN + 20).ok()?;
    if tcp[13] & (TCP_SYN | TCP_RST | TCP_FIN | TCP_ACK) != TCP_ACK {
        return None;
    }
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let doff = ((tcp[12] >> 4) as usize) * 4;
    if total <= 20 + doff {
        return None;
    }
    Some((ip, tcp))
}

#[inline(always)]
fn hand_over(ctx: &TcContext) -> Option<()> {
    let (ip, tcp) = data_segment(ctx)?;
    let settings = settings(u16::from_be_bytes([tcp[2], tcp[3]]))?;
    let flow = handshake(&ip, &tcp, 1);
    let cookie = ack_number(&tcp).wrapping_sub(1);
    let mss = check(settings.key, &flow, settings.slot, cookie)?;
    let mut tuple = bpf_sock_tuple {
        __bindgen_anon_1: aya_ebpf::bindings::bpf_sock_tuple__bindgen_ty_1 {
            ipv4: Ipv4Tuple {
                saddr: u32::from_ne_bytes([ip[12], ip[13], ip[14], ip[15]]),
                daddr: u32::from_ne_bytes([ip[16], ip[17], ip[18], ip[19]]),
                sport: u16::from_ne_bytes([tcp[0], tcp[1]]),
                dport: u16::from_ne_bytes([tcp[2], tcp[3]]),
            },
        },
    };
    // SAFETY: the context, a tuple of the size passed, flags the helper takes;
    // a socket it returns is released below.
    let sk = unsafe {
        bpf_skc_lookup_tcp(
            ctx.skb.skb.cast(),
            &mut tuple,
            core::mem::size_of::<Ipv4Tuple>() as u32,
            BPF_F_CURRENT_NETNS,
            0,
        )
    };
    if sk.is_null() {
        count(STAT_TC_NO_LISTENER);
        return None;
    }
    // SAFETY: a socket the lookup returned; `state` is readable on any.
    let state = unsafe { (*sk).state };
    if state == TCP_LISTEN {
        // SAFETY: converts the referenced socket; NULL if it is no TCP socket.
        let listener = unsafe { bpf_skc_to_tcp_sock(sk.cast()) };
        if !listener.is_null() {
            let mut attrs = ReqAttrs {
                rcv_tsval: 0,
                rcv_tsecr: 0,
                mss,
                rcv_wscale: 0,
                snd_wscale: 0,
                ecn_ok: 0,
                wscale_ok: 0,
                sack_ok: 0,
                tstamp_ok: 0,
                usec_ts_ok: 0,
                reserved: [0; 3],
            };
            let status = assign_request(ctx.skb.skb, listener, &mut attrs);
            count(if status == 0 {
                STAT_TC_ASSIGNED
            } else {
                STAT_TC_ASSIGN_FAILED
            });
        }
    }
    // SAFETY: releases the reference the lookup took.
    unsafe { bpf_sk_release(sk.cast()) };
    Some(())
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
