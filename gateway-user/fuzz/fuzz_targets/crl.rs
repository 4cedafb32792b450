//! CRLs of bring-your-own CAs: `revocation::inspect_crl` and
//! `RevocationSet::add_crls` (parsing, verification, merging of base and delta
//! CRLs, PEM and DER).
//!
//! Byte 0, bit 0 picks the mode:
//! - raw: byte 1 sets `now` (`BASE` ± 128 months of 30 days), bytes 2–3 where
//!   the rest splits into two CRLs; checked against `crl_ca.pem`, the CA of
//!   the seed CRLs (made with openssl; its key is not kept);
//! - built (see `crl_build`): the rest describes a base and a delta CRL that
//!   the target writes and signs with a CA made once with `pki::new_ca`, under
//!   the same name as `crl_ca.pem`; `now` is `BASE`.
//!
//! Invariants:
//! - nothing panics;
//! - a CRL accepted for one CA is refused for the other (same name, other key);
//! - an accepted CRL's signature verifies with BoringSSL, `inspect_crl`'s count
//!   is its entries less those marked removeFromCRL, `add_crls` accepts it too,
//!   and the set revokes exactly its serials as x509-parser reads them (with or
//!   without leading zeros), no neighbour of them, and nothing of another issuer;
//! - an accepted base and delta give their union, less what the delta lifts
//!   (merged with `stale_ok`, which must accept them too);
//! - a built CRL is accepted only if its dates hold at `now` (nextUpdate not
//!   past, thisUpdate at most 5 minutes ahead), and always then if its serials
//!   are well-formed.
#![no_main]

mod crl_build;

use std::{collections::HashSet, sync::LazyLock};

use boring::{hash::MessageDigest, sign::Verifier, x509::X509};
use gateway::{
    config::Material,
    pki,
    tls::revocation::{RevocationSet, inspect_crl},
};
use libfuzzer_sys::fuzz_target;
use x509_parser::{
    num_bigint::BigUint, oid_registry::OID_X509_EXT_DELTA_CRL_INDICATOR, prelude::FromDer,
    revocation_list::CertificateRevocationList, x509::ReasonCode,
};

/// A fixed "now" (2026-12-02), just after the seeds were made, so that runs repeat.
const BASE: i64 = 1_796_200_000;

/// The seed CRLs' CA (DER), and a CA made here with its name (signer, DER).
static CAS: LazyLock<(Vec<u8>, pki::Signer, Vec<u8>)> = LazyLock::new(|| {
    let seed = X509::from_pem(include_bytes!("crl_ca.pem")).unwrap();
    let made = pki::new_ca("Fuzz CRL CA", 3650).unwrap();
    let name = |c: &X509| c.subject_name().to_der().unwrap();
    assert_eq!(
        name(&seed),
        name(&made.cert),
        "the two CAs must share a name"
    );
    let der = made.cert.to_der().unwrap();
    (seed.to_der().unwrap(), made, der)
});

/// An accepted CRL as read independently: delta?, revoked and lifted serials.
type Read = (bool, Vec<BigUint>, Vec<BigUint>);

fn read(der: &[u8], ca: &X509) -> Read {
    let (_, crl) = CertificateRevocationList::from_der(der).expect("x509-parser reads it");
    let md = match crl.signature_algorithm.algorithm.to_id_string().as_str() {
        "1.2.840.10045.4.3.2" => MessageDigest::sha256(),
        "1.2.840.10045.4.3.3" => MessageDigest::sha384(),
        "1.2.840.10045.4.3.4" => MessageDigest::sha512(),
        o => panic!("a CRL signed with {o} was accepted"),
    };
    let key = ca.public_key().unwrap();
    let mut v = Verifier::new(md, &key).unwrap();
    let ok = v.verify_oneshot(&crl.signature_value.data, crl.tbs_cert_list.as_ref());
    assert!(
        ok.unwrap_or(false),
        "BoringSSL: the signature does not verify"
    );
    let delta = crl
        .extensions()
        .iter()
        .any(|e| e.oid == OID_X509_EXT_DELTA_CRL_INDICATOR);
    let (mut revoked, mut lifted) = (Vec::new(), Vec::new());
    for e in crl.iter_revoked_certificates() {
        let gone = e
            .reason_code()
            .is_some_and(|(_, r)| r == ReasonCode::RemoveFromCRL);
        if gone { &mut lifted } else { &mut revoked }.push(e.serial().clone());
    }
    (delta, revoked, lifted)
}

