//! A network-namespace lab: a client and a server namespace joined by a veth
//! pair, with real processes in them. Used by the end-to-end tests and by
//! `cargo xtask demo`.
//!
//! Everything the lab makes is deleted when it is dropped (processes killed,
//! namespaces and with them the veth pair removed), and namespaces left by a
//! lab whose process died are removed when the next lab starts. Traffic stays
//! between the two namespaces, on 198.18.0.0/24 and fd00::/64.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// Server address inside the lab.
pub const SERVER_V4: &str = "198.18.0.1";
/// Client address inside the lab.
pub const CLIENT_V4: &str = "198.18.0.2";
/// Server IPv6 address inside the lab.
pub const SERVER_V6: &str = "fd00::1";
/// Client IPv6 address inside the lab.
pub const CLIENT_V6: &str = "fd00::2";
/// The interface name on both ends of the veth pair.
pub const IFACE: &str = "gw0";
/// Where the gateway serves metrics inside the server namespace.
pub const METRICS: &str = "127.0.0.1:9100";

const PREFIX: &str = "gwlab";

/// The lab; dropping it tears everything down.
pub struct Lab {
    server_ns: String,
    client_ns: String,
    /// Scratch directory for certificates, configurations and logs.
    pub dir: PathBuf,
    children: Vec<(String, Child)>,
    /// A pass program on the client's veth, so that frames the server's XDP
    /// program sends back (SYN cookies, resets) reach the client in native mode.
    _client_xdp: Option<gateway::xdp::PassProgram>,
    /// Kills what is left in the namespaces and deletes them if this process
    /// dies without dropping the lab (dropped last).
    _watchdog: Option<crate::child::Watchdog>,
}

/// What a client run showed.
#[derive(Debug)]
pub struct ClientRun {
    /// Whether the client exited successfully.
    pub ok: bool,
    /// How long it ran.
    pub elapsed: Duration,
    /// Its stdout and stderr.
    pub output: String,
}

/// Runs a command and fails with its output unless it succeeds.
pub fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("ip").args(args)).map(|_| ())
}

