//! ClientHello parsing over handshake bytes (record headers already removed):
//! the per-CPU scratch copy of a hello that fits one segment and one record, or
//! the bytes reassembled in a `HelloFlow`. Offset 0 is the handshake header.
//!
//! Reads index the buffer with offsets masked to its size, which is all the
//! verifier needs; the logical bound (`visible`) is checked separately before
//! every read, so a masked index never reads anything that was not copied.
//! A read past the bytes available so far is `PassUndecidable`: with more of
//! the stream to come, that means "not yet".
//!
//! The parser runs in stages that hand their results to each other through
//! [`Slots`] (memory, accessed volatile) rather than through registers. Each
//! stage therefore starts from values the verifier knows nothing about and is
//! verified once, instead of once per combination of value ranges that the
//! paths through earlier stages produce.

use gateway_common::{
    HelloBytes, MAX_SNI_LEN, PAYLOAD_CAP, SCRATCH_SLOTS, SNI_ABSENT, SNI_PRESENT, SNI_UNKNOWN,
    Stat,
    sni::{self, SNI_WORDS},
    version,
};

/// Mask that keeps an offset inside the payload buffer.
pub(crate) const MASK: usize = PAYLOAD_CAP - 1;
const _: () = assert!(PAYLOAD_CAP.is_power_of_two());

/// The bytes parsed.
pub(crate) type Payload = HelloBytes;

/// TLS record content type of handshake records.
pub(crate) const CONTENT_HANDSHAKE: u8 = 22;
/// Handshake message type of a ClientHello.
pub(crate) const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// Bytes of a TLS record header.
pub(crate) const RECORD_HDR_LEN: usize = 5;
/// Bytes of an SSL 2.0 ClientHello's header: the 2-byte record length (high
/// bit set), message type 1, version, and three 2-byte lengths.
pub(crate) const SSLV2_HDR_LEN: usize = 11;
/// Bytes of a handshake message header.
pub(crate) const HANDSHAKE_HDR_LEN: usize = 4;
/// Largest record a peer may send (2^14 plus expansion allowance).
pub(crate) const MAX_RECORD_LEN: usize = 16384 + 2048;
const EXT_SERVER_NAME: u16 = 0;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
/// Extensions walked before giving up (browsers send about 20, GREASE included).
const MAX_EXTENSIONS: usize = 64;
/// Versions read from `supported_versions` before giving up (a list holds at most 127).
const MAX_VERSIONS: usize = 127;

/// Slot numbers in [`Slots`].
pub(crate) mod slot {
    /// Handshake bytes available so far (input).
    pub(crate) const AVAIL: usize = 0;
    /// Bytes of the hello that may be read: available, within the message and the buffer.
    pub(crate) const VISIBLE: usize = 1;
    /// End of the ClientHello message.
    pub(crate) const HELLO_END: usize = 2;
    /// `legacy_version` capped at TLS 1.2.
    pub(crate) const LEGACY_MAX: usize = 3;
    /// Walk cursor: offset of the next extension.
    pub(crate) const OFF: usize = 4;
    /// End of the extensions block.
    pub(crate) const EXT_END: usize = 5;
    /// Walk flags (`F_*`).
    pub(crate) const FLAGS: usize = 6;
    /// Body of `supported_versions`.
    pub(crate) const SV_BODY: usize = 7;
    /// End of `supported_versions`.
    pub(crate) const SV_END: usize = 8;
    /// Result: offset of the host name.
    pub(crate) const SNI_OFF: usize = 9;
    /// Result: length of the host name.
    pub(crate) const SNI_LEN: usize = 10;
    /// Result: one of `SNI_UNKNOWN`, `SNI_ABSENT`, `SNI_PRESENT`.
    pub(crate) const SNI_STATE: usize = 11;
    /// Result: highest version offered.
    pub(crate) const MAX_VERSION: usize = 12;
    /// Body of `server_name`.
    pub(crate) const SN_BODY: usize = 13;
    /// End of `server_name`.
    pub(crate) const SN_END: usize = 14;
    /// Reassembly: bytes copied or compared so far in a segment's loop.
    pub(crate) const DONE: usize = 15;
}

/// Mask of the extension walk's cursor: above any offset it takes
/// (`PAYLOAD_CAP` at most), so masking changes nothing but the verifier's view.
const OFF_MASK: usize = 2 * PAYLOAD_CAP - 1;

/// Walk flags: `server_name` seen, `supported_versions` seen, whole block walked.
const F_SNI: usize = 1;
const F_VERSIONS: usize = 2;
const F_COMPLETE: usize = 4;

/// The parser's working values, in memory.
pub(crate) struct Slots<'a>(pub &'a mut [u32; SCRATCH_SLOTS]);

