//! Client certificates from a CSR: `pki::read_csr` on arbitrary PEM, then
//! `pki::issue` of a client certificate from an accepted CSR, by a CA made
//! once with `pki::new_ca` (valid `CA_DAYS`).
//!
//! Input: byte 0 = mode (bit 0) and validity (the other bits, 1 to 3 650 days);
//! - raw mode: the rest is the CSR's PEM;
//! - built mode: byte 1 picks a key (RSA 2048, RSA 1024, P-256, P-384,
//!   Ed25519), byte 2 the digest, byte 3 the CN's string type (or no CN), the
//!   rest is the CN; the target builds and signs that CSR.
//!
//! Invariants:
//! - nothing panics;
//! - a built CSR is accepted exactly when its key is RSA of 2048 bits or more
//!   or ECDSA, and it has a CN of 1 to 64 characters;
//! - an accepted CSR's certificate is issued, verifies with the CA's key,
//!   names the CA as issuer, carries the CSR's public key and CN, is a client
//!   certificate (CA:FALSE), and never outlasts the CA.
#![no_main]

use std::sync::OnceLock;

use boring::{
    asn1::Asn1Type,
    hash::MessageDigest,
    nid::Nid,
    pkey::{Id, PKey, Private},
    rsa::Rsa,
    x509::{X509NameBuilder, X509ReqBuilder},
};
use gateway::pki::{self, Signer, Usage};
use libfuzzer_sys::fuzz_target;
use x509_parser::{certificate::X509Certificate, prelude::FromDer};

/// How long the CA is valid, in days.
const CA_DAYS: u32 = 365;

fn ca() -> &'static Signer {
    static CA: OnceLock<Signer> = OnceLock::new();
    CA.get_or_init(|| pki::new_ca("Fuzz CSR CA", CA_DAYS).expect("a CA"))
}

/// The keys a built CSR may have, and whether the gateway accepts each.
fn keys() -> &'static [(PKey<Private>, bool)] {
    static KEYS: OnceLock<Vec<(PKey<Private>, bool)>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let rsa = |bits| PKey::from_rsa(Rsa::generate(bits).unwrap()).unwrap();
        let ec = |nid| {
            let group = boring::ec::EcGroup::from_curve_name(nid).unwrap();
            PKey::from_ec_key(boring::ec::EcKey::generate(&group).unwrap()).unwrap()
        };
        vec![
            (rsa(2048), true),
            (rsa(1024), false),
            (ec(Nid::X9_62_PRIME256V1), true),
            (ec(Nid::SECP384R1), true),
            (PKey::generate(Id::ED25519).unwrap(), false),
        ]
    })
}

const TYPES: [Asn1Type; 6] = [
    Asn1Type::UTF8STRING,
    Asn1Type::PRINTABLESTRING,
    Asn1Type::IA5STRING,
    Asn1Type::T61STRING,
    Asn1Type::BMPSTRING,
    Asn1Type::UNIVERSALSTRING,
];

/// A CSR built from the input, and whether it should be accepted.
fn built(spec: &[u8]) -> Option<(String, bool)> {
    let [k, d, t, cn @ ..] = spec else {
        return None;
    };
    let (key, key_ok) = &keys()[usize::from(*k) % keys().len()];
    let cn = String::from_utf8_lossy(cn);
    let mut name = X509NameBuilder::new().unwrap();
    let with_cn = usize::from(*t) < TYPES.len();
    if with_cn {
        name.append_entry_by_nid_with_type(Nid::COMMONNAME, &cn, TYPES[usize::from(*t)])
            .ok()?;
    }
    let name = name.build();
    let has_cn = with_cn
        && name.entries().next().is_some_and(|e| {
            e.data()
                .as_utf8()
                .is_ok_and(|s| (1..=64).contains(&s.chars().count()))
        });
    let digest = match (key.id(), d % 3) {
        // Ed25519 signs without a separate digest: a null `EVP_MD`.
        (Id::ED25519, _) => unsafe { MessageDigest::from_ptr(std::ptr::null()) },
        (_, 0) => MessageDigest::sha256(),
        (_, 1) => MessageDigest::sha384(),
        _ => MessageDigest::sha1(),
    };
    let mut req = X509ReqBuilder::new().unwrap();
    req.set_subject_name(&name).unwrap();
    req.set_pubkey(key).unwrap();
    req.sign(key, digest).unwrap();
    let pem = String::from_utf8(req.build().to_pem().unwrap()).unwrap();
    Some((pem, *key_ok && has_cn))
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let days = (1 + u32::from(head >> 1) * 29).min(pki::MAX_VALIDITY_DAYS);
    let (pem, expected) = if head & 1 == 0 {
        (String::from_utf8_lossy(rest).into_owned(), None)
    } else {
        let Some((pem, ok)) = built(rest) else { return };
        (pem, Some(ok))
    };
    let read = pki::read_csr(&pem);
    if let Some(ok) = expected {
        assert_eq!(read.is_ok(), ok, "built CSR: {:?}", read.as_ref().err());
    }
    let Ok((key, cn)) = read else { return };
    let chars = cn.chars().count();
    assert!(
        (1..=64).contains(&chars),
        "an accepted CSR with a CN of {chars} characters"
    );
    assert!(
        matches!(key.id(), Id::EC) || (key.id() == Id::RSA && key.bits() >= 2048),
        "an accepted CSR with a {:?} key of {} bits",
        key.id(),
        key.bits()
    );

    let ca = ca();
    let cert = pki::issue(ca, &cn, &key, Usage::Client, days).expect("issued");
    let ca_key = ca.cert.public_key().unwrap();
    assert!(
        cert.verify(&ca_key).unwrap(),
        "does not verify with the CA's key"
    );
    let issuer = cert.issuer_name().to_der().unwrap();
    assert_eq!(issuer, ca.cert.subject_name().to_der().unwrap(), "issuer");
    assert!(
        cert.public_key().unwrap().public_eq(&key),
        "not the CSR's key"
    );
    assert!(
        cert.not_after() <= ca.cert.not_after(),
        "a {days}-day certificate outlasts the {CA_DAYS}-day CA"
    );
    let got = cert.subject_name().entries_by_nid(Nid::COMMONNAME).next();
    let got = got
        .and_then(|e| e.data().as_utf8().ok())
        .map(|s| s.to_string());
    assert_eq!(got.as_deref(), Some(cn.as_str()), "the certificate's CN");

    let der = cert.to_der().unwrap();
    let (_, parsed) = X509Certificate::from_der(&der).expect("x509-parser reads it");
    let bc = parsed.basic_constraints().expect("one Basic Constraints");
    assert!(bc.is_some_and(|bc| !bc.value.ca), "not CA:FALSE");
    let eku = parsed
        .extended_key_usage()
        .expect("one EKU")
        .expect("an EKU");
    assert!(eku.value.client_auth, "not for client authentication");
});
