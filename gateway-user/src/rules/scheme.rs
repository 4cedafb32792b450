//! The scheme: every field a rule may name, with its type, and how to read it
//! from a request's [`RequestFields`].

use std::{borrow::Cow, fmt, net::IpAddr};

use crate::rules::RequestFields;

/// A value type of the language.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    /// A string (bytes).
    Bytes,
    /// A signed integer.
    Int,
    /// A boolean.
    Bool,
    /// An IPv4 or IPv6 address.
    Ip,
    /// An array of strings (`field[*]` yields its elements).
    BytesArray,
    /// An array of booleans: a comparison over `[*]`, to reduce with `any()` or `all()`.
    BoolArray,
    /// A map from lower-case names to arrays of strings (headers).
    Map,
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Type::Bytes => "String",
            Type::Int => "Integer",
            Type::Bool => "Boolean",
            Type::Ip => "IP address",
            Type::BytesArray => "Array<String>",
            Type::BoolArray => "Array<Boolean>",
            Type::Map => "Map<Array<String>>",
        })
    }
}

/// A field of the scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// `http.host`
    Host,
    /// `http.request.method`
    Method,
    /// `http.request.uri`: path and query.
    Uri,
    /// `http.request.uri.path`
    Path,
    /// `http.request.uri.query`
    Query,
    /// `http.request.full_uri`
    FullUri,
    /// `http.user_agent`
    UserAgent,
    /// `http.request.headers`
    Headers,
    /// `ip.src`
    SrcIp,
    /// `ssl`
    Ssl,
    /// `cf.tls_version`
    TlsVersion,
    /// `cf.tls_cipher`
    TlsCipher,
    /// `cf.tls_client_auth.cert_presented`
    CertPresented,
    /// `cf.tls_client_auth.cert_verified`
    CertVerified,
    /// `cf.tls_client_auth.cert_revoked`
    CertRevoked,
    /// One of the string fields of `cf.tls_client_auth.*`.
    Cert(CertField),
}

/// The string fields of `cf.tls_client_auth.*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertField {
    /// `cf.tls_client_auth.cert_issuer_dn`
    IssuerDn,
    /// `cf.tls_client_auth.cert_issuer_dn_rfc2253`
    IssuerDnRfc2253,
    /// `cf.tls_client_auth.cert_issuer_dn_legacy`
    IssuerDnLegacy,
    /// `cf.tls_client_auth.cert_subject_dn`
    SubjectDn,
    /// `cf.tls_client_auth.cert_subject_dn_rfc2253`
    SubjectDnRfc2253,
    /// `cf.tls_client_auth.cert_subject_dn_legacy`
    SubjectDnLegacy,
    /// `cf.tls_client_auth.cert_serial`
    Serial,
    /// `cf.tls_client_auth.cert_issuer_serial`
    IssuerSerial,
    /// `cf.tls_client_auth.cert_fingerprint_sha256`
    FingerprintSha256,
    /// `cf.tls_client_auth.cert_fingerprint_sha1`
    FingerprintSha1,
    /// `cf.tls_client_auth.cert_not_before`
    NotBefore,
    /// `cf.tls_client_auth.cert_not_after`
    NotAfter,
    /// `cf.tls_client_auth.cert_ski`
    Ski,
    /// `cf.tls_client_auth.cert_issuer_ski`
    IssuerSki,
    /// `cf.tls_client_auth.cert_rfc9440`
    Rfc9440,
    /// `cf.tls_client_auth.cert_chain_rfc9440`
    ChainRfc9440,
}

/// Every field by name.
pub const FIELDS: &[(&str, Field)] = &[
    ("http.host", Field::Host),
    ("http.request.method", Field::Method),
    ("http.request.uri", Field::Uri),
    ("http.request.uri.path", Field::Path),
    ("http.request.uri.query", Field::Query),
    ("http.request.full_uri", Field::FullUri),
    ("http.user_agent", Field::UserAgent),
    ("http.request.headers", Field::Headers),
    ("ip.src", Field::SrcIp),
    ("ssl", Field::Ssl),
    ("cf.tls_version", Field::TlsVersion),
    ("cf.tls_cipher", Field::TlsCipher),
    ("cf.tls_client_auth.cert_presented", Field::CertPresented),
    ("cf.tls_client_auth.cert_verified", Field::CertVerified),
    ("cf.tls_client_auth.cert_revoked", Field::CertRevoked),
    (
        "cf.tls_client_auth.cert_issuer_dn",
        Field::Cert(CertField::IssuerDn),
    ),
    (
        "cf.tls_client_auth.cert_issuer_dn_rfc2253",
        Field::Cert(CertField::IssuerDnRfc2253),
    ),
    (
        "cf.tls_client_auth.cert_issuer_dn_legacy",
        Field::Cert(CertField::IssuerDnLegacy),
    ),
    (
        "cf.tls_client_auth.cert_subject_dn",
        Field::Cert(CertField::SubjectDn),
    ),
    (
        "cf.tls_client_auth.cert_subject_dn_rfc2253",
        Field::Cert(CertField::SubjectDnRfc2253),
    ),
    (
        "cf.tls_client_auth.cert_subject_dn_legacy",
        Field::Cert(CertField::SubjectDnLegacy),
    ),
    (
        "cf.tls_client_auth.cert_serial",
        Field::Cert(CertField::Serial),
    ),
    (
        "cf.tls_client_auth.cert_issuer_serial",
        Field::Cert(CertField::IssuerSerial),
    ),
    (
        "cf.tls_client_auth.cert_fingerprint_sha256",
        Field::Cert(CertField::FingerprintSha256),
    ),
    (
        "cf.tls_client_auth.cert_fingerprint_sha1",
        Field::Cert(CertField::FingerprintSha1),
    ),
    (
        "cf.tls_client_auth.cert_not_before",
        Field::Cert(CertField::NotBefore),
    ),
    (
        "cf.tls_client_auth.cert_not_after",
        Field::Cert(CertField::NotAfter),
    ),
    ("cf.tls_client_auth.cert_ski", Field::Cert(CertField::Ski)),
    (
        "cf.tls_client_auth.cert_issuer_ski",
        Field::Cert(CertField::IssuerSki),
    ),
    (
        "cf.tls_client_auth.cert_rfc9440",
        Field::Cert(CertField::Rfc9440),
    ),
    (
        "cf.tls_client_auth.cert_chain_rfc9440",
        Field::Cert(CertField::ChainRfc9440),
    ),
];

