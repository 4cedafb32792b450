//! Certificates the control plane makes and checks: the managed and server
//! CAs, client certificates (from a CSR or with a generated key), server
//! certificates, and the checks on an uploaded (bring-your-own) CA.

use anyhow::{Context, bail};
use boring::{
    asn1::Asn1Time,
    bn::BigNum,
    ec::{EcGroup, EcKey},
    hash::MessageDigest,
    nid::Nid,
    pkey::{HasPublic, Id, PKey, PKeyRef, Private},
    x509::{
        X509, X509Builder, X509NameBuilder, X509NameRef, X509Req,
        extension::{
            AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage,
            SubjectAlternativeName, SubjectKeyIdentifier,
        },
    },
};
use x509_parser::{certificate::X509Certificate, pem::Pem, prelude::FromDer};

/// Longest validity the managed CA issues (10 years, as the reference service).
pub const MAX_VALIDITY_DAYS: u32 = 3650;

/// Longest common name, in characters (X.520's ub-common-name).
const MAX_CN_CHARS: usize = 64;

/// A random id: 32 lowercase hex digits.
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    boring::rand::rand_bytes(&mut bytes).expect("the system RNG works");
    hex(&bytes)
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256, hex.
pub fn sha256_hex(data: &[u8]) -> String {
    let digest = boring::hash::hash(MessageDigest::sha256(), data).expect("SHA-256 works");
    hex(&digest)
}

/// A CA or an issuer: certificate and private key.
pub struct Signer {
    /// The certificate.
    pub cert: X509,
    /// Its key.
    pub key: PKey<Private>,
}

impl Signer {
    /// From PEM text, as the store keeps it.
    pub fn from_pem(cert: &str, key: &str) -> anyhow::Result<Signer> {
        Ok(Signer {
            cert: X509::from_pem(cert.as_bytes()).context("the CA certificate is unreadable")?,
            key: PKey::private_key_from_pem(key.as_bytes()).context("the CA key is unreadable")?,
        })
    }
}

/// What a new certificate is for.
pub enum Usage<'a> {
    /// A CA (path length 0: it signs end-entity certificates only).
    Ca,
    /// TLS client authentication.
    Client,
    /// A TLS server for these DNS names.
    Server(&'a [String]),
}

/// A new P-256 key.
pub fn new_key() -> anyhow::Result<PKey<Private>> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    Ok(PKey::from_ec_key(EcKey::generate(&group)?)?)
}

/// The PEM (PKCS#8) of a private key.
pub fn key_pem(key: &PKeyRef<Private>) -> anyhow::Result<String> {
    Ok(String::from_utf8(key.private_key_to_pem_pkcs8()?)?)
}

/// The PEM of a certificate.
pub fn cert_pem(cert: &X509) -> anyhow::Result<String> {
    Ok(String::from_utf8(cert.to_pem()?)?)
}

/// A new self-signed CA valid for `days`.
pub fn new_ca(common_name: &str, days: u32) -> anyhow::Result<Signer> {
    let key = new_key()?;
    let name = name(common_name)?;
    let cert = build(&name, &key, (&name, &key, None), Usage::Ca, days)?;
    Ok(Signer { cert, key })
}

/// A certificate for `subject_key`, signed by `signer`, valid `days` but never
/// past the signer's own notAfter (a certificate does not outlast its issuer).
pub fn issue<T: HasPublic>(
    signer: &Signer,
    common_name: &str,
    subject_key: &PKeyRef<T>,
    usage: Usage<'_>,
    days: u32,
) -> anyhow::Result<X509> {
    let subject = name(common_name)?;
    build(
        &subject,
        subject_key,
        (signer.cert.subject_name(), &signer.key, Some(&signer.cert)),
        usage,
        days,
    )
}

/// A subject `CN=common_name`; a name longer than a CN may be (64 characters)
/// is left out of the subject (a server certificate names its host in
/// subjectAltName; `read_csr` refuses a longer CN).
fn name(common_name: &str) -> anyhow::Result<boring::x509::X509Name> {
    let mut b = X509NameBuilder::new()?;
    if common_name.chars().count() <= MAX_CN_CHARS {
        b.append_entry_by_nid(Nid::COMMONNAME, common_name)
            .with_context(|| format!("{common_name:?} cannot be a common name"))?;
    }
    Ok(b.build())
}

fn add(b: &mut X509Builder, ext: boring::x509::X509Extension) -> anyhow::Result<()> {
    Ok(b.append_extension(&ext)?)
}