impl Lab {
    /// Creates the namespaces, the veth pair and the addresses.
    pub fn create() -> anyhow::Result<Lab> {
        crate::require_root("creating network namespaces");
        remove_stale_labs();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("{PREFIX}-{id}"));
        fs::create_dir_all(&dir)?;
        let (server_ns, client_ns) = (format!("{PREFIX}-s-{id}"), format!("{PREFIX}-c-{id}"));
        let script = format!(
            "for ns in {server_ns} {client_ns}; do kill -9 $(ip netns pids $ns 2>/dev/null) \
             2>/dev/null; ip netns del $ns 2>/dev/null; done"
        );
        let watchdog = crate::child::Watchdog::start(&script)
            .inspect_err(|e| {
                eprintln!(
                    "!!! lab: no watchdog ({e}): if this process dies without dropping the \
                     lab, its processes live until the next lab starts"
                )
            })
            .ok();
        let mut lab = Lab {
            server_ns,
            client_ns,
            dir,
            children: Vec::new(),
            _client_xdp: None,
            _watchdog: watchdog,
        };
        let (s, c) = (lab.server_ns.as_str(), lab.client_ns.as_str());
        ip(&["netns", "add", s])?;
        ip(&["netns", "add", c])?;
        ip(&[
            "-n", s, "link", "add", IFACE, "type", "veth", "peer", "name", IFACE, "netns", c,
        ])?;
        for (ns, v4, v6) in [(s, SERVER_V4, SERVER_V6), (c, CLIENT_V4, CLIENT_V6)] {
            ip(&["-n", ns, "addr", "add", &format!("{v4}/24"), "dev", IFACE])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                IFACE,
                "nodad",
            ])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&["-n", ns, "link", "set", IFACE, "up"])?;
        }
        match lab.in_client_thread(|| gateway::xdp::PassProgram::attach(IFACE))? {
            Ok(pass) => lab._client_xdp = Some(pass),
            Err(e) => eprintln!(
                "!!! lab: no XDP program on the client's veth ({e:#}): frames the server's XDP \
                 program sends back in native mode (SYN cookies) will not reach the client"
            ),
        }
        Ok(lab)
    }

    /// A command run inside the server namespace.
    pub fn in_server(&self, program: impl AsRef<Path>) -> Command {
        netns_exec(&self.server_ns, program.as_ref())
    }

    /// What [`in_server`](Self::in_server) does, as a closure another thread
    /// can take (e.g. to start chromedriver from [`in_server_thread`](Self::in_server_thread)).
    pub fn server_wrapper(&self) -> impl FnOnce(&Path) -> Command + Send + 'static {
        let ns = self.server_ns.clone();
        move |program| netns_exec(&ns, program)
    }

    /// A command run inside the client namespace.
    pub fn in_client(&self, program: impl AsRef<Path>) -> Command {
        netns_exec(&self.client_ns, program.as_ref())
    }

    /// Runs `f` on a thread that has entered the client namespace (sockets it
    /// opens live there), and returns its result.
    pub fn in_client_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        in_namespace_thread(&self.client_ns, f)
    }

    /// Runs `f` on a thread that has entered the server namespace (sockets it
    /// opens live there, e.g. a listener for an origin), and returns its result.
    pub fn in_server_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        in_namespace_thread(&self.server_ns, f)
    }

    /// The MAC address of the lab interface in the server (`true`) or client namespace.
    pub fn mac(&self, server: bool) -> anyhow::Result<[u8; 6]> {
        let cmd = if server {
            self.in_server("cat")
        } else {
            self.in_client("cat")
        };
        let mut cmd = cmd;
        let out = run(cmd.arg(format!("/sys/class/net/{IFACE}/address")))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let bytes: Vec<u8> = text
            .trim()
            .split(':')
            .filter_map(|h| u8::from_str_radix(h, 16).ok())
            .collect();
        bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("unexpected MAC address {text:?}"))
    }

    /// Turns checksum offload on the client's interface on or off. With it on
    /// (the default for veth) segments cross with a partial checksum; with it off
    /// every checksum is complete and verified by the receiving stack.
    pub fn set_client_offload(&self, on: bool) -> anyhow::Result<()> {
        let state = if on { "on" } else { "off" };
        run(self.in_client("ethtool").args(["-K", IFACE, "tx", state]))?;
        Ok(())
    }

    /// Starts a long-running process; its output goes to `<dir>/<name>.log`.
    /// It leads its own process group, stopped with it, and dies with the
    /// calling thread (see [`crate::child`]): call from the thread that owns the lab.
    pub fn spawn(&mut self, name: &str, mut cmd: Command) -> anyhow::Result<()> {
        let log = fs::File::create(self.log_path(name))?;
        let child = crate::child::bind_to_this_thread(&mut cmd)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {name}: {cmd:?}"))?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    /// The process id of a process started with [`Lab::spawn`], if it is still ours.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.children
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, child)| child.id())
    }

    /// Path of a process's log.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// What a process has logged so far.
    pub fn log(&self, name: &str) -> String {
        fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    /// Waits until `ready` holds, failing with the named process's log if it
    /// does not within `timeout` or if the process exits.
    pub fn wait_for(
        &mut self,
        name: &str,
        timeout: Duration,
        ready: impl Fn(&Lab) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if ready(self) {
                return Ok(());
            }
            if let Some((_, child)) = self.children.iter_mut().find(|(n, _)| n == name)
                && let Some(status) = child.try_wait()?
            {
                bail!("{name} exited ({status}):\n{}", self.log(name));
            }
            if Instant::now() > deadline {
                bail!("{name} not ready after {timeout:?}:\n{}", self.log(name));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Makes a self-signed RSA certificate for `names` (the first is the CN);
    /// returns the certificate and key paths.
    pub fn self_signed(&self, names: &[&str]) -> anyhow::Result<(PathBuf, PathBuf)> {
        let (cert, key) = (self.dir.join("server.crt"), self.dir.join("server.key"));
        let san = names
            .iter()
            .map(|n| format!("DNS:{n}"))
            .collect::<Vec<_>>()
            .join(",");
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args([
                "-subj",
                &format!("/CN={}", names[0]),
                "-addext",
                &format!("subjectAltName={san}"),
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert))?;
        Ok((cert, key))
    }

    /// Starts the lab's TLS server (every version from 1.0 allowed) on port 443.
    pub fn start_tls_server(&mut self, cert: &Path, key: &Path) -> anyhow::Result<()> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lab_tls_server.py");
        let events = self.log_path("tls-events");
        let mut cmd = self.in_server("python3");
        cmd.arg(script)
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .arg("--log")
            .arg(&events);
        self.spawn("tls-server", cmd)?;
        self.wait_for("tls-server", Duration::from_secs(10), |lab| {
            lab.log("tls-events").contains("listening")
        })
    }

    /// Starts the echo origin (`scripts/lab_origin.py`) on the server's port
    /// 8080 and waits until it listens.
    pub fn start_origin(&mut self) -> anyhow::Result<()> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lab_origin.py");
        let mut cmd = self.in_server("python3");
        cmd.arg(script).args(["--port", "8080"]);
        self.spawn("origin", cmd)?;
        self.wait_for("origin", Duration::from_secs(10), |lab| {
            lab.log("origin").contains("listening")
        })
    }

    /// Headless Chromium in the client namespace (at most 40 s), every name
    /// resolved to the server, certificate errors ignored: `--dump-dom` of `url`
    /// with a profile of its own.
    pub fn chromium_dump_dom(
        &self,
        chromium: &Path,
        profile: &Path,
        url: &str,
    ) -> std::io::Result<std::process::Output> {
        self.in_client("timeout")
            .arg("40")
            .arg(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--host-resolver-rules=MAP * {SERVER_V4}"))
            .args(["--ignore-certificate-errors", "--dump-dom", url])
            .env("HOME", &self.dir)
            .stdin(Stdio::null())
            .output()
    }

    /// The TLS server's events (one JSON object per line) of a given kind.
    pub fn tls_events(&self, kind: &str) -> Vec<serde_json::Value> {
        self.log("tls-events")
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["event"] == kind)
            .collect()
    }

    /// Starts `gateway run` in the server namespace with this configuration and
    /// waits until its metrics endpoint answers.
    pub fn start_gateway(&mut self, bin: &Path, config: &str) -> anyhow::Result<()> {
        let path = self.dir.join("gateway.toml");
        fs::write(&path, config)?;
        let mut cmd = self.in_server(bin);
        cmd.arg("run").arg("--config").arg(&path);
        self.spawn("gateway", cmd)?;
        self.wait_for("gateway", Duration::from_secs(20), |lab| {
            lab.metrics().is_ok()
        })
    }

    /// Replaces the gateway's configuration file atomically (the gateway follows it).
    pub fn write_gateway_config(&self, config: &str) -> anyhow::Result<()> {
        let tmp = self.dir.join("gateway.toml.new");
        fs::write(&tmp, config)?;
        fs::rename(tmp, self.dir.join("gateway.toml"))?;
        Ok(())
    }

    /// Scrapes the gateway's metrics from inside the server namespace.
    pub fn metrics(&self) -> anyhow::Result<String> {
        let out = run(self.in_server("curl").args([
            "-sf",
            "--max-time",
            "2",
            &format!("http://{METRICS}/metrics"),
        ]))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `openssl s_client` from the client namespace against the server with
    /// `args` (e.g. `-tls1`), closing stdin at once, and reports how it went.
    pub fn s_client(&self, server: &str, sni: &str, args: &[&str]) -> ClientRun {
        self.s_client_port(server, 443, sni, args)
    }

    /// [`Lab::s_client`] against `server`:`port`.
    pub fn s_client_port(&self, server: &str, port: u16, sni: &str, args: &[&str]) -> ClientRun {
        let target = if server.contains(':') {
            format!("[{server}]:{port}")
        } else {
            format!("{server}:{port}")
        };
        let start = Instant::now();
        let out = self
            .in_client("timeout")
            .args([
                "10",
                "openssl",
                "s_client",
                "-connect",
                &target,
                "-servername",
                sni,
            ])
            .args(["-cipher", "DEFAULT:@SECLEVEL=0"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run openssl s_client");
        ClientRun {
            ok: out.status.success(),
            elapsed: start.elapsed(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// Stops a named process with SIGTERM (so it can clean up) and waits for it;
    /// returns whether it exited successfully.
    pub fn stop(&mut self, name: &str) -> anyhow::Result<bool> {
        let i = self
            .children
            .iter()
            .position(|(n, _)| n == name)
            .with_context(|| format!("no process named {name}"))?;
        let (_, mut child) = self.children.remove(i);
        sigterm(&child);
        match reap(&mut child, Instant::now() + Duration::from_secs(10)) {
            Some(status) => Ok(status.success()),
            None => bail!(
                "{name} did not stop within 10 s of SIGTERM:\n{}",
                self.log(name)
            ),
        }
    }

    /// What `ip link show DEV` says in the server namespace.
    pub fn server_link(&self, dev: &str) -> anyhow::Result<String> {
        let out = run(self.in_server("ip").args(["link", "show", dev]))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// For a failing test: whether each process still ran, and the end of its log.
    fn show_children(&mut self) {
        const TAIL: usize = 40;
        let states: Vec<(String, String)> = self
            .children
            .iter_mut()
            .map(|(name, child)| {
                let state = match child.try_wait() {
                    Ok(Some(status)) => format!("exited ({status})"),
                    _ => "still running".to_string(),
                };
                (name.clone(), state)
            })
            .collect();
        for (name, state) in states {
            let log = self.log(&name);
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(TAIL)..].join("\n");
            println!("--- lab process {name}: {state}; the end of its log:\n{tail}\n---");
        }
    }

    fn stop_children(&mut self) {
        // SIGTERM to all first, so the gateway detaches its program cleanly.
        for (_, child) in &self.children {
            sigterm(child);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, child) in &mut self.children {
            reap(child, deadline);
        }
        self.children.clear();
        // Whatever they left in the namespaces (a worker whose master was killed).
        for ns in [&self.server_ns, &self.client_ns] {
            kill_namespace_processes(ns);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if thread::panicking() {
            self.show_children();
        }
        self.stop_children();
        for ns in [&self.server_ns, &self.client_ns] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if std::env::var_os("GATEWAY_LAB_KEEP_LOGS").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// SIGTERM to a child and its process group (nginx's master and workers).
fn sigterm(child: &Child) {
    crate::child::signal_group(child.id(), libc::SIGTERM);
}

/// Waits until `deadline` for a child told to stop, then kills it; `Some` if it
/// exited by itself. Either way what is left of its process group is killed.
fn reap(child: &mut Child, deadline: Instant) -> Option<std::process::ExitStatus> {
    let mut exited = None;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    if crate::child::signal_group(child.id(), libc::SIGKILL) && exited.is_some() {
        eprintln!(
            "lab: process {} exited but left processes in its group; killed them",
            child.id()
        );
    }
    if exited.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    exited
}

/// Kills every process in the network namespace `ns` but this one (e.g. a
/// worker left by a master that died); says which.
fn kill_namespace_processes(ns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() else {
        return;
    };
    let ours = std::process::id();
    for pid in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
        .filter(|p| *p != ours)
    {
        let what = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        eprintln!("lab: killing process {pid} ({}) left in {ns}", what.trim());
        // SAFETY: kill(2) on a process in a namespace this lab made.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

/// Runs `f` on a new thread that has entered the network namespace `ns`.
fn in_namespace_thread<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let path = format!("/run/netns/{ns}");
    let name = ns.to_string();
    std::thread::spawn(move || -> anyhow::Result<T> {
        let ns = fs::File::open(&path).with_context(|| format!("cannot open {path}"))?;
        // SAFETY: setns(2) on a valid namespace fd; it changes this thread only.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
        if rc != 0 {
            bail!("setns into {path}: {}", std::io::Error::last_os_error());
        }
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread in namespace {name} panicked"))?
}

fn netns_exec(ns: &str, program: &Path) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(program);
    cmd
}

/// Deletes namespaces left behind by labs whose process no longer exists.
fn remove_stale_labs() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let mut parts = name.split('-');
        if parts.next() != Some(PREFIX) {
            continue;
        }
        let pid = parts.nth(1).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            kill_namespace_processes(name);
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// The value of a Prometheus sample `name{labels}` in a scrape (0 when absent).
pub fn metric(scrape: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}
