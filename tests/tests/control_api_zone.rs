//! The admin API through real HTTP: zone settings, authentication, malformed
//! requests (a store-mode gateway, no root needed).

mod api_common;

use api_common::*;

/// The store is owner only, and GET /zones lists the one zone with its account.
#[test]
fn the_store_is_owner_only_and_the_one_zone_is_listed_with_its_account() {
    let s = Setup::start("api-zone-list");
    let gw = &s.gw;

    // The data directory holds the CAs' keys: owner only.
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&gw.data), 0o700, "data directory mode");
    assert_eq!(
        mode(&gw.data.join("gateway.redb")),
        0o600,
        "store file mode"
    );

    // GET /zones: one zone, with its account and default hostname, as a list.
    let (status, answer) = gw.call("GET", "zones", None);
    assert_eq!(status, 200, "{answer:#}");
    assert_eq!(answer["success"], true);
    assert_eq!(answer["errors"], json!([]));
    assert_eq!(answer["result_info"]["count"], 1, "{answer:#}");
    let zone = &answer["result"][0];
    assert_eq!(zone["id"], s.zone.as_str());
    assert_eq!(zone["status"], "active");
    assert_eq!(zone["default_hostname"], "localhost");
    assert_eq!(zone["account"]["id"], s.account.as_str());
    assert_eq!(s.zone.len(), 32, "ids are 32 hex digits: {}", s.zone);
}

/// min_tls_version and ciphers are read and set; a refused PATCH changes nothing.
#[test]
fn min_tls_version_and_ciphers_are_set_and_a_refused_patch_changes_nothing() {
    let s = Setup::start("api-zone-settings");
    let gw = &s.gw;

    // min_tls_version: GET, PATCH, and a bad version refused with nothing changed.
    let min = s.zone_path("settings/min_tls_version");
    let got = gw.ok("GET", &min, None);
    assert_eq!(got["id"], "min_tls_version");
    assert_eq!(got["value"], "1.2", "the first run's zone minimum is 1.2");
    let set = gw.ok("PATCH", &min, Some(&json!({"value": "1.3"})));
    assert_eq!(set["value"], "1.3");
    assert_eq!(gw.ok("GET", &min, None)["value"], "1.3");
    for bad in ["1.4", "TLSv1.2", ""] {
        refused(
            gw,
            "PATCH",
            &min,
            Some(&json!({"value": bad})),
            400,
            &["invalid TLS version", "1.0, 1.1, 1.2, 1.3"],
        );
    }
    refused(
        gw,
        "PATCH",
        &min,
        Some(&json!({"value": 1.2})),
        400,
        &["invalid JSON body"],
    );
    assert_eq!(
        gw.ok("GET", &min, None)["value"],
        "1.3",
        "a refused PATCH leaves the old value"
    );
    // A hostname without its own minimum follows the zone's.
    let hosts = gw.ok("GET", &s.zone_path("custom_hostnames"), None);
    assert_eq!(
        hosts[0]["ssl"]["settings"]["effective_min_tls_version"], "1.3",
        "{hosts:#}"
    );

    // ciphers: GET, PATCH, an unknown cipher refused with nothing changed.
    let ciphers = s.zone_path("settings/ciphers");
    assert_eq!(gw.ok("GET", &ciphers, None)["value"], json!([]));
    let good = json!([
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256"
    ]);
    assert_eq!(
        gw.ok("PATCH", &ciphers, Some(&json!({"value": good})))["value"],
        good
    );
    refused(
        gw,
        "PATCH",
        &ciphers,
        Some(&json!({"value": ["ECDHE-ECDSA-AES128-GCM-SHA256", "NOT-A-CIPHER"]})),
        400,
        &["refused", "NOT-A-CIPHER", "cipher"],
    );
    refused(
        gw,
        "PATCH",
        &ciphers,
        Some(&json!({"value": "ECDHE-ECDSA-AES128-GCM-SHA256"})),
        400,
        &["invalid JSON body"],
    );
    assert_eq!(
        gw.ok("GET", &ciphers, None)["value"],
        good,
        "a refused PATCH leaves the old ciphers"
    );
    assert_eq!(
        gw.ok("PATCH", &ciphers, Some(&json!({"value": []})))["value"],
        json!([])
    );
    refused(
        gw,
        "PUT",
        &ciphers,
        Some(&json!({"value": []})),
        405,
        &["GET or PATCH"],
    );
    refused(
        gw,
        "GET",
        &s.zone_path("settings/http3"),
        None,
        404,
        &["zone setting", "http3"],
    );
}

