//! Firewall rules in the Cloudflare Rules language.
//!
//! scheme (typed fields) → parser (AST with positions) → compile (type check
//! and closures) → [`RuleSet`]: an ordered list evaluated on every request
//! with no parsing, no locks and no allocation ([`RuleSet::decide`]). Every error is found when a
//! rule is saved, with its line, column and a caret.

pub mod compile;
pub mod error;
pub mod fields;
pub mod ipset;
pub mod lexer;
pub mod parser;
pub mod sample;
pub mod scheme;
pub mod text;

#[cfg(test)]
mod tests;

use std::fmt;

use rustc_hash::FxHashMap as HashMap;

use serde::{Deserialize, Serialize};

pub use error::RuleError;

pub use fields::RequestFields;

/// A compiled Boolean expression.
pub struct Expression {
    source: String,
    eval: Box<dyn Fn(&RequestFields<'_>) -> bool + Send + Sync>,
    /// The only hostnames it can match, when the expression says so.
    hosts: Option<Vec<String>>,
}

impl Expression {
    /// Parses, type-checks and compiles an expression.
    pub fn compile(source: &str) -> Result<Expression, RuleError> {
        let ast = parser::parse(source)?;
        let eval = compile::compile_bool(source, &ast)?;
        let hosts = parser::required_hosts(&ast);
        Ok(Expression {
            source: source.to_string(),
            eval,
            hosts,
        })
    }

    /// Evaluates it on a request.
    pub fn matches(&self, request: &RequestFields<'_>) -> bool {
        (self.eval)(request)
    }

    /// The text it was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expression({:?})", self.source)
    }
}

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Refuse the request (403).
    Block,
    /// Stop evaluating and let the request through.
    Allow,
    /// Count the match and go on.
    Log,
}

impl Action {
    /// The action's name, as in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Block => "block",
            Action::Allow => "allow",
            Action::Log => "log",
        }
    }
}

/// A rule as configured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Identifier (in metrics and logs).
    pub id: String,
    /// What the rule is for.
    #[serde(default)]
    pub description: String,
    /// The expression.
    pub expression: String,
    /// What a match does.
    pub action: Action,
    /// Disabled rules are kept but not evaluated.
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn enabled() -> bool {
    true
}

/// Two ascending lists of indexes, merged in order.
fn merged<'a>(a: &'a [usize], b: &'a [usize]) -> impl Iterator<Item = usize> + 'a {
    let (mut i, mut j) = (0, 0);
    std::iter::from_fn(move || {
        let next = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) if x <= y => {
                i += 1;
                x
            }
            (_, Some(&y)) => {
                j += 1;
                y
            }
            (Some(&x), None) => {
                i += 1;
                x
            }
            (None, None) => return None,
        };
        Some(next)
    })
}

/// A compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// Identifier.
    pub id: String,
    /// What the rule is for (in the access log).
    pub description: String,
    /// The expression.
    pub expression: Expression,
    /// What a match does.
    pub action: Action,
}

/// The zone's rules, compiled, in order (disabled ones left out), indexed by
/// the hostnames they are limited to: a request is only tested against the
/// rules that can match its host.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// Rules that may match any host (indexes, ascending).
    any_host: Vec<usize>,
    /// Host → rules limited to it (indexes, ascending).
    by_host: HashMap<String, Vec<usize>>,
}

/// The outcome of evaluating the rules on a request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict<'a> {
    /// The rule that decided (block or allow), if any.
    pub decided_by: Option<(&'a str, Action)>,
    /// Every rule that matched, in order (log rules included).
    pub matched: Vec<(&'a str, Action)>,
}

impl Verdict<'_> {
    /// Whether the request is blocked.
    pub fn blocked(&self) -> bool {
        matches!(self.decided_by, Some((_, Action::Block)))
    }
}

impl RuleSet {
    /// Compiles rules; the error names the rule.
    pub fn compile(specs: &[RuleSpec]) -> Result<RuleSet, (String, RuleError)> {
        let mut set = RuleSet::default();
        for spec in specs.iter().filter(|s| s.enabled) {
            let expression =
                Expression::compile(&spec.expression).map_err(|e| (spec.id.clone(), e))?;
            let index = set.rules.len();
            match &expression.hosts {
                None => set.any_host.push(index),
                Some(hosts) => {
                    for host in hosts {
                        let list = set.by_host.entry(host.clone()).or_default();
                        if list.last() != Some(&index) {
                            list.push(index);
                        }
                    }
                }
            }
            set.rules.push(Rule {
                id: spec.id.clone(),
                description: spec.description.clone(),
                expression,
                action: spec.action,
            });
        }
        Ok(set)
    }

    /// Number of enabled rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there is no enabled rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules, in order (their position is the index [`RuleSet::decide`] reports).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Evaluates the rules in order: the first matching block or allow decides;
    /// log rules are recorded and evaluation goes on.
    pub fn evaluate(&self, request: &RequestFields<'_>) -> Verdict<'_> {
        let mut verdict = Verdict::default();
        verdict.decided_by = self.decide(request, |index| {
            let rule = &self.rules[index];
            verdict.matched.push((rule.id.as_str(), rule.action));
        });
        verdict
    }

    /// Evaluates the rules as [`RuleSet::evaluate`] does, without collecting:
    /// `matched` is called with the index (in [`RuleSet::rules`]) of every
    /// rule that matches, in order; the answer is the rule that decided.
    pub fn decide(
        &self,
        request: &RequestFields<'_>,
        mut matched: impl FnMut(usize),
    ) -> Option<(&str, Action)> {
        let for_host = self
            .by_host
            .get(&*request.host)
            .map_or(&[][..], Vec::as_slice);
        for index in merged(&self.any_host, for_host) {
            let rule = &self.rules[index];
            if !rule.expression.matches(request) {
                continue;
            }
            matched(index);
            if rule.action != Action::Log {
                return Some((rule.id.as_str(), rule.action));
            }
        }
        None
    }
}
