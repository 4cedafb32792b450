//! Header walk: Ethernet → up to two VLAN tags → IPv4/IPv6 (and up to four
//! IPv6 extension headers) → TCP.
//!
//! Each step takes an offset and returns the next one, or the reason to stop.
//! Every read is preceded by a `data_end` check the verifier can follow; all
//! offsets are bounded by small constants.

use aya_ebpf::{
    bindings::bpf_sock_tuple__bindgen_ty_1__bindgen_ty_2 as Ipv6Tuple,
    bindings::{bpf_sock_tuple, bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 as Ipv4Tuple},
    helpers::generated::{bpf_sk_release, bpf_skc_lookup_tcp},
    programs::XdpContext,
};
use gateway_common::{FlowKey, Stat};

const ETH_HDR_LEN: usize = 14;
const VLAN_HDR_LEN: usize = 4;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;
const IPV6_HDR_LEN: usize = 40;
/// IPv6 extension headers the walk looks through (next-header values).
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_DSTOPTS: u8 = 60;
/// IPv6 extension headers it does not: ESP, AH, mobility, HIP, shim6, experiments.
const IPV6_EXT_OTHER: [u8; 7] = [50, 51, 135, 139, 140, 253, 254];
/// IPv6 extension headers walked before giving up.
const MAX_IPV6_EXT: usize = 4;
/// The furthest a TCP header may start (the staged offsets are masked to 8 bits).
const MAX_TCP_OFF: usize = 255;
/// VLAN tags we look through (802.1ad outer + 802.1Q inner).
const MAX_VLAN_TAGS: usize = 2;

/// TCP flag bits (byte 13 of the header).
pub(crate) const TCP_SYN: u8 = 0x02;
pub(crate) const TCP_RST: u8 = 0x04;
pub(crate) const TCP_ACK: u8 = 0x10;

/// A TCP segment located in the frame.
pub(crate) struct Segment {
    /// Offset of the TCP header.
    pub tcp_off: usize,
    /// Offset of the TCP payload.
    pub payload_off: usize,
    /// Payload length according to the IP header.
    pub payload_len: usize,
    /// TCP flags byte.
    pub flags: u8,
    /// Destination port, host byte order.
    pub dport: u16,
    /// Offset of the IP header.
    pub l3_off: usize,
    /// Whether the IP header is IPv6.
    pub ipv6: bool,
}

/// What identifies a segment's flow and place in it, read only for segments
/// to a TLS port that carry data or a SYN.
pub(crate) struct FlowBits {
    /// Sequence number, host byte order.
    pub seq: u32,
    /// Source and destination addresses folded into one word (the flow hash's input).
    pub addrs: u64,
    /// Source and destination ports as they are on the wire (the flow hash's input).
    pub ports: u32,
}

/// `x`, hidden from the optimiser: the clamps written after it stay in the code
/// for the verifier to see, instead of being folded into what LLVM can prove.
#[inline(always)]
pub(crate) fn opaque(x: usize) -> usize {
    // SAFETY: a volatile read of a local.
    unsafe { core::ptr::read_volatile(&x) }
}

/// Pointer to `N` bytes at `off`, if they are inside the linear frame.
#[inline(always)]
pub(crate) fn bytes_at<const N: usize>(ctx: &XdpContext, off: usize) -> Option<*mut [u8; N]> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + N > end {
        return None;
    }
    Some((start + off) as *mut [u8; N])
}

#[inline(always)]
fn read<const N: usize>(ctx: &XdpContext, off: usize) -> Option<[u8; N]> {
    // SAFETY: bytes_at checked that [off, off + N) lies inside the frame.
    bytes_at::<N>(ctx, off).map(|p| unsafe { *p })
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Walks Ethernet and VLAN headers; returns the EtherType and the L3 offset.
#[inline(always)]
fn parse_eth(ctx: &XdpContext) -> Option<(u16, usize)> {
    let mut off = ETH_HDR_LEN;
    let mut proto = be16(read::<2>(ctx, 12)?);
    for _ in 0..MAX_VLAN_TAGS {
        if proto != ETH_P_8021Q && proto != ETH_P_8021AD {
            break;
        }
        proto = be16(read::<2>(ctx, off + 2)?);
        off += VLAN_HDR_LEN;
    }
    Some((proto, off))
}

#[inline(always)]
fn word(b: &[u8], at: usize) -> u64 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as u64
}

