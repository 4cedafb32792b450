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
    rt::{TokioExecutor, TokioTimer},
};

use super::{
    ConnInfo, Terminator, grpc,
    phases::{Outcome, Phase, Respond, Stage},
    trace::Trace,
};
use crate::logs::ray::{self, RAY_HEADER};

/// Response body: streamed from the origin or made here.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// How long an idle connection to an origin is kept for reuse.
pub const ORIGIN_IDLE: Duration = Duration::from_secs(60);

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
        Self::with_idle(timeout, ORIGIN_IDLE)
    }

    /// Clients that also close a connection idle for `idle`.
    pub fn with_idle(timeout: Duration, idle: Duration) -> OriginClient {
        OriginClient {
            client: pooled(idle, false),
            h2: pooled(idle, true),
            timeout,
        }
    }
}

/// A pooled client to origins (`http2`: HTTP/2 with prior knowledge) that
/// closes connections idle for `idle`.
fn pooled<B>(idle: Duration, http2: bool) -> Client<HttpConnector, B>
where
    B: hyper::body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.set_nodelay(true);
    // Without a timer the pool never closes an idle connection in the
    // background: an origin no hostname uses any more would keep its
    // sockets for good.
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(idle)
        .http2_only(http2)
        .build(connector)
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

#[cfg(test)]
mod tests {
    use http_body_util::Empty;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An origin that answers one keep-alive request, then reports how long
    /// after its answer the client closed the connection.
    async fn origin() -> (std::net::SocketAddr, tokio::task::JoinHandle<Duration>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut read = 0;
            while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                read += s.read(&mut buf[read..]).await.unwrap();
            }
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            let answered = Instant::now();
            assert_eq!(s.read(&mut buf).await.unwrap(), 0, "only one request");
            answered.elapsed()
        });
        (addr, task)
    }

    #[tokio::test]
    async fn an_idle_origin_connection_is_closed_while_the_client_lives_on() {
        let (addr, closed) = origin().await;
        let client: Client<HttpConnector, Empty<Bytes>> = pooled(Duration::from_millis(300), false);
        let response = client
            .get(format!("http://{addr}/").parse().unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.unwrap();
        let after = tokio::time::timeout(Duration::from_secs(5), closed)
            .await
            .expect("the idle connection was never closed")
            .unwrap();
        assert!(
            after >= Duration::from_millis(250),
            "closed too soon: {after:?}"
        );
        drop(client);
    }
}
