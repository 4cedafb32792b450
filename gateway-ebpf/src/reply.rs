//! Segments sent back where a frame came from (`XDP_TX`): the headers of the
//! segment answered, copied, and the SYN-ACK or RST built from them in place
//! of the frame, with its checksums.

use aya_ebpf::{
    bindings::{xdp_action, xdp_md},
    helpers::generated::bpf_xdp_adjust_tail,
    programs::XdpContext,
};
use gateway_common::syncookie::SYNACK_OPTIONS_MAX;

use crate::packet::{self, Segment, bytes_at};

const IPV4_HDR_LEN: usize = 20;
const IPV6_HDR_LEN: usize = 40;
const TCP_HDR_LEN: usize = 20;

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
pub(crate) fn headers(ctx: &XdpContext, at: &Place) -> Option<Headers> {
    let mut h = Headers {
        ip: [0; IPV6_HDR_LEN],
        tcp: [0; TCP_HDR_LEN],
    };
    read_headers(ctx, at, &mut h).then_some(h)
}

/// [`headers`] into `out` (map memory, in the programs that build a reply).
#[inline(always)]
pub(crate) fn read_headers(ctx: &XdpContext, at: &Place, out: &mut Headers) -> bool {
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
pub(crate) struct Place {
    /// Offset of the IP header.
    pub l3_off: usize,
    /// Offset of the TCP header.
    pub tcp_off: usize,
    /// Whether the IP header is IPv6.
    pub ipv6: bool,
}

impl Place {
    /// Where `seg`'s headers are.
    #[inline(always)]
    pub(crate) fn of(seg: &Segment) -> Place {
        Place {
            l3_off: seg.l3_off,
            tcp_off: seg.tcp_off,
            ipv6: seg.ipv6,
        }
    }
}

/// `N` bytes of the frame at `off`, copied.
#[inline(always)]
pub(crate) fn read<const N: usize>(ctx: &XdpContext, off: usize) -> Option<[u8; N]> {
    // SAFETY: bytes_at checked that [off, off + N) lies inside the frame.
    bytes_at::<N>(ctx, off).map(|p| unsafe { *p })
}

/// A segment to send back where the frame came from (its options are in
/// [`ReplyWork::options`]).
pub(crate) struct Reply {
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// TCP flags.
    pub flags: u8,
    /// Window.
    pub window: u16,
    /// Bytes of options (a multiple of 4, at most 20).
    pub options_len: usize,
}

/// Per-CPU working memory for building a reply: map memory rather than the
/// stack, whose 512 bytes the program's frames share.
pub(crate) struct ReplyWork {
    /// The headers of the segment answered.
    pub headers: Headers,
    /// The reply's IP header (an IPv4 one fills the first 20 bytes).
    ip: [u8; IPV6_HDR_LEN],
    /// The reply's TCP header.
    tcp: [u8; TCP_HDR_LEN],
    /// The reply's TCP options.
    pub options: [u8; SYNACK_OPTIONS_MAX],
}

/// Rewrites the frame, in place, into `reply` from the frame's destination to
/// its source, trims or grows it, and returns XDP_TX (XDP_DROP if it cannot).
#[inline(never)]
pub(crate) fn send_back(ctx: &XdpContext, seg: &Place, reply: &Reply, work: &mut ReplyWork) -> u32 {
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
