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

use anyhow::Context;
use imbl::ordmap::DiffItem;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Serialize, de::DeserializeOwned};

use crate::control::{
    audit::Entry,
    model::{State, Table},
    ruleset::Ruleset,
};

/// Singletons: meta, zone settings, the ordered rule list.
const SETTINGS: &str = "settings";
const HOSTNAMES: &str = "hostnames";
const CAS: &str = "cas";
const CERTS: &str = "client_certificates";
const TOKENS: &str = "api_tokens";
/// The ruleset's kept versions: version (zero-padded) → version.
const RULESET_VERSIONS: &str = "ruleset_versions";
/// The audit log: entry number (zero-padded, so in order) → entry.
const AUDIT: &str = "audit_log";

/// Every table maps a key to a JSON record.
fn table(name: &str) -> TableDefinition<'_, &'static str, &'static [u8]> {
    TableDefinition::new(name)
}

/// The store's page cache: enough for a change's pages, not a copy of the state.
const STORE_CACHE_BYTES: usize = 2 << 20;

/// The store file's name in the data directory.
pub const STORE_FILE: &str = "gateway.redb";
/// In fleet mode, the local copy of the last installed configuration.
pub const FLEET_COPY_FILE: &str = "fleet-copy.redb";
/// The settings row holding the etcd revision a fleet copy is of.
const FLEET_REVISION: &str = "fleet_revision";

