//! The kernel capabilities `gateway run` needs, checked at start: a missing
//! one is named, with what it is for, instead of surfacing later as a bare
//! `EPERM` from the BPF loader or a bind.
//!
//! What each is for, shown by running the gateway as an unprivileged user
//! with exactly these capabilities (`setpriv --ambient-caps`):
//! - `CAP_BPF`: load the XDP and TC programs and create their maps;
//! - `CAP_PERFMON`: the verifier allows the programs' pointer arithmetic
//!   only with it ("pointer arithmetic with it prohibited for !root" without);
//! - `CAP_NET_ADMIN`: attach the XDP program and the TC ingress program;
//! - `CAP_NET_BIND_SERVICE`: listen on a port below
//!   `net.ipv4.ip_unprivileged_port_start` (443).
//!
//! Not needed on Linux 5.11+: `CAP_SYS_RESOURCE` (BPF memory is charged to
//! the cgroup, not `RLIMIT_MEMLOCK`) and `CAP_SYS_ADMIN` (which, where held,
//! stands in for `CAP_BPF` and `CAP_PERFMON`).

use std::fmt::Write as _;

use anyhow::Context;

/// A Linux capability the gateway may need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    /// Bind ports below the unprivileged start.
    NetBindService,
    /// Network administration: attach XDP and TC programs.
    NetAdmin,
    /// Performance monitoring: the verifier's pointer arithmetic.
    Perfmon,
    /// BPF programs and maps.
    Bpf,
}

/// `CAP_SYS_ADMIN`, which the kernel accepts in place of `CAP_BPF` and `CAP_PERFMON`.
const CAP_SYS_ADMIN: u32 = 21;

impl Capability {
    /// Its number in the kernel's capability sets.
    pub fn number(self) -> u32 {
        match self {
            Capability::NetBindService => 10,
            Capability::NetAdmin => 12,
            Capability::Perfmon => 38,
            Capability::Bpf => 39,
        }
    }

    /// Its name as systemd and `capabilities(7)` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Capability::NetBindService => "CAP_NET_BIND_SERVICE",
            Capability::NetAdmin => "CAP_NET_ADMIN",
            Capability::Perfmon => "CAP_PERFMON",
            Capability::Bpf => "CAP_BPF",
        }
    }

    /// Whether a process with this effective set holds it.
    fn held_in(self, effective: u64) -> bool {
        let has = |n: u32| effective & (1u64 << n) != 0;
        has(self.number())
            || (matches!(self, Capability::Bpf | Capability::Perfmon) && has(CAP_SYS_ADMIN))
    }
}

/// A capability a run needs and what for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    /// The capability.
    pub capability: Capability,
    /// What the run needs it for.
    pub why: String,
}

/// What a run needs: the XDP filter on `interface` (if any), and listening
/// on `ports`, of which those below `unprivileged_start` need a capability.
pub fn needed(interface: Option<&str>, ports: &[u16], unprivileged_start: u16) -> Vec<Need> {
    let mut needs = Vec::new();
    if let Some(interface) = interface {
        let mut need = |capability, why: String| needs.push(Need { capability, why });
        need(
            Capability::Bpf,
            "to load the XDP and TC programs and their maps".into(),
        );
        need(
            Capability::Perfmon,
            "for the verifier to accept the programs' pointer arithmetic".into(),
        );
        need(
            Capability::NetAdmin,
            format!("to attach the XDP and TC programs to {interface}"),
        );
    }
    let mut low: Vec<u16> = ports
        .iter()
        .copied()
        .filter(|p| *p != 0 && *p < unprivileged_start)
        .collect();
    low.sort_unstable();
    low.dedup();
    if !low.is_empty() {
        let list: Vec<String> = low.iter().map(u16::to_string).collect();
        needs.push(Need {
            capability: Capability::NetBindService,
            why: format!(
                "to listen on port {} (below net.ipv4.ip_unprivileged_port_start = \
                 {unprivileged_start})",
                list.join(", ")
            ),
        });
    }
    needs
}

/// Checks `needs` against the effective set `effective`; the error names each
/// missing capability and what it is for.
pub fn check(needs: &[Need], effective: u64) -> anyhow::Result<()> {
    let missing: Vec<&Need> = needs
        .iter()
        .filter(|n| !n.capability.held_in(effective))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut text = String::from("the gateway lacks kernel capabilities it needs:");
    for need in &missing {
        let _ = write!(text, "\n  - {} {}", need.capability.name(), need.why);
    }
    let names: Vec<&str> = missing.iter().map(|n| n.capability.name()).collect();
    let _ = write!(
        text,
        "\ngrant them (the packaged unit's AmbientCapabilities= holds them all), run as root, or \
         drop what needs them; missing: {}",
        names.join(" ")
    );
    anyhow::bail!(text)
}

/// This process's effective capability set (`CapEff` in `/proc/self/status`).
pub fn effective() -> anyhow::Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    parse_effective(&status).context("no CapEff line in /proc/self/status")
}

/// `net.ipv4.ip_unprivileged_port_start` (1024 where it cannot be read).
pub fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(1024)
}

/// The `CapEff:` hex mask of a `/proc/PID/status` text.
fn parse_effective(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_set_is_read_from_the_status_text() {
        let status = "Name:\tgateway\nCapInh:\t0000000000000000\nCapEff:\t000000c000001400\n";
        let eff = parse_effective(status).unwrap();
        for c in [
            Capability::Bpf,
            Capability::Perfmon,
            Capability::NetAdmin,
            Capability::NetBindService,
        ] {
            assert!(c.held_in(eff), "{c:?}");
        }
        assert_eq!(parse_effective("Name:\tx\n"), None);
        assert_eq!(parse_effective("CapEff:\tnot-hex\n"), None);
    }

    #[test]
    fn a_missing_capability_is_named_with_what_it_is_for() {
        let needs = needed(Some("eth0"), &[443, 9100, 443], 1024);
        let names: Vec<_> = needs.iter().map(|n| n.capability).collect();
        assert_eq!(
            names,
            [
                Capability::Bpf,
                Capability::Perfmon,
                Capability::NetAdmin,
                Capability::NetBindService
            ]
        );
        // CAP_BPF and CAP_NET_BIND_SERVICE only.
        let eff = (1 << 39) | (1 << 10);
        let err = check(&needs, eff).unwrap_err().to_string();
        assert!(err.contains("CAP_PERFMON for the verifier"), "{err}");
        assert!(
            err.contains("CAP_NET_ADMIN to attach the XDP and TC programs to eth0"),
            "{err}"
        );
        assert!(!err.contains("CAP_BPF "), "{err}");
        assert!(err.contains("missing: CAP_PERFMON CAP_NET_ADMIN"), "{err}");
    }

    #[test]
    fn sys_admin_stands_in_for_bpf_and_perfmon_and_high_ports_need_nothing() {
        let needs = needed(Some("eth0"), &[8443], 1024);
        assert!(
            needs
                .iter()
                .all(|n| n.capability != Capability::NetBindService)
        );
        let eff = (1 << CAP_SYS_ADMIN) | (1 << 12);
        check(&needs, eff).unwrap();
        assert!(needed(None, &[8443, 0], 1024).is_empty());
        check(&needed(None, &[443], 1024), 0).unwrap_err();
        check(&needed(None, &[443], 0), 0).unwrap();
    }
}
