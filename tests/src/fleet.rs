//! A fleet lab: a real three-member etcd cluster on loopback and one network
//! namespace per gateway node, for the fleet-mode tests.
//!
//! Node `k` (1-based) is the namespace `gwfleet-<pid>-<n>-g<k>` with two veth
//! pairs to the root namespace: `eth0` (198.18.(10+k).2/24, where the gateway
//! attaches XDP; clients in the root namespace reach it from 198.18.(10+k).1)
//! and `etcd0` (198.18.(20+k).2/24; every etcd member also listens on
//! 198.18.(20+k).1, so taking that pair down partitions the node from etcd and
//! nothing else). The members run straight from `/usr/bin/etcd`, their data
//! and logs in the lab's directory.
//!
//! Everything is deleted on drop (node processes stopped, then the members
//! killed, namespaces and veths removed), and what a lab whose process died
//! left behind is removed when the next one starts. Labs share root-namespace
//! addresses, so only one exists at a time on a machine: `create` waits for
//! the previous one to be dropped.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};

use crate::lab::run;

/// How many etcd members the lab's cluster has.
pub const MEMBERS: usize = 3;

const PREFIX: &str = "gwfleet";
const ETCD: &str = "/usr/bin/etcd";
const ETCDCTL: &str = "/usr/bin/etcdctl";
/// A bound on one etcdctl request: a write proposed just as the leader died
/// is lost, not retried, and would otherwise hang for etcd's default 5 s.
const QUICK: &str = "--command-timeout=2s";

/// The fleet lab; dropping it tears everything down.
pub struct FleetLab {
    /// `gwfleet-<pid>-<n>`: the directory's and namespaces' prefix, and the
    /// members' cluster token (by which a dead lab's members are found).
    token: String,
    /// The root-side veth names' suffix, `<pid in hex>-<n>` (names are ≤ 15).
    link_id: String,
    nodes: usize,
    /// Scratch directory: the members' data, logs, anything a test writes.
    pub dir: PathBuf,
    /// Each member's peer and client port.
    ports: Vec<(u16, u16)>,
    /// The members (`etcd-n<m>`) and node processes, by name.
    procs: Vec<(String, Child)>,
    _lock: fs::File,
}

impl FleetLab {
    /// Creates `nodes` gateway namespaces (1 to 9) and starts the etcd
    /// cluster, returning once every member reports healthy.
    pub fn create(nodes: usize) -> anyhow::Result<FleetLab> {
        crate::require_root("creating network namespaces and veth pairs");
        ensure!((1..=9).contains(&nodes), "a fleet lab has 1 to 9 nodes");
        let lock = machine_lock()?;
        remove_stale();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let (pid, n) = (std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let token = format!("{PREFIX}-{pid}-{n}");
        let dir = std::env::temp_dir().join(&token);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let port = crate::local::free_port;
        // Built first, so that Drop cleans up whatever a failing step left.
        let mut lab = FleetLab {
            token,
            link_id: format!("{pid:x}-{n}"),
            nodes,
            dir,
            ports: (0..MEMBERS).map(|_| (port(), port())).collect(),
            procs: Vec::new(),
            _lock: lock,
        };
        for k in 1..=nodes {
            lab.add_node(k)?;
        }
        for m in 1..=MEMBERS {
            lab.launch_member(m, "new")?;
        }
        lab.wait_healthy(&(1..=MEMBERS).collect::<Vec<_>>())?;
        Ok(lab)
    }

    fn add_node(&self, k: usize) -> anyhow::Result<()> {
        let ns = self.namespace(k);
        ip(&["netns", "add", &ns])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        for (kind, inner, net) in [('c', "eth0", 10 + k), ('e', "etcd0", 20 + k)] {
            let outer = self.veth(kind, k)?;
            let peer = ["peer", "name", inner, "netns", &ns];
            ip(&[&["link", "add", &outer, "type", "veth"][..], &peer].concat())?;
            ip(&["addr", "add", &format!("198.18.{net}.1/24"), "dev", &outer])?;
            ip(&["link", "set", &outer, "up"])?;
            let addr = format!("198.18.{net}.2/24");
            ip(&["-n", &ns, "addr", "add", &addr, "dev", inner])?;
            ip(&["-n", &ns, "link", "set", inner, "up"])?;
        }
        Ok(())
    }

    /// How many gateway nodes the lab has.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// The name of node `k`'s network namespace.
    pub fn namespace(&self, k: usize) -> String {
        assert!((1..=self.nodes).contains(&k), "no node {k} in this lab");
        format!("{}-g{k}", self.token)
    }

    /// The root-side name of node `k`'s client (`'c'`) or etcd (`'e'`) veth.
    fn veth(&self, kind: char, k: usize) -> anyhow::Result<String> {
        let name = format!("gf{kind}{k}-{}", self.link_id);
        ensure!(name.len() <= 15, "interface name {name} is too long");
        Ok(name)
    }

    /// Node `k`'s address on its client link (`eth0`, where XDP attaches).
    pub fn node_addr(&self, k: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 10 + k as u8, 2)
    }

