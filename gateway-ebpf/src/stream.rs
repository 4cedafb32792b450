//! Reassembly of ClientHellos that span several TCP segments or TLS records.
//!
//! A flow whose hello is not finished in its first segment (or record) takes a
//! slot of `HELLO_FLOWS`. Each later in-order segment appends its bytes to the
//! kept stream; the record layer is taken apart as bytes arrive (any number of
//! record headers, wherever they fall), and the handshake bytes are parsed again
//! from the start by the same parser as a single-segment hello. The verdict is
//! taken as soon as those bytes show it, and the slot is freed at once.
//!
//! Fail open, counted by reason: a segment beyond the next expected byte
//! (`PassOutOfOrder`), a retransmission whose bytes differ from the kept ones
//! (`PassOverlapMismatch`), a hello not decided within the buffers
//! (`PassTooLarge`), a slot taken by another flow (`PassEvicted`) or being
//! worked on by another CPU (`PassContended`). Identical retransmissions change
//! nothing. After giving up, the flow's anchor says so and its later segments
//! cost one load.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::{bpf_loop, bpf_probe_read_kernel, bpf_xdp_load_bytes},
    programs::XdpContext,
};
use gateway_common::{
    COPY_CHUNK, FlowKey, HelloBytes, HelloFlow, PAYLOAD_CAP, STREAM_CAP, Scratch, Stat,
    flow::{
        ANCHOR_FROM_SYN, FLOW_DECIDED, FLOW_GAVE_UP, FLOW_HELLO, FLOW_REFUSED, FlowAnchor,
        LAYOUT_ONE_RECORD, LAYOUT_RECORDS, LAYOUT_SSLV2, LAYOUT_UNKNOWN,
    },
};

use crate::{
    atomic,
    hello::{
        self, CONTENT_HANDSHAKE, HANDSHAKE_HDR_LEN, MAX_RECORD_LEN, RECORD_HDR_LEN, SSLV2_HDR_LEN,
        Slots, slot,
    },
    maps::{CONFIG, FLOW_ANCHORS, HELLO_FLOWS, SCRATCH},
    packet,
    policy::{self, Verdict},
    staged::{self, Staged},
};

const STREAM_MASK: usize = STREAM_CAP - 1;
const STREAM_WORDS: usize = (STREAM_CAP + COPY_CHUNK) / 8;
/// Chunks a segment's bytes are copied or compared in.
const MAX_CHUNKS: usize = STREAM_CAP / COPY_CHUNK;
/// Record-layer steps per segment (a header or a piece of a body each): enough
/// for a full stream of 1-byte records.
const MAX_RECORD_STEPS: u32 = (2 * STREAM_CAP / (RECORD_HDR_LEN + 1) + MAX_CHUNKS + 2) as u32;

/// What reassembly concluded for one segment.
pub(crate) enum Outcome {
    /// Pass the segment, counted as this.
    Pass(Stat),
    /// The hello is allowed; `split` when it took more than one segment or record.
    Allow { split: bool },
    /// The hello is refused, counted as `stat`; this segment completed the decision.
    Refuse { stat: Stat, split: bool },
}

/// Reassembles the staged segment's hello: starts it (`resume` false: the
/// segment begins the hello) or adds to the one in progress.
#[inline(always)]
pub(crate) fn reassemble(ctx: &XdpContext, scratch: &mut Scratch, resume: bool) -> Outcome {
    let seg = staged::read(scratch);
    let Some(mut key) = packet::flow_key(ctx, seg.l3_off(), seg.ipv6(), seg.tcp_off()) else {
        return Outcome::Pass(Stat::PassMalformed);
    };
    let Some(flow) = HELLO_FLOWS.get_ptr_mut(seg.flow_slot) else {
        return Outcome::Pass(Stat::PassContended);
    };
    // SAFETY: a valid map value pointer; only the lock word is touched before it is held.
    let lock = unsafe { &raw mut (*flow).lock };
    if !atomic::try_lock(lock) {
        return Outcome::Pass(Stat::PassContended);
    }
    // SAFETY: the slot's lock is held by this CPU.
    let flow = unsafe { &mut *flow };
    let out = if resume {
        if flow.active != 1 || flow.seed != seed() || !same_flow(&flow.owner, &key) {
            set_anchor(&seg, FLOW_GAVE_UP);
            Outcome::Pass(Stat::PassEvicted)
        } else {
            extend(ctx, scratch, flow, &seg)
        }
    } else {
        key.seq = seg.seq;
        flow.owner = key;
        flow.seed = seed();
        flow.active = 1;
        flow.stream_len = 0;
        flow.record_pos = 0;
        flow.record_end = 0;
        flow.hello_len = 0;
        flow.pieces = 0;
        flow.layout = LAYOUT_UNKNOWN;
        set_anchor(&seg, FLOW_HELLO);
        advance(ctx, scratch, flow, &seg, 0)
    };
    atomic::unlock(lock);
    out
}

