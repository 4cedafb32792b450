//! The request path as named phases, in the order [`Terminator::route`] runs
//! them (after Pingora's `ProxyHttp`): early checks, SNI↔Host, firewall,
//! upstream request, then the origin's response; logging runs last, for every
//! outcome. A phase answers [`Phase`]: `Ok` to go on, or `Err(Respond)` to
//! answer the client now with the response it carries.

use std::{borrow::Cow, sync::Arc, time::Duration, time::Instant};

use arc_swap::Guard;
use http::{HeaderValue, Request, Response, StatusCode, Uri, header, request::Parts};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::{
    ConnInfo, Terminator, fields, headers,
    service::{Body, blocked, local},
    trace::Trace,
    upgrade::{self, ClientUpgrade},
};
use crate::{
    rules::{Action, fields::ClientAuth},
    tls::{HostTls, TlsSnapshot},
};

/// The origin URL scheme of HTTP/2 with prior knowledge, in cleartext.
pub const H2C: &str = "h2c";

/// A phase's answer: `Ok` carries what the next phases need; `Err` means
/// respond now, with this response, and skip the phases left (logging runs).
pub type Phase<T> = Result<T, Respond>;

/// The phase that made a request's response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// [`Terminator::early_checks`] refused the request.
    EarlyChecks,
    /// [`Terminator::sni_host`] refused it.
    SniHost,
    /// [`Terminator::firewall`]: a rule blocked it.
    Firewall,
    /// [`Terminator::upstream_request`] could not make the origin's request.
    UpstreamRequest,
    /// The origin did not answer (in time): the gateway answered 502 or 504.
    OriginError,
    /// [`Terminator::response`]: the origin's response was passed on.
    Response,
}

impl Stage {
    /// The access log's `GatewayStage` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::EarlyChecks => "early_checks",
            Stage::SniHost => "sni_host",
            Stage::Firewall => "firewall",
            Stage::UpstreamRequest => "upstream_request",
            Stage::OriginError => "origin_error",
            Stage::Response => "response",
        }
    }
}

/// Respond now: the response, and the phase that made it (boxed: a phase's
/// `Ok` stays small, and a refusal allocates its body anyway).
pub struct Respond {
    /// The phase that answered.
    pub stage: Stage,
    /// What the client gets.
    pub response: Box<Response<Body>>,
}

impl Respond {
    /// `response`, made by `stage`.
    pub fn new(stage: Stage, response: Response<Body>) -> Respond {
        Respond {
            stage,
            response: Box::new(response),
        }
    }

    /// A plain-text answer made by `stage`.
    pub fn local(stage: Stage, status: StatusCode, text: impl Into<String>) -> Respond {
        Respond::new(stage, local(status, text))
    }
}

/// What the early checks established, for the later phases.
pub struct RequestCtx<'c> {
    /// The request's host: lowercased, without port, the only one it names
    /// (borrowed from the connection's SNI when it is that name, as it must be).
    pub host: Cow<'c, str>,
    /// The snapshot in force for this request.
    pub snapshot: Guard<Arc<TlsSnapshot>>,
    /// The connection's client-certificate outcome, re-checked against it
    /// (borrowed from the connection unless the re-check changed it).
    pub auth: Cow<'c, ClientAuth>,
}

/// The request toward the origin, made by [`Terminator::upstream_request`].
pub struct UpstreamRequest<'a> {
    /// The hostname's origin.
    pub origin: &'a Uri,
    /// The request, its target and headers rewritten.
    pub request: Request<Incoming>,
    /// Whether it goes over HTTP/2 (an `h2c://` origin).
    pub h2: bool,
    /// The client's WebSocket upgrade, when it asked for one.
    pub upgrade: Option<ClientUpgrade>,
}

/// What happened to one request: the logging phase's input.
pub struct Outcome<'a> {
    /// The connection it came on.
    pub conn: &'a ConnInfo,
    /// The status the client got.
    pub status: StatusCode,
    /// The phase that made the response.
    pub answered_by: Stage,
    /// From the request's arrival to its response's headers.
    pub elapsed: Duration,
    /// When the request arrived.
    pub started: Instant,
}

