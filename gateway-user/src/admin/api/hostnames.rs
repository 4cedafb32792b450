//! Custom hostnames and hostname associations (which CAs verify a
//! hostname's client certificates; a hostname with one has mTLS on).

use crate::clock;
use http::Method;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use super::{
    Answer, ApiError, Call, Listing, acme, method_not_allowed,
    page::{self, Paging},
};
use crate::{
    config::{CertChain, ForwardMode, KeyDer, validate_hostname},
    control::{
        ControlPlane,
        model::{AuthorityKind, Hostname, ServerCert, State},
        new_hostname, server_cert,
    },
    pki,
    tls_version::TlsVersion,
};

/// A present field, even `null`, becomes `Some(..)`: `null` clears a setting.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    hostname: Option<String>,
    wildcard: Option<bool>,
    ssl: Option<Ssl>,
    #[serde(default, deserialize_with = "present")]
    custom_origin_server: Option<Option<String>>,
    mtls: Option<Mtls>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Ssl {
    settings: Option<SslSettings>,
    /// `null`: go back to a certificate issued by the gateway's server CA.
    #[serde(default, deserialize_with = "present")]
    custom_certificate: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    custom_key: Option<Option<String>>,
    /// Accepted for compatibility with the reference service; not used.
    #[serde(rename = "type")]
    _kind: Option<String>,
    /// `tls-alpn`: the certificate comes from the zone's ACME server; other
    /// methods are accepted for compatibility and change nothing.
    method: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SslSettings {
    #[serde(default, deserialize_with = "present")]
    min_tls_version: Option<Option<TlsVersion>>,
    ciphers: Option<Vec<String>>,
    /// `null`: the zone's.
    #[serde(default, deserialize_with = "present")]
    session_resumption: Option<Option<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Mtls {
    enabled: Option<bool>,
    forward_client_cert: Option<ForwardMode>,
}

/// Which hostnames a listing shows: the reference's filters.
struct Filter {
    id: Option<String>,
    name: Option<(NameMatch, String)>,
    wildcard: Option<bool>,
    origin: Option<String>,
    /// `ssl=0` or `hostname_status` other than `active`: every hostname here
    /// is active with a certificate, so none matches.
    none: bool,
    /// `ssl_status`: `active` for every hostname but an `acme` one not yet
    /// issued.
    ssl_status: Option<String>,
}

#[derive(Clone, Copy)]
enum NameMatch {
    Exact,
    Contains,
    StartsWith,
}

impl Filter {
    fn of(call: &Call) -> Result<Filter, ApiError> {
        let q = |k: &str| call.query.get(k).cloned();
        let mut names = [
            ("hostname", NameMatch::Exact),
            ("hostname.exact", NameMatch::Exact),
            ("hostname.contain", NameMatch::Contains),
            ("hostname.startsWith", NameMatch::StartsWith),
        ]
        .into_iter()
        .filter_map(|(k, how)| Some((k, how, q(k)?.to_ascii_lowercase())));
        let name = names.next();
        if let Some((second, ..)) = names.next() {
            return Err(ApiError::invalid(format!(
                "{second} cannot be used with {}: give one hostname filter",
                name.map_or("", |n| n.0)
            )));
        }
        if let (Some(_), Some((k, ..))) = (q("id"), &name) {
            return Err(ApiError::invalid(format!("id cannot be used with {k}")));
        }
        let wildcard = match q("wildcard").as_deref() {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "wildcard={other:?}: give true or false"
                )));
            }
        };
        let inactive = |k: &str| q(k).is_some_and(|v| v != "active");
        Ok(Filter {
            id: q("id"),
            name: name.map(|(_, how, text)| (how, text)),
            wildcard,
            origin: q("custom_origin_server"),
            none: q("ssl").is_some_and(|v| v == "0") || inactive("hostname_status"),
            ssl_status: q("ssl_status"),
        })
    }

    fn matches(&self, h: &Hostname) -> bool {
        let name = match &self.name {
            None => true,
            Some((NameMatch::Exact, n)) => *h.name == **n,
            Some((NameMatch::Contains, n)) => h.name.contains(n.as_str()),
            Some((NameMatch::StartsWith, n)) => h.name.starts_with(n.as_str()),
        };
        !self.none
            && name
            && self
                .ssl_status
                .as_ref()
                .is_none_or(|want| acme::ssl_status(h) == want.as_str())
            && self.id.as_ref().is_none_or(|id| *id == h.id)
            && self.wildcard.is_none_or(|w| w == h.wildcard)
            && self
                .origin
                .as_ref()
                .is_none_or(|o| h.origin.as_ref() == Some(o))
    }

    fn is_empty(&self) -> bool {
        self.id.is_none()
            && self.name.is_none()
            && self.wildcard.is_none()
            && self.origin.is_none()
            && self.ssl_status.is_none()
            && !self.none
    }
}