    /// The root namespace's address on node `k`'s client link (clients' source).
    pub fn client_addr(&self, k: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 10 + k as u8, 1)
    }

    /// The `--etcd` endpoints for node `k`: every member over its etcd veth.
    pub fn etcd_endpoints_for(&self, k: usize) -> String {
        assert!((1..=self.nodes).contains(&k), "no node {k} in this lab");
        self.endpoints(&format!("198.18.{}.1", 20 + k), 1..=MEMBERS)
    }

    /// Every member's loopback client URL, comma-separated.
    pub fn loopback_endpoints(&self) -> String {
        self.endpoints("127.0.0.1", 1..=MEMBERS)
    }

    fn endpoints(&self, host: &str, members: impl IntoIterator<Item = usize>) -> String {
        let urls = members
            .into_iter()
            .map(|m| format!("http://{host}:{}", self.ports[m - 1].1));
        urls.collect::<Vec<_>>().join(",")
    }

    /// A command run inside node `k`'s namespace (`ip netns exec`).
    pub fn in_node(&self, k: usize, program: impl AsRef<Path>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.namespace(k)])
            .arg(program.as_ref());
        cmd
    }

    /// Runs `etcdctl` against the live members over loopback; its stdout.
    pub fn etcdctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let live: Vec<usize> = (1..=MEMBERS).filter(|&m| self.member_running(m)).collect();
        ensure!(!live.is_empty(), "no etcd member is running");
        let endpoints = self.endpoints("127.0.0.1", live);
        etcdctl_run(Command::new(ETCDCTL), &endpoints, args)
    }

    /// Runs `etcdctl` inside node `k` against its `--etcd` endpoints; its stdout.
    pub fn etcdctl_in_node(&self, k: usize, args: &[&str]) -> anyhow::Result<String> {
        etcdctl_run(self.in_node(k, ETCDCTL), &self.etcd_endpoints_for(k), args)
    }

    /// Writes `key` = `value` through the live members, giving up after 2 s
    /// (a write caught in an election fails rather than hangs: retry it).
    pub fn put_raw(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.etcdctl(&[QUICK, "put", "--", key, value]).map(|_| ())
    }

    /// The value of `key` (`None` when absent), read through the live members
    /// (a linearizable read, so it needs a leader), giving up after 2 s.
    pub fn get_raw(&self, key: &str) -> anyhow::Result<Option<String>> {
        // Nothing for an absent key; the value and a newline for a present one.
        let out = self.etcdctl(&[QUICK, "get", "--print-value-only", "--", key])?;
        Ok(out.strip_suffix('\n').map(str::to_string))
    }

    /// `etcdctl endpoint status` of the live members, one entry each.
    fn status(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let out = self.etcdctl(&[QUICK, "endpoint", "status", "-w", "json"])?;
        let v: serde_json::Value = serde_json::from_str(&out).context("endpoint status")?;
        v.as_array().cloned().context("endpoint status: not a list")
    }

    /// Which member (1-based) leads, by the live members' own account.
    pub fn leader(&self) -> anyhow::Result<usize> {
        for entry in self.status()? {
            let status = &entry["Status"];
            // Member ids are full u64s (beyond i64); serde_json keeps them exact.
            let me = status["header"]["member_id"].as_u64();
            if me.is_some() && me == status["leader"].as_u64() {
                let endpoint = entry["Endpoint"].as_str().unwrap_or("");
                return (1..=MEMBERS)
                    .find(|&m| self.endpoints("127.0.0.1", [m]) == endpoint)
                    .with_context(|| format!("the leader's endpoint {endpoint} is not a member"));
            }
        }
        bail!("no live member is the leader")
    }

    /// Waits up to `timeout` for a live member to lead, and returns it.
    pub fn wait_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        eventually(timeout, || self.leader())
            .with_context(|| format!("no leader after {timeout:?}\n{}", self.member_logs()))
    }

    /// The cluster's current revision (the highest a live member reports).
    pub fn revision(&self) -> anyhow::Result<u64> {
        let status = self.status()?;
        let revisions = status.iter().map(|e| &e["Status"]["header"]["revision"]);
        revisions
            .filter_map(serde_json::Value::as_u64)
            .max()
            .context("no revision reported")
    }

    /// Compacts the keyspace up to the current revision, which it returns.
    pub fn compact_to_latest(&self) -> anyhow::Result<u64> {
        let rev = self.revision()?;
        match self.etcdctl(&["compact", &rev.to_string()]) {
            // "has been compacted": nothing was written since the last compaction.
            Err(e) if !format!("{e:#}").contains("has been compacted") => Err(e),
            _ => Ok(rev),
        }
    }

    fn member_logs(&self) -> String {
        let tail = |m: usize| {
            let log = self.log(&member(m));
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        let logs =
            (1..=MEMBERS).map(|m| format!("--- etcd n{m} (its last 40 lines) ---\n{}\n", tail(m)));
        logs.collect()
    }

    fn launch_member(&mut self, m: usize, state: &str) -> anyhow::Result<()> {
        let peer = |m: usize| format!("http://127.0.0.1:{}", self.ports[m - 1].0);
        let cluster: Vec<String> = (1..=MEMBERS).map(|i| format!("n{i}={}", peer(i))).collect();
        let port = self.ports[m - 1].1;
        let mut listen = vec![format!("http://127.0.0.1:{port}")];
        listen.extend((1..=self.nodes).map(|k| format!("http://198.18.{}.1:{port}", 20 + k)));
        let mut cmd = Command::new(ETCD);
        cmd.args(["--name", &format!("n{m}")])
            .arg("--data-dir")
            .arg(self.dir.join(format!("etcd-n{m}")))
            .args(["--listen-peer-urls", &peer(m)])
            .args(["--initial-advertise-peer-urls", &peer(m)])
            .args(["--listen-client-urls", &listen.join(",")])
            .args(["--advertise-client-urls", &listen[0]])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"]);
        // A restarted member's log continues the first run's.
        self.start(&member(m), cmd, true)
    }

    /// Waits up to 20 s until each of `members` answers a health check (a
    /// committed proposal), failing with the members' logs if one exits.
    fn wait_healthy(&self, members: &[usize]) -> anyhow::Result<()> {
        let endpoints = self.endpoints("127.0.0.1", members.iter().copied());
        let exited = eventually(Duration::from_secs(20), || {
            if let Some(&m) = members.iter().find(|&&m| !self.member_running(m)) {
                return Ok(Some(m));
            }
            let args = ["endpoint", "health", "--dial-timeout=1s", QUICK];
            etcdctl_run(Command::new(ETCDCTL), &endpoints, &args).map(|_| None)
        });
        let logs = || self.member_logs();
        match exited {
            Ok(None) => Ok(()),
            Ok(Some(m)) => bail!("etcd member n{m} exited:\n{}", logs()),
            Err(e) => bail!("etcd {members:?} not healthy in 20 s: {e:#}\n{}", logs()),
        }
    }

    /// Whether member `m` (1-based) is running.
    pub fn member_running(&self, m: usize) -> bool {
        self.running(&member(m))
    }

    /// Kills member `m` with SIGKILL (no clean shutdown) and reaps it.
    pub fn kill_member(&mut self, m: usize) -> anyhow::Result<()> {
        self.kill(&member(m))
    }

    /// Stops member `m` with SIGTERM and waits for it to exit.
    pub fn stop_member(&mut self, m: usize) -> anyhow::Result<()> {
        self.stop(&member(m)).map(|_| ())
    }

    /// Restarts a stopped or killed member on its data directory (which
    /// overrides the initial-cluster flags). Returns once it listens for its
    /// peers and, if the running members make a quorum, once it serves
    /// clients (a restarted member serves none until a quorum runs).
    pub fn start_member(&mut self, m: usize) -> anyhow::Result<()> {
        self.launch_member(m, "existing")?;
        let peer = SocketAddr::from(([127, 0, 0, 1], self.ports[m - 1].0));
        let up = eventually(Duration::from_secs(20), || {
            if !self.member_running(m) {
                return Ok(false);
            }
            TcpStream::connect_timeout(&peer, Duration::from_secs(1))?;
            Ok(true)
        });
        let logs = || self.member_logs();
        match up {
            Ok(true) => {}
            Ok(false) => bail!("etcd member n{m} exited:\n{}", logs()),
            Err(e) => bail!("etcd member n{m} not up in 20 s: {e}\n{}", logs()),
        }
        let running = (1..=MEMBERS).filter(|&m| self.member_running(m)).count();
        if running > MEMBERS / 2 {
            self.wait_healthy(&[m])?;
        }
        Ok(())
    }

    /// Cuts node `k` off from etcd: the root side of its etcd veth goes down.
    pub fn partition(&self, k: usize) -> anyhow::Result<()> {
        ip(&["link", "set", &self.veth('e', k)?, "down"])
    }

    /// Undoes [`FleetLab::partition`].
    pub fn heal(&self, k: usize) -> anyhow::Result<()> {
        ip(&["link", "set", &self.veth('e', k)?, "up"])
    }

    /// Starts `cmd` inside node `k` (its program, arguments, environment and
    /// directory; as is if it is already [`FleetLab::in_node`]`(k, …)`); its
    /// output goes to `<dir>/<name>.log`. Stopped on drop.
    pub fn spawn_in_node(&mut self, k: usize, name: &str, cmd: Command) -> anyhow::Result<()> {
        let ns = self.namespace(k);
        let head: Vec<_> = cmd.get_args().take(3).collect();
        if cmd.get_program() == "ip" && head == ["netns", "exec", ns.as_str()] {
            return self.start(name, cmd, false);
        }
        let mut wrapped = self.in_node(k, cmd.get_program());
        wrapped.args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(v) => wrapped.env(key, v),
                None => wrapped.env_remove(key),
            };
        }
        if let Some(cwd) = cmd.get_current_dir() {
            wrapped.current_dir(cwd);
        }
        self.start(name, wrapped, false)
    }

    fn start(&mut self, name: &str, mut cmd: Command, append: bool) -> anyhow::Result<()> {
        ensure!(!self.running(name), "{name} is already running");
        self.procs.retain(|(n, _)| n != name);
        let log = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(self.log_path(name))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {name}: {cmd:?}"))?;
        self.procs.push((name.to_string(), child));
        Ok(())
    }

    /// The process id of a named process (a node's, or member `etcd-n<m>`).
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.procs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.id())
    }

    /// Whether a named process is running (it is reaped only when stopped or
    /// killed, so its pid stays ours).
    pub fn running(&self, name: &str) -> bool {
        self.pid(name).is_some_and(alive)
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
        &self,
        name: &str,
        timeout: Duration,
        ready: impl Fn(&FleetLab) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while !ready(self) {
            ensure!(self.running(name), "{name} exited:\n{}", self.log(name));
            let late = Instant::now() > deadline;
            ensure!(
                !late,
                "{name} not ready after {timeout:?}:\n{}",
                self.log(name)
            );
            thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn take(&mut self, name: &str) -> anyhow::Result<Child> {
        let i = self.procs.iter().position(|(n, _)| n == name);
        let i = i.with_context(|| format!("no process named {name}"))?;
        Ok(self.procs.remove(i).1)
    }

    /// Stops a named process with SIGTERM and waits for it; whether it exited
    /// successfully.
    pub fn stop(&mut self, name: &str) -> anyhow::Result<bool> {
        let mut child = self.take(name)?;
        sigterm(&child);
        match reap(&mut child, Instant::now() + Duration::from_secs(10)) {
            Some(status) => Ok(status.success()),
            None => bail!(
                "{name} did not stop within 10 s of SIGTERM:\n{}",
                self.log(name)
            ),
        }
    }

    /// Kills a named process with SIGKILL and reaps it.
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let mut child = self.take(name)?;
        let _ = child.kill();
        child.wait()?;
        Ok(())
    }
}