/// Places the segment in the kept stream: new bytes are appended, bytes seen
/// before must be identical, a gap gives up.
#[inline(always)]
fn extend(ctx: &XdpContext, scratch: &mut Scratch, flow: &mut HelloFlow, seg: &Staged) -> Outcome {
    let off = seg.seq.wrapping_sub(flow.owner.seq) as usize;
    let kept = flow.stream_len as usize;
    let len = seg.payload_len as usize;
    if off > kept {
        return give_up(flow, seg, Stat::PassOutOfOrder);
    }
    if off < kept {
        let overlap = len.min(kept - off);
        if !same_bytes(
            ctx,
            scratch,
            seg.flow_slot,
            seg.payload_off as usize,
            off,
            overlap,
        ) {
            return give_up(flow, seg, Stat::PassOverlapMismatch);
        }
        if off + len <= kept {
            return Outcome::Pass(Stat::PassHelloPartial);
        }
    }
    advance(ctx, scratch, flow, seg, off)
}

/// Appends the segment's new bytes (it starts at stream offset `off`), takes
/// them out of their records, parses, and settles the flow.
#[inline(always)]
fn advance(
    ctx: &XdpContext,
    scratch: &mut Scratch,
    flow: &mut HelloFlow,
    seg: &Staged,
    off: usize,
) -> Outcome {
    let from = flow.stream_len as usize;
    let want = off + seg.payload_len as usize - from;
    let take = want.min(STREAM_CAP - from);
    let pkt_off = seg.payload_off as usize + (from - off);
    if !copy_in(
        ctx,
        &mut Slots(&mut scratch.slots),
        flow,
        pkt_off,
        from,
        take,
    ) {
        return give_up(flow, seg, Stat::PassMalformed);
    }
    let stream_len = from + take;
    flow.stream_len = stream_len as u32;
    flow.pieces += 1;
    if flow.layout == LAYOUT_UNKNOWN && !learn_layout(flow) {
        return give_up(flow, seg, Stat::PassMalformed);
    }
    let (buf, avail): (&HelloBytes, usize) = match flow.layout {
        LAYOUT_ONE_RECORD => {
            let record_len = (stream_byte(flow, 3) << 8) | stream_byte(flow, 4);
            let avail = (stream_len - RECORD_HDR_LEN)
                .min(record_len)
                .min(PAYLOAD_CAP);
            // SAFETY: 5 + size_of::<HelloBytes>() bytes fit in `stream`.
            let view = unsafe {
                &*flow
                    .stream
                    .as_ptr()
                    .cast::<u8>()
                    .add(RECORD_HDR_LEN)
                    .cast::<HelloBytes>()
            };
            (view, avail)
        }
        LAYOUT_RECORDS => {
            if !walk_records(seg.flow_slot) {
                return give_up(flow, seg, Stat::PassMalformed);
            }
            (&flow.hello, flow.hello_len as usize)
        }
        LAYOUT_SSLV2 => return sslv2(scratch, flow, seg),
        _ => return Outcome::Pass(Stat::PassHelloPartial), // fewer than 9 bytes yet
    };
    let mut slots = Slots(&mut scratch.slots);
    slots.set(slot::AVAIL, avail);
    let parsed = hello::parse(buf, &mut slots);
    let end = message_end(buf, avail);
    let hello_len = avail;
    let split = flow.pieces > 2;
    match policy::judge(buf.as_ptr(), scratch, parsed) {
        Verdict::Allow => {
            finish(flow, seg, FLOW_DECIDED);
            Outcome::Allow { split }
        }
        Verdict::Refuse(stat) => {
            finish(flow, seg, FLOW_REFUSED);
            Outcome::Refuse { stat, split }
        }
        Verdict::Pass(stat) => give_up(flow, seg, stat),
        Verdict::Wait => {
            if hello_len >= end {
                give_up(flow, seg, Stat::PassUndecidable)
            } else if hello_len >= PAYLOAD_CAP || take < want || from + take >= STREAM_CAP {
                give_up(flow, seg, Stat::PassTooLarge)
            } else {
                Outcome::Pass(Stat::PassHelloPartial)
            }
        }
    }
}

