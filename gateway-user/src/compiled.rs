//! One compiled configuration for both layers. Validated inputs go in (a whole
//! [`Config`], or a [`Delta`] of what a change touches), and out comes a
//! [`Compiled`]: the XDP filter's policy and the terminator's snapshot.
//! Everything that can refuse a configuration happens here; installing a
//! `Compiled` ([`crate::layers::Layers::install`]) only writes and swaps.

use std::sync::Arc;

use anyhow::bail;

use crate::{
    config::{Config, TerminatorSection, delta::Delta, validate_rule_ids, validate_rules},
    tls::TlsSnapshot,
    xdp::XdpPolicy,
};

/// A configuration compiled for both layers.
#[derive(Clone)]
pub struct Compiled {
    /// What the XDP filter enforces.
    pub xdp: XdpPolicy,
    /// The terminator's snapshot (none without a terminator).
    pub tls: Option<Arc<TlsSnapshot>>,
    /// The `[terminator]` section (listeners and limits apply at start).
    pub terminator: TerminatorSection,
    /// Every hostname's name, and every CA's: what a change is checked against.
    hostnames: imbl::OrdSet<Arc<str>>,
    cas: imbl::OrdSet<String>,
    /// The size of the XDP filter's hostname table.
    max_hostnames: usize,
}

impl Compiled {
    /// Compiles a whole configuration (with a terminator snapshot when `terminator`).
    pub fn build(config: &Config, terminator: bool) -> anyhow::Result<Compiled> {
        config.validate()?;
        Ok(Compiled {
            xdp: XdpPolicy::from_config(config)?,
            tls: terminator
                .then(|| TlsSnapshot::build(config))
                .transpose()?
                .map(Arc::new),
            terminator: config.terminator.clone(),
            hostnames: config.hostnames.iter().map(|h| h.name.clone()).collect(),
            cas: config.cas.iter().map(|c| c.name.clone()).collect(),
            max_hostnames: config.xdp.hostnames as usize,
        })
    }

    /// The configuration with `delta` applied, compiling only what it touches.
    /// An error (an invalid hostname, rule, certificate or CRL) leaves `self`
    /// as it was.
    pub fn update(&self, delta: &Delta) -> anyhow::Result<Compiled> {
        let mut cas = self.cas.clone();
        for ca in &delta.cas {
            cas.insert(ca.name.clone());
        }
        for name in &delta.removed_cas {
            cas.remove(name);
        }
        let mut hostnames = self.hostnames.clone();
        for name in &delta.removed_hostnames {
            hostnames.remove(name.as_str());
        }
        for h in &delta.hostnames {
            h.validate(|ca| cas.contains(ca))?;
            hostnames.insert(h.name.clone());
        }
        if hostnames.len() > self.max_hostnames {
            bail!(
                "{} hostnames: the XDP filter holds at most {} ([xdp] hostnames)",
                hostnames.len(),
                self.max_hostnames
            );
        }
        // The snapshot compiles the rules; without one, they are compiled to check them.
        match (&delta.rules, &self.tls) {
            (Some(rules), Some(_)) => validate_rule_ids(rules)?,
            (Some(rules), None) => validate_rules(rules)?,
            (None, _) => {}
        }
        Ok(Compiled {
            xdp: self.xdp.update(delta)?,
            tls: match &self.tls {
                Some(tls) => Some(Arc::new(tls.update(delta)?)),
                None => None,
            },
            terminator: self.terminator.clone(),
            hostnames,
            cas,
            max_hostnames: self.max_hostnames,
        })
    }
}
