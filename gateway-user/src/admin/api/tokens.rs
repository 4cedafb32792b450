//! `/user/tokens`: scoped API tokens in the reference's shape (policies of
//! permission groups), created, listed, changed, rolled and deleted; `verify`
//! says whether the calling token is good; `permission_groups` lists what a
//! token may hold. A token never grants more than the token that makes it.

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
        tokens::{self, ApiToken, Caller, FIRST_RUN_ID, Permission},
    },
    pki,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    name: Option<String>,
    policies: Option<Vec<Policy>>,
    /// RFC 3339; `null` for none.
    expires_on: Option<Option<String>>,
    /// Accepted, as the reference's clients send them.
    status: Option<String>,
    not_before: Option<String>,
    condition: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Policy {
    effect: Option<String>,
    permission_groups: Vec<Group>,
    /// Accepted: every token here acts on the one zone and account.
    #[serde(rename = "resources")]
    _resources: Option<Value>,
    #[serde(rename = "id")]
    _id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    id: Option<String>,
    name: Option<String>,
    #[serde(rename = "meta")]
    _meta: Option<Value>,
}

/// `/user/tokens[/verify|/permission_groups|/ID[/value]]`.
pub(super) async fn route(
    plane: &ControlPlane,
    call: &Call,
    caller: &Caller,
    rest: &[&str],
) -> Listing {
    let one = |answer: Answer| answer.map(Reply::from);
    match (rest, &call.method) {
        ([], &Method::GET) => list(plane, call).await,
        ([], &Method::POST) => one(create(plane, call, caller).await),
        ([], _) => Err(method_not_allowed("GET or POST")),
        (["verify"], &Method::GET) => one(plane.read(|s| Ok(verify(s, caller))).await),
        (["permission_groups"], &Method::GET) => {
            let paging = Paging::of(call, page::WHOLE)?;
            let groups: Vec<Value> = Permission::ALL
                .iter()
                .map(|p| json!({"id": p.id(), "name": p.name(), "scopes": ["com.cloudflare.api.account.zone"]}))
                .collect();
            let total = groups.len();
            Ok(paging.reply(paging.take(groups.into_iter()), total))
        }
        (["verify" | "permission_groups"], _) => Err(method_not_allowed("GET")),
        ([id], &Method::GET) => one(plane.read(|s| Ok(view(s, find(s, id)?))).await),
        ([id], &Method::PUT) => one(update(plane, call, caller, id).await),
        ([id], &Method::DELETE) => one(plane
            .change(|s| {
                refuse_first_run(id)?;
                find(s, id)?;
                s.tokens.remove(*id);
                Ok(json!({"id": id}))
            })
            .await),
        ([_], _) => Err(method_not_allowed("GET, PUT or DELETE")),
        ([id, "value"], &Method::PUT) => one(plane
            .change(|s| {
                let secret = tokens::new_secret()?;
                let hash = pki::sha256_hex(secret.as_bytes());
                if *id == FIRST_RUN_ID {
                    s.meta.token_sha256 = hash;
                } else {
                    find(s, id)?;
                    let t = s.tokens.get_mut(*id).expect("found above");
                    t.secret_sha256 = hash;
                    t.modified_on = clock::now();
                }
                Ok(json!(secret))
            })
            .await),
        ([_, "value"], _) => Err(method_not_allowed("PUT")),
        _ => Err(ApiError::not_found("route", &rest.join("/"))),
    }
}

async fn list(plane: &ControlPlane, call: &Call) -> Listing {
    let paging = Paging::of(call, page::STANDARD)?;
    plane
        .read(|s| {
            let mut all: Vec<&ApiToken> = s.tokens.values().collect();
            all.sort_by(|a, b| (a.issued_on, &a.id).cmp(&(b.issued_on, &b.id)));
            let views =
                std::iter::once(first_run_view(s)).chain(all.into_iter().map(|t| view(s, t)));
            let total = s.tokens.len() + 1;
            Ok(paging.reply(paging.take(views), total))
        })
        .await
}

async fn create(plane: &ControlPlane, call: &Call, caller: &Caller) -> Answer {
    let body: TokenBody = call.json()?;
    let name = body
        .name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ApiError::invalid("a token needs a \"name\""))?;
    let permissions = permissions(body.policies.as_deref(), caller)?
        .ok_or_else(|| ApiError::invalid("a token needs \"policies\" with permission_groups"))?;
    let expires_on = expiry(&body)?.flatten();
    let secret = tokens::new_secret()?;
    plane
        .change(|s| {
            let now = clock::now();
            let token = ApiToken {
                id: pki::random_id(),
                name: name.clone(),
                secret_sha256: pki::sha256_hex(secret.as_bytes()),
                permissions: permissions.clone(),
                issued_on: now,
                modified_on: now,
                expires_on,
            };
            let mut out = view(s, &token);
            out["value"] = json!(secret);
            s.tokens.insert(token.id.clone(), token);
            Ok(out)
        })
        .await
}

