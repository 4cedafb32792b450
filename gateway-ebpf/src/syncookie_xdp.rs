//! XDP half of the SYN cookies (spike, issue 24), IPv4 only, MSS the only
//! option: the kernel sees nothing of a handshake until its first data.
//!
//! - A SYN to the guarded port is turned, in place, into the SYN-ACK that
//!   answers it, whose sequence number is a cookie, and sent back (XDP_TX).
//! - A bare ACK whose acknowledgment number is a valid cookie completes such
//!   a handshake: dropped, nothing to remember.
//! - The first data segment (the ClientHello) carries the cookie too: if the
//!   hello is refused it is turned into a RST back to the client (XDP_TX);
//!   else it passes, and `syncookie_tc` hands the connection to the kernel.
//!
//! Anything else passes. The refusal here is a stand-in for the gateway's
//! policy: a ClientHello whose `legacy_version` is below TLS 1.2.

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    helpers::generated::bpf_xdp_adjust_tail,
    macros::xdp,
    programs::XdpContext,
};
use gateway_common::syncookie::{
    STAT_ACK_DROPPED, STAT_HELLO_PASSED, STAT_HELLO_REFUSED, STAT_SYN_ANSWERED, STAT_SYN_PASSED,
    check, mint, mss_index,
};

use crate::{
    packet::{self, Segment, TCP_ACK, TCP_RST, TCP_SYN, bytes_at},
    syncookie::{Settings, ack_number, count, handshake, settings},
};

const TCP_FIN: u8 = 0x01;
const IPV4_HDR_LEN: usize = 20;
const TCP_HDR_LEN: usize = 20;
/// A SYN-ACK's TCP header: 20 bytes and the MSS option.
const SYNACK_TCP_LEN: usize = 24;
/// The window a SYN-ACK offers (not scaled: no window scaling yet).
const SYNACK_WINDOW: u16 = 64240;
/// TLS record and handshake types of a ClientHello, and TLS 1.2's version.
const CONTENT_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
const TLS12: u16 = 0x0303;

