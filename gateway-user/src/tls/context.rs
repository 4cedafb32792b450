//! The BoringSSL pieces a hostname's policy is compiled into: its identity
//! (certificate chain and key), its SSL context, its cipher list and the trust
//! store its client certificates are verified against.

use std::{collections::HashSet, ffi::CString};

use anyhow::{Context, bail};
use boring::{
    pkey::{PKey, Private},
    ssl::{AlpnError, SslContext, SslContextBuilder, SslMethod, SslVersion, select_next_proto},
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

/// A certificate chain (leaf first) and its private key.
pub type Identity = (Vec<X509>, PKey<Private>);

/// Reads and parses a certificate chain and key.
pub fn load_identity(cert: &Material, key: &Material) -> anyhow::Result<Identity> {
    let chain = X509::stack_from_pem(&cert.read()?)
        .with_context(|| format!("{cert}: not a PEM certificate chain"))?;
    if chain.is_empty() {
        bail!("{cert}: no certificate in it");
    }
    let key = PKey::private_key_from_pem(&key.read()?)
        .with_context(|| format!("{key}: not a PEM private key"))?;
    Ok((chain, key))
}

/// An SSL context holding what `SSL_set_SSL_CTX` swaps in: certificate, key,
/// ALPN, and a session id context unique to the hostname and view, so a session
/// never resumes on another hostname.
pub fn context(identity: Option<&Identity>, name: &str, view: &str) -> anyhow::Result<SslContext> {
    let mut b = SslContextBuilder::new(SslMethod::tls())?;
    if let Some((chain, key)) = identity {
        b.set_certificate(&chain[0])?;
        for extra in &chain[1..] {
            b.add_extra_chain_cert(extra.clone())?;
        }
        b.set_private_key(key)?;
        b.check_private_key()
            .context("the private key does not match the certificate")?;
    }
    b.set_alpn_select_callback(|_, client| select_next_proto(ALPN, client).ok_or(AlpnError::NOACK));
    let sid = boring::hash::hash(
        boring::hash::MessageDigest::sha256(),
        format!("{view}\0{name}").as_bytes(),
    )?;
    b.set_session_id_context(&sid[..32])?;
    Ok(b.build())
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
