//! Certificates for the tests, made with the `openssl` command: CAs (with
//! `openssl ca` state, so they can revoke and publish CRLs), server and client
//! certificates, expired ones included. Keys are ECDSA P-256.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::lab::run;

/// A certificate and its key, on disk.
#[derive(Clone, Debug)]
pub struct Issued {
    /// Certificate (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
    /// Serial number, upper-case hex as `openssl x509 -serial` prints it.
    pub serial: String,
}

impl Issued {
    /// curl's `--cert CERT --key KEY` for this certificate.
    pub fn curl_args(&self) -> [String; 4] {
        [
            "--cert".into(),
            self.cert.display().to_string(),
            "--key".into(),
            self.key.display().to_string(),
        ]
    }
}

/// A CA managed with `openssl ca`.
pub struct TestCa {
    dir: PathBuf,
    /// The CA certificate (PEM).
    pub cert: PathBuf,
}

fn openssl() -> Command {
    Command::new("openssl")
}

/// `openssl req` making a new P-256 key (and, with `days`, a self-signed certificate).
pub fn new_p256_request(days: Option<u32>) -> Command {
    let mut cmd = openssl();
    cmd.args([
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ]);
    match days {
        Some(days) => cmd.args(["-x509", "-days", &days.to_string()]),
        None => cmd.arg("-new"),
    };
    cmd
}

impl TestCa {
    /// A new self-signed CA named `name` in `dir/name`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let dir = dir.join(name);
        fs::create_dir_all(dir.join("newcerts")).unwrap();
        fs::write(dir.join("index.txt"), "").unwrap();
        fs::write(dir.join("serial"), "1000\n").unwrap();
        fs::write(dir.join("crlnumber"), "1000\n").unwrap();
        fs::write(
            dir.join("ca.cnf"),
            format!(
                "[ca]\ndefault_ca = ca_default\n[ca_default]\ndir = {d}\ndatabase = $dir/index.txt\n\
                 new_certs_dir = $dir/newcerts\ncertificate = $dir/ca.pem\nprivate_key = $dir/ca.key\n\
                 serial = $dir/serial\ncrlnumber = $dir/crlnumber\ndefault_md = sha256\ndefault_days = 30\n\
                 default_crl_days = 7\npolicy = policy_any\nunique_subject = no\nemail_in_dn = no\n\
                 [policy_any]\ncommonName = supplied\norganizationName = optional\ncountryName = optional\n\
                 organizationalUnitName = optional\n\
                 [client_ext]\nbasicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\n\
                 extendedKeyUsage = clientAuth\nsubjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n\
                 [intermediate_ext]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
                 subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n\
                 [delta_ext]\n2.5.29.27 = critical,ASN1:INTEGER:4096\n",
                d = dir.display()
            ),
        )
        .unwrap();
        run(new_p256_request(Some(60))
            .args(["-subj", &format!("/C=US/O=Gateway Tests/CN={name}")])
            .args([
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ])
            .args(["-addext", "subjectKeyIdentifier=hash"])
            .arg("-keyout")
            .arg(dir.join("ca.key"))
            .arg("-out")
            .arg(dir.join("ca.pem")))
        .unwrap();
        TestCa {
            cert: dir.join("ca.pem"),
            dir,
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.join("ca.cnf")
    }

    /// An intermediate CA signed by this one, able to issue in turn.
    pub fn intermediate(&self, name: &str) -> TestCa {
        let child = TestCa::new(self.dir.parent().unwrap(), name);
        let csr = child.dir.join("ca.csr");
        run(openssl()
            .args(["req", "-new", "-key"])
            .arg(child.dir.join("ca.key"))
            .args(["-subj", &format!("/C=US/O=Gateway Tests/CN={name}")])
            .arg("-out")
            .arg(&csr))
        .unwrap();
        run(openssl()
            .args([
                "ca",
                "-batch",
                "-notext",
                "-preserveDN",
                "-extensions",
                "intermediate_ext",
                "-config",
            ])
            .arg(self.config())
            .arg("-in")
            .arg(&csr)
            .arg("-out")
            .arg(&child.cert))
        .unwrap();
        child
    }

