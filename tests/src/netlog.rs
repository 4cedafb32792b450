//! Reads Chromium's network log (`--log-net-log`) for failure messages: a page
//! that says "Failed to fetch" does not say why, the log does. Chromium writes
//! the log as it goes, one event a line (the first line holds the constants
//! that name event types and errors), so a log still being written is read too.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

/// What a failure message says about the network: the net errors of the
/// requests and sockets to `host` (`127.0.0.1:9180`), why Chromium closed its
/// sockets to it, the requests it sent again, and how often the network
/// changed under it; then the errors of everything else (Chromium's own
/// background requests, which cannot reach anything here).
pub fn report(netlog: &str, host: &str) -> String {
    let mut lines = netlog.lines();
    let constants: Value = lines
        .next()
        .and_then(|first| first.strip_prefix("{\"constants\":"))
        .and_then(|rest| serde_json::from_str(rest.trim_end_matches(',')).ok())
        .unwrap_or_default();
    let names = |table: &str| -> HashMap<i64, String> {
        constants[table]
            .as_object()
            .map(|t| {
                t.iter()
                    .filter_map(|(name, code)| Some((code.as_i64()?, name.clone())))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (event_types, errors) = (names("logEventTypes"), names("netError"));
    let events: Vec<Value> = lines
        .filter_map(|l| serde_json::from_str(l.trim().trim_end_matches(',')).ok())
        .collect();
    let to_host = sources_for(&events, host);
    let mut ours = BTreeMap::<String, usize>::new();
    let mut theirs = BTreeMap::<String, usize>::new();
    for event in &events {
        let source = event["source"]["id"].as_i64().unwrap_or(-1);
        let kind = event["type"]
            .as_i64()
            .and_then(|t| event_types.get(&t))
            .map_or("?", String::as_str);
        let params = &event["params"];
        let mut noted = |what: String| {
            let counts = if to_host.contains(&source) {
                &mut ours
            } else {
                &mut theirs
            };
            *counts.entry(what).or_default() += 1;
        };
        if let Some(code) = params["net_error"].as_i64() {
            let name = errors.get(&code).map_or("?", String::as_str);
            noted(format!("{name} ({code})"));
        }
        match kind {
            "SOCKET_POOL_CLOSING_SOCKET" => noted(format!(
                "socket closed: {}",
                params["reason"].as_str().unwrap_or("?")
            )),
            "HTTP_TRANSACTION_RESTART_AFTER_ERROR" => noted("request sent again".into()),
            "NETWORK_IP_ADDRESSES_CHANGED" | "NETWORK_CHANGED" => {
                *ours.entry("the network changed".into()).or_default() += 1
            }
            _ => {}
        }
    }
    format!(
        "to {host}: {}; elsewhere: {}",
        counted(&ours),
        counted(&theirs)
    )
}

/// The sources (requests, stream jobs, sockets) whose events name `host` as
/// where they go: a request's URL, a job's socket group, a socket's address.
fn sources_for(events: &[Value], host: &str) -> HashSet<i64> {
    const WHERE: [&str; 5] = [
        "url",
        "group_id",
        "address",
        "address_list",
        "remote_address",
    ];
    events
        .iter()
        .filter(|event| {
            WHERE
                .iter()
                .any(|key| event["params"][key].to_string().contains(host))
        })
        .filter_map(|event| event["source"]["id"].as_i64())
        .collect()
}

fn counted(counts: &BTreeMap<String, usize>) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(what, n)| format!("{what} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::report;

    #[test]
    fn errors_to_the_gateway_are_told_apart_from_chromiums_own() {
        let log = r#"{"constants":{"logEventTypes":{"SOCKET_POOL_CLOSING_SOCKET":1,"NETWORK_IP_ADDRESSES_CHANGED":2,"TCP_CONNECT":3},"netError":{"ERR_CONNECTION_RESET":-101,"ERR_NAME_NOT_RESOLVED":-105}},
"events":[
{"params":{"address_list":["127.0.0.1:9180"]},"phase":1,"source":{"id":7,"type":10},"time":"1","type":3},
{"params":{"net_error":-101},"phase":2,"source":{"id":7,"type":10},"time":"2","type":3},
{"params":{"reason":"Remote side closed connection"},"phase":0,"source":{"id":7,"type":10},"time":"3","type":1},
{"params":{"net_error":-105},"phase":2,"source":{"id":8,"type":10},"time":"4","type":3},
{"phase":0,"source":{"id":1,"type":0},"time":"5","type":2},
{"params":{"net_error":-1"#;
        assert_eq!(
            report(log, "127.0.0.1:9180"),
            "to 127.0.0.1:9180: ERR_CONNECTION_RESET (-101) ×1, socket closed: Remote side \
             closed connection ×1, the network changed ×1; elsewhere: ERR_NAME_NOT_RESOLVED (-105) ×1"
        );
        assert_eq!(
            report("", "127.0.0.1:9180"),
            "to 127.0.0.1:9180: none; elsewhere: none"
        );
    }
}
