//! The terminator's part of the configuration: listeners and limits, CAs, and
//! each hostname's certificate, ciphers, mTLS and origin.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::Material;

/// `[terminator]`: where TLS is terminated and the limits that keep it standing.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminatorSection {
    /// Listen addresses (IPv4 and IPv6); empty: the terminator is off.
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// Certificate chain (PEM) for clients without SNI or with an unknown one.
    pub certificate: Option<Material>,
    /// Its private key (PEM).
    pub key: Option<Material>,
    /// A TLS handshake must finish within this time.
    #[serde(default = "defaults::handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// Request headers must arrive within this time (slow clients are cut off).
    #[serde(default = "defaults::header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// A request to the origin must complete within this time (else 504).
    #[serde(default = "defaults::origin_timeout_ms")]
    pub origin_timeout_ms: u64,
    /// Open connections at most; more are closed at once.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Handshakes in progress at most; more wait (within the handshake timeout).
    #[serde(default = "defaults::max_handshakes")]
    pub max_handshakes: usize,
    /// Requests served on one connection before it is closed.
    #[serde(default = "defaults::max_requests_per_connection")]
    pub max_requests_per_connection: u64,
    /// A new session ticket key every this many seconds; the two before it
    /// still open tickets (see `tls::tickets`). Read at start.
    #[serde(default = "defaults::ticket_key_rotation_secs")]
    pub ticket_key_rotation_secs: u64,
}

impl Default for TerminatorSection {
    fn default() -> Self {
        toml::from_str("").expect("defaults parse")
    }
}

mod defaults {
    pub(super) fn handshake_timeout_ms() -> u64 {
        10_000
    }
    pub(super) fn header_timeout_ms() -> u64 {
        10_000
    }
    pub(super) fn origin_timeout_ms() -> u64 {
        30_000
    }
    pub(super) fn max_connections() -> usize {
        10_000
    }
    pub(super) fn max_handshakes() -> usize {
        512
    }
    pub(super) fn max_requests_per_connection() -> u64 {
        10_000
    }
    pub(super) fn ticket_key_rotation_secs() -> u64 {
        3600
    }
}

/// `[[ca]]`: a CA that client certificates may chain to.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaSection {
    /// Name that hostnames use to associate the CA.
    pub name: String,
    /// The CA certificate (PEM).
    pub certificate: Material,
    /// CRLs (PEM or DER; base and delta CRLs) for a bring-your-own CA.
    #[serde(default)]
    pub crl: Vec<Material>,
    /// Serials (hex) revoked through the managed CA.
    #[serde(default)]
    pub revoked_serials: Vec<String>,
    /// Keep a CRL past its nextUpdate (the store's last good CRL of a source
    /// that is down) instead of refusing the configuration.
    #[serde(skip)]
    pub stale_crl_ok: bool,
}

/// How the client certificate reaches the origin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardMode {
    /// Not at all.
    #[default]
    None,
    /// `Cf-Client-Cert-Der-Base64`, `Cf-Client-Cert-Sha256` and the `cf-cert-*` headers.
    Cloudflare,
    /// RFC 9440 `Client-Cert` and `Client-Cert-Chain`.
    Rfc9440,
}
