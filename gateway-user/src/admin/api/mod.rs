//! The admin API: HTTP/1.1 + JSON on loopback, shaped like the reference
//! service's v4 API (`/client/v4/...`, the `{"success","errors","messages",
//! "result"}` envelope). Every call needs `Authorization: Bearer <token>`.
//!
//! Routes (Z: the zone id, A: the account id):
//!
//! | route | methods |
//! |---|---|
//! | `/client/v4/zones`, `/client/v4/zones/Z` | GET |
//! | `/client/v4/zones/Z/settings/{min_tls_version,ciphers,session_resumption}` | GET, PATCH `{"value":…}` |
//! | `/client/v4/zones/Z/custom_hostnames[/ID]` | GET, POST / GET, PATCH, DELETE |
//! | `/client/v4/zones/Z/certificate_authorities/hostname_associations` | GET `?mtls_certificate_id=`, PUT |
//! | `/client/v4/zones/Z/client_certificates[/ID]` | GET, POST / GET, PATCH (reactivate), DELETE (revoke) |
//! | `/client/v4/zones/Z/managed_ca` | GET |
//! | `/client/v4/zones/Z/rulesets` | GET, POST |
//! | `/client/v4/zones/Z/rulesets/{ID or phases/http_request_firewall_custom/entrypoint}` | GET, PUT, DELETE |
//! | `…/rules[/RULE]` | POST / PATCH, DELETE |
//! | `…/versions[/N]` | GET |
//! | `/client/v4/zones/Z/expiring_certificates?days=30` | GET |
//! | `/client/v4/accounts/A/mtls_certificates[/ID]` | GET, POST / GET, DELETE |
//! | `/client/v4/accounts/A/mtls_certificates/ID/crl[/refresh]` | PUT, DELETE / POST |
//! | `/client/v4/accounts/A/mtls_certificates/ID/associations` | GET |
//! | `/client/v4/accounts/A/audit_logs?since=&before=` | GET |
//! | `/client/v4/accounts/A/fleet/nodes` (fleet mode) | GET |
//! | `/client/v4/zones/Z/filters/validate-expr` | POST `{"expression":…}` |
//! | `/client/v4/accounts/A/gateway/charts` | GET: the last 15 minutes of both layers' counters, and whether XDP is attached |
//! | `/client/v4/user/tokens[/ID[/value]]`, `…/verify`, `…/permission_groups` | see [`tokens`] |
//!
//! Lists take `page` and `per_page` and answer `result_info` ([`page`]).
//!
//! Every other path is the dashboard ([`super::dashboard`]): static assets that
//! hold no data and call the routes above with the token the user signs in with.

use std::{collections::HashMap, convert::Infallible, sync::Arc, time::Duration};

use boring::ssl::SslAcceptor;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use log::{info, warn};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::dashboard;
use crate::control::{
    ControlError, ControlPlane,
    audit::{self, Actor},
    tokens::{Caller, Permission},
};
use crate::metrics::history::History;

mod acme;
mod cas;
mod certs;
mod fleet;
mod hostnames;
pub mod page;
mod rules;
mod tokens;
mod zone;

/// Largest request body accepted.
const MAX_BODY: usize = 1 << 20;

/// An error the API answers with: status, code and a message a person can act on.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Numeric code, as the reference service gives.
    pub code: u32,
    /// What went wrong and what to do.
    pub message: String,
    /// Where in the request, e.g. the position of an expression error.
    pub source: Option<Value>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: u32, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            source: None,
        }
    }

    /// 400: the request is wrong.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, 1004, message)
    }

    /// A 400 with code `code`.
    pub fn invalid_with(code: u32, message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404: no such object.
    pub fn not_found(what: &str, id: &str) -> ApiError {
        Self::new(
            StatusCode::NOT_FOUND,
            1003,
            format!("{what} {id:?} not found"),
        )
    }

    /// 409: the object is in use or already exists.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::CONFLICT, 1009, message)
    }

    /// 500: the gateway failed.
    pub fn internal(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, 1000, message)
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Invalid(m) => ApiError::invalid(m),
            ControlError::Conflict(m) => ApiError::conflict(m),
            ControlError::Unavailable(m) => Self::new(StatusCode::SERVICE_UNAVAILABLE, 1000, m),
            ControlError::Internal(m) => ApiError::internal(m),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::internal(format!("{e:#}"))
    }
}

/// What a handler answers: the `result`, and a list's `result_info` (its page).
#[derive(Debug)]
pub struct Reply {
    /// The `result`.
    pub result: Value,
    /// For a list, the page it is.
    pub result_info: Option<Value>,
}

