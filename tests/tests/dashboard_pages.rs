//! The dashboard's other pages in headless Chromium: bring-your-own CAs
//! (an upload's error as the API words it, an upload, an association, a CRL
//! source, a delete refused with its reason, the five-CA limit), the rules'
//! order and state, expiring certificates, labelled controls everywhere, and
//! the session resumption setting.

mod dashboard_common;

use std::fs;

use dashboard_common::*;
use gateway_tests::pki::TestCa;
use serde_json::{Value, json};

/// The first error's message of a refused call.
fn refusal(answer: &Value) -> String {
    answer["errors"][0]["message"].as_str().unwrap().to_string()
}

#[test]
fn byo_cas_are_uploaded_associated_and_kept_while_in_use() {
    let s = Setup::start("dashboard-cas");
    let b = s.browser(&s.gw.token);
    let cas = format!("accounts/{}/mtls_certificates", s.gw.account());

    // A bad upload shows the API's own words.
    let (code, answer) = s.gw.call(
        "POST",
        &cas,
        Some(&json!({"ca": true, "certificates": "not a certificate"})),
    );
    assert_eq!(code, 400, "{answer:#}");
    b.page(&s.gw.api, "cas");
    b.fill("#ca-pem", "not a certificate");
    b.press("#upload-ca", "Upload");
    b.wait_text("#upload-ca .error", &refusal(&answer));

    // A good one, associated with a hostname, with a CRL file as its source.
    let corp = TestCa::new(&s.dir.0, "corp");
    b.fill("#ca-name", "corp");
    b.fill("#ca-pem", &fs::read_to_string(&corp.cert).unwrap());
    b.press("#upload-ca", "Upload");
    b.wait_text("main", "Uploaded CAs (1 of 5)");
    let id = s.gw.ok("GET", &cas, None)[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let panel = format!("[data-ca='{id}']");
    b.fill(&format!("{panel} .associate input"), "localhost");
    b.press(&format!("{panel} .associate"), "Associate");
    b.wait_text(&panel, "Remove");
    let crl = s.dir.0.join("corp.crl");
    corp.crl(&crl, false);
    b.fill(&format!("{panel} .crl-source input"), crl.to_str().unwrap());
    b.press(&format!("{panel} .crl-source"), "Set CRL source");
    b.wait_text(&panel, "0 revoked");
    let stored = s.gw.ok("GET", &format!("{cas}/{id}"), None);
    assert_eq!(stored["hostnames"], json!(["localhost"]), "{stored:#}");

    // Deleting it is refused while the hostname uses it, with the API's reason.
    let (code, answer) = s.gw.call("DELETE", &format!("{cas}/{id}"), None);
    assert_eq!(code, 409, "{answer:#}");
    b.page(&s.gw.api, "cas");
    b.press(&panel, "Delete CA");
    b.press(&panel, "Confirm: delete corp");
    b.wait_text(&format!("{panel} .error"), &refusal(&answer));
    b.screenshot("cas");

    // Five at most: the form says so and offers no upload.
    for i in 0..4 {
        let ca = TestCa::new(&s.dir.0, &format!("more{i}"));
        let body = json!({"ca": true, "certificates": fs::read_to_string(&ca.cert).unwrap(), "name": format!("more{i}")});
        s.gw.ok("POST", &cas, Some(&body));
    }
    b.page(&s.gw.api, "cas");
    b.wait_text("#upload-ca", "holds 5 CAs");
    assert_eq!(
        b.run("return document.querySelector('#upload-ca button[type=submit]').disabled"),
        true
    );
}

#[test]
fn rules_reorder_and_disable_and_expiring_certificates_show() {
    let s = Setup::start("dashboard-rules");
    let rules = s.entrypoint();
    for name in ["first", "second"] {
        let rule = json!({"description": name, "expression": format!("http.host eq \"{name}.test\""), "action": "block"});
        s.gw.ok("POST", &format!("{rules}/rules"), Some(&rule));
    }
    let order = || -> Vec<(String, bool)> {
        s.gw.ok("GET", &rules, None)["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["description"].as_str().unwrap().to_string(),
                    r["enabled"] == true,
                )
            })
            .collect()
    };
    let b = s.browser(&s.gw.token);
    b.page(&s.gw.api, "rules");
    b.click("button[aria-label='Move first down']");
    b.wait_text("#rule-list tbody tr:first-child", "second");
    assert_eq!(order(), [("second".into(), true), ("first".into(), true)]);
    b.press("#rule-list tbody tr:first-child", "Disable");
    b.wait_text("#rule-list tbody tr:first-child", "Enable");
    assert_eq!(order(), [("second".into(), false), ("first".into(), true)]);

    // A certificate for 10 days is listed within 14 days, and within 30.
    let body = json!({"generate_key": true, "common_name": "short-lived", "validity_days": 10});
    s.gw.ok("POST", &s.zone_path("client_certificates"), Some(&body));
    b.page(&s.gw.api, "expiring");
    b.wait_text("section[aria-label='Within 14 days']", "short-lived");
    b.wait_text("section[aria-label='Within 30 days']", "short-lived");
    b.screenshot("expiring");
}

#[test]
fn every_control_on_every_page_has_a_label() {
    let s = Setup::start("dashboard-labels");
    seed(&s);
    let b = s.browser(&s.gw.token);
    for page in PAGES {
        b.page(&s.gw.api, page);
        let unlabelled = b.run(
            "return [...document.querySelectorAll('input, select, textarea')]\
             .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))\
             .map(e => e.outerHTML)",
        );
        assert_eq!(unlabelled, json!([]), "{page}");
        let unnamed = b.run(
            "return [...document.querySelectorAll('button, a')]\
             .filter(e => !e.textContent.trim() && !e.getAttribute('aria-label'))\
             .map(e => e.outerHTML)",
        );
        assert_eq!(unnamed, json!([]), "{page}");
    }
}

#[test]
fn session_resumption_is_set_on_the_zone_and_hostname_pages() {
    let s = Setup::start("dashboard-resumption");
    let b = s.browser(&s.gw.token);
    let setting = s.zone_path("settings/session_resumption");
    b.page(&s.gw.api, "zone");
    b.choose("#zone-session-resumption", "false");
    b.press("#zone-settings", "Save");
    b.wait_text("#status", "Saved the zone's TLS settings.");
    assert_eq!(s.gw.ok("GET", &setting, None)["value"], false);
    // The default hostname gets its own setting: on.
    b.page(&s.gw.api, "hostnames");
    b.wait_text("#hostname-list", "localhost");
    b.press("#hostname-list", "Edit");
    b.choose(".edit-hostname select[name=session_resumption]", "true");
    b.press(".edit-hostname", "Save");
    b.wait_text("#status", "Saved localhost.");
    let path = s.zone_path("custom_hostnames?hostname=localhost");
    let settings = &s.gw.ok("GET", &path, None)[0]["ssl"]["settings"];
    assert_eq!(settings["session_resumption"], true, "{settings:#}");
    assert_eq!(settings["effective_session_resumption"], true);
}
