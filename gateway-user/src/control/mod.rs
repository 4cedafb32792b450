//! The control plane: the store of zones, hostnames, CAs, client certificates
//! and rules; the admin API, its client and the dashboard it serves; and the
//! path from a committed change to both running layers.
//!
//! A change edits a copy of the [`State`] (a copy costs nothing: its tables are
//! persistent maps). What it touched is rendered as a configuration
//! [`Delta`](crate::config::delta::Delta) and compiled on top of the
//! configuration in force (so an invalid change is refused before anything is
//! written), committed to the store in one transaction (only the changed
//! records), and only then put in force in the XDP maps and the terminator.

use std::sync::{Arc, Mutex};

use log::info;

pub mod audit;
pub mod backend;
pub mod crl;
pub mod expiry;
mod issue;
pub use issue::{SERVER_CERT_DAYS, new_hostname, server_cert};
pub mod model;
mod render;
mod setup;
pub use backend::fleet::open_fleet;
pub(crate) use setup::first_state;
pub use setup::{Opened, open, rotate_token};
pub mod ruleset;
pub mod tokens;

use self::{
    backend::{fleet, store::Store},
    expiry::Expiry,
    model::State,
};
use crate::admin::api::ApiError;
use crate::{
    config::Config,
    layers::{Layers, blocking, lock},
};

/// Server certificates renewed in one change.
pub const RENEWALS_PER_CHANGE: usize = 100;

/// The control plane of a running gateway.
pub struct ControlPlane {
    /// The store; in fleet mode, the local copy of the installed configuration.
    store: Store,
    /// In fleet mode, etcd: changes are committed there and installed from its watch.
    fleet: Option<Arc<fleet::Fleet>>,
    /// Serializes this node's writers in fleet mode (the state lock is the installer's).
    writer: tokio::sync::Mutex<()>,
    /// In fleet mode, what the local copy holds (behind the state after a failed write).
    copied: std::sync::Mutex<Option<State>>,
    /// The committed state; holding the lock serializes writers.
    state: tokio::sync::Mutex<State>,
    /// The runtime sections every rendered configuration starts from.
    base: Config,
    layers: Arc<Mutex<Layers>>,
    /// Certificate expiry gauges and alerts.
    pub expiry: Expiry,
    /// Changes committed so far.
    changes: std::sync::atomic::AtomicU64,
}

impl ControlPlane {
    /// The control plane over an opened store, driving `layers`, which already
    /// run the opened state's configuration. `base` holds the runtime sections.
    pub fn start(
        opened: Opened,
        base: Config,
        layers: Arc<Mutex<Layers>>,
        expiry: Expiry,
    ) -> ControlPlane {
        expiry.observe(&opened.state);
        ControlPlane {
            store: opened.store,
            copied: std::sync::Mutex::new(opened.fleet.as_ref().map(|_| opened.state.clone())),
            fleet: opened.fleet,
            writer: Default::default(),
            state: tokio::sync::Mutex::new(opened.state),
            base,
            layers,
            expiry,
            changes: Default::default(),
        }
    }

    /// Looks at every certificate's expiry again (hourly: thresholds are
    /// crossed as time passes) on a copy of the state, so that changes are not
    /// held up meanwhile (it takes most of a second at 100,000 hostnames); a
    /// change committed meanwhile makes it look again.
    pub async fn observe_expiry(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        loop {
            let (state, seen) = {
                let state = self.state.lock().await;
                (state.clone(), self.changes.load(SeqCst))
            };
            self.expiry.observe(&state);
            if self.changes.load(SeqCst) == seen {
                return;
            }
        }
    }

    /// Audit entries: see [`Store::audit`] (in fleet mode, [`fleet::Fleet::audit`]).
    pub async fn audit(
        &self,
        since: Option<i64>,
        before: Option<i64>,
        page: (usize, usize),
    ) -> anyhow::Result<(Vec<audit::Entry>, usize)> {
        match &self.fleet {
            Some(fleet) => fleet.audit(since, before, page).await,
            None => self.store.audit(since, before, page),
        }
    }

