//! The terminator's compiled configuration: one immutable snapshot, built from
//! the configuration (files read, certificates and CRLs parsed, SSL contexts
//! made) and swapped in whole. Nothing on the handshake path parses text.

use std::{collections::HashMap, ffi::CString, sync::Arc};

use anyhow::{Context, bail};
use boring::{
    pkey::PKey,
    ssl::{AlpnError, SslContext, SslContextBuilder, SslMethod, SslVersion, select_next_proto},
    x509::{
        X509,
        store::{X509Store, X509StoreBuilder},
        verify::X509VerifyFlags,
    },
};
use foreign_types::ForeignTypeRef;
use http::Uri;

use super::revocation::RevocationSet;
use crate::{
    config::{Config, ForwardMode, HostnameSection, Material},
    rules::RuleSet,
    tls_version::TlsVersion,
};

/// ALPN protocols offered, in preference order (wire format).
const ALPN: &[u8] = b"\x02h2\x08http/1.1";

/// What a client certificate on an mTLS hostname is checked against.
pub struct MtlsPolicy {
    /// Trust anchors: only the CAs associated with the hostname.
    pub store: X509Store,
    /// Revoked certificates of those CAs.
    pub revocations: RevocationSet,
    /// SHA-256 of each trusted CA certificate.
    pub anchors: std::collections::HashSet<Vec<u8>>,
}

/// Everything the terminator applies to one hostname (or to clients without SNI).
pub struct HostTls {
    /// The hostname (empty for the default policy).
    pub name: String,
    /// Certificate, key, ALPN and session id context.
    pub ctx: SslContext,
    /// Lowest TLS version accepted.
    pub min_version: TlsVersion,
    /// Cipher list for TLS 1.2 and below, if restricted.
    pub ciphers: Option<CString>,
    /// mTLS: request and verify client certificates.
    pub mtls: Option<Arc<MtlsPolicy>>,
    /// Where requests go.
    pub origin: Option<Uri>,
    /// How the client certificate reaches the origin.
    pub forward: ForwardMode,
}

/// The compiled configuration.
pub struct TlsSnapshot {
    hosts: HashMap<String, Arc<HostTls>>,
    /// Parent name → the wildcard entry's view for its subdomains (zone minimum).
    wildcards: HashMap<String, Arc<HostTls>>,
    /// For an SNI that names no hostname: the zone's minimum.
    unknown: Arc<HostTls>,
    /// For a ClientHello without SNI: the zone's no-SNI minimum.
    no_sni: Arc<HostTls>,
    /// The zone's firewall rules.
    pub rules: RuleSet,
    /// The body of a blocked request.
    pub block_message: String,
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

    /// Whether a client certificate accepted on hostname `host` is revoked now.
    pub fn is_revoked(&self, host: &str, auth: &super::ClientAuth) -> bool {
        let (Some(host), Some((issuer, serial))) = (self.hosts.get(host), &auth.revocation_key)
        else {
            return false;
        };
        host.mtls
            .as_ref()
            .is_some_and(|m| m.revocations.contains(issuer, serial))
    }

    /// Whether the CA a client certificate on hostname `host` was verified to
    /// is still trusted there (its association may have been removed since).
    pub fn still_trusted(&self, host: &str, auth: &super::ClientAuth) -> bool {
        let mtls = self.hosts.get(host).and_then(|h| h.mtls.as_ref());
        match (mtls, &auth.anchor) {
            (Some(m), Some(anchor)) => m.anchors.contains(anchor),
            _ => false,
        }
    }

    /// Builds the snapshot: reads every certificate, key and CRL the configuration names.
    pub fn build(config: &Config) -> anyhow::Result<TlsSnapshot> {
        let t = &config.terminator;
        let default_cert = match (&t.certificate, &t.key) {
            (Some(c), Some(k)) => Some(load_identity(c, k)?),
            _ => None,
        };
        let zone_ciphers = cipher_list(&config.zone.ciphers)?;
        let now = crate::clock::now();
        let mut cas = HashMap::new();
        for ca in &config.cas {
            let pem = ca
                .certificate
                .read()
                .with_context(|| format!("CA {:?}", ca.name))?;
            let cert = X509::from_pem(&pem)
                .with_context(|| format!("CA {:?}: not a PEM certificate", ca.name))?;
            let der = cert.to_der()?;
            let mut revoked = RevocationSet::default();
            revoked
                .add_serials(&der, ca.revoked_serials.iter().map(String::as_str))
                .with_context(|| format!("CA {:?}", ca.name))?;
            revoked
                .add_crls(&der, &ca.crl, now, ca.stale_crl_ok)
                .with_context(|| format!("CA {:?}", ca.name))?;
            cas.insert(ca.name.clone(), (cert, revoked));
        }

        let zone_default = |min: TlsVersion, view: &str| -> anyhow::Result<Arc<HostTls>> {
            Ok(Arc::new(HostTls {
                name: String::new(),
                ctx: context(default_cert.as_ref(), "", view)?,
                min_version: min,
                ciphers: zone_ciphers.clone(),
                mtls: None,
                origin: None,
                forward: ForwardMode::None,
            }))
        };
        let unknown = zone_default(config.zone.min_tls_version, "*unknown*")?;
        let no_sni = zone_default(
            config
                .zone
                .no_sni_min_tls_version
                .unwrap_or(config.zone.min_tls_version),
            "*no-sni*",
        )?;
        let mut hosts = HashMap::new();
        let mut wildcards = HashMap::new();
        for h in &config.hostnames {
            let identity = match (&h.certificate, &h.key) {
                (Some(c), Some(k)) => {
                    Some(load_identity(c, k).with_context(|| format!("hostname {:?}", h.name))?)
                }
                _ => default_cert.clone(),
            };
            let Some(identity) = identity else {
                bail!(
                    "hostname {:?} has no certificate: set its `certificate` and `key`, \
                     or a default in [terminator]",
                    h.name
                );
            };
            let host = |min: TlsVersion, view: &str| -> anyhow::Result<HostTls> {
                Ok(HostTls {
                    name: h.name.clone(),
                    ctx: context(Some(&identity), &h.name, view)?,
                    min_version: min,
                    ciphers: if h.ciphers.is_empty() {
                        zone_ciphers.clone()
                    } else {
                        cipher_list(&h.ciphers)?
                    },
                    mtls: mtls_policy(h, &cas)?,
                    origin: h.origin.as_deref().map(str::parse).transpose()?,
                    forward: h.forward_client_cert,
                })
            };
            let exact = host(
                h.min_tls_version.unwrap_or(config.zone.min_tls_version),
                "exact",
            )?;
            hosts.insert(h.name.clone(), Arc::new(exact));
            if h.wildcard {
                wildcards.insert(
                    h.name.clone(),
                    Arc::new(host(config.zone.min_tls_version, "wildcard")?),
                );
            }
        }
        Ok(TlsSnapshot {
            hosts,
            wildcards,
            unknown,
            no_sni,
            rules: RuleSet::compile(&config.rules)
                .map_err(|(id, e)| anyhow::anyhow!("rule {id:?}: {e}"))?,
            block_message: config.zone.block_message.clone(),
        })
    }
}

