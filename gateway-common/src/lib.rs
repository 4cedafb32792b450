//! Types shared by the XDP program (`gateway-ebpf`) and userspace (`gateway-user`).
//!
//! Everything here is `#[repr(C)]` plain data: map keys, map values and the
//! counter layout. Map names are defined once, in [`maps`], and both sides use them.
//! The XDP program holds no policy: userspace fills these maps and reads the counters.
#![no_std]

pub mod events;
pub mod flow;
pub mod sni;
pub mod stats;
pub mod syncookie;
pub mod version;

pub use flow::{FlowAnchor, HelloFlow};
pub use stats::{Stat, StatKind};

/// Longest SNI the filter matches against the policy (RFC 6066 host names fit easily).
pub const MAX_SNI_LEN: usize = 255;

/// Handshake bytes of a ClientHello the filter reads (record headers excluded),
/// whether the hello came in one segment or was reassembled from several.
/// A hello longer than this is parsed as far as it goes (fail open after).
pub const PAYLOAD_CAP: usize = 4096;

/// Bytes of the client's stream (record headers included) kept per flow while
/// its hello is reassembled: the bytes a retransmission is compared against.
pub const STREAM_CAP: usize = 8192;

/// Largest single copy into a reassembly buffer; the buffers carry this much
/// slack so that a copy at any in-bounds offset stays inside the map value.
pub const COPY_CHUNK: usize = 512;

/// A buffer of handshake bytes, with slack for masked reads and chunked copies.
pub type HelloBytes = [u8; PAYLOAD_CAP + COPY_CHUNK];

/// Default slots of the flow-anchor table (16 bytes each): flows whose SYN was seen.
pub const DEFAULT_FLOW_ANCHORS: u32 = 1 << 16;

/// Default slots of the reassembly table (about 13 KiB each): hellos in flight.
pub const DEFAULT_HELLO_FLOWS: u32 = 4096;

/// Number of 64-bit words in the TLS port bitmap (one bit per TCP port).
pub const PORT_BITMAP_WORDS: u32 = 65536 / 64;

/// Entries of the hostname policy map the object declares; userspace sets
/// the size at load (`[xdp] hostnames`, default [`DEFAULT_HOSTS`]).
pub const MAX_HOSTS: u32 = 65536;

/// Default size of the hostname policy map: room for a SaaS platform's
/// 1,000,000 hostnames. The map is not preallocated, so an entry costs kernel
/// memory only once it is written.
pub const DEFAULT_HOSTS: u32 = 1_000_000;

/// `BPF_F_NO_PREALLOC`: a hash map that allocates its entries as they are written.
pub const BPF_F_NO_PREALLOC: u32 = 1;

/// Entries of the table that remembers recently refused flows.
pub const MAX_REFUSED_FLOWS: u32 = 65536;

/// Map names, shared so that userspace looks up exactly what the program declares.
pub mod maps {
    /// `HashMap<u64, HostPolicy>`: hostnames with their own minimum, by SNI fingerprint.
    pub const HOST_POLICY: &str = "HOST_POLICY";
    /// `Array<FilterConfig>` with one entry: zone-wide minimums.
    pub const CONFIG: &str = "CONFIG";
    /// `Array<u64>` of [`PORT_BITMAP_WORDS`](crate::PORT_BITMAP_WORDS): ports carrying TLS.
    pub const TLS_PORTS: &str = "TLS_PORTS";
    /// `PerCpuArray<u64>` indexed by [`Stat`](crate::Stat).
    pub const STATS: &str = "STATS";
    /// `LruHashMap<FlowKey, u32>`: flows whose ClientHello was refused.
    pub const REFUSED_FLOWS: &str = "REFUSED_FLOWS";
    /// `PerCpuArray<Scratch>` with one entry: per-CPU working memory.
    pub const SCRATCH: &str = "SCRATCH";
    /// `Array<FlowAnchor>`: per-flow stream anchors, indexed by flow hash.
    pub const FLOW_ANCHORS: &str = "FLOW_ANCHORS";
    /// `Array<HelloFlow>`: hellos being reassembled, indexed by flow hash.
    pub const HELLO_FLOWS: &str = "HELLO_FLOWS";
}

/// Program names in the object file.
pub mod programs {
    /// The ClientHello filter.
    pub const FILTER: &str = "gateway_xdp";
    /// A program that only returns `XDP_PASS`: the baseline for benchmarks.
    pub const BASELINE: &str = "baseline_pass";
}

/// Value of [`maps::HOST_POLICY`], keyed by the first half of the SNI's
/// [`sni::fingerprint`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostPolicy {
    /// The second half of the fingerprint: the entry applies only if it matches too.
    pub check: u64,
    /// Lowest acceptable TLS version, as a wire value (0x0301 = TLS 1.0 … 0x0304 = TLS 1.3).
    pub min_version: u16,
    /// Reserved, zero.
    pub reserved: [u16; 3],
}

/// The single value of [`maps::CONFIG`]. All zero (the state before userspace
/// writes it) means "refuse nothing".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilterConfig {
    /// Minimum for an SNI that has no entry in [`maps::HOST_POLICY`].
    pub zone_min: u16,
    /// Minimum for a ClientHello that carries no SNI at all.
    pub no_sni_min: u16,
    /// The lowest minimum of all: decides hellos whose SNI is not visible in the segment.
    pub floor_min: u16,
    /// How a refused hello is handled: [`REFUSE_RESET`] or [`REFUSE_DROP`].
    pub refuse_mode: u16,
    /// Seed of the flow hash that indexes [`maps::FLOW_ANCHORS`] and
    /// [`maps::HELLO_FLOWS`]: random, so that nobody can aim at a slot; a new
    /// seed forgets every flow at once (replay does it between files).
    pub flow_seed: u32,
    /// Slots of [`maps::FLOW_ANCHORS`] minus one (a power of two minus one).
    pub anchor_mask: u32,
    /// Slots of [`maps::HELLO_FLOWS`] minus one (a power of two minus one).
    pub hello_mask: u32,
    /// Refusal events each CPU may send per second (see [`events`]); 0: none.
    pub event_budget: u32,
}

