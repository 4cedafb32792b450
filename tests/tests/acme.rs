//! ACME certificates against a real ACME server: Pebble (Let's Encrypt's test
//! server, Debian's `pebble` package) validates a custom hostname by
//! TLS-ALPN-01 on the gateway's TLS port, the gateway installs the issued
//! chain without a restart, `openssl s_client` verifies the served chain
//! against Pebble's root (from its management port), and the certificate is
//! renewed (the renewal delay shortened by `renew_after_secs`).
//!
//! Pebble resolves the hostname through `pebble-challtestsrv`'s DNS (`A`:
//! 127.0.0.1, no `AAAA`), and its validator connects to the gateway's TLS port
//! (`tlsPort` in Pebble's configuration). Pebble's validator is Go's
//! crypto/tls client: it offers TLS 1.2 and 1.3, with ALPN `acme-tls/1` only.
//! The gateway here runs on loopback without XDP.

mod api_common;

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use api_common::*;

const HOST: &str = "shop.example.com";

/// Pebble and its DNS, stopped when dropped.
struct Pebble {
    _dns: Background,
    server: Option<Background>,
    directory: String,
    management: u16,
    /// `pebble-challtestsrv`'s management port (DNS records).
    dns_management: u16,
    /// The PEM file Pebble's HTTPS certificate verifies against.
    https_ca: PathBuf,
}

fn tools_present() -> bool {
    ["pebble", "pebble-challtestsrv", "openssl", "curl"]
        .iter()
        .all(|t| {
            Command::new("which")
                .arg(t)
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
}

/// Starts `pebble-challtestsrv` (DNS only) and `pebble`, its validator
/// connecting to `tls_port` for TLS-ALPN-01.
fn start_pebble(dir: &Path, tls_port: u16) -> Pebble {
    let (dns, acme, management) = (free_port(), free_port(), free_port());
    let dns_management = free_port();
    let mut cmd = Command::new("pebble-challtestsrv");
    cmd.args(["-dns01", &format!("127.0.0.1:{dns}")])
        .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
        .args(["-management", &format!("127.0.0.1:{dns_management}")])
        .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]);
    let dns_bg = Background::start(
        cmd,
        dir.join("challtestsrv.log"),
        "Starting management server",
    );
    let https = server_cert(dir, "pebble-https", &["localhost"]);
    let config = json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{acme}"),
        "managementListenAddress": format!("127.0.0.1:{management}"),
        "certificate": https.cert,
        "privateKey": https.key,
        "httpPort": 5002,
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
    }});
    let config_path = dir.join("pebble.json");
    fs::write(&config_path, config.to_string()).unwrap();
    let mut cmd = Command::new("pebble");
    cmd.arg("-config")
        .arg(&config_path)
        .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_VA_ALWAYS_VALID", "0")
        // Every order is validated (no authorization reuse), renewals too.
        .env("PEBBLE_AUTHZREUSE", "0");
    let server = Background::start(
        cmd,
        dir.join("pebble.log"),
        &format!("Listening on: 127.0.0.1:{acme}"),
    );
    Pebble {
        _dns: dns_bg,
        server: Some(server),
        directory: format!("https://localhost:{acme}/dir"),
        management,
        dns_management,
        https_ca: https.cert,
    }
}

impl Pebble {
    /// Points `host`'s A record at `address` (nothing listens there).
    fn resolve(&self, host: &str, address: &str) {
        let body = json!({"host": format!("{host}."), "addresses": [address]});
        run(Command::new("curl")
            .args(["-sf", "-X", "POST", "-d", &body.to_string()])
            .arg(format!("http://127.0.0.1:{}/add-a", self.dns_management)))
        .unwrap();
    }

    /// Pebble's root certificate (PEM), from its management port.
    fn root(&self, dir: &Path) -> PathBuf {
        let out = dir.join("pebble-root.pem");
        run(Command::new("curl")
            .args(["-sf", "--cacert"])
            .arg(&self.https_ca)
            .arg(format!("https://localhost:{}/roots/0", self.management))
            .arg("-o")
            .arg(&out))
        .unwrap();
        out
    }
}

