//! `gateway run`: attach the XDP filter and start the TLS terminator, keep both
//! in step with the configuration (and the files it names), serve metrics, and
//! shut down cleanly.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

mod filter;
mod follow;
mod listen;

use anyhow::{Context, bail};
use arc_swap::ArcSwap;
use log::info;
use prometheus::Registry;
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
    sync::watch,
};

use filter::start_filter;
use follow::{Watch, reload};
use listen::bind;

use crate::{
    admin::api::Admin,
    compiled::Compiled,
    config::{AttachMode, Config, LogFlags},
    control::{self, ControlPlane, Opened, backend::fleet, expiry::Expiry, model::State},
    layers::{self, Layers},
    logs::Logs,
    metrics::{self, health::Health, history::History, hosts::RequestsByHost},
    privileges,
    terminator::{Terminator, TerminatorMetrics},
    tls::TlsSnapshot,
    xdp::{ProgramLog, XdpFilter},
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
    /// The size of the XDP filter's hostname table (without `config`).
    pub xdp_hostnames: Option<u32>,
    /// The bpffs directory the XDP filter is pinned in (overrides `[xdp] pin_dir`).
    pub pin_dir: Option<PathBuf>,
    /// Serve the admin API in HTTPS, with a certificate from the server CA.
    pub admin_tls: bool,
    /// Allow a plain-HTTP admin API on an address other than loopback.
    pub admin_insecure: bool,
    /// Fleet mode: the store is etcd (without `config`).
    pub fleet: Option<fleet::FleetOptions>,
    /// The log flags (override `[log]`).
    pub log: LogFlags,
}

/// The runtime sections of the configuration when the store holds the policy.
fn store_base(opts: &RunOptions) -> Config {
    let mut base = Config::default();
    base.terminator.listen = opts.listen.clone();
    let mut ports: Vec<u16> = opts.listen.iter().map(SocketAddr::port).collect();
    ports.sort_unstable();
    ports.dedup();
    base.xdp.ports = ports;
    if let Some(n) = opts.xdp_hostnames {
        base.xdp.hostnames = n;
    }
    base
}

/// Where the configuration comes from.
enum Source {
    /// A configuration file, reloaded when it or a file it names changes.
    File(PathBuf),
    /// The control plane's store, changed through the admin API.
    Store(Box<(Opened, Config)>),
}

impl Source {
    /// Opens the source (creating the store on a first run) and reads the
    /// configuration it gives now.
    async fn open(opts: &RunOptions, registry: &Registry) -> anyhow::Result<(Source, Config)> {
        if let Some(path) = &opts.config {
            return Ok((Source::File(path.clone()), Config::load(path)?));
        }
        let opened = match &opts.fleet {
            None => control::open(&opts.data_dir, &opts.default_hostname)?,
            Some(fleet) => {
                let fleet = fleet::Fleet::new(fleet.clone(), registry)?;
                control::open_fleet(&opts.data_dir, &opts.default_hostname, fleet).await?
            }
        };
        if let Some(token) = &opened.new_token {
            println!(
                "admin API token (shown once; keep it, the CLI reads it from GATEWAY_TOKEN): {token}"
            );
        }
        write_public_cas(&opts.data_dir, &opened.state)?;
        let base = store_base(opts);
        let config = opened.state.to_config(&base);
        Ok((Source::Store(Box::new((opened, base))), config))
    }
}

/// What runs beside the main loop, stopped at shutdown.
struct Tasks {
    stop: watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<()>>,
    /// Maintenance and, in fleet mode, following etcd: aborted at shutdown.
    background: Vec<tokio::task::JoinHandle<()>>,
    /// In fleet mode, the fleet to leave at shutdown.
    fleet: Option<Arc<fleet::Fleet>>,
}

