//! The XDP filter's policy: minimum versions per hostname and for the zone, and
//! the ports that carry TLS; and how it is written into the program's maps.

use std::collections::BTreeSet;

use anyhow::Context;
use aya::maps::{Array, HashMap};
use gateway_common::{
    FilterConfig, FlowKey, HostPolicy, MAX_SNI_LEN, PORT_BITMAP_WORDS, REFUSE_DROP, REFUSE_RESET,
    maps, sni,
};

use super::{
    XdpFilter,
    change::{self, Step},
};
use crate::{
    config::{Config, RefuseMode, delta::Delta},
    tls_version::TlsVersion,
};

/// What the XDP filter enforces. Its hostname table is a persistent map, so
/// [`XdpPolicy::update`] and [`XdpFilter::apply_change`] cost what a change touches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpPolicy {
    /// Minimum for an SNI without its own entry (and every subdomain of a wildcard).
    pub zone_min: TlsVersion,
    /// Minimum for a ClientHello without SNI.
    pub no_sni_min: TlsVersion,
    /// Exact hostnames (lowercase) with their own minimum.
    hosts: imbl::OrdMap<String, TlsVersion>,
    /// Map key (SNI fingerprint) → the hostname that has it.
    keys: imbl::HashMap<u64, String>,
    /// How many hostnames have each minimum (by `TlsVersion::ALL` index): the floor in O(1).
    minimums: [usize; 4],
    /// TCP ports whose segments are inspected.
    pub ports: BTreeSet<u16>,
    /// What happens to a refused hello.
    pub refuse: RefuseMode,
    /// Whether SYNs are answered with cookies (`[xdp] syn_cookies`).
    pub syn_cookies: super::cookies::CookieSettings,
}

impl XdpPolicy {
    /// A policy with one minimum for everything, on the default ports.
    pub fn uniform(min: TlsVersion) -> XdpPolicy {
        XdpPolicy {
            zone_min: min,
            no_sni_min: min,
            hosts: imbl::OrdMap::new(),
            keys: imbl::HashMap::new(),
            minimums: [0; 4],
            ports: crate::config::DEFAULT_TLS_PORTS.into_iter().collect(),
            refuse: RefuseMode::default(),
            syn_cookies: super::cookies::CookieSettings::of(&Default::default()),
        }
    }

    /// The policy a configuration describes. A hostname without its own minimum
    /// needs no entry: the zone's applies to it, as to any unknown SNI.
    pub fn from_config(config: &Config) -> anyhow::Result<XdpPolicy> {
        let mut p = XdpPolicy::uniform(config.zone.min_tls_version);
        p.ports = config.xdp.ports.iter().copied().collect();
        p.refuse = config.xdp.refuse;
        p.syn_cookies = super::cookies::CookieSettings::of(&config.xdp);
        p.update(&Delta::everything(config))
    }

    /// The next policy: this one with `delta` applied (only the hostnames it
    /// names are looked at).
    pub fn update(&self, delta: &Delta) -> anyhow::Result<XdpPolicy> {
        let mut next = self.clone();
        if let Some(zone) = &delta.zone {
            next.zone_min = zone.min_tls_version;
            next.no_sni_min = zone.no_sni_min_tls_version.unwrap_or(zone.min_tls_version);
        }
        for name in &delta.removed_hostnames {
            next.set_host(name, None)?;
        }
        for h in &delta.hostnames {
            next.set_host(&h.name.to_ascii_lowercase(), h.min_tls_version)?;
        }
        Ok(next)
    }

    /// Gives `name` its own minimum, or none (the zone's). Refuses a name that
    /// cannot be an SNI, and two names whose map keys collide (a 1 in 2^64
    /// event) rather than confusing them.
    pub fn set_host(&mut self, name: &str, min: Option<TlsVersion>) -> anyhow::Result<()> {
        let Some(min) = min else {
            if let Some(old) = self.hosts.remove(name) {
                self.minimums[old.index()] -= 1;
                self.keys.remove(&sni::fingerprint(name.as_bytes())[0]);
            }
            return Ok(());
        };
        anyhow::ensure!(
            !name.is_empty() && name.len() <= MAX_SNI_LEN,
            "hostname {name:?} cannot be an SNI (1 to {MAX_SNI_LEN} bytes)"
        );
        let [key, _] = sni::fingerprint(name.as_bytes());
        if let Some(other) = self.keys.get(&key).filter(|other| *other != name) {
            anyhow::bail!(
                "hostnames {other:?} and {name:?} have the same SNI fingerprint; rename one"
            );
        }
        self.keys.insert(key, name.to_string());
        if let Some(old) = self.hosts.insert(name.to_string(), min) {
            self.minimums[old.index()] -= 1;
        }
        self.minimums[min.index()] += 1;
        Ok(())
    }

