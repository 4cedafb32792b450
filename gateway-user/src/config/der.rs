//! Certificate chains and private keys held as DER: what the store keeps in
//! memory and what the terminator hands to BoringSSL, shared between the
//! state and every snapshot built from it (a clone is a reference count).
//! They are written to the store, and read back, as PEM.

use std::{fmt, sync::Arc};

use anyhow::{Context, bail};
use base64::Engine;
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};
use x509_parser::pem::Pem;

/// Certificates, leaf first, as their DER one after another (each is
/// self-delimiting). Made only from checked DER, so it always splits cleanly.
#[derive(Clone, PartialEq, Eq)]
pub struct CertChain(Arc<[u8]>);

/// A private key, PKCS#8 DER.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyDer(Arc<[u8]>);

/// A CRL's DER, as fetched and verified (base64 in the store).
#[derive(Clone, PartialEq, Eq)]
pub struct CrlDer(Arc<[u8]>);

impl CrlDer {
    /// The DER of a CRL that was checked.
    pub fn new(der: Vec<u8>) -> CrlDer {
        CrlDer(der.into())
    }

    /// The DER.
    pub fn der(&self) -> &[u8] {
        &self.0
    }

    /// The shared bytes.
    pub fn bytes(&self) -> Arc<[u8]> {
        self.0.clone()
    }
}

impl fmt::Debug for CrlDer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CrlDer({} bytes)", self.0.len())
    }
}

impl Serialize for CrlDer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

/// A stored CRL that is not base64 is an unreadable record, reported with
/// the record's name by the store: never dropped.
impl<'de> Deserialize<'de> for CrlDer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(CrlDer::new)
            .map_err(|e| D::Error::custom(format!("the stored CRL is not base64: {e}")))
    }
}

impl CertChain {
    /// The chain of these certificates (DER each, checked to be one DER element).
    pub fn from_ders<D: AsRef<[u8]>>(ders: &[D]) -> anyhow::Result<CertChain> {
        if ders.is_empty() {
            bail!("a certificate chain needs at least one certificate");
        }
        let mut all = Vec::with_capacity(ders.iter().map(|d| d.as_ref().len()).sum());
        for (i, der) in ders.iter().enumerate() {
            let der = der.as_ref();
            if element_len(der) != Some(der.len()) {
                bail!("certificate {} is not one DER element", i + 1);
            }
            all.extend_from_slice(der);
        }
        Ok(CertChain(all.into()))
    }

    /// The chain of a PEM text's `CERTIFICATE` blocks.
    pub fn from_pem(pem: &[u8]) -> anyhow::Result<CertChain> {
        CertChain::from_ders(&pem_blocks(pem, &["CERTIFICATE"])?)
    }

    /// Concatenated DER as [`CertChain::bytes`] gave it.
    pub fn from_bytes(bytes: Arc<[u8]>) -> anyhow::Result<CertChain> {
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let len = element_len(rest).context("not concatenated DER certificates")?;
            rest = &rest[len..];
        }
        if bytes.is_empty() {
            bail!("a certificate chain needs at least one certificate");
        }
        Ok(CertChain(bytes))
    }

    /// Each certificate's DER, leaf first.
    pub fn certificates(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = &self.0[..];
        std::iter::from_fn(move || {
            let len = element_len(rest)?;
            let (cert, tail) = rest.split_at(len);
            rest = tail;
            Some(cert)
        })
    }

    /// The leaf's DER.
    pub fn leaf(&self) -> &[u8] {
        self.certificates().next().unwrap_or_default()
    }

    /// The shared bytes (concatenated DER).
    pub fn bytes(&self) -> Arc<[u8]> {
        self.0.clone()
    }

    /// As PEM, one block per certificate.
    pub fn to_pem(&self) -> String {
        self.certificates()
            .map(|der| pem_block("CERTIFICATE", der))
            .collect()
    }
}

impl KeyDer {
    /// A key from PEM: PKCS#8 (`PRIVATE KEY`) is kept as it is; a traditional
    /// RSA or EC key is converted to PKCS#8.
    /// The DER is checked when an identity is made of it, not here (the
    /// store reads every key at start).
    pub fn from_pem(pem: &[u8]) -> anyhow::Result<KeyDer> {
        let mut blocks = Pem::iter_from_buffer(pem);
        let (Some(block), None) = (blocks.next(), blocks.next()) else {
            bail!("expected exactly one PEM private key (-----BEGIN PRIVATE KEY-----)");
        };
        let block = block.map_err(|e| anyhow::anyhow!("PEM: {e}"))?;
        match block.label.as_str() {
            "PRIVATE KEY" => Ok(KeyDer(block.contents.into())),
            "RSA PRIVATE KEY" | "EC PRIVATE KEY" => {
                let key = boring::pkey::PKey::private_key_from_pem(pem)
                    .context("not a readable PEM private key")?;
                Ok(KeyDer(key.private_key_to_der_pkcs8()?.into()))
            }
            other => bail!("PEM block is {other:?}; expected PRIVATE KEY"),
        }
    }

    /// PKCS#8 DER as [`KeyDer::bytes`] gave it.
    pub fn from_bytes(bytes: Arc<[u8]>) -> anyhow::Result<KeyDer> {
        boring::pkey::PKey::private_key_from_der(&bytes).context("not a DER private key")?;
        Ok(KeyDer(bytes))
    }

    /// A key BoringSSL wrote.
    pub fn from_key(key: &boring::pkey::PKeyRef<boring::pkey::Private>) -> anyhow::Result<KeyDer> {
        Ok(KeyDer(key.private_key_to_der_pkcs8()?.into()))
    }

