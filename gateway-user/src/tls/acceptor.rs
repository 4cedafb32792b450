//! The BoringSSL acceptor: per-SNI policy in the select-certificate callback
//! (before version negotiation), and client certificate verification against
//! the hostname's own CAs.

use std::sync::{Arc, LazyLock};

use arc_swap::ArcSwap;
use boring::{
    ssl::{
        ClientHello, NameType, SelectCertError, Ssl, SslAcceptor, SslMethod, SslOptions, SslRef,
        SslSessionCacheMode, SslVerifyMode, SslVersion,
    },
    stack::Stack,
    x509::{X509, X509StoreContext},
};
use foreign_types::ForeignTypeRef;
use log::warn;
use x509_parser::{certificate::X509Certificate, prelude::FromDer};

use super::{
    context::{self, ssl_version},
    snapshot::{HostTls, MtlsPolicy, TlsSnapshot},
};
use crate::rules::fields::{CertDetails, ClientAuth};

/// Per-connection data: the hostname policy chosen for the connection.
static HOST_INDEX: LazyLock<boring::ex_data::Index<Ssl, Arc<HostTls>>> =
    LazyLock::new(|| Ssl::new_ex_index().expect("an SSL ex_data index"));
/// Per-connection data: the client certificate's verification outcome.
static AUTH_INDEX: LazyLock<boring::ex_data::Index<Ssl, ClientAuth>> =
    LazyLock::new(|| Ssl::new_ex_index().expect("an SSL ex_data index"));

/// Builds the acceptor; it reads the current snapshot for every handshake.
pub fn acceptor(snapshot: Arc<ArcSwap<TlsSnapshot>>) -> anyhow::Result<SslAcceptor> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
    // The floor of every hostname's minimum; each connection raises its own.
    b.set_min_proto_version(Some(SslVersion::TLS1))?;
    b.set_max_proto_version(Some(SslVersion::TLS1_3))?;
    // Every cipher BoringSSL offers, so that hosts allowing TLS 1.0 can work;
    // hosts and the zone restrict it per connection.
    b.set_cipher_list("ALL")?;
    // No server-side session cache: resumption only by ticket, and tickets are
    // bound to the hostname (session id context) and never issued on mTLS
    // hostnames, so a client-auth result is never resumed.
    b.set_session_cache_mode(SslSessionCacheMode::OFF);
    context::set_alpn(&mut b);
    b.set_select_certificate_callback(move |mut hello| select(snapshot.load_full(), &mut hello));
    Ok(b.build())
}

/// The hostname policy and client auth of a finished handshake.
pub fn connection_policy(ssl: &SslRef) -> Option<(Arc<HostTls>, ClientAuth)> {
    let host = ssl.ex_data(*HOST_INDEX)?.clone();
    let auth = ssl.ex_data(*AUTH_INDEX).cloned().unwrap_or_default();
    Some((host, auth))
}

fn select(snapshot: Arc<TlsSnapshot>, hello: &mut ClientHello<'_>) -> Result<(), SelectCertError> {
    let sni = hello
        .servername(NameType::HOST_NAME)
        .map(str::to_ascii_lowercase);
    let host = snapshot.lookup(sni.as_deref()).clone();
    let ssl = hello.ssl_mut();
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        warn!("handshake for {sni:?}: {what}: {e}");
        SelectCertError::ERROR
    };
    host.install(ssl)
        .map_err(|e| fail("certificate and session context", &e))?;
    ssl.set_min_proto_version(Some(ssl_version(snapshot.min_version(&host))))
        .map_err(|e| fail("minimum version", &e))?;
    if let Some(ciphers) = snapshot.ciphers(&host) {
        // SAFETY: a live SSL handle and a NUL-terminated list checked when the snapshot was built.
        let ok = unsafe { boring_sys::SSL_set_strict_cipher_list(ssl.as_ptr(), ciphers.as_ptr()) };
        if ok != 1 {
            return Err(fail("cipher list", &"rejected"));
        }
    }
    match snapshot.mtls(&host).cloned() {
        Some(policy) => {
            ssl.set_options(SslOptions::NO_TICKET);
            // Asked, not required: the handshake completes without a certificate
            // and whatever the verdict; the outcome goes to the request's fields.
            ssl.set_custom_verify_callback(SslVerifyMode::PEER, move |ssl| {
                let auth = verify(&snapshot, &policy, ssl);
                ssl.set_ex_data(*AUTH_INDEX, auth);
                Ok(())
            });
        }
        None => ssl.set_verify(SslVerifyMode::NONE),
    }
    ssl.set_ex_data(*HOST_INDEX, host);
    Ok(())
}

/// Verifies the client's chain against the hostname's CAs only, and looks the
/// leaf up in what they revoke.
fn verify(snapshot: &TlsSnapshot, policy: &MtlsPolicy, ssl: &SslRef) -> ClientAuth {
    let Some(leaf) = ssl.peer_certificate() else {
        return ClientAuth::default();
    };
    let mut chain = match Stack::<X509>::new() {
        Ok(s) => s,
        Err(e) => return failed(format!("allocating a stack: {e}")),
    };
    let mut chain_der = Vec::new();
    for c in ssl.peer_cert_chain().into_iter().flatten() {
        chain_der.push(c.to_der().unwrap_or_default());
        if chain.push(c.to_owned()).is_err() {
            return failed("copying the chain".into());
        }
    }
    let outcome = X509StoreContext::new().and_then(|mut ctx| {
        ctx.init(&policy.store, &leaf, &chain, |c| {
            let ok = c.verify_cert()?;
            let issuer = c
                .chain()
                .and_then(|ch| ch.get(1))
                .and_then(|ca| ca.to_der().ok());
            let anchor = c
                .chain()
                .and_then(|ch| ch.iter().next_back())
                .and_then(|ca| ca.digest(boring::hash::MessageDigest::sha256()).ok())
                .map(|d| d.to_vec());
            let error = c
                .verify_result()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            Ok((ok, issuer, error, anchor))
        })
    });
    let (verified, issuer, error, anchor) = match outcome {
        Ok(o) => o,
        Err(e) => return failed(format!("verification could not run: {e}")),
    };
    let leaf_der = leaf.to_der().unwrap_or_default();
    let parsed = X509Certificate::from_der(&leaf_der).ok().map(|(_, c)| c);
    let revocation_key = parsed
        .as_ref()
        .map(|c| (c.issuer().as_raw().to_vec(), c.raw_serial().to_vec()));
    let revoked = verified
        && parsed
            .as_ref()
            .is_some_and(|c| snapshot.is_revoked_leaf(policy, c));
    let cert = CertDetails::from_der(&leaf_der, &chain_der, issuer.as_deref()).ok();
    ClientAuth {
        presented: true,
        verified,
        revoked,
        failure: (!verified).then_some(error),
        cert,
        revocation_key,
        anchor: verified.then_some(anchor).flatten(),
    }
}

fn failed(why: String) -> ClientAuth {
    ClientAuth {
        presented: true,
        failure: Some(why),
        ..ClientAuth::default()
    }
}
