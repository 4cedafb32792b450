//! Certificates the server CA issues: a new hostname's, and a renewal.

use anyhow::Context;

use super::model::{Hostname, ServerCert, State};
use crate::{
    config::{CertChain, KeyDer},
    pki::{self, Usage},
};

/// Validity of server certificates the server CA issues.
pub const SERVER_CERT_DAYS: u32 = 397;

/// A hostname with default settings and a certificate from the server CA.
pub fn new_hostname(
    state: &State,
    name: &str,
    wildcard: bool,
    now: i64,
) -> anyhow::Result<Hostname> {
    Ok(Hostname {
        id: pki::random_id(),
        name: name.into(),
        wildcard,
        min_tls_version: None,
        ciphers: Vec::new(),
        session_resumption: None,
        origin: None,
        forward_client_cert: Default::default(),
        certificate: server_cert(state, name, wildcard)?,
        acme: None,
        cas: Vec::new(),
        created_on: now,
    })
}

/// A certificate for `name` (and its subdomains, for a wildcard) from the server CA.
pub fn server_cert(state: &State, name: &str, wildcard: bool) -> anyhow::Result<ServerCert> {
    let ca = state.server_ca().context("the store has no server CA")?;
    let signer = pki::Signer::from_pem(&ca.certificate, ca.key.as_deref().unwrap_or_default())?;
    let key = pki::new_key()?;
    let mut names = vec![name.to_string()];
    if wildcard {
        names.push(format!("*.{name}"));
    }
    let cert = pki::issue(&signer, name, &key, Usage::Server(&names), SERVER_CERT_DAYS)?;
    let der = cert.to_der()?;
    let (info, _) = pki::info(&der)?;
    Ok(ServerCert {
        chain: CertChain::from_ders(&[der])?,
        key: KeyDer::from_key(&key)?,
        managed: true,
        expires_on: info.not_after,
    })
}
