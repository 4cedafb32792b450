//! The embedded store: one redb file in the data directory, readable by its
//! owner only (it holds the CAs' private keys). Every change is one write
//! transaction that commits whole, durably, before it is acknowledged; a crash
//! at any point leaves the last committed state.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Serialize, de::DeserializeOwned};

use super::model::State;

/// Singletons: meta, zone settings, the ordered rule list.
const SETTINGS: &str = "settings";
const HOSTNAMES: &str = "hostnames";
const CAS: &str = "cas";
const CERTS: &str = "client_certificates";
const TABLES: [&str; 4] = [SETTINGS, HOSTNAMES, CAS, CERTS];

/// Every table maps a key to a JSON record.
fn table(name: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(name)
}

/// The store file's name in the data directory.
pub const STORE_FILE: &str = "gateway.redb";

/// A row: (table, key) → JSON.
type Rows = BTreeMap<(&'static str, String), Vec<u8>>;

/// The store.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Opens the store in `dir`, creating the directory (0700) and the file (0600)
    /// if needed. Returns the store and the state in it (none for a new store).
    pub fn open(dir: &Path) -> anyhow::Result<(Store, Option<State>)> {
        if dir.exists() {
            let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                log::warn!(
                    "the data directory {} is mode {mode:o}: others can list it; 0700 is advised",
                    dir.display()
                );
            }
        } else {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot restrict {} to its owner", dir.display()))?;
        }
        let path = dir.join(STORE_FILE);
        // Created 0600 (the mode applies only to a new file). An empty file (a
        // first run killed before redb wrote its header) is initialised like a new one.
        let file: File = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mode = file.metadata()?.permissions().mode() & 0o777;
        if mode != 0o600 {
            log::warn!(
                "{} was mode {mode:o}; setting 0600 (it holds private keys)",
                path.display()
            );
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        let db = Database::builder()
            .create_with_backend(redb::backends::FileBackend::new(file)?)
            .with_context(|| format!("cannot open the store {}", path.display()))?;
        let store = Store { db, path };
        let state = store.load()?;
        Ok((store, state))
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&self) -> anyhow::Result<Option<State>> {
        let txn = self.db.begin_read()?;
        let mut rows = Rows::new();
        for name in TABLES {
            let t = match txn.open_table(table(name)) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => continue,
                Err(e) => return Err(e.into()),
            };
            for entry in t.iter()? {
                let (k, v) = entry?;
                rows.insert((name, k.value().to_string()), v.value().to_vec());
            }
        }
        if rows.is_empty() {
            return Ok(None);
        }
        from_rows(&rows)
            .map(Some)
            .with_context(|| format!("the store {} is unreadable", self.path.display()))
    }

    /// Writes what differs between `old` and `new` in one durable transaction.
    pub fn commit(&self, old: Option<&State>, new: &State) -> anyhow::Result<()> {
        let before = match old {
            Some(s) => rows(s)?,
            None => Rows::new(),
        };
        let after = rows(new)?;
        let txn = self.db.begin_write()?;
        for name in TABLES {
            let mut t = txn.open_table(table(name))?;
            for ((_, key), value) in after.iter().filter(|((n, _), _)| *n == name) {
                if before.get(&(name, key.clone())) != Some(value) {
                    t.insert(key.as_str(), value.as_slice())?;
                }
            }
            for (_, key) in before.keys().filter(|(n, _)| *n == name) {
                if !after.contains_key(&(name, key.clone())) {
                    t.remove(key.as_str())?;
                }
            }
        }
        txn.commit().context("the store did not commit")?;
        Ok(())
    }
}

fn json<T: Serialize>(value: &T) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec(value)?)
}

fn rows(s: &State) -> anyhow::Result<Rows> {
    let mut rows = Rows::new();
    let settings = SETTINGS;
    rows.insert((settings, "meta".into()), json(&s.meta)?);
    rows.insert((settings, "zone".into()), json(&s.zone)?);
    rows.insert((settings, "rules".into()), json(&s.rules)?);
    for (id, h) in &s.hostnames {
        rows.insert((HOSTNAMES, id.clone()), json(h)?);
    }
    for (id, c) in &s.cas {
        rows.insert((CAS, id.clone()), json(c)?);
    }
    for (id, c) in &s.certs {
        rows.insert((CERTS, id.clone()), json(c)?);
    }
    Ok(rows)
}

fn from_rows(rows: &Rows) -> anyhow::Result<State> {
    fn one<T: DeserializeOwned>(rows: &Rows, key: &str) -> anyhow::Result<T> {
        let Some(bytes) = rows.get(&(SETTINGS, key.to_string())) else {
            bail!("the {key:?} record is missing");
        };
        serde_json::from_slice(bytes).with_context(|| format!("the {key:?} record"))
    }
    fn records<T: DeserializeOwned>(
        rows: &Rows,
        table: &'static str,
    ) -> anyhow::Result<BTreeMap<String, T>> {
        rows.iter()
            .filter(|((t, _), _)| *t == table)
            .map(|((_, k), v)| {
                let value = serde_json::from_slice(v)
                    .with_context(|| format!("record {k:?} of table {table:?}"))?;
                Ok((k.clone(), value))
            })
            .collect()
    }
    Ok(State {
        meta: one(rows, "meta")?,
        zone: one(rows, "zone")?,
        rules: one(rows, "rules")?,
        hostnames: records(rows, HOSTNAMES)?,
        cas: records(rows, CAS)?,
        certs: records(rows, CERTS)?,
    })
}
