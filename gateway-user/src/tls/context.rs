//! The BoringSSL pieces a hostname's policy is compiled into: its identity
//! (certificate chain and key) and session id context, set on each connection
//! by the select-certificate callback (one shared SSL context serves every
//! hostname, so a hostname costs its certificate and key, not a context); its
//! cipher list; and the trust store its client certificates are verified against.

use std::{collections::HashSet, ffi::CString};

use anyhow::{Context, bail};
use boring::{
    error::ErrorStack,
    pkey::{PKey, Private},
    ssl::{AlpnError, SslContextBuilder, SslMethod, SslRef, SslVersion, select_next_proto},
    x509::{
        X509,
        store::{X509Store, X509StoreBuilder},
        verify::X509VerifyFlags,
    },
};
use foreign_types::ForeignTypeRef;

use crate::{config::Material, tls_version::TlsVersion};

/// ALPN protocols offered, in preference order (wire format).
const ALPN: &[u8] = b"\x02h2\x08http/1.1";

/// A certificate chain (leaf first) and its private key, checked to match.
pub struct Identity {
    chain: Vec<X509>,
    key: PKey<Private>,
}

/// Reads and parses a certificate chain and key.
pub fn load_identity(cert: &Material, key: &Material) -> anyhow::Result<Identity> {
    let chain = X509::stack_from_pem(&cert.read()?)
        .with_context(|| format!("{cert}: not a PEM certificate chain"))?;
    let Some(leaf) = chain.first() else {
        bail!("{cert}: no certificate in it");
    };
    let key = PKey::private_key_from_pem(&key.read()?)
        .with_context(|| format!("{key}: not a PEM private key"))?;
    if !leaf.public_key()?.public_eq(&key) {
        bail!("the private key does not match the certificate");
    }
    Ok(Identity { chain, key })
}

/// A session id context unique to the hostname and view (`exact`, `wildcard`,
/// or a zone entry's), so a session never resumes on another hostname.
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

/// Puts an identity (if any) and a session id context on one connection.
pub fn install(
    ssl: &mut SslRef,
    identity: Option<&Identity>,
    sid: &[u8; 32],
) -> Result<(), ErrorStack> {
    if let Some(id) = identity {
        ssl.set_certificate(&id.chain[0])?;
        for extra in &id.chain[1..] {
            ssl.add_chain_cert(extra)?;
        }
        ssl.set_private_key(&id.key)?;
    }
    // SAFETY: a live SSL handle, and 32 bytes (the maximum a context may have).
    let ok = unsafe { boring_sys::SSL_set_session_id_context(ssl.as_ptr(), sid.as_ptr(), 32) };
    if ok != 1 {
        return Err(ErrorStack::get());
    }
    Ok(())
}

/// Answers ALPN with the first protocol of ours the client offers.
pub fn set_alpn(b: &mut SslContextBuilder) {
    b.set_alpn_select_callback(|_, client| select_next_proto(ALPN, client).ok_or(AlpnError::NOACK));
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
