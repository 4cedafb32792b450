//! `gateway run`: attach the XDP filter and start the TLS terminator, keep both
//! in step with the configuration (and the files it names), serve metrics, and
//! shut down cleanly.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use anyhow::{Context, bail};
use arc_swap::ArcSwap;
use log::{error, info};
use prometheus::Registry;
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
    sync::watch,
};

use crate::{
    config::{AttachMode, Config},
    control::{self, ControlPlane, expiry::Expiry, model::State},
    layers::Layers,
    metrics::{self, XdpCollector},
    terminator::{Terminator, TerminatorMetrics},
    tls::TlsSnapshot,
    xdp::{ProgramLog, XdpFilter, XdpPolicy},
};

/// How often the configuration and its files are checked for changes.
const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How long open requests may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How often CRL sources are fetched again and expiry thresholds looked at.
const REFRESH_INTERVAL: Duration = Duration::from_secs(3600);

/// Options of `gateway run`; each overrides the configuration file.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Configuration file; none: the control plane's store in `data_dir`.
    pub config: Option<PathBuf>,
    /// The control plane's data directory (without `config`).
    pub data_dir: PathBuf,
    /// Where the admin API listens (without `config`).
    pub admin: SocketAddr,
    /// TLS listen addresses (without `config`).
    pub listen: Vec<SocketAddr>,
    /// The hostname created at the first run (without `config`).
    pub default_hostname: String,
    /// Interface to attach to.
    pub interface: Option<String>,
    /// Attach mode.
    pub mode: Option<AttachMode>,
    /// Metrics listen address.
    pub metrics: Option<SocketAddr>,
    /// The XDP program's own log level.
    pub program_log: ProgramLog,
}

/// The runtime sections of the configuration when the store holds the policy.
fn store_base(opts: &RunOptions) -> Config {
    let mut base = Config::default();
    base.terminator.listen = opts.listen.clone();
    let mut ports: Vec<u16> = opts.listen.iter().map(SocketAddr::port).collect();
    ports.sort_unstable();
    ports.dedup();
    base.xdp.ports = ports;
    base
}

/// Runs the gateway until SIGINT or SIGTERM: from a configuration file, or
/// from the control plane's store (created on the first run) with the admin API.
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let mut store = None;
    let config = match &opts.config {
        Some(path) => Config::load(path)?,
        None => {
            let opened = control::open(&opts.data_dir, &opts.default_hostname)?;
            if let Some(token) = &opened.new_token {
                println!(
                    "admin API token (shown once; keep it, the CLI reads it from GATEWAY_TOKEN): {token}"
                );
            }
            write_public_cas(&opts.data_dir, &opened.state)?;
            let base = store_base(&opts);
            let config = opened.state.to_config(&base);
            config.validate().context("the stored configuration")?;
            store = Some((opened, base));
            config
        }
    };
    let interface = opts
        .interface
        .clone()
        .or_else(|| config.xdp.interface.clone());
    if interface.is_none() && config.terminator.listen.is_empty() {
        bail!(
            "nothing to run: no interface for the XDP filter (pass --interface IFACE or set [xdp] \
             interface) and no [terminator] listen address"
        );
    }
    let registry = Registry::new();
    let mut layers = Layers {
        filter: None,
        tls: None,
        terminator: config.terminator.clone(),
    };
    if store.is_some() && interface.is_none() {
        log::warn!("no --interface: the XDP filter is not attached (the terminator refuses alone)");
    }
    let mut banner = Vec::new();

    if let Some(interface) = &interface {
        let mut filter = XdpFilter::load_with(opts.program_log, config.xdp.flow_tables())?;
        let policy = XdpPolicy::from_config(&config);
        filter.apply(&policy)?;
        let attached = filter.attach(interface, opts.mode.unwrap_or(config.xdp.mode))?;
        registry.register(Box::new(XdpCollector::new(filter.stats())))?;
        banner.push(format!(
            "XDP filter on {interface} ({} mode), zone minimum TLS {}, {} hostname policies",
            attached.as_str(),
            policy.zone_min,
            policy.hosts.len()
        ));
        layers.filter = Some(filter);
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = Vec::new();
    if !config.terminator.listen.is_empty() {
        let snapshot = Arc::new(ArcSwap::from_pointee(TlsSnapshot::build(&config)?));
        let metrics = Arc::new(TerminatorMetrics::new(&registry)?);
        let terminator = Arc::new(Terminator::new(
            snapshot.clone(),
            config.terminator.clone(),
            metrics,
        )?);
        for addr in &config.terminator.listen {
            let listener = bind(
                *addr,
                Duration::from_millis(config.terminator.handshake_timeout_ms),
            )
            .with_context(|| format!("cannot listen for TLS on {addr}"))?;
            banner.push(format!("TLS on {}", listener.local_addr()?));
            let mut stop = stop_rx.clone();
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            servers.push(tokio::spawn(terminator.clone().serve(
                listener,
                shutdown,
                SHUTDOWN_GRACE,
            )));
        }
        layers.tls = Some(snapshot);
    }

    let layers = Arc::new(Mutex::new(layers));
    let mut plane = None;
    if let Some((opened, base)) = store {
        let expiry = Expiry::new(&registry)?;
        let cp = Arc::new(ControlPlane::start(opened, base, layers.clone(), expiry));
        if !opts.admin.ip().is_loopback() {
            log::warn!(
                "the admin API listens on {} in plain HTTP: the token crosses the network \
                 unencrypted; keep it on loopback (or behind a TLS proxy)",
                opts.admin
            );
        }
        let listener = TcpListener::bind(opts.admin)
            .await
            .with_context(|| format!("cannot listen for the admin API on {}", opts.admin))?;
        banner.push(format!(
            "admin API on http://{}/client/v4/",
            listener.local_addr()?
        ));
        let mut stop = stop_rx.clone();
        servers.push(tokio::spawn(control::api::serve(
            listener,
            cp.clone(),
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        )));
        plane = Some(cp);
    }
    // Renewals, CRL refreshes and expiry checks run beside the main loop (a slow
    // CRL source must not hold up signals).
    let maintenance = plane.clone().map(|cp| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH_INTERVAL);
            loop {
                tick.tick().await;
                cp.renew_server_certificates().await;
                control::api::refresh_crls(&cp).await;
                cp.read(|s| cp.expiry.observe(s)).await;
            }
        })
    });

    let listen = opts.metrics.unwrap_or(config.metrics.listen);
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for metrics on {listen}"))?;
    banner.push(format!(
        "metrics on http://{}/metrics",
        listener.local_addr()?
    ));
    let mut metrics_task = tokio::spawn(metrics::serve(listener, registry));
    println!("gateway: {}", banner.join("; "));

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    let path = opts.config.as_deref();
    let mut watch = path.map(|p| Watch::new(p, &config));
    let result = loop {
        tokio::select! {
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            _ = sighup.recv() => {
                if let (Some(p), Some(w)) = (path, &mut watch) {
                    reload(&mut control::lock(&layers), p, w);
                }
            }
            _ = tick.tick() => {
                let mut layers = control::lock(&layers);
                if let Some(filter) = &mut layers.filter {
                    filter.flush_log();
                }
                if let (Some(p), Some(w)) = (path, &mut watch)
                    && w.changed()
                {
                    reload(&mut layers, p, w);
                }
            }
            result = &mut metrics_task => {
                break match result {
                    Ok(Err(e)) => Err(e.context("the metrics endpoint stopped")),
                    _ => Err(anyhow::anyhow!("the metrics endpoint stopped")),
                };
            }
        }
    };
    let _ = stop_tx.send(true);
    for server in servers {
        let _ = server.await;
    }
    metrics_task.abort();
    if let Some(task) = maintenance {
        task.abort();
    }
    if let Some(filter) = &mut control::lock(&layers).filter {
        filter.detach();
    }
    info!("stopped");
    result
}

