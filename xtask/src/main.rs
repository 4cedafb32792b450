//! Project tasks, run as `cargo xtask <task>`.
//!
//! This crate depends on nothing of the gateway's, so it builds on a machine
//! that does not yet have the eBPF toolchain, and `setup` can install it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

mod deb;
mod fuzz;

/// Tasks for the gateway's developers and CI.
#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build and the tests need (idempotent; root).
    Setup,
    /// Set up, build, and show the XDP filter refusing old TLS clients in a
    /// network-namespace lab while TLS 1.2 and 1.3 clients get through.
    Demo,
    /// Set up, then check formatting, run clippy, run every test, build and
    /// check the Debian package, and run every fuzz target briefly (the last
    /// two skipped, saying so, when a filter is given).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Run the coverage-guided fuzz targets (one, or all of them).
    Fuzz {
        /// The target (default: every target in gateway-user/fuzz).
        target: Option<String>,
        /// Seconds per target (at most).
        #[arg(long, default_value_t = 30)]
        time: u64,
        /// Stop a target after this many executions (default: run for the time).
        #[arg(long)]
        runs: Option<u64>,
    },
    /// Build the Debian package (target/debian/gateway_VERSION_amd64.deb)
    /// and check it: contents, lintian, the systemd unit.
    Deb,
    /// Soak one store-mode gateway under traffic and configuration churn, and
    /// judge it for leaks (RSS slope, fds, threads, metric series, errors).
    Soak {
        /// Minutes of load.
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
        /// Configuration changes a second at most (default: as fast as the
        /// admin API takes them).
        #[arg(long)]
        changes_per_second: Option<f64>,
    },
    /// Run a benchmark.
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// The XDP filter's ns per packet against a bare XDP_PASS program.
    Xdp,
    /// Full mTLS handshakes per second and latency, the gateway against nginx.
    Tls,
    /// Firewall rule evaluation time per request.
    Rules,
    /// What a change costs as the store grows: start-up, RSS per hostname,
    /// change latency through the admin API and handshake latency, at 1,000,
    /// 10,000 and 100,000 hostnames (table and JSON).
    Control {
        /// Extra arguments for control-bench (e.g. --sizes 1000,10000 --changes 50).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Fleet mode: propagation p50/p99 from a change's answer to its install
    /// on every node of three, and etcd transactions per change, at 1,000
    /// and 100,000 hostnames, on a real etcd cluster in a lab (table, JSON).
    Fleet {
        /// Extra arguments for fleet-bench (e.g. --sizes 1000 --changes 20).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Legitimate mTLS handshakes under floods of old hellos (stateless at
    /// millions of packets/s, connections, split hellos), spoofed SYNs and
    /// idle connections to each server's breaking point: the gateway with XDP
    /// (reset, drop, SYN cookies), without it, and nginx, in a lab (tables,
    /// goals judged on server-bound steps, JSON, PNG).
    Flood {
        /// Extra arguments for flood-bench: --kinds
        /// stateless,syn,connections,two-segments,records,idle|all, --servers
        /// gateway+xdp,gateway+xdp-cookies,gateway+xdp-drop,gateway-no-xdp,nginx,
        /// --stateless-rates / --syn-rates 100000,max, --connection-rates
        /// 1000,4000, --step-secs 2 (see README.md).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let root = workspace_root();
    match Cli::parse().task {
        Task::Setup => setup(&root),
        Task::Demo => {
            setup(&root)?;
            cargo(
                &root,
                &[
                    "build",
                    "--quiet",
                    "-p",
                    "gateway-user",
                    "-p",
                    "gateway-tests",
                    "--bins",
                ],
            )?;
            let bin = target_dir(&root).join("debug");
            run(Command::new(bin.join("lab-demo"))
                .arg("--gateway")
                .arg(bin.join("gateway")))
        }
        Task::Test { args } => {
            setup(&root)?;
            cargo(&root, &["fmt", "--all", "--check"])?;
            cargo(
                &root,
                &[
                    "fmt",
                    "--manifest-path",
                    "gateway-ebpf/Cargo.toml",
                    "--check",
                ],
            )?;
            cargo(
                &root,
                &[
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--quiet",
                    "--",
                    "-D",
                    "warnings",
                ],
            )?;
            let mut test = vec!["test", "--workspace"];
            if !args.is_empty() {
                test.push("--");
                test.extend(args.iter().map(String::as_str));
            }
            cargo(&root, &test)?;
            if args.is_empty() {
                deb::deb(&root, &target_dir(&root))?;
                fuzz::fuzz(&root, None, fuzz::SMOKE_SECONDS, None)
            } else {
                println!("package check and fuzz smoke runs skipped: a test filter was given");
                Ok(())
            }
        }
        Task::Deb => {
            setup(&root)?;
            deb::deb(&root, &target_dir(&root)).map(drop)
        }
        Task::Fuzz { target, time, runs } => {
            setup(&root)?;
            fuzz::fuzz(&root, target.as_deref(), time, runs)
        }
        Task::Soak {
            minutes,
            changes_per_second,
        } => {
            setup(&root)?;
            let mut args = vec!["--minutes".to_string(), minutes.to_string()];
            if let Some(rate) = changes_per_second {
                args.extend(["--changes-per-second".into(), rate.to_string()]);
            }
            bench_bin(&root, "soak", &args)
        }
        Task::Bench { bench } => {
            setup(&root)?;
            match bench {
                Bench::Xdp => cargo(&root, &["bench", "-p", "gateway-user", "--bench", "xdp"]),
                Bench::Tls => cargo(&root, &["bench", "-p", "gateway-tests", "--bench", "tls"]),
                Bench::Rules => cargo(&root, &["bench", "-p", "gateway-user", "--bench", "rules"]),
                Bench::Control { args } => bench_bin(&root, "control", &args),
                Bench::Flood { args } => bench_bin(&root, "flood", &args),
                Bench::Fleet { args } => bench_bin(&root, "fleet", &args),
            }
        }
    }
}

/// Builds and runs `NAME-bench` (release) against the release gateway, with
/// its results under `target/bench`.
fn bench_bin(root: &Path, name: &str, args: &[String]) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let bench = format!("{name}-bench");
    release_bins(root, &["gateway", &bench])?;
    let target = target_dir(root);
    run(Command::new(target.join("release").join(&bench))
        .arg("--gateway")
        .arg(target.join("release/gateway"))
        .arg("--out")
        .arg(target.join("bench"))
        .args(args))?;
    println!(
        "bench {name}: built and ran in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Builds release binaries of the gateway and the test crate.
pub(crate) fn release_bins(root: &Path, bins: &[&str]) -> anyhow::Result<()> {
    let mut args = vec![
        "build",
        "--release",
        "--quiet",
        "-p",
        "gateway-user",
        "-p",
        "gateway-tests",
    ];
    for bin in bins {
        args.extend(["--bin", bin]);
    }
    cargo(root, &args)
}

fn setup(root: &Path) -> anyhow::Result<()> {
    run(Command::new("bash").arg(root.join("scripts/setup.sh")))
}

fn cargo(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run(Command::new(cargo).args(args).current_dir(root))
}

pub(crate) fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}
