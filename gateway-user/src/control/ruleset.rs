//! The zone's ruleset as the reference service versions it: the entry point
//! of the `http_request_firewall_custom` phase, whose `version` goes up with
//! every change, each rule with its own version and time of last change, and
//! the last [`KEPT_VERSIONS`] versions kept to be read back. The rules
//! themselves are the state's `rules` (what both layers compile).

use std::{collections::BTreeMap, sync::Arc};

use serde::{Deserialize, Serialize};

use crate::rules::RuleSpec;

/// Versions kept for `…/versions/{version}`.
pub const KEPT_VERSIONS: usize = 20;

/// The ruleset's name, description and versions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ruleset {
    /// Its name (`default` until set).
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Its version: 1 at first, one more per change.
    pub version: u64,
    /// When it last changed (Unix seconds).
    pub last_updated: i64,
    /// Each rule's version and last change, by rule id.
    pub rules: BTreeMap<String, RuleVersion>,
    /// The latest versions, oldest first (the current one last). The store
    /// keeps them as rows of their own, so a change writes only its version.
    #[serde(default)]
    pub history: Vec<Arc<Version>>,
}

/// A rule's version and its last change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleVersion {
    /// 1 when added, one more per change.
    pub version: u64,
    /// Unix seconds.
    pub last_updated: i64,
}

/// One version of the ruleset, as it was.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Its number.
    pub version: u64,
    /// When it was made (Unix seconds).
    pub last_updated: i64,
    /// The rules it had.
    pub rules: Vec<RuleSpec>,
    /// Each rule's version then.
    pub rule_versions: BTreeMap<String, RuleVersion>,
}

impl Ruleset {
    /// The first version, for a store made before versions were kept or a new one.
    pub fn first(rules: &[RuleSpec], now: i64) -> Ruleset {
        let mut r = Ruleset {
            name: "default".into(),
            description: String::new(),
            version: 0,
            last_updated: now,
            rules: BTreeMap::new(),
            history: Vec::new(),
        };
        r.changed(&[], rules, now);
        r
    }

    /// Records a change of the rules from `old` to `new`: the ruleset's
    /// version goes up, and so does each rule's that was added or changed.
    pub fn changed(&mut self, old: &[RuleSpec], new: &[RuleSpec], now: i64) {
        self.version += 1;
        self.last_updated = now;
        let before: BTreeMap<&str, &RuleSpec> = old.iter().map(|r| (r.id.as_str(), r)).collect();
        let mut versions = BTreeMap::new();
        for rule in new {
            let kept = self.rules.get(&rule.id).copied();
            let same = before.get(rule.id.as_str()) == Some(&rule);
            let v = match kept {
                Some(v) if same => v,
                Some(v) => RuleVersion {
                    version: v.version + 1,
                    last_updated: now,
                },
                None => RuleVersion {
                    version: 1,
                    last_updated: now,
                },
            };
            versions.insert(rule.id.clone(), v);
        }
        self.rules = versions;
        self.history.push(Arc::new(Version {
            version: self.version,
            last_updated: now,
            rules: new.to_vec(),
            rule_versions: self.rules.clone(),
        }));
        let extra = self.history.len().saturating_sub(KEPT_VERSIONS);
        self.history.drain(..extra);
    }

    /// A kept version.
    pub fn at(&self, version: u64) -> Option<&Version> {
        self.history
            .iter()
            .find(|v| v.version == version)
            .map(|v| &**v)
    }

    /// After loading: the kept versions read from the store, with the current
    /// one made from `rules` if the store has none (a store from before the
    /// versions had rows of their own).
    pub fn loaded(&mut self, mut kept: Vec<Version>, rules: &[RuleSpec]) {
        kept.sort_by_key(|v| v.version);
        kept.retain(|v| v.version <= self.version);
        if kept.last().is_none_or(|v| v.version != self.version) {
            kept.push(Version {
                version: self.version,
                last_updated: self.last_updated,
                rules: rules.to_vec(),
                rule_versions: self.rules.clone(),
            });
        }
        let extra = kept.len().saturating_sub(KEPT_VERSIONS);
        self.history = kept.into_iter().skip(extra).map(Arc::new).collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Action;

    fn rule(id: &str, expression: &str) -> RuleSpec {
        RuleSpec {
            id: id.into(),
            description: String::new(),
            expression: expression.into(),
            action: Action::Block,
            enabled: true,
        }
    }

    #[test]
    fn versions_go_up_for_the_ruleset_and_for_the_rules_that_changed() {
        let a = rule("a", "ssl");
        let mut r = Ruleset::first(std::slice::from_ref(&a), 10);
        assert_eq!((r.version, r.rules["a"].version), (1, 1));
        let b = rule("b", "ssl");
        r.changed(std::slice::from_ref(&a), &[a.clone(), b.clone()], 20);
        assert_eq!(
            (r.version, r.rules["a"], r.rules["b"].version),
            (
                2,
                RuleVersion {
                    version: 1,
                    last_updated: 10
                },
                1
            )
        );
        let a2 = rule("a", "not ssl");
        r.changed(&[a.clone(), b.clone()], &[a2.clone(), b.clone()], 30);
        assert_eq!(
            (r.version, r.rules["a"].version, r.rules["b"].version),
            (3, 2, 1)
        );
        r.changed(&[a2.clone(), b.clone()], std::slice::from_ref(&b), 40);
        assert!(!r.rules.contains_key("a"));
        assert_eq!(r.at(2).unwrap().rules, [a, b.clone()]);
        for t in 0..30 {
            r.changed(&[], &[], 50 + t);
        }
        assert_eq!(r.history.len(), KEPT_VERSIONS);
        assert!(r.at(2).is_none() && r.at(r.version).is_some());
        // Loaded back: the kept rows, or the current version alone.
        let rows: Vec<Version> = r.history.iter().map(|v| (**v).clone()).collect();
        let mut back = r.clone();
        back.history.clear();
        back.loaded(rows, &[]);
        assert_eq!(back, r);
        let mut bare = r.clone();
        bare.history.clear();
        bare.loaded(Vec::new(), std::slice::from_ref(&b));
        assert_eq!(bare.history.len(), 1);
        assert_eq!(bare.at(r.version).unwrap().rules, [b]);
    }
}
