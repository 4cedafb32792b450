//! The zone's firewall rules, as the reference service's rulesets API: the
//! one ruleset is the entry point of the `http_request_firewall_custom`
//! phase, reachable by its id (`/zones/Z/rulesets/{id}`) or by the phase
//! (`…/rulesets/phases/http_request_firewall_custom/entrypoint`). Rules are
//! added, changed, moved and deleted one at a time, or replaced all at once
//! (PUT); every change makes a new version. An expression that does not parse
//! or type-check is refused with its position.

use http::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Answer, ApiError, Call, Listing, Reply, method_not_allowed,
    page::{self, Paging},
};
use crate::{
    clock,
    control::{
        ControlPlane,
        model::State,
        ruleset::{RuleVersion, Version},
    },
    pki,
    rules::{Action, Expression, RuleSpec},
};

/// The phase of the rules (the reference service's name).
pub(super) const PHASE: &str = "http_request_firewall_custom";

/// One rule as a request gives it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleBody {
    /// In a PUT, an existing rule's id keeps it (and its version history).
    id: Option<String>,
    expression: Option<String>,
    action: Option<Action>,
    description: Option<String>,
    enabled: Option<bool>,
    /// Accepted and ignored: a rule's ref is its id here.
    #[serde(rename = "ref")]
    _ref: Option<String>,
    /// Where the rule goes: `{"before": id}`, `{"after": id}` or `{"index": n}` (1-based).
    position: Option<Position>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Position {
    before: Option<String>,
    after: Option<String>,
    index: Option<usize>,
}

/// A whole ruleset as a request gives it (POST /rulesets, PUT).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesetBody {
    name: Option<String>,
    description: Option<String>,
    kind: Option<String>,
    phase: Option<String>,
    rules: Option<Vec<RuleBody>>,
}

/// The ruleset's id: fixed for the zone.
pub(super) fn ruleset_id(s: &State) -> String {
    pki::sha256_hex(format!("ruleset\0{}\0{PHASE}", s.meta.zone_id).as_bytes())[..32].to_string()
}

/// `GET|POST /zones/Z/rulesets`.
pub(super) async fn collection(plane: &ControlPlane, call: &Call) -> Listing {
    match call.method {
        Method::GET => {
            let paging = Paging::of(call, page::WHOLE)?;
            plane
                .read(|s| {
                    let all = vec![summary(s, None)];
                    Ok(paging.reply(paging.take(all.into_iter()), 1))
                })
                .await
        }
        Method::POST => {
            let body: RulesetBody = call.json()?;
            check_kind(&body)?;
            let rules = body.rules.unwrap_or_default();
            let mut checked = Vec::with_capacity(rules.len());
            for (i, r) in rules.iter().enumerate() {
                checked.push(new_rule(r, &format!("/rules/{i}"))?);
            }
            plane
                .change(|s| {
                    if !s.rules.is_empty() {
                        return Err(ApiError::conflict(format!(
                            "the zone has its {PHASE} entry point ruleset already ({}, {} \
                             rules): add rules with POST /zones/Z/rulesets/{}/rules, or replace \
                             them with PUT",
                            ruleset_id(s),
                            s.rules.len(),
                            ruleset_id(s)
                        )));
                    }
                    edit(s, |s| {
                        s.rules = checked.clone();
                        rename(s, &body.name, &body.description);
                        Ok(())
                    })?;
                    Ok(full(s, None))
                })
                .await
                .map(Reply::from)
        }
        _ => Err(method_not_allowed("GET or POST")),
    }
}

