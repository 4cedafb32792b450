//! `cargo xtask bench tls`: full mTLS handshakes per second (ECDSA P-256, TLS
//! 1.3, client certificate verified, one request per connection) and handshake
//! latency, for the gateway and for Debian's nginx with the same certificates,
//! `ssl_verify_client on` and the same origin, in the same run with the same
//! load generator.
//!
//! The server under test runs on the last CPU, the load generator and the
//! origin on the others. Needs root (nginx runs as root, CPU pinning).
//!
//! Then the access log's cost: a second gateway with `[log.access]` to a
//! file against the first (log off), for full handshakes and for keep-alive
//! requests; target: within 5% of off.

use std::{
    net::{SocketAddr, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use gateway_tests::{
    load::{LoadResult, MtlsClient, fast_origin},
    local::{Background, TempDir, free_port},
    nginx::NginxSite,
    pki::{TestCa, server_cert},
    require_root,
};

const GATEWAY: &str = env!("CARGO_BIN_EXE_gateway-under-test");
const CONCURRENCY: usize = 32;
const ROUND: Duration = Duration::from_secs(4);
const ROUNDS: usize = 3;

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Pins this process (the load generator and the origin) away from the server's CPU.
fn pin_self(server_cpu: usize) {
    // SAFETY: plain libc calls on a zeroed cpu_set_t owned by this frame.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in (0..cpus()).filter(|c| *c != server_cpu || cpus() == 1) {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn pinned(cpu: usize, program: &str) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &cpu.to_string(), program]);
    cmd
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn main() -> anyhow::Result<()> {
    require_root("the TLS benchmark (nginx as root, CPU pinning)");
    let server_cpu = cpus() - 1;
    pin_self(server_cpu);
    let dir = TempDir::new("bench-tls");
    let d = dir.0.as_path();
    let server = server_cert(d, "server", &["api.test"]);
    let corp = TestCa::new(d, "corp");
    let alice = corp.client("alice", None);

    let rt = tokio::runtime::Runtime::new()?;
    let origin_port = free_port();
    let origin = rt.block_on(tokio::net::TcpListener::bind(("127.0.0.1", origin_port)))?;
    rt.spawn(fast_origin(origin));

    let (gw_port, nginx_port) = (free_port(), free_port());
    let _gateway = start_gateway(d, server_cpu, gw_port, origin_port, "")?;

    let site = NginxSite {
        dir: d,
        listen: SocketAddr::from(([127, 0, 0, 1], nginx_port)),
        name: "api.test",
        cert: &server.cert,
        key: &server.key,
        client_ca: &corp.cert,
        origin: SocketAddr::from(([127, 0, 0, 1], origin_port)),
    };
    let nginx_cmd = site.write(pinned(server_cpu, "nginx"))?;
    let _nginx = Background::start(nginx_cmd, d.join("nginx.log"), "");
    wait_for_port(nginx_port);

    let client = |port: u16| MtlsClient {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        host: "api.test".into(),
        ca: server.cert.clone(),
        cert: alice.cert.clone(),
        key: alice.key.clone(),
    };
    let (gw, ngx) = (client(gw_port), client(nginx_port));
    println!(
        "mTLS handshakes (TLS 1.3, ECDSA P-256, client certificate verified, 1 request per connection)\n\
         server pinned to CPU {server_cpu}; load generator ({CONCURRENCY} clients) and origin on the other CPU(s)\n\
         {ROUNDS} rounds of {ROUND:?} each, alternating, after a 1 s warm-up; medians reported\n"
    );
    rt.block_on(async {
        gw.run(CONCURRENCY, Duration::from_secs(1)).await?;
        ngx.run(CONCURRENCY, Duration::from_secs(1)).await
    })?;
    let mut results: [Vec<LoadResult>; 2] = [Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        results[0].push(rt.block_on(gw.run(CONCURRENCY, ROUND))?);
        results[1].push(rt.block_on(ngx.run(CONCURRENCY, ROUND))?);
    }
    let median = |rs: &mut Vec<LoadResult>| {
        rs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
        rs[rs.len() / 2].clone()
    };
    let (g, n) = (median(&mut results[0]), median(&mut results[1]));
    println!(
        "{:<10} {:>14} {:>10} {:>10} {:>8}",
        "server", "handshakes/s", "p50 ms", "p99 ms", "errors"
    );
    for (name, r) in [("gateway", &g), ("nginx", &n)] {
        println!(
            "{name:<10} {:>14.0} {:>10.2} {:>10.2} {:>8}",
            r.rate(),
            r.percentile(50.0).as_secs_f64() * 1e3,
            r.percentile(99.0).as_secs_f64() * 1e3,
            r.errors
        );
    }
    let ratio = g.rate() / n.rate();
    let p99_ok = g.percentile(99.0) <= n.percentile(99.0);
    println!(
        "\ngateway / nginx: {ratio:.2}x handshakes/s (target >= 1.20x: {}), p99 {} nginx's",
        if ratio >= 1.2 { "met" } else { "MISSED" },
        if p99_ok { "at or below" } else { "ABOVE" }
    );
    anyhow::ensure!(
        g.completed > 0 && n.completed > 0,
        "a server completed no handshakes"
    );
    logging_table(&rt, d, server_cpu, origin_port, &gw)
}

/// Starts `gateway run` pinned to `cpu` on `port`, serving `api.test` (mTLS,
/// the rule that requires a verified certificate) from `origin_port`, with
/// `extra` appended to its configuration (written as `NAME.toml` in `d`).
fn start_gateway(
    d: &std::path::Path,
    cpu: usize,
    port: u16,
    origin_port: u16,
    extra: &str,
) -> anyhow::Result<Background> {
    let metrics_port = free_port();
    let config = format!(
        "[terminator]\nlisten = [\"127.0.0.1:{port}\"]\n\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n\
         [[ca]]\nname = \"corp\"\ncertificate = \"corp/ca.pem\"\n\n\
         [[hostname]]\nname = \"api.test\"\ncertificate = \"server.pem\"\nkey = \"server.key\"\n\
         origin = \"http://127.0.0.1:{origin_port}\"\nmtls = true\ncas = [\"corp\"]\n\n\
         [[rule]]\nid = \"verified\"\nexpression = 'not cf.tls_client_auth.cert_verified or cf.tls_client_auth.cert_revoked'\naction = \"block\"\n{extra}"
    );
    let path = d.join(format!("gateway-{port}.toml"));
    std::fs::write(&path, config)?;
    let mut cmd = pinned(cpu, GATEWAY);
    cmd.arg("run")
        .arg("--config")
        .arg(&path)
        .env("RUST_LOG", "warn");
    Ok(Background::start(
        cmd,
        d.join(format!("gateway-{port}.log")),
        "gateway: ",
    ))
}

/// The access log's cost: the gateway with it off and with it on (to a
/// file), full handshakes and keep-alive requests, alternating rounds,
/// medians. Target: on within 5% of off for each.
fn logging_table(
    rt: &tokio::runtime::Runtime,
    d: &std::path::Path,
    cpu: usize,
    origin_port: u16,
    off: &MtlsClient,
) -> anyhow::Result<()> {
    let port = free_port();
    let _logged = start_gateway(
        d,
        cpu,
        port,
        origin_port,
        "\n[log.access]\noutput = \"access.log\"\n",
    )?;
    wait_for_port(port);
    let on = MtlsClient {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        ..off.clone()
    };
    println!(
        "\nThe access log's cost: the gateway with it off and on (to a file), {ROUNDS} rounds each"
    );
    println!(
        "{:<34} {:>12} {:>12} {:>8} {:>14}",
        "load", "log off /s", "log on /s", "on/off", "target"
    );
    for keepalive in [false, true] {
        let run = |c: &MtlsClient| {
            rt.block_on(async {
                match keepalive {
                    false => c.run(CONCURRENCY, ROUND).await,
                    true => c.run_keepalive(CONCURRENCY, ROUND).await,
                }
            })
        };
        run(&on)?; // warm-up (and the log file made)
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            a.push(run(off)?.rate());
            b.push(run(&on)?.rate());
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (a, b) = (median(a), median(b));
        let ratio = b / a;
        let name = match keepalive {
            false => "full handshake + 1 request",
            true => "keep-alive requests",
        };
        let mark = if ratio >= 0.95 { "ok" } else { "MISS" };
        println!(
            "{name:<34} {a:>12.0} {b:>12.0} {ratio:>7.3}x {:>14}",
            format!(">=0.95x {mark}")
        );
    }
    let lines = std::fs::read_to_string(d.join("access.log"))?
        .lines()
        .count();
    anyhow::ensure!(lines > 0, "the access log is empty");
    println!("access log: {lines} lines written");
    Ok(())
}
