//! The terminator's request checks, in process: `fields::request_host` (the
//! Host header and the `:authority` / absolute-form target) and
//! `headers::strip_incoming` then `headers::set_client_cert`, on
//! `http::request::Parts` built from the input (method, URI, headers with any
//! name and value `http` accepts, the forwarding mode, the client-auth result).
//!
//! Invariants:
//! - nothing panics;
//! - `request_host` agrees with the rules of the README's "Request handling"
//!   and the code: two Host headers, a Host that is not text, a Host and a
//!   target that name different hosts, user info, or no (or an empty) host
//!   are refused;
//!   else the answer is the host lower-cased, without port or trailing dots;
//! - an accepted host is non-empty ASCII, lower case, with no trailing dot and
//!   no port (`name:digits`, `[v6]:digits`);
//! - after `strip_incoming` no reserved header (`cf-client-cert-*`,
//!   `cf-cert-*`, `client-cert`, `client-cert-chain`), no hop-by-hop header and
//!   no header the `Connection` header names remains; every other header keeps
//!   exactly its values, in order;
//! - `set_client_cert` then sets only the headers of its mode, each once, with
//!   the value the client-auth result gives (dropped when not a header value),
//!   RFC 9440 ones only for a verified, unrevoked certificate; the rest stays.
#![no_main]

use gateway::{
    config::ForwardMode,
    rules::fields::{CertDetails, ClientAuth},
    terminator::{fields::request_host, headers},
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, request::Parts};
use libfuzzer_sys::{
    arbitrary::{Result, Unstructured},
    fuzz_target,
};

/// Header names worth hitting often: the hop-by-hop ones (RFC 9110 §7.6.1)
/// first, then reserved ones and their near misses.
const NAMES: &str = "connection keep-alive proxy-connection te trailer transfer-encoding upgrade \
    proxy-authenticate proxy-authorization host cf-client-cert-der-base64 cf-client-cert-sha256 \
    cf-cert-verified cf-cert-presented client-cert client-cert-chain client-certs cf-cert x-gone \
    x-keep x-forwarded-for user-agent";
const HOP_BY_HOP: usize = 9;

/// The Cloudflare mode's headers, in the order `expected_set` lists them.
const CF: &str = "cf-cert-presented cf-cert-verified cf-cert-revoked cf-client-cert-der-base64 \
    cf-client-cert-sha256 cf-cert-issuer-dn cf-cert-subject-dn cf-cert-issuer-dn-rfc2253 \
    cf-cert-subject-dn-rfc2253 cf-cert-issuer-dn-legacy cf-cert-subject-dn-legacy \
    cf-cert-serial cf-cert-issuer-serial cf-cert-fingerprint-sha256 cf-cert-fingerprint-sha1 \
    cf-cert-not-before cf-cert-not-after cf-cert-ski cf-cert-issuer-ski";

