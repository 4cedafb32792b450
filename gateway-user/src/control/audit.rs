//! The audit log: every change the control plane commits is recorded in the
//! same store transaction, with who made it (the API token, or the gateway
//! itself for its hourly renewals and CRL refreshes), the call, the records it
//! touched and its outcome. A refused change commits nothing, so it leaves no
//! entry. Entries are numbered in commit order.

use std::future::Future;

use imbl::ordmap::DiffItem;
use serde::{Deserialize, Serialize};

use super::model::{State, Table};

/// Who is making the changes of the current task, and through which call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The token's id (`gateway` for the gateway's own changes).
    pub token_id: String,
    /// The token's name.
    pub token_name: String,
    /// The HTTP method (`-` for the gateway's own changes).
    pub method: String,
    /// The path after `/client/v4/` (or what the gateway was doing).
    pub path: String,
}

impl Actor {
    /// The gateway itself, doing `what`.
    pub fn gateway(what: &str) -> Actor {
        Actor {
            token_id: "gateway".into(),
            token_name: "the gateway".into(),
            method: "-".into(),
            path: what.into(),
        }
    }
}

/// One committed change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its number, from 1, in commit order.
    pub seq: u64,
    /// When it was committed (Unix seconds).
    pub at: i64,
    /// Who made it, through which call.
    pub actor: Actor,
    /// The records it touched: `hostname:ID`, `ca:ID`, `client_certificate:ID`,
    /// `token:ID`, `zone`, `rules` (at most [`MAX_RESOURCES`], then `…`).
    pub resources: Vec<String>,
    /// `success`.
    pub outcome: String,
}

/// Resources named per entry, at most.
pub const MAX_RESOURCES: usize = 20;

tokio::task_local! {
    static ACTOR: Actor;
}

/// Runs `work` with its changes recorded as made by `actor`.
pub async fn acting<F: Future>(actor: Actor, work: F) -> F::Output {
    ACTOR.scope(actor, work).await
}

/// The current task's actor, else `fallback`.
pub fn actor_or(fallback: impl FnOnce() -> Actor) -> Actor {
    ACTOR.try_with(Actor::clone).unwrap_or_else(|_| fallback())
}

/// The records a change from `old` to `new` touched.
pub fn touched(old: &State, new: &State) -> Vec<String> {
    fn walk<T: Clone + PartialEq>(
        kind: &str,
        old: &Table<T>,
        new: &Table<T>,
        out: &mut Vec<String>,
    ) {
        for item in old.diff(new) {
            let id = match item {
                DiffItem::Add(id, _) | DiffItem::Remove(id, _) => id,
                DiffItem::Update { new: (id, _), .. } => id,
            };
            out.push(format!("{kind}:{id}"));
        }
    }
    let mut out = Vec::new();
    if old.zone != new.zone {
        out.push("zone".to_string());
    }
    if old.rules != new.rules || old.ruleset != new.ruleset {
        out.push("rules".to_string());
    }
    if old.meta != new.meta {
        out.push("meta".to_string());
    }
    walk(
        "hostname",
        old.hostnames.table(),
        new.hostnames.table(),
        &mut out,
    );
    walk("ca", &old.cas, &new.cas, &mut out);
    walk("client_certificate", &old.certs, &new.certs, &mut out);
    walk("token", &old.tokens, &new.tokens, &mut out);
    if out.len() > MAX_RESOURCES {
        let more = out.len() - MAX_RESOURCES;
        out.truncate(MAX_RESOURCES);
        out.push(format!("… and {more} more"));
    }
    out
}

/// The `page`th `per_page` of `entries` (newest first) committed in
/// `[since, before)` (Unix seconds), and how many match: what both stores'
/// audit listings answer.
pub fn page_of(
    entries: impl IntoIterator<Item = anyhow::Result<Entry>>,
    since: Option<i64>,
    before: Option<i64>,
    (page, per_page): (usize, usize),
) -> anyhow::Result<(Vec<Entry>, usize)> {
    let skip = (page - 1).saturating_mul(per_page);
    let (mut out, mut total) = (Vec::new(), 0);
    for entry in entries {
        let entry = entry?;
        if since.is_some_and(|s| entry.at < s) || before.is_some_and(|b| entry.at >= b) {
            continue;
        }
        if total >= skip && out.len() < per_page {
            out.push(entry);
        }
        total += 1;
    }
    Ok((out, total))
}
