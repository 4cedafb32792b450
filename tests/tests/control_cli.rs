//! The `gateway` admin CLI against a store-mode gateway: every command, its
//! text and `--json` output, the files it writes, and its errors (non-zero
//! exit, the API's message on stderr). None needs root.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use gateway_tests::{
    control::StoreGateway,
    lab::run,
    local::{Output, TempDir, output},
    pki::{TestCa, server_cert},
};
use serde_json::{Value, json};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

/// A gateway on a fresh store; it stops before the directory is removed.
struct Setup {
    gw: StoreGateway,
    dir: TempDir,
}

impl Setup {
    fn start(test: &str) -> Setup {
        let dir = TempDir::new(test);
        let gw = StoreGateway::start(Path::new(GATEWAY), &dir.0.join("data"), None, &[]);
        Setup { gw, dir }
    }

    /// Runs the CLI and fails unless it succeeds; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.gw.cli(args);
        assert!(
            out.ok,
            "gateway {args:?} failed:\n{}{}",
            out.stdout, out.stderr
        );
        out.stdout
    }

    /// Runs the CLI with `--json` and parses what it prints.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let stdout = self.ok(&all);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("gateway {all:?} printed no JSON ({e}):\n{stdout}"))
    }

    /// Runs the CLI, expects it to fail, and checks that stderr says each of `says`.
    fn fails(&self, args: &[&str], says: &[&str]) -> Output {
        let out = self.gw.cli(args);
        expect_failure(args, &out, says);
        out
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }
}

fn expect_failure(args: &[&str], out: &Output, says: &[&str]) {
    assert!(
        !out.ok,
        "gateway {args:?} should fail:\n{}{}",
        out.stdout, out.stderr
    );
    for s in says {
        assert!(
            out.stderr.contains(s),
            "gateway {args:?}: stderr should say {s:?}:\n{}",
            out.stderr
        );
    }
}

/// The lines of a table whose cells include all of `cells`.
fn rows<'a>(table: &'a str, cells: &[&str]) -> Vec<&'a str> {
    table
        .lines()
        .filter(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            cells.iter().all(|c| words.contains(c))
        })
        .collect()
}

fn text(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Whether `cert` (PEM file) chains to `ca` and `key` belongs to it.
fn check_pair(cert: &Path, key: Option<&Path>, ca: &Path) {
    run(Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(ca)
        .arg(cert))
    .unwrap();
    if let Some(key) = key {
        let public = |args: &[&str], file: &Path| {
            run(Command::new("openssl").args(args).arg(file))
                .unwrap()
                .stdout
        };
        assert_eq!(
            public(&["x509", "-noout", "-pubkey", "-in"], cert),
            public(&["pkey", "-pubout", "-in"], key),
            "{} does not belong to {}",
            key.display(),
            cert.display()
        );
    }
}

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
    assert_eq!(custom["ssl"]["certificate_authority"], "custom");
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
    run(Command::new("openssl")
        .args([
            "req",
            "-new",
            "-nodes",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
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
