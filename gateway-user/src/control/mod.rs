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

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use anyhow::Context;
use log::info;

pub mod api;
pub mod audit;
pub mod client;
pub mod crl;
pub mod dashboard;
pub mod expiry;
pub mod fleet;
pub mod model;
pub mod pki;
mod render;
mod replicated;
pub use replicated::open_fleet;
pub mod ruleset;
pub mod store;
pub mod tokens;

use self::{
    api::ApiError,
    expiry::Expiry,
    model::{Authority, AuthorityKind, Hostname, Meta, ServerCert, State, ZoneSettings},
    pki::Usage,
    store::Store,
};
use crate::{
    config::{CertChain, Config, KeyDer},
    layers::Layers,
    tls_version::TlsVersion,
};

/// Validity of the CAs made at the first run: 20 years, so certificates of
/// the longest validity (10 years) can be issued for the first ten.
const CA_DAYS: u32 = 7300;
/// Server certificates renewed in one change.
pub const RENEWALS_PER_CHANGE: usize = 100;
/// Validity of server certificates the server CA issues.
pub const SERVER_CERT_DAYS: u32 = 397;

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

/// What opening the data directory found.
pub struct Opened {
    /// The store and its state.
    pub store: Store,
    /// The state.
    pub state: State,
    /// The admin token, when it was just made (shown once).
    pub new_token: Option<String>,
    /// In fleet mode, the fleet the state came from.
    pub fleet: Option<Arc<fleet::Fleet>>,
}

/// Opens the store in `dir`; on the first run, creates the zone (minimum TLS
/// 1.2), the managed client CA, the server CA, a certificate for
/// `default_hostname`, and the admin token.
pub fn open(dir: &Path, default_hostname: &str) -> anyhow::Result<Opened> {
    let (store, state) = Store::open(dir)?;
    if let Some(state) = state {
        return Ok(Opened {
            store,
            state,
            new_token: None,
            fleet: None,
        });
    }
    crate::config::validate_hostname(default_hostname).context("--default-hostname")?;
    let (state, token) = first_state(default_hostname)?;
    store.commit(None, &state)?;
    info!(
        "created {} with zone {} (minimum TLS 1.2), a managed CA and a certificate for {default_hostname}",
        store.path().display(),
        state.meta.zone_id
    );
    Ok(Opened {
        store,
        state,
        new_token: Some(token),
        fleet: None,
    })
}

/// The state of a first run: the zone, both CAs, a hostname and the admin token.
pub(crate) fn first_state(default_hostname: &str) -> anyhow::Result<(State, String)> {
    let now = crate::clock::now();
    let token = new_token()?;
    let mut state = State {
        meta: Meta {
            account_id: pki::random_id(),
            zone_id: pki::random_id(),
            zone_name: "default".into(),
            token_sha256: pki::sha256_hex(token.as_bytes()),
            default_hostname: default_hostname.into(),
        },
        zone: ZoneSettings {
            min_tls_version: TlsVersion::Tls12,
            ciphers: Vec::new(),
        },
        hostnames: Default::default(),
        cas: Default::default(),
        certs: Default::default(),
        rules: Vec::new(),
        ruleset: ruleset::Ruleset::first(&[], now),
        tokens: Default::default(),
    };
    for (kind, name) in [
        (AuthorityKind::Managed, "Gateway managed client CA"),
        (AuthorityKind::Server, "Gateway server CA"),
    ] {
        let ca = pki::new_ca(name, CA_DAYS)?;
        let authority = authority(kind, name, &ca, now)?;
        state.cas.insert(authority.id.clone(), authority);
    }
    let host = new_hostname(&state, default_hostname, false, now)?;
    state.hostnames.insert(host.id.clone(), host);
    Ok((state, token))
}

/// A new admin token: 32 random bytes, hex.
fn new_token() -> anyhow::Result<String> {
    let mut token = [0u8; 32];
    boring::rand::rand_bytes(&mut token)?;
    Ok(pki::hex(&token))
}

