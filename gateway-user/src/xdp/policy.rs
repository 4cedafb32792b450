//! The XDP filter's policy: minimum versions per hostname and for the zone, and
//! the ports that carry TLS; and how it is written into the program's maps.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use aya::maps::{Array, HashMap};
use gateway_common::{
    FilterConfig, FlowKey, HostPolicy, MAX_SNI_LEN, PORT_BITMAP_WORDS, REFUSE_DROP, REFUSE_RESET,
    maps, sni,
};

use super::XdpFilter;
use crate::{
    config::{Config, RefuseMode},
    tls_version::TlsVersion,
};

/// What the XDP filter enforces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdpPolicy {
    /// Minimum for an SNI without its own entry (and every subdomain of a wildcard).
    pub zone_min: TlsVersion,
    /// Minimum for a ClientHello without SNI.
    pub no_sni_min: TlsVersion,
    /// Exact hostnames (lowercase) with their own minimum.
    pub hosts: BTreeMap<String, TlsVersion>,
    /// TCP ports whose segments are inspected.
    pub ports: BTreeSet<u16>,
    /// What happens to a refused hello.
    pub refuse: RefuseMode,
}

impl XdpPolicy {
    /// A policy with one minimum for everything, on the default ports.
    pub fn uniform(min: TlsVersion) -> XdpPolicy {
        XdpPolicy {
            zone_min: min,
            no_sni_min: min,
            hosts: BTreeMap::new(),
            ports: crate::config::DEFAULT_TLS_PORTS.into_iter().collect(),
            refuse: RefuseMode::default(),
        }
    }

    /// The policy a configuration describes. A hostname without its own minimum
    /// needs no entry: the zone's applies to it, as to any unknown SNI.
    pub fn from_config(config: &Config) -> XdpPolicy {
        let zone_min = config.zone.min_tls_version;
        XdpPolicy {
            zone_min,
            no_sni_min: config.zone.no_sni_min_tls_version.unwrap_or(zone_min),
            hosts: config
                .hostnames
                .iter()
                .filter_map(|h| Some((h.name.to_ascii_lowercase(), h.min_tls_version?)))
                .collect(),
            ports: config.xdp.ports.iter().copied().collect(),
            refuse: config.xdp.refuse,
        }
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
        self.hosts
            .values()
            .copied()
            .chain([self.zone_min, self.no_sni_min])
            .min()
            .unwrap_or(self.zone_min)
    }

    fn filter_config(&self, flows: FlowConfig) -> FilterConfig {
        FilterConfig {
            zone_min: self.zone_min.wire(),
            no_sni_min: self.no_sni_min.wire(),
            floor_min: self.floor().wire(),
            refuse_mode: match self.refuse {
                RefuseMode::Reset => REFUSE_RESET,
                RefuseMode::Drop => REFUSE_DROP,
            },
            flow_seed: flows.seed,
            anchor_mask: flows.anchor_mask,
            hello_mask: flows.hello_mask,
        }
    }

