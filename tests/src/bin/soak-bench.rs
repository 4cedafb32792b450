//! `cargo xtask soak [--minutes N] [--changes-per-second N]`: one store-mode
//! gateway under traffic and configuration churn (default: as fast as the
//! admin API takes it) for N minutes (default 10), then judged for leaks; see
//! `gateway_tests::soak`. Writes `soak.json`, `soak.txt` and `soak.png` under
//! `--out` and exits non-zero if a judgement fails.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{Context, bail};
use gateway_tests::soak::{SoakOptions, run};

/// The RSS slope judged acceptable, KiB a minute: 1 MiB an hour (the
/// allocator's arenas still settle over the first minutes).
pub const MAX_SLOPE_KIB_PER_MIN: f64 = 17.0;

fn parse_args() -> anyhow::Result<SoakOptions> {
    let mut options = SoakOptions {
        gateway: PathBuf::from("target/release/gateway"),
        duration: Duration::from_secs(600),
        // Past the origin pool's 60 s idle timeout.
        settle: Duration::from_secs(65),
        out: PathBuf::from("target/bench"),
        max_slope_kib_per_min: MAX_SLOPE_KIB_PER_MIN,
        churn_round: Duration::ZERO,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--gateway" => options.gateway = value()?.into(),
            "--out" => options.out = value()?.into(),
            "--minutes" => {
                let minutes: f64 = value()?.parse().context("--minutes N")?;
                anyhow::ensure!(minutes > 0.0, "--minutes must be above 0");
                options.duration = Duration::from_secs_f64(minutes * 60.0);
            }
            "--changes-per-second" => {
                let rate: f64 = value()?.parse().context("--changes-per-second N")?;
                anyhow::ensure!(rate > 0.0, "--changes-per-second must be above 0");
                // A round makes four changes.
                options.churn_round = Duration::from_secs_f64(4.0 / rate);
            }
            other => bail!(
                "unknown argument {other} (--minutes N, --changes-per-second N, --gateway PATH, \
                 --out DIR)"
            ),
        }
    }
    Ok(options)
}

fn main() -> ExitCode {
    let result = parse_args().and_then(|o| run(&o));
    match result {
        Ok(report) if report.passed() => ExitCode::SUCCESS,
        Ok(_) => {
            eprintln!("soak: a judgement failed (see above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("soak: {e:#}");
            ExitCode::FAILURE
        }
    }
}
