//! The two running layers that follow the configuration: the XDP filter's
//! policy maps and the terminator's snapshot. A new configuration is first
//! compiled whole ([`Compiled`]: files read, certificates parsed, rules
//! compiled), then put in force in both ([`Layers::install`]), so a bad one
//! changes nothing and open connections carry on.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::{
    compiled::Compiled,
    config::{Config, TerminatorSection},
    metrics::hosts::RequestsByHost,
    tls::TlsSnapshot,
    xdp::XdpFilter,
};

/// The running layers (either may be absent) and the configuration in force.
pub struct Layers {
    /// The attached XDP filter.
    pub filter: Option<XdpFilter>,
    /// The terminator's current snapshot.
    pub tls: Option<Arc<ArcSwap<TlsSnapshot>>>,
    current: Compiled,
    /// Whether the XDP maps hold `current.xdp` (a failed write leaves them
    /// unknown, and the next install writes them whole).
    xdp_in_sync: bool,
    /// The terminator's per-hostname request labels: a hostname that is gone
    /// loses its label (and its series) when the snapshot without it goes in.
    request_labels: Option<RequestsByHost>,
}

impl Layers {
    /// The layers running `current`: its policy is already in the filter's maps
    /// and its snapshot in `tls`.
    pub fn new(
        filter: Option<XdpFilter>,
        tls: Option<Arc<ArcSwap<TlsSnapshot>>>,
        current: Compiled,
    ) -> Layers {
        Layers {
            filter,
            tls,
            current,
            xdp_in_sync: true,
            request_labels: None,
        }
    }

    /// Prunes these request labels at each install.
    pub fn with_request_labels(mut self, labels: RequestsByHost) -> Layers {
        self.request_labels = Some(labels);
        self
    }

    /// The configuration in force.
    pub fn current(&self) -> &Compiled {
        &self.current
    }

    /// Puts a compiled configuration in force: the snapshot (a pointer swap
    /// that cannot fail, so the terminator always follows), then the XDP maps,
    /// where only the entries that differ are written.
    pub fn install(&mut self, next: Compiled) -> anyhow::Result<()> {
        if let (Some(tls), Some(snapshot)) = (&self.tls, &next.tls) {
            tls.store(snapshot.clone());
            if let Some(labels) = &self.request_labels {
                // A label stays while an entry of that name still serves.
                labels.retain(|name| &*snapshot.lookup(Some(name)).name == name);
            }
        }
        let written = match &mut self.filter {
            Some(filter) if self.xdp_in_sync => filter.apply_change(&self.current.xdp, &next.xdp),
            Some(filter) => filter.apply(&next.xdp),
            None => Ok(()),
        };
        self.xdp_in_sync = written.is_ok();
        if restart_only(&next.terminator) != restart_only(&self.current.terminator) {
            log::warn!(
                "[terminator] listen addresses and limits changed: they apply after a restart"
            );
        }
        self.current = next;
        written.map_err(|e| e.context("the XDP policy maps were not updated"))
    }

    /// Compiles and installs a whole configuration: a configuration file's reload.
    pub fn apply(&mut self, config: &Config) -> anyhow::Result<()> {
        let next = Compiled::build(config, self.tls.is_some())?;
        self.install(next)
    }
}

/// The `[terminator]` settings that apply only at start: all but the default certificate.
fn restart_only(t: &TerminatorSection) -> TerminatorSection {
    TerminatorSection {
        certificate: None,
        key: None,
        ..t.clone()
    }
}

/// Runs blocking work where the runtime allows it (a multi-threaded runtime
/// moves its other tasks away); elsewhere, in place.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The layers' lock; a panic elsewhere does not make them unusable.
pub fn lock(layers: &Mutex<Layers>) -> std::sync::MutexGuard<'_, Layers> {
    layers.lock().unwrap_or_else(|e| e.into_inner())
}