/// A TLS listener; IPv6 ones are IPv6-only, so `0.0.0.0` and `[::]` can both be
/// listed. Connections are handed to userspace only once the client has sent
/// data (`TCP_DEFER_ACCEPT`, up to `defer`): a ClientHello the XDP filter turns
/// into a reset tears its connection down in the kernel before the terminator
/// ever accepts it, and connections that never speak cost no task until then.
fn bind(addr: SocketAddr, defer: Duration) -> anyhow::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    use std::os::fd::AsRawFd;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let secs = libc::c_int::try_from(defer.as_millis().div_ceil(1000).max(1)).unwrap_or(10);
    // SAFETY: setsockopt on a socket we own, with an int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        log::warn!(
            "TCP_DEFER_ACCEPT on {addr}: {}; connections are accepted before they speak",
            std::io::Error::last_os_error()
        );
    }
    socket.listen(1024)?;
    Ok(TcpListener::from_std(socket.into())?)
}

/// The configuration file and every file it names, with their modification
/// times: polling them is a few `stat` calls, no parsing.
struct Watch {
    files: Vec<PathBuf>,
    seen: Vec<Option<SystemTime>>,
}

impl Watch {
    fn new(path: &Path, config: &Config) -> Watch {
        let files: Vec<PathBuf> = std::iter::once(path.to_path_buf())
            .chain(config.files())
            .collect();
        let seen = modified(&files);
        Watch { files, seen }
    }

    /// Whether any file changed since the last look.
    fn changed(&mut self) -> bool {
        let now = modified(&self.files);
        if now == self.seen {
            return false;
        }
        self.seen = now;
        true
    }
}

fn modified(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// Re-reads the configuration and swaps the new policy into both layers; on
/// error, keeps the old one. The watch follows the newest readable
/// configuration, its files stated before they are read.
fn reload(layers: &mut Layers, path: &Path, watch: &mut Watch) {
    let result = Config::load(path).and_then(|config| {
        *watch = Watch::new(path, &config);
        layers.apply(&config).map(|()| config)
    });
    match result {
        Ok(c) => info!(
            "configuration reloaded from {}: zone minimum TLS {}, {} hostnames",
            path.display(),
            c.zone.min_tls_version,
            c.hostnames.len()
        ),
        Err(e) => error!(
            "reload of {} failed, keeping the previous configuration: {e:#}",
            path.display()
        ),
    }
}

/// Writes the server CA's and the managed CA's certificates (public) beside the
/// store, for clients (`curl --cacert`) and origins.
fn write_public_cas(dir: &Path, state: &State) -> anyhow::Result<()> {
    for (file, ca) in [
        ("server-ca.pem", state.server_ca()),
        ("managed-ca.pem", state.managed_ca()),
    ] {
        if let Some(ca) = ca {
            let path = dir.join(file);
            std::fs::write(&path, &ca.certificate)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(())
}
