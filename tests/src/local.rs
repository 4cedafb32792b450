//! Processes on loopback for terminator tests: the echo origin and the gateway
//! itself, each killed when dropped, plus helpers to drive real clients.

use std::{
    fs,
    io::Read,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

/// A free TCP port on 127.0.0.1 (bound, then released), never one this
/// process was given before: the kernel may hand a released port out again at
/// once, and two of a gateway's listeners on one port fail its start.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A scratch directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory named after the test.
    pub fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("gateway-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A child process with its output in a log file; killed when dropped, with
/// its process group, and by the kernel if the thread that started it ends
/// first (see [`crate::child`]).
pub struct Background {
    child: Child,
    log: PathBuf,
}

impl Background {
    /// Starts `cmd`, logging to `log`, and waits until its log contains `ready`.
    pub fn start(mut cmd: Command, log: PathBuf, ready: &str) -> Background {
        let file = fs::File::create(&log).unwrap();
        let child = crate::child::bind_to_this_thread(&mut cmd)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let mut bg = Background { child, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !bg.log().contains(ready) {
            if let Ok(Some(status)) = bg.child.try_wait() {
                panic!(
                    "{cmd:?} exited ({status}) before it was ready:\n{}",
                    bg.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{cmd:?} not ready in 20 s:\n{}",
                bg.log()
            );
            thread::sleep(Duration::from_millis(30));
        }
        bg
    }

    /// What the process has logged.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        // The group first, while its leader (not yet reaped) holds its id.
        crate::child::signal_group(self.child.id(), libc::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The echo origin (`scripts/lab_origin.py`) on 127.0.0.1:`port`.
pub fn origin(dir: &Path, port: u16) -> Background {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lab_origin.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script).args(["--port", &port.to_string()]);
    Background::start(cmd, dir.join(format!("origin-{port}.log")), "listening")
}

/// `gateway run --config dir/gateway.toml` with this configuration.
pub fn gateway(bin: &str, dir: &Path, config: &str) -> Background {
    let path = dir.join("gateway.toml");
    fs::write(&path, config).unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("run")
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "info");
    Background::start(cmd, dir.join("gateway.log"), "gateway: ")
}

/// What a client run printed and how it ended.
#[derive(Debug)]
pub struct Output {
    /// Exit success.
    pub ok: bool,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

/// Runs a command to completion (with a 20 s limit) and captures it.
pub fn output(cmd: &mut Command) -> Output {
    let mut limited = Command::new("timeout");
    limited
        .arg("20")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => limited.env(k, v),
            None => limited.env_remove(k),
        };
    }
    let out = limited.stdin(Stdio::null()).output().unwrap();
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `curl` to `https://host:port{path}` resolved to 127.0.0.1, trusting `ca`;
/// returns the HTTP status and the body.
pub fn curl(host: &str, port: u16, path: &str, ca: &Path, extra: &[&str]) -> (u16, String) {
    let out = output(
        Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "--resolve",
                &format!("{host}:{port}:127.0.0.1"),
            ])
            .arg("--cacert")
            .arg(ca)
            .args(extra)
            .args([
                "-w",
                "\n%{http_code}",
                &format!("https://{host}:{port}{path}"),
            ]),
    );
    let (body, code) = out.stdout.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        format!("{body}{}", out.stderr),
    )
}
