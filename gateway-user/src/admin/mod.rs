//! The admin surface, above the control plane and speaking HTTP: the admin
//! API ([`api`]) and the dashboard it serves ([`dashboard`]). Both reach the
//! configuration only through [`crate::control::ControlPlane`].

pub mod api;
pub mod dashboard;

use anyhow::Context;

use crate::{
    control::ControlPlane,
    pki::{self, Usage},
};

/// A TLS acceptor for the admin API: a certificate for `names` from the
/// server CA (made at each start, valid a year), TLS 1.2 and up.
pub async fn acceptor(
    plane: &ControlPlane,
    names: &[String],
) -> anyhow::Result<boring::ssl::SslAcceptor> {
    let signer = plane
        .read(|s| {
            let ca = s.server_ca().context("the store has no server CA")?;
            pki::Signer::from_pem(&ca.certificate, ca.key.as_deref().unwrap_or_default())
        })
        .await?;
    let key = pki::new_key()?;
    let cert = pki::issue(
        &signer,
        "gateway admin API",
        &key,
        Usage::Server(names),
        365,
    )?;
    let mut b = boring::ssl::SslAcceptor::mozilla_intermediate_v5(boring::ssl::SslMethod::tls())?;
    b.set_private_key(&key)?;
    b.set_certificate(&cert)?;
    b.add_extra_chain_cert(signer.cert.clone())?;
    b.set_min_proto_version(Some(boring::ssl::SslVersion::TLS1_2))?;
    b.check_private_key()?;
    Ok(b.build())
}
