//! ClientHello parsing over the payload copied into per-CPU scratch memory.
//!
//! Reads index the buffer with offsets masked to its size, which is all the
//! verifier needs; the logical bound (`visible`) is checked separately before
//! every read, so a masked index never reads anything that was not copied.

use gateway_common::{MAX_SNI_LEN, PAYLOAD_CAP, Stat, version};

/// Mask that keeps an offset inside the payload buffer.
const MASK: usize = PAYLOAD_CAP - 1;
const _: () = assert!(PAYLOAD_CAP.is_power_of_two());

const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const RECORD_HDR_LEN: usize = 5;
const HANDSHAKE_HDR_LEN: usize = 4;
/// Largest record a peer may send (2^14 plus expansion allowance).
const MAX_RECORD_LEN: usize = 16384 + 2048;
const EXT_SERVER_NAME: u16 = 0;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
/// Extensions walked before giving up (browsers send about 20, GREASE included).
const MAX_EXTENSIONS: usize = 64;
/// Versions read from `supported_versions` before giving up (a list holds at most 127).
const MAX_VERSIONS: usize = 127;

/// Where the SNI stands after the walk.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Sni {
    /// Not in the visible part of the hello: the policy is unknown.
    Unknown,
    /// The whole extension block was seen and has no `server_name`.
    Absent,
    /// The host name is `len` bytes at `off` in the buffer.
    Present { off: usize, len: usize },
}

/// What a ClientHello offers, as far as this segment shows it.
pub struct Hello {
    /// Highest version offered (wire value).
    pub max_version: u16,
    /// The SNI, if visible.
    pub sni: Sni,
}

#[inline(always)]
fn u8_at(buf: &[u8; PAYLOAD_CAP + 8], off: usize) -> usize {
    buf[off & MASK] as usize
}

#[inline(always)]
fn u16_at(buf: &[u8; PAYLOAD_CAP + 8], off: usize) -> usize {
    let i = off & MASK;
    ((buf[i] as usize) << 8) | buf[i + 1] as usize
}

/// Parses the ClientHello at the start of `buf[..copied]`.
///
/// `Err` carries the pass reason when nothing can be decided.
#[inline(always)]
pub fn parse(
    buf: &[u8; PAYLOAD_CAP + 8],
    copied: usize,
    walk: &mut [u16; 6],
) -> Result<Hello, Stat> {
    if copied == 0 {
        return Err(Stat::PassNotTls);
    }
    if buf[0] & 0x80 != 0 {
        return parse_sslv2(buf, copied);
    }
    if copied < RECORD_HDR_LEN + HANDSHAKE_HDR_LEN {
        // Too short to tell: a handshake record start that continues later, or noise.
        return Err(if buf[0] == CONTENT_HANDSHAKE {
            Stat::PassUndecidable
        } else {
            Stat::PassNotTls
        });
    }
    if buf[0] != CONTENT_HANDSHAKE || buf[1] != 3 {
        return Err(Stat::PassNotTls);
    }
    if buf[5] != HANDSHAKE_CLIENT_HELLO {
        return Err(Stat::PassNotClientHello);
    }
    let record_len = u16_at(buf, 3);
    if record_len < HANDSHAKE_HDR_LEN || record_len > MAX_RECORD_LEN {
        return Err(Stat::PassMalformed);
    }
    let hello_len = (u8_at(buf, 6) << 16) | u16_at(buf, 7);
    let hello_end = RECORD_HDR_LEN + HANDSHAKE_HDR_LEN + hello_len;
    // What we may read: this segment, this record, this hello.
    let mut visible = copied;
    if visible > RECORD_HDR_LEN + record_len {
        visible = RECORD_HDR_LEN + record_len;
    }
    if visible > hello_end {
        visible = hello_end;
    }
    parse_body(buf, visible, hello_end, walk)
}

/// Slots of the walk record (`Scratch::walk`).
const W_SNI_OFF: usize = 0;
const W_SNI_LEN: usize = 1;
const W_SV_BODY: usize = 2;
const W_SV_END: usize = 3;
const W_FLAGS: usize = 4;
const W_OFF: usize = 5;
/// Walk flags: `server_name` seen, `supported_versions` seen, whole block walked.
const F_SNI: usize = 1;
const F_VERSIONS: usize = 2;
const F_COMPLETE: usize = 4;

#[inline(always)]
fn store(walk: &mut [u16; 6], slot: usize, v: usize) {
    // SAFETY: a valid, exclusive reference; volatile so the compiler keeps the
    // value in memory, where the verifier stops tracking it precisely.
    unsafe { core::ptr::write_volatile(&mut walk[slot], v as u16) }
}

