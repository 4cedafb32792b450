//! `gateway run`: load the XDP filter, attach it, keep its policy in sync with
//! the configuration file, serve metrics, and detach cleanly on exit.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::{Context, bail};
use log::{error, info};
use prometheus::Registry;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    config::{AttachMode, Config},
    metrics::{self, XdpCollector},
    xdp::{ProgramLog, XdpFilter, XdpPolicy},
};

/// How often the configuration file is checked for changes (and the program log drained).
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Options of `gateway run`; each overrides the configuration file.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Configuration file; none means built-in defaults.
    pub config: Option<PathBuf>,
    /// Interface to attach to.
    pub interface: Option<String>,
    /// Attach mode.
    pub mode: Option<AttachMode>,
    /// Metrics listen address.
    pub metrics: Option<SocketAddr>,
    /// The XDP program's own log level.
    pub program_log: ProgramLog,
}

/// Runs the gateway until SIGINT or SIGTERM.
pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let config = match &opts.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let interface = opts
        .interface
        .clone()
        .or_else(|| config.xdp.interface.clone())
        .context(
            "no interface: pass --interface IFACE or set [xdp] interface in the configuration",
        )?;
    let mode = opts.mode.unwrap_or(config.xdp.mode);

    let mut filter = XdpFilter::load(opts.program_log)?;
    let policy = XdpPolicy::from_config(&config);
    filter.apply(&policy)?;
    let attached = filter.attach(&interface, mode)?;

    let registry = Registry::new();
    registry.register(Box::new(XdpCollector::new(filter.stats())))?;
    let listen = opts.metrics.unwrap_or(config.metrics.listen);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen for metrics on {listen}"))?;
    let metrics_addr = listener.local_addr()?;
    drop(listener);
    let mut metrics_task = tokio::spawn(metrics::serve(metrics_addr, registry));

    println!(
        "gateway: XDP filter on {interface} ({} mode), zone minimum TLS {}, {} hostname policies, \
         metrics on http://{metrics_addr}/metrics",
        attached.as_str(),
        policy.zone_min,
        policy.hosts.len()
    );

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    let mut seen = opts.config.as_deref().and_then(modified);
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => reload(&mut filter, opts.config.as_deref()),
            _ = tick.tick() => {
                filter.flush_log();
                let now = opts.config.as_deref().and_then(modified);
                if now != seen {
                    seen = now;
                    reload(&mut filter, opts.config.as_deref());
                }
            }
            result = &mut metrics_task => {
                filter.detach();
                match result {
                    Ok(Err(e)) => return Err(e.context("the metrics endpoint stopped")),
                    _ => bail!("the metrics endpoint stopped"),
                }
            }
        }
    }
    metrics_task.abort();
    filter.detach();
    info!("stopped");
    Ok(())
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Re-reads the configuration and swaps the new policy in; on error, keeps the old one.
fn reload(filter: &mut XdpFilter, path: Option<&Path>) {
    let Some(path) = path else {
        return;
    };
    let result = Config::load(path).and_then(|config| {
        let policy = XdpPolicy::from_config(&config);
        filter.apply(&policy)?;
        Ok(policy)
    });
    match result {
        Ok(p) => info!(
            "policy reloaded from {}: zone minimum TLS {}, {} hostname policies",
            path.display(),
            p.zone_min,
            p.hosts.len()
        ),
        Err(e) => error!(
            "reload of {} failed, keeping the previous policy: {e:#}",
            path.display()
        ),
    }
}
