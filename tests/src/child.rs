//! Child processes that cannot outlive the test or bench that started them:
//! each leads its own process group (so nginx's workers, a browser's
//! renderers and the like are stopped with it) and is killed by the kernel
//! if the thread that started it ends first (`PR_SET_PDEATHSIG`: a panic that
//! aborts, `exit`, a SIGKILL of the run). A [`Watchdog`] cleans up after a
//! run that ended so (e.g. nginx's workers, whose master the kernel killed).

use std::{
    os::unix::process::CommandExt,
    process::{Child, Command, Stdio},
};

/// Makes `cmd`'s process the leader of a new process group and has the kernel
/// SIGKILL it when the calling thread ends. Its own children stay in its group
/// (see [`signal_group`]) but are not covered by the death signal.
pub fn bind_to_this_thread(cmd: &mut Command) -> &mut Command {
    cmd.process_group(0);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the child between fork and exec and calls
    // only prctl(2) and getppid(2), both async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have gone between fork and prctl.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        })
    };
    cmd
}

/// Sends `signal` to every process in the group `leader` leads (started with
/// [`bind_to_this_thread`]); whether any was there to take it.
pub fn signal_group(leader: u32, signal: i32) -> bool {
    let Ok(pgid) = i32::try_from(leader) else {
        return false;
    };
    if pgid <= 1 {
        return false;
    }
    // SAFETY: kill(2) on a process group we created; a negative pid names the group.
    unsafe { libc::kill(-pgid, signal) == 0 }
}

/// A shell that runs a cleanup script when this process ends, however it
/// ends (even SIGKILL): it waits for its stdin, a pipe only this process
/// writes to, to close. In its own process group, so a Ctrl-C meant for the
/// run does not stop it first. Dropping it runs the script and waits for it.
pub struct Watchdog {
    child: Option<Child>,
}

impl Watchdog {
    /// Starts `sh` to run `script` once this process has gone (or the watchdog is dropped).
    pub fn start(script: &str) -> std::io::Result<Watchdog> {
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("cat >/dev/null; {script}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        Ok(Watchdog { child: Some(child) })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead, BufReader},
        os::unix::process::ExitStatusExt,
        process::Stdio,
        time::{Duration, Instant},
    };

    use super::*;

    /// Whether process `pid` is gone (or a zombie) within 2 s.
    fn gone(pid: u32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                Err(_) => return true,
                Ok(stat)
                    if stat
                        .rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('Z')) =>
                {
                    return true;
                }
                Ok(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        false
    }

    #[test]
    fn signalling_the_group_stops_the_childs_own_children() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 60 & echo $!; wait"])
            .stdout(Stdio::piped());
        let mut child = bind_to_this_thread(&mut cmd).spawn().expect("sh starts");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("sh says its child");
        let grandchild: u32 = line.trim().parse().expect("a pid");
        assert!(
            signal_group(child.id(), libc::SIGKILL),
            "the group was there"
        );
        let status = child.wait().expect("sh is reaped");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(
            gone(grandchild),
            "sh's sleep {grandchild} outlived the group"
        );
    }

    #[test]
    fn a_watchdog_runs_its_script_once_its_pipe_closes() {
        let mark = std::env::temp_dir().join(format!("watchdog-{}", std::process::id()));
        let _ = std::fs::remove_file(&mark);
        let dog = Watchdog::start(&format!("touch {}", mark.display())).expect("sh starts");
        std::thread::sleep(Duration::from_millis(200));
        assert!(!mark.exists(), "the script ran before the pipe closed");
        drop(dog);
        assert!(mark.exists(), "the script did not run when the pipe closed");
        let _ = std::fs::remove_file(&mark);
    }

    #[test]
    fn a_child_dies_with_the_thread_that_started_it() {
        let mut child = std::thread::spawn(|| {
            bind_to_this_thread(&mut Command::new("sleep"))
                .arg("60")
                .spawn()
                .expect("sleep starts")
        })
        .join()
        .expect("the thread ends");
        let deadline = Instant::now() + Duration::from_secs(2);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the child outlived its thread by 2 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    }
}
