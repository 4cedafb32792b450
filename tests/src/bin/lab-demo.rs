//! `cargo xtask demo`: the gateway's main job in a lab, for a person to watch.
//!
//! Builds a two-namespace lab, starts a TLS server that accepts every version
//! from 1.0, puts `gateway run` with the XDP filter in front of it, and connects
//! with real `openssl s_client` runs, old and new. Prints what happened and the
//! counters that prove where. Tears everything down at the end.

use std::{path::PathBuf, process::ExitCode};

use gateway_tests::lab::{IFACE, Lab, SERVER_V4, metric};

const CONFIG: &str = r#"[xdp]
interface = "gw0"
syn_cookies = "on"

[zone]
min_tls_version = "1.2"

[[hostname]]
name = "lab.test"

[[hostname]]
name = "strict.lab.test"
min_tls_version = "1.3"
"#;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let gateway = match (args.next().as_deref(), args.next()) {
        (Some("--gateway"), Some(path)) => PathBuf::from(path),
        _ => {
            eprintln!("usage: lab-demo --gateway PATH-TO-GATEWAY-BINARY");
            return ExitCode::FAILURE;
        }
    };
    match demo(gateway) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn demo(gateway: PathBuf) -> anyhow::Result<()> {
    println!("\n== XDP-accelerated mTLS gateway: the ClientHello filter in a lab ==\n");
    let mut lab = Lab::create()?;
    println!(
        "lab     client namespace (198.18.0.2) --veth {IFACE}--> server namespace ({SERVER_V4})"
    );
    let (cert, key) = lab.self_signed(&["lab.test", "strict.lab.test"])?;
    lab.start_tls_server(&cert, &key)?;
    println!("server  a TLS server on :443 that itself accepts TLS 1.0 to 1.3");
    lab.start_gateway(&gateway, CONFIG)?;
    let banner = lab.log("gateway");
    let attached = banner.lines().find_map(|l| l.strip_prefix("gateway: "));
    println!("gateway {}", attached.unwrap_or("started"));
    println!("policy  zone minimum TLS 1.2; strict.lab.test minimum TLS 1.3");
    println!(
        "        SYN cookies on: XDP answers every SYN, so a refused client gets its RST \
         from XDP and the kernel never builds its socket\n"
    );

    println!(
        "{:<52} {:<40} {:>8}",
        "client (from the client namespace)", "result", "time"
    );
    let runs = [
        ("lab.test", "-tls1"),
        ("lab.test", "-tls1_1"),
        ("lab.test", "-tls1_2"),
        ("lab.test", "-tls1_3"),
        ("strict.lab.test", "-tls1_2"),
        ("strict.lab.test", "-tls1_3"),
    ];
    for (sni, flag) in runs {
        let hellos = lab.tls_events("client_hello").len();
        let run = lab.s_client(SERVER_V4, sni, &[flag]);
        let result = if run.ok {
            let protocol = run
                .output
                .lines()
                .find_map(|l| l.trim().strip_prefix("Protocol  : "))
                .or_else(|| {
                    run.output
                        .lines()
                        .find_map(|l| l.strip_prefix("New, ")?.split(',').next())
                })
                .unwrap_or("?")
                .to_string();
            format!("handshake completed, {protocol}")
        } else if lab.tls_events("client_hello").len() == hellos {
            "REFUSED in XDP (server never saw it)".to_string()
        } else {
            "failed at the server".to_string()
        };
        let client = format!("openssl s_client {flag:<8} -servername {sni}");
        println!(
            "{client:<52} {result:<40} {:>6.0}ms",
            run.elapsed.as_secs_f64() * 1000.0
        );
    }

    let scrape = lab.metrics()?;
    println!("\ncounters from the gateway's /metrics (non-zero):");
    let shown = |l: &&str| l.starts_with("gateway_xdp_") || l.starts_with("gateway_syn_cookies_");
    for line in scrape.lines().filter(shown) {
        if line.rsplit_once(' ').is_some_and(|(_, v)| v != "0") {
            println!("  {line}");
        }
    }
    let dropped = metric(&scrape, "gateway_xdp_packets_total", &[("verdict", "drop")]);
    let handshakes = lab.tls_events("handshake");
    println!(
        "\nthe TLS server completed {} handshakes ({}) and saw {} ClientHellos; XDP refused {dropped} packets.",
        handshakes.len(),
        handshakes
            .iter()
            .filter_map(|e| e["version"].as_str())
            .collect::<Vec<_>>()
            .join(", "),
        lab.tls_events("client_hello").len()
    );
    println!("lab torn down.");
    Ok(())
}
