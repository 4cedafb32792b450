//! The soak: one store-mode gateway on loopback under steady traffic and
//! configuration churn, sampled from outside, then judged for leaks.
//!
//! - Traffic: a client thread runs `curl` against a stable hostname, 20
//!   requests a connection (one new TLS connection, 19 keep-alive requests).
//! - Churn: another thread adds a hostname pointed at the origin, sends it a
//!   request (so it gets a request series and an origin pool), points it at
//!   the origin by another URL, raises its minimum and deletes it: four
//!   changes through the admin API per round, as fast as the API takes them
//!   or at a given rate.
//! - Samples every 2 s from `/proc` and `/metrics`: RSS, open fds, threads,
//!   metric series.
//!
//! After the load, it waits `settle` (past the origin pool's 60 s idle
//! timeout), samples again and judges: the RSS slope over the last 80% of the
//! run, fds and threads back to their baseline (taken after set-up), series
//! bounded by the live configuration (back to the baseline's count: every
//! churned hostname is deleted), and no unexpected error.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::Context;
use serde::Serialize;
use serde_json::json;

use crate::{
    control::StoreGateway,
    local::{Background, TempDir, free_port, origin},
};

/// What a soak run is given.
pub struct SoakOptions {
    /// The `gateway` binary.
    pub gateway: PathBuf,
    /// How long the load runs.
    pub duration: Duration,
    /// How long to wait after the load before the last sample.
    pub settle: Duration,
    /// Where the table, JSON and plot go.
    pub out: PathBuf,
    /// The largest RSS slope judged acceptable, KiB a minute.
    pub max_slope_kib_per_min: f64,
    /// The shortest churn round (four changes); zero: as fast as the admin
    /// API takes them (a leak per change shows most there).
    pub churn_round: Duration,
}

/// One sample of the gateway process.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sample {
    /// Seconds since the load started (negative: before).
    pub t: f64,
    /// Resident set, KiB.
    pub rss_kib: u64,
    /// Open file descriptors.
    pub fds: u64,
    /// Threads.
    pub threads: u64,
    /// Series in `/metrics`.
    pub series: u64,
    /// Configuration changes made so far.
    pub changes: u64,
    /// Requests answered so far.
    pub requests: u64,
}

/// One judgement.
#[derive(Debug, Serialize)]
pub struct Judgement {
    /// What is judged.
    pub name: String,
    /// The measured value, in words.
    pub value: String,
    /// Whether it holds.
    pub ok: bool,
}

/// A soak's outcome.
#[derive(Debug, Serialize)]
pub struct SoakReport {
    /// Every sample.
    pub samples: Vec<Sample>,
    /// The baseline (after set-up, before the load).
    pub baseline: Sample,
    /// After the load and the settle time.
    pub after: Sample,
    /// Unexpected errors, with what they were (the first 20).
    pub errors: Vec<String>,
    /// The judgements.
    pub judgements: Vec<Judgement>,
}

impl SoakReport {
    /// Whether every judgement holds.
    pub fn passed(&self) -> bool {
        self.judgements.iter().all(|j| j.ok)
    }
}

/// Counters the load threads share.
#[derive(Default)]
struct Progress {
    stop: AtomicBool,
    changes: AtomicU64,
    requests: AtomicU64,
    errors: std::sync::Mutex<Vec<String>>,
}

impl Progress {
    fn error(&self, what: String) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        errors.push(what);
    }
}

/// Runs the soak and writes `soak.json`, `soak.txt` and `soak.png` under `out`.
pub fn run(options: &SoakOptions) -> anyhow::Result<SoakReport> {
    let dir = TempDir::new("soak");
    let origin_port = free_port();
    let _origin: Background = origin(&dir.0, origin_port);
    let gateway = Arc::new(StoreGateway::start(
        &options.gateway,
        &dir.0.join("data"),
        None,
        &[],
    ));
    let zone = gateway.zone();
    let stable = "stable.soak.test";
    create_hostname(
        &gateway,
        &zone,
        stable,
        &format!("http://127.0.0.1:{origin_port}"),
    )?;
    let progress = Arc::new(Progress::default());
    // Warm up: the stable hostname's series and pool exist in the baseline.
    traffic_round(&gateway, stable, &progress);
    thread::sleep(Duration::from_secs(2));
    let pid = gateway.process.pid();
    let baseline = sample(pid, &gateway, -0.0, &progress)?;
    let start = Instant::now();
    let traffic = {
        let (g, p) = (gateway.clone(), progress.clone());
        thread::spawn(move || {
            while !p.stop.load(Ordering::Relaxed) {
                traffic_round(&g, stable, &p);
            }
        })
    };
    let churn = {
        let (g, p, z) = (gateway.clone(), progress.clone(), zone.clone());
        let least = options.churn_round;
        thread::spawn(move || {
            let mut round = 0u64;
            while !p.stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                churn_round(&g, &z, round, origin_port, &p);
                round += 1;
                thread::sleep(least.saturating_sub(began.elapsed()));
            }
        })
    };
    let mut samples = vec![baseline];
    while start.elapsed() < options.duration {
        thread::sleep(Duration::from_secs(2));
        samples.push(sample(
            pid,
            &gateway,
            start.elapsed().as_secs_f64(),
            &progress,
        )?);
    }
    progress.stop.store(true, Ordering::Relaxed);
    let _ = traffic.join();
    let _ = churn.join();
    let load_end = start.elapsed().as_secs_f64();
    thread::sleep(options.settle);
    let after = sample(pid, &gateway, start.elapsed().as_secs_f64(), &progress)?;
    samples.push(after);
    let errors = progress.errors.lock().unwrap().clone();
    let judgements = judge(options, &samples, load_end, baseline, after, &errors);
    let report = SoakReport {
        samples,
        baseline,
        after,
        errors: errors.into_iter().take(20).collect(),
        judgements,
    };
    write_outputs(&options.out, &report)?;
    Ok(report)
}