/// `/zones/Z/rulesets/{id|phases/…/entrypoint}[/rules[/ID]|/versions[/N]]`,
/// `rest` after the ruleset's id or the phase's entry point.
pub(super) async fn route(
    plane: &ControlPlane,
    call: &Call,
    id: Option<&str>,
    rest: &[&str],
) -> Listing {
    if let Some(id) = id {
        let known = plane.read(ruleset_id).await;
        if id != known {
            return Err(ApiError::not_found("ruleset", id));
        }
    }
    let one = |answer: Answer| answer.map(Reply::from);
    match (rest, &call.method) {
        ([], &Method::GET) => one(plane.read(|s| Ok(full(s, None))).await),
        ([], &Method::PUT) => one(replace(plane, call).await),
        ([], &Method::DELETE) => one(plane
            .change(|s| {
                edit(s, |s| {
                    s.rules.clear();
                    Ok(())
                })?;
                Ok(json!({"id": ruleset_id(s)}))
            })
            .await),
        ([], _) => Err(method_not_allowed("GET, PUT or DELETE")),
        (["rules"], &Method::POST) => one(add(plane, call).await),
        (["rules"], _) => Err(method_not_allowed("POST")),
        (["rules", rule], &Method::PATCH) => one(change_rule(plane, call, rule).await),
        (["rules", rule], &Method::DELETE) => one(plane
            .change(|s| {
                let at = position_of(s, rule)?;
                edit(s, |s| {
                    s.rules.remove(at);
                    Ok(())
                })?;
                Ok(full(s, None))
            })
            .await),
        (["rules", _], _) => Err(method_not_allowed("PATCH or DELETE")),
        (["versions"], &Method::GET) => {
            let paging = Paging::of(call, page::WHOLE)?;
            plane
                .read(|s| {
                    let versions: Vec<Value> = s
                        .ruleset
                        .history
                        .iter()
                        .rev()
                        .map(|v| summary(s, Some(v)))
                        .collect();
                    let total = versions.len();
                    Ok(paging.reply(paging.take(versions.into_iter()), total))
                })
                .await
        }
        (["versions", v], &Method::GET) => one(plane
            .read(|s| {
                let kept = v.parse::<u64>().ok().and_then(|n| s.ruleset.at(n));
                let version = kept.ok_or_else(|| {
                    ApiError::not_found(
                        &format!(
                            "ruleset version (the last {} are kept)",
                            crate::control::ruleset::KEPT_VERSIONS
                        ),
                        v,
                    )
                })?;
                Ok(full(s, Some(version)))
            })
            .await),
        (["versions", ..], _) => Err(method_not_allowed("GET")),
        _ => Err(ApiError::not_found("route", &rest.join("/"))),
    }
}

/// PUT: the whole rule list (and name, description) replaced.
async fn replace(plane: &ControlPlane, call: &Call) -> Answer {
    let body: RulesetBody = call.json()?;
    check_kind(&body)?;
    let rules = body
        .rules
        .as_ref()
        .ok_or_else(|| ApiError::invalid("a ruleset needs \"rules\" (a list, [] for none)"))?;
    for (i, r) in rules.iter().enumerate() {
        if r.position.is_some() {
            return Err(ApiError::invalid(format!(
                "rules[{i}].position: a PUT gives the rules in order"
            )));
        }
        if let Some(e) = &r.expression {
            check(e, &format!("/rules/{i}/expression"))?;
        }
    }
    plane
        .change(|s| {
            let mut next = Vec::with_capacity(rules.len());
            for (i, r) in rules.iter().enumerate() {
                let at = format!("/rules/{i}");
                let rule = match &r.id {
                    Some(id) => {
                        let old = s.rules.iter().find(|o| o.id == *id).ok_or_else(|| {
                            ApiError::invalid(format!(
                                "rules[{i}].id {id:?} is not a rule of the ruleset; leave \"id\" \
                                 out to add a rule"
                            ))
                        })?;
                        updated(old.clone(), r)
                    }
                    None => new_rule(r, &at)?,
                };
                if next.iter().any(|n: &RuleSpec| n.id == rule.id) {
                    return Err(ApiError::invalid(format!("rules[{i}].id is given twice")));
                }
                next.push(rule);
            }
            edit(s, |s| {
                s.rules = next;
                rename(s, &body.name, &body.description);
                Ok(())
            })?;
            Ok(full(s, None))
        })
        .await
}

