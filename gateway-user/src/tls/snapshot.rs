//! The terminator's compiled configuration: one immutable snapshot (files read,
//! certificates and CRLs parsed, SSL contexts made), swapped in whole. Nothing
//! on the handshake path parses text.
//!
//! A snapshot is made of persistent maps, so [`TlsSnapshot::update`] makes the
//! next one from a [`Delta`] at the cost of what the delta touches: one
//! hostname's context, one CA's revocations, or the rules. What hostnames
//! inherit from the zone (minimum version, ciphers) and what a CA revokes are
//! looked up in the snapshot when used, so changing them rebuilds no hostname.

use std::{
    collections::HashSet,
    ffi::{CStr, CString},
    sync::{Arc, OnceLock},
};

use anyhow::{Context, bail};
use boring::{
    error::ErrorStack,
    ssl::SslRef,
    x509::{X509, store::X509Store},
};
use http::Uri;
use x509_parser::certificate::X509Certificate;

use super::{
    context::{self, Identity},
    revocation::RevocationSet,
};
use crate::{
    config::{
        CaSection, Config, ForwardMode, HostnameSection, Material, ZoneSection, delta::Delta,
    },
    metrics::hosts::HostRequests,
    rules::{RuleSet, fields::ClientAuth},
    tls_version::TlsVersion,
};

/// Names → entries, shared between snapshots.
type Map<V> = imbl::HashMap<String, V>;

/// Hostnames → entries; the name is the configuration's, not a copy.
type Hosts = imbl::HashMap<Arc<str>, Arc<HostTls>>;

/// What a client certificate on an mTLS hostname is verified against: exactly
/// the CAs associated with the hostname. Hostnames with the same CAs share one.
pub struct MtlsPolicy {
    /// Trust anchors: only those CAs.
    pub store: X509Store,
    /// Their names; what they revoke is in the snapshot ([`TlsSnapshot::is_revoked_leaf`]).
    pub cas: Vec<String>,
    /// SHA-256 of each trusted CA certificate.
    pub anchors: HashSet<Vec<u8>>,
    /// SHA-256 of the anchors, sorted: what a session is bound to (a CA
    /// added, removed or replaced changes it).
    pub fingerprint: [u8; 32],
}

/// Which minimum version applies to an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Minimum {
    /// Its own.
    Own(TlsVersion),
    /// The zone's.
    Zone,
    /// The zone's for clients without SNI.
    NoSni,
}

/// Everything the terminator applies to one hostname (or to clients without SNI).
pub struct HostTls {
    /// The hostname (empty for the zone's defaults).
    pub name: Arc<str>,
    /// Its certificate and key (shared by every entry that uses the default).
    identity: Option<Arc<Identity>>,
    /// Its own session id context (hostname and view); a connection's adds
    /// the policy ([`TlsSnapshot::session_context`]).
    sid: [u8; 32],
    /// Where requests go (boxed: most hostnames have none, and a `Uri` is 88 bytes).
    pub origin: Option<Box<Uri>>,
    /// How the client certificate reaches the origin.
    pub forward: ForwardMode,
    /// mTLS: the associated CAs (sorted names), whose policy the snapshot holds.
    pub mtls: Option<Arc<[String]>>,
    minimum: Minimum,
    /// Its own cipher list (none: the zone's).
    ciphers: Option<CString>,
    /// It has no certificate of its own: it uses the default.
    default_identity: bool,
    /// Its own session resumption setting (none: the zone's).
    resumption: Option<bool>,
    /// Its request counters, resolved by the terminator on its first request
    /// (see `TerminatorMetrics::host_requests`) and kept with the entry.
    pub request_counters: OnceLock<Arc<HostRequests>>,
}

/// A CA as the snapshot holds it.
struct CaTls {
    cert: X509,
    /// The CRLs it came with, and what they revoke: verified once, and kept
    /// while the CA changes in other ways (a certificate revoked, a rename).
    crls: Vec<Material>,
    crl_revoked: Arc<RevocationSet>,
    /// Its issued certificates that are revoked.
    revoked_serials: RevocationSet,
}