/// The store.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Opens the store in `dir`, creating the directory (0700) and the file (0600)
    /// if needed. Returns the store and the state in it (none for a new store).
    pub fn open(dir: &Path) -> anyhow::Result<(Store, Option<State>)> {
        Store::open_file(dir, STORE_FILE)
    }

    /// Opens the fleet copy in `dir`: the store, and the state it holds with
    /// its etcd revision.
    pub fn open_fleet_copy(dir: &Path) -> anyhow::Result<(Store, Option<(State, i64)>)> {
        let (store, state) = Store::open_file(dir, FLEET_COPY_FILE)?;
        let revision = {
            let txn = store.db.begin_read()?;
            let settings = read_table(&txn, SETTINGS)?;
            settings
                .get(FLEET_REVISION)
                .map(|v| decode::<i64>(SETTINGS, FLEET_REVISION, v))
                .transpose()?
        };
        Ok((store, state.zip(revision)))
    }

    fn open_file(dir: &Path, name: &str) -> anyhow::Result<(Store, Option<State>)> {
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
        let path = dir.join(name);
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
        // The state is read once at start and kept in memory: redb's page cache
        // (1 GiB by default) would only hold a second copy of it.
        let db = Database::builder()
            .set_cache_size(STORE_CACHE_BYTES)
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
        let unreadable = || format!("the store {} is unreadable", self.path.display());
        let settings = read_table(&txn, SETTINGS).with_context(unreadable)?;
        if settings.is_empty() {
            return Ok(None);
        }
        let one = |key: &str| -> anyhow::Result<&[u8]> {
            settings
                .get(key)
                .map(Vec::as_slice)
                .with_context(|| format!("the {key:?} record is missing"))
        };
        let state = (|| {
            anyhow::Ok(State {
                meta: decode(SETTINGS, "meta", one("meta")?)?,
                zone: decode(SETTINGS, "zone", one("zone")?)?,
                rules: decode(SETTINGS, "rules", one("rules")?)?,
                // Stores from before rulesets were versioned start at version 1.
                ruleset: match settings.get("ruleset") {
                    Some(bytes) => decode(SETTINGS, "ruleset", bytes)?,
                    None => Ruleset::first(
                        &decode::<Vec<crate::rules::RuleSpec>>(SETTINGS, "rules", one("rules")?)?,
                        crate::clock::now(),
                    ),
                },
                hostnames: records(&txn, HOSTNAMES)?.into(),
                cas: records(&txn, CAS)?,
                certs: records(&txn, CERTS)?,
                tokens: records(&txn, TOKENS)?,
            })
        })()
        .with_context(unreadable)?;
        let mut state = state;
        let kept: Vec<crate::control::ruleset::Version> = read_table(&txn, RULESET_VERSIONS)
            .with_context(unreadable)?
            .iter()
            .map(|(k, v)| decode(RULESET_VERSIONS, k, v))
            .collect::<anyhow::Result<_>>()
            .with_context(unreadable)?;
        let rules = state.rules.clone();
        state.ruleset.loaded(kept, &rules);
        Ok(Some(state))
    }

    /// Writes what differs between `old` (none: an empty store) and `new` in
    /// one durable transaction. Only the records that differ are encoded: the
    /// tables' [`Table::diff`] skips what the two states share.
    pub fn commit(&self, old: Option<&State>, new: &State) -> anyhow::Result<()> {
        self.commit_audited(old, new, None)
    }

    /// As [`Store::commit`], for a fleet copy: `new` is etcd's `revision`.
    pub fn commit_revision(
        &self,
        old: Option<&State>,
        new: &State,
        revision: i64,
    ) -> anyhow::Result<()> {
        self.commit_with(old, new, None, Some(revision))
    }

    /// As [`Store::commit`], recording `audit` (numbered next) in the same
    /// transaction.
    pub fn commit_audited(
        &self,
        old: Option<&State>,
        new: &State,
        audit: Option<&mut Entry>,
    ) -> anyhow::Result<()> {
        self.commit_with(old, new, audit, None)
    }

    fn commit_with(
        &self,
        old: Option<&State>,
        new: &State,
        audit: Option<&mut Entry>,
        revision: Option<i64>,
    ) -> anyhow::Result<()> {
        let txn = self.db.begin_write()?;
        if let Some(entry) = audit {
            let mut t = txn.open_table(table(AUDIT))?;
            let last = t
                .last()?
                .map(|(k, _)| k.value().parse::<u64>().unwrap_or(0))
                .unwrap_or(0);
            entry.seq = last + 1;
            t.insert(
                format!("{:020}", entry.seq).as_str(),
                json(entry)?.as_slice(),
            )?;
        }
        {
            let mut t = txn.open_table(table(SETTINGS))?;
            for (key, encode, same) in SETTINGS_ROWS {
                if old.is_none_or(|o| !same(o, new)) {
                    t.insert(key, encode(new)?.as_slice())?;
                }
            }
            if let Some(revision) = revision {
                t.insert(FLEET_REVISION, json(&revision)?.as_slice())?;
            }
        }
        let none = (Table::new(), Table::new(), Table::new(), Table::new());
        let (hostnames, cas, certs, tokens) = old
            .map_or((&none.0, &none.1, &none.2, &none.3), |o| {
                (o.hostnames.table(), &o.cas, &o.certs, &o.tokens)
            });
        write_diff(&txn, HOSTNAMES, hostnames, new.hostnames.table())?;
        write_diff(&txn, CAS, cas, &new.cas)?;
        write_diff(&txn, CERTS, certs, &new.certs)?;
        write_diff(&txn, TOKENS, tokens, &new.tokens)?;
        write_versions(&txn, old.map(|o| &o.ruleset), &new.ruleset)?;
        txn.commit().context("the store did not commit")?;
        Ok(())
    }
}

impl Store {
    /// Audit entries, newest first, committed in `[since, before)` (Unix
    /// seconds): the `page`th `per_page` of them, and how many match.
    pub fn audit(
        &self,
        since: Option<i64>,
        before: Option<i64>,
        (page, per_page): (usize, usize),
    ) -> anyhow::Result<(Vec<Entry>, usize)> {
        let txn = self.db.begin_read()?;
        let t = match txn.open_table(table(AUDIT)) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok((Vec::new(), 0)),
            Err(e) => return Err(e.into()),
        };
        let entries = t.iter()?.rev().map(|row| {
            let (k, v) = row?;
            decode(AUDIT, k.value(), v.value())
        });
        crate::control::audit::page_of(entries, since, before, (page, per_page))
    }
}

