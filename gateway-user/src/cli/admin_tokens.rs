//! `gateway token`: scoped API tokens through the admin API.

use http::Method;
use serde_json::{Value, json};

use super::admin::{Api, Shape, TokenCommand};

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
