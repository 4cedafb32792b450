//! The admin commands' arguments: what `gateway zone|hostname|ca|cert|rules|expiring`
//! accept (clap), and how a rule position becomes JSON.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

/// Commands that talk to the admin API.
#[derive(Subcommand)]
pub(super) enum AdminCommand {
    /// The zone's TLS settings.
    Zone {
        #[command(subcommand)]
        command: ZoneCommand,
    },
    /// Custom hostnames.
    Hostname {
        #[command(subcommand)]
        command: HostnameCommand,
    },
    /// Client-certificate CAs: bring-your-own uploads, associations, CRLs.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Client certificates of the managed CA.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Scoped API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// The audit log: every change, newest first.
    Audit {
        /// Only changes from this time on (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only changes before this time (RFC 3339).
        #[arg(long)]
        before: Option<String>,
    },
    /// Fleet mode: the nodes sharing this configuration.
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
    /// Certificates that expire soon (CAs, client and server certificates).
    Expiring {
        /// Within this many days.
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
}

/// `gateway fleet`.
#[derive(Subcommand)]
pub(super) enum FleetCommand {
    /// Each node, the configuration revision it runs, its lag behind the
    /// newest revision and why it refused one, if it did.
    Status,
}

/// `gateway token`.
#[derive(Subcommand)]
pub(super) enum TokenCommand {
    /// Make a token (its secret is shown once).
    Create {
        /// A name for people.
        #[arg(long)]
        name: String,
        /// A permission group, e.g. "SSL and Certificates Read" (repeatable).
        #[arg(long = "permission", required = true)]
        permissions: Vec<String>,
        /// When it stops working (RFC 3339).
        #[arg(long)]
        expires_on: Option<String>,
    },
    /// List the tokens.
    List,
    /// Give a token a new secret (shown once); the old one stops working.
    Roll { id: String },
    /// Delete a token.
    Delete { id: String },
    /// The permission groups a token may hold.
    Permissions,
}

/// `gateway zone`.
#[derive(Subcommand)]
pub(super) enum ZoneCommand {
    /// Show the zone and its settings.
    Show,
    /// Change the zone's minimum TLS version, ciphers and/or session resumption.
    Set {
        /// 1.0, 1.1, 1.2 or 1.3.
        #[arg(long)]
        min_tls: Option<String>,
        /// Cipher suites for TLS 1.2 and below, comma-separated ("" for the defaults).
        #[arg(long)]
        ciphers: Option<String>,
        /// TLS session resumption for hostnames without their own setting.
        #[arg(long)]
        session_resumption: Option<bool>,
    },
}

/// Settings shared by `hostname add` and `hostname edit`.
#[derive(Args)]
pub(super) struct HostnameSettings {
    /// Its own minimum TLS version (1.0 to 1.3; "zone" for the zone's).
    #[arg(long)]
    pub(super) min_tls: Option<String>,
    /// Its own cipher suites, comma-separated ("" for the zone's).
    #[arg(long)]
    pub(super) ciphers: Option<String>,
    /// Its own TLS session resumption: true, false, or "zone" for the zone's.
    #[arg(long)]
    pub(super) session_resumption: Option<String>,
    /// Where requests go, http://host:port ("" for none).
    #[arg(long)]
    pub(super) origin: Option<String>,
    /// mTLS on (with the managed CA unless CAs are associated) or off.
    #[arg(long)]
    pub(super) mtls: Option<bool>,
    /// How the client certificate reaches the origin: none, cloudflare or rfc9440.
    #[arg(long)]
    pub(super) forward: Option<String>,
    /// Serve subdomains too (with the zone's settings).
    #[arg(long)]
    pub(super) wildcard: Option<bool>,
    /// An uploaded certificate chain (PEM) instead of one from the server CA.
    #[arg(long, requires = "key")]
    pub(super) cert: Option<PathBuf>,
    /// Its private key (PEM).
    #[arg(long, requires = "cert")]
    pub(super) key: Option<PathBuf>,
}

/// `gateway hostname`.
#[derive(Subcommand)]
pub(super) enum HostnameCommand {
    /// List hostnames.
    List,
    /// Show one hostname (by name or id).
    Show { hostname: String },
    /// Add a hostname.
    Add {
        hostname: String,
        #[command(flatten)]
        settings: HostnameSettings,
    },
    /// Change a hostname's settings.
    Edit {
        hostname: String,
        #[command(flatten)]
        settings: HostnameSettings,
    },
    /// Delete a hostname.
    Delete { hostname: String },
}

/// `gateway ca`.
#[derive(Subcommand)]
pub(super) enum CaCommand {
    /// Upload a bring-your-own CA (PEM); at most 5.
    Upload {
        file: PathBuf,
        #[arg(long)]
        name: Option<String>,
        /// Its CRL: an absolute file path or an http:// URL.
        #[arg(long)]
        crl: Option<String>,
    },
    /// List uploaded CAs.
    List,
    /// Show one uploaded CA.
    Show { id: String },
    /// Delete an uploaded CA (its hostname associations must be empty).
    Delete { id: String },
    /// Replace the hostnames whose client certificates a CA verifies.
    Associate {
        /// The CA's id; omitted: the managed CA.
        #[arg(long)]
        ca: Option<String>,
        /// The hostnames (none: remove every association).
        hostnames: Vec<String>,
    },
    /// The hostnames associated with a CA.
    Associations {
        /// The CA's id; omitted: the managed CA.
        #[arg(long)]
        ca: Option<String>,
    },
    /// Set, refresh or remove an uploaded CA's CRL source.
    Crl {
        id: String,
        /// A new source (absolute path or http:// URL); omitted: fetch the current one again.
        #[arg(long, conflicts_with = "remove")]
        source: Option<String>,
        /// Remove the source and its revocations.
        #[arg(long)]
        remove: bool,
    },
    /// Print the managed CA's certificate (PEM).
    Managed,
}

/// `gateway cert`.
#[derive(Subcommand)]
pub(super) enum CertCommand {
    /// Issue a client certificate from a CSR, or with a new key (--cn).
    Issue {
        /// A PEM certificate request.
        #[arg(long, conflicts_with = "cn", required_unless_present = "cn")]
        csr: Option<PathBuf>,
        /// Generate a key pair for this common name (the key is shown once).
        #[arg(long)]
        cn: Option<String>,
        /// Validity in days (1 to 3650).
        #[arg(long, default_value_t = 3650)]
        days: u32,
        /// Write PREFIX.pem (and PREFIX.key) instead of printing them.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List issued certificates.
    List {
        /// Only "active" or "revoked" ones.
        #[arg(long)]
        status: Option<String>,
    },
    /// Show one.
    Show { id: String },
    /// Revoke one: requests with it see cf.tls_client_auth.cert_revoked at once.
    Revoke { id: String },
    /// Make a revoked one valid again.
    Reactivate { id: String },
}

/// `gateway rules` commands that go through the API.
#[derive(Subcommand)]
pub(super) enum RulesApi {
    /// List the zone's rules in order.
    List,
    /// Add a rule (at the end unless placed).
    Add {
        expression: String,
        /// block, allow or log.
        #[arg(long, default_value = "block")]
        action: String,
        #[arg(long)]
        description: Option<String>,
        /// Add it disabled.
        #[arg(long)]
        disabled: bool,
        #[command(flatten)]
        position: PositionArgs,
    },
    /// Change a rule.
    Edit {
        id: String,
        #[arg(long)]
        expression: Option<String>,
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        enabled: Option<bool>,
        #[command(flatten)]
        position: PositionArgs,
    },
    /// Move a rule.
    Move {
        id: String,
        #[command(flatten)]
        position: PositionArgs,
    },
    /// Delete a rule.
    Delete { id: String },
}

/// Where a rule goes.
#[derive(Args)]
pub(super) struct PositionArgs {
    /// Before the rule with this id.
    #[arg(long, conflicts_with_all = ["after", "index"])]
    pub(super) before: Option<String>,
    /// After the rule with this id.
    #[arg(long, conflicts_with = "index")]
    pub(super) after: Option<String>,
    /// At this 1-based place.
    #[arg(long)]
    pub(super) index: Option<usize>,
}

impl PositionArgs {
    /// The API's `position` object, if a place was given.
    pub(super) fn json(&self) -> Option<Value> {
        match (&self.before, &self.after, self.index) {
            (Some(b), _, _) => Some(json!({"before": b})),
            (_, Some(a), _) => Some(json!({"after": a})),
            (_, _, Some(i)) => Some(json!({"index": i})),
            _ => None,
        }
    }
}