async fn update(plane: &ControlPlane, call: &Call, caller: &Caller, id: &str) -> Answer {
    refuse_first_run(id)?;
    let body: TokenBody = call.json()?;
    let permissions = permissions(body.policies.as_deref(), caller)?;
    let expires_on = expiry(&body)?;
    plane
        .change(|s| {
            find(s, id)?;
            let t = s.tokens.get_mut(id).expect("found above");
            if let Some(n) = body.name.clone().filter(|n| !n.trim().is_empty()) {
                t.name = n;
            }
            if let Some(p) = permissions.clone() {
                t.permissions = p;
            }
            if let Some(e) = expires_on {
                t.expires_on = e;
            }
            t.modified_on = clock::now();
            Ok(view(s, &s.tokens[id]))
        })
        .await
}

/// The permission groups the policies name, each one the caller holds.
fn permissions(
    policies: Option<&[Policy]>,
    caller: &Caller,
) -> Result<Option<Vec<Permission>>, ApiError> {
    let Some(policies) = policies else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for (i, p) in policies.iter().enumerate() {
        if p.effect.as_deref().is_some_and(|e| e != "allow") {
            return Err(ApiError::invalid(format!(
                "policies[{i}].effect: only \"allow\" policies are served"
            )));
        }
        for g in &p.permission_groups {
            let key = g.id.as_deref().or(g.name.as_deref()).unwrap_or_default();
            let perm = Permission::find(key).ok_or_else(|| {
                ApiError::invalid(format!(
                    "policies[{i}]: no permission group {key:?} (GET /user/tokens/permission_groups \
                     lists them)"
                ))
            })?;
            if !caller.may(perm) {
                return Err(ApiError::new(
                    http::StatusCode::FORBIDDEN,
                    9109,
                    format!(
                        "a token cannot grant {perm:?} (\"{perm}\"), which the calling token does not hold"
                    ),
                ));
            }
            if !out.contains(&perm) {
                out.push(perm);
            }
        }
    }
    if out.is_empty() {
        return Err(ApiError::invalid("policies grant no permission group"));
    }
    out.sort();
    Ok(Some(out))
}

/// `expires_on`: absent (unchanged), `null` (none) or an RFC 3339 time to come.
fn expiry(body: &TokenBody) -> Result<Option<Option<i64>>, ApiError> {
    let _ = (&body.status, &body.not_before, &body.condition);
    match &body.expires_on {
        None => Ok(None),
        Some(None) => Ok(Some(None)),
        Some(Some(text)) => {
            let at = clock::parse_rfc3339(text).ok_or_else(|| {
                ApiError::invalid(format!("expires_on {text:?}: give an RFC 3339 time"))
            })?;
            if at <= clock::now() {
                return Err(ApiError::invalid(format!(
                    "expires_on {text:?} is in the past"
                )));
            }
            Ok(Some(Some(at)))
        }
    }
}

fn refuse_first_run(id: &str) -> Result<(), ApiError> {
    if id == FIRST_RUN_ID {
        return Err(ApiError::conflict(
            "the first-run token holds every permission and cannot be changed or deleted; roll \
             it (PUT /user/tokens/first-run/value) or replace it with `gateway rotate-token`",
        ));
    }
    Ok(())
}

fn find<'a>(s: &'a State, id: &str) -> Result<&'a ApiToken, ApiError> {
    s.tokens
        .get(id)
        .ok_or_else(|| ApiError::not_found("token", id))
}

fn verify(s: &State, caller: &Caller) -> Value {
    let expires = s.tokens.get(&caller.id).and_then(|t| t.expires_on);
    json!({
        "id": caller.id,
        "status": "active",
        "expires_on": expires.map(clock::rfc3339),
        // Not in the reference's answer: what the dashboard may offer this token.
        "permissions": caller.permissions.iter().map(|p| p.name()).collect::<Vec<_>>(),
    })
}

fn policies(s: &State, permissions: &[Permission]) -> Value {
    json!([{
        "id": pki::sha256_hex(format!("{permissions:?}").as_bytes())[..32].to_string(),
        "effect": "allow",
        "resources": {
            format!("com.cloudflare.api.account.{}", s.meta.account_id): "*",
            format!("com.cloudflare.api.account.zone.{}", s.meta.zone_id): "*",
        },
        "permission_groups": permissions
            .iter()
            .map(|p| json!({"id": p.id(), "name": p.name()}))
            .collect::<Vec<_>>(),
    }])
}

/// A token as the API shows it (never its secret or hash).
fn view(s: &State, t: &ApiToken) -> Value {
    let expired = t.expires_on.is_some_and(|at| at <= clock::now());
    json!({
        "id": t.id,
        "name": t.name,
        "status": if expired { "expired" } else { "active" },
        "issued_on": clock::rfc3339(t.issued_on),
        "modified_on": clock::rfc3339(t.modified_on),
        "expires_on": t.expires_on.map(clock::rfc3339),
        "policies": policies(s, &t.permissions),
    })
}

fn first_run_view(s: &State) -> Value {
    let created = s.server_ca().map_or(0, |ca| ca.uploaded_on);
    json!({
        "id": FIRST_RUN_ID,
        "name": "first-run admin token",
        "status": "active",
        "issued_on": clock::rfc3339(created),
        "modified_on": clock::rfc3339(created),
        "expires_on": null,
        "policies": policies(s, &Permission::ALL),
    })
}
