//! The gateway's XDP program: refuses TLS ClientHellos below the minimum version
//! configured for their SNI, before the kernel's TCP stack spends work on them,
//! wherever the client cut the hello (segments, records).
//!
//! It holds no policy: userspace fills `HOST_POLICY`, `CONFIG` and `TLS_PORTS`.
//! It drops only when certain; anything it cannot decide passes (fail open),
//! and the userspace terminator enforces the same policy completely.
//!
//! Per segment to a TLS port: the SYN anchors the flow's stream (see
//! `gateway_common::flow`); a segment of a hello in progress goes to
//! reassembly (`stream`); a payload that begins the stream with a ClientHello
//! header is parsed at once when the hello fits it, else reassembly starts;
//! other data costs one load of the flow's anchor; ACKs, FINs and RSTs none.
//! On a port with SYN cookies on, SYNs and bare ACKs go to the cookie
//! programs (`cookie`) by tail call, and so does a refused hello that no
//! connection owns (it may be a cookie handshake's first data).
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

mod atomic;
mod cookie;
mod events;
mod hello;
mod maps;
mod packet;
mod policy;
mod reply;
mod staged;
mod stream;
mod tc;

use aya_ebpf::{
    bindings::xdp_action, helpers::generated::bpf_xdp_load_bytes, macros::xdp, programs::XdpContext,
};
use aya_log_ebpf::debug;
use gateway_common::{
    FlowAnchor, PAYLOAD_CAP, REFUSE_DROP, REFUSE_RESET, Scratch, Stat,
    flow::{
        ANCHOR_FROM_SYN, FLOW_AWAIT, FLOW_DECIDED, FLOW_HELLO, FLOW_REFUSED, flow_hash, flow_tag,
    },
};
use hello::{
    CONTENT_HANDSHAKE, HANDSHAKE_CLIENT_HELLO, MAX_RECORD_LEN, RECORD_HDR_LEN, SSLV2_HDR_LEN,
    Slots, slot,
};
use maps::{CONFIG, FLOW_ANCHORS, REFUSED_FLOWS, SCRATCH, STATS, TLS_PORTS};
use packet::{Segment, TCP_ACK, TCP_RST, TCP_SYN};
use policy::Verdict;
use staged::Staged;
use stream::Outcome;

/// The ClientHello filter (inlined into the entry point the macro makes: no
/// BPF-to-BPF call per packet).
#[xdp(frags)]
#[inline(always)]
pub(crate) fn gateway_xdp(ctx: XdpContext) -> u32 {
    let (stat, action) = filter(&ctx);
    if action == cookie::TAIL_SYN || action == cookie::TAIL_ACK {
        // The cookie program counts the packet's outcome.
        cookie::hand_off(&ctx, action);
        // It is missing: fail open.
        count(Stat::PassControl);
        return xdp_action::XDP_PASS;
    }
    count(stat);
    if action == cookie::TAIL_RESET {
        cookie::hand_off(&ctx, action);
        return xdp_action::XDP_DROP;
    }
    action
}

/// A program that passes everything: the baseline the benchmark compares against.
#[xdp(frags)]
pub(crate) fn baseline_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[inline(always)]
fn count(stat: Stat) {
    if let Some(slot) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *slot += 1 };
    }
}

