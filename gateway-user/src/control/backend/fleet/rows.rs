//! The configuration as etcd rows: one key per record under
//! `PREFIX/config/`, its value the record's JSON with private keys sealed.
//!
//! ```text
//! PREFIX/config/settings/{meta,zone,rules,ruleset}
//! PREFIX/config/{hostnames,cas,client_certificates,api_tokens}/ID
//! PREFIX/config/guard        every change writes it; changes compare its revision
//! ```
//!
//! Decoding is strict: a record that does not parse, a private key stored in
//! the clear or one that does not open makes the revision refused, with the
//! key named.

use anyhow::{Context, bail};
use imbl::ordmap::DiffItem;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::seal::{Keyring, Sealed};
use crate::control::model::{State, Table};

/// The guard row, relative to the configuration prefix.
pub const GUARD: &str = "guard";

/// A row to write (`Some`) or delete (`None`), its key relative to the
/// configuration prefix.
pub type RowChange = (String, Option<Vec<u8>>);

/// The tables of records by id: (row directory, where a private key sits).
const SETTINGS: &str = "settings";
const HOSTNAMES: &str = "hostnames";
const CAS: &str = "cas";
const CERTS: &str = "client_certificates";
const TOKENS: &str = "api_tokens";

/// Where each table's records keep a private key (a JSON pointer).
fn secret_pointer(table: &str) -> Option<&'static str> {
    match table {
        CAS => Some("/key"),
        HOSTNAMES => Some("/certificate/key"),
        _ => None,
    }
}

/// The rows that differ between `old` (none: every row) and `new`.
pub fn changes(old: Option<&State>, new: &State, ring: &Keyring) -> anyhow::Result<Vec<RowChange>> {
    let mut out = Vec::new();
    let settings: [(&str, bool, Value); 4] = [
        (
            "meta",
            old.is_none_or(|o| o.meta != new.meta),
            serde_json::to_value(&new.meta)?,
        ),
        (
            "zone",
            old.is_none_or(|o| o.zone != new.zone),
            serde_json::to_value(&new.zone)?,
        ),
        (
            "rules",
            old.is_none_or(|o| o.rules != new.rules),
            serde_json::to_value(&new.rules)?,
        ),
        (
            "ruleset",
            old.is_none_or(|o| o.ruleset != new.ruleset),
            serde_json::to_value(&new.ruleset)?,
        ),
    ];
    for (name, changed, value) in settings {
        if changed {
            out.push((
                format!("{SETTINGS}/{name}"),
                Some(serde_json::to_vec(&value)?),
            ));
        }
    }
    let empty = State::empty_tables();
    let old = old.unwrap_or(&empty);
    diff(
        HOSTNAMES,
        old.hostnames.table(),
        new.hostnames.table(),
        ring,
        &mut out,
    )?;
    diff(CAS, &old.cas, &new.cas, ring, &mut out)?;
    diff(CERTS, &old.certs, &new.certs, ring, &mut out)?;
    diff(TOKENS, &old.tokens, &new.tokens, ring, &mut out)?;
    Ok(out)
}

fn diff<T: Serialize + Clone + PartialEq>(
    table: &str,
    old: &Table<T>,
    new: &Table<T>,
    ring: &Keyring,
    out: &mut Vec<RowChange>,
) -> anyhow::Result<()> {
    for item in old.diff(new) {
        match item {
            DiffItem::Add(id, record)
            | DiffItem::Update {
                new: (id, record), ..
            } => {
                let key = format!("{table}/{id}");
                let value = encode(table, &key, record, ring)?;
                out.push((key, Some(value)));
            }
            DiffItem::Remove(id, _) => out.push((format!("{table}/{id}"), None)),
        }
    }
    Ok(())
}

/// A record's JSON, its private key (if any) sealed to its row key.
fn encode<T: Serialize>(
    table: &str,
    key: &str,
    record: &T,
    ring: &Keyring,
) -> anyhow::Result<Vec<u8>> {
    let mut value = serde_json::to_value(record)?;
    if let Some(pointer) = secret_pointer(table)
        && let Some(slot) = value.pointer_mut(pointer)
        && let Value::String(secret) = slot
    {
        let sealed = ring.seal(secret.as_bytes(), key.as_bytes())?;
        *slot = serde_json::to_value(sealed)?;
    }
    Ok(serde_json::to_vec(&value)?)
}