/// `openssl s_client` to the gateway for `HOST`: (verified against `root`,
/// the served leaf's serial, the whole output).
fn served(port: u16, root: &Path, alpn: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", HOST, "-verify_return_error", "-CAfile"])
        .arg(root)
        .stdin(Stdio::null());
    if let Some(a) = alpn {
        cmd.args(["-alpn", a]);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let verified = text.contains("Verify return code: 0 (ok)");
    let leaf = text
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .map(|b| {
            format!(
                "-----BEGIN CERTIFICATE-----{}",
                b.split("-----END CERTIFICATE-----")
                    .next()
                    .unwrap_or_default()
            ) + "-----END CERTIFICATE-----\n"
        })
        .unwrap_or_default();
    let serial = if leaf.is_empty() {
        String::new()
    } else {
        let mut x = Command::new("openssl")
            .args(["x509", "-noout", "-serial"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        x.stdin.take().unwrap().write_all(leaf.as_bytes()).unwrap();
        String::from_utf8_lossy(&x.wait_with_output().unwrap().stdout)
            .trim()
            .to_string()
    };
    (verified, serial, text)
}

/// Polls the hostname until `done` holds for its `ssl` object.
fn wait_ssl(s: &Setup, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let h =
            s.gw.ok("GET", &s.zone_path(&format!("custom_hostnames/{id}")), None);
        if done(&h["ssl"]) {
            return h;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within 90 s: {:#}\ngateway log:\n{}",
            h["ssl"],
            s.gw.process.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Issuance by TLS-ALPN-01, the served chain verified against Pebble's root,
/// renewal, and the refusals (bad settings, a wildcard, a stray acme-tls/1 hello).
#[test]
fn a_hostname_gets_and_renews_an_acme_certificate_validated_by_tls_alpn_01() {
    if !tools_present() {
        eprintln!(
            "!!! pebble, pebble-challtestsrv, openssl or curl missing (scripts/setup.sh installs \
             them): the ACME issuance test cannot run"
        );
        panic!("the ACME test needs pebble (scripts/setup.sh)");
    }
    let s = Setup::start("acme");
    let mut pebble = start_pebble(&s.dir.0, s.gw.tls_port);
    let settings = s.zone_path("settings/acme");

    // Bad input changes nothing.
    let http = json!({"value": {"directory": "http://localhost/dir", "contact": []}});
    refused(&s.gw, "PATCH", &settings, Some(&http), 400, &["https://"]);
    let early = json!({"hostname": "early.example.com", "ssl": {"method": "tls-alpn"}});
    refused(
        &s.gw,
        "POST",
        &s.zone_path("custom_hostnames"),
        Some(&early),
        400,
        &["no ACME settings"],
    );

    // Issued chains must verify to Pebble's root before they are installed.
    let root = pebble.root(&s.dir.0);
    let value = json!({"value": {
        "roots": root,
        "directory": pebble.directory,
        "contact": ["mailto:ops@example.com"],
        "directory_ca": pebble.https_ca,
        // Renewal this soon after issuance (the default: 2/3 of the lifetime).
        "renew_after_secs": 5,
    }});
    let shown = s.gw.ok("PATCH", &settings, Some(&value));
    assert_eq!(shown["value"]["directory"], pebble.directory.as_str());
    let wildcard =
        json!({"hostname": "wild.example.com", "wildcard": true, "ssl": {"method": "tls-alpn"}});
    refused(
        &s.gw,
        "POST",
        &s.zone_path("custom_hostnames"),
        Some(&wildcard),
        400,
        &["wildcard"],
    );

    // Before any challenge: a hand-made acme-tls/1 hello is refused.
    let root_unknown = pebble.https_ca.clone();
    let (_, _, stray) = served(s.gw.tls_port, &root_unknown, Some("acme-tls/1"));
    assert!(
        !stray.contains("BEGIN CERTIFICATE"),
        "an acme-tls/1 hello without a pending challenge got a certificate:\n{stray}"
    );

    // Issuance.
    let body = json!({"hostname": HOST, "ssl": {"method": "tls-alpn", "type": "dv"}});
    let created =
        s.gw.ok("POST", &s.zone_path("custom_hostnames"), Some(&body));
    let id = text(&created["id"]);
    assert_eq!(created["ssl"]["method"], "tls-alpn");
    assert_eq!(created["ssl"]["type"], "dv");
    assert_eq!(created["ssl"]["status"], "initializing", "{created:#}");
    let active = wait_ssl(&s, &id, "issuance", |ssl| ssl["status"] == "active");
    let ssl = &active["ssl"];
    assert_eq!(ssl["validation_errors"], json!([]), "{ssl:#}");
    assert_eq!(ssl["certificate_source"], "acme");
    let ca = text(&ssl["certificate_authority"]);
    assert!(ca.contains("Pebble Intermediate CA"), "{ca}");
    println!("issued: {ssl:#}");

    let (verified, serial, text_out) = served(s.gw.tls_port, &root, None);
    assert!(
        verified,
        "the served chain does not verify against Pebble's root:\n{text_out}"
    );
    assert!(text_out.contains("Pebble Intermediate CA"), "{text_out}");
    assert!(!serial.is_empty(), "{text_out}");
    // After the order, acme-tls/1 hellos are refused again.
    let (_, _, text_alpn) = served(s.gw.tls_port, &root, Some("acme-tls/1"));
    assert!(!text_alpn.contains("BEGIN CERTIFICATE"), "{text_alpn}");

    // Renewal, 5 s after issuance: a new certificate is served, and the
    // served chain verifies all along.
    let deadline = Instant::now() + Duration::from_secs(120);
    let renewed = loop {
        let (ok, now_serial, out) = served(s.gw.tls_port, &root, None);
        assert!(ok, "during renewal the served chain must verify:\n{out}");
        if now_serial != serial {
            break now_serial;
        }
        assert!(
            Instant::now() < deadline,
            "not renewed in 120 s:\n{}",
            s.gw.process.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    println!("renewed: {serial} -> {renewed}");

    // A chain that does not verify to the configured roots is not installed.
    let mut wrong = value.clone();
    wrong["value"]["roots"] = json!(pebble.https_ca);
    s.gw.ok("PATCH", &settings, Some(&wrong));
    let body = json!({"hostname": "wrong-root.example.com", "ssl": {"method": "tls-alpn"}});
    let wrong_id = text(
        &s.gw
            .ok("POST", &s.zone_path("custom_hostnames"), Some(&body))["id"],
    );
    let refused_chain = wait_ssl(&s, &wrong_id, "a chain refused", |ssl| {
        ssl["validation_errors"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    });
    let ssl = &refused_chain["ssl"];
    let error = text(&ssl["validation_errors"][0]["message"]);
    assert!(error.contains("configured roots"), "{error}");
    assert_eq!(ssl["issued_by"], "gateway", "{ssl:#}");
    assert_ne!(ssl["status"], "active", "{ssl:#}");

    // A failed validation: the name resolves where nothing answers. The
    // error is shown, the gateway's own certificate is still served, and the
    // order is retried later (backoff).
    pebble.resolve("down.example.com", "127.0.0.2");
    let body = json!({"hostname": "down.example.com", "ssl": {"method": "tls-alpn"}});
    let down =
        s.gw.ok("POST", &s.zone_path("custom_hostnames"), Some(&body));
    let down_id = text(&down["id"]);
    let failed = wait_ssl(&s, &down_id, "a validation error", |ssl| {
        ssl["validation_errors"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    });
    let ssl = &failed["ssl"];
    println!("failed: {ssl:#}");
    assert_eq!(ssl["status"], "pending_validation", "{ssl:#}");
    assert_eq!(ssl["issued_by"], "gateway", "{ssl:#}");
    let error = text(&ssl["validation_errors"][0]["message"]);
    assert!(error.contains("urn:ietf:params:acme:error:"), "{error}");
    let pending = s.gw.ok(
        "GET",
        &s.zone_path("custom_hostnames?ssl_status=pending_validation"),
        None,
    );
    let names: Vec<&str> = pending
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["hostname"].as_str())
        .collect();
    assert!(names.contains(&"down.example.com"), "{names:?}");
    assert!(!names.contains(&HOST), "{names:?}");
    let log = s.gw.process.log();
    assert!(
        log.contains("ACME certificate of down.example.com"),
        "the failure is logged:\n{log}"
    );

    // Pebble stopped: the order fails and waits for its retry, and the admin
    // API answers meanwhile.
    drop(pebble.server.take());
    let body = json!({"hostname": "later.example.com", "ssl": {"method": "tls-alpn"}});
    let started = Instant::now();
    let later =
        s.gw.ok("POST", &s.zone_path("custom_hostnames"), Some(&body));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let later_id = text(&later["id"]);
    let failed = wait_ssl(&s, &later_id, "an unreachable server's error", |ssl| {
        ssl["validation_errors"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    });
    let error = text(&failed["ssl"]["validation_errors"][0]["message"]);
    assert!(error.contains("cannot reach"), "{error}");
    let started = Instant::now();
    s.gw.ok("GET", &s.zone_path("custom_hostnames"), None);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The certificate issued before is still served.
    let (verified, _, out) = served(s.gw.tls_port, &root, None);
    assert!(verified, "{out}");
}
