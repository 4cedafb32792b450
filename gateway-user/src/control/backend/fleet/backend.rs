//! The fleet backend: opening from etcd (or from the local copy when etcd
//! cannot be reached), changes committed to etcd, the compiled form of this
//! node's own change kept for the revision its watch brings back, and the
//! local copy of each installed revision.

use std::{path::Path, sync::Arc, time::Duration};

use log::{info, warn};

use super::{CommitError, Fleet, NodeStatus, Revisions, STALE_REFUSES_WRITES, nodes, rows, sync};
use crate::{
    compiled::Compiled,
    control::{ControlError, audit, backend::store::Store, model::State},
    layers::blocking,
};

/// How long a start waits for etcd before it serves the local copy.
const START_WAIT: Duration = Duration::from_secs(5);
/// How long a change waits to be installed here after etcd committed it.
const INSTALL_WAIT: Duration = Duration::from_secs(3);

/// The control plane's side of a fleet: etcd, and the local copy.
pub struct FleetBackend {
    /// The fleet's etcd and this node's progress.
    pub fleet: Arc<Fleet>,
    /// The local copy of the installed configuration.
    store: Store,
    /// Serializes this node's writers (the state lock is the installer's).
    pub writer: tokio::sync::Mutex<()>,
    /// What the local copy holds (behind the state after a failed write).
    copied: std::sync::Mutex<State>,
    /// This node's change in flight, compiled once: its watch installs it
    /// without compiling it again.
    prepared: Prepared,
}

/// The change this node compiled before committing it to etcd, if any.
#[derive(Default)]
struct Prepared(std::sync::Mutex<Option<PreparedChange>>);

/// A change this node compiled before committing it to etcd.
struct PreparedChange {
    /// How many changes were installed when it was compiled: it applies on
    /// top of that one only.
    installed: u64,
    /// The state it is the compiled form of.
    state: State,
    compiled: Compiled,
}

/// What opening a fleet node found.
pub struct OpenedFleet {
    /// The backend.
    pub backend: FleetBackend,
    /// The configuration it serves.
    pub state: State,
    /// The admin token, when this node just wrote the first configuration.
    pub new_token: Option<String>,
}

/// Opens a fleet node: the configuration from etcd (written there first if
/// the prefix is new, as `first` makes it: the state and its admin token),
/// or the local copy in `dir` when etcd cannot be reached.
pub async fn open_fleet(
    dir: &Path,
    first: impl FnOnce() -> anyhow::Result<(State, String)>,
    fleet: Fleet,
) -> anyhow::Result<OpenedFleet> {
    let fleet = Arc::new(fleet);
    let (store, copy) = Store::open_fleet_copy(dir)?;
    let mut new_token = None;
    let mut loaded = load_within(&fleet).await;
    if let Ok((None, _)) = loaded {
        // A new prefix: the first configuration, written once by whichever
        // node gets there first (not cut short, so a token is never lost).
        let (first, token) = first()?;
        if fleet.create(&first).await? {
            info!(
                "created the fleet's configuration under {}",
                fleet.config_prefix()
            );
            new_token = Some(token);
        }
        loaded = load_within(&fleet).await;
    }
    let (state, revision, seen) = match (loaded, copy) {
        (Ok((Some(state), revisions)), copy) => {
            store.commit_revision(copy.as_ref().map(|c| &c.0), &state, revisions.config)?;
            (state, revisions.config, Some(revisions.read))
        }
        (Ok((None, _)), _) => anyhow::bail!(
            "the prefix {} is still empty after writing it",
            fleet.config_prefix()
        ),
        (Err(e), Some((state, revision))) => {
            warn!(
                "etcd ({}): {e:#}; serving the local copy of revision {revision} read-only until \
                 it answers",
                fleet.etcd.endpoint()
            );
            (state, revision, None)
        }
        (Err(e), None) => anyhow::bail!(
            "etcd ({}): {e:#}; and {} has no local copy of the fleet's configuration, so there \
             is nothing to serve: a node's first start needs etcd",
            fleet.etcd.endpoint(),
            dir.display()
        ),
    };
    fleet.progress.set_applied(revision);
    fleet.progress.set_stale(seen.is_none());
    fleet.set_watch_from(seen.unwrap_or(revision));
    info!(
        "fleet node {}: configuration revision {revision}",
        fleet.node
    );
    Ok(OpenedFleet {
        backend: FleetBackend {
            fleet,
            store,
            writer: Default::default(),
            copied: std::sync::Mutex::new(state.clone()),
            prepared: Default::default(),
        },
        state,
        new_token,
    })
}

/// The configuration read at start, if etcd answers within [`START_WAIT`].
async fn load_within(fleet: &Fleet) -> anyhow::Result<(Option<State>, Revisions)> {
    match tokio::time::timeout(START_WAIT, sync::load(fleet)).await {
        Ok(loaded) => loaded,
        Err(_) => Err(anyhow::anyhow!(
            "no answer within {} s (last error: {})",
            START_WAIT.as_secs(),
            fleet
                .etcd
                .last_error()
                .as_deref()
                .unwrap_or("none: the calls hung")
        )),
    }
}

