//! The control plane's records: what the store keeps and the admin API shows.
//! One [`State`] holds them all. Its tables are persistent maps: a copy costs
//! nothing and shares every record it does not change, so a change edits a
//! copy, and what it changed is found without reading the rest ([`Table::diff`]).

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{
    acme_state::{AcmeOrder, AcmeZone},
    tokens::{ApiToken, Caller, FIRST_RUN_ID, Permission},
};
use crate::{
    config::{CertChain, CrlDer, ForwardMode, KeyDer},
    rules::RuleSpec,
    tls_version::TlsVersion,
};

/// Records by id, in id order.
pub type Table<T> = imbl::OrdMap<String, T>;

/// Everything the control plane knows, as of the last commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Identifiers and the admin token's hash.
    pub meta: Meta,
    /// Zone-wide TLS settings.
    pub zone: ZoneSettings,
    /// Custom hostnames by id (and by name).
    pub hostnames: Hostnames,
    /// CAs by id: the managed CA, the server CA and bring-your-own CAs.
    pub cas: Table<Authority>,
    /// Client certificates issued by the managed CA, by id.
    pub certs: Table<ClientCert>,
    /// The zone's firewall rules, in evaluation order.
    pub rules: Vec<RuleSpec>,
    /// Their ruleset's name and versions.
    pub ruleset: super::ruleset::Ruleset,
    /// Scoped API tokens, by id (the first-run token is `meta.token_sha256`).
    pub tokens: Table<ApiToken>,
}

/// The hostnames table, indexed by name too. A hostname's name never changes
/// once it is created (a new name is a new hostname), so the index follows
/// inserts and removals only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hostnames {
    by_id: Table<Hostname>,
    by_name: imbl::OrdMap<Arc<str>, String>,
}

impl Hostnames {
    /// The records by id.
    pub fn table(&self) -> &Table<Hostname> {
        &self.by_id
    }

    /// The hostname with this id.
    pub fn get(&self, id: &str) -> Option<&Hostname> {
        self.by_id.get(id)
    }

    /// The hostname with this id, to edit (not its name).
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Hostname> {
        self.by_id.get_mut(id)
    }

    /// The hostname called `name`.
    pub fn by_name(&self, name: &str) -> Option<&Hostname> {
        self.by_id.get(self.by_name.get(name)?)
    }

    /// Adds or replaces a hostname.
    pub fn insert(&mut self, id: String, host: Hostname) -> Option<Hostname> {
        let old = self.by_id.insert(id.clone(), host);
        if let Some(old) = &old {
            self.by_name.remove(&old.name);
        }
        let name = self.by_id[&id].name.clone();
        self.by_name.insert(name, id);
        old
    }

    /// Removes a hostname.
    pub fn remove(&mut self, id: &str) -> Option<Hostname> {
        let old = self.by_id.remove(id)?;
        self.by_name.remove(&old.name);
        Some(old)
    }

