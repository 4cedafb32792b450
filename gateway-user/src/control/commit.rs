//! The one path from a change to both running layers. A change is made on a
//! copy of the state and compiled once; the backend commits it (the redb
//! store in one transaction, or etcd guarded by the installed revision); and
//! [`ControlPlane::apply`] puts it in force. In a fleet every revision,
//! this node's own too, is installed from the watch ([`Installer`]); the
//! writing node's compiled form of its own change is reused there.

use std::sync::atomic::Ordering::SeqCst;

use super::{
    ControlError, ControlPlane, audit,
    backend::{
        Backend,
        fleet::{FleetBackend, sync::Installer},
        store::Store,
    },
    model::State,
};
use crate::{
    compiled::Compiled,
    layers::{blocking, lock},
};

/// How many times a change lost to another node's is made again.
const RACES_RETRIED: usize = 5;

impl ControlPlane {
    /// Makes a change: `edit` changes a copy of the state; the result is built
    /// for both layers, committed, and put in force — or, on any error, nothing
    /// happens. `edit`'s own errors come back as they are.
    pub async fn change<T, E: From<ControlError>>(
        &self,
        edit: impl FnMut(&mut State) -> Result<T, E>,
    ) -> Result<T, E> {
        match &self.backend {
            Backend::Local(store) => self.change_locally(store, edit).await,
            Backend::Fleet(fleet) => self.change_in_fleet(fleet, edit).await,
        }
    }

    /// A change on the gateway's own store: committed in one transaction,
    /// then put in force.
    async fn change_locally<T, E: From<ControlError>>(
        &self,
        store: &Store,
        mut edit: impl FnMut(&mut State) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut state = self.state.lock().await;
        let mut next = state.clone();
        let out = edit(&mut next)?;
        if next == *state {
            return Ok(out);
        }
        let mut entry = audit_entry(&state, &next);
        let compiled = self.compile(&state, &next).map_err(refused)?;
        // The durable commit blocks for milliseconds: off the runtime's async path.
        blocking(|| store.commit_audited(Some(&state), &next, Some(&mut entry)))
            .map_err(|e| ControlError::Internal(format!("the store did not commit: {e:#}")))?;
        match self.apply(&mut state, next, compiled) {
            Ok(()) => Ok(out),
            Err(e) => {
                log::error!("a committed change is not in force in the XDP filter: {e:#}");
                Err(ControlError::Internal(format!(
                    "the change is committed and in force in the terminator, but not in the XDP \
                     filter: {e:#}; the next change applies it again"
                ))
                .into())
            }
        }
    }

    /// A change in fleet mode: made on the installed state, compiled (which
    /// checks it), committed to etcd in one transaction guarded by the
    /// installed revision, and answered once this node installed it.
    async fn change_in_fleet<T, E: From<ControlError>>(
        &self,
        fleet: &FleetBackend,
        mut edit: impl FnMut(&mut State) -> Result<T, E>,
    ) -> Result<T, E> {
        let _writer = fleet.writer.lock().await;
        fleet.check_writable()?;
        let mut lost_races = 0;
        loop {
            fleet.check_current()?;
            // The state, its revision and the compiled form it was installed
            // as, taken together (the installer swaps all three under the lock).
            let (state, base, current, installed) = {
                let state = self.state.lock().await;
                let current = lock(&self.layers).current().clone();
                (
                    state.clone(),
                    fleet.applied(),
                    current,
                    self.changes.load(SeqCst),
                )
            };
            let mut next = state.clone();
            let out = edit(&mut next)?;
            if next == state {
                return Ok(out);
            }
            let delta = next.delta_from(&state, &self.base);
            let compiled = blocking(|| current.update(&delta)).map_err(refused)?;
            let entry = audit_entry(&state, &next);
            fleet.prepare(installed, next.clone(), compiled);
            let committed = fleet.commit(base, &state, &next, &entry).await;
            let revision = match committed {
                Ok(revision) => revision,
                // Another node's change came first: once it is installed
                // here, this change is made again on top of it.
                Err(ControlError::Conflict(_)) if lost_races < RACES_RETRIED => {
                    fleet.forget_prepared();
                    lost_races += 1;
                    fleet.wait_after(base).await;
                    continue;
                }
                Err(e) => {
                    fleet.forget_prepared();
                    return Err(e.into());
                }
            };
            fleet.wait_installed(revision).await;
            fleet.forget_prepared();
            return Ok(out);
        }
    }

    /// `next` compiled on top of the configuration in force, which is `from`'s.
    /// Compiling blocks for milliseconds: off the runtime's async path, and
    /// without holding the layers' lock.
    fn compile(&self, from: &State, next: &State) -> anyhow::Result<Compiled> {
        let delta = next.delta_from(from, &self.base);
        let current = lock(&self.layers).current().clone();
        blocking(|| current.update(&delta))
    }

    /// Puts a committed change in force: `compiled` (the form of `next`) into
    /// both layers, the expiry gauges updated, and `next` the state. The
    /// terminator always follows; an error is the XDP maps'.
    fn apply(&self, state: &mut State, next: State, compiled: Compiled) -> anyhow::Result<()> {
        let installed = lock(&self.layers).install(compiled);
        self.expiry.observe_change(state, &next);
        self.changes.fetch_add(1, SeqCst);
        *state = next;
        installed
    }
}

impl Installer for ControlPlane {
    async fn install(&self, next: State, revision: i64) -> anyhow::Result<()> {
        let Backend::Fleet(fleet) = &self.backend else {
            anyhow::bail!("not in fleet mode");
        };
        let mut state = self.state.lock().await;
        let compiled = match fleet.take_prepared(&next, self.changes.load(SeqCst)) {
            Some(compiled) => {
                log::debug!("revision {revision}: this node's own change, compiled already");
                compiled
            }
            None => self.compile(&state, &next)?,
        };
        self.expiry.set_alerting(fleet.fleet.progress.is_leader());
        let installed = self.apply(&mut state, next, compiled);
        fleet.write_copy(&state, revision);
        fleet.fleet.progress.set_applied(revision);
        drop(state);
        if let Err(e) = installed {
            log::error!(
                "revision {revision} is in force in the terminator but not in the XDP filter: {e:#}"
            );
        }
        Ok(())
    }
}

/// The audit entry of a change from `old` to `new`, by whoever is acting.
fn audit_entry(old: &State, new: &State) -> audit::Entry {
    audit::Entry {
        seq: 0,
        at: crate::clock::now(),
        actor: audit::actor_or(|| audit::Actor::gateway("maintenance")),
        resources: audit::touched(old, new),
        outcome: "success".into(),
    }
}

/// A change that does not compile.
fn refused(e: anyhow::Error) -> ControlError {
    ControlError::Invalid(format!("the change was refused: {e:#}"))
}
