//! The admin API through real HTTP: managed-CA client certificates, revocation,
//! expiry listing and alerts.

mod api_common;

use api_common::*;

/// Issuing from a CSR or a key made for the caller; bad requests issue nothing.
#[test]
fn client_certificates_are_issued_from_a_csr_or_a_new_key_and_bad_requests_are_refused() {
    let s = Setup::start("api-certs-issue");
    let gw = &s.gw;
    let base = s.zone_path("client_certificates");
    let managed = s.managed_ca();
    let managed_pem = gw.data.join("managed-ca.pem");

    // From a CSR.
    let alice_csr = csr(&s.dir.0, "alice", "ec");
    let alice = gw.ok(
        "POST",
        &base,
        Some(&json!({"csr": alice_csr, "validity_days": 10})),
    );
    let alice_id = text(&alice["id"]);
    assert_eq!(alice["status"], "active");
    assert_eq!(alice["common_name"], "alice");
    assert_eq!(alice["csr"], alice_csr.as_str());
    assert_eq!(alice["certificate_authority"]["id"], managed.as_str());
    assert_eq!(alice["revoked_at"], Value::Null);
    assert!(alice.get("private_key").is_none(), "{alice:#}");
    assert_eq!(text(&alice["serial_number"]).len(), 32);
    assert_eq!(text(&alice["fingerprint_sha256"]).len(), 64);
    assert!(
        verifies(&s.dir.0, &text(&alice["certificate"]), &managed_pem),
        "the certificate chains to the managed CA"
    );
    // RSA keys are accepted too.
    let rsa = gw.ok(
        "POST",
        &base,
        Some(&json!({"csr": csr(&s.dir.0, "rsa-user", "rsa:2048"), "validity_days": 100})),
    );
    assert_eq!(rsa["common_name"], "rsa-user");

    // With a key made for the caller, returned once.
    let bob = gw.ok(
        "POST",
        &base,
        Some(&json!({"generate_key": true, "common_name": "bob", "validity_days": 100})),
    );
    let bob_id = text(&bob["id"]);
    let key = text(&bob["private_key"]);
    assert!(key.contains("BEGIN PRIVATE KEY"), "{key}");
    let cert_file = s.file("bob.pem");
    let key_file = s.file("bob.key");
    fs::write(&cert_file, text(&bob["certificate"])).unwrap();
    fs::write(&key_file, &key).unwrap();
    let pubkey = |args: &[&str], file: &Path| {
        run(Command::new("openssl").args(args).arg(file))
            .map(|o| o.stdout)
            .unwrap()
    };
    assert_eq!(
        pubkey(&["x509", "-noout", "-pubkey", "-in"], &cert_file),
        pubkey(&["pkey", "-pubout", "-in"], &key_file),
        "the returned key belongs to the certificate"
    );
    let shown = gw.ok("GET", &format!("{base}/{bob_id}"), None);
    assert!(shown.get("private_key").is_none(), "the key is not kept");
    assert_eq!(shown["certificate"], bob["certificate"]);
    // The default validity is the longest.
    let long = gw.ok(
        "POST",
        &base,
        Some(&json!({"generate_key": true, "common_name": "carol"})),
    );
    let days = |c: &Value| {
        let at = |f: &str| {
            let out = run(Command::new("date")
                .args(["-u", "+%s", "-d"])
                .arg(text(&c[f])))
            .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse::<i64>()
                .unwrap()
        };
        (at("expires_on") - now() + 43_200) / 86_400
    };
    assert_eq!(days(&alice), 10);
    assert_eq!(days(&long), 3650);

    // Refused requests.
    let bad = |body: Value, says: &[&str]| refused(gw, "POST", &base, Some(&body), 400, says);
    bad(json!({"csr": "garbage"}), &["csr:", "CERTIFICATE REQUEST"]);
    bad(
        json!({"csr": csr(&s.dir.0, "weak", "rsa:1024")}),
        &["1024 bits is too weak"],
    );
    bad(
        json!({"csr": alice_csr, "validity_days": 0}),
        &["validity_days must be 1 to 3650"],
    );
    bad(
        json!({"csr": alice_csr, "validity_days": 4000}),
        &["validity_days must be 1 to 3650"],
    );
    bad(
        json!({"csr": alice_csr, "validity_days": -1}),
        &["invalid JSON body"],
    );
    bad(
        json!({"csr": alice_csr, "generate_key": true, "common_name": "x"}),
        &["either \"csr\""],
    );
    bad(json!({}), &["either \"csr\""]);
    bad(
        json!({"generate_key": true}),
        &["generate_key needs a \"common_name\""],
    );
    bad(
        json!({"generate_key": true, "common_name": ""}),
        &["common_name"],
    );
    bad(
        json!({"generate_key": true, "common_name": "c".repeat(65)}),
        &["cannot be a common name"],
    );
    let no_cn = s.file("no-cn.csr");
    run(new_p256_request(None)
        .args(["-subj", "/O=No Name"])
        .arg("-keyout")
        .arg(s.file("no-cn.key"))
        .arg("-out")
        .arg(&no_cn))
    .unwrap();
    bad(json!({"csr": pem(&no_cn)}), &["no common name"]);
    bad(
        json!({"csr": csr(&s.dir.0, "edwards", "ed25519")}),
        &["only RSA (2048 bits or more) and ECDSA keys"],
    );
    let mut tampered = alice_csr.clone().into_bytes();
    let at = tampered.len() / 2;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    bad(
        json!({"csr": String::from_utf8(tampered).unwrap()}),
        &["csr:"],
    );
    bad(
        json!({"generate_key": true, "common_name": "x", "key_type": "rsa"}),
        &["unknown field `key_type`"],
    );

    // Listing.
    let list = gw.ok("GET", &base, None);
    let ids: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| text(&c["id"]))
        .collect();
    assert_eq!(ids.len(), 4, "refused requests issue nothing: {list:#}");
    for id in [&alice_id, &bob_id] {
        assert!(ids.contains(id), "{id} missing from {ids:?}");
    }
    assert_eq!(
        gw.ok("GET", &format!("{base}?status=revoked"), None),
        json!([])
    );

    // 64 characters is the limit, not 64 bytes (as for a CSR's CN).
    let wide = "é".repeat(64);
    let accented = gw.ok(
        "POST",
        &base,
        Some(&json!({"generate_key": true, "common_name": wide})),
    );
    assert_eq!(accented["common_name"], wide.as_str());
}

