//! The admin API through real HTTP: bring-your-own CAs, hostname
//! associations and CRL sources.

mod api_common;

use api_common::*;

/// A gateway with two hostnames (api. and b.example.com) and one uploaded CA,
/// `corp`, checked as the upload answers it and as it reads back; returns the
/// set-up, the CA and its id.
fn with_corp(label: &str) -> (Setup, TestCa, String) {
    let s = Setup::start(label);
    let gw = &s.gw;
    let base = s.cas_path("");
    let hosts = s.zone_path("custom_hostnames");
    gw.ok(
        "POST",
        &hosts,
        Some(&json!({"hostname": "api.example.com"})),
    );
    gw.ok("POST", &hosts, Some(&json!({"hostname": "b.example.com"})));

    // No uploaded CA at first (the managed and server CAs are not listed).
    assert_eq!(gw.ok("GET", &base, None), json!([]));

    // Upload one.
    let corp = TestCa::new(&s.dir.0, "corp");
    let up = gw.ok(
        "POST",
        &base,
        Some(&json!({"ca": true, "certificates": pem(&corp.cert), "name": "corp"})),
    );
    let corp_id = text(&up["id"]);
    assert_eq!(up["name"], "corp");
    assert_eq!(up["ca"], true);
    assert_eq!(up["signature"], "ECDSA-SHA256");
    assert!(text(&up["issuer"]).contains("corp"), "{up:#}");
    assert_eq!(up["hostnames"], json!([]));
    assert_eq!(up["crl"], Value::Null);
    assert_eq!(gw.ok("GET", &s.cas_path(&corp_id), None), up);
    assert_eq!(gw.ok("GET", &base, None), json!([up.clone()]));
    (s, corp, corp_id)
}

#[test]
/// What an upload must be, and the five-CA limit.
fn uploads_are_checked_and_at_most_five() {
    let (s, corp, corp_id) = with_corp("api-cas-uploads");
    let gw = &s.gw;
    let base = s.cas_path("");

    // What an upload must be.
    let leaf = corp.client("leaf", None);
    let ed25519 = openssl_ca(&s.dir.0, "ed25519", &["-newkey", "ed25519"]);
    let sha224 = openssl_ca(
        &s.dir.0,
        "sha224",
        &[
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-sha224",
        ],
    );
    let expired = dated_ca("expired", now() - 90 * 86_400, now() - 86_400);
    let future = dated_ca("future", now() + 86_400, now() + 90 * 86_400);
    let key_pem = pem(&s.dir.0.join("ed25519.key"));
    let upload = |certificates: &str| json!({"ca": true, "certificates": certificates});
    for (what, body, says) in [
        (
            "not PEM",
            upload("hello"),
            &["certificates:", "no PEM certificate found"][..],
        ),
        (
            "a key",
            upload(&key_pem),
            &["\"PRIVATE KEY\"", "expected \"CERTIFICATE\""][..],
        ),
        (
            "broken base64",
            upload("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"),
            &["certificates:"][..],
        ),
        (
            "a leaf",
            upload(&pem(&leaf.cert)),
            &["CA is not TRUE", "leaf"][..],
        ),
        (
            "Ed25519",
            upload(&ed25519),
            &["signature algorithm is not allowed", "ECDSA-SHA256"][..],
        ),
        (
            "SHA-224",
            upload(&sha224),
            &["signature algorithm is not allowed"][..],
        ),
        ("expired", upload(&expired), &["expired on"][..]),
        ("not yet valid", upload(&future), &["not valid before"][..]),
        (
            "a chain with a leaf",
            upload(&format!("{}{}", pem(&corp.cert), pem(&leaf.cert))),
            &["certificate 2", "CA is not TRUE"][..],
        ),
        (
            "ca false",
            json!({"ca": false, "certificates": pem(&corp.cert)}),
            &["\"ca\": true"][..],
        ),
        (
            "no ca field",
            json!({"certificates": pem(&corp.cert)}),
            &["missing field `ca`"][..],
        ),
        (
            "a relative CRL path",
            json!({"ca": true, "certificates": dated_ca("x", now() - 60, now() + 86_400), "crl_source": "crl.pem"}),
            &["absolute file path"][..],
        ),
    ] {
        let (status, answer) = gw.call("POST", &base, Some(&body));
        check_refusal(what, &base, status, &answer, 400, says);
    }
    refused(
        gw,
        "POST",
        &base,
        Some(&json!({"ca": true, "certificates": pem(&corp.cert), "name": "corp again"})),
        409,
        &["uploaded already", &corp_id],
    );
    refused(
        gw,
        "POST",
        &base,
        Some(&json!({"ca": true, "certificates": pem(&corp.cert), "name": " "})),
        400,
        &["\"name\" is empty"],
    );
    refused(
        gw,
        "POST",
        &base,
        Some(
            &json!({"ca": true, "certificates": dated_ca("y", now() - 60, now() + 86_400), "name": "corp"}),
        ),
        409,
        &["named \"corp\" exists already"],
    );
    assert_eq!(
        gw.ok("GET", &base, None).as_array().unwrap().len(),
        1,
        "refused uploads add nothing"
    );

    // Five at most; the sixth is refused and says so.
    for i in 2..=5 {
        gw.ok(
            "POST",
            &base,
            Some(
                &json!({"ca": true, "certificates": dated_ca(&format!("ca{i}"), now() - 60, now() + 86_400)}),
            ),
        );
    }
    assert_eq!(gw.ok("GET", &base, None).as_array().unwrap().len(), 5);
    refused(
        gw,
        "POST",
        &base,
        Some(&json!({"ca": true, "certificates": dated_ca("ca6", now() - 60, now() + 86_400)})),
        400,
        &["the limit is 5", "delete one first"],
    );
    assert_eq!(gw.ok("GET", &base, None).as_array().unwrap().len(), 5);
}