/// Where the ClientHello message ends in handshake bytes `h` of which `avail`
/// are in (unknown before its header: never).
#[inline(always)]
fn message_end(h: &HelloBytes, avail: usize) -> usize {
    if avail < HANDSHAKE_HDR_LEN {
        return usize::MAX;
    }
    HANDSHAKE_HDR_LEN + ((h[1] as usize) << 16 | (h[2] as usize) << 8 | h[3] as usize)
}

#[inline(always)]
fn stream_byte(flow: &HelloFlow, i: usize) -> usize {
    // SAFETY: a small constant offset into `stream`.
    unsafe { *flow.stream.as_ptr().cast::<u8>().add(i & 15) as usize }
}

/// Reads the first record header (at 5 stream bytes: malformed → `false`) and,
/// with the handshake header (9 bytes), whether one record holds the message.
#[inline(always)]
fn learn_layout(flow: &mut HelloFlow) -> bool {
    let len = flow.stream_len as usize;
    if len >= 1 && stream_byte(flow, 0) & 0x80 != 0 {
        // SSL 2.0 format: its header counts as a record header would.
        flow.layout = LAYOUT_SSLV2;
        flow.pieces += 1;
        return true;
    }
    if len < RECORD_HDR_LEN {
        return true;
    }
    let record_len = (stream_byte(flow, 3) << 8) | stream_byte(flow, 4);
    if stream_byte(flow, 0) != CONTENT_HANDSHAKE as usize
        || stream_byte(flow, 1) != 3
        || record_len == 0
        || record_len > MAX_RECORD_LEN
    {
        return false;
    }
    if len >= RECORD_HDR_LEN + HANDSHAKE_HDR_LEN {
        let message = HANDSHAKE_HDR_LEN
            + (stream_byte(flow, 6) << 16 | stream_byte(flow, 7) << 8 | stream_byte(flow, 8));
        if record_len >= message {
            flow.layout = LAYOUT_ONE_RECORD;
            flow.pieces += 1;
        } else {
            flow.layout = LAYOUT_RECORDS;
        }
    }
    true
}

/// An SSL 2.0-format hello whose first segment was shorter than its header:
/// decided once the 11 header bytes are in, as one in a single segment is.
#[inline(always)]
fn sslv2(scratch: &mut Scratch, flow: &mut HelloFlow, seg: &Staged) -> Outcome {
    if (flow.stream_len as usize) < SSLV2_HDR_LEN {
        return Outcome::Pass(Stat::PassHelloPartial);
    }
    // SAFETY: `stream` is larger than a `HelloBytes` and 8-byte aligned.
    let view = unsafe { &*flow.stream.as_ptr().cast::<HelloBytes>() };
    if hello::parse_sslv2(view, SSLV2_HDR_LEN).is_err() {
        return give_up(flow, seg, Stat::PassNotTls);
    }
    let split = flow.pieces > 2;
    match policy::judge_sslv2(scratch) {
        Verdict::Refuse(stat) => {
            finish(flow, seg, FLOW_REFUSED);
            Outcome::Refuse { stat, split }
        }
        _ => {
            finish(flow, seg, FLOW_DECIDED);
            Outcome::Allow { split }
        }
    }
}

/// Takes the new stream bytes out of their records into `hello` (false: malformed).
#[inline(always)]
fn walk_records(slot: u32) -> bool {
    let mut step = RecordStep { slot, result: 0 };
    // SAFETY: the callback is a BPF function taking (index, ctx); `step` lives
    // on this stack frame for the whole call.
    unsafe {
        bpf_loop(
            MAX_RECORD_STEPS,
            record_step as *mut c_void,
            (&raw mut step).cast(),
            0,
        );
    }
    step.result == 0
}

/// Copies `n` payload bytes at packet offset `pkt_off` into the stream at `at`.
///
/// The count of bytes done lives in memory (`slot::DONE`), so every iteration
/// looks the same to the verifier and it checks the loop body once.
#[inline(always)]
fn copy_in(
    ctx: &XdpContext,
    slots: &mut Slots,
    flow: &mut HelloFlow,
    pkt_off: usize,
    at: usize,
    n: usize,
) -> bool {
    let stream = flow.stream.as_mut_ptr().cast::<u8>();
    slots.set(slot::DONE, 0);
    for _ in 0..MAX_CHUNKS {
        let done = slots.get(slot::DONE);
        if done >= n {
            break;
        }
        let chunk = nonzero_chunk(n - done);
        // SAFETY: the destination offset is masked below STREAM_CAP and the
        // stream has COPY_CHUNK bytes of slack after it.
        let rc = unsafe {
            bpf_xdp_load_bytes(
                ctx.ctx,
                (pkt_off + done) as u32,
                stream.add((at + done) & STREAM_MASK).cast(),
                chunk as u32,
            )
        };
        if rc < 0 {
            return false;
        }
        slots.set(slot::DONE, done + chunk);
    }
    slots.get(slot::DONE) >= n
}

