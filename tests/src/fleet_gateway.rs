//! Fleet-mode gateways in a [`FleetLab`]: one per node namespace, XDP on its
//! `eth0`, TLS on 443, the admin API and metrics on the node's address, the
//! echo origin on the node's loopback, and calls to them from the root
//! namespace with real clients (curl, openssl).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, ensure};
use serde_json::Value;

use crate::fleet::FleetLab;

/// The admin API's port on each node.
pub const ADMIN_PORT: u16 = 9101;
/// The metrics port on each node.
pub const METRICS_PORT: u16 = 9100;
/// The echo origin's port on each node's loopback.
pub const ORIGIN_PORT: u16 = 8080;

/// A fleet of gateways sharing the lab's etcd.
pub struct Fleet {
    /// The lab.
    pub lab: FleetLab,
    /// The `gateway` binary.
    pub bin: PathBuf,
    /// The admin token the first node printed.
    pub token: String,
    /// The zone's id.
    pub zone: String,
    /// The account's id.
    pub account: String,
    /// How many nodes there are.
    pub nodes: usize,
}

impl Fleet {
    /// Creates the lab (`nodes` namespaces, three etcd members), a master key,
    /// and starts every node's origin and gateway, node 1 first (it writes the
    /// configuration and prints the token).
    pub fn start(bin: &Path, nodes: usize) -> anyhow::Result<Fleet> {
        let lab = FleetLab::create(nodes)?;
        let key = format!("k1 {}\n", hex(&random_bytes::<32>()));
        std::fs::write(lab.dir.join("master.key"), key)?;
        let mut fleet = Fleet {
            lab,
            bin: bin.to_path_buf(),
            token: String::new(),
            zone: String::new(),
            account: String::new(),
            nodes,
        };
        for k in 1..=nodes {
            fleet.start_origin(k)?;
            fleet.start_node(k)?;
            if k == 1 {
                let log = fleet.lab.log("gw1");
                fleet.token = log
                    .lines()
                    .find_map(|l| {
                        l.split_once("GATEWAY_TOKEN): ")
                            .map(|(_, t)| t.trim().to_string())
                    })
                    .with_context(|| format!("the first node printed no token:\n{log}"))?;
                let zones = fleet.ok(1, "GET", "zones", None)?;
                fleet.zone = zones[0]["id"].as_str().context("a zone id")?.into();
                fleet.account = zones[0]["account"]["id"]
                    .as_str()
                    .context("an account id")?
                    .into();
            }
        }
        Ok(fleet)
    }