impl Slots<'_> {
    /// Reads a slot; the verifier sees an unknown value.
    #[inline(always)]
    pub(crate) fn get(&self, i: usize) -> usize {
        // SAFETY: a valid reference; volatile so the value really comes from memory.
        unsafe { core::ptr::read_volatile(&self.0[i]) as usize }
    }

    /// Writes a slot.
    #[inline(always)]
    pub(crate) fn set(&mut self, i: usize, v: usize) {
        // SAFETY: a valid, exclusive reference.
        unsafe { core::ptr::write_volatile(&mut self.0[i], v as u32) }
    }
}

#[inline(always)]
fn u8_at(buf: &Payload, off: usize) -> usize {
    buf[off & MASK] as usize
}

#[inline(always)]
fn u16_at(buf: &Payload, off: usize) -> usize {
    let i = off & MASK;
    ((buf[i] as usize) << 8) | buf[i + 1] as usize
}

/// The 4 bytes at `off` as a big-endian number, in one load: the BPF target
/// would split a 4-byte read it cannot prove aligned into four byte loads,
/// while the kernel lets a program read map values unaligned (strict
/// alignment is only enforced where the CPU needs it, not on x86 or arm64).
#[inline(always)]
fn u32_at(buf: &Payload, off: usize) -> usize {
    let p = buf.as_ptr().wrapping_add(off & MASK);
    let w: u64;
    // SAFETY: a 4-byte load at a masked offset below PAYLOAD_CAP, inside the
    // buffer (it has COPY_CHUNK bytes after PAYLOAD_CAP); nothing is written.
    unsafe {
        core::arch::asm!(
            "{w} = *(u32 *)({p} + 0)",
            p = in(reg) p,
            w = lateout(reg) w,
            options(readonly, nostack, preserves_flags),
        );
    }
    (w as u32).swap_bytes() as usize
}

/// Checks that `n` bytes at `off` are visible.
#[inline(always)]
fn need(off: usize, n: usize, visible: usize) -> Result<(), Stat> {
    if off + n > visible {
        Err(Stat::PassUndecidable)
    } else {
        Ok(())
    }
}

/// Parses the ClientHello whose handshake header is at offset 0 (`slot::AVAIL`
/// bytes available) and leaves `slot::MAX_VERSION`, `slot::SNI_STATE` and, when
/// present, `slot::SNI_OFF`/`slot::SNI_LEN` in `s`.
///
/// `Err` carries the pass reason when nothing can be decided (yet).
#[inline(always)]
pub(crate) fn parse(buf: &Payload, s: &mut Slots) -> Result<(), Stat> {
    handshake_header(buf, s)?;
    if !fixed_fields(buf, s)? {
        return Ok(());
    }
    walk_extensions(buf, s)?;
    decide(buf, s)
}

/// Stage 1: the handshake header. Sets `VISIBLE` and `HELLO_END`.
#[inline(always)]
fn handshake_header(buf: &Payload, s: &mut Slots) -> Result<(), Stat> {
    let avail = s.get(slot::AVAIL);
    need(0, HANDSHAKE_HDR_LEN, avail)?;
    if buf[0] != HANDSHAKE_CLIENT_HELLO {
        return Err(Stat::PassNotClientHello);
    }
    let hello_end = HANDSHAKE_HDR_LEN + ((u8_at(buf, 1) << 16) | u16_at(buf, 2));
    s.set(slot::VISIBLE, avail.min(hello_end).min(PAYLOAD_CAP));
    s.set(slot::HELLO_END, hello_end);
    Ok(())
}

/// Stage 2: `legacy_version` to the extensions length. Sets `LEGACY_MAX`,
/// `OFF` and `EXT_END`; `Ok(false)` when the hello has no extensions (final).
#[inline(always)]
fn fixed_fields(buf: &Payload, s: &mut Slots) -> Result<bool, Stat> {
    let visible = s.get(slot::VISIBLE);
    let hello_end = s.get(slot::HELLO_END);
    let mut off = HANDSHAKE_HDR_LEN;
    need(off, 2 + 32 + 1, visible)?;
    let legacy = u16_at(buf, off);
    if legacy >> 8 != 3 {
        return Err(Stat::PassMalformed);
    }
    off += 2 + 32;
    let session_id_len = u8_at(buf, off);
    if session_id_len > 32 {
        return Err(Stat::PassMalformed);
    }
    off += 1 + session_id_len;
    need(off, 2, visible)?;
    let ciphers_len = u16_at(buf, off);
    if ciphers_len < 2 || ciphers_len % 2 != 0 {
        return Err(Stat::PassMalformed);
    }
    off += 2 + ciphers_len;
    need(off, 1, visible)?;
    let compression_len = u8_at(buf, off);
    if compression_len < 1 {
        return Err(Stat::PassMalformed);
    }
    off += 1 + compression_len;
    if off > hello_end {
        return Err(Stat::PassMalformed);
    }
    let legacy_max = legacy.min(version::TLS1_2 as usize);
    if off == hello_end {
        // No extensions at all: the legacy version is all there is.
        s.set(slot::MAX_VERSION, legacy_max);
        s.set(slot::SNI_STATE, SNI_ABSENT as usize);
        return Ok(false);
    }
    need(off, 2, visible)?;
    let ext_end = off + 2 + u16_at(buf, off);
    if ext_end != hello_end {
        return Err(Stat::PassMalformed);
    }
    s.set(slot::LEGACY_MAX, legacy_max);
    s.set(slot::OFF, off + 2);
    s.set(slot::EXT_END, ext_end);
    Ok(true)
}