fn names(list: &'static str) -> Vec<&'static str> {
    list.split_whitespace().collect()
}

fn name(u: &mut Unstructured) -> Result<HeaderName> {
    if u.ratio(3, 4)? {
        return Ok(HeaderName::from_static(*u.choose(&names(NAMES))?));
    }
    Ok(HeaderName::from_bytes(u.arbitrary::<&[u8]>()?).unwrap_or(http::header::HOST))
}

/// A host as clients write it: a name or address, maybe user info, trailing
/// dots, a port.
fn host(u: &mut Unstructured) -> Result<Vec<u8>> {
    let names: Vec<&str> = "example.com|Example.COM|[::1]|[2001:DB8::1]|127.0.0.1||a:b"
        .split('|')
        .collect();
    let mut out = Vec::new();
    if u.ratio(1, 8)? {
        out.extend_from_slice(b"user@");
    }
    match u.choose_index(names.len() + 1)? {
        i if i < names.len() => out.extend_from_slice(names[i].as_bytes()),
        _ => out.extend_from_slice(u.arbitrary()?),
    }
    out.extend(std::iter::repeat_n(b'.', u.int_in_range(0..=2)?));
    out.extend_from_slice(*u.choose(&[&b""[..], b":443", b":", b":44x", b":443."])?);
    Ok(out)
}

fn value(u: &mut Unstructured) -> Result<HeaderValue> {
    let bytes: Vec<u8> = if u.ratio(1, 3)? {
        host(u)?
    } else if u.ratio(1, 2)? {
        // A list of names, as a Connection header carries.
        let n = u.int_in_range(1..=3)?;
        let list: Vec<&str> = (0..n)
            .map(|_| u.choose(&names(NAMES)).copied())
            .collect::<Result<_>>()?;
        list.join(if u.arbitrary()? { ", " } else { "," })
            .into_bytes()
    } else {
        u.arbitrary::<&[u8]>()?.to_vec()
    };
    Ok(HeaderValue::from_bytes(&bytes).unwrap_or(HeaderValue::from_static("example.com")))
}

fn parts(u: &mut Unstructured) -> Result<Parts> {
    let method = Method::from_bytes(u.arbitrary::<&[u8]>()?).unwrap_or(Method::GET);
    let target: Vec<u8> = match u.int_in_range(0..=2)? {
        0 => b"/".to_vec(),
        1 => [&b"https://"[..], &host(u)?, b"/p"].concat(),
        _ => u.arbitrary::<&[u8]>()?.to_vec(),
    };
    let uri = Uri::try_from(target).unwrap_or_default();
    let mut headers = HeaderMap::new();
    for _ in 0..u.int_in_range(0..=8)? {
        headers.append(name(u)?, value(u)?);
    }
    let (mut parts, ()) = http::Request::new(()).into_parts();
    (parts.method, parts.uri, parts.headers) = (method, uri, headers);
    Ok(parts)
}

/// The host as the rules say: without trailing dots, port (`name:digits`,
/// `[v6]:digits`) or capitals.
fn normalise(raw: &str) -> String {
    let raw = raw.trim_end_matches('.');
    let port = raw.rfind(':').filter(|&i| {
        let (h, p) = (&raw[..i], &raw[i + 1..]);
        p.bytes().all(|b| b.is_ascii_digit())
            && (!h.contains(':') || h.starts_with('[') && h.ends_with(']'))
    });
    raw[..port.unwrap_or(raw.len())]
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// What `request_host` must answer (only whether it refuses, and the host).
fn expected_host(parts: &Parts) -> Option<String> {
    let hosts: Vec<&HeaderValue> = parts.headers.get_all(http::header::HOST).iter().collect();
    let header = match hosts[..] {
        [] => None,
        [v] => Some(normalise(v.to_str().ok()?)),
        _ => return None,
    };
    let authority = parts.uri.authority().map(|a| normalise(a.as_str()));
    let host = match (authority, header) {
        (Some(a), Some(h)) if a != h => return None,
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => return None,
    };
    (!host.is_empty() && !host.contains('@')).then_some(host)
}

fn has_port(host: &str) -> bool {
    host.rsplit_once(':').is_some_and(|(h, p)| {
        !p.is_empty()
            && p.bytes().all(|b| b.is_ascii_digit())
            && (!h.contains(':') || h.ends_with(']'))
    })
}

/// Fields of a `CertDetails` as an array: references (`mut`) or copies.
macro_rules! fields {
    (mut $c:ident: $($f:ident)*) => { [$(&mut $c.$f),*] };
    ($c:ident: $($f:ident)*) => { [$($c.$f.clone()),*] };
}

fn auth(u: &mut Unstructured) -> Result<ClientAuth> {
    let mut auth = ClientAuth {
        presented: u.arbitrary()?,
        verified: u.arbitrary()?,
        revoked: u.arbitrary()?,
        ..Default::default()
    };
    if u.arbitrary()? {
        let mut c = CertDetails::default();
        for f in fields!(mut c: subject_dn subject_dn_rfc2253 subject_dn_legacy issuer_dn
            issuer_dn_rfc2253 issuer_dn_legacy serial issuer_serial fingerprint_sha256
            fingerprint_sha1 not_before not_after ski issuer_ski der_base64 rfc9440 chain_rfc9440)
        {
            *f = u.arbitrary()?;
        }
        auth.cert = Some(c);
    }
    Ok(auth)
}

/// The headers `set_client_cert` must set: (name, value) in mode order.
fn expected_set(mode: ForwardMode, a: &ClientAuth) -> Vec<(&'static str, String)> {
    let b = |v: bool| v.to_string();
    let mut out = Vec::new();
    match (mode, &a.cert) {
        (ForwardMode::None, _) => {}
        (ForwardMode::Cloudflare, cert) => {
            let cf = names(CF);
            out = vec![
                (cf[0], b(a.presented)),
                (cf[1], b(a.verified)),
                (cf[2], b(a.revoked)),
            ];
            if let Some(c) = cert {
                let values = fields!(c: der_base64 fingerprint_sha256 issuer_dn subject_dn
                    issuer_dn_rfc2253 subject_dn_rfc2253 issuer_dn_legacy subject_dn_legacy serial
                    issuer_serial fingerprint_sha256 fingerprint_sha1 not_before not_after ski
                    issuer_ski);
                out.extend(cf[3..].iter().zip(values).map(|(n, v)| (*n, v)));
            }
        }
        (ForwardMode::Rfc9440, Some(c)) if a.verified && !a.revoked => {
            out = vec![
                ("client-cert", c.rfc9440.clone()),
                ("client-cert-chain", c.chain_rfc9440.clone()),
            ];
            out.retain(|(_, v)| !v.is_empty());
        }
        (ForwardMode::Rfc9440, _) => {}
    }
    out.retain(|(_, v)| HeaderValue::from_str(v).is_ok());
    out
}

fn values(h: &HeaderMap, n: &HeaderName) -> Vec<Vec<u8>> {
    h.get_all(n).iter().map(|v| v.as_bytes().to_vec()).collect()
}

fn check(u: &mut Unstructured) -> Result<()> {
    let parts = parts(u)?;
    let got = request_host(&parts);
    let want = expected_host(&parts);
    assert_eq!(
        got.as_deref().ok(),
        want.as_deref(),
        "request_host of {parts:?}"
    );
    if let Ok(h) = &got {
        assert!(
            h.is_ascii() && *h == h.to_ascii_lowercase(),
            "{h:?} is not lower-case ASCII"
        );
        assert!(
            !h.is_empty() && !h.ends_with('.') && !has_port(h) && !h.contains('@'),
            "{h:?} is not a bare name"
        );
    }

    let before = parts.headers;
    let mut h = before.clone();
    headers::strip_incoming(&mut h);
    let named = headers::connection_named(&before);
    for n in before.keys() {
        let gone = headers::is_reserved(n) || headers::is_hop_by_hop(n) || named.contains(n);
        let s = n.as_str();
        let reserved = s.starts_with("cf-client-cert-")
            || s.starts_with("cf-cert-")
            || s == "client-cert"
            || s == "client-cert-chain";
        assert!(!reserved || gone, "{s} is not reserved");
        let hop = names(NAMES)[..HOP_BY_HOP].contains(&s);
        assert_eq!(headers::is_hop_by_hop(n), hop, "{s} and is_hop_by_hop");
        let kept = if gone { vec![] } else { values(&before, n) };
        assert_eq!(values(&h, n), kept, "strip_incoming and {s}");
    }
    assert!(
        h.keys().all(|n| before.contains_key(n)),
        "strip_incoming added a header"
    );

    let mode = *u.choose(&[
        ForwardMode::None,
        ForwardMode::Cloudflare,
        ForwardMode::Rfc9440,
    ])?;
    let auth = auth(u)?;
    let stripped = h.clone();
    headers::set_client_cert(&mut h, mode, &auth);
    let set = expected_set(mode, &auth);
    for n in stripped.keys().chain(h.keys()) {
        let want = match set.iter().find(|(s, _)| *s == n.as_str()) {
            Some((_, v)) => vec![v.clone().into_bytes()],
            None => values(&stripped, n),
        };
        assert_eq!(values(&h, n), want, "set_client_cert({mode:?}) and {n}");
    }
    for (n, _) in &set {
        assert!(
            h.contains_key(*n),
            "set_client_cert({mode:?}) did not set {n}"
        );
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = check(&mut Unstructured::new(data));
});
