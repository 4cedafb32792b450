//! `gateway token` (scoped API tokens) and `gateway audit` (who changed what)
//! through the admin API.

use http::Method;
use serde_json::{Value, json};

use super::{
    admin_args::TokenCommand,
    api_client::{Api, Shape, text},
};

/// Runs a `gateway token` command.
pub(super) fn token(api: &Api, command: TokenCommand) -> anyhow::Result<(Value, Shape)> {
    let base = "user/tokens";
    let columns = Shape::Table(&["id", "name", "status", "permissions", "expires_on"]);
    let with_names = |mut v: Value| {
        let names: Vec<Value> = v["policies"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| {
                p["permission_groups"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|g| g["name"].clone())
            .collect();
        v["permissions"] = Value::Array(names);
        v
    };
    Ok(match command {
        TokenCommand::Create {
            name,
            permissions,
            expires_on,
        } => {
            let groups: Vec<Value> = permissions.iter().map(|p| json!({"name": p})).collect();
            let mut body = json!({"name": name, "policies": [{"effect": "allow", "permission_groups": groups}]});
            if let Some(at) = expires_on {
                body["expires_on"] = json!(at);
            }
            (
                with_names(api.call(Method::POST, base, Some(body))?),
                Shape::Object,
            )
        }
        TokenCommand::List => {
            let mut list = api.list(base)?;
            if !api.args.json {
                for t in list.as_array_mut().into_iter().flatten() {
                    *t = with_names(t.take());
                }
            }
            (list, columns)
        }
        TokenCommand::Roll { id } => (
            json!({"id": id, "value": api.call(Method::PUT, &format!("{base}/{id}/value"), None)?}),
            Shape::Object,
        ),
        TokenCommand::Delete { id } => (
            api.call(Method::DELETE, &format!("{base}/{id}"), None)?,
            Shape::Object,
        ),
        TokenCommand::Permissions => (
            api.list(&format!("{base}/permission_groups"))?,
            Shape::Table(&["id", "name"]),
        ),
    })
}

/// `gateway audit`: every page of the audit log, newest first.
pub(super) fn audit(
    api: &Api,
    since: Option<String>,
    before: Option<String>,
) -> anyhow::Result<(Value, Shape)> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in [("since", since), ("before", before)] {
        if let Some(v) = v {
            query.append_pair(k, &v);
        }
    }
    let query = query.finish();
    let path = api.account_path("audit_logs")?;
    let path = if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    };
    let mut list = api.list(&path)?;
    if !api.args.json {
        for e in list.as_array_mut().into_iter().flatten() {
            let m = e["metadata"].clone();
            e["token"] = m["token_name"].clone();
            e["call"] = json!(format!("{} {}", text(&m["method"]), text(&m["path"])));
            e["resources"] = m["resources"].clone();
        }
    }
    Ok((
        list,
        Shape::Table(&["id", "when", "token", "call", "resources"]),
    ))
}
