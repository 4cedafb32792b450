//! The rules' execution context: the values one request exposes to them
//! (`http.*`, `ip.src`, `ssl`, `cf.tls_*`), which the terminator fills in
//! once per request and every compiled expression reads.
//!
//! The context borrows: the terminator points it at the request's method,
//! path, headers and checked host and at its connection's TLS details and
//! client-certificate outcome, copying nothing. [`super::sample`] builds owned
//! ones (`RequestFields<'static>`) for the CLI, the tests and the benchmark.

use std::{borrow::Cow, net::IpAddr};

/// The fields of one request, borrowed from it where they can be.
#[derive(Clone, Debug)]
pub struct RequestFields<'a> {
    /// `http.host`: the Host (or :authority), lowercased, without port.
    pub host: Cow<'a, str>,
    /// `http.request.method`.
    pub method: Cow<'a, str>,
    /// `http.request.uri.path`.
    pub path: Cow<'a, str>,
    /// `http.request.uri.query` (without `?`).
    pub query: Cow<'a, str>,
    /// `http.user_agent`.
    pub user_agent: Cow<'a, str>,
    /// `ip.src`.
    pub src: IpAddr,
    /// `ssl`: always true here.
    pub ssl: bool,
    /// `cf.tls_version`, e.g. `TLSv1.3`.
    pub tls_version: Cow<'a, str>,
    /// `cf.tls_cipher`, e.g. `AEAD-AES128-GCM-SHA256`.
    pub tls_cipher: Cow<'a, str>,
    /// `cf.tls_client_auth.*` (the connection's; copied only if changed).
    pub client_auth: Cow<'a, ClientAuth>,
    /// `http.request.headers`: names are lower case.
    pub headers: Cow<'a, http::HeaderMap>,
}

/// What the handshake established about the client certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientAuth {
    /// The client sent a certificate.
    pub presented: bool,
    /// It chains to a CA associated with the hostname (true also when revoked).
    pub verified: bool,
    /// It is revoked (managed CA revocation or a CRL of its issuer).
    pub revoked: bool,
    /// Why verification failed, when it did (for logs; not a rules field).
    pub failure: Option<String>,
    /// The certificate's details, when one was presented and could be parsed.
    pub cert: Option<CertDetails>,
    /// Issuer name (raw DER) and serial (raw): how revocation is looked up.
    pub revocation_key: Option<(Vec<u8>, Vec<u8>)>,
    /// SHA-256 of the trust anchor the chain was verified to: whether that CA
    /// is still trusted for the hostname is looked up again per request.
    pub anchor: Option<Vec<u8>>,
}

/// The presented certificate, formatted for rules and headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertDetails {
    /// Subject DN, RFC 2253 order, unescaped.
    pub subject_dn: String,
    /// Subject DN per RFC 2253.
    pub subject_dn_rfc2253: String,
    /// Subject DN, OpenSSL legacy one-line form.
    pub subject_dn_legacy: String,
    /// Issuer DN, RFC 2253 order, unescaped.
    pub issuer_dn: String,
    /// Issuer DN per RFC 2253.
    pub issuer_dn_rfc2253: String,
    /// Issuer DN, OpenSSL legacy one-line form.
    pub issuer_dn_legacy: String,
    /// Serial number, upper-case hex.
    pub serial: String,
    /// Serial number of the issuing CA certificate, upper-case hex (empty if unknown).
    pub issuer_serial: String,
    /// SHA-256 of the DER, lower-case hex.
    pub fingerprint_sha256: String,
    /// SHA-1 of the DER, lower-case hex.
    pub fingerprint_sha1: String,
    /// Start of validity.
    pub not_before: String,
    /// End of validity.
    pub not_after: String,
    /// Subject key identifier, upper-case hex (empty if absent).
    pub ski: String,
    /// The issuer's key identifier (authority key identifier), upper-case hex.
    pub issuer_ski: String,
    /// The DER, base64.
    pub der_base64: String,
    /// The leaf as an RFC 9440 byte sequence (empty when too large).
    pub rfc9440: String,
    /// Whether `rfc9440` was too large to forward.
    pub rfc9440_too_large: bool,
    /// The chain sent by the client (without the leaf) as an RFC 9440 list.
    pub chain_rfc9440: String,
    /// Whether `chain_rfc9440` was too large to forward.
    pub chain_rfc9440_too_large: bool,
}
