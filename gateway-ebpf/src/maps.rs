//! The program's maps, in one place: userspace writes the policy maps and
//! reads the counters through the names in `gateway_common::maps`; the stages
//! import what they use from here.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use gateway_common::{
    BPF_F_NO_PREALLOC, DEFAULT_FLOW_ANCHORS, DEFAULT_HELLO_FLOWS, FilterConfig, FlowAnchor,
    FlowKey, HelloFlow, HostPolicy, MAX_HOSTS, MAX_REFUSED_FLOWS, PORT_BITMAP_WORDS, Scratch, Stat,
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
