//! The `gateway` CLI against a store-mode gateway: CAs and client certificates.

mod cli_common;

use cli_common::*;

#[test]
fn cas_and_client_certificates_through_the_cli() {
    let s = Setup::start("cli-certs");
    let managed_pem = s.gw.data.join("managed-ca.pem");
    s.ok(&["hostname", "add", "api.example.com"]);

    // ca managed prints the managed CA's PEM as it is.
    assert_eq!(
        s.ok(&["ca", "managed"]),
        fs::read_to_string(&managed_pem).unwrap()
    );

    // ca upload / list / show.
    let corp = TestCa::new(&s.dir.0, "corp");
    let corp_pem = corp.cert.display().to_string();
    let uploaded = s.ok(&["ca", "upload", &corp_pem, "--name", "corp"]);
    assert!(uploaded.lines().any(|l| l == "name: corp"), "{uploaded}");
    assert!(
        uploaded.lines().any(|l| l == "signature: ECDSA-SHA256"),
        "{uploaded}"
    );
    assert!(
        !uploaded.contains("BEGIN CERTIFICATE"),
        "PEMs are left out: {uploaded}"
    );
    let list = s.json(&["ca", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
    assert_eq!(
        list,
        s.gw.ok(
            "GET",
            &format!("accounts/{}/mtls_certificates", s.gw.account()),
            None
        ),
        "--json prints the API's result"
    );
    let corp_id = text(&list[0]["id"]);
    let table = s.ok(&["ca", "list"]);
    assert_eq!(
        rows(&table, &[&corp_id, "corp", "ECDSA-SHA256"]).len(),
        1,
        "{table}"
    );
    assert_eq!(s.json(&["ca", "show", &corp_id])["name"], "corp");
    let leaf = corp.client("leaf", None);
    s.fails(
        &["ca", "upload", &leaf.cert.display().to_string()],
        &["CA is not TRUE", "HTTP 400"],
    );
    s.fails(&["ca", "upload", "/nonexistent.pem"], &["cannot read"]);

    // ca crl: set, refresh, remove.
    let crl = s.file("corp.crl");
    corp.crl(&crl, false);
    let with = s.json(&[
        "ca",
        "crl",
        &corp_id,
        "--source",
        &crl.display().to_string(),
    ]);
    assert_eq!(with["crl"]["revoked"], 0, "{with:#}");
    let refreshed = s.json(&["ca", "crl", &corp_id]);
    assert!(refreshed["crl"]["fetched_on"].is_string(), "{refreshed:#}");
    let removed = s.json(&["ca", "crl", &corp_id, "--remove"]);
    assert_eq!(removed["crl"], Value::Null);
    s.fails(&["ca", "crl", &corp_id], &["no CRL source", "HTTP 400"]);

    // ca associate / associations; delete needs them emptied.
    let a = s.json(&["ca", "associate", "--ca", &corp_id, "api.example.com"]);
    assert_eq!(a["hostnames"], json!(["api.example.com"]));
    let shown = s.ok(&["ca", "associations", "--ca", &corp_id]);
    assert!(
        shown
            .lines()
            .any(|l| l == "hostnames: [\"api.example.com\"]"),
        "{shown}"
    );
    s.fails(
        &["ca", "associate", "--ca", &corp_id, "nope.example.com"],
        &["does not exist", "HTTP 400"],
    );
    s.fails(
        &["ca", "delete", &corp_id],
        &["associated with api.example.com", "HTTP 409"],
    );
    let none = s.json(&["ca", "associate", "--ca", &corp_id]);
    assert_eq!(none["hostnames"], json!([]));
    s.ok(&["ca", "delete", &corp_id]);
    assert_eq!(s.json(&["ca", "list"]), json!([]));
    s.fails(&["ca", "show", &corp_id], &["not found", "HTTP 404"]);
    // Without --ca: the managed CA.
    let m = s.json(&["ca", "associate", "api.example.com"]);
    let managed_id = text(&m["mtls_certificate_id"]);
    assert_eq!(s.json(&["ca", "associations"]), m);
    assert_eq!(
        s.json(&["hostname", "show", "api.example.com"])["mtls"]["certificate_authorities"],
        json!([managed_id])
    );

    // cert issue --cn --out: the certificate and a 0600 key, written.
    let out = s.gw.cli(&[
        "cert",
        "issue",
        "--cn",
        "alice",
        "--days",
        "10",
        "--out",
        &s.file("alice").display().to_string(),
    ]);
    assert!(out.ok, "{out:?}");
    let (alice_pem, alice_key) = (s.file("alice.pem"), s.file("alice.key"));
    assert!(out.stderr.contains("certificate written to"), "{out:?}");
    assert!(out.stderr.contains("private key written to"), "{out:?}");
    assert!(!out.stdout.contains("PRIVATE KEY"), "{out:?}");
    assert_eq!(mode(&alice_key), 0o600, "the key is the owner's only");
    check_pair(&alice_pem, Some(&alice_key), &managed_pem);
    let alice_id = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .unwrap_or_else(|| panic!("no id in {out:?}"))
        .to_string();
    // A prefix with a dot in its name keeps it.
    let out = s.gw.cli(&[
        "cert",
        "issue",
        "--cn",
        "dotted",
        "--out",
        &s.file("team.dotted").display().to_string(),
    ]);
    assert!(out.ok, "{out:?}");
    check_pair(
        &s.file("team.dotted.pem"),
        Some(&s.file("team.dotted.key")),
        &managed_pem,
    );
    // An existing key file is made the owner's only, too.
    let reused = s.file("reused.key");
    fs::write(&reused, "old").unwrap();
    fs::set_permissions(&reused, fs::Permissions::from_mode(0o644)).unwrap();
    let out = s.gw.cli(&[
        "cert",
        "issue",
        "--cn",
        "reused",
        "--out",
        &s.file("reused").display().to_string(),
    ]);
    assert!(out.ok, "{out:?}");
    assert_eq!(mode(&reused), 0o600, "an overwritten key file is 0600");
    check_pair(&s.file("reused.pem"), Some(&reused), &managed_pem);

    // cert issue --csr: the certificate on stdout, nothing else.
    let csr = s.file("bob.csr");
    run(new_p256_request(None)
        .args(["-subj", "/CN=bob", "-keyout"])
        .arg(s.file("bob.key"))
        .arg("-out")
        .arg(&csr))
    .unwrap();
    let out = s.gw.cli(&[
        "cert",
        "issue",
        "--csr",
        &csr.display().to_string(),
        "--days",
        "100",
    ]);
    assert!(out.ok, "{out:?}");
    assert!(
        out.stdout.starts_with("-----BEGIN CERTIFICATE-----"),
        "{out:?}"
    );
    assert!(
        out.stdout.ends_with("-----END CERTIFICATE-----\n"),
        "only the certificate is printed: {:?}",
        out.stdout
    );
    assert!(out.stderr.contains("issued "), "{out:?}");
    fs::write(s.file("bob.pem"), &out.stdout).unwrap();
    check_pair(&s.file("bob.pem"), Some(&s.file("bob.key")), &managed_pem);
    // With a generated key and no --out: certificate and key on stdout.
    let out = s.gw.cli(&["cert", "issue", "--cn", "carol"]);
    assert!(out.ok, "{out:?}");
    assert!(
        out.stdout.contains("-----BEGIN CERTIFICATE-----"),
        "{out:?}"
    );
    assert!(
        out.stdout.ends_with("-----END PRIVATE KEY-----\n"),
        "{:?}",
        out.stdout
    );
    let carol = s.json(&["cert", "issue", "--cn", "carol-json"]);
    assert!(text(&carol["private_key"]).contains("BEGIN PRIVATE KEY"));
    // Refused.
    s.fails(
        &["cert", "issue", "--cn", "x", "--days", "4000"],
        &["validity_days must be 1 to 3650", "HTTP 400"],
    );
    let garbage = s.file("garbage.csr");
    fs::write(&garbage, "garbage").unwrap();
    s.fails(
        &["cert", "issue", "--csr", &garbage.display().to_string()],
        &["csr:", "HTTP 400"],
    );

    // cert list / revoke / reactivate.
    let list = s.ok(&["cert", "list"]);
    assert_eq!(
        rows(&list, &[&alice_id, "alice", "active"]).len(),
        1,
        "{list}"
    );
    assert_eq!(s.json(&["cert", "list"]).as_array().unwrap().len(), 6);
    let revoked = s.ok(&["cert", "revoke", &alice_id]);
    assert!(revoked.lines().any(|l| l == "status: revoked"), "{revoked}");
    let only = s.json(&["cert", "list", "--status", "revoked"]);
    assert_eq!(only.as_array().unwrap().len(), 1);
    assert_eq!(only[0]["id"], alice_id.as_str());
    assert_eq!(s.json(&["cert", "show", &alice_id])["status"], "revoked");
    let back = s.ok(&["cert", "reactivate", &alice_id]);
    assert!(back.lines().any(|l| l == "status: active"), "{back}");
    assert_eq!(s.json(&["cert", "list", "--status", "revoked"]), json!([]));
    s.fails(
        &["cert", "revoke", "ffffffffffffffffffffffffffffffff"],
        &["not found", "HTTP 404"],
    );

    // expiring: alice (10 days) within 30, bob (100 days) not.
    let table = s.ok(&["expiring"]);
    assert!(table.starts_with("KIND"), "{table}");
    assert_eq!(
        rows(&table, &["client_certificate", &alice_id, "alice"]).len(),
        1,
        "{table}"
    );
    assert!(!table.contains("bob"), "{table}");
    let within = s.json(&["expiring", "--days", "200"]);
    let names: Vec<&str> = within
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(
        names.contains(&"alice") && names.contains(&"bob"),
        "{within:#}"
    );
    assert!(!names.contains(&"carol"), "{within:#}");
}