impl CaTls {
    fn revokes(&self, issuer: &[u8], serial: &[u8]) -> bool {
        self.crl_revoked.contains(issuer, serial) || self.revoked_serials.contains(issuer, serial)
    }
}

/// The zone's settings, compiled.
#[derive(Clone)]
struct ZoneTls {
    min: TlsVersion,
    no_sni_min: TlsVersion,
    ciphers: Option<CString>,
    resumption: bool,
}

/// The compiled configuration.
#[derive(Clone)]
pub struct TlsSnapshot {
    hosts: Hosts,
    /// Parent name → the wildcard entry's view for its subdomains (zone minimum).
    wildcards: Hosts,
    /// For an SNI that names no hostname: the zone's minimum.
    unknown: Arc<HostTls>,
    /// For a ClientHello without SNI: the zone's no-SNI minimum.
    no_sni: Arc<HostTls>,
    zone: ZoneTls,
    default_identity: Option<Arc<Identity>>,
    cas: Map<Arc<CaTls>>,
    /// Trust policies by CA set (sorted names).
    trust: imbl::HashMap<Arc<[String]>, Arc<MtlsPolicy>>,
    /// The zone's firewall rules.
    pub rules: Arc<RuleSet>,
    /// The body of a blocked request.
    pub block_message: Arc<str>,
}

impl TlsSnapshot {
    /// The policy for an SNI (lowercase); no SNI or an unknown one: the zone's defaults.
    pub fn lookup(&self, sni: Option<&str>) -> &Arc<HostTls> {
        let Some(name) = sni else {
            return &self.no_sni;
        };
        if let Some(host) = self.hosts.get(name) {
            return host;
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcards.get(parent))
            .unwrap_or(&self.unknown)
    }

    /// The lowest TLS version accepted for an entry.
    pub fn min_version(&self, host: &HostTls) -> TlsVersion {
        match host.minimum {
            Minimum::Own(v) => v,
            Minimum::Zone => self.zone.min,
            Minimum::NoSni => self.zone.no_sni_min,
        }
    }

    /// The cipher list for TLS 1.2 and below of an entry, if restricted.
    pub fn ciphers<'a>(&'a self, host: &'a HostTls) -> Option<&'a CStr> {
        host.ciphers.as_deref().or(self.zone.ciphers.as_deref())
    }

    /// Whether sessions resume on an entry (its own setting, or the zone's).
    pub fn resumption(&self, host: &HostTls) -> bool {
        host.resumption.unwrap_or(self.zone.resumption)
    }

    /// The session id context of a connection to `host` under SNI `sni`: a
    /// SHA-256 of the entry's own context (hostname and view), the SNI, the
    /// minimum version, the cipher list, and mTLS with its CA set's
    /// fingerprint. A session resumes only where it is the same (see
    /// [`super::resumption`]), so a change to any of them ends resumption of
    /// the sessions made before it.
    pub fn session_context(&self, host: &HostTls, sni: Option<&str>) -> [u8; 32] {
        let mut h = boring::sha::Sha256::new();
        h.update(&host.sid);
        h.update(sni.unwrap_or("").as_bytes());
        h.update(&[0, self.min_version(host) as u8]);
        h.update(self.ciphers(host).map_or(&b""[..], CStr::to_bytes));
        match self.mtls(host) {
            Some(policy) => {
                h.update(&[0, 1]);
                h.update(&policy.fingerprint);
            }
            None if host.mtls.is_some() => h.update(&[0, 2]),
            None => h.update(&[0, 0]),
        }
        h.finish()
    }

    /// The client-certificate policy of an mTLS entry.
    pub fn mtls(&self, host: &HostTls) -> Option<&Arc<MtlsPolicy>> {
        self.trust.get(host.mtls.as_ref()?)
    }

    /// Whether a verified leaf is revoked by one of the policy's CAs.
    pub fn is_revoked_leaf(&self, policy: &MtlsPolicy, leaf: &X509Certificate<'_>) -> bool {
        self.revoked_by(&policy.cas, leaf.issuer().as_raw(), leaf.raw_serial())
    }

