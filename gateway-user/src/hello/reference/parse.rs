//! The model's reading of handshake bytes (record headers already removed,
//! offset 0 = the handshake type byte) and of SSL 2.0-format hellos, and the
//! policy applied to what they offer.
//!
//! Any read past the bytes visible so far means "wait" (`Parse::Wait`): with
//! more of the stream to come, the hello may still be decided.

use gateway_common::{MAX_SNI_LEN, PAYLOAD_CAP, Stat, version};

use super::{MAX_EXTENSIONS, Seen};
use crate::xdp::XdpPolicy;

/// Where the SNI stands after a parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Sni {
    /// Not seen in the visible bytes.
    Unknown,
    /// The whole extension block (or the whole hello) was seen without one.
    Absent,
    /// This name, lowercased.
    Present(String),
}

/// A hello whose highest version was determined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Offer {
    /// The highest version offered (wire value).
    pub max_version: u16,
    /// What is known of the SNI.
    pub sni: Sni,
}

/// The policy's answer on the bytes seen so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// At or above the minimum that applies.
    Allow,
    /// Below it: refused, counted as this drop counter.
    Refuse(Stat),
    /// Not decidable from these bytes.
    Wait,
    /// Never decidable: pass, counted as this.
    Pass(Stat),
}

/// Parses handshake bytes and applies the policy: the verdict, and the offer
/// when the highest version was determined (what the program reports).
pub(super) fn judge_handshake(hs: &[u8], policy: &XdpPolicy) -> (Verdict, Option<Seen>) {
    match client_hello(hs) {
        Err(Stop::Wait) => (Verdict::Wait, None),
        Err(Stop::Pass(stat)) => (Verdict::Pass(stat), None),
        Ok(offer) => apply(offer, policy),
    }
}

/// The policy on an offer: the minimum for its SNI, then refuse below it.
pub(super) fn apply(offer: Offer, policy: &XdpPolicy) -> (Verdict, Option<Seen>) {
    let min = match &offer.sni {
        Sni::Present(name) => policy
            .hosts()
            .get(name.as_str())
            .copied()
            .unwrap_or(policy.zone_min),
        Sni::Absent => policy.no_sni_min,
        Sni::Unknown => policy.floor(),
    };
    let verdict = if offer.max_version < min.wire() {
        Verdict::Refuse(drop_stat(offer.max_version))
    } else if offer.sni == Sni::Unknown {
        Verdict::Wait
    } else {
        Verdict::Allow
    };
    let seen = Seen {
        max_version: offer.max_version,
        sni: match offer.sni {
            Sni::Present(name) => Some(name),
            _ => None,
        },
    };
    (verdict, Some(seen))
}

/// The drop counter for a refused hello offering at most `v`.
fn drop_stat(v: u16) -> Stat {
    match v {
        version::TLS1_0 => Stat::DropTls10,
        version::TLS1_1 => Stat::DropTls11,
        version::TLS1_2 => Stat::DropTls12,
        version::SSL2 => Stat::DropSsl2,
        _ => Stat::DropSsl3,
    }
}

/// Why a parse stopped without an offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// A read ran past the visible bytes.
    Wait,
    /// The bytes decide that nothing can be decided: pass, counted as this.
    Pass(Stat),
}

const MALFORMED: Stop = Stop::Pass(Stat::PassMalformed);

