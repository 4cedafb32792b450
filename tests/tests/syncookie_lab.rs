//! SYN cookies answered by the gateway (spike, issue 24), in a namespace lab:
//! the XDP program answers SYNs itself, the TC program hands a passed hello's
//! connection to the kernel through `bpf_sk_assign_tcp_reqsk`, and a refused
//! hello is reset from XDP without the kernel ever building a socket.
//!
//! Needs root and Linux 6.9+ (the kfunc); says so loudly and stops otherwise.

use std::{
    sync::mpsc,
    time::{Duration, Instant},
};

use gateway::xdp::syncookie::{SyncookieError, Syncookies, XdpMode, kfunc_btf_id};
use gateway_common::syncookie::{
    STAT_ACK_DROPPED, STAT_COUNT, STAT_HELLO_PASSED, STAT_HELLO_REFUSED, STAT_NAMES,
    STAT_SYN_ANSWERED, STAT_TC_ASSIGNED,
};
use gateway_tests::lab::{IFACE, Lab, SERVER_V4};

type Counters = [u64; STAT_COUNT as usize];

/// Whether the kernel has the kfunc; prints why not, loudly, when it has not.
fn kfunc_available() -> bool {
    gateway_tests::require_root("loading the SYN-cookie programs");
    match kfunc_btf_id() {
        Ok(id) => {
            println!("bpf_sk_assign_tcp_reqsk is BTF id {id} in this kernel");
            true
        }
        Err(e) => {
            eprintln!("\n*** SYN-COOKIE LAB NOT RUN: {e} ***\n");
            false
        }
    }
}

#[test]
fn the_kfunc_program_passes_the_verifier_and_attaches() {
    if !kfunc_available() {
        return;
    }
    let lab = Lab::create().expect("lab");
    let attached = lab
        .in_server_thread(|| -> Result<Counters, SyncookieError> {
            let mut cookies = Syncookies::load(443)?;
            cookies.attach(IFACE, XdpMode::Skb)?;
            cookies.counters()
        })
        .expect("server thread");
    let counters = attached.expect("load, verify and attach both programs");
    assert_eq!(counters, [0; STAT_COUNT as usize], "no traffic yet");
}

/// Generic XDP unless `SYNCOOKIE_LAB_NATIVE` is set: native XDP_TX on a veth
/// reaches the peer only when the peer runs NAPI (see the test's GRO step).
fn xdp_mode() -> XdpMode {
    if std::env::var_os("SYNCOOKIE_LAB_NATIVE").is_some() {
        XdpMode::Driver
    } else {
        XdpMode::Skb
    }
}

/// What the thread holding the programs in the server namespace is asked.
enum Ask {
    Counters(mpsc::Sender<Result<Counters, String>>),
}

/// `TcpPassiveOpens` and `TcpExtSyncookiesRecv`-like counters of the server namespace.
fn passive_opens(lab: &Lab) -> u64 {
    let out = gateway_tests::lab::run(lab.in_server("cat").arg("/proc/net/snmp")).expect("snmp");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let tcp: Vec<&str> = text.lines().filter(|l| l.starts_with("Tcp:")).collect();
    assert_eq!(tcp.len(), 2, "Tcp lines in /proc/net/snmp:\n{text}");
    let names: Vec<&str> = tcp[0].split_whitespace().collect();
    let values: Vec<&str> = tcp[1].split_whitespace().collect();
    let at = names
        .iter()
        .position(|n| *n == "PassiveOpens")
        .expect("PassiveOpens column");
    values[at].parse().expect("PassiveOpens value")
}

