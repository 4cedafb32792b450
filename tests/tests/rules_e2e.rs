//! Firewall rules on real requests: the documented examples through curl with
//! and without client certificates, block bodies, metrics, live changes, and
//! the `gateway rules` commands.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use gateway_tests::{
    local::curl,
    mtls::{MtlsSetup, config},
    pki::Issued,
};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

fn get(
    s: &MtlsSetup,
    host: &str,
    path: &str,
    cert: Option<&Issued>,
    extra: &[&str],
) -> (u16, String) {
    let mut args: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
    if let Some(c) = cert {
        args.extend(c.curl_args());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    curl(host, s.port, path, s.ca(), &args)
}

#[test]
fn the_documented_rules_allow_and_block_real_clients() {
    let s = MtlsSetup::start(GATEWAY, "rules-e2e", "");
    // (http.host in {"admin.test"} and not cf.tls_client_auth.cert_verified) → block
    assert_eq!(get(&s, "admin.test", "/", Some(&s.alice), &[]).0, 200);
    let (code, body) = get(&s, "admin.test", "/", None, &[]);
    assert_eq!(code, 403);
    assert!(body.contains("Access denied"), "{body}");
    let (code, body) = get(
        &s,
        "admin.test",
        "/",
        None,
        &["-H", "Accept: application/json"],
    );
    assert_eq!(code, 403);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["rule_id"], "admin-needs-valid-cert");
    assert_eq!(json["success"], false);
    let (_, body) = get(&s, "admin.test", "/", None, &["-H", "Accept: text/html"]);
    assert!(body.starts_with("<!doctype html>"), "{body}");
    assert_eq!(
        get(&s, "admin.test", "/", Some(&s.mallory), &[]).0,
        403,
        "unassociated CA"
    );

    // ((not verified or revoked) and path in {"/admin"}) → block, on any host.
    assert_eq!(get(&s, "api.test", "/admin", Some(&s.alice), &[]).0, 200);
    assert_eq!(get(&s, "api.test", "/admin", Some(&s.dave), &[]).0, 200);
    for (who, cert) in [
        ("revoked by CRL", Some(&s.bob)),
        ("revoked by the managed CA", Some(&s.carol)),
        ("none", None),
    ] {
        let (code, body) = get(
            &s,
            "api.test",
            "/admin",
            cert,
            &["-H", "Accept: application/json"],
        );
        assert_eq!(code, 403, "{who}: {body}");
        assert!(body.contains("admin-path"), "{who}: {body}");
        assert_eq!(
            get(&s, "api.test", "/public", cert, &[]).0,
            200,
            "{who}: other paths are open"
        );
    }

    let m = s.metrics();
    for needle in [
        "gateway_rule_matches_total{action=\"block\",rule_id=\"admin-path\"} 3",
        "gateway_rule_matches_total{action=\"block\",rule_id=\"admin-needs-valid-cert\"}",
        "gateway_rule_matches_total{action=\"log\",rule_id=\"log-api\"}",
        "gateway_rule_evaluation_seconds_count",
    ] {
        assert!(m.contains(needle), "{needle} missing:\n{m}");
    }
}

#[test]
fn rule_changes_apply_live_and_bad_ones_are_refused() {
    let s = MtlsSetup::start(GATEWAY, "rules-live", "");
    assert_eq!(
        get(&s, "open.test", "/", None, &["-A", "evil-bot/1.0"]).0,
        200
    );
    let base = config(s.ports, &s.carol.serial, "");
    let with_rule = format!(
        "{base}\n[[rule]]\nid = \"bots\"\nexpression = 'lower(http.user_agent) wildcard \"*bot*\"'\naction = \"block\"\n"
    );
    s.write_config(&with_rule);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&s, "open.test", "/", None, &["-A", "evil-bot/1.0"]).0 != 403 {
        assert!(
            Instant::now() < deadline,
            "the new rule never applied:\n{}",
            s.gateway.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get(&s, "open.test", "/", None, &["-A", "curl/8"]).0, 200);
    // A rule with a syntax error: refused with its position; the running rules stay.
    let broken = format!(
        "{base}\n[[rule]]\nid = \"broken\"\nexpression = 'http.host eq'\naction = \"block\"\n"
    );
    s.write_config(&broken);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.gateway.log().contains("rule \"broken\": 1:13") {
        assert!(
            Instant::now() < deadline,
            "no positioned error logged:\n{}",
            s.gateway.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        get(&s, "open.test", "/", None, &["-A", "evil-bot/1.0"]).0,
        403,
        "previous rules kept"
    );
}

#[test]
fn rules_check_and_eval_commands() {
    let run = |args: &[&str]| {
        let out = Command::new(GATEWAY)
            .arg("rules")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let documented =
        r#"(http.host in {"api.example.com"} and not cf.tls_client_auth.cert_verified)"#;
    assert_eq!(run(&["check", documented]).0, Some(0));
    let (code, _, err) = run(&["check", "http.host eq \"a\" or"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("1:20") && err.contains('^'), "{err}");
    let (code, out, _) = run(&["eval", documented, "--field", "http.host=api.example.com"]);
    assert_eq!((code, out.trim()), (Some(0), "true"));
    let (code, out, _) = run(&[
        "eval",
        documented,
        "--field",
        "http.host=api.example.com",
        "--field",
        "cf.tls_client_auth.cert_verified=true",
    ]);
    assert_eq!((code, out.trim()), (Some(0), "false"));
    let (code, _, err) = run(&["eval", "ssl", "--field", "ip.src=not-an-ip"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("not an IP address"), "{err}");
}
