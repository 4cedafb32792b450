//! Following etcd: watch the configuration from the revision after the one
//! installed, and install each revision whole; read everything again only when
//! the watch fell behind compaction. The revision only ever advances from
//! what the watch (or a whole read) delivered.

use std::{collections::BTreeMap, future::Future, sync::Arc};

use etcd_client::{EventType, WatchOptions};

use super::{Fleet, etcd::Backoff, rows};
use crate::control::model::State;

/// The largest watch message taken (etcd batches a catching-up watch).
const WATCH_MESSAGE_BYTES: usize = 512 << 20;

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
    broken: BTreeMap<String, String>,
    /// The last revision looked at (installed or refused).
    seen: i64,
}

/// Why a watch ended.
enum Ended {
    /// Compacted past `seen`: read everything again.
    Compacted,
    /// The connection or the member failed.
    Lost(String),
}

impl Follower {
    /// Starts from the state installed at `revision`.
    pub fn new(state: State, revision: i64) -> Follower {
        Follower {
            desired: state,
            broken: BTreeMap::new(),
            seen: revision,
        }
    }

    /// Follows etcd forever.
    pub async fn run<I: Installer>(mut self, fleet: Arc<Fleet>, installer: Arc<I>) {
        let mut backoff = Backoff::new();
        let mut reread = false;
        loop {
            if reread {
                match self.read_all(&fleet, &*installer).await {
                    Ok(()) => reread = false,
                    Err(e) => log::warn!("etcd: reading the configuration: {e}"),
                }
            }
            if !reread {
                match self.watch(&fleet, &*installer, &mut backoff).await {
                    Ended::Compacted => {
                        log::warn!(
                            "etcd compacted past revision {}: reading the configuration again",
                            self.seen
                        );
                        reread = true;
                        continue;
                    }
                    Ended::Lost(why) => {
                        log::warn!(
                            "etcd watch lost ({why}); serving revision {} meanwhile",
                            fleet.progress.applied()
                        );
                    }
                }
            }
            fleet.progress.set_stale(true);
            fleet.etcd.fail_over().await;
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
        let client = match fleet.etcd.client().await {
            Ok(c) => c,
            Err(e) => return Ended::Lost(e.to_string()),
        };
        // A watch catching up sends up to a thousand revisions per message.
        let mut watch = client
            .watch_client()
            .max_decoding_message_size(WATCH_MESSAGE_BYTES);
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.seen + 1)
            .with_progress_notify();
        let mut stream = match watch.watch(prefix.as_str(), Some(options)).await {
            Ok(w) => w,
            Err(e) => return Ended::Lost(e.to_string()),
        };
        loop {
            let message = match stream.message().await {
                Ok(Some(m)) => m,
                Ok(None) => return Ended::Lost("the stream ended".into()),
                Err(e) => return Ended::Lost(e.to_string()),
            };
            if message.canceled() {
                if message.compact_revision() > 0 {
                    return Ended::Compacted;
                }
                return Ended::Lost(format!("cancelled: {}", message.cancel_reason()));
            }
            if message.created() {
                if fleet.progress.stale_for().is_some() {
                    fleet.progress.reconnects.inc();
                    log::info!("etcd watch resumed from revision {}", self.seen + 1);
                }
                fleet.progress.set_stale(false);
                *backoff = Backoff::new();
            }
            // A transaction's events share a revision and come in one message.
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
                    let key =
                        String::from_utf8_lossy(&kv.key()[prefix.len().min(kv.key().len())..])
                            .into_owned();
                    let value = (event.event_type() == EventType::Put).then(|| kv.value());
                    self.take(&fleet.ring, key, value);
                }
                self.settle(fleet, installer, revision).await;
            }
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
        self.seen = revision;
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
        if let Err(e) = installer.install(self.desired.clone(), revision).await {
            fleet.progress.refuse(revision, format!("{e:#}"));
        }
    }

    /// Reads every row at one revision and installs the difference.
    async fn read_all<I: Installer>(&mut self, fleet: &Fleet, installer: &I) -> anyhow::Result<()> {
        let (rows, revision) = fleet.read_config().await?;
        let mut fresh = Follower::new(State::empty_tables(), revision);
        for (key, value) in rows {
            fresh.take(&fleet.ring, key, Some(&value));
        }
        anyhow::ensure!(
            !fresh.desired.meta.zone_id.is_empty(),
            "the prefix holds no configuration (its settings rows are missing)"
        );
        *self = fresh;
        self.settle(fleet, installer, revision).await;
        Ok(())
    }
}

/// Reads the configuration at one revision, for a start: the state (none: the
/// prefix is empty) and its revision.
pub async fn load(fleet: &Fleet) -> anyhow::Result<(Option<State>, i64)> {
    let (rows, revision) = fleet.read_config().await?;
    let state = rows::state_of(
        rows.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
        &fleet.ring,
    )?;
    Ok((state, revision))
}