/// Parses an IPv4 header; returns the L4 offset and the L4 length.
#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, off: usize) -> Result<(usize, usize), Stat> {
    let p = bytes_at::<20>(ctx, off).ok_or(Stat::PassNotTcp)?;
    // Bytes 0..8 (version and length, total length, id, fragment word) and
    // 8..16 (TTL, protocol, checksum, source address), as little-endian words.
    // SAFETY: bytes_at checked the 20 bytes are inside the frame.
    let (w0, w1) = unsafe { (load8_at(p.cast()), load8_at(p.cast::<u8>().add(8))) };
    let b0 = w0 as u8;
    let ihl = ((b0 & 0x0f) as usize) * 4;
    if b0 >> 4 != 4 || ihl < 20 {
        return Err(Stat::PassNotTcp);
    }
    if (w1 >> 8) as u8 != IPPROTO_TCP {
        return Err(Stat::PassNotTcp);
    }
    // More-fragments flag or a non-zero fragment offset.
    if ((w0 >> 48) as u16).swap_bytes() & 0x3fff != 0 {
        return Err(Stat::PassFragment);
    }
    let total = ((w0 >> 16) as u16).swap_bytes() as usize;
    if total < ihl {
        return Err(Stat::PassMalformed);
    }
    Ok((off + ihl, total - ihl))
}

/// Parses an IPv6 header; returns the L4 offset and length.
#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, off: usize) -> Result<(usize, usize), Stat> {
    let p = bytes_at::<IPV6_HDR_LEN>(ctx, off).ok_or(Stat::PassNotTcp)?;
    // SAFETY: bytes_at checked the 40 bytes are inside the frame.
    let hdr = unsafe { &*p };
    if hdr[0] >> 4 != 6 {
        return Err(Stat::PassNotTcp);
    }
    let len = be16([hdr[4], hdr[5]]) as usize;
    if hdr[6] == IPPROTO_TCP {
        return Ok((off + IPV6_HDR_LEN, len));
    }
    ipv6_extensions(ctx, hdr[6], off + IPV6_HDR_LEN, len)
}

/// Walks IPv6 extension headers from `off` (`next` names the first, `len`
/// bytes of payload follow the fixed header) to TCP: hop-by-hop and
/// destination options, a routing header with no segments left (this host is
/// the last destination, so the addresses are the connection's) and an atomic
/// fragment (offset 0, no more fragments: the whole packet, RFC 6946).
/// Returns the L4 offset and length, or why not.
#[inline(always)]
fn ipv6_extensions(
    ctx: &XdpContext,
    mut next: u8,
    mut off: usize,
    mut len: usize,
) -> Result<(usize, usize), Stat> {
    for _ in 0..MAX_IPV6_EXT {
        let ext_len = match next {
            IPPROTO_HOPOPTS | IPPROTO_DSTOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT => {
                let h = read::<8>(ctx, off).ok_or(Stat::PassMalformed)?;
                if next == IPPROTO_ROUTING && h[3] != 0 {
                    return Err(Stat::PassIpv6ExtHeaders); // segments left
                }
                if next == IPPROTO_FRAGMENT && be16([h[2], h[3]]) & 0xfff9 != 0 {
                    return Err(Stat::PassFragment); // an offset, or more to come
                }
                let ext_len = match next {
                    IPPROTO_FRAGMENT => 8, // fixed size; byte 1 is reserved
                    _ => ((h[1] as usize) + 1) * 8,
                };
                next = h[0];
                ext_len
            }
            _ if IPV6_EXT_OTHER.contains(&next) => return Err(Stat::PassIpv6ExtHeaders),
            _ => return Err(Stat::PassNotTcp),
        };
        if ext_len > len {
            return Err(Stat::PassMalformed);
        }
        off += ext_len;
        len -= ext_len;
        if off > MAX_TCP_OFF {
            return Err(Stat::PassIpv6ExtHeaders);
        }
        if next == IPPROTO_TCP {
            return Ok((off, len));
        }
    }
    Err(Stat::PassIpv6ExtHeaders)
}

