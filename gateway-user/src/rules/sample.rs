//! Requests made from `name=value` pairs: for `gateway rules eval`, the tests
//! and the benchmark.

use std::{
    borrow::Cow,
    net::{IpAddr, Ipv4Addr},
};

use anyhow::{Context, bail};
use http::{HeaderName, HeaderValue};

use super::scheme::{CertField, Field};
use crate::{
    rules::RequestFields,
    rules::fields::{CertDetails, ClientAuth},
};

/// A request with every field empty or false, from 192.0.2.1 over TLS 1.3.
pub fn blank() -> RequestFields<'static> {
    RequestFields {
        host: Cow::Borrowed(""),
        method: Cow::Borrowed("GET"),
        path: Cow::Borrowed("/"),
        query: Cow::Borrowed(""),
        user_agent: Cow::Borrowed(""),
        src: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        ssl: true,
        tls_version: Cow::Borrowed("TLSv1.3"),
        tls_cipher: Cow::Borrowed("TLS_AES_128_GCM_SHA256"),
        client_auth: Cow::Owned(ClientAuth::default()),
        headers: Cow::Owned(http::HeaderMap::new()),
    }
}

fn boolean(name: &str, v: &str) -> anyhow::Result<bool> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => bail!("{name} is a Boolean: give true or false, not {v:?}"),
    }
}

/// Sets one field from text: `http.request.headers` takes `name:value`
/// (repeatable); Booleans take `true`/`false`; `ip.src` an address.
pub fn set(r: &mut RequestFields<'_>, name: &str, value: &str) -> anyhow::Result<()> {
    let field = Field::by_name(name).with_context(|| format!("unknown field {name:?}"))?;
    match field {
        Field::Host => r.host = value.to_ascii_lowercase().into(),
        Field::Method => r.method = value.to_string().into(),
        Field::Path => r.path = value.to_string().into(),
        Field::Query => r.query = value.to_string().into(),
        Field::Uri | Field::FullUri => {
            let rest = value
                .strip_prefix("https://")
                .map(|v| v.split_once('/').map_or("/", |(_, p)| p))
                .unwrap_or(value);
            let rest = if rest.starts_with('/') {
                rest.to_string()
            } else {
                format!("/{rest}")
            };
            let (path, query) = rest.split_once('?').unwrap_or((&rest, ""));
            (r.path, r.query) = (path.to_string().into(), query.to_string().into());
        }
        Field::UserAgent => r.user_agent = value.to_string().into(),
        Field::Headers => {
            let (n, v) = value
                .split_once(':')
                .context("http.request.headers takes name:value")?;
            let n = HeaderName::from_bytes(n.trim().to_ascii_lowercase().as_bytes())
                .context("bad header name")?;
            r.headers.to_mut().append(
                n,
                HeaderValue::from_str(v.trim()).context("bad header value")?,
            );
        }
        Field::SrcIp => {
            r.src = value
                .parse()
                .with_context(|| format!("ip.src: {value:?} is not an IP address"))?
        }
        Field::Ssl => r.ssl = boolean(name, value)?,
        Field::TlsVersion => r.tls_version = value.to_string().into(),
        Field::TlsCipher => r.tls_cipher = value.to_string().into(),
        Field::CertPresented => r.client_auth.to_mut().presented = boolean(name, value)?,
        Field::CertVerified => r.client_auth.to_mut().verified = boolean(name, value)?,
        Field::CertRevoked => r.client_auth.to_mut().revoked = boolean(name, value)?,
        Field::Cert(f) => {
            let c = r
                .client_auth
                .to_mut()
                .cert
                .get_or_insert_with(CertDetails::default);
            let slot = match f {
                CertField::IssuerDn => &mut c.issuer_dn,
                CertField::IssuerDnRfc2253 => &mut c.issuer_dn_rfc2253,
                CertField::IssuerDnLegacy => &mut c.issuer_dn_legacy,
                CertField::SubjectDn => &mut c.subject_dn,
                CertField::SubjectDnRfc2253 => &mut c.subject_dn_rfc2253,
                CertField::SubjectDnLegacy => &mut c.subject_dn_legacy,
                CertField::Serial => &mut c.serial,
                CertField::IssuerSerial => &mut c.issuer_serial,
                CertField::FingerprintSha256 => &mut c.fingerprint_sha256,
                CertField::FingerprintSha1 => &mut c.fingerprint_sha1,
                CertField::NotBefore => &mut c.not_before,
                CertField::NotAfter => &mut c.not_after,
                CertField::Ski => &mut c.ski,
                CertField::IssuerSki => &mut c.issuer_ski,
                CertField::Rfc9440 => &mut c.rfc9440,
                CertField::ChainRfc9440 => &mut c.chain_rfc9440,
            };
            *slot = value.to_string();
        }
    }
    Ok(())
}

/// A request from `name=value` pairs applied to [`blank`].
pub fn from_pairs<'a>(
    pairs: impl IntoIterator<Item = &'a str>,
) -> anyhow::Result<RequestFields<'static>> {
    let mut r = blank();
    for pair in pairs {
        let (name, value) = pair
            .split_once('=')
            .with_context(|| format!("{pair:?}: expected name=value"))?;
        set(&mut r, name.trim(), value)?;
    }
    Ok(r)
}
