//! The `gateway` admin CLI against a store-mode gateway: every command, its
//! text and `--json` output, the files it writes, and its errors (non-zero
//! exit, the API's message on stderr). None needs root.

mod cli_common;

use cli_common::*;

#[test]
fn help_lists_the_commands_and_errors_say_what_to_do() {
    let out = output(Command::new(GATEWAY).arg("--help"));
    assert!(out.ok, "{out:?}");
    let commands: Vec<&str> = out
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for c in [
        "run", "xdp", "rules", "zone", "hostname", "ca", "cert", "expiring",
    ] {
        assert!(
            commands.contains(&c),
            "{c} missing from --help:\n{}",
            out.stdout
        );
    }
    for option in ["--api", "--token", "--json"] {
        assert!(out.stdout.contains(option), "{option}:\n{}", out.stdout);
    }
    let out = output(Command::new(GATEWAY).args(["rules", "--help"]));
    for c in ["list", "add", "edit", "move", "delete", "check", "eval"] {
        assert!(
            out.stdout.lines().any(|l| l.trim_start().starts_with(c)),
            "rules {c} missing:\n{}",
            out.stdout
        );
    }

    // No token: said before anything is sent.
    let args = ["zone", "show"];
    let out = output(
        Command::new(GATEWAY)
            .args(args)
            .args(["--api", "http://127.0.0.1:1"])
            .env_remove("GATEWAY_TOKEN"),
    );
    expect_failure(&args, &out, &["no admin token", "GATEWAY_TOKEN", "--token"]);
    // Nothing listening.
    let out = output(Command::new(GATEWAY).args(args).args([
        "--api",
        "http://127.0.0.1:1",
        "--token",
        "x",
    ]));
    expect_failure(&args, &out, &["cannot reach http://127.0.0.1:1"]);

    let s = Setup::start("cli-errors");
    // A wrong token: the API's message and status.
    let out = output(
        Command::new(GATEWAY)
            .args(["hostname", "list"])
            .env("GATEWAY_API", &s.gw.api)
            .env("GATEWAY_TOKEN", "wrong"),
    );
    expect_failure(
        &["hostname", "list"],
        &out,
        &["token is not valid", "HTTP 403"],
    );
    // --token and --api on the command line win over the environment.
    let out = output(
        Command::new(GATEWAY)
            .args([
                "hostname",
                "list",
                "--api",
                &s.gw.api,
                "--token",
                &s.gw.token,
            ])
            .env("GATEWAY_API", "http://127.0.0.1:1")
            .env("GATEWAY_TOKEN", "wrong"),
    );
    assert!(out.ok, "{out:?}");
    assert_eq!(rows(&out.stdout, &["localhost"]).len(), 1, "{}", out.stdout);
    // Usage errors come from the argument parser.
    s.fails(&["cert", "issue"], &["--csr"]);
    s.fails(
        &["cert", "issue", "--cn", "a", "--csr", "x.csr"],
        &["cannot be used with"],
    );
    s.fails(&["rules", "move", "abc"], &["say where", "--before"]);
    s.fails(&["zone", "set"], &["nothing to set"]);
}