fn create_hostname(
    g: &StoreGateway,
    zone: &str,
    name: &str,
    origin: &str,
) -> anyhow::Result<String> {
    let (status, v) = g.call(
        "POST",
        &format!("zones/{zone}/custom_hostnames"),
        Some(&json!({"hostname": name, "custom_origin_server": origin})),
    );
    anyhow::ensure!(status == 200, "creating {name}: {status} {v}");
    Ok(v["result"]["id"].as_str().unwrap_or_default().to_string())
}

/// One curl: 20 requests over one connection; counts the 200s.
fn traffic_round(g: &StoreGateway, host: &str, progress: &Progress) {
    request(g, host, 20, progress);
}

fn request(g: &StoreGateway, host: &str, n: usize, progress: &Progress) {
    let url = format!("https://{host}:{}/soak", g.tls_port);
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-w", "%{http_code}\n"])
        .args(["--resolve", &format!("{host}:{}:127.0.0.1", g.tls_port)])
        .arg("--cacert")
        .arg(g.server_ca())
        .args((0..n).flat_map(|_| ["-o", "/dev/null", url.as_str()]))
        .output();
    let Ok(out) = out else {
        progress.error("curl did not run".into());
        return;
    };
    for code in String::from_utf8_lossy(&out.stdout).lines() {
        if code == "200" {
            progress.requests.fetch_add(1, Ordering::Relaxed);
        } else if !progress.stop.load(Ordering::Relaxed) {
            progress.error(format!("GET {host}: status {code}"));
        }
    }
}

/// Add, use, repoint, tighten and delete one hostname.
fn churn_round(g: &StoreGateway, zone: &str, round: u64, origin_port: u16, p: &Progress) {
    let name = format!("churn-{round}.soak.test");
    let base = format!("zones/{zone}/custom_hostnames");
    let id = match create_hostname(g, zone, &name, &format!("http://127.0.0.1:{origin_port}")) {
        Ok(id) => id,
        Err(e) => return p.error(format!("{e:#}")),
    };
    p.changes.fetch_add(1, Ordering::Relaxed);
    request(g, &name, 1, p);
    let steps = [
        json!({"custom_origin_server": format!("http://localhost:{origin_port}")}),
        json!({"ssl": {"settings": {"min_tls_version": "1.3"}}}),
    ];
    for body in steps {
        let (status, v) = g.call("PATCH", &format!("{base}/{id}"), Some(&body));
        if status != 200 {
            p.error(format!("PATCH {name}: {status} {v}"));
        }
        p.changes.fetch_add(1, Ordering::Relaxed);
    }
    let (status, v) = g.call("DELETE", &format!("{base}/{id}"), None);
    if status != 200 {
        p.error(format!("DELETE {name}: {status} {v}"));
    }
    p.changes.fetch_add(1, Ordering::Relaxed);
}

fn sample(pid: u32, g: &StoreGateway, t: f64, p: &Progress) -> anyhow::Result<Sample> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("the gateway (pid {pid}) is gone"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let fds = fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
    let series = g
        .metrics()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .count() as u64;
    Ok(Sample {
        t,
        rss_kib: field("VmRSS:"),
        fds,
        threads: field("Threads:"),
        series,
        changes: p.changes.load(Ordering::Relaxed),
        requests: p.requests.load(Ordering::Relaxed),
    })
}

/// Least-squares slope of RSS (KiB a minute) over samples in `[from, to]` s.
pub fn rss_slope(samples: &[Sample], from: f64, to: f64) -> f64 {
    let points: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.t >= from && s.t <= to)
        .map(|s| (s.t / 60.0, s.rss_kib as f64))
        .collect();
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

