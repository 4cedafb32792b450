//! The dashboard in headless Chromium against a store-mode gateway: the seeds'
//! flows end to end (a hostname at TLS 1.3, mTLS on it, the mTLS rule from the
//! builder, a client certificate with a generated key, then real curl with and
//! without it, and after revoking it), a read-only token, and values from the
//! store shown as text. Screenshots of each page go to `target/dashboard/`.

mod dashboard_common;

use std::process::Command;

use dashboard_common::*;
use gateway_tests::{browser::Browser, local::curl};

const HOST: &str = "api.dash.test";

/// curl to HOST's `/` through the gateway; `cert`: the client certificate and key.
fn curl_host(s: &Setup, extra: &[&str]) -> (u16, String) {
    curl(HOST, s.gw.tls_port, "/", &s.gw.server_ca(), extra)
}

#[test]
fn the_seeds_flows_run_end_to_end_in_the_dashboard() {
    let s = Setup::start("dashboard-flows");
    let b = Browser::local(&s.dir.0, &shots());
    b.screenshot("sign-in");
    sign_in(&b, &s.gw.api, &s.gw.token);

    // Custom Hostnames > Add, with minimum TLS 1.3 and the origin.
    b.page(&s.gw.api, "hostnames");
    b.fill("#add-hostname input[name=hostname]", HOST);
    b.choose("#add-hostname select[name=min_tls_version]", "1.3");
    b.fill(
        "#add-hostname input[name=origin]",
        &format!("http://127.0.0.1:{}", s.origin_port),
    );
    b.press("#add-hostname", "Add hostname");
    let row = b.wait_text("#hostname-list", HOST);
    assert!(row.contains("1.3"), "{row}");
    let stored = &s.gw.ok(
        "GET",
        &s.zone_path(&format!("custom_hostnames?hostname={HOST}")),
        None,
    )[0];
    assert_eq!(
        stored["ssl"]["settings"]["min_tls_version"], "1.3",
        "{stored:#}"
    );
    let (code, out) = curl_host(&s, &["--tlsv1.3"]);
    assert_eq!(
        code, 200,
        "TLS 1.3 to the new hostname and its origin: {out}"
    );
    let (code, out) = curl_host(&s, &["--tls-max", "1.2"]);
    assert_eq!(
        code, 0,
        "a TLS 1.2 client got through to a 1.3 hostname: {out}"
    );

    // Client Certificates > Hosts: mTLS on for the hostname.
    b.page(&s.gw.api, "client-certificates");
    b.fill("#mtls-host", HOST);
    b.press("#enable-mtls", "Enable mTLS");
    b.wait_text("main", "Turn mTLS off");
    b.page(&s.gw.api, "hostnames");
    let row = b.wait_text("#hostname-list", HOST);
    assert!(row.contains(" on "), "mTLS shown as on: {row}");
    b.screenshot("hostnames");

    // Rules: the editor checks as one types, then the builder fills in the seeds' rule.
    b.page(&s.gw.api, "rules");
    b.fill("#expression", "http.host eq");
    let error = b.wait_text("#expression-check", "Line 1, column");
    assert!(error.contains("column 13"), "{error}");
    // A refused Deploy leaves the live check in place: it still answers as one types.
    b.press("#new-rule", "Deploy");
    b.wait_text("#new-rule > .error", "column 13");
    b.fill("#expression", "http.host eq \"a.test\"");
    b.wait_text("#expression-check", "The expression is valid.");
    b.fill("#expression", "http.host eq \"a.test\" and");
    b.wait_text("#expression-check", "Line 1, column");
    b.choose("#mtls-hosts", HOST);
    b.press("#mtls-builder", "Fill in the expression");
    let expression = b.run("return document.getElementById('expression').value");
    assert_eq!(
        expression,
        format!("(http.host in {{\"{HOST}\"}} and not cf.tls_client_auth.cert_verified)"),
    );
    // With the revocation check too (a revoked certificate still verifies).
    b.click("#rule-revoked");
    b.press("#mtls-builder", "Fill in the expression");
    let expression = b.run("return document.getElementById('expression').value");
    assert_eq!(
        expression,
        format!(
            "(http.host in {{\"{HOST}\"}} and (not cf.tls_client_auth.cert_verified or \
             cf.tls_client_auth.cert_revoked))"
        ),
    );
    b.wait_text("#expression-check", "The expression is valid.");
    b.press("#new-rule", "Deploy");
    b.wait_text("#rule-list", "not cf.tls_client_auth.cert_verified");
    b.screenshot("rules");

    // Client Certificates > Create, with a generated key, downloaded.
    b.page(&s.gw.api, "client-certificates");
    b.fill("#common-name", "dash-client");
    b.press("#create-certificate", "Create");
    b.find("#private-key");
    b.click("#issued button[data-download='client-certificate.pem']");
    b.click("#issued button[data-download='client-key.pem']");
    let cert = b.downloaded("client-certificate.pem");
    let key = b.downloaded("client-key.pem");
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
    assert!(key.contains("PRIVATE KEY-----"), "{key}");
    b.screenshot("client-certificates");
    let (cert_path, key_path) = (
        b.downloads.join("client-certificate.pem"),
        b.downloads.join("client-key.pem"),
    );
    let with_cert = [
        "--cert",
        cert_path.to_str().unwrap(),
        "--key",
        key_path.to_str().unwrap(),
    ];
    let (code, body) = curl_host(&s, &with_cert);
    assert_eq!(code, 200, "with the dashboard's certificate: {body}");
    let (code, body) = curl_host(&s, &[]);
    assert_eq!(code, 403, "without a certificate: {body}");

    // Revoke it in the dashboard: the same certificate is refused.
    let serial = s.gw.ok("GET", &s.zone_path("client_certificates"), None)[0]["serial_number"]
        .as_str()
        .unwrap()
        .to_string();
    let revoke = format!("button[data-serial='{serial}']");
    b.click(&revoke);
    b.wait_text(&revoke, "Confirm: revoke dash-client");
    b.click(&revoke);
    b.find("[data-status=revoked]");
    let (code, body) = curl_host(&s, &with_cert);
    assert_eq!(code, 403, "with the revoked certificate: {body}");

    for page in ["zone", "cas", "expiring"] {
        b.page(&s.gw.api, page);
        b.screenshot(page);
    }
    // The charts show this test's own traffic within a sample or two.
    b.page(&s.gw.api, "charts");
    b.wait_text("#chart-handshakes", "ok TLSv1.3");
    b.wait_text("#chart-client_certs", "verified");
    b.wait_text("#chart-requests", "403");
    b.wait_text("#chart-rules", "block");
    // This gateway runs without an interface: no XDP rate is claimed.
    let headline = b.text("#refusals-now");
    assert!(
        headline.contains("XDP is not attached") && !headline.contains("refusing"),
        "{headline}"
    );
    assert_eq!(
        b.run("return document.getElementById('refusals-now').dataset.xdp"),
        "not-attached"
    );
    b.screenshot("charts");
}

