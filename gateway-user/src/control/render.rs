//! The control plane's state rendered as the configuration both layers are
//! built from: the same [`Config`] a file gives, with certificates, keys and
//! CRLs held in memory.

use base64::Engine;

use super::model::{AuthorityKind, CertStatus, State};
use crate::config::{CaSection, Config, HostnameSection, Material};

impl State {
    /// The configuration for this state; `base` gives the runtime sections
    /// (`[xdp]`, `[terminator]` listeners and limits, `[metrics]`).
    pub fn to_config(&self, base: &Config) -> Config {
        let mut config = base.clone();
        config.zone.min_tls_version = self.zone.min_tls_version;
        config.zone.no_sni_min_tls_version = None;
        config.zone.ciphers = self.zone.ciphers.clone();
        config.rules = self.rules.clone();
        config.cas = self
            .cas
            .values()
            .filter(|ca| ca.kind != AuthorityKind::Server)
            .map(|ca| CaSection {
                name: ca.id.clone(),
                certificate: Material::inline(
                    format!("CA {} certificate", ca.id),
                    ca.certificate.as_bytes(),
                ),
                crl: ca
                    .crl
                    .iter()
                    .filter_map(|crl| crl.der.as_deref())
                    .filter_map(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
                    .map(|der| Material::inline(format!("CRL of CA {}", ca.id), der))
                    .collect(),
                revoked_serials: self
                    .certs
                    .values()
                    .filter(|c| c.ca_id == ca.id && c.status == CertStatus::Revoked)
                    .map(|c| c.serial_number.clone())
                    .collect(),
                stale_crl_ok: true,
            })
            .collect();
        config.hostnames = self
            .hostnames
            .values()
            .map(|h| {
                let label = |what: &str| format!("hostname {} {what}", h.name);
                HostnameSection {
                    name: h.name.clone(),
                    min_tls_version: h.min_tls_version,
                    wildcard: h.wildcard,
                    ciphers: h.ciphers.clone(),
                    certificate: Some(Material::inline(
                        label("certificate"),
                        h.certificate.chain.as_bytes(),
                    )),
                    key: Some(Material::inline(label("key"), h.certificate.key.as_bytes())),
                    origin: h.origin.clone(),
                    mtls: !h.cas.is_empty(),
                    cas: h.cas.clone(),
                    forward_client_cert: h.forward_client_cert,
                }
            })
            .collect();
        if let Some(default) = self.hostname_by_name(&self.meta.default_hostname) {
            config.terminator.certificate = Some(Material::inline(
                "the default hostname's certificate",
                default.certificate.chain.as_bytes(),
            ));
            config.terminator.key = Some(Material::inline(
                "the default hostname's key",
                default.certificate.key.as_bytes(),
            ));
        }
        config
    }
}