/// `GET /zones/Z/custom_hostnames`: by name, a page at a time, filtered.
pub(super) async fn list(plane: &ControlPlane, call: &Call) -> Listing {
    let paging = Paging::of(call, page::STANDARD)?;
    let filter = Filter::of(call)?;
    let descending = match call.query.get("direction").map(String::as_str) {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "direction={other:?}: give asc or desc"
            )));
        }
    };
    plane
        .read(|s| {
            if let Some(id) = &filter.id {
                // One lookup, not a walk.
                let found: Vec<Value> = s
                    .hostnames
                    .get(id)
                    .filter(|h| filter.matches(h))
                    .map(|h| view(s, h))
                    .into_iter()
                    .collect();
                let total = found.len();
                return Ok(paging.reply(paging.take(found.into_iter()), total));
            }
            let hosts = || s.hostnames.in_name_order(descending);
            let total = if filter.is_empty() {
                s.hostnames.len()
            } else {
                hosts().filter(|h| filter.matches(h)).count()
            };
            let page = paging.take(hosts().filter(|h| filter.matches(h)));
            Ok(paging.reply(page.into_iter().map(|h| view(s, h)).collect(), total))
        })
        .await
}

/// `/zones/Z/custom_hostnames[/ID]` but the listing.
pub(super) async fn route(plane: &ControlPlane, call: &Call, rest: &[&str]) -> Answer {
    match (rest, &call.method) {
        ([], &Method::POST) => create(plane, call).await,
        ([], _) => Err(method_not_allowed("GET or POST")),
        ([id], &Method::GET) => {
            plane
                .read(|s| {
                    let h = s
                        .hostnames
                        .get(id)
                        .ok_or_else(|| ApiError::not_found("custom hostname", id))?;
                    Ok(view(s, h))
                })
                .await
        }
        ([id], &Method::PATCH) => patch(plane, call, id).await,
        ([id], &Method::DELETE) => delete(plane, id).await,
        ([_], _) => Err(method_not_allowed("GET, PATCH or DELETE")),
        _ => Err(ApiError::not_found("route", &rest.join("/"))),
    }
}

/// POST: a new hostname.
async fn create(plane: &ControlPlane, call: &Call) -> Answer {
    let body: Body = call.json()?;
    let name = body
        .hostname
        .clone()
        .ok_or_else(|| ApiError::invalid("\"hostname\" is required"))?;
    validate_hostname(&name).map_err(|e| ApiError::invalid(e.to_string()))?;
    plane
        .change(|s| {
            if s.hostname_by_name(&name).is_some() {
                return Err(ApiError::conflict(format!(
                    "hostname {name:?} already exists"
                )));
            }
            let wildcard = body.wildcard.unwrap_or(false);
            let mut host = new_hostname(s, &name, wildcard, clock::now())?;
            edit(s, &mut host, &body)?;
            let out = view(s, &host);
            s.hostnames.insert(host.id.clone(), host);
            Ok(out)
        })
        .await
}

/// PATCH: a hostname's settings (never its name).
async fn patch(plane: &ControlPlane, call: &Call, id: &str) -> Answer {
    let body: Body = call.json()?;
    plane
        .change(|s| {
            let mut host = s
                .hostnames
                .get(id)
                .cloned()
                .ok_or_else(|| ApiError::not_found("custom hostname", id))?;
            if body.hostname.as_ref().is_some_and(|n| **n != *host.name) {
                return Err(ApiError::invalid(
                    "a hostname cannot be renamed: create the new one and delete this one",
                ));
            }
            edit(s, &mut host, &body)?;
            let out = view(s, &host);
            s.hostnames.insert(host.id.clone(), host);
            Ok(out)
        })
        .await
}

/// DELETE: any hostname but the default one.
async fn delete(plane: &ControlPlane, id: &str) -> Answer {
    plane
        .change(|s| {
            let host = s
                .hostnames
                .get(id)
                .ok_or_else(|| ApiError::not_found("custom hostname", id))?;
            if *host.name == s.meta.default_hostname {
                return Err(ApiError::conflict(format!(
                    "{:?} is the default hostname (its certificate answers clients \
                     without SNI) and cannot be deleted",
                    host.name
                )));
            }
            if host.acme.is_some() {
                // A pending TLS-ALPN-01 challenge stops being answered: the
                // order fails at the server, and its result would be dropped.
                crate::tls::challenge::clear(&host.name);
            }
            s.hostnames.remove(id);
            Ok(json!({"id": id}))
        })
        .await
}