    fn revoked_by(&self, cas: &[String], issuer: &[u8], serial: &[u8]) -> bool {
        cas.iter()
            .filter_map(|name| self.cas.get(name))
            .any(|ca| ca.revokes(issuer, serial))
    }

    /// Whether a client certificate accepted on hostname `host` is revoked now.
    pub fn is_revoked(&self, host: &str, auth: &ClientAuth) -> bool {
        let cas = self.hosts.get(host).and_then(|h| h.mtls.as_ref());
        match (cas, &auth.revocation_key) {
            (Some(cas), Some((issuer, serial))) => self.revoked_by(cas, issuer, serial),
            _ => false,
        }
    }

    /// Whether the CA a client certificate on hostname `host` was verified to
    /// is still trusted there (its association may have been removed since).
    pub fn still_trusted(&self, host: &str, auth: &ClientAuth) -> bool {
        let policy = self.hosts.get(host).and_then(|h| self.mtls(h));
        match (policy, &auth.anchor) {
            (Some(m), Some(anchor)) => m.anchors.contains(anchor),
            _ => false,
        }
    }

    /// Builds the snapshot: reads every certificate, key and CRL the configuration names.
    pub fn build(config: &Config) -> anyhow::Result<TlsSnapshot> {
        TlsSnapshot::empty()?.update(&Delta::everything(config))
    }

    /// A snapshot of no hostnames, the default zone and no default certificate.
    fn empty() -> anyhow::Result<TlsSnapshot> {
        // (Fallible in the type only, for symmetry with `update`.)
        let zone = ZoneTls {
            min: TlsVersion::Tls12,
            no_sni_min: TlsVersion::Tls12,
            ciphers: None,
            resumption: true,
        };
        Ok(TlsSnapshot {
            hosts: Hosts::new(),
            wildcards: Hosts::new(),
            unknown: Arc::new(zone_entry(None, Minimum::Zone, "*unknown*")),
            no_sni: Arc::new(zone_entry(None, Minimum::NoSni, "*no-sni*")),
            zone,
            default_identity: None,
            cas: Map::new(),
            trust: imbl::HashMap::new(),
            rules: Arc::new(RuleSet::default()),
            block_message: Arc::from(""),
        })
    }

    /// The next snapshot: this one with `delta` applied. Only what the delta
    /// touches is compiled; an error leaves this snapshot as it was.
    pub fn update(&self, delta: &Delta) -> anyhow::Result<TlsSnapshot> {
        let mut next = self.clone();
        if let Some(zone) = &delta.zone {
            next.set_zone(zone)?;
        }
        if let Some(identity) = &delta.default_identity {
            next.set_default_identity(identity.as_ref())?;
        }
        let now = crate::clock::now();
        for ca in &delta.cas {
            next.set_ca(ca, now)
                .with_context(|| format!("CA {:?}", ca.name))?;
        }
        for name in &delta.removed_hostnames {
            next.hosts.remove(name.as_str());
            next.wildcards.remove(name.as_str());
        }
        for (h, own) in delta.hostnames.iter().zip(own_identities(&delta.hostnames)) {
            let own = own.with_context(|| format!("hostname {:?}", h.name))?;
            next.set_host(h, own)
                .with_context(|| format!("hostname {:?}", h.name))?;
        }
        for name in &delta.removed_cas {
            next.remove_ca(name)?;
        }
        if let Some(rules) = &delta.rules {
            let compiled =
                RuleSet::compile(rules).map_err(|(id, e)| anyhow::anyhow!("rule {id:?}: {e}"))?;
            next.rules = Arc::new(compiled);
        }
        Ok(next)
    }

    fn set_zone(&mut self, zone: &ZoneSection) -> anyhow::Result<()> {
        self.zone = ZoneTls {
            min: zone.min_tls_version,
            no_sni_min: zone.no_sni_min_tls_version.unwrap_or(zone.min_tls_version),
            ciphers: context::cipher_list(&zone.ciphers)?,
            resumption: zone.session_resumption,
        };
        self.block_message = Arc::from(zone.block_message.as_str());
        Ok(())
    }

