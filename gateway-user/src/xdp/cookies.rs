//! SYN cookies from userspace (`[xdp] syn_cookies`): the key ring the programs
//! mint and check cookies with, the options the kernel allows, and which TLS
//! ports answer SYNs with cookies. [`CookieControl::tick`] runs every
//! [`TICK`]: it rotates keys ahead of time, rereads the sysctls once a second,
//! and in `auto` mode turns a port on when its SYN rate reaches the threshold
//! and off when the rate has stayed under half of it for [`CALM_FOR`].

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use aya::maps::{Array, MapData, PerCpuArray};
use gateway_common::syncookie::{
    ALLOW_ECN, ALLOW_SACK, ALLOW_TIMESTAMPS, ALLOW_WSCALE, CookieConfig, CookieKey, CookieStat,
    KEY_RING, PORT_ANSWER, PORT_CHECK, SYN_COUNTERS, key_index, time_slot,
};
use log::{info, warn};

use crate::config::{SynCookies, XdpSection};

/// How often [`CookieControl::tick`] should run.
pub const TICK: Duration = Duration::from_millis(100);
/// How long `auto` keeps answering once the rate is under half the threshold.
pub const CALM_FOR: Duration = Duration::from_secs(10);
/// How long a port still checks cookies on ACKs after it stops answering
/// SYNs: two key slots, the life of a cookie.
const CHECK_AFTER: Duration = Duration::from_secs(140);
/// How often the sysctls are read again.
const SYSCTL_EVERY: Duration = Duration::from_secs(1);

