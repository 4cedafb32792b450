//! One certificate order for one hostname, by TLS-ALPN-01: the order, its
//! authorization and challenge (answered by the terminator while pending),
//! then finalization with a new key's CSR and the chain's download.

use std::time::Duration;

use anyhow::{Context, bail};
use boring::{
    hash::MessageDigest,
    nid::Nid,
    pkey::{PKey, Private},
    stack::Stack,
    x509::{X509NameBuilder, X509ReqBuilder, extension::SubjectAlternativeName},
};
use serde_json::{Value, json};

use super::client::AcmeClient;
use crate::{pki, tls::challenge};

/// How long an authorization or an order may stay pending.
const PENDING_LIMIT: Duration = Duration::from_secs(90);
/// How often a pending resource is polled.
const POLL: Duration = Duration::from_millis(500);

/// An order whose authorizations are valid.
pub struct Validated {
    url: String,
    finalize: String,
}

/// An issued certificate.
pub struct Issued {
    /// The chain (PEM, leaf first).
    pub chain_pem: String,
    /// Its new key.
    pub key: PKey<Private>,
}

/// Orders a certificate for `host` and has its authorization validated by
/// TLS-ALPN-01; the challenge certificate is served only while it is pending.
pub async fn validate(client: &mut AcmeClient, host: &str) -> anyhow::Result<Validated> {
    let (url, order) = client.new_order(host).await?;
    let finalize = order["finalize"]
        .as_str()
        .context("the order has no finalize URL")?
        .to_string();
    let authzs: Vec<String> = order["authorizations"]
        .as_array()
        .context("the order has no authorizations")?
        .iter()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    for authz in authzs {
        let result = authorize(client, host, &authz).await;
        challenge::clear(host);
        result?;
    }
    Ok(Validated { url, finalize })
}

/// One authorization: answered by TLS-ALPN-01 unless already valid.
async fn authorize(client: &mut AcmeClient, host: &str, url: &str) -> anyhow::Result<()> {
    let authz = client.get(url).await?;
    if authz["status"] == "valid" {
        return Ok(());
    }
    let chall = authz["challenges"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "tls-alpn-01"))
        .context("the ACME server offers no tls-alpn-01 challenge for this name")?;
    let token = chall["token"]
        .as_str()
        .context("the challenge has no token")?;
    let chall_url = chall["url"].as_str().context("the challenge has no URL")?;
    let key_authorization = client.key.key_authorization(token)?;
    challenge::set(host, &key_authorization)?;
    client.post(chall_url, Some(&json!({}))).await?;
    let done = poll(client, url, &["pending"]).await?;
    if done["status"] != "valid" {
        bail!("validation failed: {}", challenge_error(&done));
    }
    Ok(())
}

/// The error a failed authorization's challenges carry.
fn challenge_error(authz: &Value) -> String {
    let errors: Vec<String> = authz["challenges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let e = &c["error"];
            Some(format!(
                "{}: {}",
                e["type"].as_str()?,
                e["detail"].as_str()?
            ))
        })
        .collect();
    if errors.is_empty() {
        format!("authorization {}", authz["status"])
    } else {
        errors.join("; ")
    }
}

/// Polls `url` while its status is one of `waiting`.
async fn poll(client: &mut AcmeClient, url: &str, waiting: &[&str]) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + PENDING_LIMIT;
    loop {
        let v = client.get(url).await?;
        let status = v["status"].as_str().unwrap_or_default();
        if !waiting.contains(&status) {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{url} still {status} after {PENDING_LIMIT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Finalizes a validated order with a new key's CSR and downloads the chain.
pub async fn issue(
    client: &mut AcmeClient,
    host: &str,
    order: Validated,
) -> anyhow::Result<Issued> {
    let key = pki::new_key()?;
    let csr = csr(host, &key)?;
    client.finalize(&order.finalize, &csr).await?;
    let done = poll(client, &order.url, &["pending", "ready", "processing"]).await?;
    if done["status"] != "valid" {
        bail!("the order ended {}: {}", done["status"], done["error"]);
    }
    let cert_url = done["certificate"]
        .as_str()
        .context("the valid order has no certificate URL")?;
    let chain_pem = client.certificate(cert_url).await?;
    Ok(Issued { chain_pem, key })
}

/// A CSR (DER) for `host` with `key`.
fn csr(host: &str, key: &PKey<Private>) -> anyhow::Result<Vec<u8>> {
    let mut b = X509ReqBuilder::new()?;
    let mut name = X509NameBuilder::new()?;
    if host.len() <= 64 {
        name.append_entry_by_nid(Nid::COMMONNAME, host)?;
    }
    b.set_subject_name(&name.build())?;
    b.set_pubkey(key)?;
    let san = SubjectAlternativeName::new()
        .dns(host)
        .build(&b.x509v3_context(None))?;
    let mut exts = Stack::new()?;
    exts.push(san)?;
    b.add_extensions(&exts)?;
    b.sign(key, MessageDigest::sha256())?;
    Ok(b.build().to_der()?)
}