    /// Reads the committed state.
    pub async fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&*self.state.lock().await)
    }

    /// Makes a change: `edit` changes a copy of the state; the result is built
    /// for both layers, committed, and put in force — or, on any error, nothing
    /// happens.
    pub async fn change<T>(
        &self,
        mut edit: impl FnMut(&mut State) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        if let Some(fleet) = &self.fleet {
            return self.change_in_fleet(fleet, edit).await;
        }
        let mut state = self.state.lock().await;
        let mut next = state.clone();
        let out = edit(&mut next)?;
        if next == *state {
            return Ok(out);
        }
        let mut entry = audit::Entry {
            seq: 0,
            at: crate::clock::now(),
            actor: audit::actor_or(|| audit::Actor::gateway("maintenance")),
            resources: audit::touched(&state, &next),
            outcome: "success".into(),
        };
        let delta = next.delta_from(&state, &self.base);
        // Compiling and the durable commit block for milliseconds: off the
        // runtime's async path, and without holding the layers' lock.
        let current = lock(&self.layers).current().clone();
        let compiled = blocking(|| current.update(&delta))
            .map_err(|e| ApiError::invalid(format!("the change was refused: {e:#}")))?;
        blocking(|| {
            self.store
                .commit_audited(Some(&state), &next, Some(&mut entry))
        })
        .map_err(|e| ApiError::internal(format!("the store did not commit: {e:#}")))?;
        let installed = lock(&self.layers).install(compiled);
        self.expiry.observe_change(&state, &next);
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        *state = next;
        match installed {
            Ok(()) => Ok(out),
            Err(e) => {
                log::error!("a committed change is not in force in the XDP filter: {e:#}");
                Err(ApiError::internal(format!(
                    "the change is committed and in force in the terminator, but not in the XDP \
                     filter: {e:#}; the next change applies it again"
                )))
            }
        }
    }

    /// Renews the server certificates the gateway issued that expire within
    /// 30 days (called at start and every hour), [`RENEWALS_PER_CHANGE`] per
    /// change, so that a fleet's transactions stay small.
    pub async fn renew_server_certificates(&self) {
        let soon = crate::clock::now() + 30 * 86_400;
        loop {
            let result = self
                .change(|s| {
                    let due: Vec<String> = s
                        .hostnames
                        .values()
                        .filter(|h| h.certificate.managed && h.certificate.expires_on < soon)
                        .map(|h| h.id.clone())
                        .take(RENEWALS_PER_CHANGE)
                        .collect();
                    for id in &due {
                        let (name, wildcard) =
                            (s.hostnames[id].name.clone(), s.hostnames[id].wildcard);
                        let cert = server_cert(s, &name, wildcard)?;
                        s.hostnames.get_mut(id).expect("listed above").certificate = cert;
                        info!("renewed the server certificate of {name}");
                    }
                    Ok(due.len())
                })
                .await;
            match result {
                Ok(n) if n == RENEWALS_PER_CHANGE => continue,
                Ok(_) => return,
                Err(e) => {
                    log::error!("renewing server certificates: {}", e.message);
                    return;
                }
            }
        }
    }

    /// The token a secret belongs to, if it is valid now.
    pub async fn caller(&self, secret: &str) -> Option<tokens::Caller> {
        let now = crate::clock::now();
        self.read(|s| s.caller(secret, now)).await
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::tls_version::TlsVersion;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("gateway-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_store_gives_back_exactly_what_was_committed() {
        let dir = scratch("roundtrip");
        let opened = open(&dir, "localhost").unwrap();
        assert!(opened.new_token.is_some());
        let first = opened.state.clone();
        let mut next = first.clone();
        let host = new_hostname(&next, "api.example.com", true, 1).unwrap();
        next.hostnames.insert(host.id.clone(), host);
        let localhost = next.hostname_by_name("localhost").unwrap().id.clone();
        next.hostnames.remove(&localhost);
        next.zone.min_tls_version = TlsVersion::Tls13;
        opened.store.commit(Some(&first), &next).unwrap();
        drop(opened);
        let again = open(&dir, "localhost").unwrap();
        assert!(again.new_token.is_none(), "a second run makes no new token");
        assert_eq!(again.state, next);
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(store::STORE_FILE)), 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn soon_expiring_certificates_are_listed_soonest_first() {
        let (mut state, _) = first_state("localhost").unwrap();
        let now = crate::clock::now();
        let mut host = new_hostname(&state, "soon.example.com", false, now).unwrap();
        host.certificate.expires_on = now + 10 * 86_400;
        state.hostnames.insert(host.id.clone(), host.clone());
        let soon = expiry::within(&state, now, 30);
        assert_eq!(soon.len(), 1, "{soon:?}");
        assert_eq!(soon[0].id, host.id);
        assert_eq!(soon[0].days_left, 10);
        assert!(expiry::within(&state, now, 5).is_empty());
        let registry = prometheus::Registry::new();
        let alerts = expiry::Expiry::new(&registry).unwrap();
        alerts.observe(&state);
        let families = registry.gather();
        let series = families[0].get_metric().len();
        // The gateway renews its own server certificates: they have no gauge.
        assert_eq!(series, 2, "the managed and the server CA only");
        host.certificate.managed = false;
        state.hostnames.insert(host.id.clone(), host);
        alerts.observe(&state);
        assert_eq!(
            registry.gather()[0].get_metric().len(),
            3,
            "and an uploaded one"
        );
    }
}
