//! A reference model of the XDP filter's decision on a TCP payload, written in
//! plain slice-based Rust from the filter's specification (not from its code),
//! for differential testing against the real program.
//!
//! The specification, in order:
//! 1. Only the first `PAYLOAD_CAP` bytes of the segment are looked at.
//! 2. A hello is parsed within its first record and within this segment; what
//!    lies beyond is invisible.
//! 3. The highest version offered is the highest non-GREASE entry of
//!    `supported_versions` when that extension was seen whole; otherwise
//!    `legacy_version` capped at TLS 1.2, but only when the whole extension
//!    block was seen. SSL 2 format hellos are below every minimum.
//! 4. The minimum: the hostname's (exact, lowercased SNI), else the zone's; the
//!    no-SNI minimum when the whole block was seen without SNI; the lowest
//!    minimum of all when the SNI was not seen.
//! 5. Refuse only when the highest version is below that minimum.

use gateway_common::{MAX_SNI_LEN, PAYLOAD_CAP, Stat, version};

use crate::xdp::XdpPolicy;

/// Extensions walked before giving up.
const MAX_EXTENSIONS: usize = 64;
/// Largest record length accepted.
const MAX_RECORD_LEN: usize = 16384 + 2048;

/// The model's decision on one payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement {
    /// The outcome counter the filter should bump.
    pub stat: Stat,
    /// The highest version offered, when determined.
    pub max_version: Option<u16>,
    /// The lowercased SNI, when the version was determined and the SNI seen.
    pub sni: Option<String>,
}

impl Judgement {
    fn pass(stat: Stat) -> Judgement {
        Judgement {
            stat,
            max_version: None,
            sni: None,
        }
    }
}

/// Where the SNI stands.
enum Sni {
    Unknown,
    Absent,
    Present(String),
}

/// Decides a non-empty TCP payload to a TLS port, as the filter must.
pub fn judge(payload: &[u8], policy: &XdpPolicy) -> Judgement {
    let visible = &payload[..payload.len().min(PAYLOAD_CAP)];
    let (max_version, sni) = match client_hello(visible) {
        Ok(hello) => hello,
        Err(stat) => return Judgement::pass(stat),
    };
    let min = match &sni {
        Sni::Present(name) => policy
            .hosts
            .get(name.as_str())
            .copied()
            .unwrap_or(policy.zone_min),
        Sni::Absent => policy.no_sni_min,
        Sni::Unknown => policy.floor(),
    };
    let stat = if max_version < min.wire() {
        match max_version {
            version::TLS1_0 => Stat::DropTls10,
            version::TLS1_1 => Stat::DropTls11,
            version::TLS1_2 => Stat::DropTls12,
            version::SSL2 => Stat::DropSsl2,
            _ => Stat::DropSsl3,
        }
    } else if matches!(sni, Sni::Unknown) {
        Stat::PassUndecidable
    } else {
        Stat::PassAllowed
    };
    Judgement {
        stat,
        max_version: Some(max_version),
        sni: match sni {
            Sni::Present(name) => Some(name),
            _ => None,
        },
    }
}

/// A cursor over visible bytes: `Err(Undecidable)` when a read runs past them.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Stat> {
        let out = self
            .data
            .get(self.pos..self.pos + n)
            .ok_or(Stat::PassUndecidable)?;
        self.pos += n;
        Ok(out)
    }

    fn u8(&mut self) -> Result<usize, Stat> {
        Ok(usize::from(self.take(1)?[0]))
    }

    fn u16(&mut self) -> Result<usize, Stat> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
}

fn client_hello(data: &[u8]) -> Result<(u16, Sni), Stat> {
    // What the filter's first look at six bytes in place decides.
    if data.len() >= 6 && data[0] & 0x80 == 0 {
        if data[0] != 22 || data[1] != 3 {
            return Err(Stat::PassNotTls);
        }
        if data[5] != 1 {
            return Err(Stat::PassNotClientHello);
        }
    }
    match data.first() {
        None => return Err(Stat::PassNotTls),
        Some(b) if b & 0x80 != 0 => return sslv2(data),
        Some(_) => {}
    }
    if data.len() < 9 {
        return Err(if data[0] == 22 {
            Stat::PassUndecidable
        } else {
            Stat::PassNotTls
        });
    }
    if data[0] != 22 || data[1] != 3 {
        return Err(Stat::PassNotTls);
    }
    if data[5] != 1 {
        return Err(Stat::PassNotClientHello);
    }
    let record_len = usize::from(u16::from_be_bytes([data[3], data[4]]));
    if !(4..=MAX_RECORD_LEN).contains(&record_len) {
        return Err(Stat::PassMalformed);
    }
    let hello_len =
        usize::from(data[6]) << 16 | usize::from(u16::from_be_bytes([data[7], data[8]]));
    let hello_end = 9 + hello_len;
    let visible_end = data.len().min(5 + record_len).min(hello_end);
    hello_body(&data[..visible_end], hello_end)
}