/// Revocation and reactivation: listed by status, and in force at once for a rule.
#[test]
fn a_revoked_certificate_is_listed_refused_at_once_and_served_again_once_reactivated() {
    let s = Setup::start("api-certs-revoke");
    let gw = &s.gw;
    let base = s.zone_path("client_certificates");
    let issue = |cn: &str| {
        let c = gw.ok(
            "POST",
            &base,
            Some(&json!({"generate_key": true, "common_name": cn, "validity_days": 100})),
        );
        let (cert_file, key_file) = (s.file(&format!("{cn}.pem")), s.file(&format!("{cn}.key")));
        fs::write(&cert_file, text(&c["certificate"])).unwrap();
        fs::write(&key_file, text(&c["private_key"])).unwrap();
        (text(&c["id"]), cert_file, key_file)
    };
    let (alice_id, _, _) = issue("alice");
    let (bob_id, cert_file, key_file) = issue("bob");

    // Listing: both active, none revoked.
    let list = gw.ok("GET", &base, None);
    let ids: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| text(&c["id"]))
        .collect();
    assert_eq!(ids.len(), 2, "{list:#}");
    for id in [&alice_id, &bob_id] {
        assert!(ids.contains(id), "{id} missing from {ids:?}");
    }
    assert_eq!(
        gw.ok("GET", &format!("{base}?status=revoked"), None),
        json!([])
    );

    // Revoke (DELETE) and reactivate (PATCH).
    let one = format!("{base}/{alice_id}");
    let revoked = gw.ok("DELETE", &one, None);
    assert_eq!(revoked["status"], "revoked");
    assert!(revoked["revoked_at"].is_string(), "{revoked:#}");
    assert_eq!(gw.ok("GET", &one, None)["status"], "revoked");
    let again = gw.ok("DELETE", &one, None);
    assert_eq!(
        again["revoked_at"], revoked["revoked_at"],
        "revoking twice keeps the first time"
    );
    let only_revoked = gw.ok("GET", &format!("{base}?status=revoked"), None);
    assert_eq!(only_revoked.as_array().unwrap().len(), 1);
    assert_eq!(only_revoked[0]["id"], alice_id.as_str());
    assert_eq!(
        gw.ok("GET", &format!("{base}?status=active"), None)
            .as_array()
            .unwrap()
            .len(),
        1,
        "bob only"
    );
    refused(
        gw,
        "PATCH",
        &one,
        Some(&json!({"reactivate": false})),
        400,
        &["{\"reactivate\": true}"],
    );
    refused(
        gw,
        "PATCH",
        &one,
        Some(&json!({"reactivate": "yes"})),
        400,
        &["invalid JSON body"],
    );
    assert_eq!(gw.ok("GET", &one, None)["status"], "revoked");
    let back = gw.ok("PATCH", &one, Some(&json!({"reactivate": true})));
    assert_eq!(back["status"], "active");
    assert_eq!(back["revoked_at"], Value::Null);
    // As the reference's edit sends it (`{}`, or no body): a reactivation.
    gw.ok("DELETE", &one, None);
    assert_eq!(gw.ok("PATCH", &one, Some(&json!({})))["status"], "active");
    gw.ok("DELETE", &one, None);
    let (code, answer) = gw.call_as(Some(&gw.token), "PATCH", &one, None);
    assert_eq!(
        (code, &answer["result"]["status"]),
        (200, &json!("active")),
        "{answer:#}"
    );

    // Unknown ids and methods.
    let nobody = format!("{base}/ffffffffffffffffffffffffffffffff");
    refused(
        gw,
        "GET",
        &nobody,
        None,
        404,
        &["client certificate", "not found"],
    );
    refused(gw, "DELETE", &nobody, None, 404, &["client certificate"]);
    refused(
        gw,
        "PATCH",
        &nobody,
        Some(&json!({"reactivate": true})),
        404,
        &["client certificate"],
    );
    refused(gw, "PUT", &one, None, 405, &["GET, PATCH or DELETE"]);
    refused(gw, "DELETE", &base, None, 405, &["GET or POST"]);

    // A revocation is in force at once: with the managed CA verifying
    // `localhost` and a rule blocking revoked certificates, bob is refused
    // while revoked and let through again once reactivated.
    gw.ok(
        "PUT",
        &s.zone_path("certificate_authorities/hostname_associations"),
        Some(&json!({"hostnames": ["localhost"]})),
    );
    gw.ok(
        "POST",
        &s.zone_path("rulesets/phases/http_request_firewall_custom/entrypoint/rules"),
        Some(&json!({"expression": "cf.tls_client_auth.cert_revoked", "action": "block"})),
    );
    let bob_url = |what: &str| {
        let (code, body) = curl(
            "localhost",
            gw.tls_port,
            "/",
            &gw.server_ca(),
            &[
                "--cert",
                &cert_file.display().to_string(),
                "--key",
                &key_file.display().to_string(),
            ],
        );
        assert_ne!(code, 0, "{what}: no HTTP answer: {body}");
        code
    };
    assert_ne!(bob_url("active"), 403);
    gw.ok("DELETE", &format!("{base}/{bob_id}"), None);
    assert_eq!(bob_url("revoked"), 403);
    gw.ok(
        "PATCH",
        &format!("{base}/{bob_id}"),
        Some(&json!({"reactivate": true})),
    );
    assert_ne!(bob_url("reactivated"), 403);
}

