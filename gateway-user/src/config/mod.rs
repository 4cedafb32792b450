//! The configuration file (TOML), parsed and validated once into typed structs.
//!
//! ```toml
//! [xdp]
//! interface = "eth0"          # or `gateway run --interface`
//! ports = [443, 8443]
//! mode = "auto"               # auto | native | generic
//! refuse = "reset"            # reset (client fails at once) | drop (silent)
//!
//! [zone]
//! min_tls_version = "1.2"
//! no_sni_min_tls_version = "1.2"   # hellos without SNI; defaults to the zone's
//!
//! [[hostname]]
//! name = "api.example.com"
//! min_tls_version = "1.3"     # omitted: the zone's applies
//! wildcard = false            # true: subdomains exist but use the zone's minimum
//!
//! [metrics]
//! listen = "127.0.0.1:9100"
//! per_host_limit = 1000       # hostnames with their own label; the rest: "_other"
//! ```

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::{
    rules::{RuleSet, RuleSpec},
    tls_version::TlsVersion,
};

pub mod delta;
mod der;
mod logging;
mod material;
mod terminator;

pub use der::{CertChain, CrlDer, KeyDer};
pub use logging::{LogFlags, LogOutput, LogSection, LogSpec};
pub use material::Material;
pub use terminator::{CaSection, ForwardMode, TerminatorSection};

/// The TLS ports when the configuration names none.
pub const DEFAULT_TLS_PORTS: [u16; 2] = [443, 8443];

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where and how the XDP filter runs.
    #[serde(default)]
    pub xdp: XdpSection,
    /// Zone-wide TLS settings.
    #[serde(default)]
    pub zone: ZoneSection,
    /// Hostnames with their own settings.
    #[serde(default, rename = "hostname")]
    pub hostnames: Vec<HostnameSection>,
    /// The Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsSection,
    /// The TLS terminator.
    #[serde(default)]
    pub terminator: TerminatorSection,
    /// CAs for client certificates.
    #[serde(default, rename = "ca")]
    pub cas: Vec<CaSection>,
    /// The zone's firewall rules, in order.
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleSpec>,
    /// The access and handshake logs (read at start).
    #[serde(default)]
    pub log: LogSection,
}

/// `[xdp]`: where the filter is attached and which ports carry TLS.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XdpSection {
    /// Interface to attach to (the command line may override it).
    pub interface: Option<String>,
    /// TCP ports whose segments are inspected.
    #[serde(default = "default_ports")]
    pub ports: Vec<u16>,
    /// Attach mode.
    #[serde(default)]
    pub mode: AttachMode,
    /// What happens to a refused ClientHello.
    #[serde(default)]
    pub refuse: RefuseMode,
    /// Slots of the flow-anchor table (a power of two; 16 bytes each).
    #[serde(default = "default_flow_anchors")]
    pub flow_anchors: u32,
    /// ClientHellos reassembled at once (a power of two; about 13 KiB each).
    #[serde(default = "default_hello_flows")]
    pub hello_flows: u32,
    /// Size of the hostname policy table: how many hostnames the gateway can
    /// hold (each costs kernel memory only once written).
    #[serde(default = "default_hostnames")]
    pub hostnames: u32,
    /// Whether SYNs to the TLS ports are answered with cookies in XDP.
    #[serde(default)]
    pub syn_cookies: SynCookies,
    /// SYNs per second on a port at which `syn_cookies = "auto"` engages.
    #[serde(default = "default_syn_cookie_rate")]
    pub syn_cookie_rate: u32,
    /// bpffs directory where the XDP link and maps are pinned, so that the
    /// filter outlives the process; none: a stop detaches it.
    #[serde(default)]
    pub pin_dir: Option<std::path::PathBuf>,
}

impl Default for XdpSection {
    fn default() -> Self {
        Self {
            interface: None,
            ports: default_ports(),
            mode: AttachMode::default(),
            refuse: RefuseMode::default(),
            flow_anchors: default_flow_anchors(),
            hello_flows: default_hello_flows(),
            hostnames: default_hostnames(),
            syn_cookies: SynCookies::default(),
            syn_cookie_rate: default_syn_cookie_rate(),
            pin_dir: None,
        }
    }
}

impl XdpSection {
    /// Checks that the table sizes this section asks for are within bounds
    /// (see [`check_table_sizes`]).
    pub fn validate_tables(&self) -> anyhow::Result<()> {
        check_table_sizes(self.flow_anchors, self.hello_flows, self.hostnames)
    }
}