/// A record from its row, its private key opened.
fn decode<T: DeserializeOwned>(
    table: &str,
    key: &str,
    bytes: &[u8],
    ring: &Keyring,
) -> anyhow::Result<T> {
    let mut value: Value = serde_json::from_slice(bytes).context("not JSON")?;
    if let Some(pointer) = secret_pointer(table)
        && let Some(slot) = value.pointer_mut(pointer)
    {
        let sealed = match &mut *slot {
            Value::Null => None,
            Value::String(_) => {
                bail!("its private key is stored in the clear; fleet keys are sealed")
            }
            other => Some(other.take()),
        };
        if let Some(sealed) = sealed {
            let sealed: Sealed =
                serde_json::from_value(sealed).context("its sealed private key")?;
            let secret = ring
                .open(&sealed, key.as_bytes())
                .context("its private key")?;
            *slot =
                Value::String(String::from_utf8(secret).context("its private key is not text")?);
        }
    }
    Ok(serde_json::from_value(value)?)
}

/// Applies one row (written, or deleted when `value` is none) to `state`.
pub fn apply(
    state: &mut State,
    key: &str,
    value: Option<&[u8]>,
    ring: &Keyring,
) -> anyhow::Result<()> {
    let fail = || format!("the record {key:?}");
    if key == GUARD {
        return Ok(());
    }
    let (table, id) = key
        .split_once('/')
        .with_context(|| format!("{}: not a known record", fail()))?;
    let Some(bytes) = value else {
        match table {
            HOSTNAMES => {
                state.hostnames.remove(id);
            }
            CAS => {
                state.cas.remove(id);
            }
            CERTS => {
                state.certs.remove(id);
            }
            TOKENS => {
                state.tokens.remove(id);
            }
            _ => bail!("{}: the zone's settings cannot be deleted", fail()),
        }
        return Ok(());
    };
    (|| {
        match table {
            SETTINGS => match id {
                "meta" => state.meta = decode(table, key, bytes, ring)?,
                "zone" => state.zone = decode(table, key, bytes, ring)?,
                "rules" => state.rules = decode(table, key, bytes, ring)?,
                "ruleset" => state.ruleset = decode(table, key, bytes, ring)?,
                _ => bail!("not a known setting"),
            },
            HOSTNAMES => {
                let host: crate::control::model::Hostname = decode(table, key, bytes, ring)?;
                if host.id != id {
                    bail!("it holds hostname {:?}", host.id);
                }
                if let Some(other) = state.hostnames.by_name(&host.name)
                    && other.id != id
                {
                    bail!("its name {:?} is hostname {:?}'s", host.name, other.id);
                }
                state.hostnames.insert(id.into(), host);
            }
            CAS => insert(&mut state.cas, table, key, id, bytes, ring, |r| &r.id)?,
            CERTS => insert(&mut state.certs, table, key, id, bytes, ring, |r| &r.id)?,
            TOKENS => insert(&mut state.tokens, table, key, id, bytes, ring, |r| &r.id)?,
            _ => bail!("not a known record"),
        }
        anyhow::Ok(())
    })()
    .with_context(fail)
}

fn insert<T: DeserializeOwned + Clone>(
    table: &mut Table<T>,
    name: &str,
    key: &str,
    id: &str,
    bytes: &[u8],
    ring: &Keyring,
    id_of: impl Fn(&T) -> &String,
) -> anyhow::Result<()> {
    let record: T = decode(name, key, bytes, ring)?;
    if id_of(&record) != id {
        bail!("it holds record {:?}", id_of(&record));
    }
    table.insert(id.into(), record);
    Ok(())
}

