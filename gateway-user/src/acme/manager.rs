//! The background task that orders, installs and renews the certificates of
//! hostnames whose source is `acme`: one order at a time, by TLS-ALPN-01;
//! the new chain is put in force through the control plane like any change.
//! A failure keeps the current certificate, records the error in the
//! hostname's `ssl.validation_errors`, and retries with a jittered backoff.
//! In a fleet only the node that does periodic work (the leader) orders.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use log::{info, warn};

use super::{client::AcmeClient, jws::AccountKey, order};
use crate::{
    clock,
    config::{CertChain, KeyDer},
    control::{
        ControlError, ControlPlane,
        acme_state::{AcmeZone, SslStatus},
        audit,
        model::ServerCert,
    },
    pki,
};

/// How often due orders are looked for.
const TICK: Duration = Duration::from_secs(1);
/// The first retry's delay after a failure (doubled per failure).
const BACKOFF_FIRST_SECS: i64 = 5;
/// The longest retry delay.
const BACKOFF_MAX_SECS: i64 = 3600;

/// Starts the task; it runs until the runtime ends.
pub fn start(plane: Arc<ControlPlane>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(TICK).await;
            if !plane.does_periodic_work() {
                continue;
            }
            audit::acting(
                audit::Actor::gateway("ordering ACME certificates"),
                run_due(&plane),
            )
            .await;
        }
    })
}

/// The first hostname with a due order, and the zone's ACME settings.
async fn next_due(plane: &ControlPlane) -> Option<(AcmeZone, String, String, bool)> {
    let now = clock::now();
    plane
        .read(|s| {
            let zone = s.zone.acme.clone()?;
            let h = s
                .hostnames
                .values()
                .find(|h| h.acme.as_ref().is_some_and(|a| a.due(now)))?;
            let renewing = h.acme.as_ref().is_some_and(|a| a.renew_on.is_some());
            Some((zone, h.id.clone(), h.name.to_string(), renewing))
        })
        .await
}

/// Runs one due order, if any.
async fn run_due(plane: &ControlPlane) {
    let Some((zone, id, name, renewing)) = next_due(plane).await else {
        return;
    };
    let key = match account_key(plane, &zone).await {
        Ok(k) => k,
        Err(e) => {
            warn!("ACME account key: {e:#}");
            return;
        }
    };
    let first = if renewing {
        SslStatus::PendingRenewal
    } else {
        SslStatus::PendingValidation
    };
    set_status(plane, &id, first).await;
    let outcome = obtain(plane, &zone, key, &id, &name, renewing).await;
    record(plane, &zone, &id, &name, outcome).await;
}

/// The zone's account key, made and stored at the first order.
async fn account_key(plane: &ControlPlane, zone: &AcmeZone) -> anyhow::Result<AccountKey> {
    if let Some(pem) = &zone.account_key {
        return AccountKey::from_pem(pem);
    }
    let pem = AccountKey::generate()?.to_pem()?;
    let stored = plane
        .change(|s| -> Result<String, ControlError> {
            let acme = s.zone.acme.as_mut().context("ACME settings removed")?;
            Ok(acme.account_key.get_or_insert_with(|| pem.clone()).clone())
        })
        .await?;
    AccountKey::from_pem(&stored)
}

/// Sets an `acme` hostname's status, if it still exists.
async fn set_status(plane: &ControlPlane, id: &str, status: SslStatus) {
    let result = plane
        .change(|s| -> Result<(), ControlError> {
            if let Some(a) = s.hostnames.get_mut(id).and_then(|h| h.acme.as_mut()) {
                a.status = status;
            }
            Ok(())
        })
        .await;
    if let Err(e) = result {
        warn!("ACME status of hostname {id}: {e}");
    }
}

/// Orders a certificate for `name`: the served certificate and its issuer.
async fn obtain(
    plane: &ControlPlane,
    zone: &AcmeZone,
    key: AccountKey,
    id: &str,
    name: &str,
    renewing: bool,
) -> anyhow::Result<(ServerCert, String, i64)> {
    let ca = zone.directory_ca.as_deref().map(Path::new);
    let mut client = AcmeClient::connect(&zone.directory, key, ca).await?;
    client.account(&zone.contact).await?;
    let validated = order::validate(&mut client, name).await?;
    let wanted = plane
        .read(|s| s.hostnames.get(id).is_some_and(|h| h.acme.is_some()))
        .await;
    anyhow::ensure!(
        wanted,
        "{name} was deleted or left acme: the order is abandoned"
    );
    if !renewing {
        set_status(plane, id, SslStatus::PendingIssuance).await;
    }
    let issued = order::issue(&mut client, name, validated).await?;
    let (ders, _) = pki::read_chain(&issued.chain_pem).context("the issued chain")?;
    let (leaf, _) = pki::info(&ders[0])?;
    anyhow::ensure!(
        pki::dns_names(&ders[0]).iter().any(|n| n == name),
        "the issued certificate does not name {name}"
    );
    if let Some(roots) = &zone.roots {
        verify_chain(&ders, Path::new(roots))?;
    }
    let cert = ServerCert {
        chain: CertChain::from_ders(&ders)?,
        key: KeyDer::from_key(&issued.key)?,
        managed: false,
        expires_on: leaf.not_after,
    };
    Ok((cert, leaf.issuer, leaf.not_before))
}