/// Applies a create or patch body to `host`.
fn edit(s: &State, host: &mut Hostname, body: &Body) -> Result<(), ApiError> {
    let wildcard_changed = body.wildcard.is_some_and(|w| w != host.wildcard);
    if let Some(w) = body.wildcard {
        host.wildcard = w;
    }
    if let Some(origin) = &body.custom_origin_server {
        host.origin = origin.clone();
    }
    if let Some(ssl) = &body.ssl {
        if let Some(settings) = &ssl.settings {
            if let Some(v) = settings.min_tls_version {
                host.min_tls_version = v;
            }
            if let Some(c) = &settings.ciphers {
                host.ciphers = c.clone();
            }
            if let Some(r) = settings.session_resumption {
                host.session_resumption = r;
            }
        }
        match (&ssl.custom_certificate, &ssl.custom_key) {
            (Some(Some(cert)), Some(Some(key))) => {
                host.certificate = uploaded(&host.name, host.wildcard, cert, key)?;
                host.acme = None;
            }
            (Some(None), None | Some(None)) => {
                host.certificate = server_cert(s, &host.name, host.wildcard)?;
                host.acme = None;
            }
            (None, None) => {}
            _ => {
                return Err(ApiError::invalid(
                    "ssl: give custom_certificate and custom_key together",
                ));
            }
        }
    }
    if let Some(method) = body.ssl.as_ref().and_then(|ssl| ssl.method.as_deref()) {
        acme::apply_method(s, host, method)?;
    }
    acme::check_wildcard(host)?;
    if wildcard_changed && host.certificate.managed {
        host.certificate = server_cert(s, &host.name, host.wildcard)?;
    } else if wildcard_changed && host.wildcard {
        // An uploaded certificate must cover the subdomains it will now serve.
        covers(&host.name, true, host.certificate.chain.leaf())?;
    }
    if let Some(mtls) = &body.mtls {
        if let Some(f) = mtls.forward_client_cert {
            host.forward_client_cert = f;
        }
        match mtls.enabled {
            Some(true) if host.cas.is_empty() => {
                let managed = s
                    .managed_ca()
                    .ok_or_else(|| ApiError::internal("the store has no managed CA".to_string()))?;
                host.cas.push(managed.id.clone());
            }
            Some(false) => host.cas.clear(),
            _ => {}
        }
    }
    Ok(())
}

/// An uploaded certificate chain and key, checked: they match, are valid now,
/// and cover `name` (and its subdomains, for a wildcard hostname).
fn uploaded(name: &str, wildcard: bool, chain: &str, key: &str) -> Result<ServerCert, ApiError> {
    let bad = |m: String| ApiError::invalid(format!("ssl.custom_certificate: {m}"));
    let (ders, certs) = pki::read_chain(chain).map_err(|e| bad(format!("{e:#}")))?;
    let pkey = boring::pkey::PKey::private_key_from_pem(key.as_bytes()).map_err(|_| {
        ApiError::invalid("ssl.custom_key: not a PEM private key (-----BEGIN PRIVATE KEY-----)")
    })?;
    let matches = certs[0]
        .public_key()
        .map(|p| p.public_eq(&pkey))
        .unwrap_or(false);
    if !matches {
        return Err(ApiError::invalid(
            "ssl.custom_key does not belong to the first certificate of ssl.custom_certificate",
        ));
    }
    let (info, _) = pki::info(&ders[0]).map_err(|e| bad(format!("{e:#}")))?;
    let now = clock::now();
    if info.not_after < now {
        return Err(bad(format!(
            "expired on {}",
            clock::rfc3339(info.not_after)
        )));
    }
    if info.not_before > now + 300 {
        return Err(bad(format!(
            "not valid before {}",
            clock::rfc3339(info.not_before)
        )));
    }
    covers(name, wildcard, &ders[0])?;
    let internal = |e: anyhow::Error| ApiError::internal(format!("{e:#}"));
    Ok(ServerCert {
        chain: CertChain::from_ders(&ders).map_err(internal)?,
        key: KeyDer::from_key(&pkey).map_err(internal)?,
        managed: false,
        expires_on: info.not_after,
    })
}

