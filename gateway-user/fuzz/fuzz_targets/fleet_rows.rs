//! Fleet rows as etcd hands them to a node: `rows::apply` of one row
//! (written or deleted) onto a real first-run state, with a fixed master key.
//!
//! Input: byte 0 = mode:
//! - bit 0 clear, raw mode: the rest is `KEY\nVALUE` (no newline: a delete of KEY);
//! - bit 0 set, built mode: byte 1 picks one of the state's own rows (sealed
//!   keys and all), byte 2 an offset in its value, and the rest overwrites
//!   the value from there (a row damaged in etcd, or written by hand).
//!
//! Invariants:
//! - nothing panics;
//! - a refused row changes nothing;
//! - after an accepted row, the state's rows decode back to the same state.
#![no_main]

use std::sync::OnceLock;

use gateway::control::{
    backend::fleet::{rows, seal::Keyring},
    model::State,
};
use libfuzzer_sys::fuzz_target;

const KEY: &str = "fuzz 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

fn ring() -> &'static Keyring {
    static RING: OnceLock<Keyring> = OnceLock::new();
    RING.get_or_init(|| Keyring::parse(KEY).expect("the fuzz key"))
}

/// A first-run state (made once, in a scratch store) and its rows.
fn base() -> &'static (State, Vec<rows::RowChange>) {
    static BASE: OnceLock<(State, Vec<rows::RowChange>)> = OnceLock::new();
    BASE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("fuzz-fleet-rows-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let state = gateway::control::open(&dir, "localhost")
            .expect("a first run")
            .state;
        let _ = std::fs::remove_dir_all(&dir);
        let rows = rows::changes(None, &state, ring()).expect("rows of a first state");
        (state, rows)
    })
}

fn row(data: &[u8]) -> Option<(String, Option<Vec<u8>>)> {
    let (&mode, rest) = data.split_first()?;
    if mode & 1 == 0 {
        return Some(match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (
                String::from_utf8_lossy(&rest[..i]).into_owned(),
                Some(rest[i + 1..].to_vec()),
            ),
            None => (String::from_utf8_lossy(rest).into_owned(), None),
        });
    }
    let (&pick, rest) = rest.split_first()?;
    let (&at, patch) = rest.split_first()?;
    let rows = &base().1;
    let (key, value) = &rows[usize::from(pick) % rows.len()];
    let mut value = value.clone().unwrap_or_default();
    let at = (usize::from(at) * value.len() / 256).min(value.len());
    let end = (at + patch.len()).min(value.len());
    value.splice(at..end, patch.iter().copied());
    Some((key.clone(), Some(value)))
}

fuzz_target!(|data: &[u8]| {
    let Some((key, value)) = row(data) else {
        return;
    };
    let before = &base().0;
    let mut state = before.clone();
    match rows::apply(&mut state, &key, value.as_deref(), ring()) {
        Err(_) => assert_eq!(&state, before, "a refused row changed the state"),
        Ok(()) => {
            let again = rows::changes(None, &state, ring()).expect("an accepted state encodes");
            let back = rows::state_of(
                again
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_deref().unwrap_or_default())),
                ring(),
            )
            .expect("an accepted state decodes")
            .expect("a state with settings");
            assert_eq!(
                back, state,
                "the rows of {key:?} do not give back the state"
            );
        }
    }
});
