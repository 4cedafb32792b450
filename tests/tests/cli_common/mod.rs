//! What the CLI tests share: a store-mode gateway and checks on the CLI's output.
// Each test file uses part of this.
#![allow(dead_code, unused_imports)]

pub(crate) use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
};

pub(crate) use gateway_tests::{
    control::StoreGateway,
    lab::run,
    local::{Output, TempDir, output},
    pki::{TestCa, new_p256_request, server_cert},
};
pub(crate) use serde_json::{Value, json};

pub(crate) const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");

/// A gateway on a fresh store; it stops before the directory is removed.
pub(crate) struct Setup {
    pub gw: StoreGateway,
    pub dir: TempDir,
}

impl Setup {
    pub(crate) fn start(test: &str) -> Setup {
        let dir = TempDir::new(test);
        let gw = StoreGateway::start(Path::new(GATEWAY), &dir.0.join("data"), None, &[]);
        Setup { gw, dir }
    }

    /// Runs the CLI and fails unless it succeeds; its stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.gw.cli(args);
        assert!(
            out.ok,
            "gateway {args:?} failed:\n{}{}",
            out.stdout, out.stderr
        );
        out.stdout
    }

    /// Runs the CLI with `--json` and parses what it prints.
    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let stdout = self.ok(&all);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("gateway {all:?} printed no JSON ({e}):\n{stdout}"))
    }

    /// Runs the CLI, expects it to fail, and checks that stderr says each of `says`.
    pub(crate) fn fails(&self, args: &[&str], says: &[&str]) -> Output {
        let out = self.gw.cli(args);
        expect_failure(args, &out, says);
        out
    }

    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }
}

pub(crate) fn expect_failure(args: &[&str], out: &Output, says: &[&str]) {
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
pub(crate) fn rows<'a>(table: &'a str, cells: &[&str]) -> Vec<&'a str> {
    table
        .lines()
        .filter(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            cells.iter().all(|c| words.contains(c))
        })
        .collect()
}

pub(crate) fn text(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

pub(crate) fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Whether `cert` (PEM file) chains to `ca` and `key` belongs to it.
pub(crate) fn check_pair(cert: &Path, key: Option<&Path>, ca: &Path) {
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