/// Checks that a certificate (DER) covers `name` and, for a wildcard hostname,
/// its subdomains (`*.name`).
fn covers(name: &str, wildcard: bool, der: &[u8]) -> Result<(), ApiError> {
    let names = pki::dns_names(der);
    let parent = name.split_once('.').map(|(_, p)| format!("*.{p}"));
    if !names
        .iter()
        .any(|n| n == name || Some(n) == parent.as_ref())
    {
        return Err(ApiError::invalid(format!(
            "ssl.custom_certificate: it does not cover {name:?} (its DNS names: {})",
            names.join(", ")
        )));
    }
    let subdomains = format!("*.{name}");
    if wildcard && !names.contains(&subdomains) {
        return Err(ApiError::invalid(format!(
            "ssl.custom_certificate: the hostname is a wildcard but the certificate does not \
             cover {subdomains:?} (its DNS names: {})",
            names.join(", ")
        )));
    }
    Ok(())
}

/// A hostname as the API shows it (never its key).
fn view(s: &State, h: &Hostname) -> Value {
    let mut ssl = acme::ssl_fields(h);
    ssl["type"] = json!("dv");
    ssl["expires_on"] = json!(clock::rfc3339(h.certificate.expires_on));
    ssl["settings"] = json!({
                "min_tls_version": h.min_tls_version,
                "effective_min_tls_version": h.min_tls_version.unwrap_or(s.zone.min_tls_version),
                "ciphers": h.ciphers,
                "session_resumption": h.session_resumption,
        "effective_session_resumption":
            h.session_resumption.unwrap_or(s.zone.session_resumption),
    });
    json!({
        "id": h.id,
        "hostname": h.name,
        "wildcard": h.wildcard,
        "status": "active",
        "ssl": ssl,
        "custom_origin_server": h.origin,
        "mtls": {
            "enabled": !h.cas.is_empty(),
            "forward_client_cert": h.forward_client_cert,
            "certificate_authorities": h.cas,
        },
        "default": *h.name == s.meta.default_hostname,
        "created_at": clock::rfc3339(h.created_on),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Associations {
    hostnames: Vec<String>,
    mtls_certificate_id: Option<String>,
}

/// `GET|PUT /zones/Z/certificate_authorities/hostname_associations`.
pub(super) async fn associations(plane: &ControlPlane, call: &Call) -> Answer {
    let ca_of = |s: &State, id: Option<&String>| -> Result<String, ApiError> {
        match id {
            None => s
                .managed_ca()
                .map(|c| c.id.clone())
                .ok_or_else(|| ApiError::internal("the store has no managed CA")),
            Some(id) => match s.cas.get(id) {
                Some(ca) if ca.kind != AuthorityKind::Server => Ok(id.clone()),
                _ => Err(ApiError::not_found("mTLS certificate", id)),
            },
        }
    };
    match call.method {
        Method::GET => {
            plane
                .read(|s| {
                    let id = ca_of(s, call.query.get("mtls_certificate_id"))?;
                    Ok(json!({"hostnames": s.associations(&id), "mtls_certificate_id": id}))
                })
                .await
        }
        Method::PUT => {
            let body: Associations = call.json()?;
            plane
                .change(|s| {
                    let id = ca_of(s, body.mtls_certificate_id.as_ref())?;
                    let wanted: std::collections::HashSet<&str> =
                        body.hostnames.iter().map(String::as_str).collect();
                    let mut found = 0;
                    // Only the hostnames whose association changes are written.
                    let changing: Vec<String> = s
                        .hostnames
                        .values()
                        .filter(|h| {
                            let want = wanted.contains(&*h.name);
                            found += usize::from(want);
                            want != h.cas.contains(&id)
                        })
                        .map(|h| h.id.clone())
                        .collect();
                    if found < wanted.len() {
                        let missing = body
                            .hostnames
                            .iter()
                            .find(|n| s.hostname_by_name(n).is_none())
                            .expect("a name that matched no hostname");
                        return Err(ApiError::invalid(format!(
                            "hostname {missing:?} does not exist: create it first \
                             (POST custom_hostnames)"
                        )));
                    }
                    for host_id in changing {
                        let h = s.hostnames.get_mut(&host_id).expect("listed above");
                        if wanted.contains(&*h.name) {
                            h.cas.push(id.clone());
                        } else {
                            h.cas.retain(|c| *c != id);
                        }
                    }
                    Ok(json!({"hostnames": s.associations(&id), "mtls_certificate_id": id}))
                })
                .await
        }
        _ => Err(method_not_allowed("GET or PUT")),
    }
}