impl Terminator {
    /// **Early checks.** Runs first, on every request. The request must name
    /// exactly one host (else 400); the current snapshot must still hold the
    /// hostname entry the connection was set up under (else 421: the policy
    /// it was opened with no longer exists). The client certificate's
    /// outcome is re-checked in that snapshot, so a certificate revoked, or
    /// whose CA was disassociated, after the handshake counts as such on a
    /// connection that stays open. `Ok` carries the request's context.
    pub fn early_checks<'c>(&self, conn: &'c ConnInfo, parts: &Parts) -> Phase<RequestCtx<'c>> {
        let host = fields::request_host(parts)
            .map_err(|why| Respond::local(Stage::EarlyChecks, StatusCode::BAD_REQUEST, why))?;
        // Kept without borrowing the request, which the upstream request takes.
        let host = match conn.sni.as_deref() {
            Some(sni) if sni == host => Cow::Borrowed(sni),
            _ => Cow::Owned(host.into_owned()),
        };
        let snapshot = self.snapshot.load();
        let mut auth = Cow::Borrowed(&*conn.auth);
        if auth.verified && snapshot.is_revoked(&conn.host.name, &auth) {
            auth.to_mut().revoked = true;
        }
        if auth.verified && !snapshot.still_trusted(&conn.host.name, &auth) {
            let auth = auth.to_mut();
            auth.verified = false;
            auth.failure = Some("its CA is no longer trusted for this hostname".into());
        }
        // A keep-alive connection follows a change from its next request; one
        // whose SNI now names another entry (its hostname was removed) cannot.
        if snapshot.lookup(conn.sni.as_deref()).name != conn.host.name {
            return Err(Respond::local(
                Stage::EarlyChecks,
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "the configuration of {:?} changed since this connection was opened; \
                     open a new connection",
                    conn.sni.as_deref().unwrap_or("")
                ),
            ));
        }
        Ok(RequestCtx {
            host,
            snapshot,
            auth,
        })
    }

    /// **SNI↔Host.** Runs after the early checks. The TLS policy applied was
    /// the SNI's, so a request may only be for that name: a connection whose
    /// SNI names no hostname, or a request whose host is not the SNI, is
    /// refused with 421. `Ok(())`: the request is for the connection's hostname.
    pub fn sni_host(&self, conn: &ConnInfo, ctx: &RequestCtx<'_>) -> Phase<()> {
        let sni = conn.sni.as_deref().unwrap_or("");
        if conn.host.name.is_empty() {
            return Err(Respond::local(
                Stage::SniHost,
                StatusCode::MISDIRECTED_REQUEST,
                format!("no hostname is configured for this connection's SNI ({sni:?})"),
            ));
        }
        if Some(&*ctx.host) != conn.sni.as_deref() {
            return Err(Respond::local(
                Stage::SniHost,
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "this connection is for {sni:?}; open a new connection for {:?}",
                    ctx.host
                ),
            ));
        }
        Ok(())
    }

    /// **Firewall.** Runs once the request is bound to its hostname: the
    /// zone's rules of the current snapshot, on fields borrowed from the
    /// request and its connection (nothing copied). Every match is counted;
    /// a blocking rule answers 403 (HTML, JSON or text by `Accept`).
    /// The rule that decided (or the last log rule that matched) goes to
    /// the trace. `Ok(())`: no rule blocked it (an allow rule, or none, decided).
    pub fn firewall(
        &self,
        conn: &ConnInfo,
        ctx: &RequestCtx<'_>,
        parts: &Parts,
        trace: &mut Trace,
    ) -> Phase<()> {
        let rules = &ctx.snapshot.rules;
        let fields = fields::request_fields(parts, conn, &ctx.host, &ctx.auth);
        let counters = self.metrics.rule_counters(rules);
        let started = Instant::now();
        let decided = rules.decide(&fields, |index| {
            self.metrics.rule_matched(&counters, index);
            trace.rule(rules, index);
        });
        self.metrics
            .rule_seconds
            .observe(started.elapsed().as_secs_f64());
        match decided {
            Some((id, Action::Block)) => Err(Respond::new(
                Stage::Firewall,
                blocked(&parts.headers, &ctx.snapshot.block_message, id),
            )),
            _ => Ok(()),
        }
    }

    /// **Upstream request.** Runs for a request the firewall let through:
    /// makes the origin's request from it. The target becomes the origin's
    /// (502 when the hostname has none, 400 when the target cannot be
    /// rewritten); the headers are set by [`Terminator::forward_headers`].
    /// An `h2c://` origin gets HTTP/2 (with `te: trailers` when the client
    /// sent it); an `http://` origin HTTP/1.1. A WebSocket upgrade keeps its
    /// `Connection`/`Upgrade` headers (an `http://` origin only, else 502), and
    /// a gRPC request needs an `h2c://` origin (else 502). `Ok`: the request to send.
    pub fn upstream_request<'a>(
        &self,
        conn: &ConnInfo,
        ctx: &'a RequestCtx<'_>,
        (mut parts, body): (Parts, Incoming),
    ) -> Phase<UpstreamRequest<'a>> {
        // The hostname's entry in the current snapshot: where requests go, and
        // with what, follows a change from the next request.
        let entry = ctx.snapshot.lookup(conn.sni.as_deref());
        let refuse = |status, why: String| Respond::local(Stage::UpstreamRequest, status, why);
        let Some(origin) = entry.origin.as_deref() else {
            let why = format!("{} has no origin configured", entry.name);
            return Err(refuse(StatusCode::BAD_GATEWAY, why));
        };
        let h2 = origin.scheme_str() == Some(H2C);
        let upgrade = upgrade::take(&mut parts);
        if h2 && upgrade.is_some() {
            let why = format!("WebSockets need an http:// origin; {origin} is HTTP/2");
            return Err(refuse(StatusCode::BAD_GATEWAY, why));
        }
        if !h2 && headers::is_grpc(&parts.headers) {
            let why = format!("gRPC needs an h2c:// origin; {origin} is HTTP/1.1");
            return Err(refuse(StatusCode::BAD_GATEWAY, why));
        }
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = Uri::builder()
            .scheme("http")
            .authority(origin.authority().map_or("", |a| a.as_str()))
            .path_and_query(path)
            .build()
            .map_err(|e| refuse(StatusCode::BAD_REQUEST, format!("bad request target: {e}")))?;
        let trailers = h2 && headers::te_trailers(&parts.headers);
        self.forward_headers(conn, ctx, entry, &mut parts.headers);
        if trailers {
            parts
                .headers
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if let Some(upgrade) = &upgrade {
            upgrade.restore(&mut parts.headers);
        }
        parts.version = if h2 {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        let request = Request::from_parts(parts, body);
        Ok(UpstreamRequest {
            origin,
            request,
            h2,
            upgrade,
        })
    }

    /// The origin's request headers: the client's reserved and hop-by-hop
    /// headers are removed; `Host` becomes the checked host, `X-Forwarded-For`
    /// gains the client's address, `X-Forwarded-Proto` is `https`, and the
    /// client certificate's details are set as the hostname forwards them.
    fn forward_headers(
        &self,
        conn: &ConnInfo,
        ctx: &RequestCtx<'_>,
        entry: &HostTls,
        headers: &mut http::HeaderMap,
    ) {
        headers::strip_incoming(headers);
        // The origin gets exactly the name that was checked.
        if let Ok(v) = HeaderValue::from_str(&ctx.host) {
            headers.insert(header::HOST, v);
        }
        let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
            Some(prior) => format!("{prior}, {}", conn.peer.ip()),
            None => conn.peer.ip().to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            headers.insert("x-forwarded-for", v);
        }
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        headers::set_client_cert(headers, entry.forward, &ctx.auth);
    }

    /// Sends the origin's request (between the upstream request and response
    /// phases), over HTTP/2 or HTTP/1.1 as [`UpstreamRequest::h2`] says. The
    /// timeout runs until the response's headers: a long body (a stream) is
    /// not cut. `Err`: the origin did not answer in time (504) or could not
    /// be reached (502).
    pub async fn send_upstream(
        &self,
        origin: &Uri,
        request: Request<Incoming>,
        h2: bool,
    ) -> Phase<Response<Incoming>> {
        let client = if h2 {
            &self.origin.h2
        } else {
            &self.origin.client
        };
        let sent = client.request(request);
        match tokio::time::timeout(self.origin.timeout, sent).await {
            Err(_) => Err(Respond::local(
                Stage::OriginError,
                StatusCode::GATEWAY_TIMEOUT,
                format!("origin {origin} did not answer in time"),
            )),
            Ok(Err(e)) => Err(Respond::local(
                Stage::OriginError,
                StatusCode::BAD_GATEWAY,
                format!("origin {origin} unreachable: {e}"),
            )),
            Ok(Ok(response)) => Ok(response),
        }
    }

    /// **Response.** Runs when the origin answered: its response goes to the
    /// client without hop-by-hop headers, its body (and trailers) streamed.
    /// The origin's 101 to a WebSocket upgrade opens the tunnel (see
    /// [`upgrade`]) and keeps its `Connection` and `Upgrade` headers.
    pub fn response(
        &self,
        conn: &Arc<ConnInfo>,
        response: Response<Incoming>,
        upgrade: Option<ClientUpgrade>,
    ) -> Response<Body> {
        let (response, tunnel) = match upgrade {
            Some(upgrade) => upgrade.splice(conn, &self.metrics, response),
            None => (response, false),
        };
        let (mut parts, body) = response.into_parts();
        for name in headers::HOP_BY_HOP {
            if !(tunnel && (name == "connection" || name == "upgrade")) {
                parts.headers.remove(name);
            }
        }
        Response::from_parts(parts, body.boxed())
    }

    /// **Logging.** Runs last, once for every request that got a response,
    /// whichever phase made it (refusals and origin errors included). Counts
    /// it by hostname and status (handles resolved once per hostname entry:
    /// one atomic add) and observes its duration. A request the access log
    /// keeps gets its record attached to the response's body: its line is
    /// built and queued when the body ends or the connection is cut.
    pub fn logging(
        &self,
        outcome: &Outcome<'_>,
        trace: Trace,
        response: Response<Body>,
    ) -> Response<Body> {
        self.metrics
            .host_requests(&outcome.conn.host)
            .count(outcome.status.as_u16());
        self.metrics
            .request_seconds
            .observe(outcome.elapsed.as_secs_f64());
        trace.respond(outcome.answered_by, outcome.started, response)
    }
}
