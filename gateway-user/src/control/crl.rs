//! CRL sources of bring-your-own CAs: a file path or an `http://` URL, fetched
//! and verified against the CA before the CRL is stored and put in force. A
//! failed refresh keeps the last good CRL and records why.

use std::time::Duration;

use crate::config::CrlDer;
use anyhow::{Context, bail};
use http::Method;

use super::{
    ControlError, ControlPlane,
    model::{AuthorityKind, CrlSource},
};
use crate::{clock, pki};

/// How long a download or a file read may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest CRL file read (downloads are capped by the HTTP client alike).
const MAX_CRL_BYTES: u64 = 16 << 20;

/// Checks that `source` names an absolute file path or an `http://` URL.
pub fn check_source(source: &str) -> anyhow::Result<()> {
    if source.starts_with("http://") {
        let uri: http::Uri = source
            .parse()
            .with_context(|| format!("CRL source {source:?} is not a URL"))?;
        if uri.host().is_none() {
            bail!("CRL source {source:?} has no host");
        }
        Ok(())
    } else if source.starts_with('/') {
        Ok(())
    } else {
        bail!("CRL source {source:?}: give an absolute file path or an http:// URL")
    }
}

/// Downloads or reads a CRL.
pub async fn fetch(source: &str) -> anyhow::Result<Vec<u8>> {
    check_source(source)?;
    if source.starts_with("http://") {
        let (status, body) =
            crate::http_client::request(Method::GET, source, None, None, FETCH_TIMEOUT).await?;
        if !status.is_success() {
            bail!("{source} answered {status}");
        }
        Ok(body.to_vec())
    } else {
        let read = async {
            let meta = tokio::fs::metadata(source)
                .await
                .with_context(|| format!("cannot read {source}"))?;
            if !meta.is_file() {
                bail!("{source} is not a regular file");
            }
            if meta.len() > MAX_CRL_BYTES {
                bail!(
                    "{source} is {} bytes; a CRL is at most {MAX_CRL_BYTES}",
                    meta.len()
                );
            }
            tokio::fs::read(source)
                .await
                .with_context(|| format!("cannot read {source}"))
        };
        tokio::time::timeout(FETCH_TIMEOUT, read)
            .await
            .with_context(|| format!("reading {source} took over {FETCH_TIMEOUT:?}"))?
    }
}

/// A fetch's outcome again, for a change that may run more than once (a
/// fleet retries a change that lost a race with another node's).
pub fn again(fetched: &anyhow::Result<Vec<u8>>) -> anyhow::Result<Vec<u8>> {
    match fetched {
        Ok(bytes) => Ok(bytes.clone()),
        Err(e) => Err(anyhow::anyhow!("{e:#}")),
    }
}

/// The source after a fetch: the new CRL if it verifies against `ca_pem`,
/// else the previous one with the error recorded (returned as well).
pub fn updated(
    previous: Option<&CrlSource>,
    source: &str,
    fetched: anyhow::Result<Vec<u8>>,
    ca_pem: &str,
) -> (CrlSource, Option<String>) {
    let now = clock::now();
    let checked = fetched.and_then(|data| {
        let ca = pki::pem_certificates(ca_pem)?;
        crate::tls::revocation::inspect_crl(&ca[0], &data, now)
    });
    match checked {
        Ok((der, next_update, revoked)) => (
            CrlSource {
                source: source.to_string(),
                der: Some(CrlDer::new(der)),
                fetched_on: Some(now),
                next_update,
                revoked,
                last_error: None,
            },
            None,
        ),
        Err(e) => {
            let error = format!("{e:#}");
            let mut kept = previous
                .filter(|p| p.source == source)
                .cloned()
                .unwrap_or(CrlSource {
                    source: source.to_string(),
                    der: None,
                    fetched_on: None,
                    next_update: None,
                    revoked: 0,
                    last_error: None,
                });
            kept.last_error = Some(error.clone());
            (kept, Some(error))
        }
    }
}

/// Refreshes every CRL source (the daemon calls it hourly) as one change: all
/// sources are fetched first, then every result is put in force at once.
/// Failures keep the previous CRL and are logged.
pub async fn refresh_all(plane: &ControlPlane) {
    let sources: Vec<(String, String)> = plane
        .read(|s| {
            s.cas
                .values()
                .filter(|c| c.kind == AuthorityKind::Uploaded)
                .filter_map(|c| Some((c.id.clone(), c.crl.as_ref()?.source.clone())))
                .collect()
        })
        .await;
    if sources.is_empty() {
        return;
    }
    let mut fetched = Vec::new();
    for (id, source) in sources {
        let data = fetch(&source).await;
        fetched.push((id, source, data));
    }
    let result = plane
        .change(|s| -> Result<(), ControlError> {
            for (id, source, data) in &fetched {
                let Some(ca) = s.cas.get(id) else { continue };
                if ca.crl.as_ref().map(|c| c.source.as_str()) != Some(source.as_str()) {
                    // Replaced or removed while this refresh fetched the old one.
                    continue;
                }
                let (next, error) = updated(ca.crl.as_ref(), source, again(data), &ca.certificate);
                if let Some(e) = error {
                    log::warn!(
                        "CRL of CA {id} from {source}: {e}; the previous CRL stays in force"
                    );
                }
                if let Some(ca) = s.cas.get_mut(id.as_str()) {
                    ca.crl = Some(next);
                }
            }
            Ok(())
        })
        .await;
    if let Err(e) = result {
        log::error!("putting the refreshed CRLs in force: {e}");
    }
}
