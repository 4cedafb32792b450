//! The admin API through real HTTP: custom hostnames and their certificates.

mod api_common;

use api_common::*;

#[test]
fn custom_hostnames_are_created_listed_patched_and_refused() {
    let s = Setup::start("api-hostnames");
    let gw = &s.gw;
    let base = s.zone_path("custom_hostnames");
    let managed = s.managed_ca();

    // The first run made the default hostname, with a certificate from the server CA.
    let list = gw.ok("GET", &base, None);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
    let localhost = &list[0];
    assert_eq!(localhost["hostname"], "localhost");
    assert_eq!(localhost["default"], true);
    assert_eq!(localhost["ssl"]["issued_by"], "gateway");
    assert_eq!(localhost["mtls"]["enabled"], false);
    let localhost_id = text(&localhost["id"]);

    // Create, with settings.
    let created = gw.ok(
        "POST",
        &base,
        Some(&json!({
            "hostname": "api.example.com",
            "ssl": {"type": "dv", "method": "http", "settings": {"min_tls_version": "1.3"}},
            "custom_origin_server": "http://127.0.0.1:9",
            "mtls": {"enabled": true, "forward_client_cert": "rfc9440"},
        })),
    );
    let id = text(&created["id"]);
    assert_eq!(created["hostname"], "api.example.com");
    assert_eq!(created["default"], false);
    assert_eq!(created["wildcard"], false);
    assert_eq!(created["ssl"]["settings"]["min_tls_version"], "1.3");
    assert_eq!(
        created["ssl"]["settings"]["effective_min_tls_version"],
        "1.3"
    );
    assert_eq!(created["ssl"]["issued_by"], "gateway");
    assert_eq!(created["custom_origin_server"], "http://127.0.0.1:9");
    assert_eq!(created["mtls"]["enabled"], true);
    assert_eq!(created["mtls"]["forward_client_cert"], "rfc9440");
    assert_eq!(
        created["mtls"]["certificate_authorities"],
        json!([managed]),
        "mtls.enabled alone associates the managed CA"
    );
    assert!(created.get("key").is_none() && !created.to_string().contains("PRIVATE KEY"));
    assert_eq!(gw.ok("GET", &format!("{base}/{id}"), None), created);
    let names: Vec<Value> = gw
        .ok("GET", &base, None)
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["hostname"].clone())
        .collect();
    assert_eq!(names, [json!("api.example.com"), json!("localhost")]);

    // Names that are not hostnames, missing names, duplicates.
    for (bad, says) in [
        ("API.example.com", "lowercase"),
        ("under_score.example.com", "lowercase"),
        ("trailing.example.com.", "no trailing dot"),
        ("*.example.com", "wildcard"),
        ("", "1 to 255"),
    ] {
        refused(
            gw,
            "POST",
            &base,
            Some(&json!({"hostname": bad})),
            400,
            &[says],
        );
    }
    refused(
        gw,
        "POST",
        &base,
        Some(&json!({"wildcard": true})),
        400,
        &["\"hostname\" is required"],
    );
    refused(
        gw,
        "POST",
        &base,
        Some(&json!({"hostname": "api.example.com"})),
        409,
        &["\"api.example.com\" already exists"],
    );
    refused(
        gw,
        "POST",
        &base,
        Some(
            &json!({"hostname": "x.example.com", "ssl": {"settings": {"min_tls_version": "1.9"}}}),
        ),
        400,
        &["invalid TLS version"],
    );
    refused(
        gw,
        "POST",
        &base,
        Some(&json!({"hostname": "x.example.com", "mtls": {"forward_client_cert": "smoke"}})),
        400,
        &["invalid JSON body"],
    );
    refused(
        gw,
        "POST",
        &base,
        Some(&json!({"hostname": "x.example.com", "color": "blue"})),
        400,
        &["unknown field `color`"],
    );
    refused(
        gw,
        "POST",
        &base,
        Some(&json!({"hostname": "x.example.com", "custom_origin_server": "ftp://origin"})),
        400,
        &["refused", "http://host:port"],
    );
    refused(
        gw,
        "POST",
        &base,
        Some(&json!({"hostname": "x.example.com", "ssl": {"settings": {"ciphers": ["NOPE"]}}})),
        400,
        &["NOPE"],
    );
    assert_eq!(
        gw.ok("GET", &base, None).as_array().unwrap().len(),
        2,
        "refused creations leave no hostname behind"
    );

    // Unknown ids.
    let nobody = "ffffffffffffffffffffffffffffffff";
    for method in ["GET", "DELETE"] {
        refused(
            gw,
            method,
            &format!("{base}/{nobody}"),
            None,
            404,
            &["custom hostname", nobody, "not found"],
        );
    }
    refused(
        gw,
        "PATCH",
        &format!("{base}/{nobody}"),
        Some(&json!({"wildcard": true})),
        404,
        &["custom hostname"],
    );
    refused(gw, "PUT", &base, None, 405, &["GET or POST"]);
    refused(
        gw,
        "POST",
        &format!("{base}/{id}"),
        Some(&json!({})),
        405,
        &["GET, PATCH or DELETE"],
    );

    // Patch: clear the minimum (the zone's applies), the origin, mTLS; wildcard.
    let one = format!("{base}/{id}");
    let patched = gw.ok(
        "PATCH",
        &one,
        Some(&json!({"ssl": {"settings": {"min_tls_version": null, "ciphers": ["ECDHE-ECDSA-AES256-GCM-SHA384"]}}})),
    );
    assert_eq!(patched["ssl"]["settings"]["min_tls_version"], Value::Null);
    assert_eq!(
        patched["ssl"]["settings"]["effective_min_tls_version"],
        "1.2"
    );
    assert_eq!(
        patched["ssl"]["settings"]["ciphers"],
        json!(["ECDHE-ECDSA-AES256-GCM-SHA384"])
    );
    assert_eq!(
        patched["custom_origin_server"], "http://127.0.0.1:9",
        "fields not in the PATCH stay"
    );
    assert_eq!(patched["mtls"]["enabled"], true);
    refused(
        gw,
        "PATCH",
        &one,
        Some(&json!({"hostname": "renamed.example.com"})),
        400,
        &["cannot be renamed"],
    );
    refused(
        gw,
        "PATCH",
        &one,
        Some(&json!({"custom_origin_server": "not a url"})),
        400,
        &["origin"],
    );
    assert_eq!(
        gw.ok("GET", &one, None),
        patched,
        "refused patches leave the hostname as it was"
    );
    let patched = gw.ok(
        "PATCH",
        &one,
        Some(&json!({"custom_origin_server": null, "mtls": {"enabled": false}, "wildcard": true})),
    );
    assert_eq!(patched["custom_origin_server"], Value::Null);
    assert_eq!(patched["mtls"]["enabled"], false);
    assert_eq!(patched["mtls"]["certificate_authorities"], json!([]));
    assert_eq!(patched["mtls"]["forward_client_cert"], "rfc9440");
    assert_eq!(patched["wildcard"], true);

    // The default hostname cannot be deleted.
    refused(
        gw,
        "DELETE",
        &format!("{base}/{localhost_id}"),
        None,
        409,
        &["\"localhost\" is the default hostname", "cannot be deleted"],
    );
    gw.ok("DELETE", &one, None);
    let list = gw.ok("GET", &base, None);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
    assert_eq!(list[0]["hostname"], "localhost");
}

