//! Revoked client certificates, as a set looked up in O(1) during handshakes.
//!
//! Sources: serials revoked through the managed CA, and CRLs (PEM or DER) for
//! bring-your-own CAs. A CRL is accepted only if its issuer is the CA, its
//! signature verifies with the CA's key and its `nextUpdate` has not passed;
//! delta CRLs are merged into their base. Only the leaf certificate is looked
//! up (leaf-only semantics): an intermediate without a CRL does not fail
//! certificates below it.

use std::collections::{HashMap, HashSet};

use anyhow::{Context, bail};

use crate::config::Material;
use x509_parser::{
    certificate::X509Certificate, extensions::ParsedExtension,
    oid_registry::OID_X509_EXT_DELTA_CRL_INDICATOR, pem::Pem, prelude::FromDer,
    revocation_list::CertificateRevocationList, x509::ReasonCode,
};

/// Revoked serials per issuing CA.
#[derive(Clone, Debug, Default)]
pub struct RevocationSet {
    /// Issuer subject (raw DER) → revoked serials (raw, leading zeros trimmed).
    by_issuer: HashMap<Vec<u8>, HashSet<Vec<u8>>>,
}

/// A serial without its leading zeros; zero, however written (`00`, `00 00`, or
/// the empty INTEGER x509-parser tolerates), is `[0]`.
fn trim(serial: &[u8]) -> &[u8] {
    match serial.iter().position(|&b| b != 0) {
        Some(start) => &serial[start..],
        None => &[0],
    }
}

impl RevocationSet {
    /// Whether the leaf certificate (DER, already parsed) is revoked by its issuer.
    pub fn is_revoked(&self, leaf: &X509Certificate<'_>) -> bool {
        self.contains(leaf.issuer().as_raw(), leaf.raw_serial())
    }

    /// Whether `serial` (raw) of the CA named `issuer` (raw DER) is revoked.
    pub fn contains(&self, issuer: &[u8], serial: &[u8]) -> bool {
        self.by_issuer
            .get(issuer)
            .is_some_and(|serials| serials.contains(trim(serial)))
    }

    /// Number of revoked serials, all CAs together.
    pub fn len(&self) -> usize {
        self.by_issuer.values().map(HashSet::len).sum()
    }

    /// Whether nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds every revocation of `other`.
    pub fn extend(&mut self, other: &RevocationSet) {
        for (issuer, serials) in &other.by_issuer {
            self.by_issuer
                .entry(issuer.clone())
                .or_default()
                .extend(serials.iter().cloned());
        }
    }

    /// Adds serials (hex, any case, `:` allowed) revoked by the CA `ca_der`.
    pub fn add_serials<'a>(
        &mut self,
        ca_der: &[u8],
        serials: impl IntoIterator<Item = &'a str>,
    ) -> anyhow::Result<()> {
        let subject = ca_subject(ca_der)?;
        let set = self.by_issuer.entry(subject).or_default();
        for s in serials {
            let hex: String = s.chars().filter(|c| *c != ':').collect();
            let bytes =
                decode_hex(&hex).with_context(|| format!("revoked serial {s:?} is not hex"))?;
            set.insert(trim(&bytes).to_vec());
        }
        Ok(())
    }

    /// Adds the revocations of CRLs (base and delta CRLs) for the CA `ca_der`.
    /// With `stale_ok`, a CRL past its nextUpdate still counts (with a warning):
    /// the store keeps the last good CRL of a source that is down.
    pub fn add_crls(
        &mut self,
        ca_der: &[u8],
        crls: &[Material],
        now: i64,
        stale_ok: bool,
    ) -> anyhow::Result<()> {
        let mut ders = Vec::new();
        for crl in crls {
            let data = crl.read().with_context(|| format!("CRL {crl}"))?;
            ders.push((
                crl.to_string(),
                der_of(&data).with_context(|| format!("CRL {crl}"))?,
            ));
        }
        let crls = ders;
        let mut parsed = Vec::new();
        for (name, der) in &crls {
            let checked_at = if stale_ok { None } else { Some(now) };
            let crl = check_crl(ca_der, der, checked_at).with_context(|| format!("CRL {name}"))?;
            if let Some(next) = crl.next_update.filter(|n| *n < now) {
                log::warn!(
                    "CRL {name} is past its nextUpdate ({}): it stays in force until a fresh one \
                     is fetched",
                    crate::clock::rfc3339(next)
                );
            }
            parsed.push(crl);
        }
        let subject = ca_subject(ca_der)?;
        let set = self.by_issuer.entry(subject).or_default();
        merge(set, &parsed);
        Ok(())
    }
}