/// What the first payload bytes say, without copying anything.
enum Start {
    /// They may begin a TLS ClientHello (or an SSL 2 one).
    Hello,
    /// They cannot: pass, counted as this.
    Not(Stat),
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
    let control = seg.payload_len == 0 || seg.flags & (TCP_SYN | TCP_RST) != 0;
    let syn = seg.flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN;
    if control && !syn {
        // Pure ACKs, FINs, RSTs: no flow lookup; on a cookie port, a bare ACK
        // may complete a cookie handshake.
        let bare_ack = seg.payload_len == 0 && seg.flags & (TCP_SYN | TCP_RST) == 0;
        if bare_ack && cookie::checks(cookie::port_flags(seg.dport)) {
            return (Stat::PassControl, cookie::TAIL_ACK);
        }
        return (Stat::PassControl, pass);
    }
    if syn {
        cookie::count_syn(seg.dport);
    }
    let (Some(config), Some(bits)) = (CONFIG.get(0), packet::flow_bits(ctx, &seg)) else {
        return (Stat::PassUndecidable, pass);
    };
    let hash = flow_hash(bits.addrs, bits.ports, config.flow_seed);
    let anchor_slot = hash as u32 & config.anchor_mask;
    let Some(anchor) = FLOW_ANCHORS.get_ptr_mut(anchor_slot) else {
        return (Stat::PassUndecidable, pass);
    };
    // SAFETY: a valid map value; a racing writer makes it stale, never invalid.
    let anchor = unsafe { &mut *anchor };
    let tag = flow_tag(hash);
    if control {
        // A SYN: the stream's first byte is the one after it.
        *anchor = FlowAnchor {
            tag,
            start_seq: bits.seq.wrapping_add(1),
            state: FLOW_AWAIT,
            flags: ANCHOR_FROM_SYN,
        };
        // Answered with a cookie or not, the SYN starts a new stream on this
        // 4-tuple: an anchor left by an earlier connection on it (a client
        // port that came round) must not decide the new one's hello.
        if syn && cookie::answers(cookie::port_flags(seg.dport)) {
            return (Stat::PassControl, cookie::TAIL_SYN);
        }
        return (Stat::PassControl, pass);
    }
    let state = if anchor.tag == tag { anchor.state } else { 0 };
    if state == FLOW_REFUSED {
        return (Stat::DropRetransmit, pass);
    }
    let mut staged = Staged {
        tcp_off: seg.tcp_off as u32,
        payload_off: seg.payload_off as u32,
        payload_len: seg.payload_len as u32,
        l3_off: seg.l3_off as u32,
        ipv6: seg.ipv6 as u32,
        seq: bits.seq,
        anchor_slot,
        flow_slot: (hash >> 16) as u32 & config.hello_mask,
        tag,
        anchor_flags: 0,
        start_seq: bits.seq,
    };
    if state == FLOW_HELLO {
        staged.anchor_flags = anchor.flags;
        staged.start_seq = anchor.start_seq;
        return with_scratch(ctx, &staged, true);
    }
    if let Start::Not(stat) = classify(ctx, &seg) {
        if state == FLOW_AWAIT {
            // The stream began with something else, or its start is missing.
            if bits.seq == anchor.start_seq {
                anchor.state = FLOW_DECIDED;
            } else {
                anchor.state = gateway_common::flow::FLOW_GAVE_UP;
                return (Stat::PassOutOfOrder, pass);
            }
        }
        return (stat, pass);
    }
    if state != 0 {
        if state != FLOW_AWAIT || bits.seq != anchor.start_seq {
            return (Stat::PassMidStream, pass);
        }
        staged.anchor_flags = anchor.flags;
    }
    with_scratch(ctx, &staged, false)
}

/// Stages the segment in per-CPU scratch memory and runs the hello stages on
/// it (`resume`: its flow has a hello in progress), then turns their outcome
/// into a counter and an action.
#[inline(always)]
fn with_scratch(ctx: &XdpContext, staged: &Staged, resume: bool) -> (Stat, u32) {
    let pass = xdp_action::XDP_PASS;
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return (Stat::PassUndecidable, pass);
    };
    // SAFETY: the per-CPU scratch entry belongs to this CPU for the program's run.
    let scratch = unsafe { &mut *scratch };
    staged::write(scratch, staged);
    let outcome = match resume {
        false => begin_hello(ctx, scratch),
        true => None,
    };
    let outcome = match outcome {
        Some(outcome) => {
            // Decided from this segment alone: the anchor of a flow whose SYN
            // was seen keeps the verdict (refused, or nothing more to look at).
            if staged.anchor_flags & ANCHOR_FROM_SYN != 0 {
                let state = match outcome {
                    Outcome::Refuse { .. } => FLOW_REFUSED,
                    _ => FLOW_DECIDED,
                };
                stream::set_anchor(staged, state);
            }
            outcome
        }
        // One call site, so the verifier walks reassembly once.
        None => stream::reassemble(ctx, scratch, resume),
    };
    match outcome {
        Outcome::Pass(stat) => {
            if stat == Stat::PassUndecidable && scratch.summary.max_version != 0 {
                count(policy::hello_stat(scratch.summary.max_version));
            }
            (stat, pass)
        }
        Outcome::Allow { split } => {
            count(policy::hello_stat(scratch.summary.max_version));
            if split {
                count(Stat::SplitAllowed);
            }
            (Stat::PassAllowed, pass)
        }
        Outcome::Refuse { stat, split } => {
            count(policy::hello_stat(scratch.summary.max_version));
            if split {
                count(Stat::SplitRefused);
            }
            debug!(
                ctx,
                "refusing ClientHello: offers {:x}", scratch.summary.max_version
            );
            let mode = CONFIG.get(0).map_or(REFUSE_RESET, |c| c.refuse_mode);
            let (stat, action) = if mode == REFUSE_DROP {
                (stat, xdp_action::XDP_DROP)
            } else {
                refuse(ctx, scratch, stat)
            };
            if stat != Stat::DropRetransmit {
                events::report(ctx, scratch, stat, split, action);
            }
            (stat, action)
        }
    }
}