/// Checks the XDP tables' sizes, named as `[xdp]` names them: the flow tables
/// powers of two within bounds, the hostname table within bounds.
pub fn check_table_sizes(
    flow_anchors: u32,
    hello_flows: u32,
    hostnames: u32,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=1 << 24).contains(&hostnames),
        "[xdp] hostnames = {hostnames}: must be from 1 to {}",
        1 << 24
    );
    for (name, n, max) in [
        ("flow_anchors", flow_anchors, 1 << 24),
        ("hello_flows", hello_flows, 1 << 20),
    ] {
        anyhow::ensure!(
            n.is_power_of_two() && n <= max,
            "[xdp] {name} = {n}: must be a power of two from 1 to {max}"
        );
    }
    Ok(())
}

fn default_flow_anchors() -> u32 {
    gateway_common::DEFAULT_FLOW_ANCHORS
}

fn default_syn_cookie_rate() -> u32 {
    1000
}

fn default_hostnames() -> u32 {
    gateway_common::DEFAULT_HOSTS
}

fn default_hello_flows() -> u32 {
    gateway_common::DEFAULT_HELLO_FLOWS
}

fn default_ports() -> Vec<u16> {
    DEFAULT_TLS_PORTS.to_vec()
}

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// Native (driver) mode, falling back to generic when the driver has none.
    #[default]
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode, on any device.
    Generic,
}

/// What the XDP filter does with a ClientHello it refuses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RefuseMode {
    /// Turn it into a RST for the local stack: the server's socket is freed at
    /// once and the client is reset on its first retransmission (fails in
    /// well under a second). A hello with no connection behind it (a spoofed,
    /// stateless segment: only the listener matches its flow) is dropped.
    #[default]
    Reset,
    /// Drop it: cheapest, but the client retransmits into silence until it
    /// gives up and the server's socket waits in the accept queue.
    Drop,
}

/// Whether the XDP program answers SYNs itself, with cookies, so that the
/// kernel builds a connection only for a hello that passes (Linux 6.9+).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SynCookies {
    /// Never: the kernel answers every SYN (its own cookies on overflow).
    Off,
    /// Always, on every TLS port.
    On,
    /// On a port whose SYN rate reaches `syn_cookie_rate`, until it stays
    /// under half of it for 10 s.
    #[default]
    Auto,
}

/// `[zone]`: the zone's minimum TLS versions.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneSection {
    /// Minimum for every hostname without its own value.
    #[serde(default = "default_min")]
    pub min_tls_version: TlsVersion,
    /// Minimum for ClientHellos without SNI (default: `min_tls_version`).
    pub no_sni_min_tls_version: Option<TlsVersion>,
    /// Cipher suites for TLS 1.2 and below (BoringSSL names); empty: the defaults.
    #[serde(default)]
    pub ciphers: Vec<String>,
    /// What a request blocked by a rule is told (as text, JSON or HTML by its Accept).
    #[serde(default = "default_block_message")]
    pub block_message: String,
    /// TLS session resumption (tickets and session IDs) for hostnames without
    /// their own setting; on by default.
    #[serde(default = "default_true")]
    pub session_resumption: bool,
}

fn default_true() -> bool {
    true
}

fn default_block_message() -> String {
    "Access denied by the gateway's firewall rules.".to_string()
}

impl Default for ZoneSection {
    fn default() -> Self {
        Self {
            min_tls_version: default_min(),
            no_sni_min_tls_version: None,
            ciphers: Vec::new(),
            block_message: default_block_message(),
            session_resumption: true,
        }
    }
}

fn default_min() -> TlsVersion {
    TlsVersion::Tls12
}

/// `[[hostname]]`: one hostname's settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostnameSection {
    /// The exact hostname (lowercase ASCII, no trailing dot).
    pub name: Arc<str>,
    /// Its own minimum; omitted, the zone's applies.
    pub min_tls_version: Option<TlsVersion>,
    /// Whether subdomains are served too; they use the zone's minimum, not this entry's.
    #[serde(default)]
    pub wildcard: bool,
    /// Cipher suites for TLS 1.2 and below; empty: the zone's.
    #[serde(default)]
    pub ciphers: Vec<String>,
    /// Certificate chain (PEM); omitted: the terminator's default certificate.
    pub certificate: Option<Material>,
    /// Private key (PEM) of `certificate`.
    pub key: Option<Material>,
    /// Where requests go: `http://host:port` (HTTP/1.1) or `h2c://host:port`
    /// (HTTP/2 with prior knowledge, cleartext).
    pub origin: Option<String>,
    /// Ask clients for a certificate (the handshake completes without one).
    #[serde(default)]
    pub mtls: bool,
    /// Names of the `[[ca]]` entries client certificates may chain to.
    #[serde(default)]
    pub cas: Vec<String>,
    /// How the client certificate is passed to the origin.
    #[serde(default)]
    pub forward_client_cert: ForwardMode,
    /// Its own session resumption setting; omitted, the zone's applies.
    pub session_resumption: Option<bool>,
}

