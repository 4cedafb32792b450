//! ACME TLS-ALPN-01 (RFC 8737) answers: the pending challenges by hostname,
//! each with its challenge certificate (self-signed, the hostname its only
//! subjectAltName, a critical `acmeIdentifier` extension holding the SHA-256
//! of the key authorization). A ClientHello offering ALPN `acme-tls/1` gets
//! that certificate and nothing else, or is refused when the hostname has no
//! pending challenge (see `acceptor::select`).

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, RwLock},
};

use boring::{
    asn1::Asn1Time,
    bn::BigNum,
    ec::{EcGroup, EcKey},
    hash::MessageDigest,
    nid::Nid,
    pkey::{PKey, Private},
    ssl::{ClientHello, ExtensionType, SslRef},
    x509::{X509, X509Builder, X509Extension, X509NameBuilder, extension::SubjectAlternativeName},
};

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737 §6.2).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// The same, as an ALPN list (wire format).
pub const ACME_TLS_ALPN_WIRE: &[u8] = b"\x0aacme-tls/1";
/// The `id-pe-acmeIdentifier` OID (RFC 8737 §6.1).
const ACME_IDENTIFIER_OID: &str = "1.3.6.1.5.5.7.1.31";

/// A challenge certificate and its key.
pub struct ChallengeCert {
    /// The self-signed certificate.
    pub cert: X509,
    /// Its key.
    pub key: PKey<Private>,
}

static PENDING: LazyLock<RwLock<HashMap<String, Arc<ChallengeCert>>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));

/// Makes the challenge certificate for `host` and answers TLS-ALPN-01
/// hellos for it with it until [`clear`].
pub fn set(host: &str, key_authorization: &str) -> anyhow::Result<()> {
    let cert = Arc::new(challenge_cert(host, key_authorization)?);
    let mut pending = PENDING.write().unwrap_or_else(|e| e.into_inner());
    pending.insert(host.to_ascii_lowercase(), cert);
    Ok(())
}

/// Stops answering TLS-ALPN-01 hellos for `host`.
pub fn clear(host: &str) {
    let mut pending = PENDING.write().unwrap_or_else(|e| e.into_inner());
    pending.remove(&host.to_ascii_lowercase());
}

/// The pending challenge certificate of `host` (lowercase), if any.
pub fn pending(host: &str) -> Option<Arc<ChallengeCert>> {
    let pending = PENDING.read().unwrap_or_else(|e| e.into_inner());
    pending.get(host).cloned()
}

/// Whether the hello offers ALPN `acme-tls/1`.
pub fn offers_acme_tls(hello: &ClientHello<'_>) -> bool {
    hello
        .get_extension(ExtensionType::APPLICATION_LAYER_PROTOCOL_NEGOTIATION)
        .is_some_and(|ext| alpn_list_has(ext, ACME_TLS_ALPN))
}

/// Whether an ALPN extension body (a 2-byte length, then length-prefixed
/// names) names `proto`.
fn alpn_list_has(ext: &[u8], proto: &[u8]) -> bool {
    let Some(mut rest) = ext.get(2..) else {
        return false;
    };
    while let Some((&len, tail)) = rest.split_first() {
        let Some(name) = tail.get(..usize::from(len)) else {
            return false;
        };
        if name == proto {
            return true;
        }
        rest = &tail[usize::from(len)..];
    }
    false
}

/// Puts a challenge certificate on a connection.
pub fn install(ssl: &mut SslRef, cert: &ChallengeCert) -> Result<(), boring::error::ErrorStack> {
    ssl.set_certificate(&cert.cert)?;
    ssl.set_private_key(&cert.key)
}

/// The RFC 8737 challenge certificate for `host`.
pub fn challenge_cert(host: &str, key_authorization: &str) -> anyhow::Result<ChallengeCert> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    let key = PKey::from_ec_key(EcKey::generate(&group)?)?;
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, "ACME TLS-ALPN-01 challenge")?;
    let name = name.build();
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let mut serial = [0u8; 16];
    boring::rand::rand_bytes(&mut serial)?;
    serial[0] &= 0x7f;
    let serial = BigNum::from_slice(&serial)?.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(&key)?;
    let not_before = Asn1Time::from_unix(crate::clock::now() - 3600)?;
    let not_after = Asn1Time::days_from_now(7)?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    let san = SubjectAlternativeName::new()
        .dns(host)
        .build(&b.x509v3_context(None, None))?;
    b.append_extension(&san)?;
    let digest = boring::hash::hash(MessageDigest::sha256(), key_authorization.as_bytes())?;
    // The extension's value is the DER of an OCTET STRING of the digest.
    let value = format!("critical,DER:04:20:{}", hex_colons(&digest));
    let ext = X509Extension::new(None, None, ACME_IDENTIFIER_OID, &value)?;
    b.append_extension(&ext)?;
    b.sign(&key, MessageDigest::sha256())?;
    Ok(ChallengeCert {
        cert: b.build(),
        key,
    })
}

fn hex_colons(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_lists_are_read() {
        assert!(alpn_list_has(b"\x00\x0b\x0aacme-tls/1", ACME_TLS_ALPN));
        assert!(alpn_list_has(
            b"\x00\x0e\x02h2\x0aacme-tls/1",
            ACME_TLS_ALPN
        ));
        assert!(!alpn_list_has(b"\x00\x03\x02h2", ACME_TLS_ALPN));
        assert!(!alpn_list_has(b"\x00\x0b\x0aacme-tls", ACME_TLS_ALPN));
    }

    #[test]
    fn the_challenge_certificate_carries_the_digest() {
        let c = challenge_cert("a.example.com", "token.thumb").unwrap();
        let der = c.cert.to_der().unwrap();
        let digest = boring::hash::hash(MessageDigest::sha256(), b"token.thumb").unwrap();
        let mut expected = vec![0x04, 0x20];
        expected.extend_from_slice(&digest);
        assert!(der.windows(expected.len()).any(|w| w == expected));
        assert_eq!(crate::pki::dns_names(&der), vec!["a.example.com"]);
    }
}