#[test]
/// CRL sources: verified against the CA, refreshed, kept on failure, removed.
fn crl_sources_are_verified_refreshed_and_kept_when_a_refresh_fails() {
    let (s, corp, corp_id) = with_corp("api-cas-crl");
    let gw = &s.gw;
    let base = s.cas_path("");

    // CRL sources: a file, verified against the CA; refresh; removal.
    let bob = corp.client("bob", None);
    corp.revoke(&bob);
    let corp_crl = s.file("corp.crl");
    corp.crl(&corp_crl, false);
    let crl_path = s.cas_path(&format!("{corp_id}/crl"));
    let source = corp_crl.display().to_string();
    let with_crl = gw.ok("PUT", &crl_path, Some(&json!({"source": source})));
    assert_eq!(with_crl["crl"]["source"], source.as_str());
    assert_eq!(with_crl["crl"]["revoked"], 1, "{with_crl:#}");
    assert_eq!(with_crl["crl"]["last_error"], Value::Null);
    assert!(with_crl["crl"]["fetched_on"].is_string(), "{with_crl:#}");
    assert!(with_crl["crl"]["next_update"].is_string(), "{with_crl:#}");
    let other = TestCa::new(&s.dir.0, "other");
    let other_crl = s.file("other.crl");
    other.crl(&other_crl, true);
    refused(
        gw,
        "PUT",
        &crl_path,
        Some(&json!({"source": other_crl.display().to_string()})),
        400,
        &["CRL source", "not by the CA"],
    );
    refused(
        gw,
        "PUT",
        &crl_path,
        Some(&json!({"source": s.file("missing.crl").display().to_string()})),
        400,
        &["cannot read"],
    );
    refused(
        gw,
        "PUT",
        &crl_path,
        Some(&json!({"source": "https://crl.example.com/x.crl"})),
        400,
        &["absolute file path or an http:// URL"],
    );
    assert_eq!(
        gw.ok("GET", &s.cas_path(&corp_id), None)["crl"],
        with_crl["crl"],
        "refused CRL sources leave the CRL as it was"
    );
    let refresh = s.cas_path(&format!("{corp_id}/crl/refresh"));
    let refreshed = gw.ok("POST", &refresh, None);
    assert_eq!(refreshed["crl"]["revoked"], 1);
    // A refresh that fails keeps the last good CRL and records why.
    fs::copy(&other_crl, &corp_crl).unwrap();
    refused(
        gw,
        "POST",
        &refresh,
        None,
        502,
        &["previous CRL stays in force", "not by the CA"],
    );
    let kept = gw.ok("GET", &s.cas_path(&corp_id), None)["crl"].clone();
    assert_eq!(kept["revoked"], 1, "{kept:#}");
    assert!(
        text(&kept["last_error"]).contains("not by the CA"),
        "{kept:#}"
    );
    corp.crl(&corp_crl, true);
    let refreshed = gw.ok("POST", &refresh, None);
    assert_eq!(refreshed["crl"]["last_error"], Value::Null, "DER works too");
    refused(gw, "GET", &crl_path, None, 405, &["PUT or DELETE"]);
    refused(gw, "GET", &refresh, None, 405, &["POST"]);
    assert_eq!(gw.ok("DELETE", &crl_path, None)["crl"], Value::Null);
    refused(
        gw,
        "POST",
        &refresh,
        None,
        400,
        &["has no CRL source", "PUT"],
    );

    // An upload may name its CRL source at once (`other` signs its own CRL).
    let other_up = gw.ok(
        "POST",
        &base,
        Some(&json!({"ca": true, "certificates": pem(&other.cert), "crl_source": other_crl.display().to_string()})),
    );
    assert_eq!(other_up["crl"]["revoked"], 0, "{other_up:#}");
    assert!(
        text(&other_up["name"]).contains("other"),
        "the name defaults to the subject: {other_up:#}"
    );
    refused(
        gw,
        "POST",
        &base,
        Some(
            &json!({"ca": true, "certificates": dated_ca("z", now() - 60, now() + 86_400), "crl_source": corp_crl.display().to_string()}),
        ),
        400,
        &["crl_source", "not by the CA"],
    );
}