/// `[metrics]`: where `/metrics` is served.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Listen address.
    #[serde(default = "default_metrics_listen")]
    pub listen: SocketAddr,
    /// How many hostnames get a `host` label of their own in
    /// `gateway_http_requests_total`; the rest are counted as `_other`.
    #[serde(default = "default_per_host_limit")]
    pub per_host_limit: usize,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            listen: default_metrics_listen(),
            per_host_limit: default_per_host_limit(),
        }
    }
}

fn default_per_host_limit() -> usize {
    1000
}

fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9100))
}

impl Config {
    /// Reads and validates a configuration file. Relative file paths in it are
    /// relative to the file's directory.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read configuration {}", path.display()))?;
        let mut config = Self::parse(&text)
            .with_context(|| format!("invalid configuration {}", path.display()))?;
        if let Some(dir) = path.parent() {
            config.rebase(dir);
        }
        Ok(config)
    }

    fn rebase(&mut self, dir: &Path) {
        self.materials_mut().for_each(|m| m.rebase(dir));
        self.log.rebase(dir);
    }

    fn materials_mut(&mut self) -> impl Iterator<Item = &mut Material> {
        let t = &mut self.terminator;
        t.certificate
            .iter_mut()
            .chain(t.key.iter_mut())
            .chain(
                self.cas
                    .iter_mut()
                    .flat_map(|ca| std::iter::once(&mut ca.certificate).chain(&mut ca.crl)),
            )
            .chain(
                self.hostnames
                    .iter_mut()
                    .flat_map(|h| h.certificate.iter_mut().chain(h.key.iter_mut())),
            )
    }

    /// Every file the configuration refers to (certificates, keys, CRLs): a change
    /// to any of them reloads the configuration.
    pub fn files(&self) -> Vec<PathBuf> {
        let t = &self.terminator;
        t.certificate
            .iter()
            .chain(&t.key)
            .chain(
                self.cas
                    .iter()
                    .flat_map(|ca| std::iter::once(&ca.certificate).chain(&ca.crl)),
            )
            .chain(
                self.hostnames
                    .iter()
                    .flat_map(|h| h.certificate.iter().chain(&h.key)),
            )
            .filter_map(Material::path)
            .map(Path::to_path_buf)
            .collect()
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types alone do not: names, references between sections, rules.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.xdp.ports.is_empty() {
            bail!("[xdp] ports is empty: name at least one TLS port (e.g. 443)");
        }
        if let Some(p) = self.xdp.ports.iter().find(|p| **p == 0) {
            bail!("[xdp] ports contains {p}: ports are 1..65535");
        }
        self.xdp.validate_tables()?;
        if self.hostnames.len() > self.xdp.hostnames as usize {
            bail!(
                "{} hostnames: the XDP filter holds at most {} ([xdp] hostnames)",
                self.hostnames.len(),
                self.xdp.hostnames
            );
        }
        let mut seen = BTreeSet::new();
        let cas: BTreeSet<&str> = self.cas.iter().map(|c| c.name.as_str()).collect();
        if cas.len() != self.cas.len() {
            bail!("two [[ca]] entries have the same name");
        }
        for host in &self.hostnames {
            if !seen.insert(&*host.name) {
                bail!("hostname {:?} is listed twice", host.name);
            }
            host.validate(|ca| cas.contains(ca))?;
        }
        validate_rules(&self.rules)?;
        if self.terminator.certificate.is_some() != self.terminator.key.is_some() {
            bail!("[terminator]: set both `certificate` and `key`, or neither");
        }
        Ok(())
    }
}