/// Replaces the admin token of the store in `dir` and returns the new one. The
/// gateway must be stopped (the store is opened by one process at a time).
pub fn rotate_token(dir: &Path) -> anyhow::Result<String> {
    if !dir.join(store::STORE_FILE).exists() {
        anyhow::bail!(
            "no store in {}: the first `gateway run --data-dir {}` creates one",
            dir.display(),
            dir.display()
        );
    }
    let (store, state) = Store::open(dir)
        .context("cannot open the store; if the gateway is running, stop it first")?;
    let state = state.context("the store is empty")?;
    let token = new_token()?;
    let mut next = state.clone();
    next.meta.token_sha256 = pki::sha256_hex(token.as_bytes());
    let mut entry = audit::Entry {
        seq: 0,
        at: crate::clock::now(),
        actor: audit::Actor::gateway("gateway rotate-token"),
        resources: vec!["token:first-run".into()],
        outcome: "success".into(),
    };
    store.commit_audited(Some(&state), &next, Some(&mut entry))?;
    info!("the admin token of {} was replaced", store.path().display());
    Ok(token)
}

fn authority(
    kind: AuthorityKind,
    name: &str,
    ca: &pki::Signer,
    now: i64,
) -> anyhow::Result<Authority> {
    let (info, _) = pki::info(&ca.cert.to_der()?)?;
    Ok(Authority {
        id: pki::random_id(),
        name: name.into(),
        kind,
        certificate: pki::cert_pem(&ca.cert)?,
        key: Some(pki::key_pem(&ca.key)?),
        issuer: info.issuer,
        serial_number: info.serial,
        signature: info.signature.into(),
        uploaded_on: now,
        expires_on: info.not_after,
        crl: None,
    })
}

/// A hostname with default settings and a certificate from the server CA.
pub fn new_hostname(
    state: &State,
    name: &str,
    wildcard: bool,
    now: i64,
) -> anyhow::Result<Hostname> {
    Ok(Hostname {
        id: pki::random_id(),
        name: name.into(),
        wildcard,
        min_tls_version: None,
        ciphers: Vec::new(),
        origin: None,
        forward_client_cert: Default::default(),
        certificate: server_cert(state, name, wildcard)?,
        cas: Vec::new(),
        created_on: now,
    })
}

/// A certificate for `name` (and its subdomains, for a wildcard) from the server CA.
pub fn server_cert(state: &State, name: &str, wildcard: bool) -> anyhow::Result<ServerCert> {
    let ca = state.server_ca().context("the store has no server CA")?;
    let signer = pki::Signer::from_pem(&ca.certificate, ca.key.as_deref().unwrap_or_default())?;
    let key = pki::new_key()?;
    let mut names = vec![name.to_string()];
    if wildcard {
        names.push(format!("*.{name}"));
    }
    let cert = pki::issue(&signer, name, &key, Usage::Server(&names), SERVER_CERT_DAYS)?;
    let der = cert.to_der()?;
    let (info, _) = pki::info(&der)?;
    Ok(ServerCert {
        chain: CertChain::from_ders(&[der])?,
        key: KeyDer::from_key(&key)?,
        managed: true,
        expires_on: info.not_after,
    })
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

    /// A TLS acceptor for the admin API: a certificate for `names` from the
    /// server CA (made at each start, valid a year), TLS 1.2 and up.
    pub async fn admin_acceptor(
        &self,
        names: &[String],
    ) -> anyhow::Result<boring::ssl::SslAcceptor> {
        let signer = self
            .read(|s| {
                let ca = s.server_ca().context("the store has no server CA")?;
                pki::Signer::from_pem(&ca.certificate, ca.key.as_deref().unwrap_or_default())
            })
            .await?;
        let key = pki::new_key()?;
        let cert = pki::issue(
            &signer,
            "gateway admin API",
            &key,
            Usage::Server(names),
            365,
        )?;
        let mut b =
            boring::ssl::SslAcceptor::mozilla_intermediate_v5(boring::ssl::SslMethod::tls())?;
        b.set_private_key(&key)?;
        b.set_certificate(&cert)?;
        b.add_extra_chain_cert(signer.cert.clone())?;
        b.set_min_proto_version(Some(boring::ssl::SslVersion::TLS1_2))?;
        b.check_private_key()?;
        Ok(b.build())
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
        self.read(|s| tokens::check(s, secret, now)).await
    }

    /// Whether an XDP filter is attached (a gateway run without an interface has none).
    pub fn xdp_attached(&self) -> bool {
        lock(&self.layers).filter.is_some()
    }
}

/// Runs blocking work where the runtime allows it (a multi-threaded runtime
/// moves its other tasks away); elsewhere, in place.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// The layers' lock; a panic elsewhere does not make them unusable.
pub fn lock(layers: &Mutex<Layers>) -> std::sync::MutexGuard<'_, Layers> {
    layers.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

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