#[inline(always)]
fn is_tls_port(port: u16) -> bool {
    match TLS_PORTS.get((port >> 6) as u32) {
        Some(word) => word & (1u64 << (port & 63)) != 0,
        None => false,
    }
}

/// Looks at the first payload bytes in place: could they begin a ClientHello?
/// A payload shorter than a header is judged on the bytes it has.
#[inline(always)]
fn classify(ctx: &XdpContext, seg: &Segment) -> Start {
    let b = match packet::bytes_at::<6>(ctx, seg.payload_off) {
        // SAFETY: bytes_at checked the 6 bytes are inside the frame.
        Some(p) if seg.payload_len >= 6 => unsafe { *p },
        _ => match short_start(ctx, seg) {
            Some(b) => b,
            None => return Start::Not(Stat::PassNotTls),
        },
    };
    if b[0] & 0x80 != 0 {
        // Maybe an SSL 2 hello (message type 1, version 0.x or 3.x): the full
        // parse decides. Other bytes with the high bit set are not a hello.
        if b[2] == HANDSHAKE_CLIENT_HELLO && (b[3] == 0 || b[3] == 3) {
            return Start::Hello;
        }
        return Start::Not(Stat::PassNotTls);
    }
    if b[0] != CONTENT_HANDSHAKE || b[1] != 3 {
        return Start::Not(Stat::PassNotTls);
    }
    if b[5] != HANDSHAKE_CLIENT_HELLO {
        return Start::Not(Stat::PassNotClientHello);
    }
    Start::Hello
}

/// The first bytes of a payload shorter than 6 bytes (none: empty or
/// unreadable), the missing ones filled with values that cannot disagree:
/// the TLS record's version major (3), an SSL 2 hello's message type (1) and
/// version major (3), the handshake type (1).
#[inline(always)]
fn short_start(ctx: &XdpContext, seg: &Segment) -> Option<[u8; 6]> {
    if seg.payload_len == 0 {
        return None;
    }
    let n = packet::opaque(seg.payload_len.min(5));
    let mut b = [0u8; 8];
    // SAFETY: 1 to 8 bytes (5 at most in fact) into an 8-byte stack buffer.
    let rc = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            seg.payload_off as u32,
            b.as_mut_ptr().cast(),
            (((n - 1) & 7) + 1) as u32,
        )
    };
    if rc < 0 {
        return None;
    }
    if n < 2 {
        b[1] = 3;
    }
    if n < 3 {
        b[2] = HANDSHAKE_CLIENT_HELLO;
    }
    if n < 4 {
        b[3] = 3;
    }
    b[5] = HANDSHAKE_CLIENT_HELLO;
    Some([b[0], b[1], b[2], b[3], b[4], b[5]])
}

