//! The control plane's state rendered as the configuration both layers are
//! built from: the same [`Config`] a file gives, with certificates, keys and
//! CRLs held in memory; and a change between two states as the [`Delta`] of
//! the records it touched.

use std::collections::BTreeSet;

use imbl::ordmap::DiffItem;

use super::model::{Authority, AuthorityKind, CertStatus, Hostname, State};
use crate::config::{CaSection, Config, HostnameSection, Material, ZoneSection, delta::Delta};

impl State {
    /// The configuration for this state; `base` gives the runtime sections
    /// (`[xdp]`, `[terminator]` listeners and limits, `[metrics]`).
    pub fn to_config(&self, base: &Config) -> Config {
        let mut config = base.clone();
        config.zone = self.zone_section(base);
        config.rules = self.rules.clone();
        config.cas = self
            .cas
            .values()
            .filter(|ca| ca.kind != AuthorityKind::Server)
            .map(|ca| self.ca_section(ca))
            .collect();
        config.hostnames = self.hostnames.values().map(host_section).collect();
        if let Some((certificate, key)) = self.default_identity() {
            config.terminator.certificate = Some(certificate);
            config.terminator.key = Some(key);
        }
        config
    }

    /// What changed from `old` to this state, in configuration terms: only the
    /// records that differ are looked at and rendered.
    pub fn delta_from(&self, old: &State, base: &Config) -> Delta {
        let mut delta = Delta::default();
        if self.zone != old.zone {
            delta.zone = Some(self.zone_section(base));
        }
        if self.rules != old.rules {
            delta.rules = Some(self.rules.clone());
        }
        let mut default_touched = self.meta.default_hostname != old.meta.default_hostname;
        // A CA is rendered again when it changed or when one of its
        // certificates was revoked or reactivated.
        let mut cas: BTreeSet<&str> = BTreeSet::new();
        for item in old.cas.diff(&self.cas) {
            match item {
                DiffItem::Add(id, _) | DiffItem::Update { new: (id, _), .. } => {
                    cas.insert(id);
                }
                DiffItem::Remove(id, ca) if ca.kind != AuthorityKind::Server => {
                    delta.removed_cas.push(id.clone())
                }
                DiffItem::Remove(..) => {}
            }
        }
        for item in old.certs.diff(&self.certs) {
            let revoked = |c: &super::model::ClientCert| c.status == CertStatus::Revoked;
            match item {
                DiffItem::Add(_, c) | DiffItem::Remove(_, c) if revoked(c) => {
                    cas.insert(&c.ca_id);
                }
                DiffItem::Update {
                    old: (_, a),
                    new: (_, b),
                } if revoked(a) != revoked(b) => {
                    cas.insert(&b.ca_id);
                }
                _ => {}
            }
        }
        delta.cas = cas
            .into_iter()
            .filter_map(|id| self.cas.get(id))
            .filter(|ca| ca.kind != AuthorityKind::Server)
            .map(|ca| self.ca_section(ca))
            .collect();
        for item in old.hostnames.table().diff(self.hostnames.table()) {
            let default = &self.meta.default_hostname;
            default_touched |= match &item {
                DiffItem::Add(_, h) | DiffItem::Remove(_, h) => *h.name == **default,
                DiffItem::Update {
                    old: (_, a),
                    new: (_, b),
                } => *a.name == **default || *b.name == **default,
            };
            match item {
                DiffItem::Add(_, h) => delta.hostnames.push(host_section(h)),
                DiffItem::Update {
                    old: (_, a),
                    new: (_, b),
                } => {
                    if a.name != b.name {
                        delta.removed_hostnames.push(a.name.to_string());
                    }
                    delta.hostnames.push(host_section(b));
                }
                DiffItem::Remove(_, h) => delta.removed_hostnames.push(h.name.to_string()),
            }
        }
        if default_touched && self.default_identity() != old.default_identity() {
            delta.default_identity = Some(self.default_identity());
        }
        delta
    }

    fn zone_section(&self, base: &Config) -> ZoneSection {
        ZoneSection {
            min_tls_version: self.zone.min_tls_version,
            no_sni_min_tls_version: None,
            ciphers: self.zone.ciphers.clone(),
            session_resumption: self.zone.session_resumption,
            ..base.zone.clone()
        }
    }

    /// The default hostname's certificate and key: for clients without SNI or
    /// with an unknown one.
    fn default_identity(&self) -> Option<(Material, Material)> {
        let default = self.hostname_by_name(&self.meta.default_hostname)?;
        Some((
            Material::inline(
                "the default hostname's certificate",
                default.certificate.chain.bytes(),
            ),
            Material::inline(
                "the default hostname's key",
                default.certificate.key.bytes(),
            ),
        ))
    }

    fn ca_section(&self, ca: &Authority) -> CaSection {
        CaSection {
            name: ca.id.clone(),
            certificate: Material::inline(
                format!("CA {} certificate", ca.id),
                ca.certificate.as_bytes(),
            ),
            crl: ca
                .crl
                .iter()
                .filter_map(|crl| crl.der.as_ref())
                .map(|der| Material::inline(format!("CRL of CA {}", ca.id), der.bytes()))
                .collect(),
            revoked_serials: self
                .certs
                .values()
                .filter(|c| c.ca_id == ca.id && c.status == CertStatus::Revoked)
                .map(|c| c.serial_number.clone())
                .collect(),
            stale_crl_ok: true,
        }
    }
}

/// A hostname as the configuration's section.
fn host_section(h: &Hostname) -> HostnameSection {
    let label = |what: &str| format!("hostname {} {what}", h.name);
    HostnameSection {
        name: h.name.clone(),
        min_tls_version: h.min_tls_version,
        wildcard: h.wildcard,
        ciphers: h.ciphers.clone(),
        certificate: Some(Material::inline(
            label("certificate"),
            h.certificate.chain.bytes(),
        )),
        key: Some(Material::inline(label("key"), h.certificate.key.bytes())),
        origin: h.origin.clone(),
        mtls: !h.cas.is_empty(),
        cas: h.cas.clone(),
        forward_client_cert: h.forward_client_cert,
        session_resumption: h.session_resumption,
    }
}
