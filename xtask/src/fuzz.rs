//! `cargo xtask fuzz [TARGET] [--time SECONDS]`: the coverage-guided fuzz
//! targets of `gateway-user/fuzz` (cargo-fuzz, libFuzzer), one or all.
//!
//! Each target starts from its seed corpus in the repository
//! (`gateway-user/fuzz/corpus/TARGET`, read only) and a working corpus under
//! `target/fuzz/corpus/TARGET` that the run extends; a crash, a hang or a
//! failed invariant stops the run with the input saved under
//! `gateway-user/fuzz/artifacts/TARGET/` and a non-zero exit. Once fixed, the
//! input joins the seed corpus as `crash-WHAT`, so every later run (the short
//! ones `cargo xtask test` makes included) replays it, and a regression test
//! beside the code names it.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, bail};

/// What one target's run did.
struct Run {
    target: String,
    executions: u64,
    coverage: u64,
    seconds: f64,
}

/// Seconds per target of the short runs `cargo xtask test` makes.
pub(crate) const SMOKE_SECONDS: u64 = 20;

/// Runs `target` (or every target) for `seconds` each, or until `runs`
/// executions, then prints a table.
pub(crate) fn fuzz(
    root: &Path,
    target: Option<&str>,
    seconds: u64,
    runs: Option<u64>,
) -> anyhow::Result<()> {
    let dir = root.join("gateway-user/fuzz");
    let targets = match target {
        Some(t) => vec![t.to_string()],
        None => list(&dir)?,
    };
    build(&dir)?;
    let mut done = Vec::new();
    for t in &targets {
        done.push(run_target(root, &dir, t, seconds, runs)?);
    }
    println!(
        "\n{:<18} {:>14} {:>10} {:>8} {:>7}",
        "target", "executions", "exec/s", "cov", "s"
    );
    for r in &done {
        println!(
            "{:<18} {:>14} {:>10.0} {:>8} {:>7.0}",
            r.target,
            r.executions,
            r.executions as f64 / r.seconds.max(0.001),
            r.coverage,
            r.seconds
        );
    }
    Ok(())
}

fn cargo_fuzz(dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // cargo-fuzz passes nightly-only flags (sanitizers, coverage) to rustc.
    cmd.arg("fuzz")
        .env("RUSTC_BOOTSTRAP", "1")
        .current_dir(dir.join("../.."));
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_TARGET_DIR"] {
        cmd.env_remove(var);
    }
    cmd
}

fn list(dir: &Path) -> anyhow::Result<Vec<String>> {
    let out = cargo_fuzz(dir)
        .args(["list", "--fuzz-dir"])
        .arg(dir)
        .output()
        .context("running `cargo fuzz list` (is cargo-fuzz installed? `cargo xtask setup`)")?;
    if !out.status.success() {
        bail!("cargo fuzz list: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect())
}

fn build(dir: &Path) -> anyhow::Result<()> {
    let status = cargo_fuzz(dir)
        .args(["build", "--fuzz-dir"])
        .arg(dir)
        .status()
        .context("running `cargo fuzz build`")?;
    if !status.success() {
        bail!("cargo fuzz build failed: {status}");
    }
    Ok(())
}

/// The libFuzzer binary `cargo fuzz build` made for `target`.
fn binary(dir: &Path, target: &str) -> PathBuf {
    dir.join("target/x86_64-unknown-linux-gnu/release")
        .join(target)
}

fn run_target(
    root: &Path,
    dir: &Path,
    target: &str,
    seconds: u64,
    runs: Option<u64>,
) -> anyhow::Result<Run> {
    let work = root.join("target/fuzz/corpus").join(target);
    let seeds = dir.join("corpus").join(target);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    std::fs::create_dir_all(&seeds).with_context(|| format!("creating {}", seeds.display()))?;
    let artifacts = dir.join("artifacts").join(target);
    std::fs::create_dir_all(&artifacts)
        .with_context(|| format!("creating {}", artifacts.display()))?;
    match runs {
        Some(n) => println!("fuzz {target}: {n} executions or {seconds} s"),
        None => println!("fuzz {target}: {seconds} s"),
    }
    let started = Instant::now();
    // The binary itself, built once by `build`: `cargo fuzz run` would check
    // the build again for every target.
    let mut cmd = Command::new(binary(dir, target));
    if let Some(n) = runs {
        cmd.arg(format!("-runs={n}"));
    }
    let out = cmd
        .arg(format!("-max_total_time={seconds}"))
        .args(["-timeout=10", "-rss_limit_mb=4096", "-print_final_stats=1"])
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(&work)
        .arg(&seeds)
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("running fuzz target {target}"))?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "fuzz target {target} failed ({}); the input is under {}:\n{}",
            out.status,
            dir.join("artifacts").join(target).display(),
            tail.join("\n")
        );
    }
    Ok(Run {
        target: target.to_string(),
        executions: stat(&log, "stat::number_of_executed_units:"),
        coverage: last_cov(&log),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A `stat::NAME: N` line of libFuzzer's final statistics.
fn stat(log: &str, name: &str) -> u64 {
    log.lines()
        .find_map(|l| l.trim().strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The last `cov: N` libFuzzer reported.
fn last_cov(log: &str) -> u64 {
    log.lines()
        .rev()
        .find_map(|l| {
            let rest = l.split(" cov: ").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}
