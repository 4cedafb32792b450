//! The BoringSSL pieces a hostname's policy is compiled into: its identity
//! (certificate chain and key, as DER) and session id context, set on each connection
//! by the select-certificate callback (one shared SSL context serves every
//! hostname, so a hostname costs its certificate and key, not a context); its
//! cipher list; and the trust store its client certificates are verified against.

use std::{collections::HashSet, ffi::CString};

use anyhow::{Context, bail};
use boring::{
    error::ErrorStack,
    pkey::{Id, PKey, Private},
    ssl::{AlpnError, SslContextBuilder, SslMethod, SslRef, SslVersion, select_next_proto},
    x509::{
        X509,
        store::{X509Store, X509StoreBuilder},
        verify::X509VerifyFlags,
    },
};
use foreign_types::ForeignTypeRef;

use crate::{
    config::{CertChain, KeyDer, Material},
    tls_version::TlsVersion,
};

/// ALPN protocols offered, in preference order (wire format).
const ALPN: &[u8] = b"\x02h2\x08http/1.1";

/// The most certificates a served chain may have (leaf included).
pub const MAX_CHAIN: usize = 10;

/// A certificate chain (DER, leaf first) and its private key, checked to
/// match. The chain is shared with the state it came from and handed to
/// BoringSSL as DER on each handshake, so an identity costs its bytes, not a
/// parsed certificate. An EC key (every key the gateway makes) is kept as DER
/// too and parsed per handshake (about 12 µs, 2% of a handshake); another key
/// (RSA: 90 µs to parse) is kept parsed.
pub struct Identity {
    chain: CertChain,
    key: IdentityKey,
}

enum IdentityKey {
    Der(KeyDer),
    Parsed(PKey<Private>),
}

/// Reads and checks a certificate chain and key: PEM (files) or DER (the store).
pub fn load_identity(cert: &Material, key: &Material) -> anyhow::Result<Identity> {
    let chain = match cert.shared_der() {
        Some(der) => CertChain::from_bytes(der),
        None => CertChain::from_pem(&cert.read()?),
    }
    .with_context(|| format!("{cert}: not a certificate chain"))?;
    let count = chain.certificates().count();
    if count > MAX_CHAIN {
        bail!("{cert}: {count} certificates; a chain may have at most {MAX_CHAIN}");
    }
    let mut certs = chain.certificates().map(X509::from_der);
    let leaf = certs
        .next()
        .transpose()
        .with_context(|| format!("{cert}: the first certificate is unreadable"))?
        .with_context(|| format!("{cert}: no certificate in it"))?;
    for (i, c) in certs.enumerate() {
        c.with_context(|| format!("{cert}: certificate {} is unreadable", i + 2))?;
    }
    let der = match key.shared_der() {
        Some(der) => KeyDer::from_bytes(der),
        None => KeyDer::from_pem(&key.read()?),
    }
    .with_context(|| format!("{key}: not a private key"))?;
    let parsed = PKey::private_key_from_der(der.der())?;
    if !leaf.public_key()?.public_eq(&parsed) {
        bail!("the private key does not match the certificate");
    }
    let key = if parsed.id() == Id::EC {
        IdentityKey::Der(der)
    } else {
        IdentityKey::Parsed(parsed)
    };
    Ok(Identity { chain, key })
}

impl Identity {
    /// Sets the chain and key on one connection.
    fn install(&self, ssl: &mut SslRef) -> Result<(), ErrorStack> {
        let parsed;
        let key = match &self.key {
            IdentityKey::Parsed(key) => key,
            IdentityKey::Der(der) => {
                parsed = PKey::private_key_from_der(der.der())?;
                &parsed
            }
        };
        let mut buffers = Buffers::default();
        for cert in self.chain.certificates().take(MAX_CHAIN) {
            buffers.push(cert)?;
        }
        // SAFETY: a live SSL handle, `len` live buffers and a live key; BoringSSL
        // takes its own references to each (ours are released by `buffers`).
        let ok = unsafe {
            boring_sys::SSL_set_chain_and_key(
                ssl.as_ptr(),
                buffers.ptrs.as_ptr(),
                buffers.len,
                key.as_ptr(),
                std::ptr::null(),
            )
        };
        if ok != 1 {
            return Err(ErrorStack::get());
        }
        Ok(())
    }
}

/// BoringSSL buffers holding one chain's DER, released when dropped.
struct Buffers {
    ptrs: [*mut boring_sys::CRYPTO_BUFFER; MAX_CHAIN],
    len: usize,
}