/// The state the rows hold (keys relative to the configuration prefix); none
/// when there are no rows (a new prefix).
pub fn state_of<'a>(
    rows: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ring: &Keyring,
) -> anyhow::Result<Option<State>> {
    let rows: Vec<(&str, &[u8])> = rows.into_iter().collect();
    if rows.is_empty() {
        return Ok(None);
    }
    let setting = |name: &str| {
        let key = format!("{SETTINGS}/{name}");
        rows.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
            .with_context(|| format!("the configuration has no {key:?} record"))
    };
    let mut state = State::empty_tables();
    for name in ["meta", "zone", "rules", "ruleset"] {
        apply(
            &mut state,
            &format!("{SETTINGS}/{name}"),
            Some(setting(name)?),
            ring,
        )?;
    }
    let known = |key: &str| {
        key.strip_prefix(SETTINGS)
            .and_then(|k| k.strip_prefix('/'))
            .is_some_and(|k| ["meta", "zone", "rules", "ruleset"].contains(&k))
    };
    // Every other row, unknown settings included (refused as the watch does).
    for (key, value) in rows.into_iter().filter(|(k, _)| !known(k)) {
        apply(&mut state, key, Some(value), ring)?;
    }
    Ok(Some(state))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        Keyring::parse("k1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
            .unwrap()
    }

    fn first() -> State {
        crate::control::first_state("localhost").unwrap().0
    }

    #[test]
    fn rows_give_back_the_state_with_every_private_key_sealed() {
        let ring = ring();
        let state = first();
        let rows = changes(None, &state, &ring).unwrap();
        for (key, value) in &rows {
            let text = String::from_utf8(value.clone().unwrap()).unwrap();
            assert!(
                !text.contains("PRIVATE KEY"),
                "{key} holds a key in the clear: {text}"
            );
        }
        let back = state_of(
            rows.iter()
                .map(|(k, v)| (k.as_str(), v.as_deref().unwrap())),
            &ring,
        )
        .unwrap()
        .unwrap();
        assert_eq!(back, state);
    }

    #[test]
    fn a_change_is_only_the_rows_it_touched() {
        let ring = ring();
        let old = first();
        let mut new = old.clone();
        new.zone.min_tls_version = crate::tls_version::TlsVersion::Tls13;
        let gone = new.hostname_by_name("localhost").unwrap().id.clone();
        new.hostnames.remove(&gone);
        let rows = changes(Some(&old), &new, &ring).unwrap();
        let keys: Vec<(&str, bool)> = rows
            .iter()
            .map(|(k, v)| (k.as_str(), v.is_some()))
            .collect();
        assert_eq!(
            keys,
            [
                ("settings/zone", true),
                (format!("hostnames/{gone}").as_str(), false)
            ]
        );
        let mut applied = old.clone();
        for (k, v) in &rows {
            apply(&mut applied, k, v.as_deref(), &ring).unwrap();
        }
        assert_eq!(applied, new);
    }

    #[test]
    fn hostile_rows_are_refused_with_their_key() {
        let ring = ring();
        let state = first();
        let ca = state.managed_ca().unwrap();
        let key = format!("cas/{}", ca.id);
        let clear = serde_json::to_vec(ca).unwrap();
        let moved = encode(CAS, "cas/other", ca, &ring).unwrap();
        let other_id = encode(CAS, "cas/x", ca, &ring).unwrap();
        let mut host = state.hostname_by_name("localhost").unwrap().clone();
        host.id = "twin".into();
        let twin_key = "hostnames/twin".to_string();
        let twin = encode(HOSTNAMES, &twin_key, &host, &ring).unwrap();
        for (k, v, says) in [
            (key.as_str(), clear.as_slice(), "in the clear"),
            (key.as_str(), moved.as_slice(), "moved from another record"),
            ("cas/x", other_id.as_slice(), "it holds record"),
            (key.as_str(), b"{not json".as_slice(), "not JSON"),
            ("settings/zone", b"{}".as_slice(), "settings/zone"),
            ("elsewhere/1", b"{}".as_slice(), "not a known record"),
            ("nothing", b"{}".as_slice(), "not a known record"),
            (twin_key.as_str(), twin.as_slice(), "is hostname"),
        ] {
            let mut s = state.clone();
            let e = apply(&mut s, k, Some(v), &ring).unwrap_err();
            let text = format!("{e:#}");
            assert!(text.contains(says) && text.contains(k), "{k}: {text}");
            assert_eq!(s, state, "a refused row changes nothing");
        }
        let e = apply(&mut state.clone(), "settings/zone", None, &ring).unwrap_err();
        assert!(format!("{e:#}").contains("cannot be deleted"));
    }
}
