//! A small HTTP/1.1 client: the CLI's calls to the admin API (HTTP or HTTPS)
//! and CRL downloads.

use std::{path::Path, time::Duration};

use anyhow::{Context, bail};
use boring::ssl::{SslConnector, SslMethod, SslVersion};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

/// Largest response body read.
const MAX_BODY: usize = 16 << 20;

/// One HTTP request; the status and body of the answer.
pub async fn request(
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> anyhow::Result<(StatusCode, Bytes)> {
    request_with(method, url, token, body, timeout, None).await
}

/// As [`request`], with `https://` URLs verified against `ca` (PEM; none:
/// the system's roots).
pub async fn request_with(
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<Vec<u8>>,
    timeout: Duration,
    ca: Option<&Path>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("{url:?} is not a URL"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => bail!("{url:?}: only http:// and https:// URLs are supported"),
    };
    let mut req = Request::builder().method(method).uri(uri.clone());
    if let Some(token) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let work = async {
        let response = if https {
            send_tls(&uri, req, ca).await
        } else {
            let client: Client<HttpConnector, Full<Bytes>> =
                Client::builder(TokioExecutor::new()).build(HttpConnector::new());
            client.request(req).await.map_err(anyhow::Error::from)
        }
        .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the answer from {url}: {e}"))?
            .to_bytes();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(timeout, work)
        .await
        .with_context(|| format!("{url} did not answer within {timeout:?}"))?
}

/// One request over a TLS connection of its own, the server's certificate
/// verified (chain and name) against `ca`.
async fn send_tls(
    uri: &http::Uri,
    req: Request<Full<Bytes>>,
    ca: Option<&Path>,
) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
    let host = uri.host().context("the URL names no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(443);
    let mut connector = SslConnector::builder(SslMethod::tls())?;
    connector.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    if let Some(ca) = ca {
        connector
            .set_ca_file(ca)
            .with_context(|| format!("cannot read the CA file {}", ca.display()))?;
    }
    let tcp = tokio::net::TcpStream::connect((host, port)).await?;
    let stream = tokio_boring::connect(connector.build().configure()?, host, tcp)
        .await
        .map_err(|e| anyhow::anyhow!("TLS: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender.send_request(req).await?)
}
