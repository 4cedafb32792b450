//! The admin API through real HTTP: scoped API tokens. Every permission
//! group against every kind of route, read and write; a token's life
//! (create, verify, roll, expire, delete); and no token granting more than
//! the one that makes it.

mod api_common;

use api_common::*;

const GROUPS: [&str; 10] = [
    "SSL and Certificates Read",
    "SSL and Certificates Write",
    "Zone Settings Read",
    "Zone Settings Write",
    "Firewall Services Read",
    "Firewall Services Write",
    "API Tokens Read",
    "API Tokens Write",
    "Account Settings Read",
    "Analytics Read",
];

/// Makes a token holding `groups`; returns (id, secret).
#[track_caller]
fn token(gw: &StoreGateway, as_token: &str, name: &str, groups: &[&str]) -> (String, String) {
    let groups: Vec<Value> = groups.iter().map(|g| json!({"name": g})).collect();
    let body =
        json!({"name": name, "policies": [{"effect": "allow", "permission_groups": groups}]});
    let (code, answer) = gw.call_as(
        Some(as_token),
        "POST",
        "user/tokens",
        Some(body.to_string()),
    );
    assert_eq!(code, 200, "{answer:#}");
    (
        text(&answer["result"]["id"]),
        text(&answer["result"]["value"]),
    )
}

/// Every kind of route, read and write, with the group it needs. Writes
/// carry a body the route refuses (400) once past the permission check, so
/// the matrix changes nothing.
fn routes(
    s: &Setup,
) -> Vec<(
    &'static str,
    String,
    Option<&'static str>,
    Option<&'static str>,
)> {
    let bad = Some("{\"nonsense\": true}");
    vec![
        ("GET", "zones".into(), None, None),
        (
            "GET",
            s.zone_path("custom_hostnames"),
            None,
            Some("SSL and Certificates Read"),
        ),
        (
            "POST",
            s.zone_path("custom_hostnames"),
            bad,
            Some("SSL and Certificates Write"),
        ),
        (
            "GET",
            s.zone_path("client_certificates"),
            None,
            Some("SSL and Certificates Read"),
        ),
        (
            "POST",
            s.zone_path("client_certificates"),
            bad,
            Some("SSL and Certificates Write"),
        ),
        (
            "GET",
            s.cas_path(""),
            None,
            Some("SSL and Certificates Read"),
        ),
        (
            "POST",
            s.cas_path(""),
            bad,
            Some("SSL and Certificates Write"),
        ),
        (
            "PUT",
            s.zone_path("certificate_authorities/hostname_associations"),
            bad,
            Some("SSL and Certificates Write"),
        ),
        (
            "GET",
            s.zone_path("managed_ca"),
            None,
            Some("SSL and Certificates Read"),
        ),
        (
            "GET",
            s.zone_path("settings/min_tls_version"),
            None,
            Some("Zone Settings Read"),
        ),
        (
            "PATCH",
            s.zone_path("settings/min_tls_version"),
            bad,
            Some("Zone Settings Write"),
        ),
        (
            "GET",
            s.zone_path("rulesets"),
            None,
            Some("Firewall Services Read"),
        ),
        (
            "PUT",
            s.zone_path("rulesets/phases/http_request_firewall_custom/entrypoint"),
            bad,
            Some("Firewall Services Write"),
        ),
        ("GET", "user/tokens".into(), None, Some("API Tokens Read")),
        ("POST", "user/tokens".into(), bad, Some("API Tokens Write")),
        ("GET", "user/tokens/verify".into(), None, None),
        (
            "GET",
            format!("accounts/{}/audit_logs", s.account),
            None,
            Some("Account Settings Read"),
        ),
        (
            "POST",
            s.zone_path("filters/validate-expr"),
            bad,
            Some("Firewall Services Read"),
        ),
        (
            "GET",
            format!("accounts/{}/gateway/charts", s.account),
            None,
            Some("Analytics Read"),
        ),
    ]
}

/// Whether holding `held` grants `needed` (write implies read).
fn grants(held: &str, needed: &str) -> bool {
    held == needed
        || needed
            .strip_suffix(" Read")
            .is_some_and(|g| held == format!("{g} Write"))
}