impl Drop for FleetLab {
    fn drop(&mut self) {
        // The node processes first (SIGTERM, so gateways detach XDP), then etcd.
        let (members, mut nodes): (Vec<_>, Vec<_>) = self
            .procs
            .drain(..)
            .partition(|(n, _)| n.starts_with("etcd-n"));
        nodes.iter().for_each(|(_, child)| sigterm(child));
        let deadline = Instant::now() + Duration::from_secs(5);
        for (_, child) in &mut nodes {
            reap(child, deadline);
        }
        for (_, mut child) in members {
            let _ = child.kill();
            let _ = child.wait();
        }
        let quiet = |args: &[&str]| Command::new("ip").args(args).stderr(Stdio::null()).status();
        for k in 1..=self.nodes {
            let _ = quiet(&["netns", "del", &self.namespace(k)]);
            // That deletes the veths too, unless a stray process keeps the
            // namespace alive; these make sure.
            for link in ['c', 'e'].iter().flat_map(|&c| self.veth(c, k)) {
                let _ = quiet(&["link", "del", &link]);
            }
        }
        if std::env::var_os("GATEWAY_LAB_KEEP_LOGS").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Retries `f` every 100 ms until it succeeds or `timeout` has passed, then
/// returns its last error.
pub fn eventually<T>(
    timeout: Duration,
    mut f: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
            result => return result,
        }
    }
}

