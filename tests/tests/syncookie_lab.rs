//! SYN cookies answered by the gateway (spike, issue 24), in a namespace lab:
//! the XDP program answers SYNs itself, the TC program hands a passed hello's
//! connection to the kernel through `bpf_sk_assign_tcp_reqsk`, and a refused
//! hello is reset from XDP without the kernel ever building a socket.
//!
//! Needs root and Linux 6.9+ (the kfunc); says so loudly and stops otherwise.

use std::{
    sync::mpsc,
    thread::Scope,
    time::{Duration, Instant},
};

use gateway::{
    config::AttachMode,
    xdp::{
        ProgramLog, XdpFilter,
        syncookie::{SyncookieError, Syncookies, XdpMode, kfunc_btf_id},
    },
};
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

/// What the thread holding the programs in the server namespace is asked.
enum Ask {
    Counters(mpsc::Sender<Result<Counters, String>>),
}

/// The programs, held by threads in the lab's namespaces until this is dropped.
struct Held {
    ask: mpsc::Sender<Ask>,
    /// Keeps the client's XDP program (native mode only) until dropped.
    _peer: Option<mpsc::Sender<()>>,
}

impl Held {
    fn counters(&self) -> Counters {
        let (tx, rx) = mpsc::channel();
        self.ask.send(Ask::Counters(tx)).expect("ask counters");
        rx.recv_timeout(Duration::from_secs(5))
            .expect("counters answer")
            .expect("counters")
    }
}

/// Loads and attaches the SYN-cookie programs in the server namespace, on a
/// thread of `scope` that keeps them until the returned `Held` is dropped.
fn hold_programs<'scope>(
    scope: &'scope Scope<'scope, '_>,
    lab: &'scope Lab,
    mode: XdpMode,
) -> Held {
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let (ask_tx, ask_rx) = mpsc::channel::<Ask>();
    scope.spawn(move || {
        let held = lab.in_server_thread(move || {
            let loaded = Syncookies::load(443).and_then(|mut cookies| {
                cookies.attach(IFACE, mode)?;
                Ok(cookies)
            });
            let cookies = match loaded {
                Ok(cookies) => cookies,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            while let Ok(Ask::Counters(reply)) = ask_rx.recv() {
                let _ = reply.send(cookies.counters().map_err(|e| e.to_string()));
            }
        });
        held.expect("server thread");
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("programs ready")
        .expect("load and attach");
    let peer = (mode == XdpMode::Driver).then(|| hold_peer_program(scope, lab));
    Held {
        ask: ask_tx,
        _peer: peer,
    }
}

/// Native XDP_TX on a veth reaches the peer only through the peer's NAPI,
/// which an XDP program on the peer turns on (GRO alone did not, here): the
/// gateway's filter, with no policy, passing everything.
fn hold_peer_program<'scope>(
    scope: &'scope Scope<'scope, '_>,
    lab: &'scope Lab,
) -> mpsc::Sender<()> {
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    scope.spawn(move || {
        let held = lab.in_client_thread(move || {
            let filter = XdpFilter::load(ProgramLog::Off).and_then(|mut f| {
                f.attach(IFACE, AttachMode::Native)?;
                Ok(f)
            });
            match filter {
                Ok(filter) => {
                    let _ = ready_tx.send(Ok(()));
                    let _ = stop_rx.recv();
                    drop(filter);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:#}")));
                }
            }
        });
        held.expect("client thread");
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("peer program ready")
        .expect("native XDP on the client's veth");
    stop_tx
}

/// `TcpPassiveOpens` of the server namespace: sockets the kernel built for
/// incoming connections.
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

/// A TLS 1.2 handshake completes: XDP answered the SYN, dropped the ACK,
/// passed the hello, and TC had the kernel build exactly one connection.
fn modern_client_gets_through(lab: &Lab, held: &Held) -> Counters {
    let opens_before = passive_opens(lab);
    let started = Instant::now();
    let modern = lab.s_client(SERVER_V4, "lab.test", &["-tls1_2"]);
    let after = held.counters();
    println!(
        "TLS 1.2 through cookies: ok={} in {:?}; {}",
        modern.ok,
        started.elapsed(),
        show(&after)
    );
    assert!(modern.ok, "TLS 1.2 handshake failed:\n{}", modern.output);
    assert!(modern.output.contains("TLSv1.2"), "{}", modern.output);
    for stat in [
        STAT_SYN_ANSWERED,
        STAT_ACK_DROPPED,
        STAT_HELLO_PASSED,
        STAT_TC_ASSIGNED,
    ] {
        assert!(after[stat as usize] >= 1, "{}", show(&after));
    }
    assert_eq!(passive_opens(lab), opens_before + 1, "one passive open");
    after
}

/// A TLS 1.0 hello is reset from XDP: the client sees ECONNRESET, TC hands
/// nothing to the kernel, and the kernel builds no socket.
fn old_client_is_reset_before_the_kernel(lab: &Lab, held: &Held, before: &Counters) {
    let opens_before = passive_opens(lab);
    let old = lab.s_client(SERVER_V4, "lab.test", &["-tls1"]);
    let after = held.counters();
    println!("TLS 1.0: ok={}; {}", old.ok, show(&after));
    assert!(!old.ok, "TLS 1.0 handshake should fail:\n{}", old.output);
    assert!(
        old.output.contains("errno=104"),
        "the client should see a reset (ECONNRESET):\n{}",
        old.output
    );
    let refused = STAT_HELLO_REFUSED as usize;
    assert_eq!(after[refused], before[refused] + 1, "{}", show(&after));
    let assigned = STAT_TC_ASSIGNED as usize;
    assert_eq!(after[assigned], before[assigned], "{}", show(&after));
    assert_eq!(
        passive_opens(lab),
        opens_before,
        "the kernel built a socket for the refused hello"
    );
}

/// The whole path in a lab, with the XDP program in `mode`.
fn cookies_in_a_lab(mode: XdpMode) {
    if !kfunc_available() {
        return;
    }
    let mut lab = Lab::create().expect("lab");
    let (cert, key) = lab.self_signed(&["lab.test"]).expect("certificate");
    lab.start_tls_server(&cert, &key).expect("TLS server");
    if std::env::var_os("SYNCOOKIE_LAB_DEBUG").is_some() {
        let mut dump = lab.in_client("tcpdump");
        dump.args(["-nn", "-vv", "-i", IFACE, "tcp"]);
        lab.spawn("tcpdump", dump).expect("tcpdump");
    }
    std::thread::scope(|scope| {
        let held = hold_programs(scope, &lab, mode);
        let after_modern = modern_client_gets_through(&lab, &held);
        old_client_is_reset_before_the_kernel(&lab, &held, &after_modern);
    });
}

#[test]
fn cookies_with_generic_xdp() {
    cookies_in_a_lab(XdpMode::Skb);
}

#[test]
fn cookies_with_native_xdp() {
    cookies_in_a_lab(XdpMode::Driver);
}
