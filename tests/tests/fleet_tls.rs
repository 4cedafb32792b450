//! Fleet mode over TLS with etcd's client-certificate auth, as the README
//! sets it up: a real etcd member on loopback with `--client-cert-auth` and
//! auth enabled, a role that may read and write `/gateway/` only, and a
//! gateway with that role's certificate. It starts, changes the
//! configuration, and its private keys reach etcd sealed; a gateway with
//! another certificate is refused at start, and says why.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
};

use gateway_tests::{
    control::StoreGateway,
    lab::run,
    local::{Background, TempDir, free_port},
    pki::{Issued, TestCa, new_p256_request},
};
use serde_json::json;

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

/// A server certificate for 127.0.0.1 from `ca` (etcd's members check
/// clients with the same CA, and present it to each other both ways).
fn member_cert(dir: &Path, ca: &TestCa) -> Issued {
    let (key, csr, cert) = (
        dir.join("member.key"),
        dir.join("member.csr"),
        dir.join("member.pem"),
    );
    run(new_p256_request(None)
        .args(["-subj", "/CN=etcd member"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr))
    .unwrap();
    let ext = dir.join("member.ext");
    fs::write(&ext, "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature\n")
        .unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "30", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(&ca.cert)
        .arg("-CAkey")
        .arg(ca.cert.with_file_name("ca.key"))
        .args(["-CAcreateserial", "-out"])
        .arg(&cert)
        .arg("-extfile")
        .arg(&ext))
    .unwrap();
    Issued {
        cert,
        key,
        serial: String::new(),
    }
}

/// `etcdctl` as etcd's administrator (`root`'s certificate).
fn etcdctl(url: &str, ca: &TestCa, who: &Issued, args: &[&str]) -> String {
    let out = run(Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", url, "--command-timeout=5s", "--cacert"])
        .arg(&ca.cert)
        .arg("--cert")
        .arg(&who.cert)
        .arg("--key")
        .arg(&who.key)
        .args(args))
    .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_gateway_with_the_fleet_role_works_over_tls_and_another_certificate_is_refused() {
    let tmp = TempDir::new("fleet-tls");
    let ca = TestCa::new(&tmp.0, "etcd-ca");
    let member = member_cert(&tmp.0, &ca);
    let (gateway, intruder, root) = (
        ca.client("gateway", None),
        ca.client("intruder", None),
        ca.client("root", None),
    );
    let (client, peer) = (free_port(), free_port());
    let url = format!("https://127.0.0.1:{client}");
    let mut cmd = Command::new("etcd");
    cmd.args(["--name", "m1", "--data-dir"])
        .arg(tmp.0.join("etcd"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args(["--initial-cluster", &format!("m1=http://127.0.0.1:{peer}")])
        .arg("--cert-file")
        .arg(&member.cert)
        .arg("--key-file")
        .arg(&member.key)
        .arg("--trusted-ca-file")
        .arg(&ca.cert)
        .arg("--client-cert-auth");
    let _etcd = Background::start(
        cmd,
        tmp.0.join("etcd.log"),
        "ready to serve client requests",
    );
    for args in [
        &[
            "user",
            "add",
            "root",
            "--new-user-password",
            "root-secret-for-the-test",
        ][..],
        &["user", "grant-role", "root", "root"],
        &["user", "add", "gateway", "--no-password"],
        &["role", "add", "gateway-fleet"],
        &[
            "role",
            "grant-permission",
            "--prefix=true",
            "gateway-fleet",
            "readwrite",
            "/gateway/",
        ],
        &["user", "grant-role", "gateway", "gateway-fleet"],
        &["auth", "enable"],
    ] {
        etcdctl(&url, &ca, &root, args);
    }
    let key = tmp.0.join("master.key");
    fs::write(
        &key,
        "k1 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n",
    )
    .unwrap();
    let fleet_args = |who: &Issued| -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        vec![
            "--etcd".into(),
            url.clone(),
            "--node-name".into(),
            "tls1".into(),
            "--etcd-ca".into(),
            path(&ca.cert),
            "--etcd-cert".into(),
            path(&who.cert),
            "--etcd-key".into(),
            path(&who.key),
            "--master-key".into(),
            path(&key),
        ]
    };
    let args = fleet_args(&gateway);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gw = StoreGateway::start(GATEWAY.as_ref(), &tmp.0.join("node1"), None, &args);
    let zone = gw.zone();
    gw.ok(
        "PATCH",
        &format!("zones/{zone}/settings/min_tls_version"),
        Some(&json!({"value": "1.3"})),
    );
    let rows = etcdctl(
        &url,
        &ca,
        &gateway,
        &["get", "--prefix", "/gateway/config/"],
    );
    assert!(
        rows.contains("\"min_tls_version\":\"1.3\""),
        "the change is in etcd"
    );
    assert!(
        rows.contains("AES-256-GCM") && !rows.contains("PRIVATE KEY"),
        "keys are sealed"
    );

    // Another certificate: etcd refuses it, and so the gateway does not start.
    let args = fleet_args(&intruder);
    let out = Command::new(GATEWAY)
        .args(["run", "--data-dir"])
        .arg(tmp.0.join("node2"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin", &format!("127.0.0.1:{}", free_port())])
        .args(["--metrics", &format!("127.0.0.1:{}", free_port())])
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a gateway with another certificate started:\n{said}"
    );
    assert!(
        said.contains("permission denied") && said.contains("no local copy"),
        "{said}"
    );
}