/// POST …/rules: one rule added (at the end, or at `position`).
async fn add(plane: &ControlPlane, call: &Call) -> Answer {
    let body: RuleBody = call.json()?;
    if body.id.is_some() {
        return Err(ApiError::invalid(
            "a new rule's id is chosen by the gateway",
        ));
    }
    let rule = new_rule(&body, "")?;
    plane
        .change(|s| {
            let at = match &body.position {
                Some(p) => index(s, p, None)?,
                None => s.rules.len(),
            };
            edit(s, |s| {
                s.rules.insert(at, rule.clone());
                Ok(())
            })?;
            Ok(full(s, None))
        })
        .await
}

/// PATCH …/rules/ID: its fields changed, or moved.
async fn change_rule(plane: &ControlPlane, call: &Call, id: &str) -> Answer {
    let body: RuleBody = call.json()?;
    if let Some(e) = &body.expression {
        check(e, "/expression")?;
    }
    if body.id.as_deref().is_some_and(|given| given != id) {
        return Err(ApiError::invalid("a rule's id cannot change"));
    }
    plane
        .change(|s| {
            let at = position_of(s, id)?;
            let rule = updated(s.rules[at].clone(), &body);
            let mut without = s.rules.clone();
            without.remove(at);
            let to = match &body.position {
                Some(p) => index_in(&without, p, Some(id))?,
                None => at,
            };
            edit(s, |s| {
                s.rules = without;
                s.rules.insert(to, rule);
                Ok(())
            })?;
            Ok(full(s, None))
        })
        .await
}

/// Makes a change to the rules and records it as a new version.
fn edit(
    s: &mut State,
    change: impl FnOnce(&mut State) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    let old = s.rules.clone();
    change(s)?;
    let new = s.rules.clone();
    s.ruleset.changed(&old, &new, clock::now());
    Ok(())
}

fn rename(s: &mut State, name: &Option<String>, description: &Option<String>) {
    if let Some(n) = name {
        s.ruleset.name = n.clone();
    }
    if let Some(d) = description {
        s.ruleset.description = d.clone();
    }
}

/// Only the phase served here, as a zone ruleset.
fn check_kind(body: &RulesetBody) -> Result<(), ApiError> {
    if let Some(kind) = body.kind.as_deref().filter(|k| *k != "zone") {
        return Err(ApiError::invalid(format!(
            "kind {kind:?}: only \"zone\" rulesets are served"
        )));
    }
    if let Some(phase) = body.phase.as_deref().filter(|p| *p != PHASE) {
        return Err(ApiError::invalid(format!(
            "phase {phase:?}: only {PHASE:?} is served"
        )));
    }
    Ok(())
}

/// A new rule from a body that must give its expression and action.
fn new_rule(body: &RuleBody, pointer: &str) -> Result<RuleSpec, ApiError> {
    let (Some(expression), Some(action)) = (&body.expression, body.action) else {
        return Err(ApiError::invalid(format!(
            "a rule needs \"expression\" and \"action\" (block, allow or log){}",
            if pointer.is_empty() {
                String::new()
            } else {
                format!(" at {pointer}")
            }
        )));
    };
    check(expression, &format!("{pointer}/expression"))?;
    Ok(RuleSpec {
        id: pki::random_id(),
        description: body.description.clone().unwrap_or_default(),
        expression: expression.clone(),
        action,
        enabled: body.enabled.unwrap_or(true),
    })
}