/// Encodes one settings row from the state.
type Encode = fn(&State) -> anyhow::Result<Vec<u8>>;
/// Whether two states have the same row (compared in memory, not encoded).
type Same = fn(&State, &State) -> bool;

/// The rows of the settings table, each encoded from the state.
const SETTINGS_ROWS: [(&str, Encode, Same); 4] = [
    ("meta", |s| json(&s.meta), |a, b| a.meta == b.meta),
    ("zone", |s| json(&s.zone), |a, b| a.zone == b.zone),
    ("rules", |s| json(&s.rules), |a, b| a.rules == b.rules),
    ("ruleset", ruleset_row, |a, b| a.ruleset == b.ruleset),
];

/// The ruleset's row: without its kept versions, which are rows of their own.
fn ruleset_row(s: &State) -> anyhow::Result<Vec<u8>> {
    let mut row = s.ruleset.clone();
    row.history.clear();
    json(&row)
}

fn json<T: Serialize>(value: &T) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec(value)?)
}

fn decode<T: DeserializeOwned>(table: &str, key: &str, bytes: &[u8]) -> anyhow::Result<T> {
    serde_json::from_slice(bytes).with_context(|| format!("record {key:?} of table {table:?}"))
}

/// Every row of a table (none if it does not exist yet).
fn read_table(
    txn: &redb::ReadTransaction,
    name: &str,
) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let t = match txn.open_table(table(name)) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(BTreeMap::new()),
        Err(e) => return Err(e.into()),
    };
    let mut rows = BTreeMap::new();
    for entry in t.iter()? {
        let (k, v) = entry?;
        rows.insert(k.value().to_string(), v.value().to_vec());
    }
    Ok(rows)
}

/// A table's records, decoded.
fn records<T: DeserializeOwned + Clone>(
    txn: &redb::ReadTransaction,
    name: &str,
) -> anyhow::Result<Table<T>> {
    let t = match txn.open_table(table(name)) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Table::new()),
        Err(e) => return Err(e.into()),
    };
    let mut records = Table::new();
    for entry in t.iter()? {
        let (k, v) = entry?;
        let key = k.value().to_string();
        let value = decode(name, &key, v.value())?;
        records.insert(key, value);
    }
    Ok(records)
}

/// Writes the ruleset versions `new` keeps that `old` did not, and removes
/// those it no longer keeps.
fn write_versions(
    txn: &redb::WriteTransaction,
    old: Option<&Ruleset>,
    new: &Ruleset,
) -> anyhow::Result<()> {
    let key = |v: u64| format!("{v:020}");
    let had: Vec<u64> = old.map_or(Vec::new(), |o| {
        o.history.iter().map(|v| v.version).collect()
    });
    let has: Vec<u64> = new.history.iter().map(|v| v.version).collect();
    if had == has {
        return Ok(());
    }
    let mut t = txn.open_table(table(RULESET_VERSIONS))?;
    for v in new.history.iter().filter(|v| !had.contains(&v.version)) {
        t.insert(key(v.version).as_str(), json(&**v)?.as_slice())?;
    }
    for gone in had.iter().filter(|v| !has.contains(v)) {
        t.remove(key(*gone).as_str())?;
    }
    Ok(())
}

/// Writes the records that differ between two versions of a table.
fn write_diff<T: Serialize + PartialEq>(
    txn: &redb::WriteTransaction,
    name: &str,
    old: &Table<T>,
    new: &Table<T>,
) -> anyhow::Result<()> {
    let mut t = txn.open_table(table(name))?;
    for item in old.diff(new) {
        match item {
            DiffItem::Add(key, value)
            | DiffItem::Update {
                new: (key, value), ..
            } => {
                t.insert(key.as_str(), json(value)?.as_slice())?;
            }
            DiffItem::Remove(key, _) => {
                t.remove(key.as_str())?;
            }
        }
    }
    Ok(())
}
