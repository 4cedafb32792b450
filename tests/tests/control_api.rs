//! The admin API of a store-mode gateway (`gateway run --data-dir`, no
//! `--config`), through real HTTP: every route, every validation rule, and that
//! a refused change leaves the state as it was. Each test starts its own
//! gateway in its own directory; none needs root (no `--interface`).

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use boring::{
    asn1::Asn1Time,
    bn::BigNum,
    ec::{EcGroup, EcKey},
    hash::MessageDigest,
    nid::Nid,
    pkey::PKey,
    x509::{
        X509Builder, X509NameBuilder,
        extension::{BasicConstraints, SubjectAlternativeName},
    },
};
use gateway_tests::{
    control::StoreGateway,
    lab::run,
    local::{Background, TempDir, curl, free_port},
    pki::{TestCa, server_cert},
};
use serde_json::{Value, json};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

/// A gateway on a fresh store, with its ids. The gateway stops before the
/// directory is removed (fields drop in order).
struct Setup {
    gw: StoreGateway,
    zone: String,
    account: String,
    dir: TempDir,
}

impl Setup {
    fn start(test: &str) -> Setup {
        let dir = TempDir::new(test);
        let gw = StoreGateway::start(Path::new(GATEWAY), &dir.0.join("data"), None, &[]);
        let (zone, account) = (gw.zone(), gw.account());
        Setup {
            gw,
            zone,
            account,
            dir,
        }
    }

    /// A path under the zone.
    fn zone_path(&self, rest: &str) -> String {
        format!("zones/{}/{rest}", self.zone)
    }

    /// A path under the account's mTLS certificates.
    fn cas_path(&self, rest: &str) -> String {
        let base = format!("accounts/{}/mtls_certificates", self.account);
        if rest.is_empty() {
            base
        } else {
            format!("{base}/{rest}")
        }
    }

    /// A file in the scratch directory.
    fn file(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }

    /// The managed CA's id.
    fn managed_ca(&self) -> String {
        text(&self.gw.ok("GET", &self.zone_path("managed_ca"), None)["id"])
    }
}