/// The process name of member `m`.
fn member(m: usize) -> String {
    format!("etcd-n{m}")
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("ip").args(args)).map(|_| ())
}

fn etcdctl_run(mut cmd: Command, endpoints: &str, args: &[&str]) -> anyhow::Result<String> {
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .stdin(Stdio::null());
    let out = run(&mut cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn sigterm(child: &Child) {
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
}

/// Waits until `deadline` for a child told to stop, then kills it; `Some` if
/// it exited by itself.
fn reap(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// An exclusive lock on the machine's fleet-lab addresses, held until dropped.
fn machine_lock() -> anyhow::Result<fs::File> {
    let path = std::env::temp_dir().join(format!("{PREFIX}.lock"));
    let file = fs::File::create(&path).with_context(|| format!("cannot open {path:?}"))?;
    // SAFETY: flock(2) on an open descriptor; it blocks until the lock is ours.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        bail!("flock {path:?}: {}", std::io::Error::last_os_error());
    }
    Ok(file)
}

/// Whether `pid` is a process that has not exited (a zombie has).
fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit(')').next().unwrap_or("");
        !state.trim_start().starts_with('Z')
    })
}

/// Whether `name` is `gwfleet-<pid>-…` of a process that has exited.
fn stale(name: &str) -> bool {
    let mut parts = name.split('-');
    parts.next() == Some(PREFIX)
        && parts
            .next()
            .and_then(|p| p.parse().ok())
            .is_some_and(|pid| !alive(pid))
}

