//! The admin API through real HTTP: ordered firewall rules.

mod api_common;

use api_common::*;

/// The custom firewall phase's entrypoint, and the path of its rules.
fn paths(s: &Setup) -> (String, String) {
    let entry = s.zone_path("rulesets/phases/http_request_firewall_custom/entrypoint");
    let rules = format!("{entry}/rules");
    (entry, rules)
}

/// The ids of a ruleset's rules, in order.
fn order(set: &Value) -> Vec<String> {
    set["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| text(&r["id"]))
        .collect()
}

fn ids(list: &[&String]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Adds a rule; its id is the one that was not there before.
#[track_caller]
fn add_rule(gw: &StoreGateway, entry: &str, rules: &str, body: Value) -> String {
    let before = order(&gw.ok("GET", entry, None));
    let after = order(&gw.ok("POST", rules, Some(&body)));
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    after.into_iter().find(|id| !before.contains(id)).unwrap()
}

/// Rules are added at the end or at a position, and moved to an index or next to another.
#[test]
fn rules_are_added_and_moved_to_an_index_or_before_or_after_another() {
    let s = Setup::start("api-rules-order");
    let gw = &s.gw;
    let (entry, rules) = paths(&s);
    let add = |body: Value| add_rule(gw, &entry, &rules, body);

    let empty = gw.ok("GET", &entry, None);
    assert_eq!(empty["phase"], "http_request_firewall_custom");
    assert_eq!(empty["rules"], json!([]));

    let r1 = add(
        json!({"expression": "http.host eq \"a.test\"", "action": "block", "description": "one"}),
    );
    let r2 = add(json!({"expression": "http.request.uri.path eq \"/admin\"", "action": "log"}));
    let r3 = add(
        json!({"expression": "not cf.tls_client_auth.cert_verified", "action": "allow", "position": {"before": r1}}),
    );
    let r4 = add(
        json!({"expression": "http.host eq \"d.test\"", "action": "block", "enabled": false, "position": {"after": r3}}),
    );
    let r5 = add(
        json!({"expression": "http.host eq \"e.test\"", "action": "block", "position": {"index": 1}}),
    );
    let set = gw.ok("GET", &entry, None);
    assert_eq!(order(&set), ids(&[&r5, &r3, &r4, &r1, &r2]));
    let first = &set["rules"][3];
    assert_eq!(first["description"], "one");
    assert_eq!(first["action"], "block");
    assert_eq!(first["enabled"], true);
    assert_eq!(first["expression"], "http.host eq \"a.test\"");
    assert_eq!(set["rules"][2]["enabled"], false);
    assert_eq!(set["rules"][4]["description"], "");

    // Moving: index, before, after; the end is index n.
    let mv = |id: &str, position: Value| {
        order(&gw.ok(
            "PATCH",
            &format!("{rules}/{id}"),
            Some(&json!({"position": position})),
        ))
    };
    assert_eq!(
        mv(&r2, json!({"index": 1})),
        ids(&[&r2, &r5, &r3, &r4, &r1])
    );
    assert_eq!(
        mv(&r2, json!({"index": 5})),
        ids(&[&r5, &r3, &r4, &r1, &r2])
    );
    assert_eq!(
        mv(&r5, json!({"after": r1})),
        ids(&[&r3, &r4, &r1, &r5, &r2])
    );
    assert_eq!(
        mv(&r3, json!({"before": r2})),
        ids(&[&r4, &r1, &r5, &r3, &r2])
    );
    let expected = ids(&[&r4, &r1, &r5, &r3, &r2]);

    // Refused moves.
    let r1_path = format!("{rules}/{r1}");
    for (position, status, says) in [
        (json!({"before": r1}), 400, "relative to itself"),
        (json!({"index": 0}), 400, "out of range: 1 to 5"),
        (json!({"index": 6}), 400, "out of range"),
        (json!({"before": r2, "index": 1}), 400, "exactly one"),
        (json!({}), 400, "exactly one"),
        (
            json!({"after": "ffffffffffffffffffffffffffffffff"}),
            404,
            "rule",
        ),
        (json!({"first": true}), 400, "unknown field `first`"),
    ] {
        refused(
            gw,
            "PATCH",
            &r1_path,
            Some(&json!({"position": position})),
            status,
            &[says],
        );
    }
    refused(
        gw,
        "POST",
        &rules,
        Some(
            &json!({"expression": "http.host eq \"x\"", "action": "log", "position": {"index": 7}}),
        ),
        400,
        &["out of range: 1 to 6"],
    );
    assert_eq!(order(&gw.ok("GET", &entry, None)), expected);
}

/// An edit keeps the rule's place; a bad expression is refused with its position.
#[test]
fn rule_edits_keep_the_place_and_bad_expressions_are_refused_with_their_position() {
    let s = Setup::start("api-rules-edit");
    let gw = &s.gw;
    let (entry, rules) = paths(&s);
    let add = |body: Value| add_rule(gw, &entry, &rules, body);
    let r0 = add(json!({"expression": "http.host eq \"z.test\"", "action": "block"}));
    let r1 = add(
        json!({"expression": "http.host eq \"a.test\"", "action": "block", "description": "one"}),
    );
    let r2 = add(json!({"expression": "http.request.uri.path eq \"/admin\"", "action": "log"}));
    let expected = ids(&[&r0, &r1, &r2]);
    assert_eq!(order(&gw.ok("GET", &entry, None)), expected);
    let r1_path = format!("{rules}/{r1}");

    // Edits.
    let edited = gw.ok(
        "PATCH",
        &r1_path,
        Some(&json!({"action": "log", "enabled": false, "description": "changed", "expression": "http.host in {\"a.test\" \"b.test\"}"})),
    );
    assert_eq!(order(&edited), expected, "an edit keeps the place");
    let r = &edited["rules"][1];
    assert_eq!(r["action"], "log");
    assert_eq!(r["enabled"], false);
    assert_eq!(r["description"], "changed");
    assert_eq!(r["expression"], "http.host in {\"a.test\" \"b.test\"}");

    // Expressions that do not compile are refused with their position.
    let bad = "http.host eq \"a.test\"\n  and nope.field eq 1";
    let answer = refused(
        gw,
        "POST",
        &rules,
        Some(&json!({"expression": bad, "action": "block"})),
        400,
        &["expression: error at line 2, column 7", "nope.field"],
    );
    let error = &answer["errors"][0];
    assert_eq!(error["code"], 10014);
    assert_eq!(error["source"]["line"], 2, "{answer:#}");
    assert_eq!(error["source"]["column"], 7, "{answer:#}");
    assert_eq!(error["source"]["pointer"], "/expression");
    let answer = refused(
        gw,
        "PATCH",
        &r1_path,
        Some(&json!({"expression": "http.host eq"})),
        400,
        &["line 1, column"],
    );
    assert_eq!(answer["errors"][0]["source"]["line"], 1);
    assert!(answer["errors"][0]["source"]["column"].as_u64().unwrap() >= 10);
    assert_eq!(
        gw.ok("GET", &entry, None)["rules"][1],
        edited["rules"][1],
        "a refused edit leaves the rule as it was"
    );
    refused(
        gw,
        "POST",
        &rules,
        Some(&json!({"expression": "http.host eq \"a\""})),
        400,
        &["\"expression\" and \"action\""],
    );
    refused(
        gw,
        "POST",
        &rules,
        Some(&json!({"expression": "http.host eq \"a\"", "action": "explode"})),
        400,
        &["invalid JSON body", "explode"],
    );
    refused(
        gw,
        "POST",
        &rules,
        Some(&json!({"expression": "http.host eq \"a\"", "action": "block", "colour": "x"})),
        400,
        &["unknown field `colour`"],
    );
}

/// A deleted rule is gone, the others keep their order; unknown ids and methods are refused.
#[test]
fn rules_are_deleted_and_unknown_ids_and_methods_are_refused() {
    let s = Setup::start("api-rules-delete");
    let gw = &s.gw;
    let (entry, rules) = paths(&s);
    let add = |body: Value| add_rule(gw, &entry, &rules, body);
    let r0 = add(json!({"expression": "http.host eq \"z.test\"", "action": "block"}));
    let r1 = add(json!({"expression": "http.host eq \"a.test\"", "action": "block"}));
    let r2 = add(json!({"expression": "http.host eq \"b.test\"", "action": "log"}));
    let r3 = add(json!({"expression": "http.host eq \"c.test\"", "action": "allow"}));
    let r1_path = format!("{rules}/{r1}");

    // Unknown ids, methods.
    let nobody = format!("{rules}/ffffffffffffffffffffffffffffffff");
    refused(
        gw,
        "PATCH",
        &nobody,
        Some(&json!({"enabled": true})),
        404,
        &["rule", "not found"],
    );
    refused(gw, "DELETE", &nobody, None, 404, &["rule", "not found"]);
    refused(gw, "GET", &r1_path, None, 405, &["PATCH or DELETE"]);
    refused(gw, "GET", &rules, None, 405, &["POST"]);
    refused(gw, "POST", &entry, None, 405, &["GET"]);

    // Delete.
    let left = order(&gw.ok("DELETE", &r1_path, None));
    assert_eq!(left, ids(&[&r0, &r2, &r3]));
    refused(gw, "DELETE", &r1_path, None, 404, &["rule"]);
    assert_eq!(order(&gw.ok("GET", &entry, None)), left);
}

/// The rules in their order, and everything else in the store, survive a restart.
#[test]
fn rules_in_their_order_and_everything_else_survive_a_restart() {
    let s = Setup::start("api-rules-restart");
    let (entry, rules) = paths(&s);
    // The gateway is stopped and started again on the same data; the
    // directory stays until the end.
    let Setup {
        gw,
        zone,
        dir: _dir,
        ..
    } = s;
    let data = gw.data.clone();
    let add = |body: Value| add_rule(&gw, &entry, &rules, body);
    let a = add(
        json!({"expression": "http.host eq \"a.test\"", "action": "block", "description": "one"}),
    );
    let b = add(
        json!({"expression": "http.host eq \"b.test\"", "action": "log", "position": {"before": a}}),
    );
    let c = add(
        json!({"expression": "not cf.tls_client_auth.cert_verified", "action": "allow", "enabled": false, "position": {"index": 2}}),
    );
    assert_eq!(order(&gw.ok("GET", &entry, None)), ids(&[&b, &c, &a]));

    // The rules and their order, and everything else, survive a restart.
    gw.ok(
        "POST",
        &format!("zones/{zone}/custom_hostnames"),
        Some(&json!({"hostname": "kept.example.com", "mtls": {"enabled": true}})),
    );
    gw.ok(
        "POST",
        &format!("zones/{zone}/client_certificates"),
        Some(&json!({"generate_key": true, "common_name": "kept", "validity_days": 5})),
    );
    let snapshot = |gw: &StoreGateway| {
        [
            "rulesets/phases/http_request_firewall_custom/entrypoint",
            "custom_hostnames",
            "client_certificates",
            "managed_ca",
            "settings/min_tls_version",
            "expiring_certificates?days=36500",
        ]
        .map(|p| {
            let mut v = gw.ok("GET", &format!("zones/{zone}/{p}"), None);
            // Whole days left count down as the clock runs.
            for e in v.as_array_mut().into_iter().flatten() {
                if let Some(e) = e.as_object_mut() {
                    e.remove("days_left");
                }
            }
            v
        })
    };
    let token = gw.token.clone();
    let before = snapshot(&gw);
    drop(gw);
    let gw = StoreGateway::start(Path::new(GATEWAY), &data, Some(&token), &[]);
    assert_eq!(gw.zone(), zone);
    let after = snapshot(&gw);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a, b, "changed by a restart");
    }
}