/// The stage for a payload that begins a hello: decided at once when the whole
/// message is in this segment and record (the common case); `None` when it
/// must be reassembled.
#[inline(always)]
fn begin_hello(ctx: &XdpContext, scratch: &mut Scratch) -> Option<Outcome> {
    let seg = staged::read(scratch);
    let payload_off = seg.payload_off();
    let payload_len = seg.payload_len as usize;
    let Some(head) = packet::bytes_at::<9>(ctx, payload_off).filter(|_| payload_len >= 9) else {
        return None; // shorter than its headers: only reassembly can tell
    };
    // SAFETY: bytes_at checked the 9 bytes are inside the frame.
    let head = unsafe { *head };
    if head[0] & 0x80 != 0 {
        if payload_len < SSLV2_HDR_LEN {
            return None; // the SSL 2 header continues in a later segment
        }
        return Some(sslv2(ctx, scratch, &seg));
    }
    let record_len = u16::from_be_bytes([head[3], head[4]]) as usize;
    if record_len == 0 || record_len > MAX_RECORD_LEN {
        return Some(Outcome::Pass(Stat::PassMalformed));
    }
    let message = 4 + ((head[6] as usize) << 16 | (head[7] as usize) << 8 | head[8] as usize);
    let whole =
        message <= record_len && RECORD_HDR_LEN + message <= payload_len && message <= PAYLOAD_CAP;
    if !whole {
        return None;
    }
    // SAFETY: `message` ≤ PAYLOAD_CAP bytes into a buffer of PAYLOAD_CAP + slack.
    let rc = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            (payload_off + RECORD_HDR_LEN) as u32,
            scratch.payload.as_mut_ptr().cast(),
            (((message - 1) & (PAYLOAD_CAP - 1)) + 1) as u32,
        )
    };
    if rc < 0 {
        return Some(Outcome::Pass(Stat::PassMalformed));
    }
    let mut slots = Slots(&mut scratch.slots);
    slots.set(slot::AVAIL, message);
    let parsed = hello::parse(&scratch.payload, &mut slots);
    let verdict = policy::judge(scratch.payload.as_ptr(), scratch, parsed);
    Some(settle_whole(verdict))
}

/// The outcome of a hello decided from one segment.
#[inline(always)]
fn settle_whole(verdict: Verdict) -> Outcome {
    match verdict {
        Verdict::Allow => Outcome::Allow { split: false },
        Verdict::Refuse(stat) => Outcome::Refuse { stat, split: false },
        // The whole message was here: undecidable now means never.
        Verdict::Wait => Outcome::Pass(Stat::PassUndecidable),
        Verdict::Pass(stat) => Outcome::Pass(stat),
    }
}

/// An SSL 2.0-format hello (no record layer) whose header is in this segment:
/// decided from it alone (a shorter start is reassembled, see `stream`).
#[inline(always)]
fn sslv2(ctx: &XdpContext, scratch: &mut Scratch, seg: &Staged) -> Outcome {
    let copied = (seg.payload_len as usize).min(16);
    // SAFETY: at most 16 bytes into the payload buffer.
    let rc = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            seg.payload_off,
            scratch.payload.as_mut_ptr().cast(),
            copied as u32,
        )
    };
    if rc < 0 || hello::parse_sslv2(&scratch.payload, copied).is_err() {
        return Outcome::Pass(Stat::PassNotTls);
    }
    settle_whole(policy::judge_sslv2(scratch))
}

/// Refuses the hello: the first time, rewrite the segment that completed the
/// decision into a RST toward the local stack (the socket is torn down without
/// waking userspace); a retransmission of it passes unchanged, so the stack,
/// which no longer knows the flow, answers the client with a RST and it fails
/// at once instead of retrying. A hello on a flow the stack holds no
/// connection for (a spoofed segment: only the listener matches) is dropped,
/// since there is nothing to reset and a RST would only cost the stack work,
/// unless it is a cookie handshake's first data (`cookie::TAIL_RESET`).
#[inline(always)]
fn refuse(ctx: &XdpContext, scratch: &Scratch, stat: Stat) -> (Stat, u32) {
    let seg = staged::read(scratch);
    let (tcp_off, l3_off) = (seg.tcp_off(), seg.l3_off());
    let Some(flow) = packet::flow_key(ctx, l3_off, seg.ipv6(), tcp_off) else {
        return (stat, xdp_action::XDP_DROP);
    };
    // SAFETY: only presence is tested; the value is not read.
    if unsafe { REFUSED_FLOWS.get(&flow) }.is_some() {
        return (Stat::DropRetransmit, xdp_action::XDP_PASS);
    }
    if !packet::has_connection(ctx, &flow, seg.ipv6()) {
        if cookie::checks(cookie::port_flags(u16::from_be(flow.dport))) {
            // Maybe a cookie handshake's first data: the reset program
            // answers the client if its cookie is valid, else drops it.
            return (stat, cookie::TAIL_RESET);
        }
        return (stat, xdp_action::XDP_DROP);
    }
    let _ = REFUSED_FLOWS.insert(&flow, &0, 0);
    if packet::rewrite_to_reset(ctx, tcp_off) {
        (stat, xdp_action::XDP_PASS)
    } else {
        (stat, xdp_action::XDP_DROP)
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
