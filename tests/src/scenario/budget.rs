//! Fixed CPU budgets from cgroup v1's `cpu` controller (`cpu.cfs_quota_us`),
//! so that each step of the flood scenario has a known bottleneck: the server
//! gets a share of its CPU, and the flood generator a share of the generator's
//! CPU, leaving the legitimate clients enough to keep the server busy.

use std::{fs, path::PathBuf};

use anyhow::Context;

/// Where cgroup v1's `cpu` hierarchy is mounted.
pub const CPU_CGROUPS: &str = "/sys/fs/cgroup/cpu";
/// The scheduling period the quotas are shares of, microseconds: short, so
/// that a budget spent early in a period stalls its work for milliseconds, not
/// for a tenth of a second.
const PERIOD_US: u64 = 10_000;

/// A cgroup with a CPU quota; removed (its tasks moved back to the root) when
/// dropped.
pub struct CpuBudget {
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
    /// Creates `name` under [`CPU_CGROUPS`] with `share` of one CPU (root).
    pub fn create(name: &str, share: f64) -> anyhow::Result<CpuBudget> {
        anyhow::ensure!(
            fs::metadata(format!("{CPU_CGROUPS}/cpu.cfs_quota_us")).is_ok(),
            "{CPU_CGROUPS}: no cgroup v1 cpu controller here; the flood benchmark gives each \
             party a fixed CPU budget with it"
        );
        anyhow::ensure!(
            (0.01..=1.0).contains(&share),
            "budget {share}: 0.01 to 1 CPU"
        );
        let dir = PathBuf::from(CPU_CGROUPS).join(name);
        if dir.exists() {
            release(&dir); // left by a run that was killed
        }
        fs::create_dir(&dir).with_context(|| format!("create cgroup {}", dir.display()))?;
        let budget = CpuBudget { dir, share };
        budget.write("cpu.cfs_period_us", &PERIOD_US.to_string())?;
        budget.limit(true)?;
        Ok(budget)
    }

    /// Applies the quota (`true`) or lifts it (`false`: as much CPU as the
    /// scheduler gives).
    pub fn limit(&self, on: bool) -> anyhow::Result<()> {
        let quota = if on {
            ((self.share * PERIOD_US as f64).round() as i64).to_string()
        } else {
            "-1".into()
        };
        self.write("cpu.cfs_quota_us", &quota)
    }

    fn write(&self, file: &str, value: &str) -> anyhow::Result<()> {
        let path = self.dir.join(file);
        fs::write(&path, value).with_context(|| format!("write {value} to {}", path.display()))
    }

    /// Moves a process, all its threads, into the budget.
    pub fn add_process(&self, pid: u32) -> anyhow::Result<()> {
        self.write("cgroup.procs", &pid.to_string())
    }

    /// Moves one thread into the budget.
    pub fn add_thread(&self, tid: i32) -> anyhow::Result<()> {
        self.write("tasks", &tid.to_string())
    }

    /// Moves the calling thread into the budget.
    pub fn enter(&self) -> anyhow::Result<()> {
        // SAFETY: gettid has no preconditions.
        self.add_thread(unsafe { libc::gettid() })
    }

    /// The throttling counters now.
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
fn release(dir: &std::path::Path) {
    if let Ok(tasks) = fs::read_to_string(dir.join("tasks")) {
        for tid in tasks.lines() {
            let _ = fs::write(format!("{CPU_CGROUPS}/tasks"), tid);
        }
    }
    let _ = fs::remove_dir(dir);
}

impl Drop for CpuBudget {
    fn drop(&mut self) {
        release(&self.dir);
    }
}