type Identity = (Vec<X509>, PKey<boring::pkey::Private>);

fn load_identity(cert: &Material, key: &Material) -> anyhow::Result<Identity> {
    let chain = X509::stack_from_pem(&cert.read()?)
        .with_context(|| format!("{cert}: not a PEM certificate chain"))?;
    if chain.is_empty() {
        bail!("{cert}: no certificate in it");
    }
    let key = PKey::private_key_from_pem(&key.read()?)
        .with_context(|| format!("{key}: not a PEM private key"))?;
    Ok((chain, key))
}

/// An SSL context holding what `SSL_set_SSL_CTX` swaps in: certificate, key,
/// ALPN, and a session id context unique to the hostname and view, so a session
/// never resumes on another hostname.
fn context(identity: Option<&Identity>, name: &str, view: &str) -> anyhow::Result<SslContext> {
    let mut b = SslContextBuilder::new(SslMethod::tls())?;
    if let Some((chain, key)) = identity {
        b.set_certificate(&chain[0])?;
        for extra in &chain[1..] {
            b.add_extra_chain_cert(extra.clone())?;
        }
        b.set_private_key(key)?;
        b.check_private_key()
            .context("the private key does not match the certificate")?;
    }
    b.set_alpn_select_callback(|_, client| select_next_proto(ALPN, client).ok_or(AlpnError::NOACK));
    let sid = boring::hash::hash(
        boring::hash::MessageDigest::sha256(),
        format!("{view}\0{name}").as_bytes(),
    )?;
    b.set_session_id_context(&sid[..32])?;
    Ok(b.build())
}

fn cipher_list(names: &[String]) -> anyhow::Result<Option<CString>> {
    if names.is_empty() {
        return Ok(None);
    }
    let list = names.join(":");
    // Check it now, so a typo is refused with the configuration, not per handshake.
    let mut probe = SslContextBuilder::new(SslMethod::tls())?;
    probe
        .set_strict_cipher_list(&list)
        .with_context(|| format!("cipher list {list:?} names a cipher BoringSSL does not know"))?;
    Ok(Some(CString::new(list)?))
}

fn mtls_policy(
    h: &HostnameSection,
    cas: &HashMap<String, (X509, RevocationSet)>,
) -> anyhow::Result<Option<Arc<MtlsPolicy>>> {
    if !h.mtls {
        return Ok(None);
    }
    let mut store = X509StoreBuilder::new()?;
    // A CA may be an intermediate: it is a trust anchor all the same.
    store.set_flags(X509VerifyFlags::PARTIAL_CHAIN);
    // Only certificates fit for client authentication (extended key usage).
    // SAFETY: a live parameter object owned by the builder; the constant is BoringSSL's.
    let ok = unsafe {
        boring_sys::X509_VERIFY_PARAM_set_purpose(
            store.verify_param_mut().as_ptr(),
            boring_sys::X509_PURPOSE_SSL_CLIENT,
        )
    };
    if ok != 1 {
        bail!("cannot restrict verification to client certificates");
    }
    let mut revocations = RevocationSet::default();
    let mut anchors = std::collections::HashSet::new();
    for name in &h.cas {
        let (cert, revoked) = &cas[name];
        store.add_cert(cert.clone())?;
        revocations.extend(revoked);
        anchors.insert(cert.digest(boring::hash::MessageDigest::sha256())?.to_vec());
    }
    Ok(Some(Arc::new(MtlsPolicy {
        store: store.build(),
        revocations,
        anchors,
    })))
}

/// BoringSSL's name for a TLS version.
pub fn ssl_version(v: TlsVersion) -> SslVersion {
    match v {
        TlsVersion::Tls10 => SslVersion::TLS1,
        TlsVersion::Tls11 => SslVersion::TLS1_1,
        TlsVersion::Tls12 => SslVersion::TLS1_2,
        TlsVersion::Tls13 => SslVersion::TLS1_3,
    }
}