#[test]
/// Hostname associations, and deletion blocked while they exist.
fn associations_choose_which_cas_verify_a_hostname_and_block_deletion() {
    let (s, _, corp_id) = with_corp("api-cas-assoc");
    let gw = &s.gw;
    let base = s.cas_path("");
    let managed = s.managed_ca();
    let hosts = s.zone_path("custom_hostnames");
    let assoc = s.zone_path("certificate_authorities/hostname_associations");

    // Associations: PUT replaces the hostnames of one CA (the managed one when unnamed).
    let a = gw.ok(
        "PUT",
        &assoc,
        Some(&json!({"hostnames": ["api.example.com"], "mtls_certificate_id": corp_id})),
    );
    assert_eq!(a["hostnames"], json!(["api.example.com"]));
    assert_eq!(a["mtls_certificate_id"], corp_id.as_str());
    assert_eq!(
        gw.ok(
            "GET",
            &format!("{assoc}?mtls_certificate_id={corp_id}"),
            None
        ),
        a
    );
    assert_eq!(
        gw.ok("GET", &s.cas_path(&corp_id), None)["hostnames"],
        json!(["api.example.com"])
    );
    let m = gw.ok(
        "PUT",
        &assoc,
        Some(&json!({"hostnames": ["api.example.com", "b.example.com"]})),
    );
    assert_eq!(m["mtls_certificate_id"], managed.as_str());
    assert_eq!(m["hostnames"], json!(["api.example.com", "b.example.com"]));
    assert_eq!(gw.ok("GET", &assoc, None), m);
    let api_host_now = || {
        gw.ok("GET", &hosts, None)
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["hostname"] == "api.example.com")
            .cloned()
            .unwrap()
    };
    let api_host = api_host_now();
    assert_eq!(api_host["mtls"]["enabled"], true);
    assert_eq!(
        api_host["mtls"]["certificate_authorities"],
        json!([corp_id, managed])
    );
    let managed_view = gw.ok("GET", &s.zone_path("managed_ca"), None);
    assert_eq!(
        managed_view["hostnames"],
        json!(["api.example.com", "b.example.com"])
    );
    assert_eq!(
        text(&managed_view["certificate"]),
        pem(&gw.data.join("managed-ca.pem"))
    );
    // Refused: unknown hostnames, unknown CAs, the server CA.
    refused(
        gw,
        "PUT",
        &assoc,
        Some(
            &json!({"hostnames": ["api.example.com", "nope.example.com"], "mtls_certificate_id": corp_id}),
        ),
        400,
        &["\"nope.example.com\" does not exist", "create it first"],
    );
    let nobody = "ffffffffffffffffffffffffffffffff";
    refused(
        gw,
        "PUT",
        &assoc,
        Some(&json!({"hostnames": [], "mtls_certificate_id": nobody})),
        404,
        &["mTLS certificate", nobody],
    );
    refused(
        gw,
        "GET",
        &format!("{assoc}?mtls_certificate_id={nobody}"),
        None,
        404,
        &["mTLS certificate"],
    );
    let server_ca = gw
        .ok(
            "GET",
            &s.zone_path("expiring_certificates?days=36500"),
            None,
        )
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "server_ca")
        .map(|e| text(&e["id"]))
        .unwrap();
    refused(
        gw,
        "PUT",
        &assoc,
        Some(&json!({"hostnames": ["api.example.com"], "mtls_certificate_id": server_ca})),
        404,
        &["mTLS certificate"],
    );
    refused(
        gw,
        "PUT",
        &assoc,
        Some(&json!({"mtls_certificate_id": corp_id})),
        400,
        &["missing field `hostnames`"],
    );
    refused(gw, "DELETE", &assoc, None, 405, &["GET or PUT"]);
    assert_eq!(
        gw.ok("GET", &s.cas_path(&corp_id), None)["hostnames"],
        json!(["api.example.com"]),
        "refused association changes leave them as they were"
    );

    // A CA in use cannot be deleted; with its associations emptied, it can.
    refused(
        gw,
        "DELETE",
        &s.cas_path(&corp_id),
        None,
        409,
        &[
            "is associated with api.example.com",
            "remove its hostname associations first",
        ],
    );
    let emptied = gw.ok(
        "PUT",
        &assoc,
        Some(&json!({"hostnames": [], "mtls_certificate_id": corp_id})),
    );
    assert_eq!(emptied["hostnames"], json!([]));
    assert_eq!(
        gw.ok("DELETE", &s.cas_path(&corp_id), None)["id"],
        corp_id.as_str()
    );
    refused(
        gw,
        "GET",
        &s.cas_path(&corp_id),
        None,
        404,
        &["mTLS certificate", "not found"],
    );
    refused(
        gw,
        "DELETE",
        &s.cas_path(&corp_id),
        None,
        404,
        &["not found"],
    );
    assert_eq!(gw.ok("GET", &base, None), json!([]), "deleted");
    // The managed and server CAs are not deletable through this route.
    for id in [&managed, &server_ca] {
        refused(gw, "DELETE", &s.cas_path(id), None, 404, &["not found"]);
    }
    refused(
        gw,
        "PATCH",
        &s.cas_path(&managed),
        Some(&json!({})),
        405,
        &["GET or DELETE"],
    );
    // The managed CA still verifies both hostnames; an empty list removes them.
    assert_eq!(
        gw.ok("GET", &assoc, None)["hostnames"],
        json!(["api.example.com", "b.example.com"])
    );
    assert_eq!(
        gw.ok("PUT", &assoc, Some(&json!({"hostnames": []})))["hostnames"],
        json!([])
    );
    let api_host = api_host_now();
    assert_eq!(api_host["mtls"]["enabled"], false, "{api_host:#}");
}