/// Locates the TCP segment of the frame, or says why there is none to look at.
#[inline(always)]
pub(crate) fn parse_segment(ctx: &XdpContext) -> Result<Segment, Stat> {
    let (proto, l3_off) = parse_eth(ctx).ok_or(Stat::PassNotTcp)?;
    let (tcp_off, l4_len) = match proto {
        ETH_P_IPV4 => parse_ipv4(ctx, l3_off)?,
        ETH_P_IPV6 => parse_ipv6(ctx, l3_off)?,
        _ => return Err(Stat::PassNotTcp),
    };
    let p = bytes_at::<20>(ctx, tcp_off).ok_or(Stat::PassNotTcp)?;
    // Bytes 0..8 (ports, sequence number) and 8..16 (acknowledgment number,
    // data offset, flags, window), as little-endian words.
    // SAFETY: bytes_at checked the 20 bytes are inside the frame.
    let (w0, w1) = unsafe { (load8_at(p.cast()), load8_at(p.cast::<u8>().add(8))) };
    let doff = (((w1 >> 32) as u8 >> 4) as usize) * 4;
    if doff < 20 || doff > l4_len {
        return Err(Stat::PassMalformed);
    }
    Ok(Segment {
        tcp_off,
        payload_off: tcp_off + doff,
        payload_len: l4_len - doff,
        flags: (w1 >> 40) as u8,
        dport: ((w0 >> 16) as u16).swap_bytes(),
        l3_off,
        ipv6: proto == ETH_P_IPV6,
    })
}

/// The segment's flow: addresses, ports and sequence number, read again.
#[inline(always)]
pub(crate) fn flow_bits(ctx: &XdpContext, seg: &Segment) -> Option<FlowBits> {
    let addrs = if seg.ipv6 {
        let hdr = read::<IPV6_HDR_LEN>(ctx, seg.l3_off)?;
        let mut addrs = 0u64;
        for i in 0..4 {
            let (s, d) = (8 + i * 4, 24 + i * 4);
            addrs = addrs.rotate_left(19) ^ word(&hdr, s) ^ (word(&hdr, d) << 32);
        }
        addrs
    } else {
        // Source and destination address, as `word` would fold them.
        load8(ctx, seg.l3_off + 12)?
    };
    let tcp = load8(ctx, seg.tcp_off)?; // ports, then sequence number
    Some(FlowBits {
        seq: ((tcp >> 32) as u32).swap_bytes(),
        addrs,
        ports: tcp as u32,
    })
}

/// The 8 frame bytes at `off` as a little-endian word, in one load: the BPF
/// target splits a read it cannot prove aligned into eight byte loads, while
/// the kernel lets XDP read packet data unaligned wherever the CPU can.
#[inline(always)]
fn load8(ctx: &XdpContext, off: usize) -> Option<u64> {
    let p = bytes_at::<8>(ctx, off)?;
    // SAFETY: bytes_at checked the 8 bytes are inside the frame.
    Some(unsafe { load8_at(p.cast()) })
}

/// The 8 bytes at `p` as a little-endian word, in one load.
///
/// # Safety
///
/// The 8 bytes must be inside the frame, checked against `data_end` where the
/// verifier can see it.
#[inline(always)]
unsafe fn load8_at(p: *const u8) -> u64 {
    let w: u64;
    // SAFETY: the caller checked the bounds; nothing is written.
    unsafe {
        core::arch::asm!(
            "{w} = *(u64 *)({p} + 0)",
            p = in(reg) p,
            w = lateout(reg) w,
            options(readonly, nostack, preserves_flags),
        );
    }
    w
}

/// The key of a segment's flow: addresses, ports and sequence number, read
/// again from the headers (only hellos need it: refused, or being reassembled).
#[inline(always)]
pub(crate) fn flow_key(
    ctx: &XdpContext,
    l3_off: usize,
    ipv6: bool,
    tcp_off: usize,
) -> Option<FlowKey> {
    let mut flow = FlowKey::default();
    if ipv6 {
        let hdr = read::<IPV6_HDR_LEN>(ctx, l3_off)?;
        for i in 0..4 {
            let (s, d) = (8 + i * 4, 24 + i * 4);
            flow.saddr[i] = u32::from_ne_bytes([hdr[s], hdr[s + 1], hdr[s + 2], hdr[s + 3]]);
            flow.daddr[i] = u32::from_ne_bytes([hdr[d], hdr[d + 1], hdr[d + 2], hdr[d + 3]]);
        }
    } else {
        let hdr = read::<20>(ctx, l3_off)?;
        flow.saddr[0] = u32::from_ne_bytes([hdr[12], hdr[13], hdr[14], hdr[15]]);
        flow.daddr[0] = u32::from_ne_bytes([hdr[16], hdr[17], hdr[18], hdr[19]]);
    }
    let tcp = read::<8>(ctx, tcp_off)?;
    flow.sport = u16::from_ne_bytes([tcp[0], tcp[1]]);
    flow.dport = u16::from_ne_bytes([tcp[2], tcp[3]]);
    flow.seq = u32::from_ne_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    Some(flow)
}

