//! Refusal events: one record per hello the filter refuses, sent to
//! userspace through a BPF ring buffer, which writes it to the handshake log.
//!
//! A flood must not cost the program more than a counter per refusal, so each
//! CPU sends at most [`FilterConfig::event_budget`](crate::FilterConfig)
//! records per second; past that it only counts ([`EventCounts::over_budget`]),
//! and a full ring is counted too ([`EventCounts::lost`]). Userspace adds the
//! counts to its log's summary lines, so every refusal is either itemised or
//! counted.

use crate::sni::SNI_WORDS;

/// Map names.
pub mod maps {
    /// `RingBuf` of [`RefusalEvent`](super::RefusalEvent) records.
    pub const EVENTS: &str = "REFUSAL_EVENTS";
    /// `PerCpuArray<EventCounts>` with one entry: each CPU's budget and counts.
    pub const COUNTS: &str = "EVENT_COUNTS";
}

/// Bytes of the ring buffer (a power of two, whole pages): about 3,500
/// records, a few seconds of the default budget on every CPU.
pub const EVENT_RING_BYTES: u32 = 1 << 20;

/// The budget window: one second.
pub const EVENT_WINDOW_NS: u64 = 1_000_000_000;

/// [`RefusalEvent::flags`]: the client's address is IPv6.
pub const EVENT_IPV6: u8 = 1;
/// [`RefusalEvent::flags`]: the hello was decided from several segments or records.
pub const EVENT_SPLIT: u8 = 2;

/// [`RefusalEvent::action`]: the hello became a RST toward the local stack
/// (the socket is torn down, and the client's retransmission is reset).
pub const ACTION_RESET: u8 = 0;
/// [`RefusalEvent::action`]: the hello was dropped (`refuse = "drop"`, or no
/// connection held its 4-tuple).
pub const ACTION_DROP: u8 = 1;
/// [`RefusalEvent::action`]: the first data of a SYN-cookie handshake, handed
/// to the cookie program, which resets the client if its cookie is valid and
/// drops the segment if not.
pub const ACTION_COOKIE_RESET: u8 = 2;

/// One refused hello.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RefusalEvent {
    /// The client's address, network byte order (IPv4 in the first word).
    pub saddr: [u32; 4],
    /// The client's port, network byte order.
    pub sport: u16,
    /// The server's port, network byte order.
    pub dport: u16,
    /// The highest version the hello offered (wire value).
    pub max_version: u16,
    /// The drop counter it was counted as (a `Stat` index).
    pub stat: u8,
    /// `EVENT_*` flags.
    pub flags: u8,
    /// One of `ACTION_*`.
    pub action: u8,
    /// One of the `SNI_*` states (present, absent, not seen).
    pub sni_state: u8,
    /// Bytes of `sni` that hold the name (when present).
    pub sni_len: u8,
    /// Reserved, zero.
    pub reserved: u8,
    /// The SNI as sent, when present.
    pub sni: [u64; SNI_WORDS],
}

impl RefusalEvent {
    /// The SNI's bytes (empty when none was present).
    pub fn sni_bytes(&self) -> &[u8] {
        if self.sni_state != crate::SNI_PRESENT {
            return &[];
        }
        // SAFETY: `sni` is plain memory of SNI_WORDS * 8 bytes, read as bytes.
        let bytes: &[u8; SNI_WORDS * 8] = unsafe { &*self.sni.as_ptr().cast() };
        &bytes[..(self.sni_len as usize).min(SNI_WORDS * 8)]
    }
}

/// Each CPU's event budget and counts (the value of [`maps::COUNTS`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// When the CPU's current budget window began (coarse monotonic ns).
    pub window_start: u64,
    /// Records sent in the current window.
    pub used: u64,
    /// Records sent in all.
    pub sent: u64,
    /// Refusals not sent: the window's budget was spent.
    pub over_budget: u64,
    /// Refusals not sent: the ring was full.
    pub lost: u64,
}
