//! Per-flow state of the filter: where each client stream begins, and the
//! bytes of hellos that span several TCP segments or TLS records.
//!
//! Both tables are arrays indexed by a seeded hash of the flow's addresses and
//! ports (direct-mapped: a new flow takes its slot, and a flow that finds its
//! slot taken by another has lost its state and passes). Arrays cost no
//! allocation per flow and their lookups are inlined by the verifier, so the
//! check every data segment to a TLS port pays is one load.
//!
//! How the program knows that a segment begins the client's byte stream: the
//! SYN. Every SYN to a TLS port writes the flow's anchor, `start_seq` = ISN + 1,
//! and only a segment at exactly that sequence number may begin a ClientHello.
//! Bytes later in the stream (a TLS 1.2 renegotiation, application data that
//! starts with 0x16) are never parsed as a new hello. A flow without an anchor
//! (the program was attached after its SYN, or a colliding SYN took the slot)
//! is treated as the single-segment filter always did: a payload that starts
//! with a ClientHello header begins the stream.

use crate::{COPY_CHUNK, FlowKey, HelloBytes, STREAM_CAP};

/// [`FlowAnchor::state`]: the SYN was seen; the stream has not begun a hello.
pub const FLOW_AWAIT: u32 = 1;
/// [`FlowAnchor::state`]: a hello is being reassembled in [`HelloFlow`].
pub const FLOW_HELLO: u32 = 2;
/// [`FlowAnchor::state`]: the hello was allowed; nothing more to look at.
pub const FLOW_DECIDED: u32 = 3;
/// [`FlowAnchor::state`]: the hello was refused; retransmissions pass unchanged.
pub const FLOW_REFUSED: u32 = 4;
/// [`FlowAnchor::state`]: reassembly gave up (fail open); nothing more to look at.
pub const FLOW_GAVE_UP: u32 = 5;

/// [`FlowAnchor::flags`]: the anchor was written by the flow's SYN.
pub const ANCHOR_FROM_SYN: u32 = 1;
/// [`FlowAnchor::flags`]: the flow's handshake was answered with a SYN cookie,
/// and the anchor was written by its first data segment.
pub const ANCHOR_FROM_COOKIE: u32 = 2;

/// [`HelloFlow::layout`]: not known yet (fewer than 9 stream bytes).
pub const LAYOUT_UNKNOWN: u32 = 0;
/// [`HelloFlow::layout`]: the first record holds the whole message, so the
/// handshake bytes are read in place, 5 bytes into `stream` (no copy).
pub const LAYOUT_ONE_RECORD: u32 = 1;
/// [`HelloFlow::layout`]: the message spans records; their bodies are copied into `hello`.
pub const LAYOUT_RECORDS: u32 = 2;
/// [`HelloFlow::layout`]: an SSL 2.0-format hello (first byte's high bit set),
/// decided from its 11-byte header once that is in.
pub const LAYOUT_SSLV2: u32 = 3;

/// One slot of [`maps::FLOW_ANCHORS`](crate::maps::FLOW_ANCHORS).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowAnchor {
    /// The owning flow's tag (from its hash, never 0); 0 is an empty slot.
    pub tag: u32,
    /// Sequence number of the first byte of the client's stream.
    pub start_seq: u32,
    /// One of the `FLOW_*` states.
    pub state: u32,
    /// `ANCHOR_*` flags.
    pub flags: u32,
}

/// One slot of [`maps::HELLO_FLOWS`](crate::maps::HELLO_FLOWS): a ClientHello
/// being reassembled. About 13 KiB; the table's size is entries × this.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HelloFlow {
    /// Taken with an atomic compare-and-swap by the CPU working on the slot;
    /// another CPU that finds it taken passes its segment (fail open).
    pub lock: u64,
    /// The flow; `seq` is the sequence number of the stream's first byte.
    pub owner: FlowKey,
    /// The `flow_seed` the slot was taken under (a new seed frees every slot).
    pub seed: u32,
    /// 1 while the slot holds a hello in progress.
    pub active: u32,
    /// Stream bytes kept in `stream`: the next in-order byte is `owner.seq + stream_len`.
    pub stream_len: u32,
    /// Stream offset of the next byte to take out of the records into `hello`.
    pub record_pos: u32,
    /// Stream offset where the current record ends (`record_pos` at a header when equal).
    pub record_end: u32,
    /// Handshake bytes taken out of the records into `hello`.
    pub hello_len: u32,
    /// Segments appended plus record headers read: more than two means the
    /// hello was split (counted apart when it is decided).
    pub pieces: u32,
    /// How the handshake bytes are read: `LAYOUT_*` (unknown until the first
    /// record and handshake headers are in).
    pub layout: u32,
    /// The client's stream from its first byte, record headers included.
    pub stream: [u64; (STREAM_CAP + COPY_CHUNK) / 8],
    /// The handshake bytes, record headers removed: what the parser reads.
    pub hello: HelloBytes,
}

/// The 64-bit flow hash: addresses folded into one word, then ports, mixed
/// with the seed. Slot indices and tags are taken from different bits.
#[inline(always)]
pub fn flow_hash(addrs: u64, ports: u32, seed: u32) -> u64 {
    let mut h = (seed as u64) ^ 0x9e37_79b9_7f4a_7c15;
    h = (h ^ addrs).wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 29;
    h = (h ^ ports as u64).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 32)
}

/// The tag of a flow in [`FlowAnchor::tag`]: never 0.
#[inline(always)]
pub fn flow_tag(hash: u64) -> u32 {
    (hash >> 32) as u32 | 1
}