impl From<Value> for Reply {
    fn from(result: Value) -> Reply {
        Reply {
            result,
            result_info: None,
        }
    }
}

/// What a handler of one object answers: its `result`.
pub type Answer = Result<Value, ApiError>;

/// What a list's handler answers: one page of it.
pub type Listing = Result<Reply, ApiError>;

/// One API call, parsed.
pub struct Call {
    /// The method.
    pub method: Method,
    /// Path segments after `/client/v4/`.
    pub path: Vec<String>,
    /// Query parameters.
    pub query: HashMap<String, String>,
    /// The body.
    pub body: Bytes,
}

impl Call {
    /// The body as `T` (a JSON object), or a 400 that says what is wrong.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::invalid(
                "the request needs a JSON object body (Content-Type: application/json)",
            ));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
    }
}

/// Serializes a record for an answer.
pub fn to_value(value: impl Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(value).map_err(|e| ApiError::internal(e.to_string()))
}

/// What the admin listener serves from: the control plane, and the counters'
/// history the dashboard charts.
#[derive(Clone)]
pub struct Admin {
    /// The control plane the API reads and changes.
    pub plane: Arc<ControlPlane>,
    /// The last minutes of both layers' counters.
    pub history: Arc<History>,
}

/// Serves the API and the dashboard on `listener` until `shutdown` resolves:
/// HTTPS with `tls`, else plain HTTP.
pub async fn serve(
    listener: TcpListener,
    admin: Admin,
    tls: Option<Arc<SslAcceptor>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    if let Ok(addr) = listener.local_addr() {
        let scheme = if tls.is_some() { "https" } else { "http" };
        info!("admin API on {scheme}://{addr}/client/v4/");
    }
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!("admin API accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (admin, tls) = (admin.clone(), tls.clone());
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, admin).await,
                Some(acceptor) => {
                    let handshake = tokio_boring::accept(&acceptor, stream);
                    match tokio::time::timeout(Duration::from_secs(10), handshake).await {
                        Ok(Ok(stream)) => serve_connection(stream, admin).await,
                        Ok(Err(e)) => log::debug!("admin API TLS handshake: {e}"),
                        Err(_) => log::debug!("admin API TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// One connection's requests, in HTTP/1.1.
async fn serve_connection<S>(stream: S, admin: Admin)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let admin = admin.clone();
        async move {
            if !req.uri().path().starts_with("/client/v4/") {
                return Ok::<_, Infallible>(dashboard::asset(req.method(), req.uri().path()));
            }
            Ok(handle(&admin, req).await)
        }
    });
    // hyper runs this timeout on an idle keep-alive connection too: 10 s after
    // its last answer it is closed (with a 408). A browser that sends on it at
    // that instant sends again on another connection (Chromium does, on a reused one).
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = conn.await {
        log::debug!("admin API connection: {e}");
    }
}

async fn handle(admin: &Admin, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let plane = &*admin.plane;
    let answer = match authorize(plane, &req).await {
        Err(e) => Err(e),
        Ok(caller) => match read(req).await {
            Err(e) => Err(e),
            Ok(call) => {
                let what = format!("{} /client/v4/{}", call.method, call.path.join("/"));
                let actor = Actor {
                    token_id: caller.id.clone(),
                    token_name: caller.name.clone(),
                    method: call.method.to_string(),
                    path: call.path.join("/"),
                };
                let answer = match permitted(&call, &caller) {
                    Err(e) => Err(e),
                    Ok(()) => audit::acting(actor, route(admin, &call, &caller)).await,
                };
                if let Err(e) = &answer
                    && e.status.is_server_error()
                {
                    warn!("admin API {what}: {}", e.message);
                }
                answer
            }
        },
    };
    envelope(answer, fleet::marks(plane))
}

async fn authorize(plane: &ControlPlane, req: &Request<Incoming>) -> Result<Caller, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            10000,
            "authentication error: send the admin token as \"Authorization: Bearer <token>\"",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .unwrap_or_default();
    let caller = match token {
        "" => None,
        token => plane.caller(token).await,
    };
    caller.ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            10000,
            "authentication error: the token is not valid or has expired (the first run \
             printed one; `gateway token create` makes more)",
        )
    })
}

