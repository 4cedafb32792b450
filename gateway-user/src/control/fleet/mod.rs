//! Fleet mode: the control plane's store is etcd, shared by every gateway of
//! the fleet (`gateway run --etcd`).
//!
//! - **Write:** an admin change is one etcd transaction that compares the
//!   guard row's revision with the revision the change was made on, so two
//!   nodes' concurrent changes never overwrite each other (409 instead); a
//!   change etcd does not confirm is answered 503, never queued.
//! - **Read:** each node reads the configuration at one revision, then
//!   watches from the next; every revision is compiled and installed whole,
//!   or refused and reported (the last good one stays); a watch that falls
//!   behind compaction reads everything again and installs the difference.
//! - **Keep serving:** each installed revision is copied to a local store,
//!   which the node starts from when etcd cannot be reached (read-only, stale).
//! - **Report:** each node keeps its applied revision under its own leased
//!   key; the node holding the leader key does the periodic work.
//! - **Secrets:** private keys are sealed ([`seal`]) before they reach etcd.

use std::{
    path::PathBuf,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use etcd_client::{Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp};
use prometheus::{Gauge, IntCounter, IntGauge, Registry};
use serde::{Deserialize, Serialize};

use self::{
    etcd::{Etcd, EtcdOptions},
    rows::{GUARD, RowChange},
    seal::Keyring,
};
use super::{audit::Entry, model::State};

pub mod etcd;
pub mod nodes;
pub mod rows;
pub mod seal;
pub mod sync;

/// etcd refuses transactions of more operations than this (`--max-txn-ops`).
const MAX_TXN_OPS: usize = 128;
/// How long a change may wait for etcd to confirm it.
const COMMIT_BUDGET: Duration = Duration::from_secs(10);
/// Rows read per request when the configuration is read whole.
const PAGE_ROWS: i64 = 500;

/// How a node joins its fleet.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// The etcd cluster.
    pub etcd: EtcdOptions,
    /// The key prefix the fleet's configuration lives under.
    pub prefix: String,
    /// The master key file (see [`seal::Keyring::load`]).
    pub master_key: PathBuf,
    /// This node's name in the fleet.
    pub node: String,
}

/// A node's handle on its fleet.
pub struct Fleet {
    /// The connection.
    pub etcd: Etcd,
    prefix: String,
    /// The master keys.
    pub ring: Keyring,
    /// This node's name.
    pub node: String,
    /// What this node has installed.
    pub progress: Progress,
}

/// Why a change was not committed.
#[derive(Debug)]
pub enum CommitError {
    /// Another node changed the configuration first (409).
    Conflict(String),
    /// etcd did not confirm it (503).
    Unavailable(String),
    /// etcd or the gateway refused it (400).
    Refused(String),
}

