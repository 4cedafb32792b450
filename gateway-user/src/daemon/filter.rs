//! The XDP layer of `gateway run`: the filter loaded with the compiled
//! policy and attached, and its background tasks (the SYN cookies' ticks,
//! the refusal events written to the handshake log).

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
};

use prometheus::Registry;

use super::RunOptions;
use crate::{
    compiled::Compiled,
    config::Config,
    logs::{Logs, kernel},
    metrics::{XdpCollector, cookies::CookieCollector},
    xdp::{
        MapSizes, XdpFilter,
        cookies::{self, CookieControl, CookieSettings},
    },
};

/// Starts the XDP filter on `interface` (none: the terminator refuses
/// alone), with its background tasks: the SYN cookies' ticks and, with the
/// handshake log on, its refusal events.
pub(super) fn start_filter(
    opts: &RunOptions,
    config: &Config,
    interface: Option<&str>,
    compiled: &Compiled,
    (registry, logs): (&Registry, &Arc<Logs>),
    banner: &mut Vec<String>,
) -> anyhow::Result<(Option<XdpFilter>, Vec<tokio::task::JoinHandle<()>>)> {
    let Some(interface) = interface else {
        log::warn!("no interface: the XDP filter is not attached (the terminator refuses alone)");
        return Ok((None, Vec::new()));
    };
    let mut filter = start_xdp(opts, config, interface, compiled, registry, banner)?;
    let mut tasks = vec![tokio::spawn(tick_cookies(filter.cookie_control()))];
    tasks.extend(follow_refusals(&mut filter, config, logs, registry)?);
    Ok((Some(filter), tasks))
}

/// With the handshake log on, starts the filter's refusal events and the
/// task that writes them to it ([`kernel`](crate::logs::kernel)).
fn follow_refusals(
    filter: &mut XdpFilter,
    config: &Config,
    logs: &Arc<Logs>,
    registry: &Registry,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if logs.handshake.is_none() || config.log.xdp_events_per_cpu == 0 {
        return Ok(None);
    }
    let events = filter.take_refusal_events(config.log.xdp_events_per_cpu)?;
    let counters = kernel::RefusalCounters::register(registry)?;
    let lines = config.log.xdp_lines_per_second;
    Ok(Some(tokio::spawn(kernel::follow(
        events,
        logs.clone(),
        lines,
        counters,
    ))))
}

/// Loads the XDP program with the compiled policy and attaches it.
fn start_xdp(
    opts: &RunOptions,
    config: &Config,
    interface: &str,
    compiled: &Compiled,
    registry: &Registry,
    banner: &mut Vec<String>,
) -> anyhow::Result<XdpFilter> {
    let pin_dir = opts.pin_dir.as_ref().or(config.xdp.pin_dir.as_ref());
    let mut filter = XdpFilter::load_pinned(
        opts.program_log,
        MapSizes::of(&config.xdp),
        pin_dir.map(PathBuf::as_path),
    )?;
    filter.apply(&compiled.xdp)?;
    let attached = filter.attach(interface, opts.mode.unwrap_or(config.xdp.mode))?;
    registry.register(Box::new(XdpCollector::new(filter.stats())))?;
    banner.push(format!(
        "XDP filter on {interface} ({} mode), zone minimum TLS {}, {} hostname policies",
        attached.as_str(),
        compiled.xdp.zone_min,
        compiled.xdp.hosts().len()
    ));
    if let Some(pins) = filter.pins() {
        let (dir, found) = (pins.dir().display(), pins.found().describe());
        banner.push(format!("XDP filter pinned in {dir} ({found})"));
    }
    banner.push(filter.start_cookies(CookieSettings::of(&config.xdp)));
    registry.register(Box::new(CookieCollector::new(filter.cookie_control())))?;
    Ok(filter)
}

/// Keeps the SYN cookies' keys, sysctls and `auto` decisions current.
async fn tick_cookies(control: Arc<Mutex<CookieControl>>) {
    let mut tick = tokio::time::interval(cookies::TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let result = cookies::lock(&control).tick(std::time::Instant::now());
        if let Err(e) = &result
            && !failing
        {
            log::warn!("SYN cookies: {e:#}");
        }
        failing = result.is_err();
    }
}
