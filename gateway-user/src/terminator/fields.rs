//! A request's host, checked, and the rules' fields of a request
//! ([`RequestFields`]), borrowed once per request from the request and its connection.

use std::borrow::Cow;

use http::request::Parts;

use super::ConnInfo;
use crate::rules::fields::{ClientAuth, RequestFields};

/// A host lowercased, without port (`name:port`, `[v6]:port`) or trailing
/// dots: borrowed from `raw` unless it had capitals.
fn normalise_host(raw: &str) -> Cow<'_, str> {
    let raw = raw.trim_end_matches('.');
    let host = match raw.rsplit_once(':') {
        Some((h, port))
            if port.bytes().all(|b| b.is_ascii_digit())
                && (!h.contains(':') || (h.starts_with('[') && h.ends_with(']'))) =>
        {
            h
        }
        _ => raw,
    };
    let host = host.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// The request's host, lowercased and without port: the `:authority` (HTTP/2,
/// or an absolute-form target) and the `Host` header must agree, and there may
/// be only one `Host`; anything else is refused, since the origin could read a
/// different name than the one the TLS policy and the rules checked. So is user
/// info (`user@host`), which no host may carry (RFC 9110 §4.2.4). The answer
/// borrows from the request unless the host had to be lowercased.
pub fn request_host(parts: &Parts) -> Result<Cow<'_, str>, &'static str> {
    let mut hosts = parts.headers.get_all(http::header::HOST).iter();
    let header = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err("more than one Host header"),
        (Some(v), None) => Some(normalise_host(
            v.to_str().map_err(|_| "the Host header is not text")?,
        )),
        (None, _) => None,
    };
    let authority = parts.uri.authority().map(|a| normalise_host(a.as_str()));
    let host = match (authority, header) {
        (Some(a), Some(h)) if a != h => {
            return Err("the request target and the Host header name different hosts");
        }
        (Some(a), _) => a,
        (None, Some(h)) => h,
        (None, None) => return Err("the request names no host"),
    };
    if host.is_empty() {
        Err("the request names no host")
    } else if host.contains('@') {
        Err("the request's host carries user info")
    } else {
        Ok(host)
    }
}

/// The rules' fields of a request on a connection, borrowed from both: its
/// host already checked, and `auth` the client certificate's outcome as
/// re-checked for this request.
pub fn request_fields<'a>(
    parts: &'a Parts,
    conn: &'a ConnInfo,
    host: &'a str,
    auth: &'a ClientAuth,
) -> RequestFields<'a> {
    let user_agent = parts
        .headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    RequestFields {
        host: Cow::Borrowed(host),
        method: Cow::Borrowed(parts.method.as_str()),
        path: Cow::Borrowed(parts.uri.path()),
        query: Cow::Borrowed(parts.uri.query().unwrap_or_default()),
        user_agent: Cow::Borrowed(user_agent),
        src: conn.peer.ip(),
        ssl: true,
        tls_version: Cow::Borrowed(conn.tls_version),
        tls_cipher: Cow::Borrowed(&conn.tls_cipher),
        client_auth: Cow::Borrowed(auth),
        headers: Cow::Borrowed(&parts.headers),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, hosts: &[&str]) -> Parts {
        let mut req = http::Request::builder().uri(uri);
        for h in hosts {
            req = req.header(http::header::HOST, *h);
        }
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_host_is_lowercased_without_port_or_trailing_dots() {
        for (uri, hosts, want) in [
            ("/", &["Example.COM:443"][..], "example.com"),
            ("/", &["example.com."], "example.com"),
            ("https://example.com:8443/", &["EXAMPLE.com"], "example.com"),
            // Found by the request_checks fuzz target: the port stayed.
            ("/", &["127.0.0.1:443."], "127.0.0.1"),
            ("/", &["[::1]:443"], "[::1]"),
            (
                "https://[2001:DB8::1]:443/",
                &["[2001:db8::1]"],
                "[2001:db8::1]",
            ),
            ("/", &["[::1]"], "[::1]"),
        ] {
            assert_eq!(
                request_host(&parts(uri, hosts)).as_deref(),
                Ok(want),
                "{uri} {hosts:?}"
            );
        }
    }

    #[test]
    fn ambiguous_hosts_and_user_info_are_refused() {
        for (uri, hosts) in [
            ("/", &["a.example", "a.example"][..]),
            ("https://a.example/", &["b.example"]),
            ("/", &[]),
            ("/", &[":443"]),
            // Found by the request_checks fuzz target: user info passed as a host.
            ("https://user@a.example/", &[]),
            ("/", &["user@[::1]:443"]),
        ] {
            assert!(request_host(&parts(uri, hosts)).is_err(), "{uri} {hosts:?}");
        }
    }
}