/// Stage 3: walks the extensions as far as they are visible, recording where
/// `server_name` and `supported_versions` are and whether the walk completed.
///
/// The cursor stays in a register (a load from memory on every step would put
/// a store-to-load round trip on the loop's critical path) and is masked to
/// [`OFF_MASK`] at the end of each step, a no-op on its value (it never
/// exceeds `PAYLOAD_CAP`), so that every step starts from the same range and
/// the verifier prunes the walk as it did with the cursor in memory.
#[inline(always)]
fn walk_extensions(buf: &Payload, s: &mut Slots) -> Result<(), Stat> {
    s.set(slot::FLAGS, 0);
    let ext_end = s.get(slot::EXT_END);
    let visible = s.get(slot::VISIBLE);
    let mut off = s.get(slot::OFF) & OFF_MASK;
    for _ in 0..MAX_EXTENSIONS {
        if off == ext_end {
            s.set(slot::FLAGS, s.get(slot::FLAGS) | F_COMPLETE);
            break;
        }
        if off + 4 > visible {
            break;
        }
        let header = u32_at(buf, off); // type, then length
        let ext_type = (header >> 16) as u16;
        let body = off + 4;
        let next = body + (header & 0xffff);
        if next > ext_end {
            return Err(Stat::PassMalformed);
        }
        if next > visible {
            break;
        }
        if ext_type == EXT_SERVER_NAME || ext_type == EXT_SUPPORTED_VERSIONS {
            note_extension(s, ext_type, body, next)?;
        }
        off = next & OFF_MASK;
    }
    s.set(slot::OFF, off);
    Ok(())
}

/// Records where `server_name` or `supported_versions` is (a second one is malformed).
#[inline(always)]
fn note_extension(s: &mut Slots, ext_type: u16, body: usize, next: usize) -> Result<(), Stat> {
    let flags = s.get(slot::FLAGS);
    let (flag, body_slot, end_slot) = if ext_type == EXT_SERVER_NAME {
        (F_SNI, slot::SN_BODY, slot::SN_END)
    } else {
        (F_VERSIONS, slot::SV_BODY, slot::SV_END)
    };
    if flags & flag != 0 {
        return Err(Stat::PassMalformed);
    }
    s.set(body_slot, body);
    s.set(end_slot, next);
    s.set(slot::FLAGS, flags | flag);
    Ok(())
}

/// Stage 4: turns the walk into the result slots.
#[inline(always)]
fn decide(buf: &Payload, s: &mut Slots) -> Result<(), Stat> {
    let flags = s.get(slot::FLAGS);
    let complete = flags & F_COMPLETE != 0;
    if flags & F_SNI != 0 {
        let (off, len) = parse_server_name(buf, s.get(slot::SN_BODY), s.get(slot::SN_END))?;
        s.set(slot::SNI_OFF, off);
        s.set(slot::SNI_LEN, len);
        s.set(slot::SNI_STATE, SNI_PRESENT as usize);
    } else if complete {
        s.set(slot::SNI_STATE, SNI_ABSENT as usize);
    } else {
        s.set(slot::SNI_STATE, SNI_UNKNOWN as usize);
    }
    let flags = s.get(slot::FLAGS);
    if flags & F_VERSIONS != 0 {
        let max = highest_supported_version(buf, s)?;
        s.set(slot::MAX_VERSION, max as usize);
    } else if flags & F_COMPLETE != 0 {
        s.set(slot::MAX_VERSION, s.get(slot::LEGACY_MAX));
    } else {
        return Err(Stat::PassUndecidable);
    }
    Ok(())
}

/// Reads the single `host_name` entry of a `server_name` extension body.
#[inline(always)]
fn parse_server_name(buf: &Payload, body: usize, end: usize) -> Result<(usize, usize), Stat> {
    // server_name_list length (2), name_type (1), host_name length (2), host_name.
    if body + 5 > end || u16_at(buf, body) + body + 2 != end || u8_at(buf, body + 2) != 0 {
        return Err(Stat::PassMalformed);
    }
    let len = u16_at(buf, body + 3);
    if len == 0 || len > MAX_SNI_LEN || body + 5 + len != end {
        return Err(Stat::PassMalformed);
    }
    Ok((body + 5, len))
}

