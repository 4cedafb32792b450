//! The admin commands of the `gateway` CLI: each is one or two calls to the
//! admin API of a running gateway, printed for people or, with `--json`, as
//! the API's `result`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use http::Method;
use serde_json::{Value, json};

pub(super) use super::admin_args::*;
use super::api_client::{Api, ApiArgs, Shape, print, text};
use crate::tls_version::TlsVersion;

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Runs an admin command.
pub(super) fn run(args: &ApiArgs, command: AdminCommand) -> anyhow::Result<()> {
    let api = Api::new(args)?;
    let (result, shape) = match command {
        AdminCommand::Zone { command } => zone(&api, command)?,
        AdminCommand::Hostname { command } => hostname(&api, command)?,
        AdminCommand::Ca { command } => ca(&api, command)?,
        AdminCommand::Cert { command } => cert(&api, command)?,
        AdminCommand::Token { command } => super::admin_tokens::token(&api, command)?,
        AdminCommand::Audit { since, before } => super::admin_tokens::audit(&api, since, before)?,
        AdminCommand::Fleet {
            command: FleetCommand::Status,
        } => (
            api.call(Method::GET, &api.account_path("fleet/nodes")?, None)?,
            Shape::Table(&[
                "node",
                "revision",
                "lag",
                "leader",
                "stale",
                "error",
                "updated_on",
            ]),
        ),
        AdminCommand::Expiring { days } => (
            api.list(&api.zone_path(&format!("expiring_certificates?days={days}"))?)?,
            Shape::Table(&["kind", "id", "name", "expires_on", "days_left"]),
        ),
    };
    print(args.json, &result, shape);
    Ok(())
}

/// Runs a `gateway rules` command that goes through the API.
pub(super) fn run_rules(args: &ApiArgs, command: RulesApi) -> anyhow::Result<()> {
    let api = Api::new(args)?;
    let base = api.zone_path("rulesets/phases/http_request_firewall_custom/entrypoint")?;
    let result = match command {
        RulesApi::List => api.call(Method::GET, &base, None)?,
        RulesApi::Add {
            expression,
            action,
            description,
            disabled,
            position,
        } => {
            let mut body =
                json!({"expression": expression, "action": action, "enabled": !disabled});
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            if let Some(p) = position.json() {
                body["position"] = p;
            }
            api.call(Method::POST, &format!("{base}/rules"), Some(body))?
        }
        RulesApi::Edit {
            id,
            expression,
            action,
            description,
            enabled,
            position,
        } => {
            let mut body = json!({});
            for (k, v) in [
                ("expression", expression),
                ("action", action),
                ("description", description),
            ] {
                if let Some(v) = v {
                    body[k] = json!(v);
                }
            }
            if let Some(e) = enabled {
                body["enabled"] = json!(e);
            }
            if let Some(p) = position.json() {
                body["position"] = p;
            }
            api.call(Method::PATCH, &format!("{base}/rules/{id}"), Some(body))?
        }
        RulesApi::Move { id, position } => {
            let p = position
                .json()
                .context("say where: --before ID, --after ID or --index N")?;
            api.call(
                Method::PATCH,
                &format!("{base}/rules/{id}"),
                Some(json!({"position": p})),
            )?
        }
        RulesApi::Delete { id } => api.call(Method::DELETE, &format!("{base}/rules/{id}"), None)?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print(
            false,
            &result["rules"],
            Shape::Table(&["id", "action", "enabled", "expression"]),
        );
    }
    Ok(())
}

fn zone(api: &Api, command: ZoneCommand) -> anyhow::Result<(Value, Shape)> {
    let mut zone = api.zone()?;
    let path = format!("zones/{}/settings", text(&zone["id"]));
    if let ZoneCommand::Set {
        min_tls,
        ciphers,
        session_resumption,
    } = command
    {
        if min_tls.is_none() && ciphers.is_none() && session_resumption.is_none() {
            bail!("nothing to set: give --min-tls, --ciphers and/or --session-resumption");
        }
        // Two calls: the version is checked here and the ciphers (which only
        // the gateway can check) go first, so a refusal changes nothing.
        if let Some(v) = &min_tls {
            v.parse::<TlsVersion>()?;
        }
        if let Some(c) = ciphers {
            api.call(
                Method::PATCH,
                &format!("{path}/ciphers"),
                Some(json!({"value": split(&c)})),
            )?;
        }
        if let Some(v) = min_tls {
            api.call(
                Method::PATCH,
                &format!("{path}/min_tls_version"),
                Some(json!({"value": v})),
            )?;
        }
        if let Some(on) = session_resumption {
            api.call(
                Method::PATCH,
                &format!("{path}/session_resumption"),
                Some(json!({"value": on})),
            )?;
        }
    }
    for setting in ["min_tls_version", "ciphers", "session_resumption"] {
        zone[setting] = api.call(Method::GET, &format!("{path}/{setting}"), None)?["value"].clone();
    }
    Ok((zone, Shape::Object))
}

