//! Bring-your-own CA uploads: `pki::check_uploaded_ca(pem, now)` on arbitrary
//! PEM (seeds: RSA and ECDSA CAs signed with SHA-1/256/384/512, CA:FALSE,
//! expired, not yet valid, Ed25519, RSA-PSS, chains).
//!
//! Input: one byte choosing `now` (`BASE` ± 128 months of 30 days), then the PEM.
//!
//! Invariants:
//! - it never panics;
//! - it accepts exactly when the text holds one certificate that both PEM
//!   readers read alike and that, parsed independently with x509-parser, has
//!   Basic Constraints CA:TRUE, an allowed signature algorithm, and is valid at
//!   `now` (notBefore up to 5 minutes ahead tolerated);
//! - BoringSSL agrees that an accepted CA is valid at `now`;
//! - the returned details are the certificate's: subject, issuer, serial,
//!   signature name, dates, and the SHA-256 of its DER.
#![no_main]

use boring::{asn1::Asn1Time, hash::MessageDigest};
use gateway::pki;
use libfuzzer_sys::fuzz_target;
use x509_parser::{certificate::X509Certificate, prelude::FromDer};

/// A fixed "now" (2026-12-02), just after the seeds were made, so that runs repeat.
const BASE: i64 = 1_796_200_000;
/// Clock skew tolerated on notBefore.
const SKEW: i64 = 300;

/// The signature algorithms a CA may use, by OID, and the names shown for them.
const ALLOWED: [(&str, &str); 8] = [
    ("1.2.840.113549.1.1.5", "SHA1-RSA"),
    ("1.2.840.113549.1.1.11", "SHA256-RSA"),
    ("1.2.840.113549.1.1.12", "SHA384-RSA"),
    ("1.2.840.113549.1.1.13", "SHA512-RSA"),
    ("1.2.840.10045.4.1", "ECDSA-SHA1"),
    ("1.2.840.10045.4.3.2", "ECDSA-SHA256"),
    ("1.2.840.10045.4.3.3", "ECDSA-SHA384"),
    ("1.2.840.10045.4.3.4", "ECDSA-SHA512"),
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&when, pem)) = data.split_first() else {
        return;
    };
    let now = BASE + (i64::from(when) - 128) * 30 * 86_400;
    let pem = String::from_utf8_lossy(pem);
    let result = pki::check_uploaded_ca(&pem, now);

    // The verdict, worked out independently.
    let chain = pki::read_chain(&pem)
        .ok()
        .filter(|(ders, _)| ders.len() == 1);
    let der = chain.as_ref().map(|(ders, _)| ders[0].clone());
    let parsed = der
        .as_deref()
        .and_then(|d| X509Certificate::from_der(d).ok());
    let expected = parsed.as_ref().is_some_and(|(_, c)| {
        let oid = c.signature_algorithm.algorithm.to_id_string();
        let is_ca = matches!(c.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
        let v = c.validity();
        is_ca
            && ALLOWED.iter().any(|(o, _)| *o == oid)
            && v.not_before.timestamp() <= now + SKEW
            && v.not_after.timestamp() >= now
    });
    assert_eq!(
        result.is_ok(),
        expected,
        "check_uploaded_ca: {:?}",
        result
            .as_ref()
            .map(|i| &i.subject)
            .map_err(|e| format!("{e:#}"))
    );
    let Ok(info) = result else {
        return;
    };
    let der = der.as_deref().unwrap();
    let ((rest, cert), (_, boring_certs)) = (parsed.unwrap(), chain.unwrap());
    assert!(rest.is_empty(), "bytes after an accepted CA's DER");
    let oid = cert.signature_algorithm.algorithm.to_id_string();
    let name = ALLOWED.iter().find(|(o, _)| *o == oid).map(|(_, n)| *n);
    assert_eq!(Some(info.signature), name, "signature name");
    assert_eq!(info.subject, cert.subject().to_string());
    assert_eq!(info.issuer, cert.issuer().to_string());
    let serial = hex(cert.raw_serial()).to_uppercase();
    assert_eq!(info.serial, serial, "serial");
    assert_eq!(info.not_before, cert.validity().not_before.timestamp());
    assert_eq!(info.not_after, cert.validity().not_after.timestamp());
    let digest = boring::hash::hash(MessageDigest::sha256(), der).unwrap();
    assert_eq!(info.fingerprint_sha256, hex(&digest), "fingerprint");

    // BoringSSL, which verifies client certificates against it, agrees on the dates.
    let ca = &boring_certs[0];
    let (at, ahead) = (
        Asn1Time::from_unix(now).unwrap(),
        Asn1Time::from_unix(now + SKEW).unwrap(),
    );
    assert!(*ca.not_after() >= at, "BoringSSL: expired at now");
    assert!(*ca.not_before() <= ahead, "BoringSSL: not yet valid at now");
});
