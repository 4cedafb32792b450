//! The client certificate as the rules and the origin see it: every
//! `cf.tls_client_auth.*` value, in the reference service's formats.
//!
//! DNs come in three forms: plain (RFC 2253 order, no escaping), RFC 2253
//! (escaped) and legacy (OpenSSL's `/C=US/O=…/CN=…`). Serials and key
//! identifiers are upper-case hex, fingerprints lower-case hex, dates like
//! `Dec 22 19:39:00 2018 GMT`, and the RFC 9440 forms are `:base64:` byte
//! sequences.

use base64::{Engine, engine::general_purpose::STANDARD};

use crate::rules::fields::CertDetails;
use boring::hash::{MessageDigest, hash};
use x509_parser::{
    certificate::X509Certificate,
    extensions::ParsedExtension,
    objects::{oid_registry, oid2sn},
    prelude::FromDer,
    time::ASN1Time,
    x509::{AttributeTypeAndValue, X509Name},
};

/// Largest RFC 9440 value forwarded; larger ones are flagged `*_too_large` and left empty.
pub const RFC9440_MAX: usize = 10 * 1024;

impl CertDetails {
    /// Formats a certificate given as DER, with the chain the client sent (DER,
    /// without the leaf) and the DER of the issuing CA when verification found it.
    pub fn from_der(
        leaf: &[u8],
        chain: &[Vec<u8>],
        issuer: Option<&[u8]>,
    ) -> Result<CertDetails, String> {
        let (_, cert) =
            X509Certificate::from_der(leaf).map_err(|e| format!("unparsable certificate: {e}"))?;
        let issuer_serial = issuer
            .and_then(|der| X509Certificate::from_der(der).ok())
            .map(|(_, ca)| upper_hex(ca.raw_serial()))
            .unwrap_or_default();
        let mut ski = String::new();
        let mut issuer_ski = String::new();
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => ski = upper_hex(id.0),
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    if let Some(id) = &aki.key_identifier {
                        issuer_ski = upper_hex(id.0);
                    }
                }
                _ => {}
            }
        }
        let leaf_seq = byte_sequence(leaf);
        let chain_list = chain
            .iter()
            .map(|c| byte_sequence(c))
            .collect::<Vec<_>>()
            .join(", ");
        let digest = |md| {
            hash(md, leaf)
                .map(|d| lower_hex(&d))
                .map_err(|e| e.to_string())
        };
        Ok(CertDetails {
            subject_dn: dn_rfc2253(cert.subject(), false),
            subject_dn_rfc2253: dn_rfc2253(cert.subject(), true),
            subject_dn_legacy: dn_legacy(cert.subject()),
            issuer_dn: dn_rfc2253(cert.issuer(), false),
            issuer_dn_rfc2253: dn_rfc2253(cert.issuer(), true),
            issuer_dn_legacy: dn_legacy(cert.issuer()),
            serial: upper_hex(cert.raw_serial()),
            issuer_serial,
            fingerprint_sha256: digest(MessageDigest::sha256())?,
            fingerprint_sha1: digest(MessageDigest::sha1())?,
            not_before: openssl_time(&cert.validity().not_before),
            not_after: openssl_time(&cert.validity().not_after),
            ski,
            issuer_ski,
            der_base64: STANDARD.encode(leaf),
            rfc9440_too_large: leaf_seq.len() > RFC9440_MAX,
            rfc9440: if leaf_seq.len() > RFC9440_MAX {
                String::new()
            } else {
                leaf_seq
            },
            chain_rfc9440_too_large: chain_list.len() > RFC9440_MAX,
            chain_rfc9440: if chain_list.len() > RFC9440_MAX {
                String::new()
            } else {
                chain_list
            },
        })
    }
}

/// Upper-case hex of a big-endian integer, without leading zero bytes.
pub fn upper_hex(bytes: &[u8]) -> String {
    let trimmed = match bytes.iter().position(|&b| b != 0) {
        Some(i) => &bytes[i..],
        None => &bytes[bytes.len().saturating_sub(1)..],
    };
    trimmed.iter().map(|b| format!("{b:02X}")).collect()
}

fn lower_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An RFC 8941 byte sequence: `:base64:`.
fn byte_sequence(der: &[u8]) -> String {
    format!(":{}:", STANDARD.encode(der))
}

/// OpenSSL's short names for the attributes DNs use.
const SHORT_NAMES: [(&str, &str); 16] = [
    ("2.5.4.3", "CN"),
    ("2.5.4.4", "SN"),
    ("2.5.4.5", "serialNumber"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.9", "street"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.12", "title"),
    ("2.5.4.17", "postalCode"),
    ("2.5.4.42", "GN"),
    ("2.5.4.46", "dnQualifier"),
    ("0.9.2342.19200300.100.1.1", "UID"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("1.2.840.113549.1.9.1", "emailAddress"),
];

fn attribute(atv: &AttributeTypeAndValue<'_>, escape: bool) -> String {
    let oid = atv.attr_type().to_id_string();
    let name = SHORT_NAMES
        .iter()
        .find(|(id, _)| *id == oid)
        .map(|(_, sn)| sn.to_string())
        .or_else(|| {
            oid2sn(atv.attr_type(), oid_registry())
                .ok()
                .map(str::to_string)
        })
        .unwrap_or(oid);
    let value = match atv.as_str() {
        Ok(s) if escape => escape_rfc2253(s),
        Ok(s) => s.to_string(),
        Err(_) => format!("#{}", lower_hex(atv.attr_value().data)),
    };
    format!("{name}={value}")
}

/// RFC 2253 order (last RDN first), `,` between RDNs and `+` inside one.
fn dn_rfc2253(name: &X509Name<'_>, escape: bool) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|a| attribute(a, escape))
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

/// OpenSSL's legacy one-line form: `/C=US/O=Example/CN=name`.
fn dn_legacy(name: &X509Name<'_>) -> String {
    name.iter_rdn()
        .map(|rdn| {
            format!(
                "/{}",
                rdn.iter()
                    .map(|a| attribute(a, false))
                    .collect::<Vec<_>>()
                    .join("+")
            )
        })
        .collect()
}

fn escape_rfc2253(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `Dec 22 19:39:00 2018 GMT`, as OpenSSL prints certificate dates.
fn openssl_time(t: &ASN1Time) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let dt = t.to_datetime();
    format!(
        "{} {:2} {:02}:{:02}:{:02} {} GMT",
        MONTHS[(dt.month() as usize).saturating_sub(1) % 12],
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.year()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_forms() {
        assert_eq!(upper_hex(&[0x00, 0x0a, 0xbc]), "0ABC");
        assert_eq!(upper_hex(&[0x00]), "00");
        assert_eq!(lower_hex(&[0xAB, 0x01]), "ab01");
    }

    #[test]
    fn rfc2253_escaping() {
        assert_eq!(escape_rfc2253("Acme, Inc."), "Acme\\, Inc.");
        assert_eq!(escape_rfc2253("#1 a+b "), "\\#1 a\\+b\\ ");
    }
}