    fn start_origin(&mut self, k: usize) -> anyhow::Result<()> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lab_origin.py");
        let mut cmd = self.lab.in_node(k, "python3");
        cmd.arg(script).args(["--port", &ORIGIN_PORT.to_string()]);
        let name = format!("origin{k}");
        self.lab.spawn_in_node(k, &name, cmd)?;
        self.lab.wait_for(&name, Duration::from_secs(10), |l| {
            l.log(&name).contains("listening")
        })
    }

    /// Starts node `k`'s gateway (again, after [`Fleet::stop_node`]) and
    /// waits for its ready line.
    pub fn start_node(&mut self, k: usize) -> anyhow::Result<()> {
        let addr = self.lab.node_addr(k);
        let data = self.lab.dir.join(format!("node{k}"));
        let mut cmd = self.lab.in_node(k, &self.bin);
        cmd.arg("run")
            .arg("--data-dir")
            .arg(&data)
            .args(["--interface", "eth0"])
            .args(["--listen", &format!("{addr}:443")])
            .args([
                "--admin",
                &format!("{addr}:{ADMIN_PORT}"),
                "--admin-insecure",
            ])
            .args(["--metrics", &format!("{addr}:{METRICS_PORT}")])
            .args(["--default-hostname", "localhost"])
            .args(["--etcd", &self.lab.etcd_endpoints_for(k)])
            .arg("--master-key")
            .arg(self.lab.dir.join("master.key"))
            .args(["--node-name", &format!("gw{k}")])
            .env("RUST_LOG", "info");
        let name = format!("gw{k}");
        self.lab.spawn_in_node(k, &name, cmd)?;
        let started = self.lab.log(&name).matches("gateway: ").count();
        self.lab.wait_for(&name, Duration::from_secs(30), |l| {
            l.log(&name).matches("gateway: ").count() > started
        })
    }

    /// Stops node `k`'s gateway (SIGTERM: it detaches XDP).
    pub fn stop_node(&mut self, k: usize) -> anyhow::Result<()> {
        ensure!(
            self.lab.stop(&format!("gw{k}"))?,
            "gw{k} did not exit cleanly"
        );
        Ok(())
    }

    /// Calls node `k`'s admin API (`path` after `/client/v4/`): status, JSON,
    /// and whether the answer was marked stale.
    pub fn call(
        &self,
        k: usize,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value, bool)> {
        let url = format!(
            "http://{}:{ADMIN_PORT}/client/v4/{path}",
            self.lab.node_addr(k)
        );
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-i", "--max-time", "20", "-X", method, &url])
            .args(["-H", &format!("Authorization: Bearer {}", self.token)]);
        if let Some(body) = body {
            cmd.args([
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &body.to_string(),
            ]);
        }
        let out = cmd.stdin(Stdio::null()).output()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(
            out.status.success(),
            "curl {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (head, body) = text.split_once("\r\n\r\n").context("an HTTP answer")?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("a status")?;
        let stale = head.to_ascii_lowercase().contains("x-gateway-stale: true");
        let json = serde_json::from_str(body).with_context(|| format!("{url} answered {body}"))?;
        Ok((status, json, stale))
    }

    /// A call that must succeed; its `result`.
    pub fn ok(
        &self,
        k: usize,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let (status, json, _) = self.call(k, method, path, body)?;
        ensure!(
            status == 200,
            "{method} {path} on node {k}: {status} {json}"
        );
        Ok(json["result"].clone())
    }

    /// Node `k`'s metrics.
    pub fn metrics(&self, k: usize) -> anyhow::Result<String> {
        let url = format!("http://{}:{METRICS_PORT}/metrics", self.lab.node_addr(k));
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "3", &url])
            .output()?;
        ensure!(out.status.success(), "scraping {url} failed");
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// One metric of node `k` (summed over series with `labels`).
    pub fn metric(&self, k: usize, name: &str, labels: &[(&str, &str)]) -> anyhow::Result<f64> {
        Ok(crate::lab::metric(&self.metrics(k)?, name, labels))
    }

    /// The server CA's certificate (node 1 wrote it beside its copy).
    pub fn server_ca(&self) -> PathBuf {
        self.lab.dir.join("node1/server-ca.pem")
    }

    /// A TLS 1.3 request to `host` on node `k` from the root namespace: the
    /// HTTP status (0 when the connection or handshake failed).
    pub fn request(&self, k: usize, host: &str) -> u16 {
        self.prober().request(k, host)
    }

    /// What a client thread needs to ask the nodes, without the fleet.
    pub fn prober(&self) -> Prober {
        Prober {
            addrs: (1..=self.nodes).map(|k| self.lab.node_addr(k)).collect(),
            ca: self.server_ca(),
        }
    }

    /// Whether a TLS 1.2 handshake for `host` on node `k` completes.
    pub fn tls12_handshakes(&self, k: usize, host: &str) -> bool {
        let target = format!("{}:443", self.lab.node_addr(k));
        Command::new("timeout")
            .args([
                "5",
                "openssl",
                "s_client",
                "-connect",
                &target,
                "-servername",
                host,
                "-tls1_2",
            ])
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Adds a hostname (minimum TLS 1.3, origin the node's echo) through node
    /// `k`; its id.
    pub fn add_host(&self, k: usize, name: &str) -> anyhow::Result<String> {
        let body = serde_json::json!({
            "hostname": name,
            "ssl": {"settings": {"min_tls_version": "1.3"}},
            "custom_origin_server": format!("http://127.0.0.1:{ORIGIN_PORT}"),
        });
        let path = format!("zones/{}/custom_hostnames", self.zone);
        let host = self.ok(k, "POST", &path, Some(&body))?;
        Ok(host["id"].as_str().context("a hostname id")?.to_string())
    }

    /// Whether node `k`'s API lists hostname `name`.
    pub fn has_host(&self, k: usize, name: &str) -> anyhow::Result<bool> {
        let path = format!("zones/{}/custom_hostnames?hostname={name}", self.zone);
        Ok(self
            .ok(k, "GET", &path, None)?
            .as_array()
            .is_some_and(|a| !a.is_empty()))
    }

    /// `GET accounts/A/fleet/nodes` through node `k`.
    pub fn nodes(&self, k: usize) -> anyhow::Result<Vec<Value>> {
        let path = format!("accounts/{}/fleet/nodes", self.account);
        Ok(self
            .ok(k, "GET", &path, None)?
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Waits until every node in `nodes` reports the same revision with no
    /// lag; that revision.
    pub fn converged(&self, nodes: &[usize], timeout: Duration) -> anyhow::Result<i64> {
        crate::fleet::eventually(timeout, || {
            let revisions: Vec<f64> = nodes
                .iter()
                .map(|&k| self.metric(k, "gateway_config_revision", &[]))
                .collect::<anyhow::Result<_>>()?;
            let reports = self.nodes(nodes[0])?;
            ensure!(
                revisions.windows(2).all(|w| w[0] == w[1]),
                "revisions differ: {revisions:?}"
            );
            ensure!(
                reports.iter().filter(|n| n["lag"] == 0).count() >= nodes.len(),
                "nodes lag: {reports:?}"
            );
            Ok(revisions[0] as i64)
        })
    }
}

/// Real TLS clients of the fleet's nodes.
#[derive(Clone, Debug)]
pub struct Prober {
    addrs: Vec<std::net::Ipv4Addr>,
    ca: PathBuf,
}

impl Prober {
    /// A TLS 1.3 request to `host` on node `k` (curl): the HTTP status, 0 when
    /// the connection or handshake failed.
    pub fn request(&self, k: usize, host: &str) -> u16 {
        let addr = self.addrs[k - 1];
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "5",
                "--tlsv1.3",
            ])
            .args(["--resolve", &format!("{host}:443:{addr}")])
            .arg("--cacert")
            .arg(&self.ca)
            .arg(format!("https://{host}/"))
            .output();
        out.ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(0)
    }
}

/// Polls `f` until it is true or `timeout` passes; how long it took.
pub fn until(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .expect("read /dev/urandom");
    b
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