    /// The `HOST_POLICY` entries: SNI fingerprint → policy. Two names whose map
    /// keys collide (a 1 in 2^64 event) are refused rather than confused.
    fn host_entries(&self) -> anyhow::Result<BTreeMap<u64, HostPolicy>> {
        let mut entries = BTreeMap::new();
        let mut owners: BTreeMap<u64, &str> = BTreeMap::new();
        for (name, min) in &self.hosts {
            anyhow::ensure!(
                !name.is_empty() && name.len() <= MAX_SNI_LEN,
                "hostname {name:?} cannot be an SNI (1 to {MAX_SNI_LEN} bytes)"
            );
            let [key, check] = sni::fingerprint(name.as_bytes());
            if let Some(other) = owners.insert(key, name) {
                anyhow::bail!(
                    "hostnames {other:?} and {name:?} have the same SNI fingerprint; rename one"
                );
            }
            entries.insert(
                key,
                HostPolicy {
                    check,
                    min_version: min.wire(),
                    reserved: [0; 3],
                },
            );
        }
        Ok(entries)
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
    /// Writes `policy` into the program's maps while it keeps running.
    ///
    /// The maps cannot change all at once, so the order keeps every intermediate
    /// state safe: first the floor drops to the lower of old and new (never refuse
    /// an unseen SNI above some hostname's minimum), then ports and hostnames
    /// change one entry at a time (each entry is always either its old or its new
    /// value), and last the zone values and the final floor.
    ///
    /// Everything that can refuse the policy (names, fingerprint collisions) is
    /// checked before the first write, so a refused policy changes nothing.
    pub fn apply(&mut self, policy: &XdpPolicy) -> anyhow::Result<()> {
        let new = policy.filter_config(self.flow_config());
        let entries = policy.host_entries()?;
        {
            let mut config: Array<_, FilterConfig> = Array::try_from(self.map_mut(maps::CONFIG)?)?;
            let mut old = config.get(&0, 0).context("reading CONFIG")?;
            if old != FilterConfig::default() {
                old.floor_min = old.floor_min.min(new.floor_min);
            } else {
                old.floor_min = new.floor_min;
            }
            config.set(0, old, 0).context("writing CONFIG")?;
        }
        {
            let mut ports: Array<_, u64> = Array::try_from(self.map_mut(maps::TLS_PORTS)?)?;
            for (i, word) in policy.port_bitmap().into_iter().enumerate() {
                if ports.get(&(i as u32), 0)? != word {
                    ports.set(i as u32, word, 0).context("writing TLS_PORTS")?;
                }
            }
        }
        {
            let mut hosts: HashMap<_, u64, HostPolicy> =
                HashMap::try_from(self.map_mut(maps::HOST_POLICY)?)?;
            // Stale entries first, so the map never holds old and new names at once.
            let stale: Vec<u64> = hosts
                .keys()
                .filter_map(Result::ok)
                .filter(|k| !entries.contains_key(k))
                .collect();
            for key in stale {
                hosts
                    .remove(&key)
                    .context("removing a stale hostname policy")?;
            }
            for (key, value) in &entries {
                if hosts.get(key, 0).ok().as_ref() != Some(value) {
                    hosts
                        .insert(key, value, 0)
                        .context("writing a hostname policy")?;
                }
            }
        }
        self.write_config(new)
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
        }
    }

    fn write_config(&mut self, new: FilterConfig) -> anyhow::Result<()> {
        let mut config: Array<_, FilterConfig> = Array::try_from(self.map_mut(maps::CONFIG)?)?;
        config.set(0, new, 0).context("writing CONFIG")?;
        Ok(())
    }
}

/// The flow-table fields of the program's configuration.
#[derive(Clone, Copy)]
struct FlowConfig {
    seed: u32,
    anchor_mask: u32,
    hello_mask: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_is_the_lowest_minimum() {
        let mut p = XdpPolicy::uniform(TlsVersion::Tls12);
        assert_eq!(p.floor(), TlsVersion::Tls12);
        p.hosts.insert("old.example.com".into(), TlsVersion::Tls10);
        p.hosts.insert("new.example.com".into(), TlsVersion::Tls13);
        assert_eq!(p.floor(), TlsVersion::Tls10);
        assert_eq!(p.min_for(Some("new.example.com")), TlsVersion::Tls13);
        assert_eq!(p.min_for(Some("other.example.com")), TlsVersion::Tls12);
        assert_eq!(p.min_for(None), TlsVersion::Tls12);
    }

    #[test]
    fn wildcard_hostnames_only_cover_the_exact_name() {
        let config = Config::parse(
            "[zone]\nmin_tls_version = \"1.1\"\n[[hostname]]\nname = \"saas.test\"\n\
             min_tls_version = \"1.3\"\nwildcard = true\n[[hostname]]\nname = \"plain.test\"\n",
        )
        .unwrap();
        let p = XdpPolicy::from_config(&config);
        assert_eq!(p.min_for(Some("saas.test")), TlsVersion::Tls13);
        assert_eq!(p.min_for(Some("sub1.saas.test")), TlsVersion::Tls11);
        assert_eq!(p.min_for(Some("plain.test")), TlsVersion::Tls11);
        assert!(
            !p.hosts.contains_key("plain.test"),
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
