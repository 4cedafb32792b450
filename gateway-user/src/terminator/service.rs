//! One request: checks that bind it to its TLS connection, the interim
//! client-certificate rule, then the proxy to the hostname's origin.

use std::{convert::Infallible, sync::Arc, sync::atomic::Ordering, time::Duration, time::Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use super::{ConnInfo, Terminator, headers};
use crate::rules::Action;

/// Response body: streamed from the origin or made here.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// The pooled HTTP client toward origins.
pub struct OriginClient {
    client: Client<HttpConnector, Incoming>,
    timeout: Duration,
}

impl OriginClient {
    /// A client whose requests give up after `timeout`.
    pub fn new(timeout: Duration) -> OriginClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        OriginClient { client, timeout }
    }
}

/// A response made by the gateway itself, plain text.
pub fn local(status: StatusCode, text: impl Into<String>) -> Response<Body> {
    let mut text = text.into();
    text.push('\n');
    respond(status, "text/plain; charset=utf-8", text)
}

/// A response made here with this status, content type and body.
fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|e: Infallible| match e {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// The 403 of a blocking rule, as HTML, JSON or text depending on `Accept`.
fn blocked(headers: &http::HeaderMap, message: &str, rule: &str) -> Response<Body> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (kind, body) = if accept.contains("application/json") {
        let json = serde_json::json!({"success": false, "errors": [{"code": 403, "message": message}], "rule_id": rule});
        ("application/json", json.to_string())
    } else if accept.contains("text/html") {
        let escaped = message
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        (
            "text/html; charset=utf-8",
            format!(
                "<!doctype html><title>403 Forbidden</title><h1>403 Forbidden</h1><p>{escaped}</p>\n"
            ),
        )
    } else {
        ("text/plain; charset=utf-8", format!("{message}\n"))
    };
    respond(StatusCode::FORBIDDEN, kind, body)
}

impl Terminator {
    /// Serves one request.
    pub async fn handle(&self, conn: &ConnInfo, req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let served = conn.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let mut response = self.route(conn, req).await;
        if served >= self.limits.max_requests_per_connection {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let host = if conn.host.name.is_empty() {
            "(none)"
        } else {
            &*conn.host.name
        };
        self.metrics
            .requests
            .with_label_values(&[host, response.status().as_str()])
            .inc();
        self.metrics
            .request_seconds
            .observe(started.elapsed().as_secs_f64());
        response
    }

    async fn route(&self, conn: &ConnInfo, req: Request<Incoming>) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        let host = match super::fields::request_host(&parts) {
            Ok(host) => host,
            Err(why) => return local(StatusCode::BAD_REQUEST, why),
        };
        let mut fields = super::fields::request_fields(&parts, conn, host);
        // Revocation is looked up again in the current snapshot, so a certificate
        // revoked after the handshake is refused on a connection that stays open.
        let snapshot = self.snapshot.load();
        if fields.client_auth.verified && snapshot.is_revoked(&conn.host.name, &fields.client_auth)
        {
            Arc::make_mut(&mut fields.client_auth).revoked = true;
        }
        // So is trust: a CA no longer associated with the hostname verifies nothing.
        if fields.client_auth.verified
            && !snapshot.still_trusted(&conn.host.name, &fields.client_auth)
        {
            let auth = Arc::make_mut(&mut fields.client_auth);
            auth.verified = false;
            auth.failure = Some("its CA is no longer trusted for this hostname".into());
        }
        // Where the request goes, and with what, comes from the current snapshot
        // too: a keep-alive connection follows a change from its next request. A
        // connection whose SNI now names another entry (the hostname was removed)
        // was set up under a policy that no longer exists.
        let host = snapshot.lookup(conn.sni.as_deref()).clone();
        if host.name != conn.host.name {
            return local(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "the configuration of {:?} changed since this connection was opened; \
                     open a new connection",
                    conn.sni.as_deref().unwrap_or("")
                ),
            );
        }
        // The TLS policy applied is the SNI's: a request may only be for that name.
        if conn.host.name.is_empty() {
            return local(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "no hostname is configured for this connection's SNI ({:?})",
                    conn.sni.as_deref().unwrap_or("")
                ),
            );
        }
        if Some(fields.host.as_str()) != conn.sni.as_deref() {
            return local(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "this connection is for {:?}; open a new connection for {:?}",
                    conn.sni.as_deref().unwrap_or(""),
                    fields.host
                ),
            );
        }
        // The zone's rules, from the current snapshot: a change applies to the next request.
        let started = Instant::now();
        let verdict = snapshot.rules.evaluate(&fields);
        self.metrics
            .rule_seconds
            .observe(started.elapsed().as_secs_f64());
        for (id, action) in &verdict.matched {
            self.metrics
                .rule_matches
                .with_label_values(&[id, action.as_str()])
                .inc();
        }
        if let Some((id, Action::Block)) = verdict.decided_by {
            return blocked(&parts.headers, &snapshot.block_message, id);
        }
        let Some(origin) = &host.origin else {
            return local(
                StatusCode::BAD_GATEWAY,
                format!("{} has no origin configured", conn.host.name),
            );
        };
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let uri = match Uri::builder()
            .scheme("http")
            .authority(origin.authority().map_or("", |a| a.as_str()))
            .path_and_query(path)
            .build()
        {
            Ok(uri) => uri,
            Err(e) => return local(StatusCode::BAD_REQUEST, format!("bad request target: {e}")),
        };
        headers::strip_incoming(&mut parts.headers);
        // The origin gets exactly the name that was checked.
        if let Ok(v) = HeaderValue::from_str(&fields.host) {
            parts.headers.insert(header::HOST, v);
        }
        let xff = match parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prior) => format!("{prior}, {}", conn.peer.ip()),
            None => conn.peer.ip().to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            parts.headers.insert("x-forwarded-for", v);
        }
        parts
            .headers
            .insert("x-forwarded-proto", HeaderValue::from_static("https"));
        headers::set_client_cert(&mut parts.headers, host.forward, &fields.client_auth);
        parts.uri = uri;
        parts.version = http::Version::HTTP_11;
        let request = Request::from_parts(parts, body);
        match tokio::time::timeout(self.origin.timeout, self.origin.client.request(request)).await {
            Err(_) => local(
                StatusCode::GATEWAY_TIMEOUT,
                format!("origin {origin} did not answer in time"),
            ),
            Ok(Err(e)) => local(
                StatusCode::BAD_GATEWAY,
                format!("origin {origin} unreachable: {e}"),
            ),
            Ok(Ok(response)) => {
                let (mut parts, body) = response.into_parts();
                let hop: Vec<_> = parts
                    .headers
                    .keys()
                    .filter(|n| headers::is_hop_by_hop(n))
                    .cloned()
                    .collect();
                for name in hop {
                    parts.headers.remove(name);
                }
                Response::from_parts(parts, body.boxed())
            }
        }
    }
}
