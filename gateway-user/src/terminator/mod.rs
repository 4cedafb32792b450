//! The TLS terminator: accepts connections, runs the BoringSSL handshake under
//! limits and timeouts, and serves HTTP/1.1 and HTTP/2 (by ALPN) on top,
//! handing each request to [`service`], which runs the [`phases`].

pub mod fields;
pub mod grpc;
mod handshake_log;
pub mod headers;
pub mod hello_gate;
pub mod metrics;
pub mod phases;
pub mod service;
pub mod trace;
pub mod upgrade;

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicU64},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use boring::ssl::SslAcceptor;
use hyper::service::service_fn;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{
        conn::auto,
        graceful::{GracefulShutdown, Watcher},
    },
};
use log::{debug, info};
use tokio::{net::TcpListener, sync::Semaphore};

use metrics::ClientCertStatus;
pub use metrics::TerminatorMetrics;

use crate::{
    config::TerminatorSection,
    logs::Logs,
    rules::fields::ClientAuth,
    tls::{HostTls, TlsSnapshot, acceptor, resumption},
};

/// What a request knows about its connection.
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The SNI the client sent, lowercased.
    pub sni: Option<String>,
    /// The hostname policy chosen by the SNI.
    pub host: Arc<HostTls>,
    /// The client certificate's outcome.
    pub auth: Arc<ClientAuth>,
    /// Negotiated version, e.g. `TLSv1.3`.
    pub tls_version: &'static str,
    /// Negotiated cipher (BoringSSL's name).
    pub tls_cipher: String,
    /// Requests served so far on this connection.
    pub requests: AtomicU64,
    /// Its place under `max_connections`, held as long as the connection or
    /// a WebSocket tunnel made from it lives.
    pub slot: ConnSlot,
}

/// A connection's place under `max_connections`, counted in
/// `gateway_tls_open_connections` until dropped.
pub struct ConnSlot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    metrics: Arc<TerminatorMetrics>,
}

impl ConnSlot {
    fn new(permit: tokio::sync::OwnedSemaphorePermit, metrics: &Arc<TerminatorMetrics>) -> Self {
        metrics.open_connections.inc();
        ConnSlot {
            _permit: permit,
            metrics: metrics.clone(),
        }
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.metrics.open_connections.dec();
    }
}

/// The terminator: shared by every connection.
pub struct Terminator {
    snapshot: Arc<ArcSwap<TlsSnapshot>>,
    acceptor: SslAcceptor,
    limits: TerminatorSection,
    connections: Arc<Semaphore>,
    handshakes: Arc<Semaphore>,
    metrics: Arc<TerminatorMetrics>,
    origin: service::OriginClient,
    logs: Arc<Logs>,
}

impl Terminator {
    /// A terminator serving whatever snapshot `snapshot` holds at each handshake.
    pub fn new(
        snapshot: Arc<ArcSwap<TlsSnapshot>>,
        limits: TerminatorSection,
        metrics: Arc<TerminatorMetrics>,
    ) -> anyhow::Result<Terminator> {
        Ok(Terminator {
            acceptor: acceptor::acceptor(snapshot.clone(), limits.ticket_key_rotation_secs)?,
            snapshot,
            connections: Arc::new(Semaphore::new(limits.max_connections.max(1))),
            handshakes: Arc::new(Semaphore::new(limits.max_handshakes.max(1))),
            origin: service::OriginClient::new(Duration::from_millis(limits.origin_timeout_ms)),
            limits,
            metrics,
            logs: Arc::new(Logs::off()),
        })
    }

    /// The terminator, writing to `logs` (access and handshake logs).
    pub fn with_logs(mut self, logs: Arc<Logs>) -> Terminator {
        self.logs = logs;
        self
    }