impl Fleet {
    /// Reads the master keys and prepares the connection (made on first use).
    pub fn new(options: FleetOptions, registry: &Registry) -> anyhow::Result<Fleet> {
        let prefix = options.prefix.trim_end_matches('/').to_string();
        anyhow::ensure!(
            prefix.starts_with('/') && prefix.len() > 1,
            "--etcd-prefix {:?}: a prefix is an absolute key path such as /gateway",
            options.prefix
        );
        crate::config::validate_hostname(&options.node)
            .or_else(|_| {
                if options
                    .node
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("letters, digits, - _ and . only"))
                }
            })
            .with_context(|| format!("--node-name {:?}", options.node))?;
        Ok(Fleet {
            etcd: Etcd::new(options.etcd)?,
            prefix,
            ring: Keyring::load(&options.master_key)?,
            node: options.node,
            progress: Progress::new(registry)?,
        })
    }

    /// The prefix every configuration row is under.
    pub fn config_prefix(&self) -> String {
        format!("{}/config/", self.prefix)
    }

    fn key(&self, area: &str, rest: &str) -> String {
        format!("{}/{area}/{rest}", self.prefix)
    }

    /// Every configuration row (keys relative to the configuration prefix),
    /// read in pages at one revision, and the configuration's revision: that
    /// of its newest row (every change writes the guard row), so that a node
    /// that read it and one that watched the same changes report the same.
    pub async fn read_config(&self) -> Result<(Vec<(String, Vec<u8>)>, i64), etcd_client::Error> {
        let prefix = self.config_prefix();
        let end = prefix_end(&prefix);
        let (mut rows, mut revision, mut from) = (Vec::new(), 0i64, prefix.clone().into_bytes());
        let mut newest = 0;
        loop {
            let mut options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE_ROWS);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let page = self
                .etcd
                .retry(etcd::CALL_TIMEOUT * 3, |c| {
                    let (from, options) = (from.clone(), options.clone());
                    async move {
                        let mut kv = c.kv_client().max_decoding_message_size(64 << 20);
                        kv.get(from, Some(options)).await
                    }
                })
                .await?;
            if revision == 0 {
                revision = page.header().map_or(0, |h| h.revision());
            }
            for kv in page.kvs() {
                newest = newest.max(kv.mod_revision());
                let key = String::from_utf8_lossy(&kv.key()[prefix.len()..]).into_owned();
                rows.push((key, kv.value().to_vec()));
            }
            match page.kvs().last() {
                Some(last) if page.more() => from = [last.key(), b"\0"].concat(),
                _ => return Ok((rows, newest)),
            }
        }
    }

    /// Writes a first configuration unless the prefix has one already;
    /// whether this node wrote it.
    pub async fn create(&self, state: &State) -> anyhow::Result<bool> {
        let rows = rows::changes(None, state, &self.ring)?;
        let meta = self.key("config", "settings/meta");
        let mut ops: Vec<TxnOp> = rows
            .into_iter()
            .filter_map(|(k, v)| Some(TxnOp::put(self.key("config", &k), v?, None)))
            .collect();
        ops.push(TxnOp::put(
            self.key("config", GUARD),
            self.guard_value(),
            None,
        ));
        let response = self
            .etcd
            .retry(COMMIT_BUDGET, |mut c| {
                let txn = Txn::new()
                    .when([Compare::create_revision(meta.clone(), CompareOp::Equal, 0)])
                    .and_then(ops.clone());
                async move { c.txn(txn).await }
            })
            .await
            .context("etcd did not write the first configuration")?;
        Ok(response.succeeded())
    }

    fn guard_value(&self) -> String {
        serde_json::json!({"node": self.node, "at": crate::clock::now()}).to_string()
    }

    /// Commits `changes`, made on the state of revision `base`, with its audit
    /// entry, in one transaction; the revision it committed at.
    pub async fn commit(
        &self,
        base: i64,
        changes: Vec<RowChange>,
        entry: &Entry,
    ) -> Result<i64, CommitError> {
        if changes.len() + 2 > MAX_TXN_OPS {
            return Err(CommitError::Refused(format!(
                "a change may touch at most {} records in fleet mode; this one touches {}",
                MAX_TXN_OPS - 2,
                changes.len()
            )));
        }
        // The audit row's key is unique to this attempt: finding it tells
        // whether an attempt whose answer was lost did commit.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let audit_key = self.key("audit", &format!("{nanos:024}-{}", self.node));
        let audit = serde_json::to_vec(entry).map_err(|e| CommitError::Refused(e.to_string()))?;
        let mut ops: Vec<TxnOp> = changes
            .into_iter()
            .map(|(k, v)| match v {
                Some(v) => TxnOp::put(self.key("config", &k), v, None),
                None => TxnOp::delete(self.key("config", &k), None),
            })
            .collect();
        let guard = self.key("config", GUARD);
        ops.push(TxnOp::put(guard.clone(), self.guard_value(), None));
        ops.push(TxnOp::put(audit_key.clone(), audit, None));
        let deadline = Instant::now() + COMMIT_BUDGET;
        let mut backoff = etcd::Backoff::new();
        let mut attempted = false;
        loop {
            if attempted && let Ok(Some(rev)) = self.committed(&audit_key).await {
                return Ok(rev);
            }
            attempted = true;
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    guard.clone(),
                    CompareOp::Less,
                    base + 1,
                )])
                .and_then(ops.clone());
            let result = async {
                let mut c = self.etcd.client().await?;
                // A linearizable read first: it needs a leader heard by a
                // quorum, so a change is not proposed to a leader that lost
                // its quorum (which would keep it and commit it later, after
                // this call answered 503).
                tokio::time::timeout(etcd::CALL_TIMEOUT, c.get(guard.as_str(), None))
                    .await
                    .unwrap_or_else(|_| {
                        Err(etcd_client::Error::EndpointError("timed out".into()))
                    })?;
                tokio::time::timeout(etcd::CALL_TIMEOUT, c.txn(txn))
                    .await
                    .unwrap_or_else(|_| Err(etcd_client::Error::EndpointError("timed out".into())))
            };
            match result.await {
                Ok(r) if r.succeeded() => return Ok(r.header().map_or(0, |h| h.revision())),
                Ok(_) => {
                    if let Ok(Some(rev)) = self.committed(&audit_key).await {
                        return Ok(rev);
                    }
                    return Err(CommitError::Conflict(format!(
                        "the configuration changed on another node after revision {base}, which \
                         this change was made on; nothing was written: retry it"
                    )));
                }
                Err(e) if !etcd::is_transient(&e) => {
                    return Err(CommitError::Refused(format!(
                        "etcd refused the change: {e}"
                    )));
                }
                Err(e) => {
                    log::warn!(
                        "etcd {}: the change is not confirmed yet: {e}",
                        self.etcd.endpoint()
                    );
                    self.etcd.failed(&e);
                    self.etcd.fail_over().await;
                    if Instant::now() + backoff.peek() >= deadline {
                        if let Ok(Some(rev)) = self.committed(&audit_key).await {
                            return Ok(rev);
                        }
                        return Err(CommitError::Unavailable(format!(
                            "etcd did not confirm the change within {} s (no quorum, or no member \
                             reachable: {e}); it was not made, and nothing is queued: retry it \
                             when etcd is back",
                            COMMIT_BUDGET.as_secs()
                        )));
                    }
                    backoff.wait().await;
                }
            }
        }
    }

    /// The revision an audit row was committed at, if it was.
    async fn committed(&self, audit_key: &str) -> Result<Option<i64>, etcd_client::Error> {
        let mut c = self.etcd.client().await?;
        let r = tokio::time::timeout(etcd::CALL_TIMEOUT, c.get(audit_key, None))
            .await
            .unwrap_or_else(|_| Err(etcd_client::Error::EndpointError("timed out".into())))?;
        Ok(r.kvs().first().map(|kv| kv.mod_revision()))
    }

    /// Audit entries, newest first, committed in `[since, before)`: the
    /// `page`th `per_page` of them, and how many match. Each entry's number is
    /// the etcd revision it was committed at.
    pub async fn audit(
        &self,
        since: Option<i64>,
        before: Option<i64>,
        (page, per_page): (usize, usize),
    ) -> anyhow::Result<(Vec<Entry>, usize)> {
        let prefix = self.key("audit", "");
        let r = self
            .etcd
            .retry(COMMIT_BUDGET, |c| {
                let options = GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Key, SortOrder::Descend)
                    .with_serializable();
                let prefix = prefix.clone();
                async move {
                    c.kv_client()
                        .max_decoding_message_size(256 << 20)
                        .get(prefix, Some(options))
                        .await
                }
            })
            .await
            .context("etcd did not answer")?;
        let skip = (page - 1).saturating_mul(per_page);
        let (mut out, mut total) = (Vec::new(), 0);
        for kv in r.kvs() {
            let mut entry: Entry = serde_json::from_slice(kv.value()).with_context(|| {
                format!("the audit record {:?}", String::from_utf8_lossy(kv.key()))
            })?;
            entry.seq = u64::try_from(kv.mod_revision()).unwrap_or(0);
            if since.is_some_and(|s| entry.at < s) || before.is_some_and(|b| entry.at >= b) {
                continue;
            }
            if total >= skip && out.len() < per_page {
                out.push(entry);
            }
            total += 1;
        }
        Ok((out, total))
    }

    /// The newest configuration revision in etcd (what nodes' lag is counted from).
    pub async fn head(&self) -> Result<i64, etcd_client::Error> {
        let prefix = self.config_prefix();
        let r = self
            .etcd
            .retry(etcd::CALL_TIMEOUT * 2, |mut c| {
                let options = GetOptions::new()
                    .with_prefix()
                    .with_sort(SortTarget::Mod, SortOrder::Descend)
                    .with_limit(1)
                    .with_keys_only()
                    .with_serializable();
                let prefix = prefix.clone();
                async move { c.get(prefix, Some(options)).await }
            })
            .await?;
        Ok(r.kvs().first().map_or(0, |kv| kv.mod_revision()))
    }
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// What this node has installed and whether it follows etcd now.
pub struct Progress {
    applied: tokio::sync::watch::Sender<i64>,
    stale_since: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    leader: AtomicBool,
    revision_gauge: IntGauge,
    stale_gauge: Gauge,
    /// Watches re-established after a failure.
    pub reconnects: IntCounter,
    /// Revisions refused.
    pub refused: IntCounter,
}