/// Checks one CRL (PEM or DER) of the CA `ca_der` as a reload would, and
/// returns its DER, its nextUpdate and how many serials it revokes.
pub fn inspect_crl(
    ca_der: &[u8],
    data: &[u8],
    now: i64,
) -> anyhow::Result<(Vec<u8>, Option<i64>, usize)> {
    let der = der_of(data)?;
    let crl = check_crl(ca_der, &der, Some(now))?;
    Ok((der, crl.next_update, crl.revoked.len()))
}

/// A CRL's revocations, and whether it is a delta.
struct Crl {
    delta: bool,
    next_update: Option<i64>,
    revoked: Vec<Vec<u8>>,
    removed: Vec<Vec<u8>>,
}

/// Base CRLs first, then deltas: a delta adds entries and lifts those marked removeFromCRL.
fn merge(set: &mut HashSet<Vec<u8>>, crls: &[Crl]) {
    for crl in crls
        .iter()
        .filter(|c| !c.delta)
        .chain(crls.iter().filter(|c| c.delta))
    {
        set.extend(crl.revoked.iter().cloned());
        for serial in &crl.removed {
            set.remove(serial);
        }
    }
}

/// Checks a CRL's issuer and signature and, when `now` is given, its dates.
fn check_crl(ca_der: &[u8], der: &[u8], now: Option<i64>) -> anyhow::Result<Crl> {
    let (_, ca) = X509Certificate::from_der(ca_der)
        .map_err(|e| anyhow::anyhow!("unparsable CA certificate: {e}"))?;
    let (_, crl) =
        CertificateRevocationList::from_der(der).map_err(|e| anyhow::anyhow!("not a CRL: {e}"))?;
    if crl.issuer().as_raw() != ca.subject().as_raw() {
        bail!("issued by {}, not by the CA {}", crl.issuer(), ca.subject());
    }
    crl.verify_signature(ca.public_key())
        .map_err(|e| anyhow::anyhow!("signature does not verify with the CA's key: {e}"))?;
    if let Some(now) = now {
        if let Some(next) = crl.next_update().filter(|n| n.timestamp() < now) {
            bail!("expired: its nextUpdate ({next}) has passed; publish a fresh CRL");
        }
        if crl.last_update().timestamp() > now + 300 {
            bail!("not yet valid: thisUpdate is {}", crl.last_update());
        }
    }
    let delta = crl
        .extensions()
        .iter()
        .any(|e| e.oid == OID_X509_EXT_DELTA_CRL_INDICATOR);
    let mut revoked = Vec::new();
    let mut removed = Vec::new();
    for entry in crl.iter_revoked_certificates() {
        let serial = trim(entry.raw_serial()).to_vec();
        let lifted = entry.extensions().iter().any(|e| {
            matches!(
                e.parsed_extension(),
                ParsedExtension::ReasonCode(ReasonCode::RemoveFromCRL)
            )
        });
        if lifted {
            removed.push(serial);
        } else {
            revoked.push(serial);
        }
    }
    Ok(Crl {
        delta,
        next_update: crl.next_update().map(|t| t.timestamp()),
        revoked,
        removed,
    })
}

fn ca_subject(ca_der: &[u8]) -> anyhow::Result<Vec<u8>> {
    let (_, ca) = X509Certificate::from_der(ca_der)
        .map_err(|e| anyhow::anyhow!("unparsable CA certificate: {e}"))?;
    Ok(ca.subject().as_raw().to_vec())
}