    /// Whether a hostname has this id.
    pub fn contains_key(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// The hostnames, in id order.
    pub fn values(&self) -> impl Iterator<Item = &Hostname> {
        self.by_id.values()
    }

    /// The hostnames in name order (how the API lists them), either way.
    pub fn in_name_order(&self, descending: bool) -> Box<dyn Iterator<Item = &Hostname> + '_> {
        let ids = self.by_name.values();
        let host = |id: &String| self.by_id.get(id);
        if descending {
            Box::new(ids.rev().filter_map(host))
        } else {
            Box::new(ids.filter_map(host))
        }
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

impl From<Table<Hostname>> for Hostnames {
    fn from(by_id: Table<Hostname>) -> Hostnames {
        let by_name = by_id
            .iter()
            .map(|(id, h)| (h.name.clone(), id.clone()))
            .collect();
        Hostnames { by_id, by_name }
    }
}

impl std::ops::Index<&String> for Hostnames {
    type Output = Hostname;

    fn index(&self, id: &String) -> &Hostname {
        &self.by_id[id]
    }
}

impl Serialize for Hostnames {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.by_id.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Hostnames {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Hostnames, D::Error> {
        Table::deserialize(d).map(Hostnames::from)
    }
}

/// Identifiers fixed at the first run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The account (bring-your-own CAs live here).
    pub account_id: String,
    /// The zone.
    pub zone_id: String,
    /// The zone's name.
    pub zone_name: String,
    /// SHA-256 (hex) of the admin API token.
    pub token_sha256: String,
    /// The hostname whose certificate answers clients without SNI or with an unknown one.
    pub default_hostname: String,
}

/// `zones/{id}/settings`: the zone's minimum TLS version and ciphers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneSettings {
    /// Minimum for hostnames without their own.
    pub min_tls_version: TlsVersion,
    /// Cipher suites for TLS 1.2 and below; empty: the defaults.
    pub ciphers: Vec<String>,
    /// TLS session resumption for hostnames without their own setting (on
    /// when absent: stores from before the setting).
    #[serde(default = "resumption_default")]
    pub session_resumption: bool,
    /// ACME settings and account (none: no `acme` hostnames).
    #[serde(default)]
    pub acme: Option<AcmeZone>,
}

fn resumption_default() -> bool {
    true
}

/// A custom hostname.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hostname {
    /// Its id.
    pub id: String,
    /// The name (lowercase, no trailing dot).
    pub name: Arc<str>,
    /// Subdomains are served too, with the zone's settings.
    pub wildcard: bool,
    /// Its own minimum TLS version; none: the zone's.
    pub min_tls_version: Option<TlsVersion>,
    /// Its own cipher suites; empty: the zone's.
    pub ciphers: Vec<String>,
    /// Its own session resumption setting; none: the zone's.
    #[serde(default)]
    pub session_resumption: Option<bool>,
    /// Where requests go (`http://host:port`).
    pub origin: Option<String>,
    /// How the client certificate reaches the origin.
    pub forward_client_cert: ForwardMode,
    /// The server certificate.
    pub certificate: ServerCert,
    /// Certificate source `acme`: its order state (none: `gateway` or `uploaded`).
    #[serde(default)]
    pub acme: Option<AcmeOrder>,
    /// CAs associated with the hostname (ids): mTLS is on when there is one.
    pub cas: Vec<String>,
    /// When it was created (Unix seconds).
    pub created_on: i64,
}

/// A hostname's certificate chain and key (DER in memory, PEM in the store).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerCert {
    /// Certificate chain, leaf first.
    pub chain: CertChain,
    /// Private key.
    pub key: KeyDer,
    /// Issued by the gateway's server CA (else uploaded).
    pub managed: bool,
    /// Expiry (Unix seconds).
    pub expires_on: i64,
}

/// What a CA is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthorityKind {
    /// The zone's managed client CA: issues and revokes client certificates.
    Managed,
    /// A bring-your-own client CA.
    Uploaded,
    /// Issues server certificates for hostnames without an uploaded one.
    Server,
}

/// A CA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authority {
    /// Its id.
    pub id: String,
    /// A name for people.
    pub name: String,
    /// What it is for.
    pub kind: AuthorityKind,
    /// The certificate(s), PEM.
    pub certificate: String,
    /// The private key (managed and server CAs only).
    pub key: Option<String>,
    /// Issuer, serial (hex) and signature algorithm, for listings.
    pub issuer: String,
    /// Serial number (hex).
    pub serial_number: String,
    /// Signature algorithm.
    pub signature: String,
    /// When it was added (Unix seconds).
    pub uploaded_on: i64,
    /// Expiry (Unix seconds).
    pub expires_on: i64,
    /// Where its CRL comes from (bring-your-own CAs).
    pub crl: Option<CrlSource>,
}

/// A CRL source of a bring-your-own CA, with the last CRL fetched from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrlSource {
    /// A file path or an `http://` URL.
    pub source: String,
    /// The last good CRL, verified against the CA when it was fetched.
    pub der: Option<CrlDer>,
    /// When it was fetched (Unix seconds).
    pub fetched_on: Option<i64>,
    /// Its nextUpdate (Unix seconds).
    pub next_update: Option<i64>,
    /// Revoked serials in it.
    pub revoked: usize,
    /// Why the last refresh failed (the previous CRL stays in force).
    pub last_error: Option<String>,
}

/// Whether an issued client certificate may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CertStatus {
    /// Valid.
    Active,
    /// Revoked: `cf.tls_client_auth.cert_revoked` is true for it.
    Revoked,
}