/// [`FilterConfig::refuse_mode`]: rewrite the hello into a RST toward the local
/// stack, so the half-open socket is torn down and the client is reset promptly.
pub const REFUSE_RESET: u16 = 0;
/// [`FilterConfig::refuse_mode`]: drop the hello silently (`XDP_DROP`); the client
/// retransmits until it gives up and the server's socket waits for its timeout.
pub const REFUSE_DROP: u16 = 1;

/// Key of [`maps::REFUSED_FLOWS`]: a flow and the sequence number of its refused hello.
///
/// IPv4 addresses occupy the first word of each address, the rest zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowKey {
    /// Source address, network byte order.
    pub saddr: [u32; 4],
    /// Destination address, network byte order.
    pub daddr: [u32; 4],
    /// Source port, network byte order.
    pub sport: u16,
    /// Destination port, network byte order.
    pub dport: u16,
    /// TCP sequence number of the refused segment, network byte order.
    pub seq: u32,
}

/// What the filter learned from the last ClientHello it parsed on a CPU.
///
/// Written for every parsed hello into the per-CPU [`Scratch`], so the
/// `gateway xdp replay` tool can report it; costs nothing extra on the data path.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HelloSummary {
    /// Highest version offered (wire value), 0 if not determined.
    pub max_version: u16,
    /// One of the `SNI_*` constants.
    pub sni_state: u8,
    /// Length of the SNI in [`Scratch::sni`] (when `sni_state` is present).
    pub sni_len: u8,
}

/// [`HelloSummary::sni_state`]: the SNI was not seen in the visible part of the hello.
pub const SNI_UNKNOWN: u8 = 0;
/// [`HelloSummary::sni_state`]: the whole extension block was seen and has no SNI.
pub const SNI_ABSENT: u8 = 1;
/// [`HelloSummary::sni_state`]: the SNI is in [`Scratch::sni`].
pub const SNI_PRESENT: u8 = 2;

/// Number of values in [`Scratch::segment`].
pub const SEGMENT_SLOTS: usize = 12;

/// Number of parser slots in [`Scratch::slots`].
pub const SCRATCH_SLOTS: usize = 16;

/// Per-CPU working memory of the filter: the copied payload and the SNI key.
///
/// Kept in a map because the eBPF stack (512 bytes) cannot hold it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Scratch {
    /// The handshake bytes of a hello that fits one segment and one record
    /// (a reassembled hello is parsed in its [`HelloFlow`] instead).
    pub payload: HelloBytes,
    /// The SNI of the last hello as sent (when `summary.sni_state` is present),
    /// aligned for word-at-a-time hashing.
    pub sni: [u64; sni::SNI_WORDS],
    /// What the last hello offered.
    pub summary: HelloSummary,
    /// A retransmitted segment's bytes, copied out to compare with the kept stream.
    pub compare: [u64; COPY_CHUNK / 8 + 2],
    /// The parser's working values (offsets into `payload`, flags, results),
    /// kept in memory on purpose: each parsing stage starts from values the
    /// verifier knows nothing about, so it checks every stage once rather than
    /// once per path through the stages before it.
    pub slots: [u32; SCRATCH_SLOTS],
    /// The segment under inspection and its flow: header offsets, payload,
    /// sequence number, table slots, tag and anchor (the eBPF crate's
    /// `staged` module names them). Passed through memory for the same reason
    /// as `slots`: each way through the headers (VLAN tags, IPv4 or IPv6)
    /// reaches the hello parser in the same verifier state.
    pub segment: [u32; SEGMENT_SLOTS],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C) plain integers and byte arrays: every bit pattern is
    // valid, and padding is explicit (reserved fields) or absent.
    unsafe impl aya::Pod for super::HostPolicy {}
    // SAFETY: repr(C) plain integers and byte arrays: every bit pattern is
    // valid, and padding is explicit (reserved fields) or absent.
    unsafe impl aya::Pod for super::FilterConfig {}
    // SAFETY: repr(C) plain integers and byte arrays: every bit pattern is
    // valid, and padding is explicit (reserved fields) or absent.
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: repr(C) plain integers and byte arrays: every bit pattern is
    // valid, and padding is explicit (reserved fields) or absent.
    unsafe impl aya::Pod for super::Scratch {}
    // SAFETY: repr(C) plain integers and byte arrays: every bit pattern is
    // valid, and padding is explicit (reserved fields) or absent.
    unsafe impl aya::Pod for super::FlowAnchor {}
    // SAFETY: repr(C) plain integers and byte arrays: every bit pattern is
    // valid, and padding is explicit (reserved fields) or absent.
    unsafe impl aya::Pod for super::HelloFlow {}
    // SAFETY: repr(C) plain integers: every bit pattern is valid, no padding.
    unsafe impl aya::Pod for super::events::EventCounts {}
    // SAFETY: repr(C) plain integers: every bit pattern is valid, no padding.
    unsafe impl aya::Pod for super::syncookie::CookieKey {}
    // SAFETY: repr(C) plain integers: every bit pattern is valid, no padding.
    unsafe impl aya::Pod for super::syncookie::CookieConfig {}
}
