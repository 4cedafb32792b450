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
    time::{Duration, Instant},
};

use anyhow::Context;
use etcd_client::{Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp};
use prometheus::Registry;

pub use self::progress::{NodeStatus, Progress};
use self::{
    etcd::{Etcd, EtcdOptions},
    rows::{GUARD, RowChange},
    seal::Keyring,
};
use crate::control::{audit::Entry, model::State};

mod backend;
pub use backend::{FleetBackend, OpenedFleet, open_fleet};
pub mod etcd;
pub mod nodes;
mod progress;
pub mod rows;
pub mod seal;
pub mod sync;

/// etcd refuses transactions of more operations than this (`--max-txn-ops`).
const MAX_TXN_OPS: usize = 128;
/// How long a node may have lost etcd before it refuses changes at once (a
/// watch moving to another member takes well under this).
pub const STALE_REFUSES_WRITES: Duration = Duration::from_secs(3);
/// How long a change may wait for etcd to confirm it.
const COMMIT_BUDGET: Duration = Duration::from_secs(10);
/// The most record bytes one change may carry (etcd's `--max-request-bytes`
/// is 1.5 MiB by default, and the transaction adds its keys and framing).
const MAX_TXN_BYTES: usize = 1400 << 10;
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
    /// The revision the watch starts after (set when the node opens).
    watch_from: std::sync::atomic::AtomicI64,
}

/// The revisions a whole read gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revisions {
    /// The revision it was read at: a watch goes on from the next.
    pub read: i64,
    /// The configuration's own revision: its newest row's (every change
    /// writes the guard row), what the node reports and changes compare with.
    pub config: i64,
}

/// The answer to a change whose commit etcd could not confirm or deny.
fn unknown_outcome() -> CommitError {
    CommitError::Unavailable(
        "etcd lost its answer to this change and cannot tell yet whether it was made (no \
         quorum, or no member reachable): look for it (or in the audit log) before making it \
         again"
            .into(),
    )
}