/// A node's report, as published under its key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's name.
    pub node: String,
    /// The revision it has installed.
    pub revision: i64,
    /// Why it refused the last revision it refused, if it is still behind.
    pub error: Option<String>,
    /// Whether it lost etcd (serving its last configuration).
    pub stale: bool,
    /// Whether it does the fleet's periodic work.
    pub leader: bool,
    /// When its report last changed (RFC 3339); the lease keeps it meanwhile.
    pub updated_on: String,
}

impl Progress {
    fn new(registry: &Registry) -> anyhow::Result<Progress> {
        let revision_gauge = IntGauge::new(
            "gateway_config_revision",
            "The etcd revision of the configuration this node has installed.",
        )?;
        let stale_gauge = Gauge::new(
            "gateway_config_stale_seconds",
            "How long this node has been serving its last configuration without etcd (0: following).",
        )?;
        let reconnects = IntCounter::new(
            "gateway_config_watch_reconnects_total",
            "Times the watch on etcd was lost and made again.",
        )?;
        let refused = IntCounter::new(
            "gateway_config_refused_total",
            "Configuration revisions this node refused (it kept the last good one).",
        )?;
        for c in [
            Box::new(revision_gauge.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(stale_gauge.clone()),
            Box::new(reconnects.clone()),
            Box::new(refused.clone()),
        ] {
            registry.register(c)?;
        }
        Ok(Progress {
            applied: tokio::sync::watch::Sender::new(0),
            stale_since: Mutex::new(None),
            last_error: Mutex::new(None),
            leader: AtomicBool::new(false),
            revision_gauge,
            stale_gauge,
            reconnects,
            refused,
        })
    }

    /// The revision installed.
    pub fn applied(&self) -> i64 {
        *self.applied.borrow()
    }

    /// Records the revision installed (it clears a refusal's error).
    pub fn set_applied(&self, revision: i64) {
        self.applied.send_replace(revision);
        self.revision_gauge.set(revision);
        *lock(&self.last_error) = None;
    }

    /// Waits until `revision` is installed, up to `wait`; whether it is.
    pub async fn wait_applied(&self, revision: i64, wait: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(wait, rx.wait_for(|r| *r >= revision))
            .await
            .is_ok()
    }

    /// A receiver that sees each installed revision.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<i64> {
        self.applied.subscribe()
    }