#[test]
fn a_read_only_token_sees_no_edit_buttons_and_its_writes_are_refused() {
    let s = Setup::start("dashboard-read-only");
    let reader = s.token(
        "reader",
        &[
            "SSL and Certificates Read",
            "Zone Settings Read",
            "Firewall Services Read",
            "Analytics Read",
        ],
    );
    seed(&s);
    let b = s.browser(&reader);
    let pagers = ["Previous page", "Next page"];
    for page in PAGES {
        b.page(&s.gw.api, page);
        let offered: Vec<String> = buttons(&b)
            .into_iter()
            .filter(|t| !pagers.contains(&t.as_str()))
            .collect();
        assert!(
            offered.is_empty(),
            "{page} offers {offered:?} to a read-only token"
        );
        let writable = b.run(
            "return [...document.querySelectorAll('main textarea, main select, main input')]\
             .filter(e => !e.disabled && e.id !== 'hostname-filter').length",
        );
        assert_eq!(writable, 0, "{page} has fields to fill");
    }
    b.page(&s.gw.api, "zone");
    b.screenshot("zone-read-only");
    // The API refuses the writes the dashboard did not offer.
    let writes = [
        (
            "POST",
            "custom_hostnames",
            r#"{"hostname": "sneaky.dash.test"}"#,
        ),
        ("PATCH", "settings/min_tls_version", r#"{"value": "1.0"}"#),
    ];
    for (method, path, body) in writes {
        let path = s.zone_path(path);
        let (code, answer) =
            s.gw.call_as(Some(&reader), method, &path, Some(body.into()));
        assert_eq!(code, 403, "{method} {path}: {answer:#}");
    }

    // A token for rules only sees the Rules page.
    let rules_only = s.token("rules-reader", &["Firewall Services Read"]);
    let b = s.browser(&rules_only);
    let nav = b.text("#nav");
    assert_eq!(nav.trim(), "Rules", "{nav}");
}

#[test]
fn values_from_the_store_are_shown_as_text_never_run() {
    let s = Setup::start("dashboard-xss");
    let payload = r#"<script>window.__xss=1</script><img src=x onerror="window.__xss=2">"#;
    // A common name holds 64 characters at most.
    let short = "<img src=x onerror=window.__xss=3>";
    s.gw.ok(
        "POST",
        &format!("{}/rules", s.entrypoint()),
        Some(&serde_json::json!({"description": payload, "expression": "http.host eq \"x.test\"", "action": "block"})),
    );
    s.gw.ok(
        "POST",
        &s.zone_path("client_certificates"),
        Some(&serde_json::json!({"generate_key": true, "common_name": short})),
    );
    // A hostname cannot hold markup at all: the API refuses it.
    let body = serde_json::json!({"hostname": "<script>.dash.test"}).to_string();
    let (code, answer) = s.gw.call_as(
        Some(&s.gw.token),
        "POST",
        &s.zone_path("custom_hostnames"),
        Some(body),
    );
    assert_eq!(code, 400, "{answer:#}");
    let b = s.browser(&s.gw.token);
    b.page(&s.gw.api, "rules");
    assert_eq!(b.text("#rule-list .description"), payload);
    b.page(&s.gw.api, "client-certificates");
    b.wait_text("main", short);
    b.screenshot("xss-as-text");
    assert_eq!(b.run("return typeof window.__xss"), "undefined");
    assert_eq!(
        b.run("return document.querySelectorAll('main img, main script').length"),
        0
    );
    assert_eq!(
        b.run("return document.cookie"),
        "",
        "the dashboard sets no cookie"
    );

    // The page's policy: no inline script, no framing, no cookie.
    let out = Command::new("curl")
        .args(["-sSI", &format!("{}/", s.gw.api)])
        .output()
        .unwrap();
    let headers = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        headers.contains("content-security-policy: default-src 'none'; script-src 'self';"),
        "{headers}"
    );
    assert!(headers.contains("frame-ancestors 'none'"), "{headers}");
    assert!(!headers.contains("set-cookie"), "{headers}");
}