    /// The DER.
    pub fn der(&self) -> &[u8] {
        &self.0
    }

    /// The shared bytes.
    pub fn bytes(&self) -> Arc<[u8]> {
        self.0.clone()
    }

    /// As a PEM `PRIVATE KEY` block.
    pub fn to_pem(&self) -> String {
        pem_block("PRIVATE KEY", &self.0)
    }
}

/// The length of the DER element at the start of `bytes` (tag, length and
/// contents), if it is one that fits.
fn element_len(bytes: &[u8]) -> Option<usize> {
    let (&tag, rest) = bytes.split_first()?;
    if tag & 0x1f == 0x1f {
        return None; // multi-byte tags are not used by certificates
    }
    let (&first, rest) = rest.split_first()?;
    let (len, header) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| acc << 8 | *b as usize);
        (len, 2 + n)
    };
    let total = header.checked_add(len)?;
    (total <= bytes.len()).then_some(total)
}

/// The contents of every PEM block, each with one of `labels`.
fn pem_blocks(pem: &[u8], labels: &[&str]) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for (i, block) in Pem::iter_from_buffer(pem).enumerate() {
        let block = block.map_err(|e| anyhow::anyhow!("PEM block {}: {e}", i + 1))?;
        if !labels.contains(&block.label.as_str()) {
            bail!(
                "PEM block {} is {:?}; expected {}",
                i + 1,
                block.label,
                labels.join(" or ")
            );
        }
        out.push(block.contents);
    }
    if out.is_empty() {
        bail!(
            "no PEM block found (expected -----BEGIN {}-----)",
            labels[0]
        );
    }
    Ok(out)
}

fn pem_block(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

impl fmt::Debug for CertChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertChain({} certificates)", self.certificates().count())
    }
}

impl fmt::Debug for KeyDer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyDer(..)")
    }
}

impl Serialize for CertChain {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_pem())
    }
}

impl<'de> Deserialize<'de> for CertChain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pem = String::deserialize(d)?;
        CertChain::from_pem(pem.as_bytes()).map_err(|e| D::Error::custom(format!("{e:#}")))
    }
}

impl Serialize for KeyDer {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_pem())
    }
}

impl<'de> Deserialize<'de> for KeyDer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pem = String::deserialize(d)?;
        KeyDer::from_pem(pem.as_bytes()).map_err(|e| D::Error::custom(format!("{e:#}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str) -> Vec<u8> {
        let ca = crate::pki::new_ca(cn, 1).unwrap();
        ca.cert.to_der().unwrap()
    }

    #[test]
    fn a_chain_splits_into_the_certificates_it_was_made_of_and_round_trips_as_pem() {
        let (a, b) = (cert("a"), cert("b"));
        let chain = CertChain::from_ders(&[&a, &b]).unwrap();
        assert_eq!(chain.certificates().collect::<Vec<_>>(), [&a[..], &b[..]]);
        assert_eq!(chain.leaf(), &a[..]);
        let back = CertChain::from_pem(chain.to_pem().as_bytes()).unwrap();
        assert_eq!(back, chain);
        assert_eq!(CertChain::from_bytes(chain.bytes()).unwrap(), chain);
        let json = serde_json::to_string(&chain).unwrap();
        assert_eq!(serde_json::from_str::<CertChain>(&json).unwrap(), chain);
    }

    #[test]
    fn bytes_that_are_not_whole_der_elements_are_refused() {
        let a = cert("a");
        assert!(CertChain::from_ders(&[&a[..a.len() - 1]]).is_err());
        assert!(CertChain::from_ders::<Vec<u8>>(&[]).is_err());
        let mut extra = a.clone();
        extra.push(0);
        assert!(CertChain::from_ders(&[&extra]).is_err());
        assert!(CertChain::from_bytes(extra.into()).is_err());
        assert!(CertChain::from_bytes(Arc::from(&[][..])).is_err());
        for bad in [&[][..], &[0x30], &[0x30, 0x85, 1, 1, 1, 1, 1], &[0x1f, 0]] {
            assert_eq!(element_len(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn keys_are_kept_as_pkcs8_whatever_pem_they_came_in() {
        let key = crate::pki::new_key().unwrap();
        let pkcs8 = KeyDer::from_key(&key).unwrap();
        let traditional = key.ec_key().unwrap().private_key_to_pem().unwrap();
        assert_eq!(KeyDer::from_pem(&traditional).unwrap(), pkcs8);
        assert_eq!(KeyDer::from_pem(pkcs8.to_pem().as_bytes()).unwrap(), pkcs8);
        let err =
            KeyDer::from_pem(b"-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n")
                .unwrap_err();
        assert!(
            format!("{err:#}").contains("expected PRIVATE KEY"),
            "{err:#}"
        );
        assert!(KeyDer::from_bytes(Arc::from(&b"junk"[..])).is_err());
    }

    #[test]
    fn a_stored_crl_round_trips_and_one_that_is_not_base64_is_an_error() {
        let crl = CrlDer::new(vec![0x30, 0x03, 1, 2, 3]);
        let json = serde_json::to_string(&crl).unwrap();
        assert_eq!(serde_json::from_str::<CrlDer>(&json).unwrap(), crl);
        let err = serde_json::from_str::<CrlDer>("\"not base64!\"").unwrap_err();
        assert!(err.to_string().contains("not base64"), "{err}");
    }
}