/// What `crls` should revoke: bases then deltas, each adding, then lifting.
fn expected(crls: &[&Read]) -> HashSet<BigUint> {
    let mut set = HashSet::new();
    for (_, revoked, lifted) in crls
        .iter()
        .filter(|c| !c.0)
        .chain(crls.iter().filter(|c| c.0))
    {
        set.extend(revoked.iter().cloned());
        for s in lifted {
            set.remove(s);
        }
    }
    set
}

fn assert_set(set: &RevocationSet, issuer: &[u8], want: &HashSet<BigUint>, probes: &[BigUint]) {
    assert_eq!(set.len(), want.len(), "revoked count");
    for s in probes.iter().flat_map(|s| [s.clone(), s + 1u32]) {
        let raw = s.to_bytes_be();
        let padded = [&[0][..], &raw].concat();
        let hit = want.contains(&s);
        assert_eq!(set.contains(issuer, &raw), hit, "serial {s:x}: revoked");
        assert_eq!(
            set.contains(issuer, &padded),
            hit,
            "serial 00{s:x}: revoked"
        );
        assert!(
            !set.contains(b"\x30\x00", &raw),
            "revoked for another issuer"
        );
    }
}

/// Checks `crls` against `good` (`other` must refuse them); says which `good` accepts.
fn check(good: &[u8], other: &[u8], crls: &[Vec<u8>], now: i64) -> Vec<bool> {
    let ca = X509::from_der(good).unwrap();
    let issuer = ca.subject_name().to_der().unwrap();
    let inline = |data: &Vec<u8>| Material::inline("fuzz CRL", data.clone());
    let (mut accepted, mut verdicts) = (Vec::new(), Vec::new());
    for data in crls {
        // stale_ok: the other key is refused whatever the dates.
        let mut set = RevocationSet::default();
        let with_other = set.add_crls(other, &[inline(data)], now, true);
        assert!(with_other.is_err(), "accepted with another key");
        let got = inspect_crl(good, data, now);
        verdicts.push(got.is_ok());
        let Ok((der, _, count)) = got else { continue };
        if !data.windows(10).any(|w| w == b"-----BEGIN") {
            assert_eq!(&der, data, "the DER of a DER CRL");
        }
        let crl = read(&der, &ca);
        assert_eq!(count, crl.1.len(), "inspect_crl's count");
        set.add_crls(good, &[inline(data)], now, false)
            .expect("add_crls accepts it");
        let probes: Vec<BigUint> = crl.1.iter().chain(&crl.2).cloned().collect();
        assert_set(&set, &issuer, &expected(&[&crl]), &probes);
        accepted.push((crl, probes));
    }
    if let [(a, pa), (b, pb)] = &accepted[..] {
        // Both in force (stale_ok accepts what the strict check did): their merge.
        let mut set = RevocationSet::default();
        let both = [inline(&crls[0]), inline(&crls[1])];
        set.add_crls(good, &both, now, true).expect("both accepted");
        assert_set(&set, &issuer, &expected(&[a, b]), &[&pa[..], pb].concat());
    }
    verdicts
}

fuzz_target!(|data: &[u8]| {
    let (seed_ca, made, made_ca) = &*CAS;
    match data {
        [mode, when, hi, lo, rest @ ..] if mode & 1 == 0 => {
            let now = BASE + (i64::from(*when) - 128) * 30 * 86_400;
            let split = usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len());
            let (a, b) = rest.split_at(split);
            let crls = [a, b].into_iter().filter(|c| !c.is_empty());
            check(
                seed_ca,
                made_ca,
                &crls.map(<[u8]>::to_vec).collect::<Vec<_>>(),
                now,
            );
        }
        [mode, ..] if mode & 1 == 1 => {
            let crls = crl_build::built(made, data, BASE);
            let datas: Vec<Vec<u8>> = crls.iter().map(|c| c.data.clone()).collect();
            for (c, got) in crls.iter().zip(check(made_ca, seed_ca, &datas, BASE)) {
                assert!(!got || c.in_time, "accepted out of its dates");
                assert!(
                    got || !c.in_time || !c.well_formed,
                    "a good CRL was refused"
                );
            }
        }
        _ => {}
    }
});
