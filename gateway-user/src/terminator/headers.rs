//! Request headers toward the origin: what a client may not set, and what the
//! gateway sets about the connection and its client certificate.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::{config::ForwardMode, rules::fields::ClientAuth};

/// Headers that only the gateway may set; a client's copies are removed.
pub fn is_reserved(name: &HeaderName) -> bool {
    let n = name.as_str();
    n.starts_with("cf-client-cert-")
        || n.starts_with("cf-cert-")
        || n == "client-cert"
        || n == "client-cert-chain"
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// Whether `name` is a hop-by-hop header ([`HOP_BY_HOP`]), never forwarded.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(&name.as_str())
}

/// Whether the request's `TE` asks for trailers (kept towards an HTTP/2 origin).
pub fn te_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
}

/// Whether the request is gRPC (`content-type: application/grpc`, `+proto`
/// and the like; gRPC-Web, which HTTP/1.1 carries, is not).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(kind) = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let kind = kind.trim().to_ascii_lowercase();
    kind.strip_prefix("application/grpc")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('+') || rest.starts_with(';'))
}

/// The headers the `Connection` header names (hop-by-hop for this request).
pub fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect()
}

/// Removes reserved and hop-by-hop headers (and those the `Connection` header names).
pub fn strip_incoming(headers: &mut HeaderMap) {
    let named = connection_named(headers);
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_reserved(n) || is_hop_by_hop(n) || named.contains(n))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    // Values come from certificates: anything a header cannot carry is dropped.
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// Sets the client certificate headers of `mode`.
pub fn set_client_cert(headers: &mut HeaderMap, mode: ForwardMode, auth: &ClientAuth) {
    let bool_str = |b: bool| if b { "true" } else { "false" };
    match mode {
        ForwardMode::None => {}
        ForwardMode::Cloudflare => {
            set(headers, "cf-cert-presented", bool_str(auth.presented));
            set(headers, "cf-cert-verified", bool_str(auth.verified));
            set(headers, "cf-cert-revoked", bool_str(auth.revoked));
            let Some(c) = &auth.cert else { return };
            set(headers, "cf-client-cert-der-base64", &c.der_base64);
            set(headers, "cf-client-cert-sha256", &c.fingerprint_sha256);
            for (name, value) in [
                ("cf-cert-issuer-dn", &c.issuer_dn),
                ("cf-cert-subject-dn", &c.subject_dn),
                ("cf-cert-issuer-dn-rfc2253", &c.issuer_dn_rfc2253),
                ("cf-cert-subject-dn-rfc2253", &c.subject_dn_rfc2253),
                ("cf-cert-issuer-dn-legacy", &c.issuer_dn_legacy),
                ("cf-cert-subject-dn-legacy", &c.subject_dn_legacy),
                ("cf-cert-serial", &c.serial),
                ("cf-cert-issuer-serial", &c.issuer_serial),
                ("cf-cert-fingerprint-sha256", &c.fingerprint_sha256),
                ("cf-cert-fingerprint-sha1", &c.fingerprint_sha1),
                ("cf-cert-not-before", &c.not_before),
                ("cf-cert-not-after", &c.not_after),
                ("cf-cert-ski", &c.ski),
                ("cf-cert-issuer-ski", &c.issuer_ski),
            ] {
                set(headers, name, value);
            }
        }
        ForwardMode::Rfc9440 => {
            // RFC 9440: only a certificate the gateway verified, and not revoked, is passed on.
            let Some(c) = auth
                .cert
                .as_ref()
                .filter(|_| auth.verified && !auth.revoked)
            else {
                return;
            };
            if !c.rfc9440.is_empty() {
                set(headers, "client-cert", &c.rfc9440);
            }
            if !c.chain_rfc9440.is_empty() {
                set(headers, "client-cert-chain", &c.chain_rfc9440);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_and_te_trailers_are_recognised() {
        let with = |name: http::HeaderName, value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static(value));
            h
        };
        use http::header::{CONTENT_TYPE, TE};
        assert!(is_grpc(&with(CONTENT_TYPE, "application/grpc")));
        assert!(is_grpc(&with(CONTENT_TYPE, "application/grpc+proto")));
        assert!(!is_grpc(&with(CONTENT_TYPE, "application/grpc-web")));
        assert!(!is_grpc(&with(CONTENT_TYPE, "application/json")));
        assert!(te_trailers(&with(TE, "trailers")));
        assert!(te_trailers(&with(TE, "gzip, Trailers")));
        assert!(!te_trailers(&with(TE, "gzip")));
    }

    #[test]
    fn client_supplied_certificate_headers_are_removed() {
        let mut h = HeaderMap::new();
        for name in [
            "cf-client-cert-sha256",
            "CF-Cert-Verified",
            "client-cert",
            "Client-Cert-Chain",
            "x-keep",
            "connection",
            "x-gone",
        ] {
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("spoofed"),
            );
        }
        h.insert("connection", HeaderValue::from_static("x-gone"));
        strip_incoming(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, vec!["x-keep"]);
    }
}
