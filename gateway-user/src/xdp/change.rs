//! The order in which a policy change reaches the XDP maps. The maps cannot
//! change all at once, so every state in between must be safe: no hostname's
//! minimum (nor the no-SNI one) is ever below both its old and its new value,
//! and the floor (what a hello whose SNI is not visible is refused below) is
//! never above any minimum in force (the filter fails open), nor below both
//! the old and the new floor.
//!
//! The plan:
//! 1. the floor drops to the lower of old and new, and the ports change;
//! 2. hostnames given their own minimum (new or changed) get it;
//! 3. the zone and no-SNI minimums drop to the lower of old and new;
//! 4. hostnames that lose their own minimum get the new zone minimum as an
//!    entry of their own, so the old zone's lower value never reaches them;
//! 5. the configuration takes its new values;
//! 6. the entries of step 4 are deleted (they now equal the zone's).

use imbl::ordmap::DiffItem;

use super::XdpPolicy;
use crate::{config::RefuseMode, tls_version::TlsVersion};

/// One write to the maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The configuration entry: zone, no-SNI and floor minimums, refuse mode.
    Config {
        /// Minimum for an SNI without an entry.
        zone: TlsVersion,
        /// Minimum for a hello without SNI.
        no_sni: TlsVersion,
        /// Minimum for a hello whose SNI is not visible.
        floor: TlsVersion,
        /// Reset or drop.
        refuse: RefuseMode,
    },
    /// The TLS port bitmap, as the new policy has it.
    Ports,
    /// A hostname's entry, written.
    Put(String, TlsVersion),
    /// A hostname's entry, deleted.
    Delete(String),
}

/// The writes that take the maps from `old` to `new`, in a safe order.
pub fn plan(old: &XdpPolicy, new: &XdpPolicy) -> Vec<Step> {
    let floor = old.floor().min(new.floor());
    let mut steps = vec![Step::Config {
        zone: old.zone_min,
        no_sni: old.no_sni_min,
        floor,
        refuse: old.refuse,
    }];
    if old.ports != new.ports {
        steps.push(Step::Ports);
    }
    let mut losing = Vec::new();
    for change in old.hosts().diff(new.hosts()) {
        match change {
            DiffItem::Add(name, min)
            | DiffItem::Update {
                new: (name, min), ..
            } => {
                steps.push(Step::Put(name.clone(), *min));
            }
            DiffItem::Remove(name, _) => losing.push(name.clone()),
        }
    }
    steps.push(Step::Config {
        zone: old.zone_min.min(new.zone_min),
        no_sni: old.no_sni_min.min(new.no_sni_min),
        floor,
        refuse: old.refuse,
    });
    steps.extend(losing.iter().map(|n| Step::Put(n.clone(), new.zone_min)));
    steps.push(Step::Config {
        zone: new.zone_min,
        no_sni: new.no_sni_min,
        floor: new.floor(),
        refuse: new.refuse,
    });
    steps.extend(losing.into_iter().map(Step::Delete));
    steps
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// What the maps hold, as far as minimums go.
    #[derive(Clone, Debug, PartialEq)]
    struct Maps {
        zone: TlsVersion,
        no_sni: TlsVersion,
        floor: TlsVersion,
        hosts: BTreeMap<String, TlsVersion>,
    }

    impl Maps {
        fn of(p: &XdpPolicy) -> Maps {
            Maps {
                zone: p.zone_min,
                no_sni: p.no_sni_min,
                floor: p.floor(),
                hosts: p.hosts().iter().map(|(k, v)| (k.clone(), *v)).collect(),
            }
        }

        fn min_for(&self, name: &str) -> TlsVersion {
            self.hosts.get(name).copied().unwrap_or(self.zone)
        }

        fn write(&mut self, step: &Step) {
            match step {
                Step::Config {
                    zone,
                    no_sni,
                    floor,
                    ..
                } => (self.zone, self.no_sni, self.floor) = (*zone, *no_sni, *floor),
                Step::Ports => {}
                Step::Put(name, min) => {
                    self.hosts.insert(name.clone(), *min);
                }
                Step::Delete(name) => {
                    self.hosts.remove(name);
                }
            }
        }
    }

    const NAMES: [&str; 4] = ["a.test", "b.test", "c.test", "unlisted.test"];

    fn version() -> impl Strategy<Value = TlsVersion> {
        prop::sample::select(TlsVersion::ALL.to_vec())
    }

    fn policy() -> impl Strategy<Value = XdpPolicy> {
        let hosts = prop::collection::vec(prop::option::of(version()), 3);
        (version(), version(), hosts).prop_map(|(zone, no_sni, hosts)| {
            let mut p = XdpPolicy::uniform(zone);
            p.no_sni_min = no_sni;
            for (name, min) in NAMES.iter().zip(hosts) {
                p.set_host(name, min).unwrap();
            }
            p
        })
    }

    proptest! {
        #[test]
        fn no_state_between_two_policies_is_weaker_than_both(old in policy(), new in policy()) {
            let (from, to) = (Maps::of(&old), Maps::of(&new));
            let mut maps = from.clone();
            for step in plan(&old, &new) {
                maps.write(&step);
                for name in NAMES {
                    let (now, was, will) = (maps.min_for(name), from.min_for(name), to.min_for(name));
                    prop_assert!(now >= was.min(will), "{name} at {now} after {step:?}");
                    prop_assert!(maps.floor <= now, "floor above {name} after {step:?}");
                }
                prop_assert!(maps.no_sni >= from.no_sni.min(to.no_sni));
                prop_assert!(maps.floor <= maps.no_sni && maps.floor <= maps.zone);
                prop_assert!(maps.floor >= from.floor.min(to.floor));
            }
            prop_assert_eq!(maps, to);
        }
    }
}