/// What expires within so many days (revoked certificates aside), and the expiry gauges.
#[test]
fn expiring_certificates_are_listed_and_every_certificate_has_an_expiry_gauge() {
    let s = Setup::start("api-certs-expiry");
    let gw = &s.gw;
    let base = s.zone_path("client_certificates");
    let managed = s.managed_ca();
    let issue = |cn: &str, days: u32| {
        text(
            &gw.ok(
                "POST",
                &base,
                Some(&json!({"generate_key": true, "common_name": cn, "validity_days": days})),
            )["id"],
        )
    };
    let alice_id = issue("alice", 10);
    let bob_id = issue("bob", 100);
    let one = format!("{base}/{alice_id}");

    // What expires within 30 days: alice (10 days), not bob (100).
    let expiring = |q: &str| {
        gw.ok(
            "GET",
            &s.zone_path(&format!("expiring_certificates{q}")),
            None,
        )
    };
    let soon = expiring("?days=30");
    let entries = soon.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{soon:#}");
    assert_eq!(entries[0]["kind"], "client_certificate");
    assert_eq!(entries[0]["id"], alice_id.as_str());
    assert_eq!(entries[0]["name"], "alice");
    assert!(
        (9..=10).contains(&entries[0]["days_left"].as_i64().unwrap()),
        "{soon:#}"
    );
    // days_left may tick down between the two calls (a second's boundary).
    let without_days = |v: Value| -> Vec<Value> {
        let mut v = v.as_array().unwrap().clone();
        v.iter_mut()
            .for_each(|e| drop(e.as_object_mut().unwrap().remove("days_left")));
        v
    };
    assert_eq!(
        without_days(expiring("")),
        without_days(soon.clone()),
        "30 days by default"
    );
    let all = expiring("?days=36500");
    for kind in [
        "managed_ca",
        "server_ca",
        "client_certificate",
        "server_certificate",
    ] {
        assert!(
            all.as_array().unwrap().iter().any(|e| e["kind"] == kind),
            "{kind} missing: {all:#}"
        );
    }
    let within_101 = expiring("?days=101");
    for id in [&alice_id, &bob_id] {
        assert!(
            within_101
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["id"] == id.as_str()),
            "{id} expires within 101 days: {within_101:#}"
        );
    }
    for bad in ["abc", "-1", "99999999"] {
        refused(
            gw,
            "GET",
            &s.zone_path(&format!("expiring_certificates?days={bad}")),
            None,
            400,
            &["whole number of days"],
        );
    }
    // A revoked certificate is not in use: it does not count.
    gw.ok("DELETE", &one, None);
    assert_eq!(expiring("?days=30"), json!([]));
    gw.ok("PATCH", &one, Some(&json!({"reactivate": true})));

    // Every certificate has an expiry gauge.
    let metrics = gw.metrics();
    let gauge = |kind: &str, id: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("gateway_certificate_expiry_timestamp_seconds{")
                    && l.contains(&format!("kind=\"{kind}\""))
                    && l.contains(&format!("id=\"{id}\""))
            })
            .and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no gauge for {kind} {id}:\n{metrics}"))
    };
    let alice_expiry = gauge("client_certificate", &alice_id);
    let in_days = (alice_expiry as i64 - now()) / 86_400;
    assert!((9..=10).contains(&in_days), "{alice_expiry}");
    assert!(gauge("client_certificate", &bob_id) > alice_expiry);
    gauge("managed_ca", &managed);
}

