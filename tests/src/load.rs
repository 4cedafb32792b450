//! Load for benchmarks: a fast origin, and clients that each do full mTLS
//! handshakes (TLS 1.3, X25519, no resumption) and one request per
//! connection, or one handshake and then requests on the kept-alive connection.

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use boring::ssl::{SslConnector, SslFiletype, SslMethod, SslVersion};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// An origin that answers every request with a short `ok`, as fast as it can.
pub async fn fast_origin(listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let svc = service_fn(|_req| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// Who the clients are and where they connect.
#[derive(Clone, Debug)]
pub struct MtlsClient {
    /// Server address.
    pub addr: SocketAddr,
    /// SNI and Host.
    pub host: String,
    /// Trust anchor for the server certificate.
    pub ca: PathBuf,
    /// Client certificate (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
}

/// What a load run measured.
#[derive(Clone, Debug, Default)]
pub struct LoadResult {
    /// Completed handshake + request cycles.
    pub completed: u64,
    /// Failed cycles.
    pub errors: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Handshake latencies (TCP connect to TLS established), sorted.
    pub handshakes: Vec<Duration>,
}

impl LoadResult {
    /// The clients' results summed, timed from `started`, latencies sorted.
    async fn gather(
        tasks: Vec<tokio::task::JoinHandle<LoadResult>>,
        started: Instant,
    ) -> anyhow::Result<LoadResult> {
        let mut total = LoadResult::default();
        for t in tasks {
            let r = t.await?;
            total.completed += r.completed;
            total.errors += r.errors;
            total.handshakes.extend(r.handshakes);
        }
        total.elapsed = started.elapsed();
        total.handshakes.sort();
        Ok(total)
    }

    /// Completed cycles per second.
    pub fn rate(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A handshake latency percentile (0..=100).
    pub fn percentile(&self, p: f64) -> Duration {
        if self.handshakes.is_empty() {
            return Duration::ZERO;
        }
        let i = ((p / 100.0) * (self.handshakes.len() - 1) as f64).round() as usize;
        self.handshakes[i]
    }
}

impl MtlsClient {
    fn connector(&self) -> anyhow::Result<SslConnector> {
        let mut b = SslConnector::builder(SslMethod::tls())?;
        b.set_ca_file(&self.ca).context("client CA file")?;
        b.set_certificate_file(&self.cert, SslFiletype::PEM)
            .context("client certificate")?;
        b.set_private_key_file(&self.key, SslFiletype::PEM)
            .context("client key")?;
        b.set_min_proto_version(Some(SslVersion::TLS1_3))?;
        // X25519 alone: the key exchange nginx (OpenSSL 3.0) speaks, so that
        // every server does the same work (BoringSSL would otherwise agree on
        // X25519MLKEM768 with the gateway, which costs it more).
        b.set_curves_list("X25519")?;
        Ok(b.build())
    }

    /// Runs `concurrency` clients in a loop for `duration`; each cycle is a new
    /// connection, a full handshake and one `GET /`.
    pub async fn run(&self, concurrency: usize, duration: Duration) -> anyhow::Result<LoadResult> {
        self.run_until(concurrency, Arc::new(AtomicBool::new(false)), duration)
            .await
    }

    /// As [`run`](Self::run), until `stop` is set (or `duration` at most).
    pub async fn run_until(
        &self,
        concurrency: usize,
        stop: Arc<AtomicBool>,
        duration: Duration,
    ) -> anyhow::Result<LoadResult> {
        let connector = Arc::new(self.connector()?);
        let deadline = Instant::now() + duration;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (connector, this, stop) = (connector.clone(), self.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut r = LoadResult::default();
                while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
                    match this.cycle(&connector).await {
                        Ok(hs) => {
                            r.completed += 1;
                            r.handshakes.push(hs);
                        }
                        Err(_) => r.errors += 1,
                    }
                }
                r
            }));
        }
        LoadResult::gather(tasks, started).await
    }

    /// Runs `concurrency` clients for `duration`, each on one connection
    /// (made again if it fails), sending `GET /` after `GET /` with
    /// keep-alive: `completed` counts requests, `handshakes` stays empty.
    pub async fn run_keepalive(
        &self,
        concurrency: usize,
        duration: Duration,
    ) -> anyhow::Result<LoadResult> {
        let connector = Arc::new(self.connector()?);
        let deadline = Instant::now() + duration;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (connector, this) = (connector.clone(), self.clone());
            tasks.push(tokio::spawn(async move {
                let mut r = LoadResult::default();
                while Instant::now() < deadline {
                    if this
                        .requests_until(&connector, deadline, &mut r)
                        .await
                        .is_err()
                    {
                        r.errors += 1;
                    }
                }
                r
            }));
        }
        LoadResult::gather(tasks, started).await
    }

    /// One connection's requests until `deadline`, counted in `r`.
    async fn requests_until(
        &self,
        connector: &SslConnector,
        deadline: Instant,
        r: &mut LoadResult,
    ) -> anyhow::Result<()> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let mut tls = tokio_boring::connect(connector.configure()?, &self.host, tcp)
            .await
            .map_err(|e| anyhow::anyhow!("handshake: {e}"))?;
        let request = format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        let mut buf = Vec::with_capacity(1024);
        while Instant::now() < deadline {
            tls.write_all(request.as_bytes()).await?;
            buf.clear();
            let (head, length) = loop {
                let mut chunk = [0u8; 1024];
                let n =
                    tokio::time::timeout(Duration::from_secs(5), tls.read(&mut chunk)).await??;
                anyhow::ensure!(n > 0, "the connection closed");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .context("a response without content-length")?;
                    break (end + 4, length);
                }
            };
            anyhow::ensure!(buf.starts_with(b"HTTP/1.1 200"), "not a 200");
            while buf.len() < head + length {
                let mut chunk = [0u8; 1024];
                let n = tls.read(&mut chunk).await?;
                anyhow::ensure!(n > 0, "the connection closed in a body");
                buf.extend_from_slice(&chunk[..n]);
            }
            r.completed += 1;
        }
        Ok(())
    }

    async fn cycle(&self, connector: &SslConnector) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let tcp =
            tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(self.addr)).await??;
        tcp.set_nodelay(true)?;
        let config = connector.configure()?;
        let mut tls = tokio::time::timeout(
            Duration::from_secs(5),
            tokio_boring::connect(config, &self.host, tcp),
        )
        .await?
        .map_err(|e| anyhow::anyhow!("handshake: {e}"))?;
        let handshake = started.elapsed();
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.host
        );
        tls.write_all(request.as_bytes()).await?;
        let mut response = Vec::with_capacity(512);
        let _ =
            tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut response)).await?;
        anyhow::ensure!(
            response.starts_with(b"HTTP/1.1 200"),
            "status {:?}",
            String::from_utf8_lossy(&response[..response.len().min(12)])
        );
        Ok(handshake)
    }
}
