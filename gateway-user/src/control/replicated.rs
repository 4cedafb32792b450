//! The control plane in fleet mode: opening from etcd (or from the local copy
//! when etcd cannot be reached), changes committed to etcd, and revisions
//! installed from its watch.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use http::StatusCode;
use log::{info, warn};

use super::{
    ControlPlane, Opened,
    api::ApiError,
    audit, blocking, first_state,
    fleet::{
        CommitError, Fleet, NodeStatus, Revisions, STALE_REFUSES_WRITES, nodes, rows,
        sync::{self, Follower, Installer},
    },
    lock,
    store::Store,
};
use crate::control::model::State;

/// How long a start waits for etcd before it serves the local copy.
const START_WAIT: Duration = Duration::from_secs(5);
/// How many times a change lost to another node's is made again.
const RACES_RETRIED: usize = 5;
/// How long a change waits to be installed here after etcd committed it.
const INSTALL_WAIT: Duration = Duration::from_secs(3);

/// Opens a fleet node: the configuration from etcd (written there first if
/// the prefix is new), or the local copy in `dir` when etcd cannot be reached.
pub async fn open_fleet(
    dir: &Path,
    default_hostname: &str,
    fleet: Fleet,
) -> anyhow::Result<Opened> {
    let fleet = Arc::new(fleet);
    let (store, copy) = Store::open_fleet_copy(dir)?;
    let mut new_token = None;
    let mut loaded = load_within(&fleet).await;
    if let Ok((None, _)) = loaded {
        // A new prefix: the first configuration, written once by whichever
        // node gets there first (not cut short, so a token is never lost).
        crate::config::validate_hostname(default_hostname).context("--default-hostname")?;
        let (first, token) = first_state(default_hostname)?;
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
    Ok(Opened {
        store,
        state,
        new_token,
        fleet: Some(fleet),
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

impl ControlPlane {
    /// In fleet mode, the fleet.
    pub fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.fleet.as_ref()
    }

    /// Starts following etcd, reporting this node and keeping its gauges:
    /// the tasks, none outside fleet mode.
    pub async fn follow(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let Some(fleet) = self.fleet.clone() else {
            return Vec::new();
        };
        let state = self.state.lock().await.clone();
        let follower = Follower::new(state, fleet.watch_from());
        vec![
            tokio::spawn(follower.run(fleet.clone(), self.clone())),
            tokio::spawn(nodes::report(fleet.clone())),
            tokio::spawn(nodes::tick_gauges(fleet)),
        ]
    }

    /// Whether this node does the periodic work: always on its own store, in
    /// a fleet only while it holds the leader key.
    pub fn does_periodic_work(&self) -> bool {
        self.fleet.as_ref().is_none_or(|f| f.progress.is_leader())
    }

    /// Every node's report, with how far each is behind the newest revision.
    pub async fn fleet_nodes(&self) -> Result<(Vec<NodeStatus>, i64), ApiError> {
        let fleet = self.fleet.as_ref().ok_or_else(|| {
            ApiError::invalid(
                "this gateway runs on its own store: fleet mode is `gateway run --etcd`",
            )
        })?;
        let unavailable = |e: String| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, 1000, e);
        let nodes = nodes::list(fleet)
            .await
            .map_err(|e| unavailable(format!("{e:#}")))?;
        let head = fleet
            .head()
            .await
            .map_err(|e| unavailable(format!("etcd did not answer: {e}")))?;
        Ok((nodes, head))
    }

    /// A change in fleet mode: made on the installed state, checked by
    /// compiling it, committed to etcd in one transaction guarded by the
    /// installed revision, and answered once this node installed it.
    pub(super) async fn change_in_fleet<T>(
        &self,
        fleet: &Fleet,
        mut edit: impl FnMut(&mut State) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let _writer = self.writer.lock().await;
        if let Some(stale) = fleet
            .progress
            .stale_for()
            .filter(|s| *s >= STALE_REFUSES_WRITES)
        {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                1000,
                format!(
                    "etcd has not answered this node for {} s: it serves revision {} read-only \
                     until etcd is back; nothing was changed",
                    stale.as_secs(),
                    fleet.progress.applied()
                ),
            ));
        }
        let mut lost_races = 0;
        loop {
            if let Some(why) = fleet.progress.last_error() {
                // Its revision is behind etcd's: a change made on it would
                // only lose the race again.
                return Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    1000,
                    format!(
                        "this node is behind etcd ({why}); it takes changes again once it \
                         installs a later revision"
                    ),
                ));
            }
            // The state, its revision and the compiled form it was installed
            // as, taken together (the installer swaps all three under the lock).
            let (state, base, current) = {
                let state = self.state.lock().await;
                let current = lock(&self.layers).current().clone();
                (state.clone(), fleet.progress.applied(), current)
            };
            let mut next = state.clone();
            let out = edit(&mut next)?;
            if next == state {
                return Ok(out);
            }
            let delta = next.delta_from(&state, &self.base);
            blocking(|| current.update(&delta))
                .map_err(|e| ApiError::invalid(format!("the change was refused: {e:#}")))?;
            let rows = rows::changes(Some(&state), &next, &fleet.ring)?;
            let entry = audit::Entry {
                seq: 0,
                at: crate::clock::now(),
                actor: audit::actor_or(|| audit::Actor::gateway("maintenance")),
                resources: audit::touched(&state, &next),
                outcome: "success".into(),
            };
            let revision = match fleet.commit(base, rows, &entry).await {
                Ok(revision) => revision,
                // Another node's change came first: once it is installed
                // here, this change is made again on top of it.
                Err(CommitError::Conflict(_)) if lost_races < RACES_RETRIED => {
                    lost_races += 1;
                    fleet.progress.wait_applied(base + 1, INSTALL_WAIT).await;
                    continue;
                }
                Err(CommitError::Conflict(m)) => return Err(ApiError::conflict(m)),
                Err(CommitError::Unavailable(m)) => {
                    return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, 1000, m));
                }
                Err(CommitError::Refused(m)) => return Err(ApiError::invalid(m)),
            };
            if !fleet.progress.wait_applied(revision, INSTALL_WAIT).await {
                warn!(
                    "revision {revision} is committed but not installed on this node yet (it is \
                     at {})",
                    fleet.progress.applied()
                );
            }
            return Ok(out);
        }
    }
}

