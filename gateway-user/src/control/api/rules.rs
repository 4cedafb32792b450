//! The zone's firewall rules: the custom-rules phase entry point, an ordered
//! list with create, update, delete and reorder. An expression that does not
//! parse or type-check is refused with its position.

use http::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Answer, ApiError, Call, method_not_allowed};
use crate::{
    control::{ControlPlane, model::State, pki},
    rules::{Action, Expression, RuleSpec},
};

/// The phase of the rules (the reference service's name).
const PHASE: &str = "http_request_firewall_custom";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    expression: Option<String>,
    action: Option<Action>,
    description: Option<String>,
    enabled: Option<bool>,
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

/// `…/rulesets/phases/http_request_firewall_custom/entrypoint[/rules[/ID]]`.
pub async fn route(plane: &ControlPlane, call: &Call, rest: &[&str]) -> Answer {
    match (rest, &call.method) {
        ([], &Method::GET) => plane.read(|s| Ok(ruleset(s))).await,
        ([], _) => Err(method_not_allowed("GET")),
        (["rules"], &Method::POST) => {
            let body: Body = call.json()?;
            let (Some(expression), Some(action)) = (&body.expression, body.action) else {
                return Err(ApiError::invalid(
                    "a rule needs \"expression\" and \"action\" (block, allow or log)",
                ));
            };
            check(expression)?;
            plane
                .change(|s| {
                    let rule = RuleSpec {
                        id: pki::random_id(),
                        description: body.description.clone().unwrap_or_default(),
                        expression: expression.clone(),
                        action,
                        enabled: body.enabled.unwrap_or(true),
                    };
                    let at = match &body.position {
                        Some(p) => index(s, p, None)?,
                        None => s.rules.len(),
                    };
                    s.rules.insert(at, rule);
                    Ok(ruleset(s))
                })
                .await
        }
        (["rules"], _) => Err(method_not_allowed("POST")),
        (["rules", id], &Method::PATCH) => {
            let body: Body = call.json()?;
            if let Some(e) = &body.expression {
                check(e)?;
            }
            plane
                .change(|s| {
                    let at = position_of(s, id)?;
                    let mut rule = s.rules.remove(at);
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
                    let to = match &body.position {
                        Some(p) => index(s, p, Some(id))?,
                        None => at,
                    };
                    s.rules.insert(to, rule);
                    Ok(ruleset(s))
                })
                .await
        }
        (["rules", id], &Method::DELETE) => {
            plane
                .change(|s| {
                    let at = position_of(s, id)?;
                    s.rules.remove(at);
                    Ok(ruleset(s))
                })
                .await
        }
        (["rules", _], _) => Err(method_not_allowed("PATCH or DELETE")),
        _ => Err(ApiError::not_found("route", &rest.join("/"))),
    }
}

/// Parses and type-checks an expression; the error says where it is wrong.
fn check(expression: &str) -> Result<(), ApiError> {
    Expression::compile(expression).map(drop).map_err(|e| {
        let mut error = ApiError::invalid_with(
            10014,
            format!(
                "expression: error at line {}, column {}: {}\n{}",
                e.line, e.column, e.message, e.excerpt
            ),
        );
        error.source = Some(json!({
            "pointer": "/expression",
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

/// The index a position names in the list (the moving rule already taken out).
fn index(s: &State, p: &Position, moving: Option<&str>) -> Result<usize, ApiError> {
    let anchor = |id: &String| -> Result<usize, ApiError> {
        if Some(id.as_str()) == moving {
            return Err(ApiError::invalid(
                "a rule cannot be placed relative to itself",
            ));
        }
        position_of(s, id)
    };
    match (&p.before, &p.after, p.index) {
        (Some(id), None, None) => anchor(id),
        (None, Some(id), None) => Ok(anchor(id)? + 1),
        (None, None, Some(i)) if (1..=s.rules.len() + 1).contains(&i) => Ok(i - 1),
        (None, None, Some(i)) => Err(ApiError::invalid(format!(
            "position.index {i} is out of range: 1 to {}",
            s.rules.len() + 1
        ))),
        _ => Err(ApiError::invalid(
            "position takes exactly one of \"before\", \"after\" or \"index\"",
        )),
    }
}

fn ruleset(s: &State) -> Value {
    json!({
        "id": s.meta.zone_id,
        "name": "default",
        "kind": "zone",
        "phase": PHASE,
        "rules": s.rules.iter().map(|r| json!({
            "id": r.id,
            "expression": r.expression,
            "action": r.action,
            "description": r.description,
            "enabled": r.enabled,
        })).collect::<Vec<_>>(),
    })
}
