//! `cargo xtask bench fleet`: how fast a change reaches every node of a
//! fleet, and what it costs etcd. For each size, three gateways run in their
//! own namespaces (XDP on their veths) on a real three-member etcd cluster;
//! the configuration is bulk-loaded straight into etcd (`size - 1` hostnames
//! besides the default one, with certificates from the server CA and sealed
//! keys, as the API writes them); the nodes start from it; then hostnames are
//! added through the nodes in turn, and for each the bench measures the time
//! from the API's answer (which names the revision, `X-Gateway-Revision`) to
//! the last node's install (its `gateway_config_revision` reaching it).
//! Transactions per change are counted from the guard row's version (every
//! change writes it once) and from etcd's revisions.
//!
//! Prints a table and writes `fleet.json` under `--out`.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use etcd_client::{GetOptions, Txn, TxnOp};
use gateway::control::{
    backend::fleet::{Fleet as Handle, FleetOptions, etcd::EtcdOptions, rows, sync},
    new_hostname,
};
use gateway_tests::fleet_gateway::{Fleet, METRICS_PORT};
use serde_json::json;

/// Options.
struct Args {
    gateway: PathBuf,
    out: PathBuf,
    sizes: Vec<usize>,
    changes: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        gateway: PathBuf::from("target/release/gateway"),
        out: PathBuf::from("target/bench"),
        sizes: vec![1_000, 100_000],
        changes: 50,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--gateway" => args.gateway = value()?.into(),
            "--out" => args.out = value()?.into(),
            "--sizes" => {
                args.sizes = value()?
                    .split(',')
                    .map(|s| s.trim().replace('_', "").parse())
                    .collect::<Result<_, _>>()
                    .context("--sizes N,N,…")?
            }
            "--changes" => args.changes = value()?.parse()?,
            other => bail!(
                "unknown argument {other:?} (--gateway BIN --out DIR --sizes N,… --changes N)"
            ),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    match parse_args().and_then(|a| bench(&a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One size's figures.
struct Row {
    hostnames: usize,
    load_s: f64,
    start_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    config_txns_per_change: f64,
    etcd_revisions_per_change: f64,
}

fn bench(args: &Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let mut rows = Vec::new();
    for &n in &args.sizes {
        let row = measure(args, n)?;
        println!(
            "{} hostnames: loaded in {:.1} s, nodes started in {:.1} s, propagation p50 {:.1} ms, p99 {:.1} ms",
            row.hostnames, row.load_s, row.start_s, row.p50_ms, row.p99_ms
        );
        rows.push(row);
    }
    println!();
    println!(
        "{:>9} {:>7} {:>8} {:>8} {:>8} {:>8} {:>12} {:>12}",
        "hostnames",
        "load s",
        "start s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "txns/change",
        "revs/change"
    );
    for r in &rows {
        println!(
            "{:>9} {:>7.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>12.2} {:>12.2}",
            r.hostnames,
            r.load_s,
            r.start_s,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.config_txns_per_change,
            r.etcd_revisions_per_change
        );
    }
    println!(
        "target: p99 ≤ 500 ms, one etcd transaction per change (revs/change also counts the \
         nodes' own reports, rewritten at most once a second)"
    );
    let json = json!({
        "nodes": 3,
        "changes": args.changes,
        "sizes": rows.iter().map(|r| json!({
            "hostnames": r.hostnames, "load_s": r.load_s, "start_s": r.start_s,
            "propagation_p50_ms": r.p50_ms, "propagation_p99_ms": r.p99_ms,
            "propagation_max_ms": r.max_ms,
            "config_txns_per_change": r.config_txns_per_change,
            "etcd_revisions_per_change": r.etcd_revisions_per_change,
        })).collect::<Vec<_>>(),
    });
    let path = args.out.join("fleet.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&json)?)?;
    println!("wrote {}", path.display());
    Ok(())
}

fn measure(args: &Args, n: usize) -> anyhow::Result<Row> {
    let mut fleet = Fleet::start(&args.gateway, 3)?;
    for k in 1..=3 {
        fleet.stop_node(k)?;
    }
    let rt = tokio::runtime::Runtime::new()?;
    let handle = Handle::new(
        FleetOptions {
            etcd: EtcdOptions {
                endpoints: fleet
                    .lab
                    .loopback_endpoints()
                    .split(',')
                    .map(String::from)
                    .collect(),
                ca: None,
                identity: None,
            },
            prefix: "/gateway".into(),
            master_key: fleet.lab.dir.join("master.key"),
            node: "bench".into(),
        },
        &prometheus::Registry::new(),
    )?;
    let started = Instant::now();
    rt.block_on(bulk_load(&handle, n.saturating_sub(1)))?;
    let load_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    for k in 1..=3 {
        fleet.start_node(k)?;
    }
    let start_s = started.elapsed().as_secs_f64();
    fleet.converged(&[1, 2, 3], Duration::from_secs(60))?;
    let (guard_before, rev_before) = rt.block_on(guard_version(&handle))?;
    let mut lags = Vec::new();
    for i in 0..args.changes {
        let via = i % 3 + 1;
        let revision = add_host(&fleet, via, &format!("bench{i}.fleet.test"))?;
        let acked = Instant::now();
        for k in 1..=3 {
            wait_revision(&fleet, k, revision, Duration::from_secs(10))?;
        }
        lags.push(acked.elapsed().as_secs_f64() * 1e3);
    }
    let (guard_after, rev_after) = rt.block_on(guard_version(&handle))?;
    lags.sort_by(f64::total_cmp);
    let pick = |p: f64| lags[((lags.len() - 1) as f64 * p).round() as usize];
    let changes = args.changes as f64;
    Ok(Row {
        hostnames: n,
        load_s,
        start_s,
        p50_ms: pick(0.5),
        p99_ms: pick(0.99),
        max_ms: pick(1.0),
        config_txns_per_change: (guard_after - guard_before) as f64 / changes,
        etcd_revisions_per_change: (rev_after - rev_before) as f64 / changes,
    })
}

/// Writes `extra` hostnames into the fleet's configuration, 100 rows per
/// transaction, then the guard row.
async fn bulk_load(handle: &Handle, extra: usize) -> anyhow::Result<()> {
    let (state, _) = sync::load(handle).await?;
    let state = state.context("the first node wrote no configuration")?;
    let now = gateway::clock::now();
    let hosts: Vec<_> = std::thread::scope(|scope| {
        let part = |range: std::ops::Range<usize>| {
            let state = &state;
            scope.spawn(move || {
                range
                    .map(|i| new_hostname(state, &format!("h{i}.bulk.test"), false, now))
                    .collect::<anyhow::Result<Vec<_>>>()
            })
        };
        let (a, b) = (part(0..extra / 2), part(extra / 2..extra));
        let mut all = a.join().expect("a loader thread")?;
        all.extend(b.join().expect("a loader thread")?);
        anyhow::Ok(all)
    })?;
    let mut next = state.clone();
    for h in hosts {
        next.hostnames.insert(h.id.clone(), h);
    }
    let changes = rows::changes(Some(&state), &next, &handle.ring)?;
    let prefix = handle.config_prefix();
    let mut client = handle.etcd.client().await?;
    for chunk in changes.chunks(100) {
        let ops: Vec<TxnOp> = chunk
            .iter()
            .filter_map(|(k, v)| Some(TxnOp::put(format!("{prefix}{k}"), v.clone()?, None)))
            .collect();
        client.txn(Txn::new().and_then(ops)).await?;
    }
    client
        .put(
            format!("{prefix}{}", rows::GUARD),
            "{\"node\":\"bench\"}",
            None,
        )
        .await?;
    Ok(())
}

/// The guard row's version (how many changes wrote it) and etcd's revision.
async fn guard_version(handle: &Handle) -> anyhow::Result<(i64, i64)> {
    let mut client = handle.etcd.client().await?;
    let key = format!("{}{}", handle.config_prefix(), rows::GUARD);
    let r = client.get(key, Some(GetOptions::new())).await?;
    let version = r.kvs().first().map_or(0, |kv| kv.version());
    Ok((version, r.header().map_or(0, |h| h.revision())))
}

/// Adds a hostname through node `k`; the revision the answer names.
fn add_host(fleet: &Fleet, k: usize, name: &str) -> anyhow::Result<i64> {
    let url = format!(
        "http://{}:{}/client/v4/zones/{}/custom_hostnames",
        fleet.lab.node_addr(k),
        gateway_tests::fleet_gateway::ADMIN_PORT,
        fleet.zone
    );
    let body = json!({"hostname": name, "ssl": {"settings": {"min_tls_version": "1.3"}}});
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "20", "-X", "POST", &url])
        .args(["-H", &format!("Authorization: Bearer {}", fleet.token)])
        .args(["--data-binary", &body.to_string()])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.starts_with("HTTP/1.1 200"),
        "adding {name} through node {k}: {text}"
    );
    text.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-gateway-revision: ")
                .map(|v| v.trim().parse())
        })
        .context("the answer names no revision")?
        .context("a revision number")
}

/// Waits until node `k` has installed `revision`, scraping its metrics.
fn wait_revision(fleet: &Fleet, k: usize, revision: i64, timeout: Duration) -> anyhow::Result<()> {
    let addr = (fleet.lab.node_addr(k), METRICS_PORT);
    let deadline = Instant::now() + timeout;
    loop {
        let mut tcp = TcpStream::connect(addr)?;
        tcp.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
        let mut text = String::new();
        tcp.read_to_string(&mut text)?;
        let installed = gateway_tests::lab::metric(&text, "gateway_config_revision", &[]) as i64;
        if installed >= revision {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "node {k} is at {installed}, not {revision}, after {timeout:?}"
        );
        std::thread::sleep(Duration::from_micros(500));
    }
}
