//! A small HTTP/1.1 client: the CLI's calls to the admin API (HTTP or HTTPS)
//! CRL downloads and the ACME client's calls.

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
    let mut headers = Vec::new();
    let bearer;
    if let Some(token) = token {
        bearer = format!("Bearer {token}");
        headers.push((header::AUTHORIZATION, bearer.as_str()));
    }
    if body.is_some() {
        headers.push((header::CONTENT_TYPE, "application/json"));
    }
    let (status, _, body) = exchange(method, url, &headers, body, timeout, ca).await?;
    Ok((status, body))
}

/// One HTTP request with the given headers; the status, headers and body of
/// the answer. `https://` URLs are verified against `ca` (PEM; none: the
/// system's roots).
pub async fn exchange(
    method: Method,
    url: &str,
    headers: &[(header::HeaderName, &str)],
    body: Option<Vec<u8>>,
    timeout: Duration,
    ca: Option<&Path>,
) -> anyhow::Result<(StatusCode, header::HeaderMap, Bytes)> {
    let uri: http::Uri = url
        .parse()
        .with_context(|| format!("{url:?} is not a URL"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => bail!("{url:?}: only http:// and https:// URLs are supported"),
    };
    let mut req = Request::builder().method(method).uri(uri.clone());
    for (name, value) in headers {
        req = req.header(name, *value);
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
        let headers = response.headers().clone();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| anyhow::anyhow!("reading the answer from {url}: {e}"))?
            .to_bytes();
        anyhow::Ok((status, headers, body))
    };
    tokio::time::timeout(timeout, work)
        .await
        .with_context(|| format!("{url} did not answer within {timeout:?}"))?
}

/// One request over a TLS connection of its own, the server's certificate
/// verified (chain and name) against `ca`.
async fn send_tls(
    uri: &http::Uri,
    mut req: Request<Full<Bytes>>,
    ca: Option<&Path>,
) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
    // A connection of our own: the request line in origin form, with a Host
    // header (HTTP/1.1 servers such as Go's refuse a request without one).
    if let Some(authority) = uri.authority() {
        let host = header::HeaderValue::from_str(authority.as_str())?;
        req.headers_mut().entry(header::HOST).or_insert(host);
    }
    if let Some(path) = uri.path_and_query() {
        *req.uri_mut() = path.as_str().parse()?;
    }
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