/// Checks that a chain (DER, leaf first) verifies to one of the roots in the
/// PEM file `roots`, for server authentication.
fn verify_chain(ders: &[Vec<u8>], roots: &Path) -> anyhow::Result<()> {
    use boring::{
        stack::Stack,
        x509::{X509, X509StoreContext, store::X509StoreBuilder},
    };
    let pem = std::fs::read(roots).with_context(|| format!("reading {}", roots.display()))?;
    let mut store = X509StoreBuilder::new()?;
    for root in X509::stack_from_pem(&pem)? {
        store.add_cert(root)?;
    }
    let store = store.build();
    let leaf = X509::from_der(&ders[0])?;
    let mut chain = Stack::new()?;
    for der in &ders[1..] {
        chain.push(X509::from_der(der)?)?;
    }
    let mut ctx = X509StoreContext::new()?;
    let (ok, error) = ctx.init(&store, &leaf, &chain, |c| {
        Ok((c.verify_cert()?, c.verify_result().err()))
    })?;
    anyhow::ensure!(
        ok,
        "the issued chain does not verify to the configured roots ({}): not installed",
        error.map(|e| e.to_string()).unwrap_or_default()
    );
    Ok(())
}

/// Puts an order's outcome in the store: the new certificate, or the error
/// and the next attempt's time (the current certificate stays).
async fn record(
    plane: &ControlPlane,
    zone: &AcmeZone,
    id: &str,
    name: &str,
    outcome: anyhow::Result<(ServerCert, String, i64)>,
) {
    let now = clock::now();
    let error = outcome.as_ref().err().map(|e| format!("{e:#}"));
    let result = plane
        .change(|s| -> Result<(), ControlError> {
            let Some(h) = s.hostnames.get_mut(id) else {
                return Ok(()); // deleted meanwhile
            };
            let Some(a) = h.acme.as_mut() else {
                return Ok(()); // switched to another source meanwhile
            };
            match &outcome {
                Ok((cert, issuer, not_before)) => {
                    let lifetime = cert.expires_on - not_before;
                    let after = zone.renew_after_secs.unwrap_or(lifetime * 2 / 3);
                    a.status = SslStatus::Active;
                    a.validation_errors.clear();
                    a.certificate_authority = Some(issuer.clone());
                    a.renew_on = Some(now.max(*not_before) + after.max(1));
                    a.retry_on = None;
                    a.failures = 0;
                    h.certificate = cert.clone();
                }
                Err(_) => {
                    a.failures += 1;
                    a.retry_on = Some(now + backoff(a.failures));
                    a.validation_errors = error.clone().into_iter().collect();
                    if a.status == SslStatus::PendingRenewal {
                        a.status = SslStatus::Active;
                    } else if a.status == SslStatus::PendingIssuance {
                        a.status = SslStatus::PendingValidation;
                    }
                }
            }
            Ok(())
        })
        .await;
    match (result, error) {
        (Err(e), _) => warn!("ACME certificate of {name}: storing the outcome: {e}"),
        (Ok(()), Some(e)) => warn!("ACME certificate of {name}: {e}"),
        (Ok(()), None) => info!("ACME certificate of {name} issued and in force"),
    }
}

/// The delay before the next attempt after `failures` failures in a row:
/// doubling from [`BACKOFF_FIRST_SECS`] up to [`BACKOFF_MAX_SECS`], plus up
/// to a quarter of it at random.
fn backoff(failures: u32) -> i64 {
    let base = BACKOFF_FIRST_SECS
        .saturating_mul(1 << failures.saturating_sub(1).min(20))
        .min(BACKOFF_MAX_SECS);
    let mut r = [0u8; 2];
    let _ = boring::rand::rand_bytes(&mut r);
    base + base / 4 * i64::from(u16::from_le_bytes(r)) / 65_535
}

#[cfg(test)]
mod tests {
    use super::backoff;

    #[test]
    fn the_backoff_doubles_up_to_its_cap_with_jitter() {
        let (one, two) = (backoff(1), backoff(2));
        assert!((5..=6).contains(&one), "{one}");
        assert!((10..=12).contains(&two), "{two}");
        assert!((3600..=4500).contains(&backoff(30)));
    }
}
