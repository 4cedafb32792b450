//! The gateway's XDP program: refuses TLS ClientHellos below the minimum version
//! configured for their SNI, before the kernel's TCP stack spends work on them.
//!
//! It holds no policy: userspace fills `HOST_POLICY`, `CONFIG` and `TLS_PORTS`.
//! It drops only when certain; anything it cannot decide passes (fail open),
//! and the userspace terminator enforces the same policy completely.
#![no_std]
#![no_main]

mod hello;
mod packet;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::bpf_xdp_load_bytes,
    macros::{map, xdp},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use gateway_common::{
    FilterConfig, FlowKey, HelloSummary, HostPolicy, MAX_HOSTS, MAX_REFUSED_FLOWS, PAYLOAD_CAP,
    PORT_BITMAP_WORDS, REFUSE_DROP, REFUSE_RESET, SNI_ABSENT, SNI_PRESENT, SNI_UNKNOWN, Scratch,
    Stat, version,
};
use hello::{Slots, slot};
use packet::{Segment, TCP_RST, TCP_SYN};

#[map]
static HOST_POLICY: HashMap<u64, HostPolicy> = HashMap::with_max_entries(MAX_HOSTS, 0);

#[map]
static CONFIG: Array<FilterConfig> = Array::with_max_entries(1, 0);

#[map]
static TLS_PORTS: Array<u64> = Array::with_max_entries(PORT_BITMAP_WORDS, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Stat::COUNT, 0);

#[map]
static REFUSED_FLOWS: LruHashMap<FlowKey, u32> = LruHashMap::with_max_entries(MAX_REFUSED_FLOWS, 0);

#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// The ClientHello filter.
#[xdp(frags)]
pub fn gateway_xdp(ctx: XdpContext) -> u32 {
    let (stat, action) = filter(&ctx);
    count(stat);
    action
}

/// A program that passes everything: the baseline the benchmark compares against.
#[xdp(frags)]
pub fn baseline_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[inline(always)]
fn count(stat: Stat) {
    if let Some(slot) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}

/// Decides one frame: the counter to bump and the XDP action.
#[inline(always)]
fn filter(ctx: &XdpContext) -> (Stat, u32) {
    let pass = xdp_action::XDP_PASS;
    let seg = match packet::parse_segment(ctx) {
        Ok(seg) => seg,
        Err(stat) => return (stat, pass),
    };
    if !is_tls_port(seg.dport) {
        return (Stat::PassOtherPort, pass);
    }
    if seg.payload_len == 0 || seg.flags & (TCP_SYN | TCP_RST) != 0 {
        return (Stat::PassControl, pass);
    }
    if let Some(stat) = quick_reject(ctx, &seg) {
        return (stat, pass);
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return (Stat::PassUndecidable, pass);
    };
    // SAFETY: the per-CPU scratch entry belongs to this CPU for the program's run.
    let scratch = unsafe { &mut *scratch };
    // Stage boundary: the segment goes through memory (see `Scratch::segment`).
    let segment = [
        seg.tcp_off as u32,
        seg.payload_off as u32,
        seg.payload_len as u32,
        seg.l3_off as u32,
        seg.ipv6 as u32,
    ];
    // SAFETY: a volatile store to a valid, exclusive reference.
    unsafe { core::ptr::write_volatile(&mut scratch.segment, segment) };
    match judge_hello(ctx, scratch) {
        Ok(None) => (Stat::PassAllowed, pass),
        Ok(Some(drop)) => {
            let mode = CONFIG.get(0).map_or(REFUSE_RESET, |c| c.refuse_mode);
            if mode == REFUSE_DROP {
                (drop, xdp_action::XDP_DROP)
            } else {
                refuse(ctx, scratch, drop)
            }
        }
        Err(stat) => (stat, pass),
    }
}

#[inline(always)]
fn is_tls_port(port: u16) -> bool {
    match TLS_PORTS.get((port >> 6) as u32) {
        Some(word) => word & (1u64 << (port & 63)) != 0,
        None => false,
    }
}

/// Looks at the first payload bytes in place and answers for the common
/// non-hello segments (application data), without copying anything.
#[inline(always)]
fn quick_reject(ctx: &XdpContext, seg: &Segment) -> Option<Stat> {
    let p = packet::bytes_at::<6>(ctx, seg.payload_off)?;
    if seg.payload_len < 6 {
        return None;
    }
    // SAFETY: bytes_at checked the 6 bytes are inside the frame.
    let b = unsafe { *p };
    if b[0] & 0x80 != 0 {
        return None; // maybe SSLv2 format: the full parse decides.
    }
    if b[0] != 22 || b[1] != 3 {
        return Some(Stat::PassNotTls);
    }
    if b[5] != 1 {
        return Some(Stat::PassNotClientHello);
    }
    None
}

