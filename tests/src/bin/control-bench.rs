//! `cargo xtask bench control`: what a change costs as the store grows. For
//! each size, the store is bulk-loaded directly (the default hostname and
//! `size - 1` more, with certificates from the server CA, as the API makes
//! them), a store-mode gateway is started
//! on loopback, and the bench measures its start-up, its RSS, the latency of
//! changes made through the admin API (hostname add, hostname edit, rule add,
//! CRL refresh) and full TLS handshakes to hostnames picked at random.
//!
//! Prints a table and writes `control.json` under `--out`.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use gateway::control;
use gateway_tests::{
    control::bulk_load,
    local::{TempDir, free_port},
    pki::TestCa,
};
use serde_json::{Value, json};

/// Options.
struct Args {
    gateway: PathBuf,
    out: PathBuf,
    sizes: Vec<usize>,
    changes: usize,
    handshakes: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        gateway: PathBuf::from("target/release/gateway"),
        out: PathBuf::from("target/bench"),
        sizes: vec![1_000, 10_000, 100_000],
        changes: 100,
        handshakes: 200,
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
            "--handshakes" => args.handshakes = value()?.parse()?,
            other => bail!(
                "unknown argument {other:?} (--gateway BIN --out DIR --sizes N,… --changes N \
                 --handshakes N)"
            ),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    match parse_args().and_then(|a| bench(&a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("control-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One size's figures.
struct Row {
    hostnames: usize,
    bulk_load_s: f64,
    startup_s: f64,
    rss_kib: u64,
    /// (what, p50 ms, p99 ms)
    changes: Vec<(&'static str, f64, f64)>,
    handshake_p50_ms: f64,
}

fn bench(args: &Args) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let base = measure(args, 0)?;
    println!(
        "baseline (the default hostname only): start-up {:.2} s, RSS {} KiB",
        base.startup_s, base.rss_kib
    );
    let mut rows = Vec::new();
    for &n in &args.sizes {
        let row = measure(args, n)?;
        print_row(&row, base.rss_kib);
        rows.push(row);
    }
    println!();
    println!(
        "{:>9} {:>8} {:>8} {:>10} {:>13} {:>13} {:>13} {:>13} {:>9}",
        "hostnames",
        "start s",
        "load s",
        "KiB/host",
        "add p50/p99",
        "edit p50/p99",
        "rule p50/p99",
        "crl p50/p99",
        "hs p50"
    );
    for r in &rows {
        let per_host = r.rss_kib.saturating_sub(base.rss_kib) as f64 / r.hostnames as f64;
        let c = |i: usize| format!("{:.1}/{:.1}", r.changes[i].1, r.changes[i].2);
        println!(
            "{:>9} {:>8.2} {:>8.1} {:>10.2} {:>13} {:>13} {:>13} {:>13} {:>8.2}ms",
            r.hostnames,
            r.startup_s,
            r.bulk_load_s,
            per_host,
            c(0),
            c(1),
            c(2),
            c(3),
            r.handshake_p50_ms
        );
    }
    let json = json!({
        "baseline": {"startup_s": base.startup_s, "rss_kib": base.rss_kib,
                      "handshake_p50_ms": base.handshake_p50_ms},
        "sizes": rows.iter().map(|r| json!({
            "hostnames": r.hostnames,
            "bulk_load_s": r.bulk_load_s,
            "startup_s": r.startup_s,
            "rss_kib": r.rss_kib,
            "rss_per_hostname_kib":
                r.rss_kib.saturating_sub(base.rss_kib) as f64 / r.hostnames as f64,
            "changes": r.changes.iter().map(|(what, p50, p99)|
                json!({"change": what, "p50_ms": p50, "p99_ms": p99})).collect::<Vec<_>>(),
            "handshake_p50_ms": r.handshake_p50_ms,
            "handshake_p50_vs_baseline": r.handshake_p50_ms / base.handshake_p50_ms,
        })).collect::<Vec<_>>(),
    });
    let path = args.out.join("control.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    println!("\nwrote {}", path.display());
    Ok(())
}

fn print_row(r: &Row, base_rss: u64) {
    println!(
        "{} hostnames: loaded in {:.1} s, start-up {:.2} s, RSS {} KiB ({:.2} KiB/hostname over \
         the baseline), handshake p50 {:.2} ms",
        r.hostnames,
        r.bulk_load_s,
        r.startup_s,
        r.rss_kib,
        r.rss_kib.saturating_sub(base_rss) as f64 / r.hostnames.max(1) as f64,
        r.handshake_p50_ms
    );
    for (what, p50, p99) in &r.changes {
        println!("  {what:<14} p50 {p50:7.2} ms  p99 {p99:7.2} ms");
    }
}

/// The names of the bulk-loaded hostnames.
fn name(i: usize) -> String {
    format!("h{i}.bench.test")
}

/// A running store-mode gateway.
struct Running {
    child: Child,
    api: String,
    token: String,
    tls_port: u16,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn measure(args: &Args, n: usize) -> anyhow::Result<Row> {
    let tmp = TempDir::new(&format!("control-bench-{n}"));
    let data = tmp.0.join("data");
    let loading = Instant::now();
    // The default hostname is one of the `n`.
    bulk_load(&data, n.saturating_sub(1), name)?;
    let bulk_load_s = loading.elapsed().as_secs_f64();
    let token = control::rotate_token(&data)?;
    let (tls_port, admin, metrics) = (free_port(), free_port(), free_port());
    let log = tmp.0.join("gateway.log");
    let started = Instant::now();
    let child = Command::new(&args.gateway)
        .arg("run")
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{tls_port}")])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .args(["--metrics", &format!("127.0.0.1:{metrics}")])
        // Room for the hostnames the changes add.
        .args([
            "--xdp-hostnames",
            &(n + 2 * args.changes + 1000).max(1_000_000).to_string(),
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {}", args.gateway.display()))?;
    let mut gw = Running {
        child,
        api: format!("127.0.0.1:{admin}"),
        token,
        tls_port,
    };
    wait_ready(&mut gw, &log)?;
    let startup_s = started.elapsed().as_secs_f64();
    let rss_kib = rss_kib(gw.child.id())?;
    let changes = changes(&gw, &tmp.0, n.max(1), args.changes)?;
    let handshake_p50_ms = handshakes(&gw, n.saturating_sub(1), args.handshakes)?;
    Ok(Row {
        hostnames: n,
        bulk_load_s,
        startup_s,
        rss_kib,
        changes,
        handshake_p50_ms,
    })
}

fn wait_ready(gw: &mut Running, log: &Path) -> anyhow::Result<()> {
    let stdout = gw.child.stdout.take().context("the gateway's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("gateway: ") => break,
            Some(Ok(_)) => {}
            _ => bail!(
                "the gateway exited before it was ready:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            ),
        }
        if Instant::now() > deadline {
            bail!("the gateway was not ready in 600 s");
        }
    }
    // Keep draining stdout so the gateway never blocks on it.
    std::thread::spawn(move || for _ in lines {});
    Ok(())
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("VmRSS in /proc/PID/status")
}

/// A keep-alive HTTP/1.1 connection to the admin API.
struct Api {
    stream: BufReader<TcpStream>,
    host: String,
    token: String,
}

impl Api {
    fn connect(gw: &Running) -> anyhow::Result<Api> {
        let stream = TcpStream::connect(&gw.api)?;
        stream.set_nodelay(true)?;
        Ok(Api {
            stream: BufReader::new(stream),
            host: gw.api.clone(),
            token: gw.token.clone(),
        })
    }

    /// One call; returns its `result`, failing on an unsuccessful answer.
    fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = format!(
            "{method} /client/v4/{path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            self.token,
            body.len()
        );
        self.stream.get_mut().write_all(request.as_bytes())?;
        let mut status = String::new();
        self.stream.read_line(&mut status)?;
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse()?;
            }
        }
        let mut buf = vec![0; length];
        self.stream.read_exact(&mut buf)?;
        let answer: Value =
            serde_json::from_slice(&buf).with_context(|| format!("{method} {path}: {status}"))?;
        if answer["success"] != true {
            bail!("{method} {path}: {status} {answer}");
        }
        Ok(answer["result"].clone())
    }
}

/// Times `count` runs of `change` (each given its index): (p50, p99) in ms.
fn timed(
    count: usize,
    mut change: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<(f64, f64)> {
    timed_part(count, |i| {
        let t = Instant::now();
        change(i)?;
        Ok(t.elapsed())
    })
}

/// As [`timed`], for a closure that times its own part.
fn timed_part(
    count: usize,
    mut change: impl FnMut(usize) -> anyhow::Result<Duration>,
) -> anyhow::Result<(f64, f64)> {
    let mut ms = Vec::with_capacity(count);
    for i in 0..count {
        ms.push(change(i)?.as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q) as usize).min(ms.len() - 1)];
    Ok((at(0.5), at(0.99)))
}

fn changes(
    gw: &Running,
    dir: &Path,
    n: usize,
    count: usize,
) -> anyhow::Result<Vec<(&'static str, f64, f64)>> {
    let mut api = Api::connect(gw)?;
    let zones = api.call("GET", "zones", None)?;
    let zone = zones[0]["id"].as_str().context("a zone id")?.to_string();
    let account = zones[0]["account"]["id"]
        .as_str()
        .context("an account id")?
        .to_string();
    let hostnames = format!("zones/{zone}/custom_hostnames");
    let mut out = Vec::new();
    let mut ids = Vec::new();
    let (p50, p99) = timed(count, |i| {
        let body = json!({"hostname": format!("new{i}.bench.test")});
        let added = api.call("POST", &hostnames, Some(&body))?;
        ids.push(
            added["id"]
                .as_str()
                .context("the added hostname's id")?
                .to_string(),
        );
        Ok(())
    })?;
    out.push(("hostname add", p50, p99));
    let (p50, p99) = timed(count, |i| {
        let version = ["1.2", "1.3"][i % 2];
        let body = json!({"ssl": {"settings": {"min_tls_version": version}}});
        api.call("PATCH", &format!("{hostnames}/{}", ids[i]), Some(&body))
            .map(drop)
    })?;
    out.push(("hostname edit", p50, p99));
    let rules =
        format!("zones/{zone}/rulesets/phases/http_request_firewall_custom/entrypoint/rules");
    let (p50, p99) = timed(count, |i| {
        let body = json!({
            "action": "block",
            "expression": format!("http.host eq \"{}\" and not cf.tls_client_auth.cert_verified", name(i % n)),
            "description": format!("bench rule {i}"),
        });
        api.call("POST", &rules, Some(&body)).map(drop)
    })?;
    out.push(("rule add", p50, p99));
    // Two CRLs that differ (one revokes a certificate), alternated, so that
    // every refresh changes what is revoked.
    let ca = TestCa::new(dir, "bench-ca");
    let (crl, before, after) = (dir.join("bench.crl"), dir.join("a.crl"), dir.join("b.crl"));
    ca.crl(&before, false);
    ca.revoke(&ca.client("revoked", None));
    ca.crl(&after, false);
    std::fs::copy(&before, &crl)?;
    let pem = std::fs::read_to_string(&ca.cert)?;
    let cas = format!("accounts/{account}/mtls_certificates");
    let uploaded = api.call(
        "POST",
        &cas,
        Some(&json!({"ca": true, "certificates": pem, "name": "bench"})),
    )?;
    let ca_id = uploaded["id"].as_str().context("the CA's id")?.to_string();
    api.call(
        "PUT",
        &format!("{cas}/{ca_id}/crl"),
        Some(&json!({"source": crl.display().to_string()})),
    )?;
    let (p50, p99) = timed_part(count, |i| {
        std::fs::copy([&after, &before][i % 2], &crl)?;
        let t = Instant::now();
        let refreshed = api.call("POST", &format!("{cas}/{ca_id}/crl/refresh"), None)?;
        let took = t.elapsed();
        anyhow::ensure!(
            refreshed["crl"]["revoked"] == [1, 0][i % 2],
            "the refresh put the new CRL in force: {refreshed}"
        );
        Ok(took)
    })?;
    out.push(("crl refresh", p50, p99));
    Ok(out)
}

/// Full handshakes (TCP and TLS) with an SNI picked at random among the
/// loaded hostnames: the p50 in ms.
fn handshakes(gw: &Running, n: usize, count: usize) -> anyhow::Result<f64> {
    use boring::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let mut b = SslConnector::builder(SslMethod::tls())?;
    b.set_verify(SslVerifyMode::NONE);
    let connector = b.build();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut ms = Vec::with_capacity(count);
    for _ in 0..count {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let sni = if n == 0 {
            "localhost".to_string()
        } else {
            name((seed % n as u64) as usize)
        };
        let t = Instant::now();
        let tcp = TcpStream::connect(("127.0.0.1", gw.tls_port))?;
        tcp.set_nodelay(true)?;
        let mut config = connector.configure()?;
        config.set_use_server_name_indication(true);
        config.set_verify_hostname(false);
        let mut tls = config
            .connect(&sni, tcp)
            .map_err(|e| anyhow::anyhow!("handshake for {sni}: {e}"))?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        let _ = tls.shutdown();
        let mut rest = Vec::new();
        let _ = tls
            .get_mut()
            .set_read_timeout(Some(Duration::from_millis(1)));
        let _ = tls.read_to_end(&mut rest);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms[ms.len() / 2])
}
