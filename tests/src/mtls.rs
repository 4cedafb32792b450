//! A complete terminator setup on loopback: CAs, client certificates of every
//! kind, an echo origin and `gateway run` with hostnames that exercise each
//! policy. Shared by the terminator tests.

use std::{fs, path::Path};

use crate::{
    local::{Background, TempDir, free_port, gateway, origin},
    pki::{Issued, TestCa, server_cert},
};

/// The setup; everything stops and is deleted when it is dropped.
pub struct MtlsSetup {
    /// TLS port of the gateway.
    pub port: u16,
    /// Metrics port of the gateway.
    pub metrics_port: u16,
    /// All ports.
    pub ports: Ports,
    /// The server certificate (self-signed; clients trust it as their CA).
    pub server: Issued,
    /// The bring-your-own CA with a CRL (`corp.crl`).
    pub corp: TestCa,
    /// The managed CA (revocations in the configuration).
    pub managed: TestCa,
    /// Valid, from `corp`.
    pub alice: Issued,
    /// Revoked by `corp`'s CRL.
    pub bob: Issued,
    /// Revoked through the managed CA.
    pub carol: Issued,
    /// Valid, from the managed CA.
    pub dave: Issued,
    /// Expired, from `corp`.
    pub old: Issued,
    /// From a CA no hostname is associated with.
    pub mallory: Issued,
    /// The gateway process.
    pub gateway: Background,
    _origin: Background,
    /// Scratch directory (certificates, configuration, logs).
    pub dir: TempDir,
}

/// The ports of a setup.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    /// The gateway's TLS port.
    pub tls: u16,
    /// The gateway's metrics port.
    pub metrics: u16,
    /// The origin's port.
    pub origin: u16,
}

/// Hostnames: `api.test` (mTLS, Cloudflare headers), `admin.test` (mTLS,
/// a valid certificate required by rules, RFC 9440 headers), `open.test` (no mTLS),
/// `strict.test` (TLS 1.3 minimum), `ciphers.test` (one cipher), `down.test`
/// (origin that does not answer), `wild.test` (TLS 1.3 minimum, wildcard: its
/// subdomains use the zone's 1.2). Listens on 127.0.0.1 and [::1].
pub fn config(ports: Ports, carol_serial: &str, extra_terminator: &str) -> String {
    let Ports {
        tls,
        metrics,
        origin: origin_port,
    } = ports;
    let origin = format!("http://127.0.0.1:{origin_port}");
    let dead = format!("http://127.0.0.1:{}", free_port());
    format!(
        r#"[terminator]
listen = ["127.0.0.1:{port}", "[::1]:{port}"]
certificate = "server.pem"
key = "server.key"
{extra_terminator}

[metrics]
listen = "127.0.0.1:{metrics}"

[zone]
min_tls_version = "1.2"

[[ca]]
name = "corp"
certificate = "corp/ca.pem"
crl = ["corp.crl"]

[[ca]]
name = "managed"
certificate = "managed/ca.pem"
revoked_serials = ["{carol}"]

[[rule]]
id = "log-api"
description = "count requests to api.test"
expression = 'http.host eq "api.test"'
action = "log"

[[rule]]
id = "admin-needs-valid-cert"
description = "the documented example: the host requires a verified certificate"
expression = '(http.host in {{"admin.test"}} and not cf.tls_client_auth.cert_verified)'
action = "block"

[[rule]]
id = "no-revoked"
description = "revoked certificates are refused on admin.test"
expression = 'http.host eq "admin.test" and cf.tls_client_auth.cert_revoked'
action = "block"

[[rule]]
id = "admin-path"
description = "the documented /admin example"
expression = '((not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked) and http.request.uri.path in {{"/admin"}})'
action = "block"

[[hostname]]
name = "api.test"
origin = "{origin}"
mtls = true
cas = ["corp", "managed"]
forward_client_cert = "cloudflare"

[[hostname]]
name = "admin.test"
origin = "{origin}"
mtls = true
cas = ["corp", "managed"]
forward_client_cert = "rfc9440"

[[hostname]]
name = "open.test"
origin = "{origin}"

[[hostname]]
name = "strict.test"
origin = "{origin}"
min_tls_version = "1.3"

[[hostname]]
name = "ciphers.test"
origin = "{origin}"
ciphers = ["ECDHE-ECDSA-AES256-GCM-SHA384"]

[[hostname]]
name = "down.test"
origin = "{dead}"

[[hostname]]
name = "wild.test"
origin = "{origin}"
min_tls_version = "1.3"
wildcard = true
"#,
        port = tls,
        carol = carol_serial,
    )
}

impl MtlsSetup {
    /// Builds the PKI, starts the origin and the gateway (`bin`).
    pub fn start(bin: &str, test: &str, extra_terminator: &str) -> MtlsSetup {
        crate::require_root("the terminator tests (run as CI does)");
        let dir = TempDir::new(test);
        let d = dir.0.as_path();
        let server = server_cert(
            d,
            "server",
            &[
                "api.test",
                "admin.test",
                "open.test",
                "strict.test",
                "ciphers.test",
                "down.test",
                "wild.test",
                "a.wild.test",
            ],
        );
        let corp = TestCa::new(d, "corp");
        let managed = TestCa::new(d, "managed");
        let other = TestCa::new(d, "other");
        let alice = corp.client("alice", None);
        let bob = corp.client("bob", None);
        let old = corp.client("old", Some(("20200101000000Z", "20200201000000Z")));
        corp.revoke(&bob);
        corp.crl(&d.join("corp.crl"), false);
        let carol = managed.client("carol", None);
        let dave = managed.client("dave", None);
        let mallory = other.client("mallory", None);
        let ports = Ports {
            tls: free_port(),
            metrics: free_port(),
            origin: free_port(),
        };
        let origin = origin(d, ports.origin);
        let gateway = gateway(bin, d, &config(ports, &carol.serial, extra_terminator));
        MtlsSetup {
            port: ports.tls,
            metrics_port: ports.metrics,
            ports,
            server,
            corp,
            managed,
            alice,
            bob,
            carol,
            dave,
            old,
            mallory,
            gateway,
            _origin: origin,
            dir,
        }
    }

    /// The trust anchor for clients: the server certificate.
    pub fn ca(&self) -> &Path {
        &self.server.cert
    }

    /// A file in the scratch directory.
    pub fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.0.join(name)
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> String {
        let out = crate::local::output(std::process::Command::new("curl").args([
            "-sf",
            &format!("http://127.0.0.1:{}/metrics", self.metrics_port),
        ]));
        out.stdout
    }

    /// Replaces the gateway's configuration file, atomically (write, then rename),
    /// as an operator's tooling should.
    pub fn write_config(&self, text: &str) {
        let tmp = self.path("gateway.toml.new");
        fs::write(&tmp, text).unwrap();
        fs::rename(tmp, self.path("gateway.toml")).unwrap();
    }
}