    /// Issues a client certificate for `/O=.../CN=cn`; `validity` optionally gives
    /// start and end dates (`YYYYMMDDHHMMSSZ`), e.g. in the past for an expired one.
    pub fn client(&self, cn: &str, validity: Option<(&str, &str)>) -> Issued {
        let key = self.dir.join(format!("{cn}.key"));
        let csr = self.dir.join(format!("{cn}.csr"));
        let cert = self.dir.join(format!("{cn}.pem"));
        run(new_p256_request(None)
            .args([
                "-subj",
                &format!("/C=US/O=Example, Inc./OU=Clients/CN={cn}"),
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr))
        .unwrap();
        let mut ca = openssl();
        ca.args([
            "ca",
            "-batch",
            "-notext",
            "-preserveDN",
            "-extensions",
            "client_ext",
            "-config",
        ])
        .arg(self.config())
        .arg("-in")
        .arg(&csr)
        .arg("-out")
        .arg(&cert);
        if let Some((start, end)) = validity {
            ca.args(["-startdate", start, "-enddate", end]);
        }
        run(&mut ca).unwrap();
        Issued {
            serial: serial_of(&cert),
            cert,
            key,
        }
    }

    /// Revokes a certificate in the CA's database (publish with [`TestCa::crl`]).
    pub fn revoke(&self, issued: &Issued) {
        run(openssl()
            .args(["ca", "-batch", "-config"])
            .arg(self.config())
            .arg("-revoke")
            .arg(&issued.cert))
        .unwrap();
    }

    /// Marks a revoked certificate as released (`removeFromCRL`) in the CA's database.
    pub fn release(&self, issued: &Issued) {
        let index = self.dir.join("index.txt");
        let text = fs::read_to_string(&index).unwrap();
        let serial = format!("\t{}\t", issued.serial);
        let updated: Vec<String> = text
            .lines()
            .map(|l| {
                if !l.starts_with('R') || !l.contains(&serial) {
                    return l.to_string();
                }
                let mut f: Vec<&str> = l.split('\t').collect();
                let date = f[2].split(',').next().unwrap().to_string();
                let field = format!("{date},removeFromCRL");
                f[2] = &field;
                f.join("\t")
            })
            .collect();
        fs::write(&index, updated.join("\n") + "\n").unwrap();
    }

    /// Writes a delta CRL (PEM): every entry of the CA's database, marked as a delta.
    pub fn delta_crl(&self, out: &Path) {
        run(openssl()
            .args([
                "ca",
                "-batch",
                "-gencrl",
                "-crlexts",
                "delta_ext",
                "-config",
            ])
            .arg(self.config())
            .arg("-out")
            .arg(out))
        .unwrap();
    }

    /// Writes the CA's current CRL (PEM, or DER with `der`) to `out`.
    pub fn crl(&self, out: &Path, der: bool) {
        let pem = self.dir.join("crl.tmp.pem");
        run(openssl()
            .args(["ca", "-batch", "-gencrl", "-config"])
            .arg(self.config())
            .arg("-out")
            .arg(&pem))
        .unwrap();
        if der {
            run(openssl()
                .args(["crl", "-outform", "DER", "-in"])
                .arg(&pem)
                .arg("-out")
                .arg(out))
            .unwrap();
        } else {
            fs::copy(&pem, out).unwrap();
        }
    }
}

/// A self-signed ECDSA server certificate for `names` (first is the CN).
pub fn server_cert(dir: &Path, file: &str, names: &[&str]) -> Issued {
    let cert = dir.join(format!("{file}.pem"));
    let key = dir.join(format!("{file}.key"));
    let san = names
        .iter()
        .map(|n| format!("DNS:{n}"))
        .collect::<Vec<_>>()
        .join(",");
    run(new_p256_request(Some(30))
        .args([
            "-subj",
            &format!("/CN={}", names[0]),
            "-addext",
            &format!("subjectAltName={san}"),
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert))
    .unwrap();
    Issued {
        serial: serial_of(&cert),
        cert,
        key,
    }
}

/// `openssl x509 -noout <what...>` of a certificate, the part after `=`.
pub fn x509_field(cert: &Path, what: &[&str]) -> String {
    let out = run(openssl()
        .args(["x509", "-noout"])
        .args(what)
        .arg("-in")
        .arg(cert))
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .split_once('=')
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default()
}

fn serial_of(cert: &Path) -> String {
    x509_field(cert, &["-serial"])
}