fn hello_body(data: &[u8], hello_end: usize) -> Result<(u16, Sni), Stat> {
    let mut c = Cursor { data, pos: 9 };
    // legacy_version, random, session id length: read together.
    let head = c.take(2 + 32 + 1)?;
    let legacy = u16::from_be_bytes([head[0], head[1]]);
    if legacy >> 8 != 3 {
        return Err(Stat::PassMalformed);
    }
    let session_id = usize::from(head[34]);
    if session_id > 32 {
        return Err(Stat::PassMalformed);
    }
    c.pos += session_id;
    let ciphers = c.u16()?;
    if ciphers < 2 || ciphers % 2 == 1 {
        return Err(Stat::PassMalformed);
    }
    c.pos += ciphers;
    let compression = c.u8()?;
    if compression == 0 {
        return Err(Stat::PassMalformed);
    }
    c.pos += compression;
    if c.pos > hello_end {
        return Err(Stat::PassMalformed);
    }
    let legacy_max = legacy.min(version::TLS1_2);
    if c.pos == hello_end {
        return Ok((legacy_max, Sni::Absent));
    }
    let ext_end = c.pos + 2 + c.u16()?;
    if ext_end != hello_end {
        return Err(Stat::PassMalformed);
    }

    let mut sni = Sni::Unknown;
    let mut versions: Option<&[u8]> = None;
    let mut complete = false;
    for _ in 0..MAX_EXTENSIONS {
        if c.pos == ext_end {
            complete = true;
            break;
        }
        let Some(header) = data.get(c.pos..c.pos + 4) else {
            break;
        };
        let kind = u16::from_be_bytes([header[0], header[1]]);
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let body_start = c.pos + 4;
        if body_start + len > ext_end {
            return Err(Stat::PassMalformed);
        }
        let Some(body) = data.get(body_start..body_start + len) else {
            break;
        };
        match kind {
            0 if !matches!(sni, Sni::Unknown) => return Err(Stat::PassMalformed),
            0 => sni = Sni::Present(server_name(body)?),
            43 if versions.is_some() => return Err(Stat::PassMalformed),
            43 => versions = Some(body),
            _ => {}
        }
        c.pos = body_start + len;
    }
    if complete && matches!(sni, Sni::Unknown) {
        sni = Sni::Absent;
    }
    let max = match versions {
        Some(body) => highest_version(body)?,
        None if complete => legacy_max,
        None => return Err(Stat::PassUndecidable),
    };
    Ok((max, sni))
}

fn server_name(body: &[u8]) -> Result<String, Stat> {
    let malformed = Stat::PassMalformed;
    if body.len() < 5 {
        return Err(malformed);
    }
    let list_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let name_len = usize::from(u16::from_be_bytes([body[3], body[4]]));
    if list_len != body.len() - 2 || body[2] != 0 || name_len == 0 || name_len > MAX_SNI_LEN {
        return Err(malformed);
    }
    if 5 + name_len != body.len() {
        return Err(malformed);
    }
    Ok(String::from_utf8_lossy(&body[5..].to_ascii_lowercase()).into_owned())
}

fn highest_version(body: &[u8]) -> Result<u16, Stat> {
    let (&len, list) = body.split_first().ok_or(Stat::PassMalformed)?;
    if len == 0 || len % 2 == 1 || usize::from(len) != list.len() {
        return Err(Stat::PassMalformed);
    }
    list.chunks_exact(2)
        .map(|v| u16::from_be_bytes([v[0], v[1]]))
        .filter(|v| !version::is_grease(*v))
        .max()
        .ok_or(Stat::PassMalformed)
}

fn sslv2(data: &[u8]) -> Result<(u16, Sni), Stat> {
    if data.len() < 11 {
        return Err(Stat::PassNotTls);
    }
    let field = |i: usize| usize::from(u16::from_be_bytes([data[i], data[i + 1]]));
    let (ciphers, session_id, challenge) = (field(5), field(7), field(9));
    let ok = data[2] == 1
        && matches!(data[3], 0 | 3)
        && ciphers > 0
        && ciphers % 3 == 0
        && matches!(session_id, 0 | 16)
        && (16..=32).contains(&challenge)
        && field(0) & 0x7fff == 9 + ciphers + session_id + challenge;
    if ok {
        Ok((version::SSL2, Sni::Absent))
    } else {
        Err(Stat::PassNotTls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{hello::ClientHello, tls_version::TlsVersion};

    #[test]
    fn modern_hello_passes_and_legacy_is_refused() {
        let policy = XdpPolicy::uniform(TlsVersion::Tls12);
        let j = judge(&ClientHello::modern("API.example.com").record(), &policy);
        assert_eq!(j.stat, Stat::PassAllowed);
        assert_eq!(j.max_version, Some(version::TLS1_3));
        assert_eq!(j.sni.as_deref(), Some("api.example.com"));
        let j = judge(
            &ClientHello::legacy(version::TLS1_0, Some("a.test")).record(),
            &policy,
        );
        assert_eq!(j.stat, Stat::DropTls10);
    }
}