fn text(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

/// The first error's message.
fn message(answer: &Value) -> String {
    answer["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Asserts that a call fails with `status` and a message containing each of `says`.
fn refused(
    gw: &StoreGateway,
    method: &str,
    path: &str,
    body: Option<&Value>,
    status: u16,
    says: &[&str],
) -> Value {
    let (code, answer) = gw.call(method, path, body);
    check_refusal(method, path, code, &answer, status, says);
    answer
}

/// As [`refused`], with a raw body and any token.
fn refused_raw(
    gw: &StoreGateway,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&str>,
    status: u16,
    says: &[&str],
) -> Value {
    let (code, answer) = gw.call_as(token, method, path, body.map(str::to_string));
    check_refusal(method, path, code, &answer, status, says);
    answer
}

fn check_refusal(method: &str, path: &str, code: u16, answer: &Value, status: u16, says: &[&str]) {
    assert_eq!(code, status, "{method} {path}: {answer:#}");
    assert_eq!(answer["success"], false, "{method} {path}: {answer:#}");
    assert_eq!(answer["result"], Value::Null, "{method} {path}: {answer:#}");
    let m = message(answer);
    for s in says {
        assert!(
            m.contains(s),
            "{method} {path}: the message should say {s:?}: {m:?}"
        );
    }
}

fn pem(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A self-signed P-256 CA (CA:TRUE) valid from `not_before` to `not_after`
/// (Unix seconds), made with BoringSSL so that any dates can be set.
fn dated_ca(common_name: &str, not_before: i64, not_after: i64) -> String {
    dated(common_name, &[], not_before, not_after).0
}

/// A self-signed P-256 certificate (CA:TRUE) for `names` (subjectAltName) with
/// any dates; its PEM and its key's PEM.
fn dated(common_name: &str, names: &[&str], not_before: i64, not_after: i64) -> (String, String) {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, common_name)
        .unwrap();
    let name = name.build();
    let mut serial = [0u8; 12];
    boring::rand::rand_bytes(&mut serial).unwrap();
    serial[0] = (serial[0] & 0x7f) | 0x10;
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(
        &BigNum::from_slice(&serial)
            .unwrap()
            .to_asn1_integer()
            .unwrap(),
    )
    .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(not_before).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(not_after).unwrap())
        .unwrap();
    b.append_extension(&BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    if !names.is_empty() {
        let mut san = SubjectAlternativeName::new();
        for n in names {
            san.dns(n);
        }
        let san = san.build(&b.x509v3_context(None, None)).unwrap();
        b.append_extension(&san).unwrap();
    }
    b.sign(&key, MessageDigest::sha256()).unwrap();
    (
        String::from_utf8(b.build().to_pem().unwrap()).unwrap(),
        String::from_utf8(key.private_key_to_pem_pkcs8().unwrap()).unwrap(),
    )
}

/// A self-signed CA made by `openssl req` with `key_args` (e.g. an Ed25519 key
/// or a SHA-224 signature).
fn openssl_ca(dir: &Path, file: &str, key_args: &[&str]) -> String {
    let cert = dir.join(format!("{file}.pem"));
    run(Command::new("openssl")
        .args(["req", "-x509", "-nodes", "-days", "30"])
        .args(key_args)
        .args(["-subj", &format!("/CN={file}")])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .arg("-keyout")
        .arg(dir.join(format!("{file}.key")))
        .arg("-out")
        .arg(&cert))
    .unwrap();
    pem(&cert)
}

/// A certificate request for `CN=cn` with a new key from `key` (`ec` or `rsa:N`).
fn csr(dir: &Path, cn: &str, key: &str) -> String {
    let out = dir.join(format!("{cn}.csr"));
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-new", "-nodes", "-newkey", key]);
    if key == "ec" {
        cmd.args(["-pkeyopt", "ec_paramgen_curve:P-256"]);
    }
    run(cmd
        .args(["-subj", &format!("/CN={cn}")])
        .arg("-keyout")
        .arg(dir.join(format!("{cn}.key")))
        .arg("-out")
        .arg(&out))
    .unwrap();
    pem(&out)
}

/// `openssl verify` of a PEM certificate against a CA file.
fn verifies(dir: &Path, cert_pem: &str, ca: &Path) -> bool {
    let path = dir.join("to-verify.pem");
    fs::write(&path, cert_pem).unwrap();
    Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(ca)
        .arg(&path)
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn zone_settings_authentication_and_malformed_requests() {
    let s = Setup::start("api-zone");
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

#[test]
fn custom_hostnames_are_created_edited_and_deleted() {
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
    assert_eq!(localhost["ssl"]["certificate_authority"], "gateway");
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
    assert_eq!(created["ssl"]["certificate_authority"], "gateway");
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
    assert_eq!(
        gw.ok("GET", &one, None)["ssl"]["certificate_authority"],
        "gateway"
    );
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
    assert_eq!(uploaded["ssl"]["certificate_authority"], "custom");
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
    assert_eq!(exact["ssl"]["certificate_authority"], "custom");
    let (code, body) = curl("shop.example.com", gw.tls_port, "/", &shop.cert, &[]);
    assert_ne!(code, 0, "TLS with the replaced certificate failed: {body}");

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

#[test]
fn mtls_certificates_associations_and_crl_sources() {
    let s = Setup::start("api-cas");
    let gw = &s.gw;
    let base = s.cas_path("");
    let managed = s.managed_ca();
    let hosts = s.zone_path("custom_hostnames");
    let assoc = s.zone_path("certificate_authorities/hostname_associations");
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

    // Five at most; the sixth is refused and says so.
    for i in 3..=5 {
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
    let api_host = gw
        .ok("GET", &hosts, None)
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hostname"] == "api.example.com")
        .cloned()
        .unwrap();
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
    assert_eq!(gw.ok("GET", &base, None).as_array().unwrap().len(), 4);
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
    let api_host = gw
        .ok("GET", &hosts, None)
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hostname"] == "api.example.com")
        .cloned()
        .unwrap();
    assert_eq!(api_host["mtls"]["enabled"], false, "{api_host:#}");
}

#[test]
fn client_certificates_are_issued_revoked_and_expire() {
    let s = Setup::start("api-certs");
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
        3
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
        Some(&json!({})),
        400,
        &["missing field `reactivate`"],
    );
    assert_eq!(gw.ok("GET", &one, None)["status"], "revoked");
    let back = gw.ok("PATCH", &one, Some(&json!({"reactivate": true})));
    assert_eq!(back["status"], "active");
    assert_eq!(back["revoked_at"], Value::Null);

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
    assert_eq!(expiring(""), soon, "30 days by default");
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
fn rules_are_added_changed_moved_and_deleted_in_order() {
    let dir = TempDir::new("api-rules");
    let data = dir.0.join("data");
    let gw = StoreGateway::start(Path::new(GATEWAY), &data, None, &[]);
    let zone = gw.zone();
    let entry = format!("zones/{zone}/rulesets/phases/http_request_firewall_custom/entrypoint");
    let rules = format!("{entry}/rules");
    let order = |set: &Value| -> Vec<String> {
        set["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| text(&r["id"]))
            .collect()
    };

    let ids = |list: &[&String]| -> Vec<String> { list.iter().map(|s| s.to_string()).collect() };

    let empty = gw.ok("GET", &entry, None);
    assert_eq!(empty["phase"], "http_request_firewall_custom");
    assert_eq!(empty["rules"], json!([]));

    // Adds a rule; its id is the one that was not there before.
    let add = |body: Value| -> String {
        let before = order(&gw.ok("GET", &entry, None));
        let after = order(&gw.ok("POST", &rules, Some(&body)));
        assert_eq!(after.len(), before.len() + 1, "{after:?}");
        after.into_iter().find(|id| !before.contains(id)).unwrap()
    };
    let r1 = add(
        json!({"expression": "http.host eq \"a.test\"", "action": "block", "description": "one"}),
    );
    let r2 = add(json!({"expression": "http.request.uri.path eq \"/admin\"", "action": "log"}));
    let r3 = add(
        json!({"expression": "not cf.tls_client_auth.cert_verified", "action": "allow", "position": {"before": r1}}),
    );
    let r4 = add(
        json!({"expression": "http.host eq \"d.test\"", "action": "block", "enabled": false, "position": {"after": r3}}),
    );
    let r5 = add(
        json!({"expression": "http.host eq \"e.test\"", "action": "block", "position": {"index": 1}}),
    );
    let set = gw.ok("GET", &entry, None);
    assert_eq!(order(&set), ids(&[&r5, &r3, &r4, &r1, &r2]));
    let first = &set["rules"][3];
    assert_eq!(first["description"], "one");
    assert_eq!(first["action"], "block");
    assert_eq!(first["enabled"], true);
    assert_eq!(first["expression"], "http.host eq \"a.test\"");
    assert_eq!(set["rules"][2]["enabled"], false);
    assert_eq!(set["rules"][4]["description"], "");

    // Moving: index, before, after; the end is index n.
    let mv = |id: &str, position: Value| {
        order(&gw.ok(
            "PATCH",
            &format!("{rules}/{id}"),
            Some(&json!({"position": position})),
        ))
    };
    assert_eq!(
        mv(&r2, json!({"index": 1})),
        ids(&[&r2, &r5, &r3, &r4, &r1])
    );
    assert_eq!(
        mv(&r2, json!({"index": 5})),
        ids(&[&r5, &r3, &r4, &r1, &r2])
    );
    assert_eq!(
        mv(&r5, json!({"after": r1})),
        ids(&[&r3, &r4, &r1, &r5, &r2])
    );
    assert_eq!(
        mv(&r3, json!({"before": r2})),
        ids(&[&r4, &r1, &r5, &r3, &r2])
    );
    let expected = ids(&[&r4, &r1, &r5, &r3, &r2]);

    // Refused moves.
    let r1_path = format!("{rules}/{r1}");
    for (position, status, says) in [
        (json!({"before": r1}), 400, "relative to itself"),
        (json!({"index": 0}), 400, "out of range: 1 to 5"),
        (json!({"index": 6}), 400, "out of range"),
        (json!({"before": r2, "index": 1}), 400, "exactly one"),
        (json!({}), 400, "exactly one"),
        (
            json!({"after": "ffffffffffffffffffffffffffffffff"}),
            404,
            "rule",
        ),
        (json!({"first": true}), 400, "unknown field `first`"),
    ] {
        refused(
            &gw,
            "PATCH",
            &r1_path,
            Some(&json!({"position": position})),
            status,
            &[says],
        );
    }
    refused(
        &gw,
        "POST",
        &rules,
        Some(
            &json!({"expression": "http.host eq \"x\"", "action": "log", "position": {"index": 7}}),
        ),
        400,
        &["out of range: 1 to 6"],
    );
    assert_eq!(order(&gw.ok("GET", &entry, None)), expected);

    // Edits.
    let edited = gw.ok(
        "PATCH",
        &r1_path,
        Some(&json!({"action": "log", "enabled": false, "description": "changed", "expression": "http.host in {\"a.test\" \"b.test\"}"})),
    );
    assert_eq!(order(&edited), expected, "an edit keeps the place");
    let r = &edited["rules"][1];
    assert_eq!(r["action"], "log");
    assert_eq!(r["enabled"], false);
    assert_eq!(r["description"], "changed");
    assert_eq!(r["expression"], "http.host in {\"a.test\" \"b.test\"}");

    // Expressions that do not compile are refused with their position.
    let bad = "http.host eq \"a.test\"\n  and nope.field eq 1";
    let answer = refused(
        &gw,
        "POST",
        &rules,
        Some(&json!({"expression": bad, "action": "block"})),
        400,
        &["expression: error at line 2, column 7", "nope.field"],
    );
    let error = &answer["errors"][0];
    assert_eq!(error["code"], 10014);
    assert_eq!(error["source"]["line"], 2, "{answer:#}");
    assert_eq!(error["source"]["column"], 7, "{answer:#}");
    assert_eq!(error["source"]["pointer"], "/expression");
    let answer = refused(
        &gw,
        "PATCH",
        &r1_path,
        Some(&json!({"expression": "http.host eq"})),
        400,
        &["line 1, column"],
    );
    assert_eq!(answer["errors"][0]["source"]["line"], 1);
    assert!(answer["errors"][0]["source"]["column"].as_u64().unwrap() >= 10);
    assert_eq!(
        gw.ok("GET", &entry, None)["rules"][1],
        edited["rules"][1],
        "a refused edit leaves the rule as it was"
    );
    refused(
        &gw,
        "POST",
        &rules,
        Some(&json!({"expression": "http.host eq \"a\""})),
        400,
        &["\"expression\" and \"action\""],
    );
    refused(
        &gw,
        "POST",
        &rules,
        Some(&json!({"expression": "http.host eq \"a\"", "action": "explode"})),
        400,
        &["invalid JSON body", "explode"],
    );
    refused(
        &gw,
        "POST",
        &rules,
        Some(&json!({"expression": "http.host eq \"a\"", "action": "block", "ref": "x"})),
        400,
        &["unknown field `ref`"],
    );

    // Unknown ids, methods.
    let nobody = format!("{rules}/ffffffffffffffffffffffffffffffff");
    refused(
        &gw,
        "PATCH",
        &nobody,
        Some(&json!({"enabled": true})),
        404,
        &["rule", "not found"],
    );
    refused(&gw, "DELETE", &nobody, None, 404, &["rule", "not found"]);
    refused(&gw, "GET", &r1_path, None, 405, &["PATCH or DELETE"]);
    refused(&gw, "GET", &rules, None, 405, &["POST"]);
    refused(&gw, "POST", &entry, None, 405, &["GET"]);

    // Delete.
    let left = order(&gw.ok("DELETE", &r1_path, None));
    assert_eq!(left, ids(&[&r4, &r5, &r3, &r2]));
    refused(&gw, "DELETE", &r1_path, None, 404, &["rule"]);
    assert_eq!(order(&gw.ok("GET", &entry, None)), left);

    // The rules and their order, and everything else, survive a restart.
    gw.ok(
        "POST",
        &format!("zones/{zone}/custom_hostnames"),
        Some(&json!({"hostname": "kept.example.com", "mtls": {"enabled": true}})),
    );
    gw.ok(
        "POST",
        &format!("zones/{zone}/client_certificates"),
        Some(&json!({"generate_key": true, "common_name": "kept", "validity_days": 5})),
    );
    let snapshot = |gw: &StoreGateway| {
        [
            "rulesets/phases/http_request_firewall_custom/entrypoint",
            "custom_hostnames",
            "client_certificates",
            "managed_ca",
            "settings/min_tls_version",
            "expiring_certificates?days=36500",
        ]
        .map(|p| {
            let mut v = gw.ok("GET", &format!("zones/{zone}/{p}"), None);
            // Whole days left count down as the clock runs.
            for e in v.as_array_mut().into_iter().flatten() {
                if let Some(e) = e.as_object_mut() {
                    e.remove("days_left");
                }
            }
            v
        })
    };
    let token = gw.token.clone();
    let before = snapshot(&gw);
    drop(gw);
    let gw = StoreGateway::start(Path::new(GATEWAY), &data, Some(&token), &[]);
    assert_eq!(gw.zone(), zone);
    let after = snapshot(&gw);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a, b, "changed by a restart");
    }
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