impl Default for Buffers {
    fn default() -> Self {
        Buffers {
            ptrs: [std::ptr::null_mut(); MAX_CHAIN],
            len: 0,
        }
    }
}

impl Buffers {
    fn push(&mut self, der: &[u8]) -> Result<(), ErrorStack> {
        // SAFETY: `der` is live for the call; BoringSSL copies it.
        let buffer =
            unsafe { boring_sys::CRYPTO_BUFFER_new(der.as_ptr(), der.len(), std::ptr::null_mut()) };
        if buffer.is_null() {
            return Err(ErrorStack::get());
        }
        self.ptrs[self.len] = buffer;
        self.len += 1;
        Ok(())
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        for &buffer in &self.ptrs[..self.len] {
            // SAFETY: each was made by `CRYPTO_BUFFER_new` and is released once.
            unsafe { boring_sys::CRYPTO_BUFFER_free(buffer) };
        }
    }
}

/// A session id context unique to the hostname and view (`exact`, `wildcard`,
/// or a zone entry's), so a session never resumes on another hostname (each
/// connection's adds its policy: see `TlsSnapshot::session_context`).
pub fn session_id_context(name: &str, view: &str) -> [u8; 32] {
    let digest = boring::hash::hash(
        boring::hash::MessageDigest::sha256(),
        format!("{view}\0{name}").as_bytes(),
    )
    .expect("SHA-256 of a few bytes");
    let mut sid = [0; 32];
    sid.copy_from_slice(&digest[..32]);
    sid
}

/// Puts an identity (if any) on one connection.
pub fn install(ssl: &mut SslRef, identity: Option<&Identity>) -> Result<(), ErrorStack> {
    match identity {
        Some(id) => id.install(ssl),
        None => Ok(()),
    }
}

/// Answers ALPN with the first protocol of ours the client offers, or
/// `acme-tls/1` to a TLS-ALPN-01 validator (whose hello the select-certificate
/// callback let through only for a pending challenge).
pub fn set_alpn(b: &mut SslContextBuilder) {
    b.set_alpn_select_callback(|_, client| {
        select_next_proto(super::challenge::ACME_TLS_ALPN_WIRE, client)
            .or_else(|| select_next_proto(ALPN, client))
            .ok_or(AlpnError::NOACK)
    });
}

/// A cipher list BoringSSL accepts (checked now, so a typo is refused with the
/// configuration, not per handshake); none when `names` is empty.
pub fn cipher_list(names: &[String]) -> anyhow::Result<Option<CString>> {
    if names.is_empty() {
        return Ok(None);
    }
    let list = names.join(":");
    let mut probe = SslContextBuilder::new(SslMethod::tls())?;
    probe
        .set_strict_cipher_list(&list)
        .with_context(|| format!("cipher list {list:?} names a cipher BoringSSL does not know"))?;
    Ok(Some(CString::new(list)?))
}

/// A trust store of exactly `cas`, for client authentication only, and the
/// SHA-256 of each CA certificate (the anchors a verified chain may end at).
pub fn trust_store<'a>(
    cas: impl IntoIterator<Item = &'a X509>,
) -> anyhow::Result<(X509Store, HashSet<Vec<u8>>)> {
    let mut store = X509StoreBuilder::new()?;
    // A CA may be an intermediate: it is a trust anchor all the same.
    store.set_flags(X509VerifyFlags::PARTIAL_CHAIN);
    // Only certificates fit for client authentication (extended key usage).
    // SAFETY: a live parameter object owned by the builder; the constant is BoringSSL's.
    let ok = unsafe {
        boring_sys::X509_VERIFY_PARAM_set_purpose(
            store.verify_param_mut().as_ptr(),
            boring_sys::X509_PURPOSE_SSL_CLIENT,
        )
    };
    if ok != 1 {
        bail!("cannot restrict verification to client certificates");
    }
    let mut anchors = HashSet::new();
    for cert in cas {
        store.add_cert(cert.clone())?;
        anchors.insert(cert.digest(boring::hash::MessageDigest::sha256())?.to_vec());
    }
    Ok((store.build(), anchors))
}

/// BoringSSL's name for a TLS version.
pub fn ssl_version(v: TlsVersion) -> SslVersion {
    match v {
        TlsVersion::Tls10 => SslVersion::TLS1,
        TlsVersion::Tls11 => SslVersion::TLS1_1,
        TlsVersion::Tls12 => SslVersion::TLS1_2,
        TlsVersion::Tls13 => SslVersion::TLS1_3,
    }
}
