//! `cargo xtask bench xdp`: the XDP filter's cost per packet, measured in the
//! kernel with BPF_PROG_TEST_RUN, as a ratio to a program that only returns
//! `XDP_PASS`, measured in the same run on the same frames.
//!
//! Targets: at most 2.0x the baseline for a hello with a typical SNI, at most
//! 1.2x for traffic that is not TLS. Needs root.

use std::net::IpAddr;

use gateway::{
    config::RefuseMode,
    frame::TcpFrame,
    hello::{ClientHello, Ext},
    tls_version::TlsVersion,
    xdp::{ProgramLog, XdpFilter, XdpPolicy},
};
use gateway_common::{Stat, version};

/// Runs per measurement and rounds per case (the median round is reported).
const REPEAT: u32 = 1_000_000;
const ROUNDS: usize = 5;

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    expect: Stat,
    target: Option<f64>,
}

fn frame(dport: u16, payload: Vec<u8>) -> Vec<u8> {
    let (src, dst): (IpAddr, IpAddr) =
        ("198.18.0.2".parse().unwrap(), "198.18.0.1".parse().unwrap());
    TcpFrame::new(src, dst, 40000, dport, payload).build()
}

fn cases() -> Vec<Case> {
    let http =
        b"GET /index.html HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: bench\r\n\r\n".to_vec();
    let mut typical = ClientHello::modern("www.example.com");
    typical.extensions.as_mut().unwrap().push(Ext::padding(200));
    let mut split = ClientHello::modern("www.example.com");
    let exts = split.extensions.as_mut().unwrap();
    exts.retain(|e| !matches!(e, Ext::SupportedVersions(_)));
    exts.push(Ext::key_share(1250));
    exts.push(Ext::SupportedVersions(vec![version::TLS1_3]));
    let split_record = split.record()[..1400].to_vec();
    let long_sni = format!("{}.example.com", "a".repeat(228));
    vec![
        Case {
            name: "non-TLS, other port (80)",
            frame: frame(80, http.clone()),
            expect: Stat::PassOtherPort,
            target: Some(1.2),
        },
        Case {
            name: "non-TLS payload on 443",
            frame: frame(443, http),
            expect: Stat::PassNotTls,
            target: Some(1.2),
        },
        Case {
            name: "TLS 1.3 hello, typical SNI, passed",
            frame: frame(443, typical.record()),
            expect: Stat::PassAllowed,
            target: Some(2.0),
        },
        Case {
            name: "TLS 1.0 hello, typical SNI, dropped",
            frame: frame(
                443,
                ClientHello::legacy(version::TLS1_0, Some("www.example.com")).record(),
            ),
            expect: Stat::DropTls10,
            target: Some(2.0),
        },
        Case {
            name: "split hello (first 1400 B), passed",
            frame: frame(443, split_record),
            expect: Stat::PassUndecidable,
            target: None,
        },
        Case {
            name: "TLS 1.3 hello, 242-byte SNI, passed",
            frame: frame(443, ClientHello::modern(&long_sni).record()),
            expect: Stat::PassAllowed,
            target: None,
        },
    ]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Keeps every measurement on one CPU, so baseline and filter see the same caches.
fn pin_to_last_cpu() {
    // SAFETY: plain libc calls on a zeroed cpu_set_t owned by this frame.
    unsafe {
        let cpus = libc::sysconf(libc::_SC_NPROCESSORS_ONLN).max(1) as usize;
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpus - 1, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn main() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("bench xdp: needs root to load the XDP program and run BPF_PROG_TEST_RUN");
        std::process::exit(1);
    }
    pin_to_last_cpu();
    // Repeated runs reuse one frame, so a refused hello must stay as it was:
    // the bench uses `refuse = "drop"` (a reset rewrites the frame in place).
    let mut policy = XdpPolicy::uniform(TlsVersion::Tls12);
    policy
        .hosts
        .insert("api.example.com".into(), TlsVersion::Tls13);
    policy.refuse = RefuseMode::Drop;
    let mut filter = XdpFilter::load(ProgramLog::Off)?;
    filter.apply(&policy)?;

    println!(
        "XDP filter vs a bare XDP_PASS program, BPF_PROG_TEST_RUN, {REPEAT} runs x {ROUNDS} rounds (median)\n"
    );
    println!(
        "{:<40} {:>10} {:>10} {:>7} {:>8}",
        "case", "filter ns", "bare ns", "ratio", "target"
    );
    let mut missed = 0;
    for case in cases() {
        let verdict = filter.run_frame(&case.frame)?;
        anyhow::ensure!(
            verdict.stat == case.expect,
            "{}: the filter decided {:?}, expected {:?}",
            case.name,
            verdict.stat,
            case.expect
        );
        let mut filter_ns = Vec::new();
        let mut bare_ns = Vec::new();
        for _ in 0..ROUNDS {
            bare_ns.push(filter.time_frame(&case.frame, REPEAT, true)?);
            filter_ns.push(filter.time_frame(&case.frame, REPEAT, false)?);
        }
        let (f, b) = (median(filter_ns), median(bare_ns));
        let ratio = f / b;
        let target = match case.target {
            Some(t) if ratio <= t => format!("<={t:.1} ok"),
            Some(t) => {
                missed += 1;
                format!("<={t:.1} MISS")
            }
            None => "-".to_string(),
        };
        println!(
            "{:<40} {:>10.1} {:>10.1} {:>6.2}x {:>8}",
            case.name, f, b, ratio, target
        );
    }
    println!("\n{missed} target(s) missed");
    Ok(())
}