impl HostnameSection {
    /// Checks the hostname on its own; `has_ca` tells which CA names exist.
    pub fn validate(&self, has_ca: impl Fn(&str) -> bool) -> anyhow::Result<()> {
        validate_hostname(&self.name)?;
        if self.certificate.is_some() != self.key.is_some() {
            bail!(
                "hostname {:?}: set both `certificate` and `key`, or neither",
                self.name
            );
        }
        if let Some(ca) = self.cas.iter().find(|c| !has_ca(c)) {
            bail!("hostname {:?}: no [[ca]] named {ca:?}", self.name);
        }
        if self.mtls && self.cas.is_empty() {
            bail!(
                "hostname {:?}: mtls = true needs at least one CA in `cas`",
                self.name
            );
        }
        if let Some(origin) = &self.origin {
            let uri: http::Uri = origin.parse().with_context(|| {
                format!("hostname {:?}: origin {origin:?} is not a URL", self.name)
            })?;
            let scheme_ok = matches!(uri.scheme_str(), Some("http" | "h2c"));
            if !scheme_ok || uri.authority().is_none() {
                bail!(
                    "hostname {:?}: origin {origin:?} must look like http://host:port \
                     (HTTP/1.1) or h2c://host:port (HTTP/2, cleartext)",
                    self.name
                );
            }
        }
        Ok(())
    }
}

/// Checks that each rule id is used once.
pub fn validate_rule_ids(rules: &[RuleSpec]) -> anyhow::Result<()> {
    let mut ids = BTreeSet::new();
    for rule in rules {
        if !ids.insert(rule.id.as_str()) {
            bail!("rule id {:?} is used twice", rule.id);
        }
    }
    Ok(())
}

/// Checks a rule list: ids used once, every expression compiles.
pub fn validate_rules(rules: &[RuleSpec]) -> anyhow::Result<()> {
    validate_rule_ids(rules)?;
    if let Err((id, e)) = RuleSet::compile(rules) {
        bail!("rule {id:?}: {e}");
    }
    Ok(())
}

/// Checks that a configured hostname is a plain lowercase DNS name.
pub fn validate_hostname(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.len() > gateway_common::MAX_SNI_LEN {
        bail!("hostname {name:?} must be 1 to 255 characters long");
    }
    if name.starts_with("*.") {
        bail!(
            "hostname {name:?}: write the name without \"*.\" and set `wildcard = true` \
             (subdomains then use the zone's settings)"
        );
    }
    let ok = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if name.split('.').any(|label| label.len() > 63) {
        bail!("hostname {name:?}: a label (between dots) is at most 63 characters");
    }
    if !ok || name.starts_with('.') || name.ends_with('.') || name.contains("..") {
        bail!("hostname {name:?} must be lowercase letters, digits, '-' and '.' (no trailing dot)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_working_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.zone.min_tls_version, TlsVersion::Tls12);
        assert_eq!(c.xdp.ports, vec![443, 8443]);
        assert_eq!(c.xdp.mode, AttachMode::Auto);
    }

    #[test]
    fn full_file_parses() {
        let c = Config::parse(
            r#"
            [xdp]
            interface = "veth0"
            ports = [443]
            mode = "generic"
            [zone]
            min_tls_version = "1.1"
            no_sni_min_tls_version = "1.3"
            [[hostname]]
            name = "api.example.com"
            min_tls_version = "1.3"
            [[hostname]]
            name = "saas.example.com"
            wildcard = true
            "#,
        )
        .unwrap();
        assert_eq!(c.hostnames.len(), 2);
        assert_eq!(c.zone.no_sni_min_tls_version, Some(TlsVersion::Tls13));
        assert!(c.hostnames[1].wildcard);
    }

    #[test]
    fn bad_input_is_refused_with_a_clear_error() {
        let cases = [
            ("[zone]\nmin_tls_version = \"1.4\"", "1.4"),
            ("[[hostname]]\nname = \"API.example.com\"", "lowercase"),
            ("[[hostname]]\nname = \"*.example.com\"", "wildcard = true"),
            (
                "[[hostname]]\nname = \"a.com\"\n[[hostname]]\nname = \"a.com\"",
                "twice",
            ),
            ("[xdp]\nports = []", "ports is empty"),
            ("[xdp]\nports = [0]", "1..65535"),
            ("[zone]\nminimum = \"1.2\"", "unknown field"),
            ("[[hostname]]\nname = \"a.com.\"", "trailing dot"),
        ];
        for (text, expected) in cases {
            let err = format!("{:#}", Config::parse(text).unwrap_err());
            assert!(err.contains(expected), "{text:?} gave {err:?}");
        }
    }
}