/// The answer to a change that failed before its transaction was sent to etcd
/// (no connection, or the read before it failed): certainly not made.
fn not_made(e: &etcd_client::Error) -> CommitError {
    CommitError::Unavailable(format!(
        "etcd did not answer this node (no quorum, or no member reachable: {e}); the change \
         was not sent to etcd, so it has not been made: nothing was changed and nothing is \
         queued; retry it when etcd is back"
    ))
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
        let name_ok = (1..=64).contains(&options.node.len())
            && options
                .node
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        anyhow::ensure!(
            name_ok,
            "--node-name {:?}: a node name is 1 to 64 letters, digits, - _ or .",
            options.node
        );
        Ok(Fleet {
            etcd: Etcd::new(options.etcd)?,
            prefix,
            ring: Keyring::load(&options.master_key)?,
            node: options.node,
            progress: Progress::new(registry)?,
            watch_from: Default::default(),
        })
    }

    /// The revision the watch starts after: the one the configuration was read
    /// at, or the local copy's when the node started without etcd.
    pub fn watch_from(&self) -> i64 {
        self.watch_from.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sets [`Fleet::watch_from`].
    pub fn set_watch_from(&self, revision: i64) {
        self.watch_from
            .store(revision, std::sync::atomic::Ordering::Relaxed);
    }

    /// The prefix every configuration row is under.
    pub fn config_prefix(&self) -> String {
        format!("{}/config/", self.prefix)
    }

    fn key(&self, area: &str, rest: &str) -> String {
        format!("{}/{area}/{rest}", self.prefix)
    }

    /// Every configuration row (keys relative to the configuration prefix),
    /// read in pages at one revision, and its revisions.
    pub async fn read_config(
        &self,
    ) -> Result<(Vec<(String, Vec<u8>)>, Revisions), etcd_client::Error> {
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
                _ => {
                    let revisions = Revisions {
                        read: revision,
                        config: newest,
                    };
                    return Ok((rows, revisions));
                }
            }
        }
    }

    /// Writes a first configuration unless the prefix has one already;
    /// whether this node wrote it. The guard row carries a nonce of this
    /// call, so an attempt whose answer was lost is recognised as this node's.
    pub async fn create(&self, state: &State) -> anyhow::Result<bool> {
        let rows = rows::changes(None, state, &self.ring)?;
        let meta = self.key("config", "settings/meta");
        let guard = self.key("config", GUARD);
        let nonce = crate::pki::random_id();
        let mut ops: Vec<TxnOp> = rows
            .into_iter()
            .filter_map(|(k, v)| Some(TxnOp::put(self.key("config", &k), v?, None)))
            .collect();
        ops.push(TxnOp::put(guard.clone(), self.guard_value(&nonce), None));
        let txn = Txn::new()
            .when([Compare::create_revision(meta, CompareOp::Equal, 0)])
            .and_then(ops)
            .or_else([TxnOp::get(guard, None)]);
        let response = self
            .etcd
            .retry(COMMIT_BUDGET, |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await
            .context("etcd did not write the first configuration")?;
        let ours = response.op_responses().iter().any(|op| match op {
            etcd_client::TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .is_some_and(|kv| String::from_utf8_lossy(kv.value()).contains(&nonce)),
            _ => false,
        });
        Ok(response.succeeded() || ours)
    }

    fn guard_value(&self, change: &str) -> String {
        serde_json::json!({"node": self.node, "change": change, "at": crate::clock::now()})
            .to_string()
    }

    /// Commits `changes`, made on the state of revision `base`, with its audit
    /// entry, in one transaction; the revision it committed at. When etcd's
    /// answer is lost, the audit row (its key unique to this change) tells
    /// whether it committed; an outcome etcd cannot tell within the budget is
    /// answered as unknown, never as not made.
    pub async fn commit(
        &self,
        base: i64,
        changes: Vec<RowChange>,
        entry: &Entry,
    ) -> Result<i64, CommitError> {
        let (txn, audit_key) = self.change_txn(base, changes, entry)?;
        let deadline = Instant::now() + COMMIT_BUDGET;
        let mut backoff = etcd::Backoff::new();
        // Whether the transaction was ever handed to etcd: until it is, a
        // failure is certain to have changed nothing.
        let mut sent = false;
        loop {
            let generation = self.etcd.generation();
            match self.attempt(txn.clone(), &mut sent).await {
                Ok(r) if r.succeeded() => return Ok(r.header().map_or(0, |h| h.revision())),
                Ok(_) => {
                    return match self.outcome(&audit_key, deadline).await {
                        Some(Some(revision)) => Ok(revision),
                        Some(None) => Err(CommitError::Conflict(format!(
                            "the configuration changed on another node after revision {base}, \
                             which this change was made on; nothing was written: retry it"
                        ))),
                        None => Err(unknown_outcome()),
                    };
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
                    self.etcd.fail_over(generation).await;
                    // A node that lost etcd for this long refuses changes at
                    // once; one never sent need not wait out the budget.
                    let lost = self
                        .progress
                        .stale_for()
                        .is_some_and(|s| s >= STALE_REFUSES_WRITES);
                    if !sent && (lost || Instant::now() + backoff.peek() >= deadline) {
                        return Err(not_made(&e));
                    }
                    if Instant::now() + backoff.peek() < deadline {
                        tokio::select! {
                            () = backoff.wait() => {}
                            () = self.lost_etcd(), if !sent => return Err(not_made(&e)),
                        }
                        if sent && let Ok(Some(revision)) = self.committed(&audit_key).await {
                            return Ok(revision);
                        }
                        continue;
                    }
                    return match self
                        .outcome(&audit_key, deadline + etcd::CALL_TIMEOUT)
                        .await
                    {
                        Some(Some(revision)) => Ok(revision),
                        Some(None) => Err(CommitError::Unavailable(format!(
                            "etcd did not confirm the change within {} s (no quorum, or no \
                             member reachable: {e}); it has not been made, and nothing is \
                             queued: retry it when etcd is back",
                            COMMIT_BUDGET.as_secs()
                        ))),
                        None => Err(unknown_outcome()),
                    };
                }
            }
        }
    }

    /// The transaction of a change, and its audit row's key.
    fn change_txn(
        &self,
        base: i64,
        changes: Vec<RowChange>,
        entry: &Entry,
    ) -> Result<(Txn, String), CommitError> {
        if changes.len() + 2 > MAX_TXN_OPS {
            return Err(CommitError::Refused(format!(
                "a change may touch at most {} records in fleet mode; this one touches {}",
                MAX_TXN_OPS - 2,
                changes.len()
            )));
        }
        let bytes: usize = changes
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum();
        if bytes > MAX_TXN_BYTES {
            return Err(CommitError::Refused(format!(
                "this change is {} KiB of records; etcd takes at most {} KiB in one request \
                 (--max-request-bytes): make it in smaller parts",
                bytes >> 10,
                MAX_TXN_BYTES >> 10
            )));
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let change = format!("{nanos:024}-{}", self.node);
        let audit_key = self.key("audit", &change);
        let audit = serde_json::to_vec(entry).map_err(|e| CommitError::Refused(e.to_string()))?;
        let mut ops: Vec<TxnOp> = changes
            .into_iter()
            .map(|(k, v)| match v {
                Some(v) => TxnOp::put(self.key("config", &k), v, None),
                None => TxnOp::delete(self.key("config", &k), None),
            })
            .collect();
        ops.push(TxnOp::put(
            self.key("config", GUARD),
            self.guard_value(&change),
            None,
        ));
        ops.push(TxnOp::put(audit_key.clone(), audit, None));
        let guard = Compare::mod_revision(self.key("config", GUARD), CompareOp::Less, base + 1);
        Ok((Txn::new().when([guard]).and_then(ops), audit_key))
    }

    /// One attempt at a change's transaction. A linearizable read goes
    /// first: it needs a leader heard by a quorum, so the change is not handed
    /// to a leader that lost its quorum (which would keep it, and commit it
    /// after this node answered 503). `sent` is set once the transaction itself is handed to etcd.
    async fn attempt(
        &self,
        txn: Txn,
        sent: &mut bool,
    ) -> Result<etcd_client::TxnResponse, etcd_client::Error> {
        let guard = self.key("config", GUARD);
        let read = async {
            let mut c = self.etcd.client().await?;
            tokio::time::timeout(etcd::CALL_TIMEOUT, c.get(guard, None))
                .await
                .unwrap_or_else(|_| etcd::timed_out())?;
            Ok::<_, etcd_client::Error>(c)
        };
        // Nothing is sent yet: a node that loses etcd meanwhile stops waiting.
        let mut c = tokio::select! {
            c = read => c?,
            () = self.lost_etcd() => {
                return Err(etcd_client::Error::EndpointError(format!(
                    "this node has not heard from etcd for {} s",
                    STALE_REFUSES_WRITES.as_secs()
                )));
            }
        };
        *sent = true;
        tokio::time::timeout(etcd::CALL_TIMEOUT, c.txn(txn))
            .await
            .unwrap_or_else(|_| etcd::timed_out())
    }

    /// Resolves once this node has not heard from etcd for [`STALE_REFUSES_WRITES`].
    async fn lost_etcd(&self) {
        while self
            .progress
            .stale_for()
            .is_none_or(|s| s < STALE_REFUSES_WRITES)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The revision an audit row was committed at, if it was.
    async fn committed(&self, audit_key: &str) -> Result<Option<i64>, etcd_client::Error> {
        let mut c = self.etcd.client().await?;
        let r = tokio::time::timeout(etcd::CALL_TIMEOUT, c.get(audit_key, None))
            .await
            .unwrap_or_else(|_| etcd::timed_out())?;
        Ok(r.kvs().first().map(|kv| kv.mod_revision()))
    }

    /// Whether a change committed (its revision) or not, asking until
    /// `deadline`; none when etcd could not tell.
    async fn outcome(&self, audit_key: &str, deadline: Instant) -> Option<Option<i64>> {
        let mut backoff = etcd::Backoff::new();
        loop {
            let generation = self.etcd.generation();
            match self.committed(audit_key).await {
                Ok(found) => return Some(found),
                Err(e) => {
                    self.etcd.failed(&e);
                    self.etcd.fail_over(generation).await;
                }
            }
            if Instant::now() + backoff.peek() >= deadline {
                return None;
            }
            backoff.wait().await;
        }
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
        let entries = r.kvs().iter().map(|kv| {
            let mut entry: Entry = serde_json::from_slice(kv.value()).with_context(|| {
                format!("the audit record {:?}", String::from_utf8_lossy(kv.key()))
            })?;
            entry.seq = u64::try_from(kv.mod_revision()).unwrap_or(0);
            Ok(entry)
        });
        crate::control::audit::page_of(entries, since, before, (page, per_page))
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