    /// A new default certificate: the zone's entries and every hostname
    /// without a certificate of its own take it.
    fn set_default_identity(&mut self, pair: Option<&(Material, Material)>) -> anyhow::Result<()> {
        let identity = pair
            .map(|(c, k)| context::load_identity(c, k))
            .transpose()
            .context("[terminator] certificate")?
            .map(Arc::new);
        self.unknown = Arc::new(zone_entry(identity.clone(), Minimum::Zone, "*unknown*"));
        self.no_sni = Arc::new(zone_entry(identity.clone(), Minimum::NoSni, "*no-sni*"));
        for map in [&mut self.hosts, &mut self.wildcards] {
            let using: Vec<Arc<HostTls>> = map
                .values()
                .filter(|h| h.default_identity)
                .cloned()
                .collect();
            for host in using {
                if identity.is_none() {
                    bail!(
                        "hostname {:?} has no certificate: set its `certificate` and `key`, \
                         or a default in [terminator]",
                        host.name
                    );
                }
                let next = host.with_identity(identity.clone());
                map.insert(host.name.clone(), Arc::new(next));
            }
        }
        self.default_identity = identity;
        Ok(())
    }

    /// Adds or replaces a CA. A new certificate for a known name rebuilds the
    /// trust policies that include it.
    fn set_ca(&mut self, ca: &CaSection, now: i64) -> anyhow::Result<()> {
        let pem = ca.certificate.read()?;
        let cert = X509::from_pem(&pem).context("not a PEM certificate")?;
        let der = cert.to_der()?;
        let old = self.cas.get(&ca.name);
        let changed_cert =
            old.is_some_and(|old| old.cert.to_der().ok().as_deref() != Some(&der[..]));
        let mut revoked_serials = RevocationSet::default();
        revoked_serials.add_serials(&der, ca.revoked_serials.iter().map(String::as_str))?;
        // The same CRLs (held in memory: a file may have changed) for the same
        // certificate: what they revoke is known already.
        let known = old.filter(|old| {
            !changed_cert && old.crls == ca.crl && ca.crl.iter().all(|c| c.path().is_none())
        });
        let crl_revoked = match known {
            Some(old) => old.crl_revoked.clone(),
            None => {
                let mut set = RevocationSet::default();
                set.add_crls(&der, &ca.crl, now, ca.stale_crl_ok)?;
                Arc::new(set)
            }
        };
        self.cas.insert(
            ca.name.clone(),
            Arc::new(CaTls {
                cert,
                crls: ca.crl.clone(),
                crl_revoked,
                revoked_serials,
            }),
        );
        if changed_cert {
            let sets: Vec<Arc<[String]>> = self
                .trust
                .keys()
                .filter(|set| set.contains(&ca.name))
                .cloned()
                .collect();
            for set in sets {
                let policy = self.policy_for(&set)?;
                self.trust.insert(set, policy);
            }
        }
        Ok(())
    }

    /// Removes a CA no hostname is associated with any more.
    fn remove_ca(&mut self, name: &str) -> anyhow::Result<()> {
        if let Some(host) = self.hosts.values().find(|h| {
            h.mtls
                .as_ref()
                .is_some_and(|cas| cas.iter().any(|c| c == name))
        }) {
            bail!(
                "CA {name:?} cannot be removed: hostname {:?} is associated with it",
                host.name
            );
        }
        self.cas.remove(name);
        self.trust.retain(|set, _| !set.iter().any(|c| c == name));
        Ok(())
    }

    fn policy_for(&self, cas: &[String]) -> anyhow::Result<Arc<MtlsPolicy>> {
        let mut certs = Vec::new();
        for name in cas {
            let ca = self
                .cas
                .get(name)
                .with_context(|| format!("no CA named {name:?}"))?;
            certs.push(&ca.cert);
        }
        let (store, anchors) = context::trust_store(certs)?;
        let mut sorted: Vec<&Vec<u8>> = anchors.iter().collect();
        sorted.sort();
        let mut fingerprint = boring::sha::Sha256::new();
        for anchor in sorted {
            fingerprint.update(anchor);
        }
        Ok(Arc::new(MtlsPolicy {
            store,
            cas: cas.to_vec(),
            fingerprint: fingerprint.finish(),
            anchors,
        }))
    }