fn build<T: HasPublic>(
    subject: &X509NameRef,
    subject_key: &PKeyRef<T>,
    (issuer_name, issuer_key, issuer_cert): (&X509NameRef, &PKeyRef<Private>, Option<&X509>),
    usage: Usage<'_>,
    days: u32,
) -> anyhow::Result<X509> {
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let mut serial = [0u8; 16];
    boring::rand::rand_bytes(&mut serial)?;
    serial[0] &= 0x7f; // positive
    serial[0] |= 0x10; // and 16 bytes long, so its hex never loses a leading zero
    let serial = BigNum::from_slice(&serial)?.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(subject)?;
    b.set_issuer_name(issuer_name)?;
    b.set_pubkey(subject_key)?;
    // Backdated an hour, for clocks a little behind.
    let not_before = Asn1Time::from_unix(crate::clock::now() - 3600)?;
    let not_after = Asn1Time::days_from_now(days)?;
    b.set_not_before(&not_before)?;
    match issuer_cert {
        Some(issuer) if issuer.not_after() < not_after => b.set_not_after(issuer.not_after())?,
        _ => b.set_not_after(&not_after)?,
    }
    match usage {
        Usage::Ca => {
            add(
                &mut b,
                BasicConstraints::new().critical().ca().pathlen(0).build()?,
            )?;
            add(
                &mut b,
                KeyUsage::new()
                    .critical()
                    .key_cert_sign()
                    .crl_sign()
                    .build()?,
            )?;
        }
        Usage::Client => {
            add(&mut b, BasicConstraints::new().critical().build()?)?;
            add(
                &mut b,
                KeyUsage::new().critical().digital_signature().build()?,
            )?;
            add(&mut b, ExtendedKeyUsage::new().client_auth().build()?)?;
        }
        Usage::Server(names) => {
            add(&mut b, BasicConstraints::new().critical().build()?)?;
            add(
                &mut b,
                KeyUsage::new().critical().digital_signature().build()?,
            )?;
            add(&mut b, ExtendedKeyUsage::new().server_auth().build()?)?;
            let mut san = SubjectAlternativeName::new();
            for n in names {
                // An address is an IP SAN (the admin API's certificate).
                match n.parse::<std::net::IpAddr>() {
                    Ok(_) => san.ip(n),
                    Err(_) => san.dns(n),
                };
            }
            let ext = san.build(&b.x509v3_context(issuer_cert.map(|c| &**c), None))?;
            b.append_extension(&ext)?;
        }
    }
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(&ski)?;
    if let Some(issuer) = issuer_cert {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(issuer), None))?;
        b.append_extension(&aki)?;
    }
    b.sign(issuer_key, MessageDigest::sha256())?;
    Ok(b.build())
}

/// A CSR's public key and common name, once its signature has been checked.
pub fn read_csr(pem: &str) -> anyhow::Result<(PKey<boring::pkey::Public>, String)> {
    let req = X509Req::from_pem(pem.as_bytes())
        .context("csr: not a PEM certificate request (-----BEGIN CERTIFICATE REQUEST-----)")?;
    let key = req
        .public_key()
        .context("csr: its public key is unreadable")?;
    if !req.verify(&key).unwrap_or(false) {
        bail!("csr: its signature does not verify with its own key");
    }
    match key.id() {
        Id::RSA if key.bits() < 2048 => {
            bail!(
                "csr: an RSA key of {} bits is too weak (2048 at least)",
                key.bits()
            )
        }
        Id::RSA | Id::EC => {}
        _ => bail!("csr: only RSA (2048 bits or more) and ECDSA keys are accepted"),
    }
    let cn = req
        .subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .next()
        .and_then(|e| e.data().as_utf8().ok().map(|s| s.to_string()))
        .filter(|cn| !cn.is_empty())
        .context("csr: the subject has no common name (CN)")?;
    if let Err(e) = check_common_name(&cn) {
        bail!("csr: {e}");
    }
    Ok((key, cn))
}

/// Refuses a common name longer than a CN may be (64 characters, not bytes).
pub fn check_common_name(cn: &str) -> anyhow::Result<()> {
    let chars = cn.chars().count();
    if chars > MAX_CN_CHARS {
        bail!("its common name is {chars} characters long; a CN has at most {MAX_CN_CHARS}");
    }
    Ok(())
}

/// What the listing shows of a certificate.
#[derive(Debug)]
pub struct CertInfo {
    /// Subject, as text.
    pub subject: String,
    /// Issuer, as text.
    pub issuer: String,
    /// Serial, upper-case hex.
    pub serial: String,
    /// Signature algorithm name.
    pub signature: &'static str,
    /// notBefore (Unix seconds).
    pub not_before: i64,
    /// notAfter (Unix seconds).
    pub not_after: i64,
    /// SHA-256 of the DER, hex.
    pub fingerprint_sha256: String,
}

