//! PEM certificate chains as the control API receives them (hostname
//! certificates, uploaded CAs): `pki::pem_certificates` (x509-parser's PEM
//! reader) and `pki::read_chain` (that reader and BoringSSL's, which must agree)
//! on arbitrary text.
//!
//! Invariants:
//! - neither function panics;
//! - `pem_certificates`, when it succeeds, returns at least one block;
//! - `read_chain`, when it succeeds, returns as many BoringSSL certificates as
//!   PEM blocks, the same blocks as `pem_certificates`, and each certificate
//!   re-encodes to exactly its block's DER (both parsers read the same
//!   certificates, the project's rule);
//! - when both readers succeed and read the same DER, `read_chain` accepts;
//! - an accepted chain, re-encoded as PEM, reads back to the same DER.
#![no_main]

use boring::x509::X509;
use gateway::pki;
use libfuzzer_sys::fuzz_target;

/// The DERs as PEM `CERTIFICATE` blocks, 64 base64 characters a line.
fn to_pem(ders: &[Vec<u8>]) -> String {
    let mut out = String::new();
    for der in ders {
        let b64 = boring::base64::encode_block(der);
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let blocks = pki::pem_certificates(&text);
    if let Ok(ders) = &blocks {
        assert!(!ders.is_empty(), "pem_certificates accepted no certificate");
    }
    let chain = pki::read_chain(&text);
    match &chain {
        Ok((ders, certs)) => {
            assert_eq!(
                ders.len(),
                certs.len(),
                "the two readers disagree on the count"
            );
            assert!(!ders.is_empty(), "read_chain accepted no certificate");
            let blocks = blocks
                .as_ref()
                .expect("read_chain accepted what pem_certificates refused");
            assert_eq!(
                blocks, ders,
                "read_chain's blocks are not pem_certificates'"
            );
            for (i, (der, cert)) in ders.iter().zip(certs).enumerate() {
                let again = cert.to_der().expect("an accepted certificate re-encodes");
                assert_eq!(
                    &again, der,
                    "certificate {i}: BoringSSL read other bytes than the PEM block"
                );
            }
            let pem = to_pem(ders);
            let (ders2, _) = pki::read_chain(&pem).expect("a re-encoded chain reads back");
            assert_eq!(&ders2, ders, "the re-encoded chain reads back differently");
        }
        Err(_) => {
            // Refused: then the readers must really disagree (or one failed).
            if let (Ok(ders), Ok(certs)) = (&blocks, X509::stack_from_pem(text.as_bytes())) {
                let same = ders.len() == certs.len()
                    && ders
                        .iter()
                        .zip(&certs)
                        .all(|(d, c)| c.to_der().is_ok_and(|e| &e == d));
                assert!(!same, "read_chain refused a text both readers read alike");
            }
        }
    }
});
