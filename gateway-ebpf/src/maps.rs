//! The program's maps, in one place: userspace writes the policy maps and
//! reads the counters through the names in `gateway_common::maps`; the stages
//! import what they use from here.

use crate::{reply::ReplyWork, tc::AckSegment};
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use gateway_common::{
    BPF_F_NO_PREALLOC, DEFAULT_FLOW_ANCHORS, DEFAULT_HELLO_FLOWS, FilterConfig, FlowAnchor,
    FlowKey, HelloFlow, HostPolicy, MAX_HOSTS, MAX_REFUSED_FLOWS, PORT_BITMAP_WORDS, Scratch, Stat,
    events::{EVENT_RING_BYTES, EventCounts},
    syncookie::{
        COOKIE_PROGRAMS, CookieConfig, CookieKey, CookieStat, KEY_RING, Offered, SYN_COUNTERS,
    },
};

/// Each hostname's minimum, by SNI fingerprint (written by userspace).
#[map]
pub(crate) static HOST_POLICY: HashMap<u64, HostPolicy> =
    HashMap::with_max_entries(MAX_HOSTS, BPF_F_NO_PREALLOC);

/// The filter's settings: refuse mode, no-SNI minimum, flow seed (one entry).
#[map]
pub(crate) static CONFIG: Array<FilterConfig> = Array::with_max_entries(1, 0);

/// The TLS ports, as a bitmap of 64-bit words.
#[map]
pub(crate) static TLS_PORTS: Array<u64> = Array::with_max_entries(PORT_BITMAP_WORDS, 0);

/// Per-CPU counters, indexed by `Stat`.
#[map]
pub(crate) static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Stat::COUNT, 0);

/// Flows already refused, so their retransmissions are refused too.
#[map]
pub(crate) static REFUSED_FLOWS: LruHashMap<FlowKey, u32> =
    LruHashMap::with_max_entries(MAX_REFUSED_FLOWS, 0);

/// Refused hellos, one `RefusalEvent` each, for the handshake log.
#[map]
pub(crate) static REFUSAL_EVENTS: RingBuf = RingBuf::with_byte_size(EVENT_RING_BYTES, 0);

/// Per-CPU: the refusal events' budget window and counts.
#[map]
pub(crate) static EVENT_COUNTS: PerCpuArray<EventCounts> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU working memory for one hello's parse.
#[map]
pub(crate) static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Sized by userspace at load time (`[xdp] flow_anchors`).
#[map]
pub(crate) static FLOW_ANCHORS: Array<FlowAnchor> =
    Array::with_max_entries(DEFAULT_FLOW_ANCHORS, 0);

/// Sized by userspace at load time (`[xdp] hello_flows`).
#[map]
pub(crate) static HELLO_FLOWS: Array<HelloFlow> = Array::with_max_entries(DEFAULT_HELLO_FLOWS, 0);

/// SYN-cookie keys, indexed by time slot % 3 (written by userspace).
#[map]
pub(crate) static COOKIE_KEYS: Array<CookieKey> = Array::with_max_entries(KEY_RING, 0);

/// The options the kernel allows in a cookie handshake (one entry).
#[map]
pub(crate) static COOKIE_CONFIG: Array<CookieConfig> = Array::with_max_entries(1, 0);

/// Each port's cookie flags (`PORT_ANSWER`, `PORT_CHECK`).
#[map]
pub(crate) static COOKIE_PORTS: Array<u8> = Array::with_max_entries(65536, 0);

/// SYNs seen per port (by port % 256), per CPU: what `auto` mode watches.
#[map]
pub(crate) static SYN_COUNTS: PerCpuArray<u64> = PerCpuArray::with_max_entries(SYN_COUNTERS, 0);

/// The cookie stage's counters, indexed by `CookieStat`.
#[map]
pub(crate) static COOKIE_STATS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(CookieStat::COUNT, 0);

/// The cookie programs `gateway_xdp` tail-calls (`cookie::TAIL_*` - `TAIL_SYN`),
/// filled by userspace.
#[map]
pub(crate) static COOKIE_PROGS: ProgramArray = ProgramArray::with_max_entries(COOKIE_PROGRAMS, 0);

/// Per-CPU: the options of the SYN (or segment) being answered. Map memory,
/// so that the verifier does not carry the walk's findings as constants.
#[map]
pub(crate) static OPTIONS_READ: PerCpuArray<Offered> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU working memory for building a cookie program's reply.
#[map]
pub(crate) static REPLY_WORK: PerCpuArray<ReplyWork> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU working memory of the TC program: the segment it looks at.
#[map]
pub(crate) static TC_WORK: PerCpuArray<AckSegment> = PerCpuArray::with_max_entries(1, 0);