impl Field {
    /// The field called `name`.
    pub fn by_name(name: &str) -> Option<Field> {
        FIELDS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    /// The field's name.
    pub fn name(self) -> &'static str {
        FIELDS
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("?", |(n, _)| n)
    }

    /// The field's type.
    pub fn ty(self) -> Type {
        match self {
            Field::Headers => Type::Map,
            Field::SrcIp => Type::Ip,
            Field::Ssl | Field::CertPresented | Field::CertVerified | Field::CertRevoked => {
                Type::Bool
            }
            _ => Type::Bytes,
        }
    }

    /// Reads a string field.
    pub fn bytes<'a>(self, r: &'a RequestFields<'_>) -> Cow<'a, str> {
        let cert = r.client_auth.cert.as_ref();
        let c = |f: fn(&crate::rules::fields::CertDetails) -> &String| {
            Cow::Borrowed(cert.map_or("", |c| f(c).as_str()))
        };
        match self {
            Field::Host => Cow::Borrowed(&*r.host),
            Field::Method => Cow::Borrowed(&*r.method),
            Field::Path => Cow::Borrowed(&*r.path),
            Field::Query => Cow::Borrowed(&*r.query),
            Field::Uri if r.query.is_empty() => Cow::Borrowed(&*r.path),
            Field::Uri => Cow::Owned(format!("{}?{}", r.path, r.query)),
            Field::FullUri if r.query.is_empty() => {
                Cow::Owned(format!("https://{}{}", r.host, r.path))
            }
            Field::FullUri => Cow::Owned(format!("https://{}{}?{}", r.host, r.path, r.query)),
            Field::UserAgent => Cow::Borrowed(&*r.user_agent),
            Field::TlsVersion => Cow::Borrowed(&*r.tls_version),
            Field::TlsCipher => Cow::Borrowed(&*r.tls_cipher),
            Field::Cert(f) => match f {
                CertField::IssuerDn => c(|c| &c.issuer_dn),
                CertField::IssuerDnRfc2253 => c(|c| &c.issuer_dn_rfc2253),
                CertField::IssuerDnLegacy => c(|c| &c.issuer_dn_legacy),
                CertField::SubjectDn => c(|c| &c.subject_dn),
                CertField::SubjectDnRfc2253 => c(|c| &c.subject_dn_rfc2253),
                CertField::SubjectDnLegacy => c(|c| &c.subject_dn_legacy),
                CertField::Serial => c(|c| &c.serial),
                CertField::IssuerSerial => c(|c| &c.issuer_serial),
                CertField::FingerprintSha256 => c(|c| &c.fingerprint_sha256),
                CertField::FingerprintSha1 => c(|c| &c.fingerprint_sha1),
                CertField::NotBefore => c(|c| &c.not_before),
                CertField::NotAfter => c(|c| &c.not_after),
                CertField::Ski => c(|c| &c.ski),
                CertField::IssuerSki => c(|c| &c.issuer_ski),
                CertField::Rfc9440 => c(|c| &c.rfc9440),
                CertField::ChainRfc9440 => c(|c| &c.chain_rfc9440),
            },
            _ => Cow::Borrowed(""),
        }
    }

    /// Reads a boolean field.
    pub fn boolean(self, r: &RequestFields<'_>) -> bool {
        match self {
            Field::Ssl => r.ssl,
            Field::CertPresented => r.client_auth.presented,
            Field::CertVerified => r.client_auth.verified,
            Field::CertRevoked => r.client_auth.revoked,
            _ => false,
        }
    }

    /// Reads the IP field.
    pub fn ip(self, r: &RequestFields<'_>) -> IpAddr {
        r.src
    }
}
