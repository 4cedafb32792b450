//! What a change touches, in configuration terms: the input of an incremental
//! compile ([`crate::compiled::Compiled::update`]). Both sources make one: a
//! configuration file gives everything at once ([`Delta::everything`]), the
//! store gives the records a change edited.

use super::{CaSection, Config, HostnameSection, Material, ZoneSection};
use crate::rules::RuleSpec;

/// The parts of a configuration a change replaces; what it leaves out stays.
#[derive(Clone, Debug, Default)]
pub struct Delta {
    /// New zone settings.
    pub zone: Option<ZoneSection>,
    /// A new default certificate and key (`Some(None)`: none any more), for
    /// clients without SNI or with an unknown one, and hostnames without their own.
    pub default_identity: Option<Option<(Material, Material)>>,
    /// CAs added or changed (by name).
    pub cas: Vec<CaSection>,
    /// CAs removed (names).
    pub removed_cas: Vec<String>,
    /// Hostnames added or changed (by name).
    pub hostnames: Vec<HostnameSection>,
    /// Hostnames removed (names).
    pub removed_hostnames: Vec<String>,
    /// A new rule list.
    pub rules: Option<Vec<RuleSpec>>,
}

impl Delta {
    /// The whole of `config`, as the change from nothing to it.
    pub fn everything(config: &Config) -> Delta {
        let t = &config.terminator;
        Delta {
            zone: Some(config.zone.clone()),
            default_identity: Some(t.certificate.clone().zip(t.key.clone())),
            cas: config.cas.clone(),
            removed_cas: Vec::new(),
            hostnames: config.hostnames.clone(),
            removed_hostnames: Vec::new(),
            rules: Some(config.rules.clone()),
        }
    }

    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.zone.is_none()
            && self.default_identity.is_none()
            && self.cas.is_empty()
            && self.removed_cas.is_empty()
            && self.hostnames.is_empty()
            && self.removed_hostnames.is_empty()
            && self.rules.is_none()
    }
}
