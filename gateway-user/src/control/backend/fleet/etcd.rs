//! The connection to etcd: one endpoint at a time, moving to the next when a
//! call fails the way a lost member fails (the client crate does not fail
//! over by itself), with jittered backoff between attempts.

use std::{
    future::Future,
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use anyhow::Context;
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

/// How long one call may take before it counts as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// The first and the longest pause between attempts.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(2));

/// How to reach etcd.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// Client URLs of the cluster's members (`http://` or `https://`).
    pub endpoints: Vec<String>,
    /// CA certificate that signs the members' certificates (PEM).
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM), for etcd's client-certificate auth.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// A connection to one member at a time.
pub struct Etcd {
    options: EtcdOptions,
    connect: ConnectOptions,
    /// Which endpoint is in use.
    current: AtomicUsize,
    client: tokio::sync::Mutex<Option<Client>>,
    /// The last failure, with its endpoint: what a start that times out
    /// reports (a TLS or permission problem looks like silence otherwise).
    last_error: std::sync::Mutex<Option<String>>,
}

/// Whether a failed call may succeed on another member or later: transport
/// errors, timeouts, "no leader", "leader changed", "too many requests".
/// Refusals (bad arguments, permissions, a request too large, a compacted
/// revision) fail the same everywhere.
pub fn is_transient(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    match e {
        etcd_client::Error::GRpcStatus(s) => !matches!(
            s.code(),
            Code::InvalidArgument
                | Code::PermissionDenied
                | Code::Unauthenticated
                | Code::FailedPrecondition
                | Code::OutOfRange
        ),
        etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_) => false,
        _ => true,
    }
}

/// The error of a call that took longer than [`CALL_TIMEOUT`].
pub fn timed_out<T>() -> Result<T, etcd_client::Error> {
    Err(etcd_client::Error::EndpointError("timed out".into()))
}

impl Etcd {
    /// Checks the options and reads the TLS files; connects on first use.
    pub fn new(options: EtcdOptions) -> anyhow::Result<Etcd> {
        anyhow::ensure!(!options.endpoints.is_empty(), "--etcd names no endpoint");
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        if options.ca.is_some() || options.identity.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &options.ca {
                let pem = std::fs::read(ca)
                    .with_context(|| format!("cannot read --etcd-ca {}", ca.display()))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            if let Some((cert, key)) = &options.identity {
                let read = |p: &PathBuf| {
                    std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
                };
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            connect = connect.with_tls(tls);
        }
        Ok(Etcd {
            options,
            connect,
            current: AtomicUsize::new(0),
            client: tokio::sync::Mutex::new(None),
            last_error: std::sync::Mutex::new(None),
        })
    }

    /// The endpoint in use.
    pub fn endpoint(&self) -> &str {
        let i = self.current.load(Ordering::Relaxed) % self.options.endpoints.len();
        &self.options.endpoints[i]
    }

    /// A client of the endpoint in use, connecting if needed.
    pub async fn client(&self) -> Result<Client, etcd_client::Error> {
        let mut slot = self.client.lock().await;
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let endpoint = self.endpoint().to_string();
        let connect = Client::connect([endpoint.as_str()], Some(self.connect.clone()));
        let client = tokio::time::timeout(CALL_TIMEOUT, connect)
            .await
            .map_err(|_| etcd_client::Error::EndpointError(format!("{endpoint}: no answer")))??;
        *slot = Some(client.clone());
        Ok(client)
    }

    /// The last failure seen, with its endpoint.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Records a failure of the endpoint in use.
    pub fn failed(&self, e: &etcd_client::Error) {
        let text = format!("{}: {e}", self.endpoint());
        log::debug!("etcd {text}");
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
    }

    /// Which connection is in use: what a caller names when it fails over.
    pub fn generation(&self) -> usize {
        self.current.load(Ordering::Relaxed)
    }

    /// Drops the connection of `generation` and moves to the next endpoint,
    /// unless another caller has moved on already (several tasks failing at
    /// once move one step, not one each).
    pub async fn fail_over(&self, generation: usize) {
        let mut slot = self.client.lock().await;
        let moved = self.current.compare_exchange(
            generation,
            generation + 1,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        if moved.is_ok() {
            *slot = None;
            log::debug!(
                "etcd: moving to {}",
                self.options.endpoints[(generation + 1) % self.options.endpoints.len()]
            );
        }
    }

    /// Runs `call` until it succeeds, fails for good, or `budget` is spent,
    /// moving to the next member after each transient failure.
    pub async fn retry<T, F, Fut>(
        &self,
        budget: Duration,
        mut call: F,
    ) -> Result<T, etcd_client::Error>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = tokio::time::Instant::now() + budget;
        let mut backoff = Backoff::new();
        loop {
            let generation = self.generation();
            let attempt = async {
                let client = self.client().await?;
                tokio::time::timeout(CALL_TIMEOUT, call(client))
                    .await
                    .unwrap_or_else(|_| timed_out())
            };
            match attempt.await {
                Ok(v) => return Ok(v),
                Err(e) if !is_transient(&e) => {
                    self.failed(&e);
                    return Err(e);
                }
                Err(e) => {
                    self.failed(&e);
                    self.fail_over(generation).await;
                    if tokio::time::Instant::now() + backoff.peek() >= deadline {
                        return Err(e);
                    }
                    backoff.wait().await;
                }
            }
        }
    }
}

/// Exponential backoff with full jitter.
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    /// Starts at the shortest pause.
    pub fn new() -> Backoff {
        Backoff { next: BACKOFF.0 }
    }

    /// The longest the next pause can be.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Sleeps a random part of the current pause, then doubles it (up to the cap).
    pub async fn wait(&mut self) {
        let mut byte = [0u8; 1];
        let _ = boring::rand::rand_bytes(&mut byte);
        let jitter = 0.5 + f64::from(byte[0]) / 510.0;
        tokio::time::sleep(self.next.mul_f64(jitter)).await;
        self.next = (self.next * 2).min(BACKOFF.1);
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}
