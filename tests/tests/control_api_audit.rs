//! The admin API through real HTTP: the audit log records every committed
//! change (who, which call, which records) and nothing for a refused one;
//! it pages, filters by time, and `gateway audit` shows it.

mod api_common;

use api_common::*;

#[test]
fn every_change_is_audited_with_its_token_and_records_and_refusals_leave_nothing() {
    let s = Setup::start("api-audit");
    let gw = &s.gw;
    let log = format!("accounts/{}/audit_logs", s.account);
    let hosts = s.zone_path("custom_hostnames");
    // A token that may change hostnames, made by the first-run token (a change too).
    let body = json!({"name": "writer", "policies": [{"effect": "allow",
        "permission_groups": [{"name": "SSL and Certificates Write"}]}]});
    let writer = gw.ok("POST", "user/tokens", Some(&body));
    let (writer_id, secret) = (text(&writer["id"]), text(&writer["value"]));
    let (code, made) = gw.call_as(
        Some(&secret),
        "POST",
        &hosts,
        Some(json!({"hostname": "audit.example.com"}).to_string()),
    );
    assert_eq!(code, 200, "{made:#}");
    let host_id = text(&made["result"]["id"]);
    gw.ok(
        "PATCH",
        &s.zone_path("settings/min_tls_version"),
        Some(&json!({"value": "1.3"})),
    );
    // Refused: a bad body, a missing permission, a duplicate; none is recorded.
    refused(
        gw,
        "POST",
        &hosts,
        Some(&json!({"hostname": "bad name"})),
        400,
        &[],
    );
    let (code, _) = gw.call_as(
        Some(&secret),
        "PATCH",
        &s.zone_path("settings/min_tls_version"),
        Some(json!({"value": "1.2"}).to_string()),
    );
    assert_eq!(code, 403);
    refused(
        gw,
        "POST",
        &hosts,
        Some(&json!({"hostname": "audit.example.com"})),
        409,
        &[],
    );
    // A change that changes nothing is not one either.
    gw.ok(
        "PATCH",
        &s.zone_path("settings/min_tls_version"),
        Some(&json!({"value": "1.3"})),
    );
    gw.ok("DELETE", &format!("{hosts}/{host_id}"), None);

    let entries = gw.list_all(&log);
    let calls: Vec<(String, String)> = entries
        .iter()
        .map(|e| (text(&e["metadata"]["method"]), text(&e["metadata"]["path"])))
        .collect();
    let zone = &s.zone;
    assert_eq!(
        calls,
        [
            (
                "DELETE".to_string(),
                format!("zones/{zone}/custom_hostnames/{host_id}")
            ),
            (
                "PATCH".into(),
                format!("zones/{zone}/settings/min_tls_version")
            ),
            ("POST".into(), format!("zones/{zone}/custom_hostnames")),
            ("POST".into(), "user/tokens".into()),
        ],
        "newest first, the committed changes only: {entries:#?}"
    );
    let by_writer = &entries[2];
    assert_eq!(by_writer["actor"]["id"], writer_id.as_str());
    assert_eq!(by_writer["metadata"]["token_name"], "writer");
    assert_eq!(
        by_writer["metadata"]["resources"],
        json!([format!("hostname:{host_id}")])
    );
    assert_eq!(by_writer["action"]["result"], true);
    assert_eq!(entries[1]["actor"]["id"], "first-run");
    assert_eq!(entries[1]["metadata"]["resources"], json!(["zone"]));
    assert!(text(&entries[3]["metadata"]["resources"][0]).starts_with("token:"));
    let seqs: Vec<u64> = entries
        .iter()
        .map(|e| text(&e["id"]).parse().unwrap())
        .collect();
    assert_eq!(seqs, [4, 3, 2, 1]);

    // Pages and time filters.
    let (_, page) = gw.call("GET", &format!("{log}?per_page=3&page=2"), None);
    assert_eq!(page["result"].as_array().unwrap().len(), 1, "{page:#}");
    assert_eq!(page["result_info"]["total_count"], 4);
    let later = gateway::clock::rfc3339(gateway::clock::now() + 60);
    let earlier = gateway::clock::rfc3339(gateway::clock::now() - 3600);
    assert_eq!(
        gw.ok("GET", &format!("{log}?since={later}"), None),
        json!([])
    );
    assert_eq!(
        gw.ok("GET", &format!("{log}?before={earlier}"), None),
        json!([])
    );
    assert_eq!(
        gw.ok(
            "GET",
            &format!("{log}?since={earlier}&before={later}"),
            None
        )
        .as_array()
        .unwrap()
        .len(),
        4
    );
    refused(
        gw,
        "GET",
        &format!("{log}?since=yesterday"),
        None,
        400,
        &["RFC 3339"],
    );

    // The CLI shows it; the log survives a restart.
    let shown = gw.cli(&["audit"]);
    assert!(
        shown.ok && shown.stdout.contains("writer") && shown.stdout.contains(&host_id),
        "{shown:?}"
    );
    let (data, token) = (gw.data.clone(), gw.token.clone());
    drop(s.gw);
    let again = StoreGateway::start(Path::new(GATEWAY), &data, Some(&token), &[]);
    assert_eq!(again.list_all(&log).len(), 4);
}