impl FleetBackend {
    /// The local copy.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Refuses writes once etcd has not answered for a while.
    pub fn check_writable(&self) -> Result<(), ControlError> {
        let progress = &self.fleet.progress;
        match progress.stale_for().filter(|s| *s >= STALE_REFUSES_WRITES) {
            Some(stale) => Err(ControlError::Unavailable(format!(
                "etcd has not answered this node for {} s: it serves revision {} read-only \
                 until etcd is back; nothing was changed",
                stale.as_secs(),
                progress.applied()
            ))),
            None => Ok(()),
        }
    }

    /// Refuses writes while this node's revision is behind etcd's: a change
    /// made on it would only lose the race again.
    pub fn check_current(&self) -> Result<(), ControlError> {
        match self.fleet.progress.last_error() {
            Some(why) => Err(ControlError::Unavailable(format!(
                "this node is behind etcd ({why}); it takes changes again once it installs a \
                 later revision"
            ))),
            None => Ok(()),
        }
    }

    /// The revision installed here.
    pub fn applied(&self) -> i64 {
        self.fleet.progress.applied()
    }

    /// Keeps the compiled form of `state`, this node's change made on top of
    /// the `installed`th install, for when its watch brings it back.
    pub fn prepare(&self, installed: u64, state: State, compiled: Compiled) {
        self.prepared.keep(installed, state, compiled);
    }

    /// Drops a change's compiled form (it was installed, or not committed).
    pub fn forget_prepared(&self) {
        *self.prepared.lock() = None;
    }

    /// The compiled form of `state` this node prepared, if it is that state
    /// and nothing was installed since it was compiled.
    pub fn take_prepared(&self, state: &State, installed: u64) -> Option<Compiled> {
        self.prepared.take(state, installed)
    }

    /// Commits the change from `state` (installed as revision `base`) to
    /// `next` to etcd in one transaction guarded by `base`: the revision it
    /// committed at.
    pub async fn commit(
        &self,
        base: i64,
        state: &State,
        next: &State,
        entry: &audit::Entry,
    ) -> Result<i64, ControlError> {
        let rows = rows::changes(Some(state), next, &self.fleet.ring)?;
        self.fleet
            .commit(base, rows, entry)
            .await
            .map_err(|e| match e {
                CommitError::Conflict(m) => ControlError::Conflict(m),
                CommitError::Unavailable(m) => ControlError::Unavailable(m),
                CommitError::Refused(m) => ControlError::Invalid(m),
            })
    }

    /// Waits for another node's change (after revision `base`) to be installed here.
    pub async fn wait_after(&self, base: i64) {
        self.fleet
            .progress
            .wait_applied(base + 1, INSTALL_WAIT)
            .await;
    }

    /// Waits for a committed revision to be installed here (a warning if it
    /// is not, in time).
    pub async fn wait_installed(&self, revision: i64) {
        if !self
            .fleet
            .progress
            .wait_applied(revision, INSTALL_WAIT)
            .await
        {
            warn!(
                "revision {revision} is committed but not installed on this node yet (it is at \
                 {})",
                self.fleet.progress.applied()
            );
        }
    }

    /// Writes installed revision `revision`, `next`, to the local copy, as
    /// the difference from what it holds (which trails the state after a
    /// failed write).
    pub fn write_copy(&self, next: &State, revision: i64) {
        let mut copied = self.copied.lock().unwrap_or_else(|e| e.into_inner());
        match blocking(|| self.store.commit_revision(Some(&copied), next, revision)) {
            Ok(()) => *copied = next.clone(),
            Err(e) => warn!(
                "the local copy of revision {revision} was not written (it stays at an earlier \
                 one; the next install writes the difference): {e:#}"
            ),
        }
    }

    /// Every node's report, with the newest revision (how far each is behind).
    pub async fn nodes(&self) -> Result<(Vec<NodeStatus>, i64), ControlError> {
        let nodes = nodes::list(&self.fleet)
            .await
            .map_err(|e| ControlError::Unavailable(format!("{e:#}")))?;
        let head = self
            .fleet
            .head()
            .await
            .map_err(|e| ControlError::Unavailable(format!("etcd did not answer: {e}")))?;
        Ok((nodes, head))
    }
}

impl Prepared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<PreparedChange>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn keep(&self, installed: u64, state: State, compiled: Compiled) {
        *self.lock() = Some(PreparedChange {
            installed,
            state,
            compiled,
        });
    }

    fn take(&self, state: &State, installed: u64) -> Option<Compiled> {
        match self.lock().take() {
            Some(p) if p.installed == installed && p.state == *state => Some(p.compiled),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn a_prepared_change_is_taken_once_and_only_for_its_state_and_install() {
        let (state, _) = crate::control::first_state("localhost").unwrap();
        let mut next = state.clone();
        next.zone.min_tls_version = crate::tls_version::TlsVersion::Tls13;
        let compiled = Compiled::build(&next.to_config(&Config::default()), false).unwrap();
        let prepared = Prepared::default();
        prepared.keep(3, next.clone(), compiled.clone());
        assert!(prepared.take(&state, 3).is_none(), "another state");
        assert!(prepared.take(&next, 3).is_none(), "a miss drops it");
        prepared.keep(3, next.clone(), compiled.clone());
        assert!(
            prepared.take(&next, 4).is_none(),
            "something was installed since"
        );
        prepared.keep(3, next.clone(), compiled);
        let taken = prepared.take(&next, 3).expect("its own change");
        assert_eq!(
            taken.xdp.zone_min,
            crate::tls_version::TlsVersion::Tls13,
            "the prepared compile"
        );
        assert!(prepared.take(&next, 3).is_none(), "taken once");
    }
}