fn split(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn hostname_body(s: HostnameSettings) -> anyhow::Result<Value> {
    let mut body = json!({});
    let mut settings = json!({});
    if let Some(v) = s.min_tls {
        settings["min_tls_version"] = if v == "zone" { Value::Null } else { json!(v) };
    }
    if let Some(c) = s.ciphers {
        settings["ciphers"] = json!(split(&c));
    }
    if let Some(r) = s.session_resumption {
        settings["session_resumption"] = match r.as_str() {
            "zone" => Value::Null,
            on => json!(
                on.parse::<bool>()
                    .map_err(|_| anyhow::anyhow!("--session-resumption: true, false or zone"))?
            ),
        };
    }
    let mut ssl = json!({});
    if settings != json!({}) {
        ssl["settings"] = settings;
    }
    if let (Some(cert), Some(key)) = (&s.cert, &s.key) {
        ssl["custom_certificate"] = json!(read(cert)?);
        ssl["custom_key"] = json!(read(key)?);
    }
    if ssl != json!({}) {
        body["ssl"] = ssl;
    }
    if let Some(o) = s.origin {
        body["custom_origin_server"] = if o.is_empty() { Value::Null } else { json!(o) };
    }
    if let Some(w) = s.wildcard {
        body["wildcard"] = json!(w);
    }
    let mut mtls = json!({});
    if let Some(m) = s.mtls {
        mtls["enabled"] = json!(m);
    }
    if let Some(f) = s.forward {
        mtls["forward_client_cert"] = json!(f);
    }
    if mtls != json!({}) {
        body["mtls"] = mtls;
    }
    Ok(body)
}

fn hostname(api: &Api, command: HostnameCommand) -> anyhow::Result<(Value, Shape)> {
    let base = api.zone_path("custom_hostnames")?;
    let one = Shape::Object;
    Ok(match command {
        HostnameCommand::List => {
            let mut list = api.list(&base)?;
            // The table's columns; --json prints the API's result untouched.
            if !api.args.json {
                for h in list.as_array_mut().into_iter().flatten() {
                    h["min_tls"] = h["ssl"]["settings"]["effective_min_tls_version"].clone();
                    h["mtls"] = h["mtls"]["enabled"].clone();
                }
            }
            (
                list,
                Shape::Table(&["id", "hostname", "min_tls", "mtls", "custom_origin_server"]),
            )
        }
        HostnameCommand::Show { hostname } => {
            let id = api.hostname_id(&hostname)?;
            (api.call(Method::GET, &format!("{base}/{id}"), None)?, one)
        }
        HostnameCommand::Add { hostname, settings } => {
            let mut body = hostname_body(settings)?;
            body["hostname"] = json!(hostname);
            (api.call(Method::POST, &base, Some(body))?, one)
        }
        HostnameCommand::Edit { hostname, settings } => {
            let id = api.hostname_id(&hostname)?;
            let body = hostname_body(settings)?;
            (
                api.call(Method::PATCH, &format!("{base}/{id}"), Some(body))?,
                one,
            )
        }
        HostnameCommand::Delete { hostname } => {
            let id = api.hostname_id(&hostname)?;
            (
                api.call(Method::DELETE, &format!("{base}/{id}"), None)?,
                one,
            )
        }
    })
}

fn ca(api: &Api, command: CaCommand) -> anyhow::Result<(Value, Shape)> {
    let base = api.account_path("mtls_certificates")?;
    let one = Shape::Object;
    Ok(match command {
        CaCommand::Upload { file, name, crl } => {
            let mut body = json!({"ca": true, "certificates": read(&file)?});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if let Some(c) = crl {
                body["crl_source"] = json!(c);
            }
            (api.call(Method::POST, &base, Some(body))?, one)
        }
        CaCommand::List => (
            api.list(&base)?,
            Shape::Table(&["id", "name", "signature", "expires_on", "hostnames"]),
        ),
        CaCommand::Show { id } => (api.call(Method::GET, &format!("{base}/{id}"), None)?, one),
        CaCommand::Delete { id } => (
            api.call(Method::DELETE, &format!("{base}/{id}"), None)?,
            one,
        ),
        CaCommand::Associate { ca, hostnames } => {
            let mut body = json!({"hostnames": hostnames});
            if let Some(id) = ca {
                body["mtls_certificate_id"] = json!(id);
            }
            let path = api.zone_path("certificate_authorities/hostname_associations")?;
            (api.call(Method::PUT, &path, Some(body))?, one)
        }
        CaCommand::Associations { ca } => {
            let mut path = api.zone_path("certificate_authorities/hostname_associations")?;
            if let Some(id) = ca {
                path = format!("{path}?mtls_certificate_id={id}");
            }
            (api.call(Method::GET, &path, None)?, one)
        }
        CaCommand::Crl { id, source, remove } => {
            let path = format!("{base}/{id}/crl");
            let result = match (source, remove) {
                (_, true) => api.call(Method::DELETE, &path, None)?,
                (Some(s), _) => api.call(Method::PUT, &path, Some(json!({"source": s})))?,
                (None, _) => api.call(Method::POST, &format!("{path}/refresh"), None)?,
            };
            (result, one)
        }
        CaCommand::Managed => (
            api.call(Method::GET, &api.zone_path("managed_ca")?, None)?,
            Shape::Raw("certificate"),
        ),
    })
}

fn cert(api: &Api, command: CertCommand) -> anyhow::Result<(Value, Shape)> {
    let base = api.zone_path("client_certificates")?;
    let one = Shape::Object;
    Ok(match command {
        CertCommand::Issue { csr, cn, days, out } => {
            let body = match (&csr, &cn) {
                (Some(path), _) => json!({"csr": read(path)?, "validity_days": days}),
                (None, Some(cn)) => {
                    json!({"generate_key": true, "common_name": cn, "validity_days": days})
                }
                (None, None) => bail!("give --csr FILE or --cn NAME"),
            };
            let mut result = api.call(Method::POST, &base, Some(body))?;
            match out {
                Some(prefix) => {
                    let pem = suffixed(&prefix, "pem");
                    std::fs::write(&pem, text(&result["certificate"]))?;
                    eprintln!("certificate written to {}", pem.display());
                    if let Some(key) = result["private_key"].as_str() {
                        let path = suffixed(&prefix, "key");
                        write_private(&path, key)?;
                        eprintln!("private key written to {} (0600)", path.display());
                        result["private_key"] = json!(format!("written to {}", path.display()));
                    }
                    (result, one)
                }
                None if api.args.json => (result, one),
                None => {
                    print!("{}", text(&result["certificate"]));
                    if let Some(key) = result["private_key"].as_str() {
                        print!("{key}");
                    }
                    eprintln!(
                        "issued {} (serial {})",
                        text(&result["id"]),
                        text(&result["serial_number"])
                    );
                    return Ok((Value::Null, Shape::Raw("none")));
                }
            }
        }
        CertCommand::List { status } => {
            let path = match status {
                Some(s) => format!("{base}?status={s}"),
                None => base,
            };
            (
                api.list(&path)?,
                Shape::Table(&["id", "common_name", "status", "serial_number", "expires_on"]),
            )
        }
        CertCommand::Show { id } => (api.call(Method::GET, &format!("{base}/{id}"), None)?, one),
        CertCommand::Revoke { id } => (
            api.call(Method::DELETE, &format!("{base}/{id}"), None)?,
            one,
        ),
        CertCommand::Reactivate { id } => (
            api.call(
                Method::PATCH,
                &format!("{base}/{id}"),
                Some(json!({"reactivate": true})),
            )?,
            one,
        ),
    })
}

/// `PREFIX.ext`, the whole prefix kept (`team.alice` gives `team.alice.pem`).
fn suffixed(prefix: &Path, ext: &str) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(".");
    name.push(ext);
    PathBuf::from(name)
}

/// Writes a private key readable by its owner only, also over an existing file
/// (whose mode `open` would keep): restricted before anything is written.
fn write_private(path: &PathBuf, data: &str) -> anyhow::Result<()> {
    use std::{
        io::Write,
        os::unix::fs::{OpenOptionsExt, PermissionsExt},
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {} to its owner", path.display()))?;
    f.write_all(data.as_bytes())?;
    Ok(())
}
