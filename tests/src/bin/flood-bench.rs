//! `cargo xtask bench flood`: legitimate mTLS handshakes under a flood of
//! sub-minimum ClientHellos, for the gateway with XDP, the gateway without XDP
//! and Debian's nginx, in one network-namespace lab; prints a table, writes
//! every figure to JSON and plots them to PNG.
//!
//! Usage: `flood-bench --gateway PATH [--out DIR] [--rates 0,500,1000]
//! [--step-secs 6] [--concurrency 16]`. Needs root. Everything it starts lives
//! in the lab's namespaces and is removed at the end, on error and on Ctrl-C.

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
        self, Server, Settings, cpu,
        report::{self, Series},
        servers::{Fixtures, Origin},
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

fn parse_args() -> anyhow::Result<Args> {
    let mut settings = Settings::default();
    let (mut gateway, mut out) = (None, PathBuf::from("target/bench"));
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--gateway" => gateway = Some(PathBuf::from(value)),
            "--out" => out = PathBuf::from(value),
            "--rates" => {
                settings.rates = value
                    .split(',')
                    .map(|r| r.trim().parse::<u64>())
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("--rates {value}: comma-separated integers"))?;
                if !settings.rates.contains(&0) {
                    settings.rates.insert(0, 0); // the baseline every figure is relative to
                }
                settings.rates.sort_unstable();
                settings.rates.dedup();
            }
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
            _ => bail!(
                "unknown argument {flag}; usage: flood-bench --gateway PATH [--out DIR] \
                 [--rates 0,500,1000] [--step-secs 6] [--concurrency 16]"
            ),
        }
    }
    anyhow::ensure!(
        settings.rates.iter().all(|r| *r <= 50_000),
        "--rates: at most 50000 connections/s"
    );
    let gateway = gateway.context("--gateway PATH-TO-GATEWAY-BINARY is required")?;
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
    let mut settings = args.settings;
    let cpus = cpu::cpus();
    if cpus < 2 {
        settings.server_cpu = 0;
    }
    cpu::pin_current_thread(settings.generator_cpu)?;
    raise_open_files_limit();
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;

    let mut lab = Lab::create()?;
    scenario::prepare_lab(&lab, &settings)?;
    let fixtures = Fixtures::new(&lab.dir);
    let origin = Origin::start(&lab)?;
    let _bpf_stats = cpu::BpfStats::enable()?;

    let header = format!(
        "Flood: connection flood (real TCP connections to {server}:443, each sending one TLS 1.0/1.1 \
         ClientHello and waiting for the server to end it; one thread, non-blocking sockets); no \
         stateless flood.\n\
         Legitimate load: {conc} concurrent clients, TLS 1.3 full handshakes (ECDSA P-256) with a \
         client certificate, one GET per connection, {step:?} per step.\n\
         Pinning: server on CPU {scpu}; legitimate load, flood and origin on CPU {gcpu} \
         ({cpus} CPUs online).\n\
         Lab: two network namespaces joined by a veth pair; each side's receive path steered (RPS) \
         to its own CPU.",
        server = gateway_tests::lab::SERVER_V4,
        conc = settings.concurrency,
        step = settings.step,
        scpu = settings.server_cpu,
        gcpu = settings.generator_cpu,
    );
    println!("{header}\n");
    let background = scenario::background_busy();
    let busy: Vec<String> = background
        .iter()
        .enumerate()
        .map(|(i, b)| format!("CPU{i} {:.0}%", b * 100.0))
        .collect();
    println!(
        "Background load just before the run (1 s, nothing of ours running): {}{}",
        busy.join(", "),
        if background.iter().any(|b| *b > 0.1) {
            "  <- other work on this machine skews the figures"
        } else {
            ""
        }
    );
    println!(
        "A step during which other work takes more than {:.0}% of a CPU is run again \
         (at most {} runs; the quietest is kept).",
        scenario::NOISE_THRESHOLD * 100.0,
        settings.max_attempts
    );
    println!(
        "All three servers run at once (ports 443, 8443, 9443; the XDP program inspects 443 \
         only); the steps alternate between them within each flood rate.\n"
    );
    let total = (Server::ALL.len() * (settings.rates.len() + 1)) as u64;
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps  {msg}",
        )
        .context("progress bar template")?,
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut done = 0;
    let outcome = scenario::run(
        &mut lab,
        &fixtures,
        &args.gateway,
        &settings,
        |server, rate, attempt| {
            if attempt == 1 {
                bar.set_position(done);
                done += 1;
                bar.set_message(format!("{}: flood {rate}/s", server.key()));
            } else {
                bar.set_message(format!(
                    "{}: flood {rate}/s, run {attempt} (other work was seen on the CPUs)",
                    server.key()
                ));
            }
            !INTERRUPTED.load(Ordering::SeqCst)
        },
    );
    let scenario::Outcome {
        notes,
        steps,
        flood_only,
    } = match outcome {
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

    let per_server: Vec<(Server, String, Vec<scenario::Step>)> = notes
        .into_iter()
        .map(|(server, note)| {
            let mine = steps
                .iter()
                .filter(|s| s.server == server)
                .cloned()
                .collect();
            (server, note, mine)
        })
        .collect();
    let series: Vec<Series> = per_server
        .iter()
        .map(|(server, note, steps)| Series {
            server: *server,
            note: note.clone(),
            steps,
            flood_only: flood_only.iter().find(|s| s.server == *server),
        })
        .collect();
    for s in &series {
        println!("{:<15} {}", s.server.key(), s.server.describe());
        if !s.note.is_empty() {
            println!("{:<15} {}", "", s.note);
        }
    }
    println!("\n{}", report::table(&series));
    println!("{}\n", report::COLUMNS);
    println!("{}", report::flood_only_table(&series));
    println!("{}\n", report::COST_DEFINITION);
    let goals = report::goals(&series);
    println!(
        "Goals (reported, not asserted):\n{}",
        report::goal_lines(&goals)
    );

    let json_path = args.out.join("flood.json");
    let png_path = args.out.join("flood.png");
    let json = report::json(&settings, &series, &goals, &background);
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("write {}", json_path.display()))?;
    let subtitle = format!(
        "connection flood of TLS 1.0/1.1 hellos; {} legit mTLS clients; server on CPU {}, generators on CPU {}",
        settings.concurrency, settings.server_cpu, settings.generator_cpu
    );
    scenario::plot::draw(&png_path, &series, &subtitle)?;
    println!("JSON: {}", absolute(&json_path).display());
    println!("PNG:  {}", absolute(&png_path).display());
    println!(
        "wall time of the run: {:.0} s",
        started.elapsed().as_secs_f64()
    );
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
