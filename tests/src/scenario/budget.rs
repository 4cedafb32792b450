//! Fixed CPU budgets from the cgroup `cpu` controller, so that each step of
//! the flood scenario has a known bottleneck: the server gets a share of its
//! CPU, and the flood generator a share of the generator's CPU, leaving the
//! legitimate clients enough to keep the server busy.
//!
//! cgroup v1's `cpu` hierarchy (`cpu.cfs_quota_us`) where it is mounted, else
//! cgroup v2 (`cpu.max`, the controller enabled in the root's
//! `cgroup.subtree_control`). On v2 a thread can join only a threaded cgroup
//! of its own process's subtree, so a budget there takes whole processes and
//! [`CpuBudget::enter`] says, once, that the calling thread runs unbudgeted.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Once,
};

use anyhow::Context;

/// Where cgroup v1's `cpu` hierarchy is mounted.
pub const CPU_CGROUPS: &str = "/sys/fs/cgroup/cpu";
/// The scheduling period the quotas are shares of, microseconds: short, so
/// that a budget spent early in a period stalls its work for milliseconds, not
/// for a tenth of a second.
const PERIOD_US: u64 = 10_000;

/// The cgroup hierarchy that holds the `cpu` controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v1's `cpu` hierarchy, mounted here.
    V1(PathBuf),
    /// cgroup v2 with the `cpu` controller, mounted here.
    V2(PathBuf),
}

impl Hierarchy {
    /// v1's [`CPU_CGROUPS`] if mounted, else a cgroup2 mount that offers `cpu`.
    pub fn find() -> anyhow::Result<Hierarchy> {
        if fs::metadata(format!("{CPU_CGROUPS}/cpu.cfs_quota_us")).is_ok() {
            return Ok(Hierarchy::V1(CPU_CGROUPS.into()));
        }
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        mounts
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (_, at, kind) = (f.next()?, f.next()?, f.next()?);
                (kind == "cgroup2").then(|| PathBuf::from(at))
            })
            .find(|at| {
                fs::read_to_string(at.join("cgroup.controllers"))
                    .is_ok_and(|c| c.split_whitespace().any(|x| x == "cpu"))
            })
            .map(Hierarchy::V2)
            .with_context(|| {
                format!(
                    "no cgroup cpu controller: neither cgroup v1's {CPU_CGROUPS} nor a cgroup2 \
                     mount offering cpu; the flood benchmark gives each party a fixed CPU \
                     budget with it"
                )
            })
    }

    /// Where it is mounted: the root cgroup.
    pub fn root(&self) -> &Path {
        match self {
            Hierarchy::V1(p) | Hierarchy::V2(p) => p,
        }
    }

    /// The file a cgroup's threads are listed in and moved with.
    fn threads_file(&self) -> &'static str {
        match self {
            Hierarchy::V1(_) => "tasks",
            Hierarchy::V2(_) => "cgroup.threads",
        }
    }

    /// Short description, for messages and the bench's header.
    pub fn describe(&self) -> String {
        match self {
            Hierarchy::V1(p) => format!("cgroup v1 {}/*/cpu.cfs_quota_us", p.display()),
            Hierarchy::V2(p) => format!("cgroup v2 {}/*/cpu.max", p.display()),
        }
    }
}

/// A cgroup with a CPU quota; removed (its tasks moved back to the root) when
/// dropped.
pub struct CpuBudget {
    hierarchy: Hierarchy,
    dir: PathBuf,
    /// The quota, as a fraction of one CPU.
    pub share: f64,
}

/// Throttling counters of a budget (`cpu.stat`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Throttling {
    /// Scheduling periods in which the group had runnable tasks.
    pub periods: u64,
    /// Periods in which it ran out of quota.
    pub throttled: u64,
}

impl Throttling {
    /// The share of periods with work in which the budget ran out, since `earlier`.
    pub fn since(&self, earlier: &Throttling) -> f64 {
        let periods = self.periods.saturating_sub(earlier.periods);
        if periods == 0 {
            return 0.0;
        }
        self.throttled.saturating_sub(earlier.throttled) as f64 / periods as f64
    }
}

impl CpuBudget {
    /// Creates `name` in the [`Hierarchy`] found with `share` of one CPU (root).
    pub fn create(name: &str, share: f64) -> anyhow::Result<CpuBudget> {
        let hierarchy = Hierarchy::find()?;
        anyhow::ensure!(
            (0.01..=1.0).contains(&share),
            "budget {share}: 0.01 to 1 CPU"
        );
        if let Hierarchy::V2(root) = &hierarchy {
            let control = root.join("cgroup.subtree_control");
            let enabled = fs::read_to_string(&control).unwrap_or_default();
            if !enabled.split_whitespace().any(|c| c == "cpu") {
                fs::write(&control, "+cpu").with_context(|| {
                    format!("enable the cpu controller in {}", control.display())
                })?;
            }
        }
        remove_stale_budgets(&hierarchy);
        let dir = hierarchy.root().join(name);
        if dir.exists() {
            release(&hierarchy, &dir); // left by a run that was killed
        }
        fs::create_dir(&dir).with_context(|| format!("create cgroup {}", dir.display()))?;
        let budget = CpuBudget {
            hierarchy,
            dir,
            share,
        };
        if let Hierarchy::V1(_) = budget.hierarchy {
            budget.write("cpu.cfs_period_us", &PERIOD_US.to_string())?;
        }
        budget.limit(true)?;
        Ok(budget)
    }