/// Runs the gateway until SIGINT or SIGTERM: from a configuration file, or
/// from the control plane's store (created on the first run) with the admin
/// API. The phases: open the source and compile it, start the XDP filter, start
/// the terminator, start the admin API, serve metrics, run the event loop, shut down.
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    // First, so that a SIGTERM during start-up stops the gateway cleanly once
    // it has started, instead of killing it halfway.
    let signals = Signals::new()?;
    let registry = Registry::new();
    let (source, mut config) = Source::open(&opts, &registry).await?;
    config.log = opts.log.apply(std::mem::take(&mut config.log));
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
    check_privileges(&opts, &config, &source, interface.as_deref())?;
    let compiled =
        Compiled::build(&config, !config.terminator.listen.is_empty()).context(match source {
            Source::File(_) => "the configuration",
            Source::Store(_) => "the stored configuration",
        })?;
    let mut banner = Vec::new();
    let (stop, stop_rx) = watch::channel(false);
    let logs = Arc::new(Logs::start(&config.log, &registry)?);
    logs.follow_sighup()?;
    banner.extend(Logs::describe(&config.log));
    let (filter, filter_tasks) = start_filter(
        &opts,
        &config,
        interface.as_deref(),
        &compiled,
        (&registry, &logs),
        &mut banner,
    )?;
    let started = start_terminator(
        &config,
        &compiled,
        &registry,
        logs.clone(),
        &stop_rx,
        &mut banner,
    )?;
    let (servers, layers) = started.with_filter(filter, compiled);
    let layers = Arc::new(Mutex::new(layers));
    let mut tasks = Tasks {
        stop,
        servers,
        background: filter_tasks,
        fleet: None,
    };
    let path = match source {
        Source::File(path) => Some(path),
        Source::Store(store) => {
            start_control_plane(
                &opts,
                *store,
                &layers,
                &registry,
                &stop_rx,
                &mut tasks,
                &mut banner,
            )
            .await?;
            None
        }
    };
    let listen = opts.metrics.unwrap_or(config.metrics.listen);
    let health = Arc::new(Health::default());
    let metrics_task = start_metrics(listen, registry, health.clone(), &mut banner).await?;
    let watch = path.map(|p| (Watch::new(&p, &config), p));
    // Compiled and in force: the rendered configuration is not kept, and what
    // compiling it took goes back to the system, before the gateway says it is ready.
    drop(config);
    // SAFETY: malloc_trim only releases free heap pages.
    unsafe { libc::malloc_trim(0) };
    println!("gateway: {}", banner.join("; "));
    health.set_ready();
    let result = event_loop(signals, &layers, watch, metrics_task).await;
    health.set_draining();
    shutdown(tasks, &layers).await;
    let _ = tokio::task::spawn_blocking(move || logs.flush(Duration::from_secs(2))).await;
    result
}

/// Checks, before anything is loaded or bound, that the process holds the
/// capabilities this run needs ([`privileges`]), naming any it lacks.
fn check_privileges(
    opts: &RunOptions,
    config: &Config,
    source: &Source,
    interface: Option<&str>,
) -> anyhow::Result<()> {
    let mut ports: Vec<u16> = config
        .terminator
        .listen
        .iter()
        .map(SocketAddr::port)
        .collect();
    ports.push(opts.metrics.unwrap_or(config.metrics.listen).port());
    if matches!(source, Source::Store(_)) {
        ports.push(opts.admin.port());
    }
    let needs = privileges::needed(interface, &ports, privileges::unprivileged_port_start());
    match privileges::effective() {
        Ok(effective) => privileges::check(&needs, effective),
        Err(e) => {
            log::warn!("cannot check the process's capabilities ({e:#}); going on");
            Ok(())
        }
    }
}

