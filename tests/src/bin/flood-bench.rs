//! `cargo xtask bench flood`: legitimate mTLS handshakes under floods of
//! sub-minimum ClientHellos (stateless at millions of packets per second, real
//! connections, and the evasive split hellos), spoofed SYNs and idle
//! connections, for the gateway with XDP (reset and drop modes, SYN cookies
//! where it has them), the gateway without XDP and Debian's nginx, in one
//! network-namespace lab: where each server breaks, what a refused hello costs
//! each, and the handshake rate against the machine's crypto bound. Prints
//! tables and the goals, writes every figure to JSON and plots them to PNG.
//!
//! Usage: see [`USAGE`]. Needs root. Everything it starts lives in the lab's
//! namespaces and cgroups and is removed at the end, on error and on Ctrl-C.

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use gateway_tests::{
    lab::Lab,
    scenario::{
        self, FloodKind, Settings, cpu,
        crypto::CryptoSpeed,
        goals, report,
        servers::{self, Fixtures, Origin, Server},
    },
};
use indicatif::{ProgressBar, ProgressStyle};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

struct Args {
    gateway: PathBuf,
    out: PathBuf,
    settings: Settings,
}

fn rate_list(flag: &str, value: &str) -> anyhow::Result<Vec<u64>> {
    let mut rates = value
        .split(',')
        .map(|r| match r.trim() {
            "max" => Ok(scenario::UNPACED),
            r => r.parse::<u64>().map_err(anyhow::Error::from),
        })
        .collect::<Result<Vec<u64>, _>>()
        .with_context(|| format!("{flag} {value}: comma-separated rates (or max)"))?;
    rates.retain(|r| *r > 0); // the no-flood step always runs first
    rates.sort_unstable();
    rates.dedup();
    anyhow::ensure!(!rates.is_empty(), "{flag}: at least one rate above 0");
    Ok(rates)
}

const USAGE: &str = "usage: flood-bench --gateway PATH [--out DIR] [--kinds \
stateless,syn,connections,two-segments,records,idle|all] [--servers \
gateway+xdp,gateway+xdp-cookies,gateway+xdp-drop,gateway-no-xdp,nginx] \
[--stateless-rates 10000,...,max] [--syn-rates 10000,...,max] [--connection-rates 1000,...] \
[--step-secs 4] [--concurrency 16] [--server-share 0.35] [--flood-share 0.5]";

/// A comma-separated list of keys, each one of `all`'s (or "all").
fn key_list<T: Copy>(
    flag: &str,
    value: &str,
    all: &[T],
    key: fn(T) -> &'static str,
) -> anyhow::Result<Vec<T>> {
    if value.trim() == "all" {
        return Ok(all.to_vec());
    }
    let keys: Vec<&str> = all.iter().map(|x| key(*x)).collect();
    value
        .split(',')
        .map(|k| {
            all.iter()
                .copied()
                .find(|x| key(*x) == k.trim())
                .with_context(|| format!("{flag}: unknown {k:?}, one of {}", keys.join(",")))
        })
        .collect()
}

fn parse_args() -> anyhow::Result<Args> {
    let mut settings = Settings::default();
    let (mut gateway, mut out) = (None, PathBuf::from("target/bench"));
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value; {USAGE}"))?;
        let share = |v: &str| -> anyhow::Result<f64> {
            let x: f64 = v
                .parse()
                .with_context(|| format!("{flag}: a fraction of a CPU"))?;
            anyhow::ensure!((0.05..=1.0).contains(&x), "{flag}: 0.05 to 1");
            Ok(x)
        };
        match flag.as_str() {
            "--gateway" => gateway = Some(PathBuf::from(value)),
            "--out" => out = PathBuf::from(value),
            "--stateless-rates" => settings.stateless_rates = rate_list(&flag, &value)?,
            "--syn-rates" => settings.syn_rates = rate_list(&flag, &value)?,
            "--servers" => settings.servers = key_list(&flag, &value, &Server::ALL, Server::key)?,
            "--connection-rates" => {
                settings.connection_rates = rate_list(&flag, &value)?;
                anyhow::ensure!(
                    settings.connection_rates.iter().all(|r| *r <= 50_000),
                    "--connection-rates: at most 50000 connections/s"
                );
            }
            "--kinds" => settings.kinds = key_list(&flag, &value, &FloodKind::ALL, FloodKind::key)?,
            "--step-secs" => {
                let secs: u64 = value.parse().context("--step-secs: whole seconds")?;
                anyhow::ensure!((1..=60).contains(&secs), "--step-secs: 1 to 60");
                settings.step = Duration::from_secs(secs);
            }
            "--concurrency" => {
                settings.concurrency = value.parse().context("--concurrency: a number")?;
                anyhow::ensure!(
                    (1..=512).contains(&settings.concurrency),
                    "--concurrency: 1 to 512"
                );
            }
            "--server-share" => settings.server_share = share(&value)?,
            "--flood-share" => settings.flood_share = share(&value)?,
            _ => bail!("unknown argument {flag}; {USAGE}"),
        }
    }
    let gateway = gateway.with_context(|| format!("--gateway is required; {USAGE}"))?;
    Ok(Args {
        gateway,
        out,
        settings,
    })
}