    /// Accepts connections until `shutdown` fires, then lets open requests
    /// finish (up to `grace`) and returns.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
        grace: Duration,
    ) {
        let graceful = GracefulShutdown::new();
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        debug!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                self.metrics.rejected_connections.inc();
                continue; // dropping the socket closes it
            };
            let _ = tcp.set_nodelay(true);
            let this = self.clone();
            let watcher = graceful.watcher();
            let slot = ConnSlot::new(permit, &this.metrics);
            tokio::spawn(async move { this.connection(tcp, peer, slot, watcher).await });
        }
        drop(listener);
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            info!("terminator: connections still open after {grace:?}; closing them");
        }
        // The last requests' lines, before the process ends.
        let logs = self.logs.clone();
        let _ = tokio::task::spawn_blocking(move || logs.flush(Duration::from_secs(2))).await;
    }

    /// Counts a completed handshake: its version, its kind (and why an
    /// offered session was not resumed), and on an mTLS hostname the client
    /// certificate's status.
    fn count_handshake(&self, ssl: &boring::ssl::SslRef, host: &HostTls, auth: &ClientAuth) {
        self.metrics.handshake_ok(ssl.version_str());
        let (kind, refused) = resumption::outcome(ssl);
        self.metrics.handshake_kind(kind, refused);
        if host.mtls.is_some() {
            let status = match (&auth.presented, auth.verified, auth.revoked) {
                (false, _, _) => ClientCertStatus::None,
                (_, true, true) => ClientCertStatus::Revoked,
                (_, true, false) => ClientCertStatus::Verified,
                (_, false, _) => ClientCertStatus::Invalid,
            };
            self.metrics.client_cert(status);
        }
    }

    async fn connection(
        self: &Arc<Self>,
        tcp: tokio::net::TcpStream,
        peer: SocketAddr,
        slot: ConnSlot,
        watcher: Watcher,
    ) {
        // Wait for the client's whole hello before taking a handshake slot:
        // idle connections must not hold the slots that working clients need.
        // One deadline covers the wait and the handshake.
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.limits.handshake_timeout_ms);
        // The whole hello first (see hello_gate): a split hello the XDP filter
        // refuses on its last segment then costs no TLS state.
        match tokio::time::timeout_at(deadline, hello_gate::wait_for_hello(&tcp)).await {
            Ok(Ok(true)) => {}
            Ok(_) => return, // closed, or reset (by the XDP filter among others)
            Err(_) => {
                hello_gate::discard_queued(&tcp);
                return self.handshake_timed_out(peer, false);
            }
        }
        let started = Instant::now();
        let handshake = async {
            let _slot = self.handshakes.acquire().await;
            tokio_boring::accept(&self.acceptor, tcp).await
        };
        let stream = match tokio::time::timeout_at(deadline, handshake).await {
            Err(_) => return self.handshake_timed_out(peer, true),
            Ok(Err(e)) => {
                debug!("handshake with {peer}: {e}");
                return self.handshake_refused(peer, &e);
            }
            Ok(Ok(stream)) => stream,
        };
        self.metrics
            .handshake_seconds
            .observe(started.elapsed().as_secs_f64());
        let ssl = stream.ssl();
        let Some((host, auth)) = acceptor::connection_policy(ssl, &self.snapshot.load()) else {
            return;
        };
        let tls_version = ssl.version_str();
        self.count_handshake(ssl, &host, &auth);
        self.log_handshake_completed(peer, ssl, &host, &auth);
        let info = Arc::new(ConnInfo {
            peer,
            sni: ssl
                .servername(boring::ssl::NameType::HOST_NAME)
                .map(str::to_ascii_lowercase),
            host,
            auth: Arc::new(auth),
            tls_version,
            tls_cipher: ssl
                .current_cipher()
                .map(|c| c.name().to_string())
                .unwrap_or_default(),
            requests: AtomicU64::new(0),
            slot,
        });
        let this = self.clone();
        let svc = service_fn(move |req| {
            let (this, info) = (this.clone(), info.clone());
            async move { Ok::<_, std::convert::Infallible>(this.handle(&info, req).await) }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(self.limits.header_timeout_ms))
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .max_concurrent_streams(250);
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
        if let Err(e) = watcher.watch(conn.into_owned()).await {
            debug!("connection with {peer}: {e}");
        }
    }
}