/// Removes what labs whose process died left: the processes in their
/// namespaces, the namespaces (and with them the veths), their etcd members
/// and (unless logs are being kept) their directories.
fn remove_stale() {
    let out = |cmd: &mut Command| {
        let out = cmd.output().map(|o| o.stdout).unwrap_or_default();
        String::from_utf8_lossy(&out).into_owned()
    };
    let kill = |pid: &str| {
        if let Ok(pid) = pid.parse::<i32>() {
            // SAFETY: kill(2) on a process a dead lab left behind.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    };
    for line in out(Command::new("ip").args(["netns", "list"])).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if stale(name) {
            out(Command::new("ip").args(["netns", "pids", name]))
                .split_whitespace()
                .for_each(kill);
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
    // Members carry their lab's name as the cluster token.
    for line in out(Command::new("pgrep").args(["-a", "-x", "etcd"])).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let token = words.windows(2).find(|w| w[0] == "--initial-cluster-token");
        if words.get(1) == Some(&ETCD) && token.is_some_and(|w| stale(w[1])) {
            kill(words[0]);
        }
    }
    if std::env::var_os("GATEWAY_LAB_KEEP_LOGS").is_none() {
        for entry in fs::read_dir(std::env::temp_dir())
            .into_iter()
            .flatten()
            .flatten()
        {
            if stale(&entry.file_name().to_string_lossy()) && entry.path().is_dir() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
}