/// Whether the `n` payload bytes at packet offset `pkt_off` equal the kept
/// stream from offset `at`. Bytes are loaded aligned as the stream is, then
/// compared a word at a time.
#[inline(always)]
fn same_bytes(
    ctx: &XdpContext,
    scratch: &mut Scratch,
    slot: u32,
    pkt_off: usize,
    at: usize,
    n: usize,
) -> bool {
    Slots(&mut scratch.slots).set(slot::DONE, 0);
    for _ in 0..MAX_CHUNKS {
        let done = Slots(&mut scratch.slots).get(slot::DONE);
        if done >= n {
            break;
        }
        let chunk = nonzero_chunk(n - done);
        let p = at + done;
        let lead = p & 7;
        // SAFETY: `lead + chunk` ≤ 7 + COPY_CHUNK fits `compare`.
        let rc = unsafe {
            bpf_xdp_load_bytes(
                ctx.ctx,
                (pkt_off + done) as u32,
                scratch.compare.as_mut_ptr().cast::<u8>().add(lead).cast(),
                chunk as u32,
            )
        };
        if rc < 0 {
            return false;
        }
        let mut words = CompareWords {
            slot: slot,
            base: (p >> 3) as u32,
            lead: lead as u32,
            end: (lead + chunk) as u32,
            differ: 0,
        };
        // SAFETY: as for `record_step`.
        unsafe {
            bpf_loop(
                (COPY_CHUNK / 8 + 1) as u32,
                compare_word as *mut c_void,
                (&raw mut words).cast(),
                0,
            );
        }
        if words.differ != 0 {
            return false;
        }
        Slots(&mut scratch.slots).set(slot::DONE, done + chunk);
    }
    Slots(&mut scratch.slots).get(slot::DONE) >= n
}

/// `min(n, COPY_CHUNK)` for `n` ≥ 1, written so that the verifier sees 1..=COPY_CHUNK.
#[inline(always)]
fn nonzero_chunk(n: usize) -> usize {
    ((n.min(COPY_CHUNK) - 1) & (COPY_CHUNK - 1)) + 1
}

/// The low `n` bytes of a word (little-endian), `n` ≤ 8.
#[inline(always)]
fn keep(n: usize) -> u64 {
    if n >= 8 {
        u64::MAX
    } else {
        (1u64 << (n * 8)) - 1
    }
}

/// One chunk's word comparison (a `bpf_loop` context): the stream words from
/// `base`, the loaded bytes in `Scratch::compare` from `lead` to `end`.
#[repr(C)]
struct CompareWords {
    slot: u32,
    base: u32,
    lead: u32,
    end: u32,
    differ: u32,
}

/// Compares word `w` of a chunk (a `bpf_loop` callback). Returns 1 to stop.
extern "C" fn compare_word(w: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `CompareWords` on the caller's stack.
    let c = unsafe { &mut *ctx.cast::<CompareWords>() };
    let w = w as usize & 127;
    let start = w * 8;
    let (lead, end) = (c.lead as usize, c.end as usize);
    if start >= end {
        return 1;
    }
    let (Some(flow), Some(scratch)) = (HELLO_FLOWS.get_ptr(c.slot), SCRATCH.get_ptr(0)) else {
        c.differ = 1;
        return 1;
    };
    let i = c.base as usize + w;
    if i >= STREAM_WORDS || w >= COPY_CHUNK / 8 + 2 {
        c.differ = 1;
        return 1;
    }
    let lo = if w == 0 { lead } else { 0 };
    let hi = (end - start).min(8);
    let mask = keep(hi) & !keep(lo);
    // SAFETY: valid map values; indices checked above.
    let (kept, seen) = unsafe { ((*flow).stream[i], (*scratch).compare[w]) };
    if (kept ^ seen) & mask != 0 {
        c.differ = 1;
        return 1;
    }
    0
}

/// The record-layer walk's context: the slot, and 1 if the records are malformed.
#[repr(C)]
struct RecordStep {
    slot: u32,
    result: u32,
}

