//! Helpers for the end-to-end tests: privileges, a loaded filter, frames.
//!
//! Every test here runs the real XDP program in the kernel, so every test needs
//! root. None of them skips: without root they fail and say why.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicU16, Ordering},
};

use gateway::{
    frame::TcpFrame,
    tls_version::TlsVersion,
    xdp::{ProgramLog, XdpFilter, XdpPolicy},
};

pub mod browser;
pub mod child;
pub mod control;
pub mod cookie_lab;
pub mod fleet;
pub mod fleet_gateway;
pub mod flood;
pub mod lab;
pub mod load;
pub mod local;
pub mod logs;
pub mod mtls;
pub mod netlog;
pub mod nginx;
pub mod pki;
pub mod scenario;
pub mod sessions;
pub mod soak;
pub mod split;
pub mod unit;

/// Fails the calling test, loudly, unless it runs as root.
pub fn require_root(what: &str) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this test needs root for {what} (euid is {euid}); run it as root — CI does"
    );
}

/// The filter, loaded into the kernel (not attached) with `policy` applied.
pub fn loaded_filter(policy: &XdpPolicy) -> XdpFilter {
    require_root("loading the XDP program (BPF_PROG_LOAD, BPF_PROG_TEST_RUN)");
    let mut filter = XdpFilter::load(ProgramLog::Off).expect("load the XDP program");
    filter.apply(policy).expect("apply the policy");
    filter
}

/// A policy with `zone` for everything and extra per-host minimums.
pub fn policy(zone: TlsVersion, hosts: &[(&str, TlsVersion)]) -> XdpPolicy {
    let mut p = XdpPolicy::uniform(zone);
    for (name, min) in hosts {
        p.set_host(name, Some(*min)).expect("a valid test hostname");
    }
    p
}

/// Client address used in frames (TEST-NET-2 benchmark range).
pub const CLIENT_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2));
/// Server address used in frames.
pub const SERVER_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
/// Client IPv6 address used in frames.
pub const CLIENT_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2));
/// Server IPv6 address used in frames.
pub const SERVER_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1));

/// A source port no other frame of this process has used, so that the filter's
/// memory of refused flows never links two test frames.
pub fn fresh_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(20000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A segment carrying `payload` to port 443 over IPv4, from a fresh flow.
pub fn segment(payload: Vec<u8>) -> TcpFrame {
    TcpFrame::new(CLIENT_V4, SERVER_V4, fresh_port(), 443, payload)
}