/// Parses the hello of the segment in `scratch` and applies the policy.
///
/// `Ok(None)`: allowed; `Ok(Some(stat))`: refuse, counted as `stat`; `Err(stat)`: pass.
#[inline(always)]
fn judge_hello(ctx: &XdpContext, scratch: &mut Scratch) -> Result<Option<Stat>, Stat> {
    // SAFETY: volatile load from a valid reference.
    let [_, payload_off, payload_len, _, _] = unsafe { core::ptr::read_volatile(&scratch.segment) };
    let copied = (payload_len as usize).min(PAYLOAD_CAP);
    if copied == 0 {
        return Err(Stat::PassControl);
    }
    // SAFETY: the buffer holds PAYLOAD_CAP + 8 bytes and copied <= PAYLOAD_CAP.
    let rc = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            payload_off,
            scratch.payload.as_mut_ptr().cast(),
            copied as u32,
        )
    };
    if rc < 0 {
        return Err(Stat::PassMalformed);
    }
    scratch.summary = HelloSummary::default();
    let mut slots = Slots(&mut scratch.slots);
    slots.set(slot::COPIED, copied);
    hello::parse(&scratch.payload, &mut slots)?;

    // Policy stage: everything comes from the slots, so it is verified once.
    let max_version = slots.get(slot::MAX_VERSION) as u16;
    let sni_state = slots.get(slot::SNI_STATE) as u8;
    count(hello_stat(max_version));
    let config = CONFIG.get(0).copied().unwrap_or_default();
    let mut sni_len = 0;
    let min = match sni_state {
        SNI_PRESENT => {
            sni_len = slots.get(slot::SNI_LEN) & 0xff;
            if sni_len == 0 {
                return Err(Stat::PassMalformed);
            }
            // The name again, straight from the packet into word-aligned memory.
            // SAFETY: volatile load; the copy is at most 255 of the buffer's 256 bytes.
            let rc = unsafe {
                let [_, payload_off, ..] = core::ptr::read_volatile(&scratch.segment);
                bpf_xdp_load_bytes(
                    ctx.ctx,
                    payload_off + slots.get(slot::SNI_OFF) as u32,
                    scratch.sni.as_mut_ptr().cast(),
                    sni_len as u32,
                )
            };
            if rc < 0 {
                return Err(Stat::PassMalformed);
            }
            let [key, check] = hello::fingerprint(&scratch.sni, &slots);
            // SAFETY: the value is copied out at once; userspace replaces entries whole.
            match unsafe { HOST_POLICY.get(&key) } {
                Some(host) if host.check == check => host.min_version,
                _ => config.zone_min,
            }
        }
        SNI_ABSENT => config.no_sni_min,
        _ => config.floor_min,
    };
    scratch.summary = HelloSummary {
        max_version,
        sni_state,
        sni_len: sni_len as u8,
    };
    if max_version < min {
        debug!(
            ctx,
            "refusing ClientHello: offers {:x}, minimum {:x}", max_version, min
        );
        return Ok(Some(drop_stat(max_version)));
    }
    if sni_state == SNI_UNKNOWN {
        // Offers at least the lowest minimum, but we cannot tell whose.
        return Err(Stat::PassUndecidable);
    }
    Ok(None)
}

/// Refuses the hello: the first time, rewrite it into a RST toward the local stack
/// (the socket is torn down without waking userspace); a retransmission of the same
/// segment passes unchanged, so the stack, which no longer knows the flow, answers
/// the client with a RST and it fails at once instead of retrying.
#[inline(always)]
fn refuse(ctx: &XdpContext, scratch: &Scratch, stat: Stat) -> (Stat, u32) {
    // SAFETY: volatile load from a valid reference.
    let [tcp_off, _, _, l3_off, ipv6] = unsafe { core::ptr::read_volatile(&scratch.segment) };
    let (tcp_off, l3_off) = (tcp_off as usize & 0xff, l3_off as usize & 0x3f);
    let Some(flow) = packet::flow_key(ctx, l3_off, ipv6 != 0, tcp_off) else {
        return (stat, xdp_action::XDP_DROP);
    };
    // SAFETY: only presence is tested; the value is not read.
    if unsafe { REFUSED_FLOWS.get(&flow) }.is_some() {
        return (Stat::DropRetransmit, xdp_action::XDP_PASS);
    }
    let _ = REFUSED_FLOWS.insert(&flow, &0, 0);
    if packet::rewrite_to_reset(ctx, tcp_off) {
        (stat, xdp_action::XDP_PASS)
    } else {
        (stat, xdp_action::XDP_DROP)
    }
}

#[inline(always)]
fn hello_stat(v: u16) -> Stat {
    match v {
        version::SSL2 => Stat::HelloSsl2,
        version::SSL3 => Stat::HelloSsl3,
        version::TLS1_0 => Stat::HelloTls10,
        version::TLS1_1 => Stat::HelloTls11,
        version::TLS1_2 => Stat::HelloTls12,
        v if v < version::TLS1_0 => Stat::HelloSsl3,
        _ => Stat::HelloTls13,
    }
}

#[inline(always)]
fn drop_stat(v: u16) -> Stat {
    match v {
        version::TLS1_0 => Stat::DropTls10,
        version::TLS1_1 => Stat::DropTls11,
        version::TLS1_2 => Stat::DropTls12,
        version::SSL2 => Stat::DropSsl2,
        _ => Stat::DropSsl3,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable: the verifier rejects the program if any panic path survives.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
