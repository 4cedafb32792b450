//! A store-mode gateway on loopback (`gateway run --data-dir`, no `--config`)
//! and calls to its admin API with real clients: `curl` and the `gateway` CLI.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::Value;

use crate::local::{Background, free_port};

/// A gateway started from a data directory, with its admin token.
pub struct StoreGateway {
    /// The `gateway` binary.
    pub bin: PathBuf,
    /// The data directory.
    pub data: PathBuf,
    /// TLS port on 127.0.0.1.
    pub tls_port: u16,
    /// Admin API base, `http://127.0.0.1:PORT`.
    pub api: String,
    /// Metrics port.
    pub metrics_port: u16,
    /// The admin token (printed at the first run).
    pub token: String,
    /// The process.
    pub process: Background,
}

impl StoreGateway {
    /// Starts `bin run --data-dir data` on fresh loopback ports; `token` is the
    /// one a previous run printed (none: this run must print one). `extra` are
    /// more arguments (e.g. `--interface`).
    pub fn start(bin: &Path, data: &Path, token: Option<&str>, extra: &[&str]) -> StoreGateway {
        let (tls_port, admin_port, metrics_port) = (free_port(), free_port(), free_port());
        Self::start_on(
            bin,
            data,
            token,
            extra,
            (tls_port, admin_port, metrics_port),
        )
    }

    /// As [`start`](Self::start), on given (TLS, admin, metrics) ports.
    pub fn start_on(
        bin: &Path,
        data: &Path,
        token: Option<&str>,
        extra: &[&str],
        (tls_port, admin_port, metrics_port): (u16, u16, u16),
    ) -> StoreGateway {
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg("--data-dir")
            .arg(data)
            .args(["--listen", &format!("127.0.0.1:{tls_port}")])
            .args(["--admin", &format!("127.0.0.1:{admin_port}")])
            .args(["--metrics", &format!("127.0.0.1:{metrics_port}")])
            .args(["--default-hostname", "localhost"])
            .args(extra)
            .env("RUST_LOG", "info");
        let log = data.with_extension(format!("log-{tls_port}"));
        // The banner's admin line, not just "gateway: " (an error line starts so too).
        let scheme = if extra.contains(&"--admin-tls") {
            "https"
        } else {
            "http"
        };
        let process = Background::start(cmd, log, &format!("admin API on {scheme}://"));
        let printed = process.log().lines().find_map(|l| {
            l.split_once("GATEWAY_TOKEN): ")
                .map(|(_, t)| t.trim().to_string())
        });
        let token = match (token, printed) {
            (Some(t), None) => t.to_string(),
            (None, Some(t)) => t,
            (Some(_), Some(_)) => panic!("a second run printed a new token:\n{}", process.log()),
            (None, None) => panic!("the first run printed no token:\n{}", process.log()),
        };
        StoreGateway {
            bin: bin.to_path_buf(),
            data: data.to_path_buf(),
            tls_port,
            api: format!("{scheme}://127.0.0.1:{admin_port}"),
            metrics_port,
            token,
            process,
        }
    }

    /// Calls the API with curl: `(HTTP status, JSON answer)`. `path` is after `/client/v4/`.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.call_as(Some(&self.token), method, path, body.map(Value::to_string))
    }

    /// Calls the API with any token (or none) and a raw body.
    pub fn call_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> (u16, Value) {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "--max-time",
            "30",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ])
        .arg(format!("{}/client/v4/{path}", self.api));
        if self.api.starts_with("https:") {
            cmd.arg("--cacert").arg(self.server_ca());
        }
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data-binary", &b]);
        }
        let out = cmd.output().expect("curl runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (json, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        let status: u16 = status.trim().parse().unwrap_or(0);
        let value = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {json:?}"));
        (status, value)
    }

    /// Every item of a list, page after page as a client walks it (until an
    /// empty page), checking each page's `result_info`.
    #[track_caller]
    pub fn list_all(&self, path: &str) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut all = Vec::new();
        for page in 1.. {
            let (status, answer) =
                self.call("GET", &format!("{path}{sep}page={page}&per_page=50"), None);
            assert_eq!(status, 200, "GET {path} page {page}: {answer:#}");
            let items = answer["result"].as_array().cloned().unwrap_or_default();
            let info = &answer["result_info"];
            assert_eq!(info["page"], page, "{info:#}");
            assert_eq!(info["count"], items.len(), "{info:#}");
            if items.is_empty() {
                assert_eq!(info["total_count"], all.len(), "{info:#}");
                return all;
            }
            all.extend(items);
        }
        unreachable!()
    }

    /// Calls the API and fails unless it succeeds; returns `result`.
    #[track_caller]
    pub fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, answer) = self.call(method, path, body);
        assert!(
            status == 200 && answer["success"] == true,
            "{method} {path} gave {status}: {answer:#}"
        );
        answer["result"].clone()
    }

    /// The zone id.
    pub fn zone(&self) -> String {
        self.ok("GET", "zones", None)[0]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The account id.
    pub fn account(&self) -> String {
        self.ok("GET", "zones", None)[0]["account"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Runs the `gateway` CLI against this gateway.
    pub fn cli(&self, args: &[&str]) -> crate::local::Output {
        crate::local::output(
            Command::new(&self.bin)
                .args(args)
                .env("GATEWAY_API", &self.api)
                .env("GATEWAY_CA", self.server_ca())
                .env("GATEWAY_TOKEN", &self.token),
        )
    }

    /// The server CA beside the store (trust anchor for curl).
    pub fn server_ca(&self) -> PathBuf {
        self.data.join("server-ca.pem")
    }

    /// Scrapes `/metrics`.
    pub fn metrics(&self) -> String {
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Writes `n` hostnames named by `name` into the store in `dir` (created if
/// new), in one transaction, with certificates from the server CA as the API
/// makes them: how a test or bench starts from a large store quickly.
pub fn bulk_load(
    dir: &Path,
    n: usize,
    name: impl Fn(usize) -> String + Sync,
) -> anyhow::Result<()> {
    use gateway::control::{self, new_hostname};
    let opened = control::open(dir, "localhost")?;
    let now = gateway::clock::now();
    let state = &opened.state;
    let name = &name;
    // Issuing a certificate is the slow part: both cores.
    let hosts: Vec<_> = std::thread::scope(|scope| {
        let half = n / 2;
        let part = |range: std::ops::Range<usize>| {
            scope.spawn(move || {
                range
                    .map(|i| new_hostname(state, &name(i), false, now))
                    .collect::<anyhow::Result<Vec<_>>>()
            })
        };
        let (a, b) = (part(0..half), part(half..n));
        let mut all = a.join().expect("a loader thread")?;
        all.extend(b.join().expect("a loader thread")?);
        anyhow::Ok(all)
    })?;
    let mut next = opened.state.clone();
    for h in hosts {
        next.hostnames.insert(h.id.clone(), h);
    }
    opened.backend.store().commit(Some(&opened.state), &next)
}
