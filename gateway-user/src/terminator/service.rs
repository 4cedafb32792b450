//! One request: [`Terminator::handle`] runs the request path's phases (see
//! [`super::phases`]) and then logs; the origin client and the responses the
//! gateway makes itself.

use std::{
    borrow::Cow,
    convert::Infallible,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use super::{
    ConnInfo, Terminator, grpc,
    phases::{Outcome, Phase, Respond, Stage},
    trace::Trace,
};
use crate::logs::ray::{self, RAY_HEADER};

/// Response body: streamed from the origin or made here.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// The pooled HTTP clients toward origins: HTTP/1.1 (`http://` origins) and
/// HTTP/2 with prior knowledge (`h2c://` origins).
pub struct OriginClient {
    pub(super) client: Client<HttpConnector, Incoming>,
    pub(super) h2: Client<HttpConnector, Incoming>,
    /// Until the origin's response headers (not its body).
    pub(super) timeout: Duration,
}

impl OriginClient {
    /// Clients whose requests give up after `timeout` without response headers.
    pub fn new(timeout: Duration) -> OriginClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector.clone());
        let h2 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .http2_only(true)
            .build(connector);
        OriginClient {
            client,
            h2,
            timeout,
        }
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
    /// phase, whatever the outcome. The request gets its ray id (`cf-ray`,
    /// to the origin and back to the client). A gRPC call the gateway
    /// refuses gets a gRPC status ([`grpc::refusal`]), counted and logged as
    /// the 200 it is on the wire (its `GatewayStage` says who refused it).
    pub async fn handle(&self, conn: &Arc<ConnInfo>, mut req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let served = conn.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let ray = self.logs.rays.next();
        let ray_value = ray::header_value(ray);
        req.headers_mut().insert(RAY_HEADER, ray_value.clone());
        let mut trace = Trace::begin(&self.logs, conn, &req, ray);
        let grpc = grpc::is_call(&req);
        let (answered_by, mut response) = match self.route(conn, req, &mut trace).await {
            Ok(response) => (Stage::Response, response),
            Err(Respond { stage, response }) if grpc => {
                let refusal = grpc::refusal(*response).await;
                (stage, refusal.map(|b| b.map_err(|e| match e {}).boxed()))
            }
            Err(Respond { stage, response }) => (stage, *response),
        };
        let switched = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if served >= self.limits.max_requests_per_connection && !switched {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response.headers_mut().insert(RAY_HEADER, ray_value);
        let outcome = Outcome {
            conn,
            status: response.status(),
            answered_by,
            elapsed: started.elapsed(),
            started,
        };
        self.logging(&outcome, trace, response)
    }

    /// The request path: each phase in turn, until one responds.
    async fn route(
        &self,
        conn: &Arc<ConnInfo>,
        req: Request<Incoming>,
        trace: &mut Trace,
    ) -> Phase<Response<Body>> {
        let (parts, body) = req.into_parts();
        let ctx = self.early_checks(conn, &parts)?;
        if let Cow::Owned(rechecked) = &ctx.auth {
            trace.auth(rechecked);
        }
        self.sni_host(conn, &ctx)?;
        self.firewall(conn, &ctx, &parts, trace)?;
        let upstream = self.upstream_request(conn, &ctx, (parts, body))?;
        let sent = Instant::now();
        let (origin, request, h2) = (upstream.origin, upstream.request, upstream.h2);
        let response = self.send_upstream(origin, request, h2).await?;
        trace.origin(response.status(), sent.elapsed());
        Ok(self.response(conn, response, upstream.upgrade))
    }
}