#[test]
fn uploaded_certificates_must_match_cover_the_hostname_and_be_valid() {
    let s = Setup::start("api-hostname-certs");
    let gw = &s.gw;
    let base = s.zone_path("custom_hostnames");
    // A hostname with a certificate from the gateway, to patch.
    let created = gw.ok("POST", &base, Some(&json!({"hostname": "api.example.com"})));
    let one = format!("{base}/{}", text(&created["id"]));

    // Uploaded certificates: the key must match, the names must cover the hostname.
    let shop = server_cert(&s.dir.0, "shop", &["shop.example.com"]);
    let other = server_cert(&s.dir.0, "other", &["other.example.com"]);
    let wild = server_cert(&s.dir.0, "wild", &["*.example.com"]);
    let upload = |cert: &Path, key: &Path| json!({"hostname": "shop.example.com", "ssl": {"custom_certificate": pem(cert), "custom_key": pem(key)}});
    refused(
        gw,
        "POST",
        &base,
        Some(&upload(&shop.cert, &other.key)),
        400,
        &["custom_key does not belong"],
    );
    refused(
        gw,
        "POST",
        &base,
        Some(&upload(&other.cert, &other.key)),
        400,
        &["does not cover \"shop.example.com\"", "other.example.com"],
    );
    refused(
        gw,
        "POST",
        &base,
        Some(
            &json!({"hostname": "shop.example.com", "ssl": {"custom_certificate": pem(&shop.cert)}}),
        ),
        400,
        &["together"],
    );
    refused(
        gw,
        "POST",
        &base,
        Some(
            &json!({"hostname": "shop.example.com", "ssl": {"custom_certificate": "junk", "custom_key": pem(&shop.key)}}),
        ),
        400,
        &["ssl.custom_certificate", "no PEM certificate"],
    );
    refused(
        gw,
        "POST",
        &base,
        Some(
            &json!({"hostname": "shop.example.com", "ssl": {"custom_certificate": pem(&shop.cert), "custom_key": "junk"}}),
        ),
        400,
        &["ssl.custom_key", "PEM private key"],
    );
    refused(
        gw,
        "PATCH",
        &one,
        Some(
            &json!({"ssl": {"custom_certificate": pem(&shop.cert), "custom_key": pem(&shop.key)}}),
        ),
        400,
        &["does not cover \"api.example.com\""],
    );
    assert_eq!(gw.ok("GET", &one, None)["ssl"]["issued_by"], "gateway");
    assert!(
        gw.ok("GET", &base, None)
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["hostname"] != "shop.example.com"),
        "refused uploads create nothing"
    );
    // A wildcard certificate covers a name one level below it.
    let uploaded = gw.ok("POST", &base, Some(&upload(&wild.cert, &wild.key)));
    assert_eq!(uploaded["ssl"]["issued_by"], "custom");
    let shop_id = text(&uploaded["id"]);
    // It is in force: the terminator presents it (curl trusts it as its own CA).
    let (code, body) = curl("shop.example.com", gw.tls_port, "/", &wild.cert, &[]);
    assert_ne!(code, 0, "TLS with the uploaded certificate failed: {body}");
    let exact = gw.ok(
        "PATCH",
        &format!("{base}/{shop_id}"),
        Some(
            &json!({"ssl": {"custom_certificate": pem(&shop.cert), "custom_key": pem(&shop.key)}}),
        ),
    );
    assert_eq!(exact["ssl"]["issued_by"], "custom");
    let (code, body) = curl("shop.example.com", gw.tls_port, "/", &shop.cert, &[]);
    assert_ne!(code, 0, "TLS with the replaced certificate failed: {body}");
    // `null` goes back to a certificate from the gateway's server CA.
    let back = gw.ok(
        "PATCH",
        &format!("{base}/{shop_id}"),
        Some(&json!({"ssl": {"custom_certificate": null}})),
    );
    assert_eq!(back["ssl"]["issued_by"], "gateway");
    let (code, body) = curl("shop.example.com", gw.tls_port, "/", &gw.server_ca(), &[]);
    assert_ne!(code, 0, "TLS with the reissued certificate failed: {body}");
    gw.ok(
        "PATCH",
        &format!("{base}/{shop_id}"),
        Some(
            &json!({"ssl": {"custom_certificate": pem(&shop.cert), "custom_key": pem(&shop.key)}}),
        ),
    );

    // A wildcard hostname's certificate must cover its subdomains too.
    refused(
        gw,
        "PATCH",
        &format!("{base}/{shop_id}"),
        Some(&json!({"wildcard": true})),
        400,
        &["wildcard", "\"*.shop.example.com\""],
    );
    assert_eq!(gw.ok("GET", &format!("{base}/{shop_id}"), None), exact);
    let (w_cert, w_key) = dated(
        "w.example.com",
        &["w.example.com", "*.w.example.com"],
        now() - 60,
        now() + 86_400,
    );
    let w_wild = json!({"hostname": "w.example.com", "wildcard": true, "ssl": {"custom_certificate": w_cert, "custom_key": w_key}});
    let w_made = gw.ok("POST", &base, Some(&w_wild));
    assert_eq!(w_made["wildcard"], true);
    gw.ok("DELETE", &format!("{base}/{}", text(&w_made["id"])), None);
    let (narrow_cert, narrow_key) = dated(
        "w.example.com",
        &["w.example.com"],
        now() - 60,
        now() + 86_400,
    );
    refused(
        gw,
        "POST",
        &base,
        Some(
            &json!({"hostname": "w.example.com", "wildcard": true, "ssl": {"custom_certificate": narrow_cert, "custom_key": narrow_key}}),
        ),
        400,
        &["\"*.w.example.com\""],
    );
    // Certificates out of their validity.
    for (from, to, says) in [
        (now() - 2 * 86_400, now() - 86_400, "expired on"),
        (now() + 86_400, now() + 2 * 86_400, "not valid before"),
    ] {
        let (c, k) = dated("w.example.com", &["w.example.com"], from, to);
        refused(
            gw,
            "POST",
            &base,
            Some(
                &json!({"hostname": "w.example.com", "ssl": {"custom_certificate": c, "custom_key": k}}),
            ),
            400,
            &["ssl.custom_certificate", says],
        );
    }

    // Delete.
    assert_eq!(
        gw.ok("DELETE", &format!("{base}/{shop_id}"), None)["id"],
        shop_id.as_str()
    );
    refused(
        gw,
        "GET",
        &format!("{base}/{shop_id}"),
        None,
        404,
        &["not found"],
    );
    gw.ok("DELETE", &one, None);
    let list = gw.ok("GET", &base, None);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
    assert_eq!(list[0]["hostname"], "localhost");
}