fn main() -> ExitCode {
    let started = Instant::now();
    let result = parse_args().and_then(|args| bench(args, started));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flood benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: Args, started: Instant) -> anyhow::Result<()> {
    gateway_tests::require_root("the flood benchmark (namespaces, XDP, nginx as root)");
    let mut settings = args.settings.clone();
    let cpus = cpu::cpus();
    if cpus < 2 {
        settings.server_cpu = 0;
    }
    cpu::pin_current_thread(settings.generator_cpu)?;
    raise_open_files_limit();
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;

    if !servers::gateway_has_syn_cookies(&args.gateway) {
        eprintln!(
            "!!! {} has no [xdp] syn_cookies (no syn_cookie_rate in the binary): the \
             gateway+xdp-cookies variant is not run, and gateway+xdp runs without the key",
            args.gateway.display()
        );
    }
    let mut lab = Lab::create()?;
    let fixtures = Fixtures::new(&lab.dir);
    let origin = Origin::start(&lab)?;
    let _bpf_stats = cpu::BpfStats::enable()
        .inspect_err(|e| {
            eprintln!(
                "!!! {e:#}: the XDP program's run time is counted only if \
                 kernel.bpf_stats_enabled is already 1 (else its CPU reads 0)"
            )
        })
        .ok();

    let speed = CryptoSpeed::measure();
    print_header(&settings);
    let background = scenario::background_busy();
    let busy: Vec<String> = background
        .iter()
        .enumerate()
        .map(|(i, b)| format!("CPU{i} {:.0}%", b * 100.0))
        .collect();
    println!(
        "Background load just before the run (1 s, nothing of ours running): {}{}\n",
        busy.join(", "),
        if background.iter().any(|b| *b > 0.1) {
            "  <- other work on this machine skews the figures"
        } else {
            ""
        }
    );
    let bar = progress_bar(&settings)?;
    let outcome = scenario::run(
        &mut lab,
        &fixtures,
        &args.gateway,
        &settings,
        |server, kind, rate, attempt| {
            if attempt == 1 {
                bar.inc(1);
            }
            bar.set_message(format!(
                "{}: {} {}{}",
                server.key(),
                kind.key(),
                scenario::kind::rate_label(rate),
                if attempt > 1 {
                    format!(", run {attempt} (other work was seen)")
                } else {
                    String::new()
                }
            ));
            !INTERRUPTED.load(Ordering::SeqCst)
        },
    );
    let outcome = match outcome {
        Ok(r) => r,
        Err(e) => {
            bar.abandon();
            if INTERRUPTED.load(Ordering::SeqCst) {
                bail!("interrupted; the lab is removed");
            }
            return Err(e).context(format!(
                "GATEWAY_LAB_KEEP_LOGS=1 keeps the lab's logs in {}",
                lab.dir.display()
            ));
        }
    };
    bar.finish_and_clear();
    drop(origin);
    drop(lab);
    report_all(&args, &settings, &outcome, speed, &background)?;
    println!(
        "wall time of the run: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A bar over the steps the run makes at most (ladders may stop early).
fn progress_bar(settings: &Settings) -> anyhow::Result<ProgressBar> {
    let bar = ProgressBar::new(scenario::max_steps(settings));
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps at most  {msg}",
        )
        .context("progress bar template")?,
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    Ok(bar)
}

/// What the run does and how the CPUs are shared, before it starts.
fn print_header(settings: &Settings) {
    println!(
        "Floods: {}.\n\
         Legitimate load: {conc} concurrent clients, TLS 1.3 full handshakes (ECDSA P-256) with a \
         client certificate, one GET per connection, {step:?} per step.\n\
         CPU: server CPU {scpu}: each server's processes within a budget of {ss:.0}% of it \
         ({cgroups}), the veth's receive path (threaded NAPI: XDP, the kernel's \
         TCP stack) the rest; generator CPU {gcpu}: the flood within a budget of {fs:.0}% of it, \
         the legitimate clients and the origin the rest.\n\
         All servers run at once (ports 443, 8443, 9443; the XDP program inspects 443 only); \
         the gateway+xdp modes are switched by rewriting its configuration. Each server's ladder \
         stops when its legitimate rate falls below 50% of no-flood or the generator saturates. \
         Goals are judged only on steps the server bounds.\n",
        settings
            .kinds
            .iter()
            .map(|k| k.describe())
            .collect::<Vec<_>>()
            .join("; "),
        conc = settings.concurrency,
        cgroups = scenario::budget::Hierarchy::find()
            .map(|h| h.describe())
            .unwrap_or_else(|e| format!("{e:#}")),
        step = settings.step,
        scpu = settings.server_cpu,
        gcpu = settings.generator_cpu,
        ss = 100.0 * settings.server_share,
        fs = 100.0 * settings.flood_share,
    );
}

fn report_all(
    args: &Args,
    settings: &Settings,
    outcome: &scenario::Outcome,
    speed: anyhow::Result<CryptoSpeed>,
    background: &[f64],
) -> anyhow::Result<()> {
    for (server, note) in &outcome.notes {
        println!("{:<17} {}", server.key(), server.describe());
        if !note.is_empty() {
            println!("{:<17} {note}", "");
        }
    }
    let series = report::series(&outcome.steps, &outcome.flood_only, &outcome.stops);
    for kind in &settings.kinds {
        println!("\n{}", report::table(&series, *kind));
    }
    println!("{}", report::capacity_table(&outcome.capacity));
    println!("{}", report::breaking_table(&series));
    println!("{}", report::flood_only_table(&series));
    println!("{}\n", report::DEFINITIONS);
    let speed = match speed {
        Ok(s) => Some(s),
        Err(e) => {
            println!("openssl speed failed, no crypto bound: {e:#}");
            None
        }
    };
    let goals = goals::goals(&series, &settings.kinds, &outcome.capacity, speed.as_ref());
    let headline = goals::headline(&series);
    if let Some(h) = &headline {
        println!("{h}\n");
    }
    println!(
        "Goals (reported, not asserted; judged only on steps the server bounds):\n{}",
        goals::goal_lines(&goals)
    );
    let json = serde_json::json!({
        "settings": {
            "step_seconds": settings.step.as_secs_f64(),
            "concurrency": settings.concurrency,
            "server_cpu": settings.server_cpu,
            "generator_cpu": settings.generator_cpu,
            "server_budget_share": settings.server_share,
            "flood_budget_share": settings.flood_share,
        },
        "background_cpu_busy_fraction_before": background,
        "definitions": report::DEFINITIONS,
        "crypto": speed.map(|s| serde_json::json!({
            "ecdsa_p256_sign_per_second": s.sign,
            "ecdsa_p256_verify_per_second": s.verify,
            "x25519_per_second": s.x25519,
            "mtls_handshakes_bound_per_core": s.handshakes_bound(),
        })),
        "series": report::series_json(&series),
        "capacity": outcome.capacity.iter().map(|st| serde_json::json!({
            "server": st.server.key(),
            "legit_handshakes_per_second": st.legit_rate,
            "server_process_cpu_seconds": st.process_cpu,
            "step_wall_seconds": st.wall,
            "handshakes_per_server_cpu_second": report::handshakes_per_core(st),
        })).collect::<Vec<_>>(),
        "headline": headline,
        "goals": goals.iter().map(|g| serde_json::json!({"goal": g.what, "value": g.value, "met": g.met})).collect::<Vec<_>>(),
    });
    let json_path = args.out.join("flood.json");
    let png_path = args.out.join("flood.png");
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("write {}", json_path.display()))?;
    let subtitle = format!(
        "{} legit mTLS clients; server budget {:.0}% of CPU {}; flood budget {:.0}% of CPU {}",
        settings.concurrency,
        100.0 * settings.server_share,
        settings.server_cpu,
        100.0 * settings.flood_share,
        settings.generator_cpu
    );
    scenario::plot::draw(&png_path, &series, &subtitle)?;
    println!("JSON: {}", absolute(&json_path).display());
    println!("PNG:  {}", absolute(&png_path).display());
    Ok(())
}

/// Lifts the soft limit on open files to the hard one: the flood keeps
/// thousands of connections open.
fn raise_open_files_limit() {
    // SAFETY: getrlimit/setrlimit on a valid, owned struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn absolute(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
