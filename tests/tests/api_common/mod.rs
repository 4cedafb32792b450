//! What the admin API tests share: a gateway on a fresh store, calls that must
//! be refused, and certificates of every kind (made with openssl or BoringSSL).
// Each test file uses part of this.
#![allow(dead_code, unused_imports)]

pub(crate) use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

pub(crate) use boring::{
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
pub(crate) use gateway_tests::{
    control::StoreGateway,
    lab::run,
    local::{Background, TempDir, curl, free_port},
    pki::{TestCa, new_p256_request, server_cert},
};
pub(crate) use serde_json::{Value, json};

pub(crate) const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

/// A gateway on a fresh store, with its ids. The gateway stops before the
/// directory is removed (fields drop in order).
pub(crate) struct Setup {
    pub gw: StoreGateway,
    pub zone: String,
    pub account: String,
    pub dir: TempDir,
}

impl Setup {
    pub(crate) fn start(test: &str) -> Setup {
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
    pub(crate) fn zone_path(&self, rest: &str) -> String {
        format!("zones/{}/{rest}", self.zone)
    }

    /// A path under the account's mTLS certificates.
    pub(crate) fn cas_path(&self, rest: &str) -> String {
        let base = format!("accounts/{}/mtls_certificates", self.account);
        if rest.is_empty() {
            base
        } else {
            format!("{base}/{rest}")
        }
    }

    /// A file in the scratch directory.
    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }

    /// The managed CA's id.
    pub(crate) fn managed_ca(&self) -> String {
        text(&self.gw.ok("GET", &self.zone_path("managed_ca"), None)["id"])
    }
}

#[track_caller]
pub(crate) fn text(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

/// The first error's message.
pub(crate) fn message(answer: &Value) -> String {
    answer["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Asserts that a call fails with `status` and a message containing each of `says`.
#[track_caller]
pub(crate) fn refused(
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
#[track_caller]
pub(crate) fn refused_raw(
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

/// Asserts an API refusal: the status, the envelope and the message's words.
#[track_caller]
pub(crate) fn check_refusal(
    method: &str,
    path: &str,
    code: u16,
    answer: &Value,
    status: u16,
    says: &[&str],
) {
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

#[track_caller]
pub(crate) fn pem(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A self-signed P-256 CA (CA:TRUE) valid from `not_before` to `not_after`
/// (Unix seconds), made with BoringSSL so that any dates can be set.
pub(crate) fn dated_ca(common_name: &str, not_before: i64, not_after: i64) -> String {
    dated(common_name, &[], not_before, not_after).0
}

/// A self-signed P-256 certificate (CA:TRUE) for `names` (subjectAltName) with
/// any dates; its PEM and its key's PEM.
pub(crate) fn dated(
    common_name: &str,
    names: &[&str],
    not_before: i64,
    not_after: i64,
) -> (String, String) {
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
pub(crate) fn openssl_ca(dir: &Path, file: &str, key_args: &[&str]) -> String {
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
pub(crate) fn csr(dir: &Path, cn: &str, key: &str) -> String {
    let out = dir.join(format!("{cn}.csr"));
    let mut cmd = if key == "ec" {
        new_p256_request(None)
    } else {
        let mut cmd = Command::new("openssl");
        cmd.args(["req", "-new", "-nodes", "-newkey", key]);
        cmd
    };
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
pub(crate) fn verifies(dir: &Path, cert_pem: &str, ca: &Path) -> bool {
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
