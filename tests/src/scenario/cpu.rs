//! CPU accounting from /proc and from the kernel's BPF statistics, and CPU
//! pinning: what the flood scenario charges to a server.

use std::{collections::HashMap, fs};

use anyhow::Context;

/// Clock ticks per second for /proc times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// `(ppid, utime + stime in ticks)` of a process from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): ppid is field 4, utime 14, stime 15.
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// `root` and all its descendants that are alive now (e.g. nginx's master and
/// its worker).
pub fn process_tree(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for pid in entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        {
            if let Some((ppid, _)) = stat(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        if let Some(kids) = children.get(&tree[i]) {
            tree.extend(kids);
        }
        i += 1;
    }
    tree
}

/// utime + stime, in seconds, of these processes (all their threads), from
/// `/proc/PID/stat`; processes that have exited count nothing.
pub fn process_seconds(pids: &[u32]) -> f64 {
    let ticks: u64 = pids.iter().filter_map(|p| stat(*p)).map(|(_, t)| t).sum();
    ticks as f64 / ticks_per_second()
}

/// Per-CPU counters from `/proc/stat`, in ticks: `(busy, softirq, total)`.
#[derive(Clone, Debug, Default)]
pub struct CpuTimes(Vec<(u64, u64, u64)>);

impl CpuTimes {
    /// Reads `/proc/stat` now.
    pub fn now() -> CpuTimes {
        let text = fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpus = text
            .lines()
            .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
            .map(|l| {
                let v: Vec<u64> = l
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|x| x.parse().ok())
                    .collect();
                let total: u64 = v.iter().take(8).sum();
                let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
                (total - idle, v.get(6).copied().unwrap_or(0), total)
            })
            .collect();
        CpuTimes(cpus)
    }

    /// Per CPU since `earlier`: `(busy fraction, softirq fraction)`.
    pub fn since(&self, earlier: &CpuTimes) -> Vec<(f64, f64)> {
        self.0
            .iter()
            .zip(&earlier.0)
            .map(|(now, then)| {
                let total = now.2.saturating_sub(then.2).max(1) as f64;
                (
                    now.0.saturating_sub(then.0) as f64 / total,
                    now.1.saturating_sub(then.1) as f64 / total,
                )
            })
            .collect()
    }
}

/// Run time and run count of a BPF program, from the kernel's statistics
/// (counted only while `kernel.bpf_stats_enabled` is 1).
pub fn bpf_prog_stats(id: u32) -> anyhow::Result<(u64, u64)> {
    let out = crate::lab::run(std::process::Command::new("bpftool").args([
        "prog",
        "show",
        "id",
        &id.to_string(),
        "--json",
    ]))?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("bpftool prog show --json")?;
    Ok((
        v["run_time_ns"].as_u64().unwrap_or(0),
        v["run_cnt"].as_u64().unwrap_or(0),
    ))
}

/// The id of the XDP program attached to a link, from `ip link show` output.
pub fn xdp_prog_id(link: &str) -> Option<u32> {
    let after = &link[link.find("prog/xdp id ")? + "prog/xdp id ".len()..];
    after.split_whitespace().next()?.parse().ok()
}

/// Turns the kernel's BPF run-time statistics on while it lives and restores
/// the previous setting when dropped.
pub struct BpfStats {
    previous: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    /// Enables `kernel.bpf_stats_enabled` (root).
    pub fn enable() -> anyhow::Result<BpfStats> {
        let previous =
            fs::read_to_string(BPF_STATS).with_context(|| format!("read {BPF_STATS}"))?;
        fs::write(BPF_STATS, "1").with_context(|| format!("write {BPF_STATS}"))?;
        Ok(BpfStats { previous })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS, self.previous.trim());
    }
}

/// Number of CPUs this process may run on.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The kernel threads running `iface`'s NAPI (`napi/IFACE-ID`), by thread id.
pub fn napi_threads(iface: &str) -> Vec<i32> {
    let prefix = format!("napi/{iface}-");
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end().starts_with(&prefix))
        })
        .collect()
}

/// Pins thread `tid` (any process's) to `cpu`.
pub fn pin_thread(tid: i32, cpu: usize) -> anyhow::Result<()> {
    // SAFETY: plain libc calls on a zeroed cpu_set_t owned by this frame.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    anyhow::ensure!(
        rc == 0,
        "sched_setaffinity of thread {tid} to CPU {cpu}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Gives thread `tid` real-time priority (SCHED_FIFO 50), as the kernel's
/// receive softirq has over processes behind a NIC: a veth's receive ring
/// holds 256 frames, which a flood fills within a millisecond, so a NAPI
/// thread that waited for its time slice would drop legitimate packets that a
/// NIC's softirq would have taken.
pub fn make_real_time(tid: i32) -> anyhow::Result<()> {
    let param = libc::sched_param { sched_priority: 50 };
    // SAFETY: a valid sched_param owned by this frame.
    let rc = unsafe { libc::sched_setscheduler(tid, libc::SCHED_FIFO, &param) };
    anyhow::ensure!(
        rc == 0,
        "SCHED_FIFO for thread {tid}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Pins the calling thread, and the threads and processes it starts from now
/// on, to `cpu`.
pub fn pin_current_thread(cpu: usize) -> anyhow::Result<()> {
    // SAFETY: plain libc calls on a zeroed cpu_set_t owned by this frame.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    anyhow::ensure!(
        rc == 0,
        "sched_setaffinity to CPU {cpu}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}