/// Highest non-GREASE version in a `supported_versions` extension body.
#[inline(always)]
fn highest_supported_version(buf: &Payload, s: &mut Slots) -> Result<u16, Stat> {
    let (body, end) = (s.get(slot::SV_BODY), s.get(slot::SV_END));
    if body + 1 > end {
        return Err(Stat::PassMalformed);
    }
    let list_len = u8_at(buf, body);
    if list_len == 0 || list_len % 2 != 0 || body + 1 + list_len != end {
        return Err(Stat::PassMalformed);
    }
    s.set(slot::SV_END, list_len / 2);
    // Each version seen is marked with bit 16, so that 0 means "none" and the
    // version 0x0000 still counts (found by fuzzing). The running maximum lives
    // in its slot, not in a register: the verifier then sees one unknown value
    // on every iteration instead of a range per path, and prunes.
    s.set(slot::MAX_VERSION, 0);
    for i in 0..MAX_VERSIONS {
        // The count comes from memory each time, for the reason given at `copy_sni`.
        if i >= s.get(slot::SV_END) {
            break;
        }
        let v = u16_at(buf, body + 1 + i * 2);
        if !version::is_grease(v as u16) && (v | SEEN) > s.get(slot::MAX_VERSION) {
            s.set(slot::MAX_VERSION, v | SEEN);
        }
    }
    let max = s.get(slot::MAX_VERSION);
    if max & SEEN == 0 {
        // Only GREASE: no version the server could pick. (0x0000 is a version
        // like any other here: below every minimum, so it is refused.)
        return Err(Stat::PassMalformed);
    }
    Ok((max & 0xffff) as u16)
}

/// The mark of a version seen in `highest_supported_version`.
const SEEN: usize = 1 << 16;

/// Recognises an SSL 2.0 (or SSLv2-compatible) ClientHello at the start of
/// `copied` raw payload bytes (it has no TLS record layer).
///
/// Only a header whose every length agrees is taken as one; anything else is not TLS.
#[inline(always)]
pub(crate) fn parse_sslv2(buf: &Payload, copied: usize) -> Result<(), Stat> {
    const HDR: usize = SSLV2_HDR_LEN;
    if copied < HDR {
        return Err(Stat::PassNotTls);
    }
    let record_len = u16_at(buf, 0) & 0x7fff;
    let major = buf[3];
    let cipher_specs = u16_at(buf, 5);
    let session_id = u16_at(buf, 7);
    let challenge = u16_at(buf, 9);
    let plausible = buf[2] == HANDSHAKE_CLIENT_HELLO
        && (major == 0 || major == 3)
        && cipher_specs != 0
        && cipher_specs % 3 == 0
        && (session_id == 0 || session_id == 16)
        && (16..=32).contains(&challenge)
        && record_len == HDR - 2 + cipher_specs + session_id + challenge;
    if plausible {
        Ok(())
    } else {
        Err(Stat::PassNotTls)
    }
}

/// The SNI's fingerprint (see `gateway_common::sni`) over the name at `from`
/// in the bytes at `buf` (a parse buffer: [`Payload`]-sized or more),
/// `slot::SNI_LEN` bytes long (1 to 255), copying its words into `words` on
/// the way (for the replay tool's summary). The name lies within the
/// `PAYLOAD_CAP` bytes parsed, so the masked offsets are its own.
///
/// The length is read from the slots in every iteration: a bound kept in a
/// register would be narrowed by each comparison, and the verifier would then
/// walk one copy of the loop per possible length.
#[inline(always)]
pub(crate) fn fingerprint(
    buf: *const u8,
    from: usize,
    words: &mut [u64; SNI_WORDS],
    s: &Slots,
) -> [u64; 2] {
    let mut h = sni::START;
    for (i, slot_word) in words.iter_mut().enumerate() {
        let done = i * 8;
        let len = s.get(slot::SNI_LEN);
        if done >= len {
            break;
        }
        let word = u64_at(buf.wrapping_add((from + done) & MASK));
        *slot_word = word;
        h = sni::absorb(h, sni::lower_ascii(word) & sni::keep_bytes(len - done));
    }
    sni::finish(h, s.get(slot::SNI_LEN))
}

/// The 8 bytes at `p` as they are in memory (little-endian), in one load.
#[inline(always)]
fn u64_at(p: *const u8) -> u64 {
    let w: u64;
    // SAFETY: callers pass a pointer into a parse buffer at a masked offset
    // below PAYLOAD_CAP, with at least 8 bytes after it; nothing is written.
    unsafe {
        core::arch::asm!(
            "{w} = *(u64 *)({p} + 0)",
            p = in(reg) p,
            w = lateout(reg) w,
            options(readonly, nostack, preserves_flags),
        );
    }
    w
}