/// Store mode: the control plane over the layers, its admin API (with the
/// dashboard's counter history), its watch in fleet mode and its maintenance.
async fn start_control_plane(
    opts: &RunOptions,
    (opened, base): (Opened, Config),
    layers: &Arc<Mutex<Layers>>,
    registry: &Registry,
    stop_rx: &watch::Receiver<bool>,
    tasks: &mut Tasks,
    banner: &mut Vec<String>,
) -> anyhow::Result<()> {
    let plane = Arc::new(ControlPlane::start(
        opened,
        base,
        layers.clone(),
        Expiry::new(registry)?,
    ));
    let history = History::new(registry.clone());
    tasks.background.push(tokio::spawn(history.clone().run()));
    let admin = Admin {
        plane: plane.clone(),
        history,
    };
    let admin = start_admin(opts, admin, stop_rx, banner).await?;
    tasks.servers.push(admin);
    tasks.background.extend(plane.follow().await);
    tasks.fleet = plane.fleet().cloned();
    tasks
        .background
        .push(crate::acme::manager::start(plane.clone()));
    tasks.background.push(start_maintenance(plane));
    Ok(())
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listen`.
async fn start_metrics(
    listen: SocketAddr,
    registry: Registry,
    health: Arc<Health>,
    banner: &mut Vec<String>,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<()>>> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for metrics on {listen}"))?;
    banner.push(format!(
        "metrics on http://{}/metrics",
        listener.local_addr()?
    ));
    Ok(tokio::spawn(metrics::serve(listener, registry, health)))
}

/// The names the admin API's certificate covers: `localhost`, the loopback
/// addresses and the address it listens on (the machine's name too when it
/// listens on every address).
fn admin_names(addr: SocketAddr) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if addr.ip().is_unspecified() {
        if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            names.push(host.trim().to_string());
        }
    } else {
        names.push(addr.ip().to_string());
    }
    names.dedup();
    names
}

/// The terminator as started (all empty when it has nothing to serve).
#[derive(Default)]
struct StartedTerminator {
    /// The snapshot it serves from, swapped by [`Layers::install`].
    snapshot: Option<Arc<ArcSwap<TlsSnapshot>>>,
    /// One server per listen address.
    servers: Vec<tokio::task::JoinHandle<()>>,
    /// Its per-hostname request labels, pruned as hostnames go.
    request_labels: Option<RequestsByHost>,
}

impl StartedTerminator {
    /// Its servers, and the layers it makes with `filter` running `compiled`.
    fn with_filter(
        self,
        filter: Option<XdpFilter>,
        compiled: Compiled,
    ) -> (Vec<tokio::task::JoinHandle<()>>, Layers) {
        let layers = Layers::new(filter, self.snapshot, compiled);
        let layers = match self.request_labels {
            Some(labels) => layers.with_request_labels(labels),
            None => layers,
        };
        (self.servers, layers)
    }
}

/// Binds the TLS listeners and serves them from the compiled snapshot.
fn start_terminator(
    config: &Config,
    compiled: &Compiled,
    registry: &Registry,
    logs: Arc<Logs>,
    stop: &watch::Receiver<bool>,
    banner: &mut Vec<String>,
) -> anyhow::Result<StartedTerminator> {
    let Some(first) = &compiled.tls else {
        return Ok(StartedTerminator::default());
    };
    let snapshot = Arc::new(ArcSwap::new(first.clone()));
    let metrics = Arc::new(TerminatorMetrics::new(
        registry,
        config.metrics.per_host_limit,
    )?);
    let request_labels = metrics.requests.clone();
    let terminator = Arc::new(
        Terminator::new(snapshot.clone(), config.terminator.clone(), metrics)?.with_logs(logs),
    );
    let mut servers = Vec::new();
    for addr in &config.terminator.listen {
        let listener = bind(
            *addr,
            Duration::from_millis(config.terminator.handshake_timeout_ms),
        )
        .with_context(|| format!("cannot listen for TLS on {addr}"))?;
        banner.push(format!("TLS on {}", listener.local_addr()?));
        let mut stop = stop.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        servers.push(tokio::spawn(terminator.clone().serve(
            listener,
            shutdown,
            SHUTDOWN_GRACE,
        )));
    }
    Ok(StartedTerminator {
        snapshot: Some(snapshot),
        servers,
        request_labels: Some(request_labels),
    })
}

/// Serves the admin API of the control plane.
async fn start_admin(
    opts: &RunOptions,
    admin: Admin,
    stop: &watch::Receiver<bool>,
    banner: &mut Vec<String>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    if !opts.admin.ip().is_loopback() && !opts.admin_tls {
        if !opts.admin_insecure {
            bail!(
                "the admin API would listen on {} in plain HTTP, and its tokens would cross the \
                 network unencrypted: pass --admin-tls (HTTPS with a certificate from the \
                 server CA), keep it on loopback, or pass --admin-insecure (behind a TLS proxy)",
                opts.admin
            );
        }
        log::warn!(
            "the admin API listens on {} in plain HTTP (--admin-insecure): tokens cross the \
             network unencrypted",
            opts.admin
        );
    }
    let listener = TcpListener::bind(opts.admin)
        .await
        .with_context(|| format!("cannot listen for the admin API on {}", opts.admin))?;
    let tls = if opts.admin_tls {
        let names = admin_names(opts.admin);
        Some(Arc::new(
            crate::admin::acceptor(&admin.plane, &names).await?,
        ))
    } else {
        None
    };
    banner.push(format!(
        "admin API on {}://{}/client/v4/",
        if tls.is_some() { "https" } else { "http" },
        listener.local_addr()?
    ));
    let mut stop = stop.clone();
    Ok(tokio::spawn(crate::admin::api::serve(
        listener,
        admin,
        tls,
        async move {
            let _ = stop.wait_for(|s| *s).await;
        },
    )))
}

/// Renewals, CRL refreshes and expiry checks, beside the main loop (a slow CRL
/// source must not hold up signals). In a fleet, only the leader does them:
/// as soon as it becomes leader, then hourly.
fn start_maintenance(plane: Arc<ControlPlane>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if !plane.does_periodic_work() {
                plane.expiry.set_alerting(false);
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
            plane.expiry.set_alerting(true);
            let gateway = control::audit::Actor::gateway;
            control::audit::acting(
                gateway("renewing server certificates"),
                plane.renew_server_certificates(),
            )
            .await;
            control::audit::acting(
                gateway("refreshing CRLs"),
                control::crl::refresh_all(&plane),
            )
            .await;
            plane.observe_expiry().await;
            tokio::time::sleep(REFRESH_INTERVAL).await;
        }
    })
}

/// Signals, the XDP program's log, and the configuration file's changes, until
/// a stop signal or the metrics endpoint ends.
async fn event_loop(
    signals: Signals,
    layers: &Mutex<Layers>,
    mut watch: Option<(Watch, PathBuf)>,
    mut metrics_task: tokio::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let Signals {
        mut sigint,
        mut sigterm,
        mut sighup,
    } = signals;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    let result = loop {
        tokio::select! {
            _ = sigint.recv() => break Ok(()),
            _ = sigterm.recv() => break Ok(()),
            _ = sighup.recv() => {
                if let Some((w, p)) = &mut watch {
                    reload(&mut layers::lock(layers), p, w);
                }
            }
            _ = tick.tick() => {
                let mut layers = layers::lock(layers);
                if let Some(filter) = &mut layers.filter {
                    filter.flush_log();
                }
                if let Some((w, p)) = &mut watch
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
    metrics_task.abort();
    result
}

/// The signals the event loop answers, caught from the start.
struct Signals {
    sigint: tokio::signal::unix::Signal,
    sigterm: tokio::signal::unix::Signal,
    sighup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            sigint: signal(SignalKind::interrupt())?,
            sigterm: signal(SignalKind::terminate())?,
            sighup: signal(SignalKind::hangup())?,
        })
    }
}

/// Stops the listeners (open requests get `SHUTDOWN_GRACE`), the maintenance
/// task, and detaches the XDP program (a pinned one stays attached).
async fn shutdown(tasks: Tasks, layers: &Mutex<Layers>) {
    let _ = tasks.stop.send(true);
    for server in tasks.servers {
        let _ = server.await;
    }
    for task in tasks.background {
        task.abort();
    }
    if let Some(fleet) = &tasks.fleet {
        fleet::nodes::leave(fleet).await;
    }
    if let Some(filter) = &mut layers::lock(layers).filter {
        filter.detach();
    }
    info!("stopped");
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
