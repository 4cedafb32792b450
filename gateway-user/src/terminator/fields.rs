//! The values a request exposes to the rules engine (`http.*`, `ip.src`,
//! `ssl`, `cf.tls_*`): built once per request from the request and its
//! connection.

use std::net::IpAddr;

use http::request::Parts;

use super::ConnInfo;
use crate::tls::ClientAuth;

/// The fields of one request.
#[derive(Clone, Debug)]
pub struct RequestFields {
    /// `http.host`: the Host (or :authority), lowercased, without port.
    pub host: String,
    /// `http.request.method`.
    pub method: String,
    /// `http.request.uri.path`.
    pub path: String,
    /// `http.request.uri.query` (without `?`).
    pub query: String,
    /// `http.user_agent`.
    pub user_agent: String,
    /// `ip.src`.
    pub src: IpAddr,
    /// `ssl`: always true here.
    pub ssl: bool,
    /// `cf.tls_version`, e.g. `TLSv1.3`.
    pub tls_version: String,
    /// `cf.tls_cipher`, e.g. `AEAD-AES128-GCM-SHA256`.
    pub tls_cipher: String,
    /// `cf.tls_client_auth.*`.
    pub client_auth: ClientAuth,
    /// `http.request.headers`: names are lower case.
    pub headers: http::HeaderMap,
}

/// The request's host: `:authority` or `Host`, lowercased, port removed.
pub fn request_host(parts: &Parts) -> Option<String> {
    let raw = match parts.uri.authority() {
        Some(a) => a.host().to_string(),
        None => {
            let h = parts.headers.get(http::header::HOST)?.to_str().ok()?;
            let h = h
                .rsplit_once(':')
                .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
                .map_or(h, |(h, _)| h);
            h.to_string()
        }
    };
    let host = raw.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

impl RequestFields {
    /// The fields of a request on a connection.
    pub fn new(parts: &Parts, conn: &ConnInfo) -> RequestFields {
        let header = |name| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        RequestFields {
            host: request_host(parts).unwrap_or_default(),
            method: parts.method.as_str().to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            user_agent: header(http::header::USER_AGENT),
            src: conn.peer.ip(),
            ssl: true,
            tls_version: conn.tls_version.to_string(),
            tls_cipher: conn.tls_cipher.clone(),
            client_auth: conn.auth.clone(),
            headers: parts.headers.clone(),
        }
    }
}
