//! Each node's report under `PREFIX/nodes/NAME`, on a lease that ends when
//! the node does, and the leader key `PREFIX/leader` on the same lease: the
//! node holding it does the fleet's periodic work (CRL refreshes, renewals,
//! expiry alerts). A node that loses etcd stops counting itself leader
//! within a call's timeout, well before its lease can expire and another
//! node take over.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};

use super::{Fleet, NodeStatus, etcd::Backoff};

/// The lease's time to live: a stopped node's report and leadership last this long.
const LEASE_TTL: i64 = 10;
/// How often the lease is kept alive and the report written.
const REPORT_EVERY: Duration = Duration::from_secs(2);
/// The least time between two reports.
const REPORT_GAP: Duration = Duration::from_secs(1);

/// Keeps this node's report and its claim on the leader key, forever.
pub async fn report(fleet: Arc<Fleet>) {
    let mut backoff = Backoff::new();
    loop {
        if let Err(e) = leased(&fleet).await {
            log::warn!("etcd: this node's report: {e:#}");
        }
        fleet.progress.set_leader(false);
        backoff.wait().await;
    }
}

/// One lease's life: grant it, then report on it until it is lost.
async fn leased(fleet: &Fleet) -> anyhow::Result<()> {
    let lease = fleet
        .etcd
        .retry(Duration::from_secs(5), |mut c| async move {
            c.lease_grant(LEASE_TTL, None).await
        })
        .await
        .context("granting a lease")?
        .id();
    fleet.progress.set_lease(lease);
    let mut applied = fleet.progress.subscribe();
    let mut last = None;
    loop {
        let generation = fleet.etcd.generation();
        let mut c = fleet.etcd.client().await?;
        let call = async {
            let (mut keeper, mut stream) = c.lease_keep_alive(lease).await?;
            keeper.keep_alive().await?;
            let ttl = stream.message().await?.map_or(0, |r| r.ttl());
            anyhow::ensure!(ttl > 0, "the lease expired");
            publish(fleet, &mut c, lease, &mut last).await
        };
        match tokio::time::timeout(super::etcd::CALL_TIMEOUT, call).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                fleet.etcd.fail_over(generation).await;
                return Err(e);
            }
            Err(_) => {
                fleet.etcd.fail_over(generation).await;
                anyhow::bail!("etcd did not answer within {:?}", super::etcd::CALL_TIMEOUT);
            }
        }
        // Report again when a revision is installed or refused, but at most
        // once a second: a stream of changes is not multiplied by the nodes.
        tokio::time::sleep(REPORT_GAP).await;
        let _ = tokio::time::timeout(REPORT_EVERY - REPORT_GAP, applied.changed()).await;
    }
}

/// Writes the report if it changed (the lease keeps it otherwise), and
/// claims or confirms the leader key (a read unless it is free).
async fn publish(
    fleet: &Fleet,
    c: &mut etcd_client::Client,
    lease: i64,
    last: &mut Option<NodeStatus>,
) -> anyhow::Result<()> {
    let p = &fleet.progress;
    let leader_key = fleet.key("leader", "");
    let leader_key = leader_key.trim_end_matches('/').to_string();
    let claim = Txn::new()
        .when([Compare::create_revision(
            leader_key.clone(),
            CompareOp::Equal,
            0,
        )])
        .and_then([TxnOp::put(
            leader_key.clone(),
            fleet.node.clone(),
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(leader_key.clone(), None)]);
    let r = c.txn(claim).await?;
    let leader = r.succeeded()
        || r.op_responses().iter().any(|op| match op {
            TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .is_some_and(|kv| kv.value() == fleet.node.as_bytes() && kv.lease() == lease),
            _ => false,
        });
    p.set_leader(leader);
    let mut status = NodeStatus {
        node: fleet.node.clone(),
        revision: p.applied(),
        error: p.last_error(),
        stale: p.stale_for().is_some(),
        leader,
        updated_on: String::new(),
    };
    if last.as_ref() != Some(&status) {
        let unstamped = status.clone();
        status.updated_on = crate::clock::rfc3339(crate::clock::now());
        let options = PutOptions::new().with_lease(lease);
        c.put(
            fleet.key("nodes", &fleet.node),
            serde_json::to_vec(&status)?,
            Some(options),
        )
        .await?;
        *last = Some(unstamped);
    }
    Ok(())
}

/// Leaves the fleet at shutdown: the lease is revoked, so this node's report
/// and its leadership end now rather than when the lease would expire.
pub async fn leave(fleet: &Fleet) {
    let Some(lease) = fleet.progress.lease() else {
        return;
    };
    let revoke = async {
        let mut c = fleet.etcd.client().await?;
        c.lease_revoke(lease).await
    };
    match tokio::time::timeout(Duration::from_secs(1), revoke).await {
        Ok(Ok(_)) => log::info!("left the fleet (lease revoked)"),
        Ok(Err(e)) => log::warn!("etcd: revoking this node's lease: {e}"),
        Err(_) => {
            log::warn!("etcd: revoking this node's lease took over 1 s; it expires by itself")
        }
    }
}

/// Every node's last report.
pub async fn list(fleet: &Fleet) -> anyhow::Result<Vec<NodeStatus>> {
    let prefix = fleet.key("nodes", "");
    let r = fleet
        .etcd
        .retry(Duration::from_secs(5), |mut c| {
            let prefix = prefix.clone();
            async move {
                c.get(
                    prefix,
                    Some(GetOptions::new().with_prefix().with_serializable()),
                )
                .await
            }
        })
        .await
        .context("etcd did not answer")?;
    r.kvs()
        .iter()
        .map(|kv| {
            serde_json::from_slice(kv.value())
                .with_context(|| format!("the node report {:?}", String::from_utf8_lossy(kv.key())))
        })
        .collect()
}

/// Keeps the stale gauge current.
pub async fn tick_gauges(fleet: Arc<Fleet>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        fleet.progress.update_gauges();
    }
}