#[inline(always)]
fn load(walk: &[u16; 6], slot: usize) -> usize {
    // SAFETY: as for `store`.
    unsafe { core::ptr::read_volatile(&walk[slot]) as usize }
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

/// Parses from `legacy_version` to the end of the extensions.
#[inline(always)]
fn parse_body(
    buf: &[u8; PAYLOAD_CAP + 8],
    visible: usize,
    hello_end: usize,
    walk: &mut [u16; 6],
) -> Result<Hello, Stat> {
    let mut off = RECORD_HDR_LEN + HANDSHAKE_HDR_LEN;
    need(off, 2 + 32 + 1, visible)?;
    let legacy = u16_at(buf, off) as u16;
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
    let legacy_max = if legacy > version::TLS1_2 { version::TLS1_2 } else { legacy };
    if off == hello_end {
        // No extensions at all: the legacy version is all there is.
        return Ok(Hello { max_version: legacy_max, sni: Sni::Absent });
    }
    need(off, 2, visible)?;
    let ext_end = off + 2 + u16_at(buf, off);
    if ext_end != hello_end {
        return Err(Stat::PassMalformed);
    }
    off += 2;

    // The walk records what it finds in `walk` (memory, volatile) rather than in
    // locals: every way out of the loop then reaches the decision below in the
    // same verifier state, so the code after the loop is verified once.
    store(walk, W_FLAGS, 0);
    store(walk, W_OFF, off);
    for _ in 0..MAX_EXTENSIONS {
        let off = load(walk, W_OFF);
        if off == ext_end {
            store(walk, W_FLAGS, load(walk, W_FLAGS) | F_COMPLETE);
            break;
        }
        if off + 4 > visible {
            break;
        }
        let ext_type = u16_at(buf, off) as u16;
        let body = off + 4;
        let next = body + u16_at(buf, off + 2);
        if next > ext_end {
            return Err(Stat::PassMalformed);
        }
        if next > visible {
            break;
        }
        if ext_type == EXT_SERVER_NAME {
            let flags = load(walk, W_FLAGS);
            if flags & F_SNI != 0 {
                return Err(Stat::PassMalformed);
            }
            let (name, len) = parse_server_name(buf, body, next)?;
            store(walk, W_SNI_OFF, name);
            store(walk, W_SNI_LEN, len);
            store(walk, W_FLAGS, flags | F_SNI);
        } else if ext_type == EXT_SUPPORTED_VERSIONS {
            let flags = load(walk, W_FLAGS);
            if flags & F_VERSIONS != 0 {
                return Err(Stat::PassMalformed);
            }
            store(walk, W_SV_BODY, body);
            store(walk, W_SV_END, next);
            store(walk, W_FLAGS, flags | F_VERSIONS);
        }
        store(walk, W_OFF, next);
    }

    let flags = load(walk, W_FLAGS);
    let complete = flags & F_COMPLETE != 0;
    let sni = if flags & F_SNI != 0 {
        let len = load(walk, W_SNI_LEN);
        Sni::Present {
            off: load(walk, W_SNI_OFF),
            len: if len > MAX_SNI_LEN { MAX_SNI_LEN } else { len },
        }
    } else if complete {
        Sni::Absent
    } else {
        Sni::Unknown
    };
    let max_version = if flags & F_VERSIONS != 0 {
        highest_supported_version(buf, load(walk, W_SV_BODY), load(walk, W_SV_END))?
    } else if complete {
        legacy_max
    } else {
        return Err(Stat::PassUndecidable);
    };
    Ok(Hello { max_version, sni })
}

/// Reads the single `host_name` entry of a `server_name` extension body.
#[inline(always)]
fn parse_server_name(
    buf: &[u8; PAYLOAD_CAP + 8],
    body: usize,
    end: usize,
) -> Result<(usize, usize), Stat> {
    // server_name_list length (2), name_type (1), host_name length (2), host_name.
    if body + 5 > end || u16_at(buf, body) != end - body - 2 || u8_at(buf, body + 2) != 0 {
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
fn highest_supported_version(
    buf: &[u8; PAYLOAD_CAP + 8],
    body: usize,
    end: usize,
) -> Result<u16, Stat> {
    if body + 1 > end {
        return Err(Stat::PassMalformed);
    }
    let list_len = u8_at(buf, body);
    if list_len == 0 || list_len % 2 != 0 || body + 1 + list_len != end {
        return Err(Stat::PassMalformed);
    }
    let count = list_len / 2;
    let mut max = 0u16;
    for i in 0..MAX_VERSIONS {
        if i >= count {
            break;
        }
        let v = u16_at(buf, body + 1 + i * 2) as u16;
        if !version::is_grease(v) && v > max {
            max = v;
        }
    }
    if max == 0 {
        // Only GREASE: no version the server could pick.
        return Err(Stat::PassMalformed);
    }
    Ok(max)
}

/// Recognises an SSL 2.0 (or SSLv2-compatible) ClientHello.
///
/// Only a header whose every length agrees is taken as one; anything else is not TLS.
#[inline(always)]
fn parse_sslv2(buf: &[u8; PAYLOAD_CAP + 8], copied: usize) -> Result<Hello, Stat> {
    // 2-byte record length (high bit set), msg type 1, version, three lengths.
    const HDR: usize = 11;
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
    if !plausible {
        return Err(Stat::PassNotTls);
    }
    Ok(Hello { max_version: version::SSL2, sni: Sni::Absent })
}

/// Lowercases ASCII without a branch.
#[inline(always)]
fn lower(c: u8) -> u8 {
    c | ((c.wrapping_sub(b'A') < 26) as u8) << 5
}

/// Copies the host name at `off` into `name`, lowercased, zeroing what is left of a
/// longer previous name (`prev_len`), so every byte past the new length is zero.
#[inline(always)]
pub fn copy_sni(
    buf: &[u8; PAYLOAD_CAP + 8],
    off: usize,
    len: usize,
    prev_len: usize,
    name: &mut [u8; MAX_SNI_LEN],
) {
    let upto = if prev_len > len { prev_len } else { len };
    for i in 0..MAX_SNI_LEN {
        if i >= upto {
            break;
        }
        let c = lower(buf[(off + i) & MASK]);
        name[i] = if i < len { c } else { 0 };
    }
}