/// The DER of a PEM (`X509 CRL`) or DER input (a DER CRL may hold the bytes
/// `-----BEGIN` too, say in a serial: what parses as a CRL is DER).
fn der_of(data: &[u8]) -> anyhow::Result<Vec<u8>> {
    if data.windows(10).any(|w| w == b"-----BEGIN")
        && CertificateRevocationList::from_der(data).is_err()
    {
        let pem = Pem::iter_from_buffer(data)
            .next()
            .context("empty PEM")?
            .map_err(|e| anyhow::anyhow!("bad PEM: {e}"))?;
        if pem.label != "X509 CRL" {
            bail!("PEM block is {:?}, expected \"X509 CRL\"", pem.label);
        }
        Ok(pem.contents)
    } else {
        Ok(data.to_vec())
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let s = if s.len() % 2 == 1 {
        format!("0{s}")
    } else {
        s.to_string()
    };
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_trimmed_and_hex_decoded() {
        assert_eq!(decode_hex("0a0B").unwrap(), vec![10, 11]);
        assert_eq!(decode_hex("abc").unwrap(), vec![0x0a, 0xbc]);
        assert!(decode_hex("zz").is_none());
        assert_eq!(trim(&[0, 0, 5]), &[5]);
        assert_eq!(trim(&[0]), &[0]);
    }

    /// Found by the `crl` fuzz target: a CRL entry with an empty serial (which
    /// x509-parser reads as 0) and one with serial 0 counted as two serials.
    #[test]
    fn zero_is_one_serial_however_written() {
        assert_eq!(trim(&[]), &[0]);
        assert_eq!(trim(&[0, 0]), &[0]);
        let crl = Crl {
            delta: false,
            next_update: None,
            revoked: [&[][..], &[0], &[0, 0]].map(|s| trim(s).to_vec()).to_vec(),
            removed: vec![],
        };
        let mut serials = HashSet::new();
        merge(&mut serials, &[crl]);
        let set = RevocationSet {
            by_issuer: HashMap::from([(b"CA".to_vec(), serials)]),
        };
        assert_eq!(set.len(), 1);
        assert!(set.contains(b"CA", &[]) && set.contains(b"CA", &[0]));
    }

    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        assert!(body.len() < 128);
        [&[tag, body.len() as u8][..], body].concat()
    }

    /// Found by the `crl` fuzz target: a DER CRL with `-----BEGIN` in a serial
    /// was taken for PEM and refused.
    #[test]
    fn a_der_crl_holding_pem_markers_is_still_der() {
        let name = tlv(
            0x30,
            &tlv(
                0x31,
                &tlv(0x30, &[tlv(0x06, &[0x55, 4, 3]), tlv(0x0c, b"CA")].concat()),
            ),
        );
        let alg = tlv(0x30, &tlv(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 4, 3, 2]));
        let when = tlv(0x17, b"261201000000Z");
        let entry = tlv(
            0x30,
            &[tlv(0x02, b"\x01-----BEGIN X509 CRL-----"), when.clone()].concat(),
        );
        let tbs = [tlv(0x02, &[1]), alg.clone(), name, when, tlv(0x30, &entry)].concat();
        let der = tlv(
            0x30,
            &[tlv(0x30, &tbs), alg, tlv(0x03, &[0, 1, 2])].concat(),
        );
        assert!(CertificateRevocationList::from_der(&der).is_ok());
        assert_eq!(der_of(&der).unwrap(), der);
        let pem = format!(
            "-----BEGIN X509 CRL-----\n{}\n-----END X509 CRL-----\n",
            boring::base64::encode_block(&der)
        );
        assert_eq!(der_of(pem.as_bytes()).unwrap(), der);
    }

    #[test]
    fn deltas_add_and_lift() {
        let mut set = HashSet::new();
        let base = Crl {
            delta: false,
            next_update: None,
            revoked: vec![vec![1], vec![2]],
            removed: vec![],
        };
        let delta = Crl {
            delta: true,
            next_update: None,
            revoked: vec![vec![3]],
            removed: vec![vec![1]],
        };
        merge(&mut set, &[delta, base]);
        assert_eq!(set, HashSet::from([vec![2], vec![3]]));
    }
}