/// `tcp_state` of a listening socket.
const TCP_LISTEN: u32 = 10;
/// The lookup's `netns` argument for the device's own namespace.
const BPF_F_CURRENT_NETNS: u64 = u64::MAX;

/// Whether the segment's flow may have a connection to reset: false only when
/// the stack's lookup finds the port's listener and no connection (no
/// established socket, none in the accept queue, no pending handshake), as for
/// a spoofed stateless segment, which the filter then drops. With no socket at
/// all (nothing listens on the port in this namespace) the stack's own answer
/// is a reset anyway, so the filter keeps its reset.
#[inline(always)]
pub(crate) fn has_connection(ctx: &XdpContext, flow: &FlowKey, ipv6: bool) -> bool {
    socket_state(ctx, flow, ipv6).is_none_or(|state| state != TCP_LISTEN)
}

/// Whether a socket other than a listener holds the flow's 4-tuple (a
/// connection, a pending handshake, a TIME_WAIT); false with no socket at all.
#[inline(always)]
pub(crate) fn held_by_connection(ctx: &XdpContext, flow: &FlowKey, ipv6: bool) -> bool {
    socket_state(ctx, flow, ipv6).is_some_and(|state| state != TCP_LISTEN)
}

/// The `tcp_state` of the socket the stack's lookup finds for the flow (its
/// connection, or else the port's listener), if any.
#[inline(always)]
fn socket_state(ctx: &XdpContext, flow: &FlowKey, ipv6: bool) -> Option<u32> {
    // SAFETY: a zeroed tuple is a valid value of this plain-data union.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    let size = if ipv6 {
        tuple.__bindgen_anon_1.ipv6 = Ipv6Tuple {
            saddr: flow.saddr,
            daddr: flow.daddr,
            sport: flow.sport,
            dport: flow.dport,
        };
        core::mem::size_of::<Ipv6Tuple>()
    } else {
        tuple.__bindgen_anon_1.ipv4 = Ipv4Tuple {
            saddr: flow.saddr[0],
            daddr: flow.daddr[0],
            sport: flow.sport,
            dport: flow.dport,
        };
        core::mem::size_of::<Ipv4Tuple>()
    };
    // SAFETY: the context, a tuple of the size passed, flags the helper takes;
    // a socket it returns is released below.
    let sk = unsafe {
        bpf_skc_lookup_tcp(
            ctx.ctx.cast(),
            &mut tuple,
            size as u32,
            BPF_F_CURRENT_NETNS,
            0,
        )
    };
    if sk.is_null() {
        return None;
    }
    // SAFETY: a socket the lookup returned; `state` is readable on any.
    let state = unsafe { (*sk).state };
    // SAFETY: releases the reference the lookup took.
    unsafe { bpf_sk_release(sk.cast()) };
    Some(state)
}

/// Turns the segment into a RST+ACK toward the local stack, in place.
///
/// The sequence number is the refused hello's, which is exactly what the
/// receiving socket expects next, so the kernel resets the connection (or drops
/// the pending request) without waking any application. The payload stays:
/// the stack ignores data on a RST. Only the flags word changes, so the TCP
/// checksum is patched incrementally (RFC 1624).
#[inline(always)]
pub(crate) fn rewrite_to_reset(ctx: &XdpContext, tcp_off: usize) -> bool {
    let Some(p) = bytes_at::<20>(ctx, tcp_off) else {
        return false;
    };
    // SAFETY: bytes_at checked the 20-byte TCP header is inside the frame.
    let tcp = unsafe { &mut *p };
    let old = u16::from_be_bytes([tcp[12], tcp[13]]);
    let new = (old & 0xff00) | (TCP_RST | TCP_ACK) as u16;
    let csum = u16::from_be_bytes([tcp[16], tcp[17]]);
    let mut sum = (!csum as u32) + (!old as u32) + new as u32;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    let csum = !(sum as u16);
    tcp[13] = new as u8;
    [tcp[16], tcp[17]] = csum.to_be_bytes();
    true
}