/// No token is 401, a wrong one 403, checked before the route; the scheme is any case.
#[test]
fn a_missing_or_wrong_token_is_refused_before_the_route_and_the_scheme_is_any_case() {
    let s = Setup::start("api-zone-auth");
    let gw = &s.gw;

    // Authentication: no token is 401, a wrong one 403; both say what to do.
    refused_raw(
        gw,
        None,
        "GET",
        "zones",
        None,
        401,
        &["Authorization: Bearer"],
    );
    for wrong in ["not-the-token", &gw.token[1..]] {
        refused_raw(
            gw,
            Some(wrong),
            "GET",
            "zones",
            None,
            403,
            &["token is not valid"],
        );
    }
    // The scheme is case-insensitive (RFC 9110); the token is not.
    let (code, _) = gw.call_as(None, "GET", "zones", None);
    assert_eq!(code, 401);
    let lower = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["-H", &format!("Authorization: bearer {}", gw.token)])
        .arg(format!("{}/client/v4/zones/{}", gw.api, s.zone))
        .output()
        .unwrap();
    assert_eq!(lower.stdout, b"200", "lower-case bearer, and GET zones/Z");
    // The token is checked before the route: nothing leaks without it.
    refused_raw(
        gw,
        Some("wrong"),
        "GET",
        &s.zone_path("managed_ca"),
        None,
        403,
        &["token"],
    );
    refused_raw(gw, None, "GET", "no/such/route", None, 401, &["Bearer"]);
}

/// Malformed or oversized bodies, unknown routes, methods and ids are refused.
#[test]
fn malformed_bodies_unknown_routes_and_oversized_bodies_are_refused_and_change_nothing() {
    let s = Setup::start("api-zone-malformed");
    let gw = &s.gw;

    // A zone minimum set first, so that a refused PATCH that would change it shows.
    let min = s.zone_path("settings/min_tls_version");
    assert_eq!(
        gw.ok("PATCH", &min, Some(&json!({"value": "1.3"})))["value"],
        "1.3"
    );

    // Bodies: not JSON, empty, unknown fields.
    let token = Some(gw.token.as_str());
    refused_raw(
        gw,
        token,
        "PATCH",
        &min,
        Some("{\"value\": "),
        400,
        &["invalid JSON body"],
    );
    refused_raw(
        gw,
        token,
        "PATCH",
        &min,
        Some("  "),
        400,
        &["JSON object body"],
    );
    refused(
        gw,
        "PATCH",
        &min,
        Some(&json!({"value": "1.2", "editable": false})),
        400,
        &["unknown field `editable`"],
    );
    assert_eq!(gw.ok("GET", &min, None)["value"], "1.3");

    // Routes, methods, ids.
    refused(gw, "GET", "nothing", None, 404, &["no route"]);
    refused(gw, "GET", &s.zone_path("nothing"), None, 404, &["no route"]);
    refused(gw, "DELETE", "zones", None, 405, &["GET"]);
    refused(
        gw,
        "POST",
        &s.zone_path("expiring_certificates"),
        None,
        405,
        &["GET"],
    );
    refused(
        gw,
        "DELETE",
        &s.zone_path("managed_ca"),
        None,
        405,
        &["GET"],
    );
    refused(
        gw,
        "GET",
        "zones/0123456789abcdef0123456789abcdef/custom_hostnames",
        None,
        404,
        &["zone", "0123456789abcdef0123456789abcdef", "not found"],
    );
    refused(
        gw,
        "GET",
        "accounts/0123456789abcdef0123456789abcdef/mtls_certificates",
        None,
        404,
        &["account", "not found"],
    );
    let (status, _) = gw.call_as(token, "GET", "", None);
    assert_eq!(status, 404, "the bare prefix is no route");

    // A body over 1 MiB is refused with 413, and nothing changes.
    let big = s.file("big.json");
    let padding = "a".repeat((1 << 20) + 10);
    fs::write(&big, format!("{{\"value\":\"1.2\",\"x\":\"{padding}\"}}")).unwrap();
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "30",
            "-X",
            "PATCH",
            "-w",
            "\n%{http_code}",
        ])
        .args(["-H", &format!("Authorization: Bearer {}", gw.token)])
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(format!("@{}", big.display()))
        .arg(format!("{}/client/v4/{min}", gw.api))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    assert_eq!(code.trim(), "413", "{text}");
    let answer: Value = serde_json::from_str(body).unwrap();
    check_refusal(
        "PATCH",
        &min,
        413,
        &answer,
        413,
        &["larger than 1048576 bytes"],
    );
    assert_eq!(gw.ok("GET", &min, None)["value"], "1.3");
    // The API still answers after it.
    assert_eq!(gw.ok("GET", "zones", None)[0]["id"], s.zone.as_str());
}
