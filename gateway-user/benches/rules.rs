//! `cargo xtask bench rules`: firewall rule evaluation time per request.
//!
//! Rule sets of 1, 10 and 1,000 typical rules (each scoped to a hostname, with
//! client-certificate, path and method conditions), and `in` sets of 10 vs
//! 10,000 hostnames and 10 vs 1,000 CIDRs to show lookups do not grow with the
//! set. Target: at most 1 µs per request for 1,000 typical rules.

use std::{hint::black_box, time::Instant};

use gateway::rules::{Action, Expression, RuleSet, RuleSpec, sample};

fn typical_rules(n: usize) -> Vec<RuleSpec> {
    (0..n)
        .map(|i| RuleSpec {
            id: format!("r{i}"),
            description: String::new(),
            expression: match i % 4 {
                0 => format!(r#"http.host eq "host{i}.example.com" and not cf.tls_client_auth.cert_verified"#),
                1 => format!(r#"(http.host in {{"host{i}.example.com" "www.host{i}.example.com"}} and http.request.uri.path in {{"/admin" "/internal"}})"#),
                2 => format!(r#"http.host eq "host{i}.example.com" and http.request.method eq "DELETE" and not ip.src in {{10.0.0.0/8}}"#),
                _ => format!(r#"http.host eq "host{i}.example.com" and (cf.tls_client_auth.cert_revoked or starts_with(http.request.uri.path, "/private"))"#),
            },
            action: if i % 2 == 0 { Action::Block } else { Action::Log },
            enabled: true,
        })
        .collect()
}

/// Nanoseconds per call of `f`, median of 7 batches.
fn time(mut f: impl FnMut()) -> f64 {
    let mut runs = Vec::new();
    let mut iters = 1000u32;
    // Grow the batch until it takes 20 ms or more.
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        if t.elapsed().as_millis() >= 20 {
            break;
        }
        iters *= 2;
    }
    for _ in 0..7 {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        runs.push(t.elapsed().as_nanos() as f64 / f64::from(iters));
    }
    runs.sort_by(f64::total_cmp);
    runs[3]
}

fn main() {
    let request = sample::from_pairs([
        "http.host=host500.example.com",
        "http.request.uri.path=/api/v1/items",
        "http.request.method=GET",
        "ip.src=198.51.100.7",
        "cf.tls_client_auth.cert_presented=true",
        "cf.tls_client_auth.cert_verified=true",
        "http.user_agent=curl/8.1",
    ])
    .unwrap();
    println!("rule evaluation per request (median of 7 batches)\n");
    println!("{:<52} {:>12}", "case", "ns/request");
    let mut thousand = 0.0;
    for n in [1, 10, 1000] {
        let set = RuleSet::compile(&typical_rules(n)).unwrap();
        let ns = time(|| {
            black_box(set.evaluate(black_box(&request)));
        });
        if n == 1000 {
            thousand = ns;
        }
        println!("{:<52} {:>12.1}", format!("{n} typical rules"), ns);
    }
    // The same rules without the hostname term: nothing to index, all evaluated.
    let unscoped: Vec<RuleSpec> = typical_rules(1000)
        .into_iter()
        .map(|mut r| {
            r.expression = r.expression.replacen("http.host", "http.user_agent", 1);
            r
        })
        .collect();
    let set = RuleSet::compile(&unscoped).unwrap();
    let ns = time(|| {
        black_box(set.evaluate(black_box(&request)));
    });
    println!(
        "{:<52} {:>12.1}",
        "1000 rules not scoped to a hostname (all evaluated)", ns
    );
    for size in [10, 10_000] {
        let hosts: Vec<String> = (0..size).map(|i| format!("\"h{i}.example.net\"")).collect();
        let e = Expression::compile(&format!(
            "http.host in {{{} \"host500.example.com\"}}",
            hosts.join(" ")
        ))
        .unwrap();
        let ns = time(|| {
            black_box(e.matches(black_box(&request)));
        });
        println!(
            "{:<52} {:>12.1}",
            format!("http.host in a set of {size} hostnames"),
            ns
        );
    }
    for size in [10, 1000] {
        let cidrs: Vec<String> = (0..size)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect();
        let e = Expression::compile(&format!("ip.src in {{{}}}", cidrs.join(" "))).unwrap();
        let ns = time(|| {
            black_box(e.matches(black_box(&request)));
        });
        println!(
            "{:<52} {:>12.1}",
            format!("ip.src in a set of {size} CIDRs"),
            ns
        );
    }
    println!(
        "\n1,000 typical rules: {thousand:.0} ns per request (target <= 1000 ns: {})",
        if thousand <= 1000.0 { "met" } else { "MISSED" }
    );
}
