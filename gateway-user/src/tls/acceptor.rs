//! The BoringSSL acceptor: per-SNI policy in the select-certificate callback
//! (before version negotiation and before an offered session is looked at),
//! client certificate verification against the hostname's own CAs, and
//! session resumption bound to that policy (see [`super::resumption`]).

use std::sync::{Arc, LazyLock};

use arc_swap::ArcSwap;
use boring::{
    ssl::{
        ClientHello, NameType, SelectCertError, Ssl, SslAcceptor, SslMethod, SslRef, SslVerifyMode,
        SslVersion,
    },
    stack::Stack,
    x509::{X509, X509StoreContext},
};
use foreign_types::ForeignTypeRef;
use log::warn;
use x509_parser::{certificate::X509Certificate, prelude::FromDer};

use super::{
    challenge,
    context::{self, ssl_version},
    resumption,
    snapshot::{HostTls, MtlsPolicy, TlsSnapshot},
    tickets::TicketKeys,
};
use crate::rules::fields::{CertDetails, ClientAuth};

/// Per-connection data: the hostname policy chosen for the connection.
static HOST_INDEX: LazyLock<boring::ex_data::Index<Ssl, Arc<HostTls>>> =
    LazyLock::new(|| Ssl::new_ex_index().expect("an SSL ex_data index"));
/// Per-connection data: the client certificate's verification outcome.
static AUTH_INDEX: LazyLock<boring::ex_data::Index<Ssl, ClientAuth>> =
    LazyLock::new(|| Ssl::new_ex_index().expect("an SSL ex_data index"));

/// Builds the acceptor; it reads the current snapshot for every handshake.
/// Session ticket keys rotate every `ticket_key_rotation_secs`.
pub fn acceptor(
    snapshot: Arc<ArcSwap<TlsSnapshot>>,
    ticket_key_rotation_secs: u64,
) -> anyhow::Result<SslAcceptor> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
    // The floor of every hostname's minimum; each connection raises its own.
    b.set_min_proto_version(Some(SslVersion::TLS1))?;
    b.set_max_proto_version(Some(SslVersion::TLS1_3))?;
    // Every cipher BoringSSL offers, so that hosts allowing TLS 1.0 can work;
    // hosts and the zone restrict it per connection.
    b.set_cipher_list("ALL")?;
    // Tickets and session IDs, each session bound to the policy it was made
    // under by the session id context `select` sets.
    let keys = Arc::new(TicketKeys::new(ticket_key_rotation_secs));
    resumption::configure(&mut b, keys, ticket_key_rotation_secs);
    context::set_alpn(&mut b);
    b.set_select_certificate_callback(move |mut hello| select(snapshot.load_full(), &mut hello));
    Ok(b.build())
}

/// The hostname policy the select-certificate callback chose for this
/// connection (before its handshake finished, or failed).
pub fn connection_host(ssl: &SslRef) -> Option<Arc<HostTls>> {
    ssl.ex_data(*HOST_INDEX).cloned()
}

/// The hostname policy and client auth of a finished handshake. A resumed
/// session on an mTLS hostname ran no verification: the client chain it
/// carries is verified now against the hostname's CAs in `snapshot` (the
/// current configuration), with what they revoke now.
pub fn connection_policy(
    ssl: &SslRef,
    snapshot: &TlsSnapshot,
) -> Option<(Arc<HostTls>, ClientAuth)> {
    let host = connection_host(ssl)?;
    let auth = match (ssl.session_reused(), host.mtls.is_some()) {
        (true, true) => match snapshot.mtls(&host) {
            Some(policy) => verify(snapshot, policy, ssl),
            None if ssl.peer_certificate().is_some() => {
                failed("the hostname's CAs changed since the session began".into())
            }
            None => ClientAuth::default(),
        },
        _ => ssl.ex_data(*AUTH_INDEX).cloned().unwrap_or_default(),
    };
    Some((host, auth))
}

fn select(snapshot: Arc<TlsSnapshot>, hello: &mut ClientHello<'_>) -> Result<(), SelectCertError> {
    super::offered::record(hello);
    let sni = hello
        .servername(NameType::HOST_NAME)
        .map(str::to_ascii_lowercase);
    if challenge::offers_acme_tls(hello) {
        return answer_challenge(sni.as_deref(), hello.ssl_mut());
    }
    let host = snapshot.lookup(sni.as_deref()).clone();
    let offered = resumption::offered(hello);
    let ssl = hello.ssl_mut();
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        warn!("handshake for {sni:?}: {what}: {e}");
        SelectCertError::ERROR
    };
    host.install(ssl).map_err(|e| fail("certificate", &e))?;
    let context = snapshot.session_context(&host, sni.as_deref());
    resumption::bind(ssl, &context, snapshot.resumption(&host), offered)
        .map_err(|e| fail("session context", &e))?;
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

/// A TLS-ALPN-01 validator's hello: the challenge certificate of a hostname
/// with a pending challenge, TLS 1.2 or later, no client certificate, no
/// hostname policy (the terminator serves nothing on it); refused otherwise.
fn answer_challenge(sni: Option<&str>, ssl: &mut SslRef) -> Result<(), SelectCertError> {
    let Some(cert) = sni.and_then(challenge::pending) else {
        warn!("acme-tls/1 hello for {sni:?}: no pending challenge; refused");
        return Err(SelectCertError::ERROR);
    };
    let set = challenge::install(ssl, &cert)
        .and_then(|()| ssl.set_min_proto_version(Some(SslVersion::TLS1_2)));
    if let Err(e) = set {
        warn!("acme-tls/1 hello for {sni:?}: {e}");
        return Err(SelectCertError::ERROR);
    }
    ssl.set_verify(SslVerifyMode::NONE);
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