/// A CRL server on 127.0.0.1:`port` serving `file`: the first request at once,
/// every later one after `delay` seconds.
fn slow_crl_server(dir: &Path, port: u16, file: &Path, delay: f64) -> Background {
    let script = dir.join("slow_crl.py");
    fs::write(
        &script,
        "import http.server, sys, time\n\
         path, port, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])\n\
         served = [0]\n\
         class Handler(http.server.BaseHTTPRequestHandler):\n\
         \x20   def do_GET(self):\n\
         \x20       if served[0]:\n\
         \x20           time.sleep(delay)\n\
         \x20       served[0] += 1\n\
         \x20       data = open(path, 'rb').read()\n\
         \x20       self.send_response(200)\n\
         \x20       self.send_header('Content-Length', str(len(data)))\n\
         \x20       self.end_headers()\n\
         \x20       self.wfile.write(data)\n\
         \x20   def log_message(self, *args):\n\
         \x20       pass\n\
         server = http.server.HTTPServer(('127.0.0.1', port), Handler)\n\
         print('listening', flush=True)\n\
         server.serve_forever()\n",
    )
    .unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .arg(file)
        .arg(port.to_string())
        .arg(delay.to_string());
    Background::start(cmd, dir.join("slow_crl.log"), "listening")
}

#[test]
fn a_crl_refresh_does_not_undo_a_change_made_while_it_fetched() {
    let s = Setup::start("api-crl-race");
    let gw = &s.gw;
    let corp = TestCa::new(&s.dir.0, "corp");
    let crl = s.file("corp.crl");
    corp.crl(&crl, true);
    let port = free_port();
    let _server = slow_crl_server(&s.dir.0, port, &crl, 2.0);
    let url = format!("http://127.0.0.1:{port}/corp.crl");
    let up = gw.ok(
        "POST",
        &s.cas_path(""),
        Some(&json!({"ca": true, "certificates": pem(&corp.cert), "crl_source": url})),
    );
    assert_eq!(
        up["crl"]["source"],
        url.as_str(),
        "an http:// source: {up:#}"
    );
    assert_eq!(up["crl"]["last_error"], Value::Null);
    let id = text(&up["id"]);
    let refresh = s.cas_path(&format!("{id}/crl/refresh"));
    std::thread::scope(|scope| {
        // The refresh waits 2 s for the CRL; the source is removed meanwhile.
        let slow = scope.spawn(|| gw.call("POST", &refresh, None));
        std::thread::sleep(std::time::Duration::from_millis(500));
        let removed = gw.ok("DELETE", &s.cas_path(&format!("{id}/crl")), None);
        assert_eq!(removed["crl"], Value::Null);
        let (status, answer) = slow.join().unwrap();
        assert_eq!(status, 200, "{answer:#}");
    });
    assert_eq!(
        gw.ok("GET", &s.cas_path(&id), None)["crl"],
        Value::Null,
        "the refresh brought back a removed CRL source"
    );
}