    /// The hostnames with their own minimum.
    pub fn hosts(&self) -> &imbl::OrdMap<String, TlsVersion> {
        &self.hosts
    }

    /// The minimum that applies to a ClientHello with this SNI (`None`: no SNI).
    pub fn min_for(&self, sni: Option<&str>) -> TlsVersion {
        match sni {
            None => self.no_sni_min,
            Some(name) => self.hosts.get(name).copied().unwrap_or(self.zone_min),
        }
    }

    /// The lowest minimum of all: a hello whose SNI is not visible is refused only below it.
    pub fn floor(&self) -> TlsVersion {
        let hosts = TlsVersion::ALL
            .into_iter()
            .find(|v| self.minimums[v.index()] > 0);
        hosts
            .into_iter()
            .chain([self.zone_min, self.no_sni_min])
            .min()
            .unwrap_or(self.zone_min)
    }

    /// The `HOST_POLICY` entry of a hostname.
    fn entry(name: &str, min: TlsVersion) -> (u64, HostPolicy) {
        let [key, check] = sni::fingerprint(name.as_bytes());
        let value = HostPolicy {
            check,
            min_version: min.wire(),
            reserved: [0; 3],
        };
        (key, value)
    }

    fn filter_config(&self, flows: FlowConfig) -> FilterConfig {
        FilterConfig {
            zone_min: self.zone_min.wire(),
            no_sni_min: self.no_sni_min.wire(),
            floor_min: self.floor().wire(),
            refuse_mode: refuse_mode(self.refuse),
            flow_seed: flows.seed,
            anchor_mask: flows.anchor_mask,
            hello_mask: flows.hello_mask,
            event_budget: flows.event_budget,
        }
    }

    fn port_bitmap(&self) -> Vec<u64> {
        let mut words = vec![0u64; PORT_BITMAP_WORDS as usize];
        for port in &self.ports {
            words[(*port >> 6) as usize] |= 1 << (port & 63);
        }
        words
    }
}

