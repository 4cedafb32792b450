//! The segment under inspection, handed from the header walk to the hello
//! stages through per-CPU memory (`Scratch::segment`), so that each stage is
//! verified once from values the verifier knows nothing about.

use gateway_common::{SEGMENT_SLOTS, Scratch};

/// The staged segment and its flow.
pub(crate) struct Staged {
    /// Offset of the TCP header.
    pub tcp_off: u32,
    /// Offset of the TCP payload.
    pub payload_off: u32,
    /// Bytes of TCP payload.
    pub payload_len: u32,
    /// Offset of the IP header.
    pub l3_off: u32,
    /// 1 for IPv6.
    pub ipv6: u32,
    /// Sequence number of the segment.
    pub seq: u32,
    /// The flow's slot in `FLOW_ANCHORS`.
    pub anchor_slot: u32,
    /// The flow's slot in `HELLO_FLOWS`.
    pub flow_slot: u32,
    /// The flow's tag.
    pub tag: u32,
    /// The flow's anchor flags (`ANCHOR_FROM_SYN` when its SYN was seen).
    pub anchor_flags: u32,
    /// Sequence number of the first byte of the client's stream (as far as known).
    pub start_seq: u32,
}

impl Staged {
    /// The TCP header offset, bounded for the verifier.
    #[inline(always)]
    pub(crate) fn tcp_off(&self) -> usize {
        self.tcp_off as usize & 0xff
    }

    /// The payload offset, bounded for the verifier (headers end before 512).
    #[inline(always)]
    pub(crate) fn payload_off(&self) -> usize {
        self.payload_off as usize & 0x1ff
    }

    /// The IP header offset, bounded for the verifier.
    #[inline(always)]
    pub(crate) fn l3_off(&self) -> usize {
        self.l3_off as usize & 0x3f
    }

    /// Whether the IP header is IPv6.
    #[inline(always)]
    pub(crate) fn ipv6(&self) -> bool {
        self.ipv6 != 0
    }
}

/// Stores `seg` for the next stage.
#[inline(always)]
pub(crate) fn write(scratch: &mut Scratch, seg: &Staged) {
    let v = [
        seg.tcp_off,
        seg.payload_off,
        seg.payload_len,
        seg.l3_off,
        seg.ipv6,
        seg.seq,
        seg.anchor_slot,
        seg.flow_slot,
        seg.tag,
        seg.anchor_flags,
        seg.start_seq,
        0,
    ];
    const _: () = assert!(SEGMENT_SLOTS == 12);
    // SAFETY: a volatile store to a valid, exclusive reference.
    unsafe { core::ptr::write_volatile(&mut scratch.segment, v) };
}

/// Loads the staged segment.
#[inline(always)]
pub(crate) fn read(scratch: &Scratch) -> Staged {
    // SAFETY: a volatile load from a valid reference.
    let v = unsafe { core::ptr::read_volatile(&scratch.segment) };
    Staged {
        tcp_off: v[0],
        payload_off: v[1],
        payload_len: v[2],
        l3_off: v[3],
        ipv6: v[4],
        seq: v[5],
        anchor_slot: v[6],
        flow_slot: v[7],
        tag: v[8],
        anchor_flags: v[9],
        start_seq: v[10],
    }
}
