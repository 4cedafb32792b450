//! The two running layers that follow the configuration: the XDP filter's
//! policy maps and the terminator's snapshot. A new configuration is first
//! built whole ([`Layers::prepare`]: files read, certificates parsed, rules
//! compiled), then swapped into both ([`Layers::install`]), so a bad one
//! changes nothing and open connections carry on.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::{
    config::{Config, TerminatorSection},
    tls::TlsSnapshot,
    xdp::{XdpFilter, XdpPolicy},
};

/// The running layers (either may be absent).
pub struct Layers {
    /// The attached XDP filter.
    pub filter: Option<XdpFilter>,
    /// The terminator's current snapshot.
    pub tls: Option<Arc<ArcSwap<TlsSnapshot>>>,
    /// The `[terminator]` section in force: listeners and limits need a restart.
    pub terminator: TerminatorSection,
}

/// A configuration built for both layers, not yet in force.
pub struct Prepared {
    snapshot: Option<TlsSnapshot>,
    policy: XdpPolicy,
    terminator: TerminatorSection,
}

impl Prepared {
    /// Builds what `config` needs (with a terminator snapshot when `terminator`).
    pub fn build(config: &Config, terminator: bool) -> anyhow::Result<Prepared> {
        Ok(Prepared {
            snapshot: terminator.then(|| TlsSnapshot::build(config)).transpose()?,
            policy: XdpPolicy::from_config(config),
            terminator: config.terminator.clone(),
        })
    }
}

impl Layers {
    /// Builds what `config` needs in each running layer, changing nothing.
    pub fn prepare(&self, config: &Config) -> anyhow::Result<Prepared> {
        Prepared::build(config, self.tls.is_some())
    }

    /// Puts a prepared configuration in force: the snapshot (a pointer swap that
    /// cannot fail, so the terminator always follows), then the XDP maps.
    pub fn install(&mut self, prepared: Prepared) -> anyhow::Result<()> {
        if let (Some(tls), Some(snapshot)) = (&self.tls, prepared.snapshot) {
            tls.store(Arc::new(snapshot));
        }
        if let Some(filter) = &mut self.filter {
            filter
                .apply(&prepared.policy)
                .map_err(|e| e.context("the XDP policy maps were not updated"))?;
        }
        if restart_only(&prepared.terminator) != restart_only(&self.terminator) {
            log::warn!(
                "[terminator] listen addresses and limits changed: they apply after a restart"
            );
        }
        Ok(())
    }

    /// Both steps: what a configuration file's reload does.
    pub fn apply(&mut self, config: &Config) -> anyhow::Result<()> {
        let prepared = self.prepare(config)?;
        self.install(prepared)
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