/// Locks the control; a panic elsewhere while holding it leaves nothing half-written.
pub fn lock(control: &std::sync::Mutex<CookieControl>) -> std::sync::MutexGuard<'_, CookieControl> {
    control
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `[xdp] syn_cookies` and `syn_cookie_rate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookieSettings {
    /// Off, on, or auto.
    pub mode: SynCookies,
    /// SYNs per second on a port at which `auto` engages.
    pub rate: u32,
}

impl CookieSettings {
    /// The settings an `[xdp]` section asks for.
    pub fn of(section: &XdpSection) -> CookieSettings {
        CookieSettings {
            mode: section.syn_cookies,
            rate: section.syn_cookie_rate,
        }
    }
}

/// The cookie maps, taken from the loaded object.
pub(super) struct CookieMaps {
    pub(super) keys: Array<MapData, CookieKey>,
    pub(super) config: Array<MapData, CookieConfig>,
    pub(super) ports: Array<MapData, u8>,
    pub(super) syns: PerCpuArray<MapData, u64>,
    pub(super) stats: PerCpuArray<MapData, u64>,
}

/// What `auto` mode knows about one TLS port.
#[derive(Clone, Copy, Debug, Default)]
struct PortState {
    /// The port's SYN counter at the last tick, and when that was.
    last: Option<(u64, Instant)>,
    /// SYNs per second over the last tick.
    rate: f64,
    /// Answering SYNs with cookies (auto mode's decision).
    engaged: bool,
    /// Since when the rate has been under half the threshold.
    calm_since: Option<Instant>,
    /// ACKs are checked until then after answering stopped.
    check_until: Option<Instant>,
    /// The flags last written to `COOKIE_PORTS`.
    written: u8,
}

/// The userspace half of the SYN cookies; shared by the filter (ports), the
/// ticking task and the metrics collector.
pub struct CookieControl {
    maps: CookieMaps,
    settings: CookieSettings,
    /// Set once the TC program is attached: cookies can be answered.
    ready: bool,
    ports: BTreeMap<u16, PortState>,
    /// The slot each ring entry was last written for.
    written_slots: [u64; KEY_RING as usize],
    /// What the sysctls allow; `None` while `tcp_syncookies` is 0.
    allow: Option<u32>,
    sysctls_read: Option<Instant>,
}

impl CookieControl {
    pub(super) fn new(maps: CookieMaps) -> CookieControl {
        CookieControl {
            maps,
            settings: CookieSettings {
                mode: SynCookies::Off,
                rate: 0,
            },
            ready: false,
            ports: BTreeMap::new(),
            written_slots: [0; KEY_RING as usize],
            allow: None,
            sysctls_read: None,
        }
    }

    /// Starts answering as `settings` say (the TC program is attached).
    pub(super) fn start(&mut self, settings: CookieSettings) -> anyhow::Result<()> {
        self.settings = settings;
        self.ready = true;
        self.tick(Instant::now())
    }

    /// Takes the settings a configuration (re)load asks for: in force at once
    /// once started; before that, they are what [`CookieControl::start`] gets.
    pub(super) fn follow(&mut self, settings: CookieSettings) {
        if settings == self.settings {
            return;
        }
        if self.ready {
            info!(
                "SYN cookies now {:?} (at {} SYNs/s per port)",
                settings.mode, settings.rate
            );
        }
        self.settings = settings;
    }

    /// Stops answering and checking on every port.
    pub(super) fn stop(&mut self) {
        self.ready = false;
        for (port, state) in self.ports.iter_mut() {
            if state.written != 0 && self.maps.ports.set(*port as u32, 0, 0).is_ok() {
                state.written = 0;
            }
        }
    }

    /// The TLS ports changed: ports no longer listed stop answering.
    pub(super) fn set_ports(&mut self, ports: &BTreeSet<u16>) {
        let gone: Vec<u16> = self
            .ports
            .keys()
            .filter(|p| !ports.contains(p))
            .copied()
            .collect();
        for port in gone {
            if let Err(e) = self.maps.ports.set(port as u32, 0, 0) {
                warn!("SYN cookies: clearing port {port}: {e}");
            }
            self.ports.remove(&port);
        }
        for port in ports {
            self.ports.entry(*port).or_default();
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> CookieSettings {
        self.settings
    }

    /// The ports answering SYNs with cookies now.
    pub fn engaged(&self) -> Vec<u16> {
        self.ports
            .iter()
            .filter(|(_, s)| s.written & PORT_ANSWER != 0)
            .map(|(p, _)| *p)
            .collect()
    }

    /// Every TLS port with its SYN rate over the last tick.
    pub fn syn_rates(&self) -> Vec<(u16, f64)> {
        self.ports.iter().map(|(p, s)| (*p, s.rate)).collect()
    }

    /// The counters, summed over CPUs, by [`CookieStat`].
    pub fn counters(&self) -> anyhow::Result<Vec<(CookieStat, u64)>> {
        CookieStat::ALL
            .into_iter()
            .map(|stat| {
                let cpus = self.maps.stats.get(&(stat as u32), 0)?;
                Ok((stat, cpus.iter().sum()))
            })
            .collect()
    }

    /// One step: keys ahead of time, sysctls, rates, flags.
    pub fn tick(&mut self, now: Instant) -> anyhow::Result<()> {
        if !self.ready {
            return Ok(());
        }
        self.rotate_keys()?;
        if self
            .sysctls_read
            .is_none_or(|at| now.duration_since(at) >= SYSCTL_EVERY)
        {
            self.read_sysctls()?;
            self.sysctls_read = Some(now);
        }
        let counts = self.syn_counts()?;
        let usable = self.allow.is_some();
        let settings = self.settings;
        for (port, state) in self.ports.iter_mut() {
            let count = counts[(*port as u32 % SYN_COUNTERS) as usize];
            state.observe(count, now, settings);
            let flags = if usable {
                state.flags(now, settings)
            } else {
                0
            };
            if flags != state.written {
                self.maps.ports.set(*port as u32, flags, 0)?;
                log_change(*port, state.written, flags, state.rate, settings);
                state.written = flags;
            }
        }
        Ok(())
    }

    /// Test hook: the key ring as the programs read it, by ring index.
    pub fn key_ring(&self) -> anyhow::Result<[CookieKey; KEY_RING as usize]> {
        let at = |i: u32| self.maps.keys.get(&i, 0);
        Ok([at(0)?, at(1)?, at(2)?])
    }

    /// Benchmark hook: sets a port's `PORT_*` flags directly, as auto or on
    /// mode would (the tick, once started, keeps them to its own decisions).
    pub fn set_port_flags(&mut self, port: u16, flags: u8) -> anyhow::Result<()> {
        self.maps.ports.set(port as u32, flags, 0)?;
        Ok(())
    }

    /// Test hook: writes the options the programs may agree to
    /// (`ALLOW_*` bits) as [`CookieControl::tick`] does from the sysctls.
    pub fn write_allow(&mut self, allow: u32) -> anyhow::Result<()> {
        let config = CookieConfig { allow, reserved: 0 };
        self.maps.config.set(0, config, 0)?;
        Ok(())
    }

    /// Writes the keys of the current and the next slot where missing; the
    /// previous slot's key stays, so its cookies still check. The tick does
    /// this; a test running the programs without an interface calls it.
    pub fn rotate_keys(&mut self) -> anyhow::Result<()> {
        let slot = time_slot(monotonic_ns());
        for s in [slot, slot + 1] {
            let index = key_index(s);
            if self.written_slots[index as usize] == s {
                continue;
            }
            let key = CookieKey {
                slot: s,
                key: random_key()?,
            };
            self.maps.keys.set(index, key, 0)?;
            self.written_slots[index as usize] = s;
        }
        Ok(())
    }

    fn read_sysctls(&mut self) -> anyhow::Result<()> {
        let on = |name: &str| sysctl(name).map(|v| v != 0);
        let allow = if sysctl("tcp_syncookies")? == 0 {
            None
        } else {
            let mut allow = 0;
            for (name, bit) in [
                ("tcp_window_scaling", ALLOW_WSCALE),
                ("tcp_sack", ALLOW_SACK),
                ("tcp_timestamps", ALLOW_TIMESTAMPS),
                ("tcp_ecn", ALLOW_ECN),
            ] {
                if on(name)? {
                    allow |= bit;
                }
            }
            Some(allow)
        };
        if allow != self.allow {
            match allow {
                None => warn!(
                    "SYN cookies paused: net.ipv4.tcp_syncookies is 0, and the kernel then \
                     refuses connections built from cookies; set it to 1 or 2"
                ),
                Some(bits) => {
                    let config = CookieConfig {
                        allow: bits,
                        reserved: 0,
                    };
                    self.maps.config.set(0, config, 0)?;
                }
            }
            self.allow = allow;
        }
        Ok(())
    }

    fn syn_counts(&self) -> anyhow::Result<Vec<u64>> {
        (0..SYN_COUNTERS)
            .map(|i| Ok(self.maps.syns.get(&i, 0)?.iter().sum()))
            .collect()
    }
}

impl PortState {
    /// Takes in the port's SYN counter and updates auto mode's decision.
    fn observe(&mut self, count: u64, now: Instant, settings: CookieSettings) {
        if let Some((last, at)) = self.last {
            let secs = now.duration_since(at).as_secs_f64();
            if secs > 0.0 {
                self.rate = count.saturating_sub(last) as f64 / secs;
            }
        }
        self.last = Some((count, now));
        let threshold = settings.rate as f64;
        if self.rate >= threshold {
            self.engaged = true;
        }
        if self.rate * 2.0 < threshold {
            let since = *self.calm_since.get_or_insert(now);
            if self.engaged && now.duration_since(since) >= CALM_FOR {
                self.engaged = false;
                self.check_until = Some(now + CHECK_AFTER);
            }
        } else {
            self.calm_since = None;
        }
    }

    /// The flags the port should have now.
    fn flags(&self, now: Instant, settings: CookieSettings) -> u8 {
        match settings.mode {
            SynCookies::Off => 0,
            SynCookies::On => PORT_ANSWER | PORT_CHECK,
            SynCookies::Auto if self.engaged => PORT_ANSWER | PORT_CHECK,
            SynCookies::Auto if self.check_until.is_some_and(|t| now < t) => PORT_CHECK,
            SynCookies::Auto => 0,
        }
    }
}

fn log_change(port: u16, old: u8, new: u8, rate: f64, settings: CookieSettings) {
    let answering = |f: u8| f & PORT_ANSWER != 0;
    match (answering(old), answering(new)) {
        (false, true) if settings.mode == SynCookies::Auto => info!(
            "SYN cookies engaged on port {port}: {rate:.0} SYNs/s (threshold {})",
            settings.rate
        ),
        (true, false) => info!("SYN cookies disengaged on port {port}: {rate:.0} SYNs/s"),
        _ => {}
    }
}

/// A `net.ipv4.*` sysctl of the gateway's network namespace.
fn sysctl(name: &str) -> anyhow::Result<u64> {
    let path = format!("/proc/sys/net/ipv4/{name}");
    let text =
        std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("reading {path}: {e}"))?;
    text.trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("{path} holds {:?}: {e}", text.trim()))
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock the cookie programs read
/// (its coarse form there, which is at most a tick behind).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A fresh SipHash key from BoringSSL's generator.
fn random_key() -> anyhow::Result<[u64; 2]> {
    let mut b = [0u8; 16];
    boring::rand::rand_bytes(&mut b).map_err(|e| anyhow::anyhow!("no random cookie key: {e}"))?;
    let (a, c) = b.split_at(8);
    Ok([
        u64::from_ne_bytes(a.try_into()?),
        u64::from_ne_bytes(c.try_into()?),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTO: CookieSettings = CookieSettings {
        mode: SynCookies::Auto,
        rate: 1000,
    };

    #[test]
    fn auto_engages_at_the_rate_and_calms_down_after_ten_seconds_under_half() {
        let start = Instant::now();
        let mut port = PortState::default();
        let mut count = 0;
        let mut at = start;
        let mut step = |port: &mut PortState, per_tick: u64| {
            count += per_tick;
            at += TICK;
            port.observe(count, at, AUTO);
            port.flags(at, AUTO)
        };
        assert_eq!(step(&mut port, 0), 0);
        assert_eq!(step(&mut port, 50), 0, "500/s is under the threshold");
        assert_eq!(step(&mut port, 150), PORT_ANSWER | PORT_CHECK);
        // 600/s: under the threshold but not under half of it: stays engaged.
        for _ in 0..200 {
            assert_eq!(step(&mut port, 60), PORT_ANSWER | PORT_CHECK);
        }
        // 100/s: calm; disengages after CALM_FOR, then only checks ACKs.
        let mut ticks = 0;
        while step(&mut port, 10) & PORT_ANSWER != 0 {
            ticks += 1;
            assert!(ticks < 200, "never calmed down");
        }
        assert!(ticks >= 99, "calmed down after {ticks} ticks");
        assert_eq!(port.flags(at, AUTO), PORT_CHECK);
        assert_eq!(port.flags(at + CHECK_AFTER, AUTO), 0);
    }

    #[test]
    fn on_and_off_ignore_the_rate() {
        let now = Instant::now();
        let mut port = PortState::default();
        port.observe(0, now, AUTO);
        port.observe(100_000, now + TICK, AUTO);
        let on = CookieSettings {
            mode: SynCookies::On,
            ..AUTO
        };
        let off = CookieSettings {
            mode: SynCookies::Off,
            ..AUTO
        };
        assert_eq!(
            PortState::default().flags(now, on),
            PORT_ANSWER | PORT_CHECK
        );
        assert_eq!(port.flags(now, off), 0);
    }
}