impl XdpFilter {
    /// Writes `policy` into the program's maps while it keeps running, whatever
    /// they held (at attach, and after a failed write): every hostname entry is
    /// compared with the map.
    ///
    /// The maps cannot change all at once, so the order keeps every intermediate
    /// state safe: first the floor drops to the lower of old and new (never refuse
    /// an unseen SNI above some hostname's minimum), then ports and hostnames
    /// change one entry at a time (each entry is always either its old or its new
    /// value), and last the zone values and the final floor.
    pub fn apply(&mut self, policy: &XdpPolicy) -> anyhow::Result<()> {
        let new = policy.filter_config(self.flow_config());
        self.lower_floor(new.floor_min)?;
        self.write_ports(policy)?;
        let mut hosts: HashMap<_, u64, HostPolicy> =
            HashMap::try_from(self.map_mut(maps::HOST_POLICY)?)?;
        // Stale entries first, so the map never holds old and new names at once.
        let stale: Vec<u64> = hosts
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !policy.keys.contains_key(k))
            .collect();
        for key in stale {
            hosts
                .remove(&key)
                .context("removing a stale hostname policy")?;
        }
        for (name, min) in &policy.hosts {
            let (key, value) = XdpPolicy::entry(name, *min);
            if hosts.get(&key, 0).ok().as_ref() != Some(&value) {
                hosts
                    .insert(key, value, 0)
                    .context("writing a hostname policy")?;
            }
        }
        self.write_config(new)?;
        self.follow_cookie_settings(policy);
        Ok(())
    }

    /// Moves the maps from `old` (what they hold) to `new`, writing only the
    /// entries that differ, in the order of [`change::plan`]: no state in
    /// between is weaker than both policies.
    pub fn apply_change(&mut self, old: &XdpPolicy, new: &XdpPolicy) -> anyhow::Result<()> {
        for step in change::plan(old, new) {
            match step {
                Step::Config {
                    zone,
                    no_sni,
                    floor,
                    refuse,
                } => {
                    let mut config = new.filter_config(self.flow_config());
                    config.zone_min = zone.wire();
                    config.no_sni_min = no_sni.wire();
                    config.floor_min = floor.wire();
                    config.refuse_mode = refuse_mode(refuse);
                    self.write_config(config)?;
                }
                Step::Ports => self.write_ports(new)?,
                Step::Put(name, min) => {
                    let (key, value) = XdpPolicy::entry(&name, min);
                    self.host_map()?
                        .insert(key, value, 0)
                        .context("writing a hostname policy")?;
                }
                Step::Delete(name) => {
                    let (key, _) = XdpPolicy::entry(&name, TlsVersion::Tls12);
                    // An entry already gone (a failed earlier write) is gone either way.
                    let _ = self.host_map()?.remove(&key);
                }
            }
        }
        self.follow_cookie_settings(new);
        Ok(())
    }

    /// `[xdp] syn_cookies` and `syn_cookie_rate` follow the configuration live.
    fn follow_cookie_settings(&mut self, policy: &XdpPolicy) {
        super::cookies::lock(&self.cookies).follow(policy.syn_cookies);
    }

    fn host_map(&mut self) -> anyhow::Result<HashMap<&mut aya::maps::MapData, u64, HostPolicy>> {
        Ok(HashMap::try_from(self.map_mut(maps::HOST_POLICY)?)?)
    }

    /// Lowers the floor in force to `floor` if it is above it (first write).
    fn lower_floor(&mut self, floor: u16) -> anyhow::Result<()> {
        let mut config: Array<_, FilterConfig> = Array::try_from(self.map_mut(maps::CONFIG)?)?;
        let mut old = config.get(&0, 0).context("reading CONFIG")?;
        if old != FilterConfig::default() {
            old.floor_min = old.floor_min.min(floor);
        } else {
            old.floor_min = floor;
        }
        config.set(0, old, 0).context("writing CONFIG")?;
        Ok(())
    }

    fn write_ports(&mut self, policy: &XdpPolicy) -> anyhow::Result<()> {
        let mut ports: Array<_, u64> = Array::try_from(self.map_mut(maps::TLS_PORTS)?)?;
        for (i, word) in policy.port_bitmap().into_iter().enumerate() {
            if ports.get(&(i as u32), 0)? != word {
                ports.set(i as u32, word, 0).context("writing TLS_PORTS")?;
            }
        }
        super::cookies::lock(&self.cookies).set_ports(&policy.ports);
        Ok(())
    }

    /// Forgets every flow's reassembly and anchor state at once, by a new flow-hash
    /// seed, and the refused flows: `gateway xdp replay` does it between files,
    /// which are separate captures.
    pub fn forget_flows(&mut self) -> anyhow::Result<()> {
        {
            let mut refused: HashMap<_, FlowKey, u32> =
                HashMap::try_from(self.map_mut(maps::REFUSED_FLOWS)?)?;
            let keys: Vec<FlowKey> = refused.keys().filter_map(Result::ok).collect();
            for key in keys {
                // An entry the LRU evicted meanwhile is gone either way.
                let _ = refused.remove(&key);
            }
        }
        self.flow_seed = self.flow_seed.wrapping_add(0x9e37_79b9);
        let seed = self.flow_seed;
        let mut config: Array<_, FilterConfig> = Array::try_from(self.map_mut(maps::CONFIG)?)?;
        let mut current = config.get(&0, 0).context("reading CONFIG")?;
        current.flow_seed = seed;
        config.set(0, current, 0).context("writing CONFIG")?;
        Ok(())
    }

    fn flow_config(&self) -> FlowConfig {
        FlowConfig {
            seed: self.flow_seed,
            anchor_mask: self.tables.anchors - 1,
            hello_mask: self.tables.hello_flows - 1,
            event_budget: self.event_budget,
        }
    }

    /// Writes the refusal events' budget into CONFIG, the rest unchanged.
    pub(super) fn write_event_budget(&mut self) -> anyhow::Result<()> {
        let budget = self.event_budget;
        let mut config: Array<_, FilterConfig> = Array::try_from(self.map_mut(maps::CONFIG)?)?;
        let mut current = config.get(&0, 0).context("reading CONFIG")?;
        current.event_budget = budget;
        config.set(0, current, 0).context("writing CONFIG")?;
        Ok(())
    }

    fn write_config(&mut self, new: FilterConfig) -> anyhow::Result<()> {
        let mut config: Array<_, FilterConfig> = Array::try_from(self.map_mut(maps::CONFIG)?)?;
        config.set(0, new, 0).context("writing CONFIG")?;
        Ok(())
    }
}