/// Answers SYNs, drops handshake ACKs, refuses or passes first data.
#[xdp]
pub(crate) fn syncookie_xdp(ctx: XdpContext) -> u32 {
    decide(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

#[inline(always)]
fn decide(ctx: &XdpContext) -> Option<u32> {
    let seg = packet::parse_segment(ctx).ok()?;
    if seg.ipv6 || seg.tcp_off != seg.l3_off + IPV4_HDR_LEN {
        return None;
    }
    let settings = settings(seg.dport)?;
    let flags = seg.flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN);
    if flags == TCP_SYN {
        return Some(answer_syn(ctx, &seg, &settings));
    }
    if flags != TCP_ACK {
        return None;
    }
    let ip = read::<IPV4_HDR_LEN>(ctx, seg.l3_off)?;
    let tcp = read::<TCP_HDR_LEN>(ctx, seg.tcp_off)?;
    let flow = handshake(&ip, &tcp, 1);
    let cookie = ack_number(&tcp).wrapping_sub(1);
    check(settings.key, &flow, settings.slot, cookie)?;
    if seg.payload_len == 0 {
        count(STAT_ACK_DROPPED);
        return Some(xdp_action::XDP_DROP);
    }
    if !refuses(ctx, &seg) {
        count(STAT_HELLO_PASSED);
        return Some(xdp_action::XDP_PASS);
    }
    count(STAT_HELLO_REFUSED);
    Some(reply(ctx, &seg, &ip, &tcp, Reply::Reset))
}

#[inline(always)]
fn read<const N: usize>(ctx: &XdpContext, off: usize) -> Option<[u8; N]> {
    // SAFETY: bytes_at checked that [off, off + N) lies inside the frame.
    bytes_at::<N>(ctx, off).map(|p| unsafe { *p })
}

/// Whether the payload begins a ClientHello below TLS 1.2 (the stand-in policy).
#[inline(always)]
fn refuses(ctx: &XdpContext, seg: &Segment) -> bool {
    let Some(head) = read::<11>(ctx, seg.payload_off) else {
        return false;
    };
    head[0] == CONTENT_HANDSHAKE
        && head[5] == HANDSHAKE_CLIENT_HELLO
        && u16::from_be_bytes([head[9], head[10]]) < TLS12
}

/// The client's MSS: its first option if that is MSS (Linux and most stacks
/// put it first), else the IPv4 default.
#[inline(always)]
fn client_mss(ctx: &XdpContext, seg: &Segment) -> u16 {
    if seg.payload_off < seg.tcp_off + SYNACK_TCP_LEN {
        return 536;
    }
    match read::<4>(ctx, seg.tcp_off + TCP_HDR_LEN) {
        Some([2, 4, hi, lo]) => u16::from_be_bytes([hi, lo]),
        _ => 536,
    }
}

#[inline(always)]
fn answer_syn(ctx: &XdpContext, seg: &Segment, settings: &Settings) -> u32 {
    // A SYN without options leaves no room for ours in place: the kernel answers it.
    if seg.payload_off < seg.tcp_off + SYNACK_TCP_LEN {
        count(STAT_SYN_PASSED);
        return xdp_action::XDP_PASS;
    }
    let (Some(ip), Some(tcp)) = (
        read::<IPV4_HDR_LEN>(ctx, seg.l3_off),
        read::<TCP_HDR_LEN>(ctx, seg.tcp_off),
    ) else {
        count(STAT_SYN_PASSED);
        return xdp_action::XDP_PASS;
    };
    let mss = client_mss(ctx, seg);
    let index = mss_index(mss);
    let cookie = mint(settings.key, &handshake(&ip, &tcp, 0), settings.slot, index);
    let action = reply(
        ctx,
        seg,
        &ip,
        &tcp,
        Reply::SynAck {
            cookie,
            mss: gateway_common::syncookie::MSS_TABLE[index as usize & 3],
            with_mss: true,
        },
    );
    if action == xdp_action::XDP_TX {
        count(STAT_SYN_ANSWERED);
    }
    action
}

/// What to send back.
enum Reply {
    /// The handshake's second step, with the cookie as sequence number.
    SynAck {
        cookie: u32,
        mss: u16,
        with_mss: bool,
    },
    /// A reset at the sequence number the client expects.
    Reset,
}

/// Rewrites the frame, in place, into `kind` sent back where it came from,
/// trims it, and returns the action (XDP_TX, or XDP_DROP if it cannot).
#[inline(always)]
fn reply(ctx: &XdpContext, seg: &Segment, ip: &[u8; 20], tcp: &[u8; 20], kind: Reply) -> u32 {
    let client_seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let mut out = [0u8; SYNACK_TCP_LEN];
    [out[0], out[1], out[2], out[3]] = [tcp[2], tcp[3], tcp[0], tcp[1]];
    let tcp_len = match kind {
        Reply::SynAck {
            cookie,
            mss,
            with_mss,
        } => {
            out[4..8].copy_from_slice(&cookie.to_be_bytes());
            out[8..12].copy_from_slice(&client_seq.wrapping_add(1).to_be_bytes());
            out[13] = TCP_SYN | TCP_ACK;
            out[14..16].copy_from_slice(&SYNACK_WINDOW.to_be_bytes());
            if with_mss {
                [out[20], out[21]] = [2, 4];
                out[22..24].copy_from_slice(&mss.to_be_bytes());
                SYNACK_TCP_LEN
            } else {
                TCP_HDR_LEN
            }
        }
        Reply::Reset => {
            out[4..8].copy_from_slice(&tcp[8..12]);
            out[13] = TCP_RST;
            TCP_HDR_LEN
        }
    };
    out[12] = ((tcp_len / 4) as u8) << 4;
    let mut ip_out = [0u8; IPV4_HDR_LEN];
    ip_out[0] = 0x45;
    ip_out[2..4].copy_from_slice(&((IPV4_HDR_LEN + tcp_len) as u16).to_be_bytes());
    ip_out[6] = 0x40; // don't fragment
    ip_out[8] = 64;
    ip_out[9] = 6;
    ip_out[12..16].copy_from_slice(&ip[16..20]);
    ip_out[16..20].copy_from_slice(&ip[12..16]);
    let ip_sum = !fold(sum_words(&ip_out, 0));
    ip_out[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let pseudo = sum_words(&ip_out[12..20], 6 + tcp_len as u32);
    let tcp_sum = !fold(sum_words(&out[..tcp_len], pseudo));
    out[16..18].copy_from_slice(&tcp_sum.to_be_bytes());
    if !write_frame(ctx, seg, &ip_out, &out, tcp_len) {
        return xdp_action::XDP_DROP;
    }
    xdp_action::XDP_TX
}

/// Writes the swapped MACs and the new headers, then trims the frame.
#[inline(always)]
fn write_frame(
    ctx: &XdpContext,
    seg: &Segment,
    ip: &[u8; IPV4_HDR_LEN],
    tcp: &[u8; SYNACK_TCP_LEN],
    tcp_len: usize,
) -> bool {
    let Some(eth) = bytes_at::<12>(ctx, packet::opaque(0)) else {
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
    let Some(ip_at) = bytes_at::<IPV4_HDR_LEN>(ctx, packet::opaque(seg.l3_off)) else {
        return false;
    };
    // SAFETY: bytes_at checked the IP header lies inside the frame.
    unsafe { *ip_at = *ip };
    let tcp_off = packet::opaque(seg.tcp_off);
    if tcp_len == SYNACK_TCP_LEN {
        let Some(tcp_at) = bytes_at::<SYNACK_TCP_LEN>(ctx, tcp_off) else {
            return false;
        };
        // SAFETY: bytes_at checked the 24 bytes lie inside the frame.
        unsafe { *tcp_at = *tcp };
    } else {
        let Some(tcp_at) = bytes_at::<TCP_HDR_LEN>(ctx, tcp_off) else {
            return false;
        };
        let mut head = [0u8; TCP_HDR_LEN];
        head.copy_from_slice(&tcp[..TCP_HDR_LEN]);
        // SAFETY: bytes_at checked the 20 bytes lie inside the frame.
        unsafe { *tcp_at = head };
    }
    let frame_len = ctx.data_end() - ctx.data();
    let wanted = seg.tcp_off + tcp_len;
    if frame_len <= wanted {
        return frame_len == wanted;
    }
    // SAFETY: the program's own context; a negative delta trims the tail.
    unsafe { bpf_xdp_adjust_tail(ctx.ctx as *mut xdp_md, -((frame_len - wanted) as i32)) == 0 }
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

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}