#[test]
fn expiry_alerts_fire_again_for_a_renewed_certificate() {
    let s = Setup::start("api-expiry-alerts");
    let gw = &s.gw;
    let base = s.zone_path("custom_hostnames");
    let upload = |days: i64| {
        let (c, k) = dated(
            "soon.example.com",
            &["soon.example.com"],
            now() - 60,
            now() + days * 86_400,
        );
        json!({"ssl": {"custom_certificate": c, "custom_key": k}})
    };
    let mut body = upload(10);
    body["hostname"] = json!("soon.example.com");
    let id = text(&gw.ok("POST", &base, Some(&body))["id"]);
    let alerts = || {
        gw.process
            .log()
            .lines()
            .filter(|l| l.contains("certificate expiry: server_certificate") && l.contains(&id))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let first = alerts();
    assert_eq!(first.len(), 1, "{first:#?}\n{}", gw.process.log());
    assert!(first[0].contains("within 14 days"), "{first:#?}");
    // Renewed for a year: no alert. Replaced by one that expires soon: alerted again.
    gw.ok("PATCH", &format!("{base}/{id}"), Some(&upload(365)));
    assert_eq!(alerts().len(), 1, "{:#?}", alerts());
    gw.ok("PATCH", &format!("{base}/{id}"), Some(&upload(20)));
    let again = alerts();
    assert_eq!(again.len(), 2, "{again:#?}");
    assert!(again[1].contains("within 30 days"), "{again:#?}");
    // Listed as expiring, with its gauge.
    let soon = gw.ok("GET", &s.zone_path("expiring_certificates?days=30"), None);
    assert_eq!(soon[0]["kind"], "server_certificate", "{soon:#}");
    assert_eq!(soon[0]["id"], id.as_str());
    assert!(
        gw.metrics()
            .lines()
            .any(|l| l.contains("kind=\"server_certificate\"") && l.contains(&id)),
        "no gauge for {id}"
    );
}
