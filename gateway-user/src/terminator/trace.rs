//! What the access log needs of one request, gathered as the phases run (only
//! when the access log is on and keeps this request), and written when the
//! response's body ends or is dropped (the connection cut): [`Trace`] rides
//! the request, [`TracedBody`] the response.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Frame, SizeHint};

use super::{ConnInfo, phases::Stage, service::Body};
use crate::{
    logs::{Log, Logs, access::Entry},
    rules::{RuleSet, fields::ClientAuth},
};

/// A request being traced for the access log; empty when it is not logged.
#[derive(Default)]
pub struct Trace(Option<Box<Record>>);

/// What a traced request gathered.
struct Record {
    log: Arc<Log>,
    conn: Arc<ConnInfo>,
    start: SystemTime,
    ray: u64,
    method: Method,
    uri: Uri,
    version: Version,
    host: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    /// The client certificate's outcome re-checked for the request, when it
    /// differs from the connection's.
    auth: Option<ClientAuth>,
    rule: Option<(Arc<RuleSet>, usize)>,
    origin: Option<(u16, Duration)>,
    status: u16,
    stage: Stage,
    ttfb: Duration,
}

impl Trace {
    /// Starts tracing `req` (ray id `ray`) if the access log is on and keeps it.
    pub fn begin<B>(logs: &Logs, conn: &Arc<ConnInfo>, req: &Request<B>, ray: u64) -> Trace {
        let Some(log) = logs.access.as_ref().filter(|l| l.sampled()) else {
            return Trace(None);
        };
        let headers = req.headers();
        Trace(Some(Box::new(Record {
            log: log.clone(),
            conn: conn.clone(),
            start: SystemTime::now(),
            ray,
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            host: headers.get(header::HOST).cloned(),
            user_agent: headers.get(header::USER_AGENT).cloned(),
            auth: None,
            rule: None,
            origin: None,
            status: 0,
            stage: Stage::Response,
            ttfb: Duration::ZERO,
        })))
    }

    /// The client certificate's outcome as re-checked for this request,
    /// when the re-check changed it.
    pub fn auth(&mut self, rechecked: &ClientAuth) {
        if let Some(r) = &mut self.0 {
            r.auth = Some(rechecked.clone());
        }
    }

    /// Rule `index` of `rules` matched (the last one to match decided, or was
    /// the last log rule).
    pub fn rule(&mut self, rules: &Arc<RuleSet>, index: usize) {
        if let Some(r) = &mut self.0 {
            match &mut r.rule {
                Some((set, i)) if Arc::ptr_eq(set, rules) => *i = index,
                other => *other = Some((rules.clone(), index)),
            }
        }
    }

    /// The origin answered `status`, `took` after the request was sent.
    pub fn origin(&mut self, status: StatusCode, took: Duration) {
        if let Some(r) = &mut self.0 {
            r.origin = Some((status.as_u16(), took));
        }
    }

    /// The response is ready (`stage` made it, `started` is when the request
    /// came): a traced request's body carries its record, written when the
    /// body ends or is dropped.
    pub fn respond(
        self,
        stage: Stage,
        started: Instant,
        response: Response<Body>,
    ) -> Response<Body> {
        let Some(mut record) = self.0 else {
            return response;
        };
        record.stage = stage;
        record.status = response.status().as_u16();
        record.ttfb = started.elapsed();
        response.map(|inner| {
            TracedBody {
                inner,
                record: Some(record),
                bytes: 0,
                ended: false,
            }
            .boxed()
        })
    }
}

/// A response body that counts what it sends and writes its request's line
/// when it ends or is dropped.
struct TracedBody {
    inner: Body,
    record: Option<Box<Record>>,
    bytes: u64,
    ended: bool,
}

impl hyper::body::Body for TracedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => {
                this.ended = true;
                this.write();
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl TracedBody {
    /// Writes the line, once.
    fn write(&mut self) {
        let Some(r) = self.record.take() else { return };
        let complete = self.ended || self.inner.is_end_stream();
        let conn = &*r.conn;
        let mtls = conn
            .host
            .mtls
            .is_some()
            .then(|| r.auth.as_ref().unwrap_or(&conn.auth));
        let rule = r.rule.as_ref().and_then(|(set, i)| {
            let rule = set.rules().get(*i)?;
            Some((
                rule.action.as_str(),
                rule.id.as_str(),
                rule.description.as_str(),
            ))
        });
        let host = match &r.host {
            Some(h) => h.as_bytes(),
            None => r
                .uri
                .authority()
                .map_or(&b""[..], |a| a.as_str().as_bytes()),
        };
        let entry = Entry {
            start: r.start,
            end: SystemTime::now(),
            ray: r.ray,
            client: conn.peer,
            host,
            method: r.method.as_str(),
            uri: r.uri.path_and_query().map_or("/", |p| p.as_str()),
            protocol: protocol(r.version),
            user_agent: r
                .user_agent
                .as_ref()
                .map_or(&b""[..], HeaderValue::as_bytes),
            tls_version: conn.tls_version,
            tls_cipher: &conn.tls_cipher,
            sni: conn.sni.as_deref().unwrap_or_default(),
            mtls,
            rule,
            status: r.status,
            bytes: self.bytes,
            ttfb: r.ttfb,
            origin: r.origin,
            stage: r.stage.as_str(),
            complete,
        };
        r.log.send(entry.line(r.log.fields()));
    }
}

impl Drop for TracedBody {
    fn drop(&mut self) {
        self.write();
    }
}

/// `ClientRequestProtocol`'s value.
fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "",
    }
}
