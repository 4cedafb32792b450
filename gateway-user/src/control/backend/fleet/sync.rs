//! Following etcd: watch the configuration from the revision after the last
//! one seen, and install each revision whole; read everything again only when
//! the watch fell behind compaction or keeps failing. The revision seen only
//! ever advances from what the watch (events, progress notices) or a whole
//! read delivered.

use std::{collections::BTreeMap, future::Future, sync::Arc};

use etcd_client::{EventType, WatchOptions, WatchResponse};

use super::{Fleet, Revisions, etcd::Backoff, rows};
use crate::control::model::State;

/// The largest watch message taken (etcd batches a catching-up watch).
const WATCH_MESSAGE_BYTES: usize = 512 << 20;
/// Watches lost in a row, with nothing delivered, before everything is read
/// again (a watch that cannot catch up, e.g. a message over the limit).
const LOST_BEFORE_REREAD: u32 = 3;

/// What the node puts in force: the control plane.
pub trait Installer: Send + Sync + 'static {
    /// Compiles `state` (the configuration at `revision`) and puts it in force
    /// in both layers, or refuses it and changes nothing.
    fn install(
        &self,
        state: State,
        revision: i64,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// The configuration as etcd has it, which may be ahead of what is installed:
/// rows that do not decode are kept aside (and the revision refused) until a
/// later revision mends or removes them.
pub struct Follower {
    desired: State,
    /// The state last installed: what a refused revision's rows are told from.
    installed: State,
    broken: BTreeMap<String, String>,
    /// The revision the watch has delivered everything up to.
    seen: i64,
}

/// Why a watch ended.
enum Ended {
    /// Compacted past `seen`: read everything again.
    Compacted,
    /// The connection or the member failed.
    Lost {
        why: String,
        /// Whether anything came first.
        delivered: bool,
        /// The connection it was on.
        generation: usize,
    },
}

impl Follower {
    /// Starts from the state installed, everything up to revision `seen` known.
    pub fn new(state: State, seen: i64) -> Follower {
        Follower {
            installed: state.clone(),
            desired: state,
            broken: BTreeMap::new(),
            seen,
        }
    }

    /// Follows etcd forever.
    pub async fn run<I: Installer>(mut self, fleet: Arc<Fleet>, installer: Arc<I>) {
        let mut backoff = Backoff::new();
        let (mut reread, mut lost) = (false, 0);
        loop {
            let generation = fleet.etcd.generation();
            if reread {
                match self.read_all(&fleet, &*installer).await {
                    Ok(()) => {
                        (reread, lost) = (false, 0);
                        continue;
                    }
                    Err(e) => log::warn!("etcd: reading the configuration: {e:#}"),
                }
            } else {
                match self.watch(&fleet, &*installer, &mut backoff).await {
                    Ended::Compacted => {
                        log::warn!(
                            "etcd compacted past revision {}: reading the configuration again",
                            self.seen
                        );
                        reread = true;
                        backoff.wait().await;
                        continue;
                    }
                    Ended::Lost {
                        why,
                        delivered,
                        generation: on,
                    } => {
                        lost = if delivered { 1 } else { lost + 1 };
                        reread = lost >= LOST_BEFORE_REREAD;
                        log::warn!(
                            "etcd watch lost ({why}); serving revision {} meanwhile",
                            fleet.progress.applied()
                        );
                        fleet.progress.set_stale(true);
                        fleet.etcd.fail_over(on).await;
                        backoff.wait().await;
                        continue;
                    }
                }
            }
            fleet.progress.set_stale(true);
            fleet.etcd.fail_over(generation).await;
            backoff.wait().await;
        }
    }

    /// Watches from `seen + 1` until the watch ends.
    async fn watch<I: Installer>(
        &mut self,
        fleet: &Fleet,
        installer: &I,
        backoff: &mut Backoff,
    ) -> Ended {
        let prefix = fleet.config_prefix();
        let generation = fleet.etcd.generation();
        let lost = |why: String, delivered: bool| Ended::Lost {
            why,
            delivered,
            generation,
        };
        let client = match fleet.etcd.client().await {
            Ok(c) => c,
            Err(e) => return lost(e.to_string(), false),
        };
        // A watch catching up sends up to a thousand revisions per message.
        let mut watch = client
            .watch_client()
            .max_decoding_message_size(WATCH_MESSAGE_BYTES);
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.seen + 1)
            .with_progress_notify();
        let created = tokio::time::timeout(
            super::etcd::CALL_TIMEOUT,
            watch.watch(prefix.as_str(), Some(options)),
        );
        let mut stream = match created.await {
            Ok(Ok(w)) => w,
            Ok(Err(e)) => return lost(e.to_string(), false),
            Err(_) => return lost("no answer to the watch".into(), false),
        };
        let mut delivered = false;
        loop {
            let message = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => return lost("the stream ended".into(), delivered),
                Err(e) => return lost(e.to_string(), delivered),
            };
            if message.canceled() {
                if message.compact_revision() > 0 {
                    return Ended::Compacted;
                }
                return lost(format!("cancelled: {}", message.cancel_reason()), delivered);
            }
            if message.created() {
                // A member without a leader creates watches too (and cancels
                // them seconds later): a stale node is back only once a read
                // that needs etcd's quorum answers.
                if fleet.progress.stale_for().is_some()
                    && let Err(e) = quorum_read(fleet).await
                {
                    return lost(format!("no quorum behind the watch: {e}"), false);
                }
                if fleet.progress.stale_for().is_some() {
                    fleet.progress.reconnects.inc();
                    log::info!("etcd watch resumed from revision {}", self.seen + 1);
                }
                fleet.progress.set_stale(false);
                continue;
            }
            self.deliver(fleet, installer, &prefix, &message).await;
            delivered = true;
            *backoff = Backoff::new();
        }
    }

    /// Takes a watch message: each revision's events applied and settled
    /// together (a transaction's events share a revision and come in one
    /// message); a progress notice moves `seen` on.
    async fn deliver<I: Installer>(
        &mut self,
        fleet: &Fleet,
        installer: &I,
        prefix: &str,
        message: &WatchResponse,
    ) {
        if message.events().is_empty() {
            if let Some(h) = message.header() {
                self.seen = self.seen.max(h.revision());
            }
            return;
        }
        let mut events = message.events().iter().peekable();
        while let Some(first) = events.next() {
            let Some(revision) = first.kv().map(|kv| kv.mod_revision()) else {
                continue;
            };
            let mut batch = vec![first];
            while let Some(next) =
                events.next_if(|e| e.kv().is_some_and(|kv| kv.mod_revision() == revision))
            {
                batch.push(next);
            }
            for event in batch {
                let Some(kv) = event.kv() else { continue };
                let key = kv.key().get(prefix.len()..).unwrap_or_default();
                let value = (event.event_type() == EventType::Put).then(|| kv.value());
                self.take(
                    &fleet.ring,
                    String::from_utf8_lossy(key).into_owned(),
                    value,
                );
            }
            self.seen = revision;
            self.settle(fleet, installer, revision).await;
        }
    }

    /// Applies one row to the desired state, or keeps it aside if it is broken.
    fn take(&mut self, ring: &super::Keyring, key: String, value: Option<&[u8]>) {
        let mut next = self.desired.clone();
        match rows::apply(&mut next, &key, value, ring) {
            Ok(()) => {
                self.desired = next;
                self.broken.remove(&key);
            }
            Err(e) => {
                self.broken.insert(key, format!("{e:#}"));
            }
        }
    }

    /// Installs the desired state as `revision`, unless a row is broken or
    /// it does not compile: then the revision is refused and reported.
    async fn settle<I: Installer>(&mut self, fleet: &Fleet, installer: &I, revision: i64) {
        if let Some((key, why)) = self.broken.iter().next() {
            let more = match self.broken.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            };
            fleet.progress.refuse(
                revision,
                format!("{why}{more}; the row {key:?} must be mended or removed"),
            );
            return;
        }
        match installer.install(self.desired.clone(), revision).await {
            Ok(()) => self.installed = self.desired.clone(),
            Err(e) => {
                let rows = rows::changes(Some(&self.installed), &self.desired, &fleet.ring)
                    .map(|changed| {
                        let keys: Vec<String> =
                            changed.into_iter().map(|(k, _)| format!("{k:?}")).collect();
                        keys.join(", ")
                    })
                    .unwrap_or_else(|e| format!("unknown ({e:#})"));
                fleet.progress.refuse(
                    revision,
                    format!(
                        "it does not compile: {e:#}; the rows it changes since revision {} \
                         ({rows}) must be mended or removed",
                        fleet.progress.applied()
                    ),
                );
            }
        }
    }

    /// Reads every row at one revision and installs the difference; the
    /// watch goes on from the revision read at.
    async fn read_all<I: Installer>(&mut self, fleet: &Fleet, installer: &I) -> anyhow::Result<()> {
        let (rows, revisions) = fleet.read_config().await?;
        let mut fresh = Follower::new(State::empty_tables(), revisions.read);
        for (key, value) in rows {
            fresh.take(&fleet.ring, key, Some(&value));
        }
        anyhow::ensure!(
            !fresh.desired.meta.zone_id.is_empty(),
            "the prefix holds no configuration (its settings rows are missing)"
        );
        fresh.installed = std::mem::replace(&mut self.installed, State::empty_tables());
        *self = fresh;
        fleet.progress.set_stale(false);
        // The newest row's revision misses a row deleted since (by hand:
        // changes through the API write the guard row), which a node that
        // watched it has installed: the revision never goes back.
        let revision = revisions.config.max(fleet.progress.applied());
        self.settle(fleet, installer, revision).await;
        Ok(())
    }
}

/// A linearizable read of the guard row: it answers only while etcd has a
/// leader heard by a quorum.
async fn quorum_read(fleet: &Fleet) -> Result<(), etcd_client::Error> {
    let mut c = fleet.etcd.client().await?;
    let guard = fleet.key("config", rows::GUARD);
    tokio::time::timeout(super::etcd::CALL_TIMEOUT, c.get(guard, None))
        .await
        .unwrap_or_else(|_| super::etcd::timed_out())?;
    Ok(())
}

/// Reads the configuration at one revision, for a start: the state (none: the
/// prefix is empty) and its revisions.
pub async fn load(fleet: &Fleet) -> anyhow::Result<(Option<State>, Revisions)> {
    let (rows, revisions) = fleet.read_config().await?;
    let state = rows::state_of(
        rows.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
        &fleet.ring,
    )?;
    Ok((state, revisions))
}