    /// Where the budget's cgroup is and how it is limited.
    pub fn hierarchy(&self) -> &Hierarchy {
        &self.hierarchy
    }

    /// Applies the quota (`true`) or lifts it (`false`: as much CPU as the
    /// scheduler gives).
    pub fn limit(&self, on: bool) -> anyhow::Result<()> {
        let quota = ((self.share * PERIOD_US as f64).round() as i64).to_string();
        match (&self.hierarchy, on) {
            (Hierarchy::V1(_), true) => self.write("cpu.cfs_quota_us", &quota),
            (Hierarchy::V1(_), false) => self.write("cpu.cfs_quota_us", "-1"),
            (Hierarchy::V2(_), true) => self.write("cpu.max", &format!("{quota} {PERIOD_US}")),
            (Hierarchy::V2(_), false) => self.write("cpu.max", &format!("max {PERIOD_US}")),
        }
    }

    fn write(&self, file: &str, value: &str) -> anyhow::Result<()> {
        let path = self.dir.join(file);
        fs::write(&path, value).with_context(|| format!("write {value} to {}", path.display()))
    }

    /// Moves a process, all its threads, into the budget.
    pub fn add_process(&self, pid: u32) -> anyhow::Result<()> {
        self.write("cgroup.procs", &pid.to_string())
    }

    /// Moves one thread into the budget; `false` (said once per process) where
    /// cgroup v2 cannot take a thread apart from its process: it then runs
    /// unbudgeted.
    pub fn add_thread(&self, tid: i32) -> anyhow::Result<bool> {
        match (
            &self.hierarchy,
            self.write(self.hierarchy.threads_file(), &tid.to_string()),
        ) {
            (_, Ok(())) => Ok(true),
            (Hierarchy::V2(_), Err(e)) => {
                static SAID: Once = Once::new();
                SAID.call_once(|| {
                    eprintln!(
                        "!!! CPU BUDGET NOT APPLIED to a thread: cgroup v2 takes a thread only \
                         into a threaded cgroup of its own process ({e:#}); the thread runs \
                         unbudgeted, whole processes are still budgeted"
                    )
                });
                Ok(false)
            }
            (Hierarchy::V1(_), Err(e)) => Err(e),
        }
    }

    /// Moves the calling thread into the budget; see [`add_thread`](Self::add_thread).
    pub fn enter(&self) -> anyhow::Result<bool> {
        // SAFETY: gettid has no preconditions.
        self.add_thread(unsafe { libc::gettid() })
    }

    /// The throttling counters now (the same names in v1 and v2 `cpu.stat`).
    pub fn throttling(&self) -> Throttling {
        let text = fs::read_to_string(self.dir.join("cpu.stat")).unwrap_or_default();
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
                .unwrap_or(0)
        };
        Throttling {
            periods: field("nr_periods "),
            throttled: field("nr_throttled "),
        }
    }
}

/// Moves every task of `dir` back to the root group and removes it.
fn release(hierarchy: &Hierarchy, dir: &Path) {
    let (list, to) = match hierarchy {
        Hierarchy::V1(_) => ("tasks", "tasks"),
        Hierarchy::V2(_) => ("cgroup.procs", "cgroup.procs"),
    };
    if let Ok(tasks) = fs::read_to_string(dir.join(list)) {
        for id in tasks.lines() {
            let _ = fs::write(hierarchy.root().join(to), id);
        }
    }
    let _ = fs::remove_dir(dir);
}

/// Releases budgets named `PREFIX-PID-…` (as the bench and tests name them)
/// whose process has gone without dropping them (killed).
fn remove_stale_budgets(hierarchy: &Hierarchy) {
    let Ok(entries) = fs::read_dir(hierarchy.root()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut parts = name.split('-');
        let ours = matches!(parts.next(), Some("gwbench" | "gwtest"));
        let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid.filter(|_| ours)
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            eprintln!("CPU budget {name} left by process {pid}, which has gone: removed");
            release(hierarchy, &entry.path());
        }
    }
}

impl Drop for CpuBudget {
    fn drop(&mut self) {
        release(&self.hierarchy, &self.dir);
    }
}