impl Installer for ControlPlane {
    async fn install(&self, next: State, revision: i64) -> anyhow::Result<()> {
        let fleet = self.fleet.as_ref().context("not in fleet mode")?;
        let mut state = self.state.lock().await;
        let delta = next.delta_from(&state, &self.base);
        let current = lock(&self.layers).current().clone();
        let compiled = blocking(|| current.update(&delta))?;
        let installed = lock(&self.layers).install(compiled);
        // The copy is written as the difference from what it holds, which
        // trails the state after a failed write.
        let mut copied = self.copied.lock().unwrap_or_else(|e| e.into_inner());
        let held = copied.clone().unwrap_or_else(|| state.clone());
        match blocking(|| self.store.commit_revision(Some(&held), &next, revision)) {
            Ok(()) => *copied = Some(next.clone()),
            Err(e) => warn!(
                "the local copy of revision {revision} was not written (it stays at an earlier \
                 one; the next install writes the difference): {e:#}"
            ),
        }
        drop(copied);
        self.expiry.set_alerting(fleet.progress.is_leader());
        self.expiry.observe_change(&state, &next);
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        *state = next;
        fleet.progress.set_applied(revision);
        drop(state);
        if let Err(e) = installed {
            log::error!(
                "revision {revision} is in force in the terminator but not in the XDP filter: {e:#}"
            );
        }
        Ok(())
    }
}
