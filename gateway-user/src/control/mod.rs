//! The control plane's core: the records ([`model`]), rendered into a
//! configuration ([`render`](self::model::State::to_config)), and the one
//! path from a change to both running layers ([`ControlPlane::change`]), over
//! either backend ([`backend`]: its own redb store, or etcd in a fleet). The
//! admin surface ([`crate::admin`]) sits above it; PKI ([`crate::pki`]) and
//! the layers ([`crate::layers`]) below.
//!
//! A change edits a copy of the [`State`] (a copy costs nothing: its tables are
//! persistent maps). What it touched is rendered as a configuration
//! [`Delta`](crate::config::delta::Delta) and compiled on top of the
//! configuration in force (so an invalid change is refused before anything is
//! written), committed to the backend in one transaction (only the changed
//! records), and only then put in force in the XDP maps and the terminator.

use std::sync::{Arc, Mutex};

use log::info;

pub mod acme_state;
pub mod audit;
pub mod backend;
mod commit;
pub mod crl;
mod error;
pub mod expiry;
mod issue;
pub mod model;
mod render;
pub mod ruleset;
mod setup;
pub mod tokens;

pub use self::{
    error::ControlError,
    issue::{SERVER_CERT_DAYS, new_hostname, server_cert},
    setup::{Opened, open, open_fleet, rotate_token},
};
#[cfg(test)]
pub(crate) use setup::first_state;

use self::{
    backend::{Backend, fleet},
    expiry::Expiry,
    model::State,
};
use crate::{config::Config, layers::Layers};

/// Server certificates renewed in one change.
pub const RENEWALS_PER_CHANGE: usize = 100;

/// The control plane of a running gateway.
pub struct ControlPlane {
    /// Where changes are committed: the redb store, or etcd in a fleet.
    backend: Backend,
    /// The committed (in a fleet: installed) state; holding the lock
    /// serializes writers and installs.
    state: tokio::sync::Mutex<State>,
    /// The runtime sections every rendered configuration starts from.
    base: Config,
    layers: Arc<Mutex<Layers>>,
    /// Certificate expiry gauges and alerts.
    pub expiry: Expiry,
    /// Changes put in force so far.
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
            backend: opened.backend,
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

    /// Audit entries: see [`Backend::audit`].
    pub async fn audit(
        &self,
        since: Option<i64>,
        before: Option<i64>,
        page: (usize, usize),
    ) -> anyhow::Result<(Vec<audit::Entry>, usize)> {
        self.backend.audit(since, before, page).await
    }

    /// Reads the committed state.
    pub async fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&*self.state.lock().await)
    }

    /// Renews the server certificates the gateway issued that expire within
    /// 30 days (called at start and every hour), [`RENEWALS_PER_CHANGE`] per
    /// change, so that a fleet's transactions stay small.
    pub async fn renew_server_certificates(&self) {
        let soon = crate::clock::now() + 30 * 86_400;
        loop {
            let result = self
                .change(|s| -> Result<usize, ControlError> {
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
                    log::error!("renewing server certificates: {e}");
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

    /// Whether an XDP filter is attached (a gateway run without an interface has none).
    pub fn xdp_attached(&self) -> bool {
        crate::layers::lock(&self.layers).filter.is_some()
    }

    /// In fleet mode, the fleet.
    pub fn fleet(&self) -> Option<&Arc<fleet::Fleet>> {
        match &self.backend {
            Backend::Fleet(fleet) => Some(&fleet.fleet),
            Backend::Local(_) => None,
        }
    }

    /// Starts following etcd, reporting this node and keeping its gauges:
    /// the tasks, none outside fleet mode.
    pub async fn follow(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        let Some(fleet) = self.fleet().cloned() else {
            return Vec::new();
        };
        let state = self.state.lock().await.clone();
        let follower = fleet::sync::Follower::new(state, fleet.watch_from());
        vec![
            tokio::spawn(follower.run(fleet.clone(), self.clone())),
            tokio::spawn(fleet::nodes::report(fleet.clone())),
            tokio::spawn(fleet::nodes::tick_gauges(fleet)),
        ]
    }

    /// Whether this node does the periodic work: always on its own store, in
    /// a fleet only while it holds the leader key.
    pub fn does_periodic_work(&self) -> bool {
        self.fleet().is_none_or(|f| f.progress.is_leader())
    }

    /// Every node's report, with the newest revision (how far each is behind).
    pub async fn fleet_nodes(&self) -> Result<(Vec<fleet::NodeStatus>, i64), ControlError> {
        match &self.backend {
            Backend::Fleet(fleet) => fleet.nodes().await,
            Backend::Local(_) => Err(ControlError::Invalid(
                "this gateway runs on its own store: fleet mode is `gateway run --etcd`".into(),
            )),
        }
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
        opened.backend.store().commit(Some(&first), &next).unwrap();
        drop(opened);
        let again = open(&dir, "localhost").unwrap();
        assert!(again.new_token.is_none(), "a second run makes no new token");
        assert_eq!(again.state, next);
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(backend::store::STORE_FILE)), 0o600);
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
