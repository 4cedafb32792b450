//! A minimal RFC 8555 client over the project's HTTP client and BoringSSL:
//! the directory, nonces, the account, orders, authorizations, challenges,
//! finalization and the certificate download. Problem documents become errors
//! that name their type (`urn:ietf:params:acme:error:…`) and detail.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Value, json};

use super::jws::{AccountKey, b64};
use crate::http_client;

/// How long one ACME request may take.
const TIMEOUT: Duration = Duration::from_secs(20);
/// How often a request refused for a bad nonce is sent again.
const NONCE_RETRIES: usize = 5;

/// An ACME server's error answer.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {detail} (HTTP {status})")]
pub struct Problem {
    /// The problem type, e.g. `urn:ietf:params:acme:error:rateLimited`.
    pub kind: String,
    /// The server's explanation.
    pub detail: String,
    /// The HTTP status.
    pub status: u16,
}

/// A session with one ACME server under one account key.
pub struct AcmeClient {
    new_nonce: String,
    new_account: String,
    new_order: String,
    /// The account key.
    pub key: AccountKey,
    kid: Option<String>,
    nonce: Option<String>,
    ca: Option<PathBuf>,
}

/// An answer: status, headers, JSON (or raw) body.
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The headers (`Location`, `Retry-After`).
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).context("the ACME server's answer is not JSON")
    }

    /// The `Location` header.
    pub fn location(&self) -> anyhow::Result<String> {
        let l = self.headers.get(header::LOCATION);
        let l = l.context("the ACME server's answer has no Location")?;
        Ok(l.to_str()?.to_string())
    }
}

impl AcmeClient {
    /// Reads the directory at `url` (HTTPS verified against `ca`, PEM file;
    /// none: the system's roots).
    pub async fn connect(url: &str, key: AccountKey, ca: Option<&Path>) -> anyhow::Result<Self> {
        let (status, _, body) =
            http_client::exchange(Method::GET, url, &[], None, TIMEOUT, ca).await?;
        if !status.is_success() {
            bail!("the ACME directory {url} answered {status}");
        }
        let dir: Value = serde_json::from_slice(&body).context("the ACME directory is not JSON")?;
        let field = |name: &str| -> anyhow::Result<String> {
            let v = dir[name].as_str();
            Ok(
                v.with_context(|| format!("the ACME directory has no {name}"))?
                    .to_string(),
            )
        };
        Ok(AcmeClient {
            new_nonce: field("newNonce")?,
            new_account: field("newAccount")?,
            new_order: field("newOrder")?,
            key,
            kid: None,
            nonce: None,
            ca: ca.map(Path::to_path_buf),
        })
    }

    async fn fresh_nonce(&mut self) -> anyhow::Result<String> {
        if let Some(n) = self.nonce.take() {
            return Ok(n);
        }
        let (_, headers, _) = http_client::exchange(
            Method::HEAD,
            &self.new_nonce,
            &[],
            None,
            TIMEOUT,
            self.ca.as_deref(),
        )
        .await?;
        nonce_of(&headers).context("the ACME server gave no nonce")
    }

    /// A signed POST (`payload` none: POST-as-GET); a bad nonce is retried
    /// with the fresh one the answer carries; an error answer is a [`Problem`].
    pub async fn post(&mut self, url: &str, payload: Option<&Value>) -> anyhow::Result<Answer> {
        let mut tries = 0;
        loop {
            let nonce = self.fresh_nonce().await?;
            let body = self.key.sign(url, &nonce, self.kid.as_deref(), payload)?;
            let headers = [(header::CONTENT_TYPE, "application/jose+json")];
            let (status, headers, body) = http_client::exchange(
                Method::POST,
                url,
                &headers,
                Some(body),
                TIMEOUT,
                self.ca.as_deref(),
            )
            .await?;
            self.nonce = nonce_of(&headers);
            if status.is_success() {
                return Ok(Answer {
                    status,
                    headers,
                    body,
                });
            }
            let problem = problem(status, &body);
            tries += 1;
            if problem.kind.ends_with(":badNonce") && tries < NONCE_RETRIES {
                continue;
            }
            return Err(problem.into());
        }
    }

    /// Creates (or finds) the account of the key, agreeing to the terms of
    /// service; returns its URL.
    pub async fn account(&mut self, contact: &[String]) -> anyhow::Result<String> {
        let payload = json!({ "termsOfServiceAgreed": true, "contact": contact });
        let url = self.new_account.clone();
        let answer = self.post(&url, Some(&payload)).await?;
        let kid = answer.location()?;
        self.kid = Some(kid.clone());
        Ok(kid)
    }

    /// A new order for one DNS name: its URL and body.
    pub async fn new_order(&mut self, host: &str) -> anyhow::Result<(String, Value)> {
        let payload = json!({ "identifiers": [{ "type": "dns", "value": host }] });
        let url = self.new_order.clone();
        let answer = self.post(&url, Some(&payload)).await?;
        Ok((answer.location()?, answer.json()?))
    }

    /// POST-as-GET of a resource, as JSON.
    pub async fn get(&mut self, url: &str) -> anyhow::Result<Value> {
        self.post(url, None).await?.json()
    }

    /// Finalizes an order with a CSR (DER).
    pub async fn finalize(&mut self, url: &str, csr_der: &[u8]) -> anyhow::Result<Value> {
        let payload = json!({ "csr": b64(csr_der) });
        self.post(url, Some(&payload)).await?.json()
    }

    /// Downloads a certificate chain (PEM, leaf first).
    pub async fn certificate(&mut self, url: &str) -> anyhow::Result<String> {
        let answer = self.post(url, None).await?;
        Ok(String::from_utf8(answer.body.to_vec())?)
    }
}

fn nonce_of(headers: &HeaderMap) -> Option<String> {
    let n = headers.get("replay-nonce")?;
    Some(n.to_str().ok()?.to_string())
}

/// The problem document of an error answer (or what the answer was).
fn problem(status: StatusCode, body: &[u8]) -> Problem {
    let doc: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |k: &str| doc[k].as_str().map(str::to_string);
    Problem {
        kind: text("type").unwrap_or_else(|| "unknown".into()),
        detail: text("detail").unwrap_or_else(|| String::from_utf8_lossy(body).into_owned()),
        status: status.as_u16(),
    }
}
