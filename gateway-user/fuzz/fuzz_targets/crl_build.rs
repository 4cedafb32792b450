//! CRLs the `crl` target builds from its input (DER written by hand, signed
//! with ECDSA-SHA256 by the CA it is given), and what each one should be.
//!
//! Input: flags (bit 0: the target's mode, 1; bit 1/2: base/delta as PEM, bit 3: delta first, bit 4: a
//! delta, bit 5: the base without nextUpdate), the base's and the delta's
//! times (bits 0–2: thisUpdate, 3–5: nextUpdate, from the tables), then
//! entries: a byte (bit 0: in the delta, bits 1–2: reason, bits 3–7: length)
//! and the serial.

use boring::{hash::MessageDigest, sign::Signer};
use gateway::pki;

const DAY: i64 = 86_400;
/// thisUpdate and nextUpdate, from `now`.
const THIS: [i64; 8] = [-30 * DAY, -3600, -1, 0, 299, 300, 301, DAY];
const NEXT: [Option<i64>; 8] = [
    None,
    Some(-DAY),
    Some(-1),
    Some(0),
    Some(1),
    Some(3600),
    Some(30 * DAY),
    Some(3650 * DAY),
];
/// Reason codes: none, removeFromCRL, keyCompromise, unspecified.
const REASONS: [Option<u8>; 4] = [None, Some(8), Some(1), Some(0)];
const ECDSA_SHA256: [u8; 12] = [
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];

/// A built CRL: its bytes (PEM or DER), whether its dates hold at `now`, and
/// whether every serial is a well-formed positive INTEGER.
pub struct Built {
    pub data: Vec<u8>,
    pub in_time: bool,
    pub well_formed: bool,
}

fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    let len = body.len().to_be_bytes();
    if body.len() < 128 {
        v.push(body.len() as u8);
    } else {
        let len = &len[len.iter().position(|&b| b != 0).unwrap()..];
        v.push(0x80 | len.len() as u8);
        v.extend_from_slice(len);
    }
    v.extend_from_slice(body);
    v
}

fn utc_time(t: i64) -> Vec<u8> {
    let d = time::OffsetDateTime::from_unix_timestamp(t).unwrap();
    let (y, m, day) = (d.year() % 100, u8::from(d.month()), d.day());
    let (h, min, s) = (d.hour(), d.minute(), d.second());
    tlv(
        0x17,
        format!("{y:02}{m:02}{day:02}{h:02}{min:02}{s:02}Z").as_bytes(),
    )
}

fn ext(oid: u8, critical: bool, value: &[u8]) -> Vec<u8> {
    let crit = if critical {
        tlv(0x01, &[0xff])
    } else {
        Vec::new()
    };
    tlv(
        0x30,
        &[tlv(0x06, &[0x55, 0x1d, oid]), crit, tlv(0x04, value)].concat(),
    )
}

/// A CRL of `ca` with `entries` (serial, reason code), signed by `ca`.
fn crl(
    ca: &pki::Signer,
    (this, next): (i64, Option<i64>),
    delta: bool,
    entries: &[(&[u8], Option<u8>)],
) -> Vec<u8> {
    let issuer = ca.cert.subject_name().to_der().unwrap();
    let version = tlv(0x02, &[1]);
    let mut tbs = [version, ECDSA_SHA256.to_vec(), issuer, utc_time(this)].concat();
    tbs.extend(next.map(utc_time).unwrap_or_default());
    let mut revoked = Vec::new();
    for (serial, reason) in entries {
        let mut e = [tlv(0x02, serial), utc_time(this)].concat();
        if let Some(r) = reason {
            e.extend(tlv(0x30, &ext(0x15, false, &tlv(0x0a, &[*r]))));
        }
        revoked.extend(tlv(0x30, &e));
    }
    if !revoked.is_empty() {
        tbs.extend(tlv(0x30, &revoked));
    }
    let mut exts = ext(0x14, false, &tlv(0x02, &[0x11]));
    if delta {
        exts.extend(ext(0x1b, true, &tlv(0x02, &[0x10])));
    }
    tbs.extend(tlv(0xa0, &tlv(0x30, &exts)));
    let tbs = tlv(0x30, &tbs);
    let mut signer = Signer::new(MessageDigest::sha256(), &ca.key).unwrap();
    let sig = [&[0][..], &signer.sign_oneshot_to_vec(&tbs).unwrap()].concat();
    tlv(
        0x30,
        &[tbs, ECDSA_SHA256.to_vec(), tlv(0x03, &sig)].concat(),
    )
}

fn pem(der: &[u8]) -> Vec<u8> {
    let b64 = boring::base64::encode_block(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|l| std::str::from_utf8(l).unwrap())
        .collect();
    format!(
        "-----BEGIN X509 CRL-----\n{}\n-----END X509 CRL-----\n",
        lines.join("\n")
    )
    .into_bytes()
}

/// The base CRL and, if asked for, the delta, in the order asked for.
pub fn built(ca: &pki::Signer, spec: &[u8], now: i64) -> Vec<Built> {
    let [flags, base_times, delta_times, rest @ ..] = spec else {
        return Vec::new();
    };
    let mut rest = rest;
    let mut entries = [Vec::new(), Vec::new()];
    while let [f, tail @ ..] = rest {
        let (serial, more) = tail.split_at(usize::from(f >> 3).min(tail.len()));
        entries[usize::from(f & 1)].push((serial, REASONS[usize::from(f >> 1 & 3)]));
        rest = more;
    }
    let mut out = Vec::new();
    for (i, (times, as_pem)) in [(base_times, flags & 2), (delta_times, flags & 4)]
        .into_iter()
        .enumerate()
    {
        if i == 1 && flags & 0x10 == 0 {
            break;
        }
        let this = now + THIS[usize::from(times & 7)];
        let next = NEXT[usize::from(times >> 3 & 7)].map(|n| now + n);
        let next = next.filter(|_| i == 1 || flags & 0x20 == 0);
        let der = crl(ca, (this, next), i == 1, &entries[i]);
        out.push(Built {
            data: if as_pem != 0 { pem(&der) } else { der },
            in_time: next.is_none_or(|n| n >= now) && this <= now + 300,
            well_formed: entries[i]
                .iter()
                .all(|(s, _)| matches!(s.first(), Some(1..=0x7f))),
        });
    }
    if flags & 8 != 0 {
        out.reverse();
    }
    out
}