/// A rule with the fields a body gives changed (expressions already checked).
fn updated(mut rule: RuleSpec, body: &RuleBody) -> RuleSpec {
    if let Some(e) = &body.expression {
        rule.expression = e.clone();
    }
    if let Some(a) = body.action {
        rule.action = a;
    }
    if let Some(d) = &body.description {
        rule.description = d.clone();
    }
    if let Some(e) = body.enabled {
        rule.enabled = e;
    }
    rule
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpressionBody {
    expression: String,
}

/// `POST /zones/Z/filters/validate-expr`: whether `{"expression":…}` would be
/// accepted in a rule, and if not, the error at its line and column (the
/// dashboard's editor checks as the user types).
pub(super) fn validate(call: &Call) -> Answer {
    let body: ExpressionBody = call.json()?;
    check(&body.expression, "/expression")?;
    Ok(json!({"valid": true}))
}

/// Parses and type-checks an expression; the error says where it is wrong.
fn check(expression: &str, pointer: &str) -> Result<(), ApiError> {
    Expression::compile(expression).map(drop).map_err(|e| {
        let mut error = ApiError::invalid_with(
            10014,
            format!(
                "expression: error at line {}, column {}: {}\n{}",
                e.line, e.column, e.message, e.excerpt
            ),
        );
        error.source = Some(json!({
            "pointer": pointer,
            "offset": e.offset,
            "line": e.line,
            "column": e.column,
        }));
        error
    })
}

fn position_of(s: &State, id: &str) -> Result<usize, ApiError> {
    s.rules
        .iter()
        .position(|r| r.id == id)
        .ok_or_else(|| ApiError::not_found("rule", id))
}

/// The index a position names in the current list.
fn index(s: &State, p: &Position, moving: Option<&str>) -> Result<usize, ApiError> {
    index_in(&s.rules, p, moving)
}

/// The index a position names in `rules` (the moving rule already taken out).
fn index_in(rules: &[RuleSpec], p: &Position, moving: Option<&str>) -> Result<usize, ApiError> {
    let anchor = |id: &String| -> Result<usize, ApiError> {
        if Some(id.as_str()) == moving {
            return Err(ApiError::invalid(
                "a rule cannot be placed relative to itself",
            ));
        }
        rules
            .iter()
            .position(|r| r.id == *id)
            .ok_or_else(|| ApiError::not_found("rule", id))
    };
    match (&p.before, &p.after, p.index) {
        (Some(id), None, None) => anchor(id),
        (None, Some(id), None) => Ok(anchor(id)? + 1),
        (None, None, Some(i)) if (1..=rules.len() + 1).contains(&i) => Ok(i - 1),
        (None, None, Some(i)) => Err(ApiError::invalid(format!(
            "position.index {i} is out of range: 1 to {}",
            rules.len() + 1
        ))),
        _ => Err(ApiError::invalid(
            "position takes exactly one of \"before\", \"after\" or \"index\"",
        )),
    }
}

/// The ruleset without its rules, now or at a kept version.
fn summary(s: &State, at: Option<&Version>) -> Value {
    let (version, last_updated) = match at {
        Some(v) => (v.version, v.last_updated),
        None => (s.ruleset.version, s.ruleset.last_updated),
    };
    json!({
        "id": ruleset_id(s),
        "name": s.ruleset.name,
        "description": s.ruleset.description,
        "kind": "zone",
        "phase": PHASE,
        "version": version.to_string(),
        "last_updated": clock::rfc3339(last_updated),
    })
}

/// The ruleset with its rules, now or at a kept version.
fn full(s: &State, at: Option<&Version>) -> Value {
    let (rules, versions) = match at {
        Some(v) => (&v.rules, &v.rule_versions),
        None => (&s.rules, &s.ruleset.rules),
    };
    let mut out = summary(s, at);
    out["rules"] = rules
        .iter()
        .map(|r| rule_view(r, versions.get(&r.id)))
        .collect();
    out
}

fn rule_view(r: &RuleSpec, v: Option<&RuleVersion>) -> Value {
    let v = v.copied().unwrap_or(RuleVersion {
        version: 1,
        last_updated: 0,
    });
    json!({
        "id": r.id,
        "ref": r.id,
        "version": v.version.to_string(),
        "expression": r.expression,
        "action": r.action,
        "description": r.description,
        "enabled": r.enabled,
        "last_updated": clock::rfc3339(v.last_updated),
    })
}