/// Signature algorithms a bring-your-own CA may use: (OID, name).
const ALLOWED_SIGNATURES: [(&str, &str); 8] = [
    ("1.2.840.113549.1.1.5", "SHA1-RSA"),
    ("1.2.840.113549.1.1.11", "SHA256-RSA"),
    ("1.2.840.113549.1.1.12", "SHA384-RSA"),
    ("1.2.840.113549.1.1.13", "SHA512-RSA"),
    ("1.2.840.10045.4.1", "ECDSA-SHA1"),
    ("1.2.840.10045.4.3.2", "ECDSA-SHA256"),
    ("1.2.840.10045.4.3.3", "ECDSA-SHA384"),
    ("1.2.840.10045.4.3.4", "ECDSA-SHA512"),
];

/// Reads one certificate (DER).
pub fn info(der: &[u8]) -> anyhow::Result<(CertInfo, bool)> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| anyhow::anyhow!("unparsable certificate: {e}"))?;
    let oid = cert.signature_algorithm.algorithm.to_id_string();
    let signature = ALLOWED_SIGNATURES
        .iter()
        .find(|(o, _)| *o == oid)
        .map_or("other", |(_, name)| name);
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    let info = CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        serial: cert.raw_serial_as_string().replace(':', "").to_uppercase(),
        signature,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        fingerprint_sha256: sha256_hex(der),
    };
    Ok((info, is_ca))
}

/// The DNS names in a certificate's subjectAltName.
pub fn dns_names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_lowercase()),
            _ => None,
        })
        .collect()
}

/// The DER of every certificate in a PEM text, or why there is none.
pub fn pem_certificates(pem: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut ders = Vec::new();
    for (i, block) in Pem::iter_from_buffer(pem.as_bytes()).enumerate() {
        let block = block.map_err(|e| anyhow::anyhow!("PEM block {}: {e}", i + 1))?;
        if block.label != "CERTIFICATE" {
            bail!(
                "PEM block {} is {:?}; expected \"CERTIFICATE\"",
                i + 1,
                block.label
            );
        }
        ders.push(block.contents);
    }
    if ders.is_empty() {
        bail!("no PEM certificate found (expected -----BEGIN CERTIFICATE-----)");
    }
    Ok(ders)
}

/// Every certificate of a PEM text, as DER and as BoringSSL reads it; refused
/// unless both parsers read the same certificates (they differ on malformed PEM):
/// as many, and each block exactly the DER of BoringSSL's certificate (not, say,
/// a certificate followed by bytes BoringSSL ignores).
pub fn read_chain(pem: &str) -> anyhow::Result<(Vec<Vec<u8>>, Vec<X509>)> {
    let ders = pem_certificates(pem)?;
    let certs = X509::stack_from_pem(pem.as_bytes()).context("unreadable PEM")?;
    if certs.len() != ders.len() {
        bail!(
            "malformed PEM: {} certificate block(s), {} readable",
            ders.len(),
            certs.len()
        );
    }
    for (i, (der, cert)) in ders.iter().zip(&certs).enumerate() {
        if cert.to_der()? != *der {
            bail!(
                "malformed PEM: block {} is not exactly one DER certificate",
                i + 1
            );
        }
    }
    Ok((ders, certs))
}