    /// Compiles one hostname (and its wildcard view) into the snapshot.
    fn set_host(&mut self, h: &HostnameSection, own: Option<Arc<Identity>>) -> anyhow::Result<()> {
        let default_identity = own.is_none();
        let identity = match (own, &self.default_identity) {
            (Some(own), _) => own,
            (None, Some(default)) => default.clone(),
            (None, None) => bail!(
                "it has no certificate: set its `certificate` and `key`, or a default in \
                 [terminator]"
            ),
        };
        let mtls = if h.mtls {
            let mut cas = h.cas.clone();
            cas.sort();
            cas.dedup();
            let cas: Arc<[String]> = cas.into();
            if !self.trust.contains_key(&cas) {
                let policy = self.policy_for(&cas)?;
                self.trust.insert(cas.clone(), policy);
            }
            Some(cas)
        } else {
            None
        };
        let entry = |minimum: Minimum, view: &'static str| -> anyhow::Result<HostTls> {
            Ok(HostTls {
                name: h.name.clone(),
                identity: Some(identity.clone()),
                sid: context::session_id_context(&h.name, view),
                origin: h
                    .origin
                    .as_deref()
                    .map(str::parse)
                    .transpose()?
                    .map(Box::new),
                forward: h.forward_client_cert,
                mtls: mtls.clone(),
                minimum,
                ciphers: context::cipher_list(&h.ciphers)?,
                default_identity,
                resumption: h.session_resumption,
                request_counters: OnceLock::new(),
            })
        };
        let minimum = h.min_tls_version.map_or(Minimum::Zone, Minimum::Own);
        self.hosts
            .insert(h.name.clone(), Arc::new(entry(minimum, "exact")?));
        if h.wildcard {
            self.wildcards
                .insert(h.name.clone(), Arc::new(entry(Minimum::Zone, "wildcard")?));
        } else {
            self.wildcards.remove(&*h.name);
        }
        Ok(())
    }
}

impl HostTls {
    /// Puts the entry's certificate and key on a connection.
    pub fn install(&self, ssl: &mut SslRef) -> Result<(), ErrorStack> {
        context::install(ssl, self.identity.as_deref())
    }

    /// The same entry with another certificate and key.
    fn with_identity(&self, identity: Option<Arc<Identity>>) -> HostTls {
        HostTls {
            name: self.name.clone(),
            identity,
            sid: self.sid,
            origin: self.origin.clone(),
            forward: self.forward,
            mtls: self.mtls.clone(),
            minimum: self.minimum,
            ciphers: self.ciphers.clone(),
            default_identity: self.default_identity,
            resumption: self.resumption,
            request_counters: self.request_counters.clone(),
        }
    }
}

/// Each hostname's own certificate and key, parsed (the costly part of
/// compiling a hostname): on every core when there are many, as at start.
fn own_identities(hosts: &[HostnameSection]) -> Vec<anyhow::Result<Option<Arc<Identity>>>> {
    let parse = |h: &HostnameSection| match (&h.certificate, &h.key) {
        (Some(c), Some(k)) => context::load_identity(c, k).map(|id| Some(Arc::new(id))),
        _ => Ok(None),
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if hosts.len() < 1000 || cores == 1 {
        return hosts.iter().map(parse).collect();
    }
    std::thread::scope(|scope| {
        let parts: Vec<_> = hosts
            .chunks(hosts.len().div_ceil(cores))
            .map(|part| scope.spawn(move || part.iter().map(parse).collect::<Vec<_>>()))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().expect("a parsing thread"))
            .collect()
    })
}

/// The entry for clients without SNI or with an unknown one.
fn zone_entry(identity: Option<Arc<Identity>>, minimum: Minimum, view: &'static str) -> HostTls {
    HostTls {
        name: Arc::from(""),
        identity,
        sid: context::session_id_context("", view),
        origin: None,
        forward: ForwardMode::None,
        mtls: None,
        minimum,
        ciphers: None,
        default_identity: true,
        resumption: None,
        request_counters: OnceLock::new(),
    }
}