#[test]
fn each_permission_group_opens_exactly_its_routes() {
    let s = Setup::start("api-token-matrix");
    let gw = &s.gw;
    for group in GROUPS {
        let (_, secret) = token(gw, &gw.token, group, &[group]);
        for (method, path, body, needed) in routes(&s) {
            let (code, answer) = gw.call_as(Some(&secret), method, &path, body.map(String::from));
            let allowed = needed.is_none_or(|n| grants(group, n));
            if allowed {
                assert_ne!(code, 403, "{group}: {method} {path}: {answer:#}");
                assert!(
                    code == 200 || code == 400,
                    "{group}: {method} {path}: {code} {answer:#}"
                );
            } else {
                assert_eq!(
                    code, 403,
                    "{group}: {method} {path} was let through: {answer:#}"
                );
                let m = message(&answer);
                assert!(
                    m.contains(&format!("lacks the \"{}\" permission", needed.unwrap())),
                    "{group}: {method} {path}: {m}"
                );
            }
        }
    }
    // Nothing changed: every write above was refused.
    assert_eq!(
        gw.ok("GET", &s.zone_path("custom_hostnames"), None)
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_token_is_verified_rolled_expired_and_deleted_and_never_grants_more_than_its_maker() {
    let s = Setup::start("api-token-life");
    let gw = &s.gw;
    let (id, secret) = token(gw, &gw.token, "reader", &["SSL and Certificates Read"]);
    let (code, verified) = gw.call_as(Some(&secret), "GET", "user/tokens/verify", None);
    assert_eq!(
        (code, &verified["result"]["id"]),
        (200, &json!(id)),
        "{verified:#}"
    );
    let listed = gw.ok("GET", "user/tokens", None);
    let names: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| text(&t["name"]))
        .collect();
    assert_eq!(names, ["first-run admin token", "reader"]);
    assert!(
        !listed.to_string().contains(&secret),
        "a listing never shows a secret"
    );

    // Rolled: the old secret stops working, the new one works.
    let rolled = text(&gw.ok("PUT", &format!("user/tokens/{id}/value"), None));
    assert_ne!(rolled, secret);
    assert_eq!(
        gw.call_as(Some(&secret), "GET", "user/tokens/verify", None)
            .0,
        403
    );
    assert_eq!(
        gw.call_as(Some(&rolled), "GET", "user/tokens/verify", None)
            .0,
        200
    );

    // No escalation: a token that may make tokens grants only what it holds.
    let (_, maker) = token(gw, &gw.token, "maker", &["API Tokens Write"]);
    let escalate = json!({"name": "more", "policies": [{"effect": "allow",
        "permission_groups": [{"name": "SSL and Certificates Write"}]}]});
    let (code, answer) = gw.call_as(
        Some(&maker),
        "POST",
        "user/tokens",
        Some(escalate.to_string()),
    );
    assert_eq!(code, 403, "{answer:#}");
    assert!(message(&answer).contains("does not hold"), "{answer:#}");
    let (_, sub) = token(gw, &maker, "sub", &["API Tokens Read"]);
    assert_eq!(gw.call_as(Some(&sub), "GET", "user/tokens", None).0, 200);

    // Bad requests say what is wrong.
    for (body, says) in [
        (json!({"policies": []}), "needs a \"name\""),
        (
            json!({"name": "x", "policies": [{"permission_groups": [{"name": "Root"}]}]}),
            "no permission group \"Root\"",
        ),
        (
            json!({"name": "x", "policies": [{"permission_groups": [{"name": "API Tokens Read"}]}], "expires_on": "2001-01-01T00:00:00Z"}),
            "in the past",
        ),
    ] {
        refused(gw, "POST", "user/tokens", Some(&body), 400, &[says]);
    }
    refused(
        gw,
        "DELETE",
        "user/tokens/first-run",
        None,
        409,
        &["rotate-token"],
    );

    // Expiry: refused once it has passed.
    let at = gateway::clock::rfc3339(gateway::clock::now() + 2);
    let body = json!({"name": "brief", "expires_on": at,
        "policies": [{"permission_groups": [{"name": "API Tokens Read"}]}]});
    let brief = gw.ok("POST", "user/tokens", Some(&body));
    let brief_secret = text(&brief["value"]);
    assert_eq!(
        gw.call_as(Some(&brief_secret), "GET", "user/tokens", None)
            .0,
        200
    );
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let (code, answer) = gw.call_as(Some(&brief_secret), "GET", "user/tokens", None);
    assert_eq!(code, 403, "{answer:#}");
    assert!(message(&answer).contains("expired"), "{answer:#}");

    // Deleted: refused at once.
    gw.ok("DELETE", &format!("user/tokens/{id}"), None);
    assert_eq!(
        gw.call_as(Some(&rolled), "GET", "user/tokens/verify", None)
            .0,
        403
    );
    refused(
        gw,
        "GET",
        &format!("user/tokens/{id}"),
        None,
        404,
        &["token"],
    );
}

#[test]
fn the_cli_makes_lists_rolls_and_deletes_tokens() {
    let s = Setup::start("api-token-cli");
    let gw = &s.gw;
    let made = gw.cli(&[
        "--json",
        "token",
        "create",
        "--name",
        "ci",
        "--permission",
        "Zone Settings Read",
    ]);
    assert!(made.ok, "{made:?}");
    let made: Value = serde_json::from_str(&made.stdout).unwrap();
    let (id, secret) = (text(&made["id"]), text(&made["value"]));
    assert_eq!(made["permissions"], json!(["Zone Settings Read"]));
    assert_eq!(
        gw.call_as(Some(&secret), "GET", &s.zone_path("settings/ciphers"), None)
            .0,
        200
    );
    let list = gw.cli(&["token", "list"]);
    assert!(
        list.ok && list.stdout.contains("ci") && list.stdout.contains("Zone Settings Read"),
        "{list:?}"
    );
    let rolled = gw.cli(&["--json", "token", "roll", &id]);
    assert!(rolled.ok, "{rolled:?}");
    assert_eq!(
        gw.call_as(Some(&secret), "GET", "user/tokens/verify", None)
            .0,
        403
    );
    let deleted = gw.cli(&["token", "delete", &id]);
    assert!(deleted.ok, "{deleted:?}");
    let unknown = gw.cli(&["token", "create", "--name", "x", "--permission", "Root"]);
    assert!(
        !unknown.ok && unknown.stderr.contains("no permission group"),
        "{unknown:?}"
    );
}