/// The program's value for a refuse mode.
fn refuse_mode(mode: RefuseMode) -> u16 {
    match mode {
        RefuseMode::Reset => REFUSE_RESET,
        RefuseMode::Drop => REFUSE_DROP,
    }
}

/// The fields of the program's configuration the filter owns, not the
/// policy: the flow tables' seed and sizes, and the refusal events' budget.
#[derive(Clone, Copy)]
struct FlowConfig {
    seed: u32,
    anchor_mask: u32,
    hello_mask: u32,
    /// See `XdpFilter::take_refusal_events`.
    event_budget: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_is_the_lowest_minimum() {
        let mut p = XdpPolicy::uniform(TlsVersion::Tls12);
        assert_eq!(p.floor(), TlsVersion::Tls12);
        p.set_host("old.example.com", Some(TlsVersion::Tls10))
            .unwrap();
        p.set_host("new.example.com", Some(TlsVersion::Tls13))
            .unwrap();
        assert_eq!(p.floor(), TlsVersion::Tls10);
        assert_eq!(p.min_for(Some("new.example.com")), TlsVersion::Tls13);
        assert_eq!(p.min_for(Some("other.example.com")), TlsVersion::Tls12);
        assert_eq!(p.min_for(None), TlsVersion::Tls12);
        // The floor follows removals and changes, without a scan.
        p.set_host("old.example.com", None).unwrap();
        assert_eq!(p.floor(), TlsVersion::Tls12);
        p.set_host("new.example.com", Some(TlsVersion::Tls11))
            .unwrap();
        assert_eq!(p.floor(), TlsVersion::Tls11);
        p.set_host("new.example.com", Some(TlsVersion::Tls13))
            .unwrap();
        assert_eq!(p.floor(), TlsVersion::Tls12);
        assert!(p.set_host("", Some(TlsVersion::Tls13)).is_err());
    }

    #[test]
    fn wildcard_hostnames_only_cover_the_exact_name() {
        let config = Config::parse(
            "[zone]\nmin_tls_version = \"1.1\"\n[[hostname]]\nname = \"saas.test\"\n\
             min_tls_version = \"1.3\"\nwildcard = true\n[[hostname]]\nname = \"plain.test\"\n",
        )
        .unwrap();
        let p = XdpPolicy::from_config(&config).unwrap();
        assert_eq!(p.min_for(Some("saas.test")), TlsVersion::Tls13);
        assert_eq!(p.min_for(Some("sub1.saas.test")), TlsVersion::Tls11);
        assert_eq!(p.min_for(Some("plain.test")), TlsVersion::Tls11);
        assert!(
            !p.hosts().contains_key("plain.test"),
            "no entry needed for zone values"
        );
    }

    #[test]
    fn port_bitmap_has_one_bit_per_port() {
        let mut p = XdpPolicy::uniform(TlsVersion::Tls12);
        p.ports = [443, 8443, 65535, 1].into_iter().collect();
        let bits = p.port_bitmap();
        assert_eq!(bits.iter().map(|w| w.count_ones()).sum::<u32>(), 4);
        assert_ne!(bits[443 / 64] & (1 << (443 % 64)), 0);
        assert_ne!(bits[1023] & (1 << 63), 0);
    }
}
