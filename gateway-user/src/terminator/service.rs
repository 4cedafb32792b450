//! One request: [`Terminator::handle`] runs the request path's phases (see
//! [`super::phases`]) and then logs; the origin client and the responses the
//! gateway makes itself.

use std::{convert::Infallible, sync::atomic::Ordering, time::Duration, time::Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use super::{
    ConnInfo, Terminator,
    phases::{Outcome, Phase, Respond, Stage},
};

/// Response body: streamed from the origin or made here.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// The pooled HTTP client toward origins.
pub struct OriginClient {
    pub(super) client: Client<HttpConnector, Incoming>,
    pub(super) timeout: Duration,
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
pub fn blocked(headers: &http::HeaderMap, message: &str, rule: &str) -> Response<Body> {
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
    /// Serves one request: [`Terminator::route`]'s phases, then the logging
    /// phase, whatever the outcome.
    pub async fn handle(&self, conn: &ConnInfo, req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let served = conn.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let (answered_by, mut response) = match self.route(conn, req).await {
            Ok(response) => (Stage::Response, response),
            Err(Respond { stage, response }) => (stage, *response),
        };
        if served >= self.limits.max_requests_per_connection {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        self.logging(&Outcome {
            conn,
            status: response.status(),
            answered_by,
            elapsed: started.elapsed(),
        });
        response
    }

    /// The request path: each phase in turn, until one responds.
    async fn route(&self, conn: &ConnInfo, req: Request<Incoming>) -> Phase<Response<Body>> {
        let (parts, body) = req.into_parts();
        let ctx = self.early_checks(conn, &parts)?;
        self.sni_host(conn, &ctx)?;
        self.firewall(conn, &ctx, &parts)?;
        let upstream = self.upstream_request(conn, &ctx, (parts, body))?;
        let response = self.send_upstream(upstream).await?;
        Ok(self.response(response))
    }
}