/// The permission group a call needs: reading (GET) or changing what it
/// names. Listing the zone and verifying one's own token need none.
fn needed(call: &Call) -> Option<Permission> {
    let path: Vec<&str> = call.path.iter().map(String::as_str).collect();
    let read = call.method == Method::GET;
    let pick = |r: Permission, w: Permission| Some(if read { r } else { w });
    match path.as_slice() {
        ["zones"] | ["zones", _] => None,
        // Checking an expression changes nothing.
        ["zones", _, "filters", "validate-expr"] => Some(Permission::FirewallRead),
        ["zones", _, "settings", ..] => pick(Permission::ZoneRead, Permission::ZoneWrite),
        ["zones", _, "rulesets", ..] => pick(Permission::FirewallRead, Permission::FirewallWrite),
        ["zones", _, ..] | ["accounts", _, "mtls_certificates", ..] => {
            pick(Permission::SslRead, Permission::SslWrite)
        }
        ["accounts", _, "audit_logs"] | ["accounts", _, "fleet", ..] => Some(Permission::AuditRead),
        ["accounts", _, "gateway", "charts"] => Some(Permission::AnalyticsRead),
        ["user", "tokens", "verify"] => None,
        ["user", "tokens", ..] => pick(Permission::TokensRead, Permission::TokensWrite),
        _ => None,
    }
}

/// 403, naming the permission group, unless the token holds what the call needs.
fn permitted(call: &Call, caller: &Caller) -> Result<(), ApiError> {
    match needed(call) {
        Some(p) if !caller.may(p) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            9109,
            format!(
                "the token {:?} lacks the \"{p}\" permission this call needs",
                caller.name
            ),
        )),
        _ => Ok(()),
    }
}

async fn read(req: Request<Incoming>) -> Result<Call, ApiError> {
    let (parts, body) = req.into_parts();
    let Some(rest) = parts.uri.path().strip_prefix("/client/v4/") else {
        return Err(no_route());
    };
    let path = rest
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    // Percent-decoded; a repeated parameter keeps its last value.
    let query = form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    1005,
                    format!("the request body is larger than {MAX_BODY} bytes"),
                )
            } else {
                ApiError::invalid(format!("the request body could not be read: {e}"))
            }
        })?
        .to_bytes();
    Ok(Call {
        method: parts.method,
        path,
        query,
        body,
    })
}

fn no_route() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        7000,
        "no route for that URI (see the routes in the README)",
    )
}

/// 405 for a known route.
pub fn method_not_allowed(allowed: &str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        10405,
        format!("method not allowed here; use {allowed}"),
    )
}

/// Lists answer a page ([`Listing`]); everything else one object.
async fn route(admin: &Admin, call: &Call, caller: &Caller) -> Listing {
    let plane = &*admin.plane;
    let path: Vec<&str> = call.path.iter().map(String::as_str).collect();
    let (zone_id, account_id) = plane
        .read(|s| (s.meta.zone_id.clone(), s.meta.account_id.clone()))
        .await;
    let get = call.method == Method::GET;
    let one = |answer: Answer| answer.map(Reply::from);
    match path.as_slice() {
        ["zones"] if get => zone::list(plane, call).await,
        ["zones"] => Err(method_not_allowed("GET")),
        ["zones", z, rest @ ..] => {
            if *z != zone_id {
                return Err(ApiError::not_found("zone", z));
            }
            match rest {
                [] if get => one(plane.read(|s| Ok(zone::view(s))).await),
                [] => Err(method_not_allowed("GET")),
                ["settings", ..] => one(zone::settings(plane, call, &rest[1..]).await),
                ["custom_hostnames"] if get => hostnames::list(plane, call).await,
                ["custom_hostnames", ..] => one(hostnames::route(plane, call, &rest[1..]).await),
                ["certificate_authorities", "hostname_associations"] => {
                    one(hostnames::associations(plane, call).await)
                }
                ["client_certificates"] if get => certs::list(plane, call).await,
                ["client_certificates", ..] => one(certs::route(plane, call, &rest[1..]).await),
                ["managed_ca"] => one(certs::managed_ca(plane, call).await),
                ["rulesets"] => rules::collection(plane, call).await,
                ["rulesets", "phases", phase, "entrypoint", more @ ..] => {
                    if *phase != rules::PHASE {
                        return Err(ApiError::not_found("ruleset phase", phase));
                    }
                    rules::route(plane, call, None, more).await
                }
                ["rulesets", id, more @ ..] => rules::route(plane, call, Some(id), more).await,
                ["filters", "validate-expr"] if call.method == Method::POST => {
                    one(rules::validate(call))
                }
                ["filters", "validate-expr"] => Err(method_not_allowed("POST")),
                ["expiring_certificates"] if get => zone::expiring(plane, call).await,
                ["expiring_certificates"] => Err(method_not_allowed("GET")),
                _ => Err(no_route()),
            }
        }
        ["user", "tokens", rest @ ..] => tokens::route(plane, call, caller, rest).await,
        ["accounts", a, "audit_logs"] => {
            account_read(a, &account_id, get)?;
            audit_logs(plane, call).await
        }
        ["accounts", a, "fleet", "nodes"] => {
            account_read(a, &account_id, get)?;
            fleet::nodes(plane).await
        }
        ["accounts", a, "gateway", "charts"] => {
            account_read(a, &account_id, get)?;
            let mut charts = admin.history.charts();
            // The page says "not attached" rather than "refusing 0 packets/s".
            charts["xdp_attached"] = plane.xdp_attached().into();
            Ok(Reply::from(charts))
        }
        ["accounts", a, "mtls_certificates", rest @ ..] => {
            if *a != account_id {
                return Err(ApiError::not_found("account", a));
            }
            match rest {
                [] if get => cas::list(plane, call).await,
                [id, "associations"] if get => cas::associations(plane, call, id).await,
                [_, "associations"] => Err(method_not_allowed("GET")),
                _ => one(cas::route(plane, call, rest).await),
            }
        }
        _ => Err(no_route()),
    }
}