    /// Records a refused revision.
    pub fn refuse(&self, revision: i64, why: String) {
        log::error!(
            "configuration revision {revision} refused, keeping revision {}: {why}",
            self.applied()
        );
        self.refused.inc();
        *lock(&self.last_error) = Some(format!("revision {revision} refused: {why}"));
        self.applied.send_modify(|_| {});
    }

    /// Why the last revision was refused, while this node is behind it.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    /// Marks this node as following etcd, or not.
    pub fn set_stale(&self, stale: bool) {
        let mut since = lock(&self.stale_since);
        match (stale, since.is_some()) {
            (true, false) => *since = Some(Instant::now()),
            (false, true) => *since = None,
            _ => {}
        }
        drop(since);
        self.update_gauges();
    }

    /// Since when this node has served without etcd, if it does.
    pub fn stale_for(&self) -> Option<Duration> {
        lock(&self.stale_since).map(|t| t.elapsed())
    }

    /// Brings the stale gauge up to date (called every second).
    pub fn update_gauges(&self) {
        self.stale_gauge
            .set(self.stale_for().map_or(0.0, |d| d.as_secs_f64()));
    }

    /// Whether this node holds the leader key.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    fn set_leader(&self, leader: bool) {
        if self.leader.swap(leader, Ordering::Relaxed) != leader {
            log::info!(
                "this node {} the fleet's periodic work",
                if leader { "now does" } else { "no longer does" }
            );
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
