//! How the CLI calls a running gateway's admin API and prints its answers:
//! the connection settings, the calls, and the tables people read.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use clap::Args;
use http::Method;
use serde_json::{Value, json};

use crate::http_client;

/// Where the admin API is and how to call it.
#[derive(Args)]
pub(super) struct ApiArgs {
    /// The admin API's address.
    #[arg(
        long,
        global = true,
        env = "GATEWAY_API",
        default_value = "http://127.0.0.1:9101"
    )]
    api: String,
    /// The admin token (printed by the first `gateway run`).
    #[arg(long, global = true, env = "GATEWAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The CA that verifies an https:// admin API (e.g. DATA_DIR/server-ca.pem).
    #[arg(long, global = true, env = "GATEWAY_CA")]
    api_ca: Option<PathBuf>,
    /// Print the API's JSON result instead of text.
    #[arg(long, global = true)]
    pub(super) json: bool,
}

/// The API, as the commands call it.
pub(super) struct Api<'a> {
    pub(super) args: &'a ApiArgs,
    rt: tokio::runtime::Runtime,
}

impl<'a> Api<'a> {
    /// An API client for `args`, with its own single-threaded runtime.
    pub(super) fn new(args: &'a ApiArgs) -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Self { args, rt })
    }

    /// Calls the API; the `result`, or the API's error message.
    pub(super) fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let token = self.args.token.as_deref().context(
            "no admin token: pass --token or set GATEWAY_TOKEN (the first `gateway run` printed it)",
        )?;
        let url = format!("{}/client/v4/{path}", self.args.api.trim_end_matches('/'));
        let body = body.map(|b| serde_json::to_vec(&b)).transpose()?;
        let (status, bytes) = self.rt.block_on(http_client::request_with(
            method,
            &url,
            Some(token),
            body,
            Duration::from_secs(30),
            self.args.api_ca.as_deref(),
        ))?;
        let answer: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{url} answered {status} without the API's JSON"))?;
        if answer["success"] == json!(true) {
            return Ok(answer["result"].clone());
        }
        let message = answer["errors"][0]["message"]
            .as_str()
            .unwrap_or("unknown error");
        bail!("{message} (HTTP {})", status.as_u16())
    }

    /// Every item of a list, page after page.
    pub(super) fn list(&self, path: &str) -> anyhow::Result<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut all = Vec::new();
        for page in 1.. {
            let page = self.call(
                Method::GET,
                &format!("{path}{sep}page={page}&per_page=50"),
                None,
            )?;
            match page.as_array() {
                Some(items) if !items.is_empty() => all.extend(items.iter().cloned()),
                _ => break,
            }
        }
        Ok(Value::Array(all))
    }

    pub(super) fn zone(&self) -> anyhow::Result<Value> {
        let zones = self.call(Method::GET, "zones", None)?;
        zones.get(0).cloned().context("the gateway has no zone")
    }

    pub(super) fn zone_path(&self, rest: &str) -> anyhow::Result<String> {
        let zone = self.zone()?;
        Ok(format!("zones/{}/{rest}", text(&zone["id"])))
    }

    pub(super) fn account_path(&self, rest: &str) -> anyhow::Result<String> {
        let zone = self.zone()?;
        Ok(format!("accounts/{}/{rest}", text(&zone["account"]["id"])))
    }

    /// A hostname's id from its name or id.
    pub(super) fn hostname_id(&self, name_or_id: &str) -> anyhow::Result<String> {
        let base = self.zone_path("custom_hostnames")?;
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("hostname", name_or_id)
            .finish();
        let by_name = self.call(Method::GET, &format!("{base}?{query}"), None)?;
        if let Some(h) = by_name.get(0) {
            return Ok(text(&h["id"]));
        }
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("id", name_or_id)
            .finish();
        let by_id = self.call(Method::GET, &format!("{base}?{query}"), None)?;
        by_id
            .get(0)
            .map(|h| text(&h["id"]))
            .with_context(|| format!("no hostname {name_or_id:?} (see `gateway hostname list`)"))
    }
}

/// A value as a table cell: strings bare, `-` for none.
pub(super) fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// How a result is printed for people.
pub(super) enum Shape {
    /// A list, one row per item with these fields.
    Table(&'static [&'static str]),
    /// One object, a `key: value` line per field.
    Object,
    /// One string field printed raw (a PEM).
    Raw(&'static str),
}

pub(super) fn print(json: bool, result: &Value, shape: Shape) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(result).unwrap_or_default()
        );
        return;
    }
    match shape {
        Shape::Table(columns) => {
            let rows: Vec<Vec<String>> = result
                .as_array()
                .into_iter()
                .flatten()
                .map(|item| columns.iter().map(|c| text(&item[*c])).collect())
                .collect();
            let widths: Vec<usize> = (0..columns.len())
                .map(|i| {
                    rows.iter()
                        .map(|r| r[i].len())
                        .chain([columns[i].len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cells: Vec<String>| {
                let padded: Vec<String> = cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:w$}"))
                    .collect();
                println!("{}", padded.join("  ").trim_end());
            };
            line(columns.iter().map(|c| c.to_uppercase()).collect());
            for row in rows {
                line(row);
            }
        }
        Shape::Object => {
            if let Some(map) = result.as_object() {
                for (k, v) in map {
                    if !matches!(
                        k.as_str(),
                        "certificate" | "certificates" | "csr" | "private_key"
                    ) {
                        println!(
                            "{k}: {}",
                            if v.is_object() {
                                v.to_string()
                            } else {
                                text(v)
                            }
                        );
                    }
                }
            }
        }
        Shape::Raw(field) => {
            if let Some(raw) = result[field].as_str() {
                print!("{raw}");
            }
        }
    }
}