fn show(counters: &Counters) -> String {
    STAT_NAMES
        .iter()
        .zip(counters)
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn a_tls_handshake_completes_through_cookies_and_a_refused_hello_never_reaches_the_kernel() {
    if !kfunc_available() {
        return;
    }
    let mut lab = Lab::create().expect("lab");
    let (cert, key) = lab.self_signed(&["lab.test"]).expect("certificate");
    lab.start_tls_server(&cert, &key).expect("TLS server");
    // Native XDP on veth sends XDP_TX frames to the peer only through its NAPI (GRO on).
    gateway_tests::lab::run(lab.in_client("ethtool").args(["-K", IFACE, "gro", "on"]))
        .expect("GRO on the client's veth");
    if std::env::var_os("SYNCOOKIE_LAB_DEBUG").is_some() {
        let mut dump = lab.in_client("tcpdump");
        dump.args(["-nn", "-vv", "-i", IFACE, "tcp"]);
        lab.spawn("tcpdump", dump).expect("tcpdump");
    }
    let mode = xdp_mode();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let (ask_tx, ask_rx) = mpsc::channel::<Ask>();
    std::thread::scope(|scope| {
        let lab_ref = &lab;
        scope.spawn(move || {
            let held = lab_ref.in_server_thread(move || {
                let loaded = Syncookies::load(443).and_then(|mut cookies| {
                    cookies.attach(IFACE, mode)?;
                    Ok(cookies)
                });
                let cookies = match loaded {
                    Ok(cookies) => {
                        let _ = ready_tx.send(Ok(()));
                        cookies
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                while let Ok(Ask::Counters(reply)) = ask_rx.recv() {
                    let _ = reply.send(cookies.counters().map_err(|e| e.to_string()));
                }
            });
            held.expect("server thread");
        });
        let ready = ready_rx.recv_timeout(Duration::from_secs(30));
        let counters = || -> Counters {
            let (tx, rx) = mpsc::channel();
            ask_tx.send(Ask::Counters(tx)).expect("ask counters");
            rx.recv_timeout(Duration::from_secs(5))
                .expect("counters answer")
                .expect("counters")
        };
        ready.expect("programs ready").expect("load and attach");

        let opens_before = passive_opens(&lab);
        let started = Instant::now();
        let modern = lab.s_client(SERVER_V4, "lab.test", &["-tls1_2"]);
        let after_modern = counters();
        if std::env::var_os("SYNCOOKIE_LAB_DEBUG").is_some() {
            for cmd in [lab.in_server("ethtool"), lab.in_client("ethtool")] {
                let mut cmd = cmd;
                let out = cmd.args(["-S", IFACE]).output().expect("ethtool -S");
                println!("{}", String::from_utf8_lossy(&out.stdout));
            }
        }
        let opens_after_modern = passive_opens(&lab);
        println!(
            "TLS 1.2 through cookies: ok={} in {:?}; {}",
            modern.ok,
            started.elapsed(),
            show(&after_modern)
        );
        assert!(modern.ok, "TLS 1.2 handshake failed:\n{}", modern.output);
        assert!(modern.output.contains("Protocol  : TLSv1.2") || modern.output.contains("TLSv1.2"));
        assert!(
            after_modern[STAT_SYN_ANSWERED as usize] >= 1,
            "{}",
            show(&after_modern)
        );
        assert!(
            after_modern[STAT_ACK_DROPPED as usize] >= 1,
            "{}",
            show(&after_modern)
        );
        assert!(
            after_modern[STAT_HELLO_PASSED as usize] >= 1,
            "{}",
            show(&after_modern)
        );
        assert!(
            after_modern[STAT_TC_ASSIGNED as usize] >= 1,
            "{}",
            show(&after_modern)
        );
        assert_eq!(opens_after_modern, opens_before + 1, "one passive open");

        let old = lab.s_client(SERVER_V4, "lab.test", &["-tls1"]);
        let after_old = counters();
        let opens_after_old = passive_opens(&lab);
        println!("TLS 1.0: ok={}; {}", old.ok, show(&after_old));
        assert!(!old.ok, "TLS 1.0 handshake should fail:\n{}", old.output);
        assert!(
            old.output.contains("errno=104"),
            "the client should see a reset (ECONNRESET):\n{}",
            old.output
        );
        assert_eq!(
            after_old[STAT_HELLO_REFUSED as usize],
            after_modern[STAT_HELLO_REFUSED as usize] + 1,
            "{}",
            show(&after_old)
        );
        assert_eq!(
            after_old[STAT_TC_ASSIGNED as usize],
            after_modern[STAT_TC_ASSIGNED as usize],
            "the refused hello was handed to the kernel: {}",
            show(&after_old)
        );
        assert_eq!(
            opens_after_old, opens_after_modern,
            "the kernel built a socket for the refused hello"
        );
        drop(ask_tx);
    });
}
