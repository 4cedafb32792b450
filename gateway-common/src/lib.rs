//! Types shared by the XDP program (`gateway-ebpf`) and userspace (`gateway-user`).
//!
//! Everything here is `#[repr(C)]` plain data: map keys, map values and the
//! counter layout. Map names are defined once, in [`maps`], and both sides use them.
//! The XDP program holds no policy: userspace fills these maps and reads the counters.
#![no_std]

pub mod sni;
pub mod stats;
pub mod version;

pub use stats::Stat;

/// Longest SNI the filter matches against the policy (RFC 6066 host names fit easily).
pub const MAX_SNI_LEN: usize = 255;

/// Bytes of TCP payload the filter copies out of a segment to parse a ClientHello.
/// A hello longer than this in one segment is parsed as far as it goes (fail open after).
pub const PAYLOAD_CAP: usize = 4096;

/// Number of 64-bit words in the TLS port bitmap (one bit per TCP port).
pub const PORT_BITMAP_WORDS: u32 = 65536 / 64;

/// Maximum number of hostnames with their own minimum TLS version.
pub const MAX_HOSTS: u32 = 65536;

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

/// Number of parser slots in [`Scratch::slots`].
pub const SCRATCH_SLOTS: usize = 16;

/// Per-CPU working memory of the filter: the copied payload and the SNI key.
///
/// Kept in a map because the eBPF stack (512 bytes) cannot hold it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Scratch {
    /// The first [`PAYLOAD_CAP`] bytes of the TCP payload, plus slack so that
    /// masked multi-byte reads stay inside the value.
    pub payload: [u8; PAYLOAD_CAP + 8],
    /// The SNI of the last hello as sent (when `summary.sni_state` is present),
    /// aligned for word-at-a-time hashing.
    pub sni: [u64; sni::SNI_WORDS],
    /// What the last hello offered.
    pub summary: HelloSummary,
    /// The parser's working values (offsets into `payload`, flags, results),
    /// kept in memory on purpose: each parsing stage starts from values the
    /// verifier knows nothing about, so it checks every stage once rather than
    /// once per path through the stages before it.
    pub slots: [u32; SCRATCH_SLOTS],
    /// The segment under inspection: TCP header offset, payload offset, payload
    /// length, IP header offset, and 1 for IPv6. Passed through memory for the
    /// same reason as `slots`: each way through the headers (VLAN tags, IPv4 or
    /// IPv6) reaches the hello parser in the same verifier state.
    pub segment: [u32; 5],
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C) plain integers and byte arrays; every bit
    // pattern is valid, and padding is explicit (reserved fields) or absent.
    unsafe impl aya::Pod for super::HostPolicy {}
    unsafe impl aya::Pod for super::FilterConfig {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::Scratch {}
}