/// Checks an uploaded CA: parsable PEM, Basic Constraints CA:TRUE, an allowed
/// signature algorithm, valid now. Returns the first certificate's details.
pub fn check_uploaded_ca(pem: &str, now: i64) -> anyhow::Result<CertInfo> {
    let mut first = None;
    let (ders, _) = read_chain(pem)?;
    for (i, der) in ders.iter().enumerate() {
        let (info, is_ca) = info(der).with_context(|| format!("certificate {}", i + 1))?;
        let which = format!("certificate {} ({})", i + 1, info.subject);
        if !is_ca {
            bail!(
                "{which}: Basic Constraints CA is not TRUE; only a CA certificate can verify \
                 client certificates"
            );
        }
        if info.signature == "other" {
            let names: Vec<&str> = ALLOWED_SIGNATURES.iter().map(|(_, n)| *n).collect();
            bail!(
                "{which}: its signature algorithm is not allowed; allowed: {}",
                names.join(", ")
            );
        }
        if info.not_after < now {
            bail!(
                "{which}: expired on {}",
                crate::clock::rfc3339(info.not_after)
            );
        }
        if info.not_before > now + 300 {
            bail!(
                "{which}: not valid before {}",
                crate::clock::rfc3339(info.not_before)
            );
        }
        first.get_or_insert(info);
    }
    if ders.len() > 1 {
        bail!(
            "{} certificates: upload one CA certificate at a time (each is its own trust \
             anchor with its own CRL)",
            ders.len()
        );
    }
    first.context("no certificate")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_client_certificates_chain_to_the_ca_and_say_what_they_are_for() {
        let ca = new_ca("Test CA", 30).unwrap();
        let key = new_key().unwrap();
        let cert = issue(&ca, "alice", &key, Usage::Client, 10).unwrap();
        assert!(cert.verify(&ca.cert.public_key().unwrap()).unwrap());
        let (info, is_ca) = info(&cert.to_der().unwrap()).unwrap();
        assert!(!is_ca);
        assert_eq!(info.signature, "ECDSA-SHA256");
        assert_eq!(info.serial.len(), 32);
        let ca_pem = cert_pem(&ca.cert).unwrap();
        assert!(check_uploaded_ca(&ca_pem, crate::clock::now()).is_ok());
        let leaf = cert_pem(&cert).unwrap();
        let err = check_uploaded_ca(&leaf, crate::clock::now()).unwrap_err();
        assert!(err.to_string().contains("CA is not TRUE"), "{err}");
    }

    #[test]
    fn bad_csrs_and_pem_are_refused_clearly() {
        assert!(
            read_csr("nonsense")
                .unwrap_err()
                .to_string()
                .contains("PEM")
        );
        let err = pem_certificates("-----BEGIN FOO-----\nAAAA\n-----END FOO-----\n").unwrap_err();
        assert!(err.to_string().contains("FOO"), "{err}");
        assert!(pem_certificates("").is_err());
    }

    /// Found by the `pem_chain` fuzz target: BoringSSL ignored bytes after the
    /// certificate's DER that x509-parser kept (so the fingerprint was not the
    /// certificate's); the block is now refused.
    #[test]
    fn a_pem_block_with_bytes_after_the_certificate_is_refused() {
        let ca = new_ca("Test CA", 30).unwrap();
        let mut der = ca.cert.to_der().unwrap();
        let pem = cert_pem(&ca.cert).unwrap();
        assert_eq!(read_chain(&pem).unwrap().0, vec![der.clone()]);
        der.extend_from_slice(b"JUNK");
        let junk = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            boring::base64::encode_block(&der)
        );
        let err = read_chain(&junk).unwrap_err();
        assert!(err.to_string().contains("not exactly one DER"), "{err}");
        assert!(check_uploaded_ca(&junk, crate::clock::now()).is_err());
    }

    /// A CSR for `cn` (UTF8String), signed by a new key.
    fn csr_for(cn: &str) -> String {
        let key = new_key().unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_nid_with_type(Nid::COMMONNAME, cn, boring::asn1::Asn1Type::UTF8STRING)
            .unwrap();
        let mut req = boring::x509::X509ReqBuilder::new().unwrap();
        req.set_subject_name(&name.build()).unwrap();
        req.set_pubkey(&key).unwrap();
        req.sign(&key, MessageDigest::sha256()).unwrap();
        String::from_utf8(req.build().to_pem().unwrap()).unwrap()
    }

    /// Found by the `csr` fuzz target: a CSR with a CN over 64 characters was
    /// accepted and its certificate issued with no CN at all; and a CN of 64
    /// characters or fewer but more bytes (not ASCII) was dropped likewise.
    #[test]
    fn a_csr_cn_is_at_most_64_characters_and_always_kept() {
        let err = read_csr(&csr_for(&"y".repeat(80))).unwrap_err();
        assert!(err.to_string().contains("at most 64"), "{err}");
        let ca = new_ca("Test CA", 30).unwrap();
        let wide = "é".repeat(40);
        let (key, cn) = read_csr(&csr_for(&wide)).unwrap();
        assert_eq!(cn, wide);
        let cert = issue(&ca, &cn, &key, Usage::Client, 10).unwrap();
        let got = cert
            .subject_name()
            .entries_by_nid(Nid::COMMONNAME)
            .next()
            .unwrap();
        assert_eq!(got.data().as_utf8().unwrap().to_string(), wide);
    }

    /// Found by the `csr` fuzz target: `issue` gave a certificate the days
    /// asked for even past the CA's notAfter; it now ends with the CA.
    #[test]
    fn an_issued_certificate_never_outlasts_its_ca() {
        let ca = new_ca("Test CA", 30).unwrap();
        let key = new_key().unwrap();
        let cert = issue(&ca, "alice", &key, Usage::Client, MAX_VALIDITY_DAYS).unwrap();
        assert!(cert.not_after() == ca.cert.not_after());
        let short = issue(&ca, "bob", &key, Usage::Client, 10).unwrap();
        assert!(short.not_after() < ca.cert.not_after());
    }
}