#[test]
fn zone_and_hostnames_through_the_cli() {
    let s = Setup::start("cli-hostnames");
    let zone = s.gw.zone();

    // zone show / set.
    let shown = s.ok(&["zone", "show"]);
    for line in [
        format!("id: {zone}"),
        "min_tls_version: 1.2".into(),
        "ciphers: []".into(),
        "default_hostname: localhost".into(),
    ] {
        assert!(shown.lines().any(|l| l == line), "{line:?} in:\n{shown}");
    }
    let set = s.ok(&["zone", "set", "--min-tls", "1.3"]);
    assert!(set.lines().any(|l| l == "min_tls_version: 1.3"), "{set}");
    let out = s.fails(
        &["zone", "set", "--min-tls", "1.4"],
        &["invalid TLS version \"1.4\"", "1.0, 1.1, 1.2, 1.3"],
    );
    assert_eq!(out.stdout, "");
    s.fails(
        &["zone", "set", "--ciphers", "NOT-A-CIPHER"],
        &["NOT-A-CIPHER", "HTTP 400"],
    );
    // A refused setting changes none of them.
    s.fails(
        &[
            "zone",
            "set",
            "--min-tls",
            "1.0",
            "--ciphers",
            "NOT-A-CIPHER",
        ],
        &["NOT-A-CIPHER", "HTTP 400"],
    );
    s.fails(
        &[
            "zone",
            "set",
            "--min-tls",
            "1.4",
            "--ciphers",
            "ECDHE-ECDSA-AES128-GCM-SHA256",
        ],
        &["invalid TLS version"],
    );
    let z = s.json(&["zone", "show"]);
    assert_eq!(z["min_tls_version"], "1.3", "{z:#}");
    assert_eq!(z["ciphers"], json!([]), "{z:#}");
    let z = s.json(&[
        "zone",
        "set",
        "--ciphers",
        "ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256",
    ]);
    assert_eq!(z["min_tls_version"], "1.3", "{z:#}");
    assert_eq!(
        z["ciphers"],
        json!([
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-RSA-AES128-GCM-SHA256"
        ])
    );
    let z = s.json(&["zone", "set", "--ciphers", "", "--min-tls", "1.2"]);
    assert_eq!(z["ciphers"], json!([]));
    assert_eq!(z["min_tls_version"], "1.2");

    // hostname add / list / show / edit / delete.
    let added = s.ok(&[
        "hostname",
        "add",
        "api.example.com",
        "--min-tls",
        "1.3",
        "--origin",
        "http://127.0.0.1:9",
        "--mtls",
        "true",
        "--forward",
        "rfc9440",
    ]);
    assert!(
        added.lines().any(|l| l == "hostname: api.example.com"),
        "{added}"
    );
    assert!(!added.contains("PRIVATE KEY"), "{added}");
    let list = s.ok(&["hostname", "list"]);
    assert!(
        list.lines().next().unwrap().starts_with("ID"),
        "a header first:\n{list}"
    );
    assert_eq!(
        rows(
            &list,
            &["api.example.com", "1.3", "true", "http://127.0.0.1:9"]
        )
        .len(),
        1,
        "{list}"
    );
    assert_eq!(
        rows(&list, &["localhost", "1.2", "false", "-"]).len(),
        1,
        "{list}"
    );
    let listed = s.json(&["hostname", "list"]);
    assert_eq!(
        listed,
        s.gw.ok("GET", &format!("zones/{zone}/custom_hostnames"), None),
        "--json prints the API's result"
    );
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[0]["mtls"]["enabled"], true, "{listed:#}");
    let id = text(&listed[0]["id"]);
    assert_eq!(listed[0]["hostname"], "api.example.com");
    let by_name = s.json(&["hostname", "show", "api.example.com"]);
    let by_id = s.json(&["hostname", "show", &id]);
    assert_eq!(by_name, by_id);
    assert_eq!(by_name["mtls"]["forward_client_cert"], "rfc9440");
    assert_eq!(by_name["ssl"]["settings"]["min_tls_version"], "1.3");
    let shown = s.ok(&["hostname", "show", "api.example.com"]);
    assert!(shown.lines().any(|l| l == format!("id: {id}")), "{shown}");

    let edited = s.json(&[
        "hostname",
        "edit",
        "api.example.com",
        "--min-tls",
        "zone",
        "--origin",
        "",
        "--mtls",
        "false",
        "--wildcard",
        "true",
        "--ciphers",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
    ]);
    assert_eq!(edited["ssl"]["settings"]["min_tls_version"], Value::Null);
    assert_eq!(
        edited["ssl"]["settings"]["effective_min_tls_version"],
        "1.2"
    );
    assert_eq!(
        edited["ssl"]["settings"]["ciphers"],
        json!(["ECDHE-ECDSA-AES256-GCM-SHA384"])
    );
    assert_eq!(edited["custom_origin_server"], Value::Null);
    assert_eq!(edited["mtls"]["enabled"], false);
    assert_eq!(edited["wildcard"], true);

    // An uploaded certificate.
    let shop = server_cert(&s.dir.0, "shop", &["shop.example.com"]);
    let other = server_cert(&s.dir.0, "other", &["other.example.com"]);
    let (cert, key) = (
        shop.cert.display().to_string(),
        shop.key.display().to_string(),
    );
    let custom = s.json(&[
        "hostname",
        "add",
        "shop.example.com",
        "--cert",
        &cert,
        "--key",
        &key,
    ]);
    assert_eq!(custom["ssl"]["issued_by"], "custom");
    s.fails(
        &[
            "hostname",
            "edit",
            "shop.example.com",
            "--cert",
            &cert,
            "--key",
            &other.key.display().to_string(),
        ],
        &["does not belong", "HTTP 400"],
    );
    s.fails(
        &["hostname", "edit", "shop.example.com", "--cert", &cert],
        &["--key"],
    );
    s.fails(
        &[
            "hostname",
            "add",
            "x.example.com",
            "--cert",
            "/nonexistent.pem",
            "--key",
            &key,
        ],
        &["cannot read /nonexistent.pem"],
    );

    // Errors.
    s.fails(&["hostname", "add", "Bad_Name"], &["lowercase", "HTTP 400"]);
    s.fails(
        &["hostname", "add", "api.example.com"],
        &["already exists", "HTTP 409"],
    );
    s.fails(
        &["hostname", "add", "x.example.com", "--forward", "smoke"],
        &["HTTP 400"],
    );
    s.fails(
        &["hostname", "delete", "localhost"],
        &["default hostname", "HTTP 409"],
    );
    s.fails(
        &["hostname", "show", "nope.example.com"],
        &["no hostname \"nope.example.com\"", "gateway hostname list"],
    );

    let deleted = s.json(&["hostname", "delete", "api.example.com"]);
    assert_eq!(deleted["id"], id.as_str());
    s.fails(&["hostname", "show", "api.example.com"], &["no hostname"]);
    s.ok(&["hostname", "delete", "shop.example.com"]);
    let list = s.json(&["hostname", "list"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
}

#[test]
fn rules_through_the_cli() {
    let s = Setup::start("cli-rules");
    let ids = |set: &Value| -> Vec<String> {
        set["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| text(&r["id"]))
            .collect()
    };
    let empty = s.ok(&["rules", "list"]);
    assert_eq!(empty.trim(), "ID  ACTION  ENABLED  EXPRESSION");

    let one = s.json(&[
        "rules",
        "add",
        "http.host eq \"a.test\"",
        "--description",
        "first",
    ]);
    let r1 = ids(&one)[0].clone();
    assert_eq!(one["rules"][0]["action"], "block");
    assert_eq!(one["rules"][0]["description"], "first");
    let two = s.json(&[
        "rules",
        "add",
        "http.request.uri.path eq \"/x\"",
        "--action",
        "log",
        "--disabled",
    ]);
    let r2 = ids(&two)[1].clone();
    assert_eq!(two["rules"][1]["enabled"], false);
    let three = s.json(&[
        "rules",
        "add",
        "not cf.tls_client_auth.cert_verified",
        "--action",
        "allow",
        "--before",
        &r1,
    ]);
    let r3 = ids(&three)[0].clone();
    assert_eq!(ids(&three), [r3.as_str(), r1.as_str(), r2.as_str()]);

    let table = s.ok(&["rules", "list"]);
    assert_eq!(rows(&table, &[&r2, "log", "false"]).len(), 1, "{table}");
    assert_eq!(
        table.lines().nth(1).unwrap().split_whitespace().next(),
        Some(r3.as_str())
    );

    // move / edit.
    let moved = s.json(&["rules", "move", &r2, "--index", "1"]);
    assert_eq!(ids(&moved), [r2.as_str(), r3.as_str(), r1.as_str()]);
    let moved = s.json(&["rules", "move", &r2, "--after", &r1]);
    assert_eq!(ids(&moved), [r3.as_str(), r1.as_str(), r2.as_str()]);
    let edited = s.json(&[
        "rules",
        "edit",
        &r2,
        "--enabled",
        "true",
        "--action",
        "block",
        "--expression",
        "http.host eq \"b.test\"",
    ]);
    assert_eq!(edited["rules"][2]["enabled"], true);
    assert_eq!(edited["rules"][2]["action"], "block");
    assert_eq!(edited["rules"][2]["expression"], "http.host eq \"b.test\"");

    // Errors: the position of an expression error, unknown ids, bad places.
    let out = s.fails(
        &["rules", "add", "http.host eq \"a\" and\nnope.field eq 1"],
        &[
            "expression: error at line 2, column 1",
            "nope.field",
            "HTTP 400",
        ],
    );
    assert_eq!(out.stdout, "");
    s.fails(
        &["rules", "edit", &r1, "--expression", "http.host eq"],
        &["line 1, column", "HTTP 400"],
    );
    s.fails(
        &["rules", "move", &r1, "--before", &r1],
        &["relative to itself"],
    );
    s.fails(&["rules", "move", &r1, "--index", "9"], &["out of range"]);
    s.fails(
        &["rules", "delete", "ffffffffffffffffffffffffffffffff"],
        &["not found", "HTTP 404"],
    );
    s.fails(
        &["rules", "add", "http.host eq \"a\"", "--action", "explode"],
        &["HTTP 400"],
    );
    assert_eq!(
        ids(&s.json(&["rules", "list"])),
        [r3.as_str(), r1.as_str(), r2.as_str()],
        "errors change nothing"
    );

    // delete.
    let left = s.json(&["rules", "delete", &r1]);
    assert_eq!(ids(&left), [r3.as_str(), r2.as_str()]);
    let table = s.ok(&["rules", "delete", &r3]);
    assert_eq!(table.lines().count(), 2, "header and one rule:\n{table}");
    // The offline tools still work beside the API commands.
    let check = output(Command::new(GATEWAY).args(["rules", "check", "http.host eq"]));
    expect_failure(
        &["rules", "check"],
        &check,
        &["invalid expression at 1:13", "^"],
    );
}

#[test]
fn a_lost_token_is_replaced_offline() {
    let s = Setup::start("cli-rotate");
    let data = s.gw.data.clone();
    let old = s.gw.token.clone();
    // Not while the gateway holds the store.
    let busy = output(
        Command::new(&s.gw.bin)
            .args(["rotate-token", "--data-dir"])
            .arg(&data),
    );
    assert!(!busy.ok, "rotated under a running gateway: {busy:?}");
    assert!(busy.stderr.contains("stop it first"), "{busy:?}");
    let bin = s.gw.bin.clone();
    let dir = s.dir;
    drop(s.gw);
    let rotated = output(
        Command::new(&bin)
            .args(["rotate-token", "--data-dir"])
            .arg(&data),
    );
    assert!(rotated.ok, "{rotated:?}");
    let new = rotated
        .stdout
        .split_once("GATEWAY_TOKEN): ")
        .map(|(_, t)| t.trim().to_string())
        .expect("the new token is printed");
    assert_ne!(new, old);
    let gw = StoreGateway::start(&bin, &data, Some(&new), &[]);
    assert_eq!(gw.call("GET", "zones", None).0, 200);
    assert_eq!(gw.call_as(Some(&old), "GET", "zones", None).0, 403);
    let missing = output(
        Command::new(&bin)
            .args(["rotate-token", "--data-dir"])
            .arg(dir.0.join("nothing-here")),
    );
    assert!(
        !missing.ok && missing.stderr.contains("no store"),
        "{missing:?}"
    );
}

#[test]
fn session_resumption_through_the_cli() {
    let s = Setup::start("cli-resumption");
    assert_eq!(s.json(&["zone", "show"])["session_resumption"], true);
    let z = s.json(&["zone", "set", "--session-resumption", "false"]);
    assert_eq!(z["session_resumption"], false, "{z:#}");
    let added = s.json(&[
        "hostname",
        "add",
        "r.example.com",
        "--session-resumption",
        "true",
    ]);
    let settings = &added["ssl"]["settings"];
    assert_eq!(settings["session_resumption"], true, "{added:#}");
    assert_eq!(settings["effective_session_resumption"], true);
    let edited = s.json(&[
        "hostname",
        "edit",
        "r.example.com",
        "--session-resumption",
        "zone",
    ]);
    let settings = &edited["ssl"]["settings"];
    assert_eq!(settings["session_resumption"], Value::Null, "{edited:#}");
    assert_eq!(settings["effective_session_resumption"], false);
    s.fails(
        &[
            "hostname",
            "edit",
            "r.example.com",
            "--session-resumption",
            "maybe",
        ],
        &["--session-resumption: true, false or zone"],
    );
}