/// A cursor over visible bytes: `Err(Stop::Wait)` when a read runs past them.
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Stop> {
        let out = self.data.get(self.pos..self.pos + n).ok_or(Stop::Wait)?;
        self.pos += n;
        Ok(out)
    }

    fn u8(&mut self) -> Result<usize, Stop> {
        Ok(usize::from(self.take(1)?[0]))
    }

    fn u16(&mut self) -> Result<usize, Stop> {
        let b = self.take(2)?;
        Ok(usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
}

/// The ClientHello whose handshake header is at `hs[0]`, as far as `hs` goes.
fn client_hello(hs: &[u8]) -> Result<Offer, Stop> {
    if hs.len() < 4 {
        return Err(Stop::Wait);
    }
    if hs[0] != 1 {
        return Err(Stop::Pass(Stat::PassNotClientHello));
    }
    let hello_end =
        4 + (usize::from(hs[1]) << 16 | usize::from(u16::from_be_bytes([hs[2], hs[3]])));
    let visible = hs.len().min(hello_end).min(PAYLOAD_CAP);
    let data = &hs[..visible];
    let mut c = Cursor { data, pos: 4 };
    // legacy_version, random, session id length: read together.
    let head = c.take(2 + 32 + 1)?;
    let legacy = u16::from_be_bytes([head[0], head[1]]);
    if legacy >> 8 != 3 {
        return Err(MALFORMED);
    }
    let session_id = usize::from(head[34]);
    if session_id > 32 {
        return Err(MALFORMED);
    }
    c.pos += session_id;
    let ciphers = c.u16()?;
    if ciphers < 2 || ciphers % 2 == 1 {
        return Err(MALFORMED);
    }
    c.pos += ciphers;
    let compression = c.u8()?;
    if compression == 0 {
        return Err(MALFORMED);
    }
    c.pos += compression;
    if c.pos > hello_end {
        return Err(MALFORMED);
    }
    let legacy_max = legacy.min(version::TLS1_2);
    if c.pos == hello_end {
        return Ok(Offer {
            max_version: legacy_max,
            sni: Sni::Absent,
        });
    }
    let ext_end = c.pos + 2 + c.u16()?;
    if ext_end != hello_end {
        return Err(MALFORMED);
    }
    extensions(data, c.pos, ext_end, legacy_max)
}

/// Walks the extension block from `start` to `ext_end` as far as it is visible.
fn extensions(data: &[u8], start: usize, ext_end: usize, legacy_max: u16) -> Result<Offer, Stop> {
    let mut pos = start;
    let mut sni = Sni::Unknown;
    let mut versions: Option<&[u8]> = None;
    let mut complete = false;
    for _ in 0..MAX_EXTENSIONS {
        if pos == ext_end {
            complete = true;
            break;
        }
        let Some(header) = data.get(pos..pos + 4) else {
            break;
        };
        let kind = u16::from_be_bytes([header[0], header[1]]);
        let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
        let body_start = pos + 4;
        if body_start + len > ext_end {
            return Err(MALFORMED);
        }
        let Some(body) = data.get(body_start..body_start + len) else {
            break;
        };
        match kind {
            0 if sni != Sni::Unknown => return Err(MALFORMED),
            0 => sni = Sni::Present(server_name(body)?),
            43 if versions.is_some() => return Err(MALFORMED),
            43 => versions = Some(body),
            _ => {}
        }
        pos = body_start + len;
    }
    if complete && sni == Sni::Unknown {
        sni = Sni::Absent;
    }
    let max_version = match versions {
        Some(body) => highest_version(body)?,
        None if complete => legacy_max,
        None => return Err(Stop::Wait),
    };
    Ok(Offer { max_version, sni })
}

/// The single host_name of a `server_name` body, lowercased.
fn server_name(body: &[u8]) -> Result<String, Stop> {
    if body.len() < 5 {
        return Err(MALFORMED);
    }
    let list_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let name_len = usize::from(u16::from_be_bytes([body[3], body[4]]));
    if list_len != body.len() - 2 || body[2] != 0 || name_len == 0 || name_len > MAX_SNI_LEN {
        return Err(MALFORMED);
    }
    if 5 + name_len != body.len() {
        return Err(MALFORMED);
    }
    Ok(String::from_utf8_lossy(&body[5..].to_ascii_lowercase()).into_owned())
}

/// The highest non-GREASE entry of a `supported_versions` body.
fn highest_version(body: &[u8]) -> Result<u16, Stop> {
    let (&len, list) = body.split_first().ok_or(MALFORMED)?;
    if len == 0 || len % 2 == 1 || usize::from(len) != list.len() {
        return Err(MALFORMED);
    }
    list.chunks_exact(2)
        .map(|v| u16::from_be_bytes([v[0], v[1]]))
        .filter(|v| !version::is_grease(*v))
        .max()
        .ok_or(MALFORMED)
}

/// Whether the first bytes of a payload (at most 16 are looked at) are an
/// SSL 2.0-format ClientHello header whose every length agrees.
pub(super) fn plausible_sslv2(p: &[u8]) -> bool {
    let data = &p[..p.len().min(16)];
    if data.len() < 11 {
        return false;
    }
    let field = |i: usize| usize::from(u16::from_be_bytes([data[i], data[i + 1]]));
    let (ciphers, session_id, challenge) = (field(5), field(7), field(9));
    data[2] == 1
        && matches!(data[3], 0 | 3)
        && ciphers > 0
        && ciphers % 3 == 0
        && matches!(session_id, 0 | 16)
        && (16..=32).contains(&challenge)
        && field(0) & 0x7fff == 9 + ciphers + session_id + challenge
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hello::{ClientHello, sslv2_hello};

    #[test]
    fn a_whole_message_is_read_and_a_cut_one_waits() {
        let msg = ClientHello::modern("Api.Example.com").message();
        let offer = client_hello(&msg).unwrap();
        assert_eq!(offer.max_version, version::TLS1_3);
        assert_eq!(offer.sni, Sni::Present("api.example.com".into()));
        assert_eq!(client_hello(&msg[..60]), Err(Stop::Wait));
        assert_eq!(client_hello(&msg[..3]), Err(Stop::Wait));
        let mut other = msg.clone();
        other[0] = 2;
        assert_eq!(
            client_hello(&other),
            Err(Stop::Pass(Stat::PassNotClientHello))
        );
    }

    #[test]
    fn sslv2_headers_must_agree() {
        assert!(plausible_sslv2(&sslv2_hello(version::SSL2)));
        let mut bad = sslv2_hello(version::SSL2);
        bad[1] ^= 1;
        assert!(!plausible_sslv2(&bad));
        assert!(!plausible_sslv2(&sslv2_hello(version::SSL2)[..10]));
    }
}