/// For a read-only account route: 404 for another account, 405 for a method
/// other than GET.
fn account_read(asked: &str, account_id: &str, get: bool) -> Result<(), ApiError> {
    match (asked == account_id, get) {
        (false, _) => Err(ApiError::not_found("account", asked)),
        (true, false) => Err(method_not_allowed("GET")),
        (true, true) => Ok(()),
    }
}

/// `GET /accounts/A/audit_logs?since=&before=`: the changes committed, newest
/// first, a page at a time (`since` and `before` are RFC 3339).
async fn audit_logs(plane: &ControlPlane, call: &Call) -> Listing {
    let paging = page::Paging::of(call, page::STANDARD)?;
    let time = |name: &str| -> Result<Option<i64>, ApiError> {
        call.query
            .get(name)
            .map(|t| {
                crate::clock::parse_rfc3339(t).ok_or_else(|| {
                    ApiError::invalid(format!("{name}={t:?}: give an RFC 3339 time"))
                })
            })
            .transpose()
    };
    let (since, before) = (time("since")?, time("before")?);
    let (entries, total) = plane
        .audit(since, before, (paging.page, paging.per_page))
        .await
        .map_err(|e| ApiError::internal(format!("the audit log is unreadable: {e:#}")))?;
    let account = plane.read(|s| s.meta.account_id.clone()).await;
    let views = entries.iter().map(|e| audit_view(e, &account)).collect();
    Ok(paging.reply(views, total))
}

/// An audit entry in the reference's shape, with the call it came from.
fn audit_view(e: &audit::Entry, account: &str) -> Value {
    json!({
        "id": e.seq.to_string(),
        "when": crate::clock::rfc3339(e.at),
        "action": {"type": format!("{} {}", e.actor.method, e.actor.path), "result": e.outcome == "success"},
        "actor": {"id": e.actor.token_id, "email": e.actor.token_name, "type": "user"},
        "interface": if e.actor.token_id == "gateway" { "gateway" } else { "API" },
        "owner": {"id": account},
        "resource": {"id": e.resources.join(","), "type": e.resources.first().and_then(|r| r.split(':').next())},
        "metadata": {"method": e.actor.method, "path": e.actor.path, "resources": e.resources, "outcome": e.outcome, "token_name": e.actor.token_name},
    })
}

fn envelope(answer: Listing, marks: fleet::Marks) -> Response<Full<Bytes>> {
    let (status, body) = match answer {
        Ok(reply) => {
            let mut body =
                json!({"success": true, "errors": [], "messages": [], "result": reply.result});
            if let Some(info) = reply.result_info {
                body["result_info"] = info;
            }
            (StatusCode::OK, body)
        }
        Err(e) => (
            e.status,
            json!({
                "success": false,
                "errors": [match e.source {
                    Some(source) => json!({"code": e.code, "message": e.message, "source": source}),
                    None => json!({"code": e.code, "message": e.message}),
                }],
                "messages": [],
                "result": null,
            }),
        ),
    };
    let mut body = body;
    if let Some(note) = &marks.stale {
        body["messages"] = json!([{"code": 10100, "message": note}]);
    }
    let mut text = serde_json::to_vec_pretty(&body).unwrap_or_default();
    text.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    let headers = response.headers_mut();
    if marks.stale.is_some() {
        headers.insert("x-gateway-stale", header::HeaderValue::from_static("true"));
    }
    if let Some(revision) = marks.revision {
        headers.insert("x-gateway-revision", header::HeaderValue::from(revision));
    }
    response
}