/// A client certificate issued by the managed CA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCert {
    /// Its id.
    pub id: String,
    /// The issuing CA's id.
    pub ca_id: String,
    /// Serial number (upper-case hex).
    pub serial_number: String,
    /// Subject common name.
    pub common_name: String,
    /// The certificate (PEM).
    pub certificate: String,
    /// The CSR it was issued from, if any.
    pub csr: Option<String>,
    /// SHA-256 of the DER, hex.
    pub fingerprint_sha256: String,
    /// Active or revoked.
    pub status: CertStatus,
    /// Issue time (Unix seconds).
    pub issued_on: i64,
    /// Expiry (Unix seconds).
    pub expires_on: i64,
    /// When it was revoked.
    pub revoked_on: Option<i64>,
}

impl State {
    /// A state with no records and blank settings: what rows are applied to
    /// when a state is read back record by record.
    pub fn empty_tables() -> State {
        State {
            meta: Meta {
                account_id: String::new(),
                zone_id: String::new(),
                zone_name: String::new(),
                token_sha256: String::new(),
                default_hostname: String::new(),
            },
            zone: ZoneSettings {
                min_tls_version: TlsVersion::Tls12,
                ciphers: Vec::new(),
                session_resumption: true,
                acme: None,
            },
            hostnames: Hostnames::default(),
            cas: Table::new(),
            certs: Table::new(),
            rules: Vec::new(),
            ruleset: Default::default(),
            tokens: Table::new(),
        }
    }

    /// The managed client CA.
    pub fn managed_ca(&self) -> Option<&Authority> {
        self.authority(AuthorityKind::Managed)
    }

    /// The server CA.
    pub fn server_ca(&self) -> Option<&Authority> {
        self.authority(AuthorityKind::Server)
    }

    fn authority(&self, kind: AuthorityKind) -> Option<&Authority> {
        self.cas.values().find(|c| c.kind == kind)
    }

    /// The hostname called `name`.
    pub fn hostname_by_name(&self, name: &str) -> Option<&Hostname> {
        self.hostnames.by_name(name)
    }

    /// Names of the hostnames associated with CA `id`, sorted.
    pub fn associations(&self, id: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .hostnames
            .values()
            .filter(|h| h.cas.iter().any(|c| c == id))
            .map(|h| h.name.to_string())
            .collect();
        names.sort();
        names
    }

    /// The token a secret belongs to, if it is valid at `now`: compared in
    /// constant time against every stored hash.
    pub fn caller(&self, secret: &str, now: i64) -> Option<Caller> {
        let presented = crate::pki::sha256_hex(secret.as_bytes());
        let same = |stored: &str| boring::memcmp::eq(presented.as_bytes(), stored.as_bytes());
        let mut found = None;
        if same(&self.meta.token_sha256) {
            found = Some(Caller {
                id: FIRST_RUN_ID.into(),
                name: "first-run admin token".into(),
                permissions: Permission::ALL.to_vec(),
            });
        }
        for t in self.tokens.values() {
            if same(&t.secret_sha256) && t.expires_on.is_none_or(|at| now < at) {
                found = Some(Caller {
                    id: t.id.clone(),
                    name: t.name.clone(),
                    permissions: t.permissions.clone(),
                });
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str, name: &str) -> Hostname {
        let ca = crate::pki::new_ca(name, 1).unwrap();
        Hostname {
            id: id.into(),
            name: name.into(),
            wildcard: false,
            min_tls_version: None,
            ciphers: Vec::new(),
            session_resumption: None,
            origin: None,
            forward_client_cert: Default::default(),
            certificate: ServerCert {
                chain: CertChain::from_ders(&[ca.cert.to_der().unwrap()]).unwrap(),
                key: KeyDer::from_key(&ca.key).unwrap(),
                managed: true,
                expires_on: 0,
            },
            acme: None,
            cas: Vec::new(),
            created_on: 0,
        }
    }

    #[test]
    fn the_name_index_follows_inserts_replacements_and_removals() {
        let mut t = Hostnames::default();
        t.insert("1".into(), host("1", "a.test"));
        t.insert("2".into(), host("2", "b.test"));
        assert_eq!(t.by_name("a.test").map(|h| h.id.as_str()), Some("1"));
        // The same id under another name (never done by the API) moves the index.
        t.insert("1".into(), host("1", "c.test"));
        assert!(t.by_name("a.test").is_none());
        assert_eq!(t.by_name("c.test").map(|h| h.id.as_str()), Some("1"));
        assert!(t.remove("2").is_some());
        assert!(t.by_name("b.test").is_none() && t.remove("2").is_none());
        let back: Hostnames = serde_json::from_str(&serde_json::to_string(&t).unwrap()).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.by_name("c.test").map(|h| h.id.as_str()), Some("1"));
    }
}