/// The ruleset by its id: listed, replaced whole (PUT), versioned with every
/// change, its earlier versions readable, and emptied by DELETE.
#[test]
fn the_ruleset_is_replaced_whole_versioned_and_its_versions_read_back() {
    let s = Setup::start("api-rulesets");
    let gw = &s.gw;
    let (entry, _) = paths(&s);
    let listed = gw.ok("GET", &s.zone_path("rulesets"), None);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed:#}");
    let id = text(&listed[0]["id"]);
    let by_id = s.zone_path(&format!("rulesets/{id}"));
    let first = gw.ok("GET", &by_id, None);
    assert_eq!(first, gw.ok("GET", &entry, None), "one ruleset, two routes");
    let v1 = text(&first["version"]);

    // POST /rulesets makes the entry point while it has no rules, and not after.
    let made = gw.ok(
        "POST",
        &s.zone_path("rulesets"),
        Some(
            &json!({"name": "mtls", "kind": "zone", "phase": "http_request_firewall_custom",
            "rules": [{"expression": "not cf.tls_client_auth.cert_verified", "action": "block"}]}),
        ),
    );
    assert_eq!(made["name"], "mtls");
    let kept = text(&made["rules"][0]["id"]);
    refused(
        gw,
        "POST",
        &s.zone_path("rulesets"),
        Some(&json!({"name": "again", "kind": "zone", "phase": "http_request_firewall_custom"})),
        409,
        &["entry point ruleset already", "PUT"],
    );

    // PUT replaces the list: a kept id keeps its rule (changed: version 2), no id adds one.
    let put = gw.ok(
        "PUT",
        &by_id,
        Some(&json!({"rules": [
            {"expression": "http.request.uri.path eq \"/x\"", "action": "log"},
            {"id": kept, "expression": "not cf.tls_client_auth.cert_verified", "action": "block",
             "description": "mTLS"},
        ]})),
    );
    assert_eq!(order(&put)[1], kept);
    assert_eq!(put["rules"][1]["version"], "2");
    assert_eq!(put["rules"][0]["version"], "1");
    let versions = gw.ok("GET", &format!("{by_id}/versions"), None);
    let numbers: Vec<String> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| text(&v["version"]))
        .collect();
    assert_eq!(
        numbers.first(),
        Some(&text(&put["version"])),
        "newest first: {numbers:?}"
    );
    assert!(numbers.contains(&v1), "{numbers:?}");
    let old = gw.ok(
        "GET",
        &format!("{by_id}/versions/{}", text(&made["version"])),
        None,
    );
    assert_eq!(
        order(&old),
        std::slice::from_ref(&kept),
        "a version reads back as it was"
    );
    refused(
        gw,
        "GET",
        &format!("{by_id}/versions/999"),
        None,
        404,
        &["ruleset version"],
    );

    // Refused: an unknown rule id, a bad expression (with its place), another phase.
    refused(
        gw,
        "PUT",
        &by_id,
        Some(&json!({"rules": [{"id": "nope", "expression": "ssl", "action": "log"}]})),
        400,
        &["\"nope\" is not a rule of the ruleset"],
    );
    let bad = refused(
        gw,
        "PUT",
        &by_id,
        Some(
            &json!({"rules": [{"expression": "ssl", "action": "log"}, {"expression": "ssl and", "action": "log"}]}),
        ),
        400,
        &["line 1, column"],
    );
    assert_eq!(bad["errors"][0]["source"]["pointer"], "/rules/1/expression");
    refused(
        gw,
        "POST",
        &s.zone_path("rulesets"),
        Some(&json!({"kind": "zone", "phase": "http_request_firewall_managed"})),
        400,
        &["only \"http_request_firewall_custom\""],
    );
    refused(
        gw,
        "GET",
        &s.zone_path("rulesets/ffff"),
        None,
        404,
        &["ruleset"],
    );
    assert_eq!(
        order(&gw.ok("GET", &by_id, None)).len(),
        2,
        "refusals change nothing"
    );

    // DELETE empties it.
    gw.ok("DELETE", &by_id, None);
    assert_eq!(gw.ok("GET", &entry, None)["rules"], json!([]));

    // The versions are kept across a restart (rows of their own in the store).
    let versions = gw.ok("GET", &format!("{by_id}/versions"), None);
    let (data, token) = (gw.data.clone(), gw.token.clone());
    drop(s.gw);
    let again = StoreGateway::start(Path::new(GATEWAY), &data, Some(&token), &[]);
    assert_eq!(
        again.ok("GET", &format!("{by_id}/versions"), None),
        versions
    );
    let old_again = again.ok(
        "GET",
        &format!("{by_id}/versions/{}", text(&made["version"])),
        None,
    );
    assert_eq!(order(&old_again), [kept]);
}