fn judge(
    options: &SoakOptions,
    samples: &[Sample],
    load_end: f64,
    baseline: Sample,
    after: Sample,
    errors: &[String],
) -> Vec<Judgement> {
    let slope = rss_slope(samples, load_end * 0.2, load_end);
    let j = |name: &str, value: String, ok: bool| Judgement {
        name: name.into(),
        value,
        ok,
    };
    let last = samples
        .iter()
        .rev()
        .find(|s| s.t <= load_end)
        .copied()
        .unwrap_or(after);
    vec![
        j(
            "RSS slope, last 80% of the load",
            format!(
                "{slope:.1} KiB/min (at most {:.0})",
                options.max_slope_kib_per_min
            ),
            slope <= options.max_slope_kib_per_min,
        ),
        j(
            "open fds after the load",
            format!("{} (baseline {})", after.fds, baseline.fds),
            after.fds <= baseline.fds + 2,
        ),
        j(
            "threads after the load",
            format!("{} (baseline {})", after.threads, baseline.threads),
            after.threads <= baseline.threads + 2,
        ),
        j(
            "metric series after the load",
            format!(
                "{} (baseline {}, {} at most during the load)",
                after.series,
                baseline.series,
                samples.iter().map(|s| s.series).max().unwrap_or(0)
            ),
            after.series <= baseline.series + 5,
        ),
        j(
            "load made",
            format!("{} changes, {} requests", last.changes, last.requests),
            last.changes > 0 && last.requests > 0,
        ),
        j(
            "unexpected errors",
            errors.len().to_string(),
            errors.is_empty(),
        ),
    ]
}

fn write_outputs(out: &Path, report: &SoakReport) -> anyhow::Result<()> {
    fs::create_dir_all(out)?;
    fs::write(out.join("soak.json"), serde_json::to_vec_pretty(report)?)?;
    let table = table(report);
    fs::write(out.join("soak.txt"), &table)?;
    print!("{table}");
    plot(&out.join("soak.png"), &report.samples)?;
    println!(
        "soak: wrote soak.json, soak.txt and soak.png under {}",
        out.display()
    );
    Ok(())
}

/// The samples about every 30 s, then the judgements.
pub fn table(report: &SoakReport) -> String {
    let mut s = format!(
        "{:>7} {:>9} {:>5} {:>7} {:>7} {:>8} {:>9}\n",
        "t s", "RSS KiB", "fds", "threads", "series", "changes", "requests"
    );
    let mut next = f64::MIN;
    let n = report.samples.len();
    for (i, x) in report.samples.iter().enumerate() {
        if x.t < next && i + 1 != n {
            continue;
        }
        next = x.t + 30.0;
        s.push_str(&format!(
            "{:>7.0} {:>9} {:>5} {:>7} {:>7} {:>8} {:>9}\n",
            x.t, x.rss_kib, x.fds, x.threads, x.series, x.changes, x.requests
        ));
    }
    for j in &report.judgements {
        let mark = if j.ok { "ok" } else { "FAIL" };
        s.push_str(&format!("{mark:>4}  {}: {}\n", j.name, j.value));
    }
    for e in &report.errors {
        s.push_str(&format!("error: {e}\n"));
    }
    s
}

fn plot(path: &Path, samples: &[Sample]) -> anyhow::Result<()> {
    use plotters::prelude::*;
    crate::scenario::plot::register_font()?;
    let e = |e| anyhow::anyhow!("drawing {}: {e:?}", path.display());
    let root = BitMapBackend::new(path, (1000, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let t_max = samples.iter().map(|s| s.t).fold(1.0, f64::max);
    let rss_max = samples.iter().map(|s| s.rss_kib).max().unwrap_or(1) as f64 / 1024.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "gateway soak: RSS (MiB) and open fds over time",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .right_y_label_area_size(50)
        .build_cartesian_2d(0.0..t_max, 0.0..rss_max * 1.2)
        .map_err(e)?
        .set_secondary_coord(
            0.0..t_max,
            0.0..samples.iter().map(|s| s.fds).max().unwrap_or(1) as f64 * 1.5,
        );
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("RSS MiB")
        .draw()
        .map_err(e)?;
    chart
        .configure_secondary_axes()
        .y_desc("fds")
        .draw()
        .map_err(e)?;
    let points = |f: fn(&Sample) -> f64| -> Vec<(f64, f64)> {
        samples
            .iter()
            .filter(|s| s.t >= 0.0)
            .map(|s| (s.t, f(s)))
            .collect()
    };
    chart
        .draw_series(LineSeries::new(
            points(|s| s.rss_kib as f64 / 1024.0),
            &BLUE,
        ))
        .map_err(e)?
        .label("RSS MiB")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .draw_secondary_series(LineSeries::new(points(|s| s.fds as f64), &RED))
        .map_err(e)?
        .label("fds")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t: f64, rss_kib: u64) -> Sample {
        Sample {
            t,
            rss_kib,
            fds: 0,
            threads: 0,
            series: 0,
            changes: 0,
            requests: 0,
        }
    }

    #[test]
    fn the_slope_is_kib_a_minute_over_the_window() {
        let samples: Vec<Sample> = (0..=10)
            .map(|i| at(i as f64 * 60.0, 1000 + 50 * i))
            .collect();
        assert!((rss_slope(&samples, 0.0, 600.0) - 50.0).abs() < 1e-9);
        let flat: Vec<Sample> = (0..=10).map(|i| at(i as f64 * 60.0, 2000)).collect();
        assert_eq!(rss_slope(&flat, 120.0, 600.0), 0.0);
        assert_eq!(rss_slope(&flat[..1], 0.0, 600.0), 0.0);
    }
}