/// One step of the record-layer walk (a `bpf_loop` callback): reads a record
/// header, or moves one piece of a record's body into `hello`. Returns 1 to stop.
extern "C" fn record_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `ctx` is the `RecordStep` on the caller's stack.
    let step = unsafe { &mut *ctx.cast::<RecordStep>() };
    let Some(flow) = HELLO_FLOWS.get_ptr_mut(step.slot) else {
        return 1;
    };
    // SAFETY: the caller holds the slot's lock.
    let flow = unsafe { &mut *flow };
    let pos = flow.record_pos as usize;
    let len = flow.stream_len as usize;
    if pos >= len || flow.hello_len as usize >= message_end(&flow.hello, flow.hello_len as usize) {
        return 1;
    }
    let stream = flow.stream.as_ptr().cast::<u8>();
    if pos == flow.record_end as usize {
        if pos + RECORD_HDR_LEN > len {
            return 1; // the header continues in a later segment
        }
        // SAFETY: offsets masked below STREAM_CAP; the stream has slack after it.
        let byte = |i: usize| unsafe { *stream.add((pos + i) & STREAM_MASK) } as usize;
        let record_len = (byte(3) << 8) | byte(4);
        if byte(0) != CONTENT_HANDSHAKE as usize
            || byte(1) != 3
            || record_len == 0
            || record_len > MAX_RECORD_LEN
        {
            step.result = 1;
            return 1;
        }
        flow.record_pos = (pos + RECORD_HDR_LEN) as u32;
        flow.record_end = (pos + RECORD_HDR_LEN + record_len) as u32;
        flow.pieces += 1;
        return 0;
    }
    let hello_len = flow.hello_len as usize;
    let n = (flow.record_end as usize)
        .min(len)
        .saturating_sub(pos)
        .min(COPY_CHUNK)
        .min(PAYLOAD_CAP.saturating_sub(hello_len));
    if n == 0 {
        return 1; // the handshake buffer is full
    }
    // SAFETY: the destination offset is masked below PAYLOAD_CAP and `hello`
    // has COPY_CHUNK bytes of slack; the source lies inside the stream.
    let rc = unsafe {
        bpf_probe_read_kernel(
            flow.hello.as_mut_ptr().add(hello_len & hello::MASK).cast(),
            n as u32,
            stream.add(pos & STREAM_MASK).cast(),
        )
    };
    if rc < 0 {
        step.result = 1;
        return 1;
    }
    flow.hello_len = (hello_len + n) as u32;
    flow.record_pos = (pos + n) as u32;
    0
}

/// Stops reassembling (fail open): the anchor remembers, the slot is freed.
#[inline(always)]
fn give_up(flow: &mut HelloFlow, seg: &Staged, stat: Stat) -> Outcome {
    flow.active = 0;
    set_anchor(seg, FLOW_GAVE_UP);
    Outcome::Pass(stat)
}

/// The hello is decided: the slot is freed, the anchor keeps the verdict. A
/// flow whose SYN was not seen keeps no anchor once allowed (as before reassembly).
#[inline(always)]
fn finish(flow: &mut HelloFlow, seg: &Staged, state: u32) {
    flow.active = 0;
    if state == FLOW_DECIDED && seg.anchor_flags & ANCHOR_FROM_SYN == 0 {
        clear_anchor(seg);
    } else {
        set_anchor(seg, state);
    }
}

/// Writes the flow's anchor (taking the slot if another flow had it).
#[inline(always)]
pub(crate) fn set_anchor(seg: &Staged, state: u32) {
    if let Some(a) = FLOW_ANCHORS.get_ptr_mut(seg.anchor_slot) {
        // SAFETY: a valid map value; 16-byte stores, a racing writer only makes it stale.
        unsafe {
            *a = FlowAnchor {
                tag: seg.tag,
                start_seq: seg.start_seq,
                state,
                flags: seg.anchor_flags,
            }
        };
    }
}

/// Empties the flow's anchor slot if it still holds this flow.
#[inline(always)]
fn clear_anchor(seg: &Staged) {
    if let Some(a) = FLOW_ANCHORS.get_ptr_mut(seg.anchor_slot) {
        // SAFETY: a valid map value.
        unsafe {
            if (*a).tag == seg.tag {
                (*a).tag = 0;
            }
        }
    }
}

#[inline(always)]
fn seed() -> u32 {
    CONFIG.get(0).map_or(0, |c| c.flow_seed)
}

#[inline(always)]
fn same_flow(a: &FlowKey, b: &FlowKey) -> bool {
    a.saddr == b.saddr && a.daddr == b.daddr && a.sport == b.sport && a.dport == b.dport
}
