//! First run and token rotation: opening the data directory or the fleet
//! (and, on the first run, making the zone, both CAs, a certificate for the
//! default hostname and the admin token), and replacing the admin token
//! offline.

use std::path::Path;

use anyhow::Context;
use log::info;

use super::{
    audit,
    backend::{
        Backend,
        fleet::{self, OpenedFleet},
        store::{self, Store},
    },
    issue::new_hostname,
    model::{Authority, AuthorityKind, Meta, State, ZoneSettings},
    ruleset,
};
use crate::{pki, tls_version::TlsVersion};

/// Validity of the CAs made at the first run: 20 years, so certificates of
/// the longest validity (10 years) can be issued for the first ten.
const CA_DAYS: u32 = 7300;

/// What opening the data directory (or the fleet) found.
pub struct Opened {
    /// Where changes are committed.
    pub backend: Backend,
    /// The state.
    pub state: State,
    /// The admin token, when it was just made (shown once).
    pub new_token: Option<String>,
}

/// Opens the store in `dir`; on the first run, creates the zone (minimum TLS
/// 1.2), the managed client CA, the server CA, a certificate for
/// `default_hostname`, and the admin token.
pub fn open(dir: &Path, default_hostname: &str) -> anyhow::Result<Opened> {
    let (store, state) = Store::open(dir)?;
    if let Some(state) = state {
        return Ok(Opened {
            backend: Backend::Local(store),
            state,
            new_token: None,
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
        backend: Backend::Local(store),
        state,
        new_token: Some(token),
    })
}

/// Opens a fleet node (see [`fleet::open_fleet`]); when the fleet's prefix is
/// new, its first configuration is the one [`open`] makes on a first run.
pub async fn open_fleet(
    dir: &Path,
    default_hostname: &str,
    fleet: fleet::Fleet,
) -> anyhow::Result<Opened> {
    let first = || {
        crate::config::validate_hostname(default_hostname).context("--default-hostname")?;
        first_state(default_hostname)
    };
    let OpenedFleet {
        backend,
        state,
        new_token,
    } = fleet::open_fleet(dir, first, fleet).await?;
    Ok(Opened {
        backend: Backend::Fleet(Box::new(backend)),
        state,
        new_token,
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
            session_resumption: true,
            acme: None,
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
