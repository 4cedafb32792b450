//! The program's per-CPU counters, summed for reading.

use gateway_common::Stat;

use super::StatsArray;

/// The `STATS` map, shared between the filter and the metrics endpoint.
pub struct StatsMap {
    map: StatsArray,
}

/// A snapshot of every counter, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    values: Vec<u64>,
}

impl Counters {
    /// The value of one counter.
    pub fn get(&self, stat: Stat) -> u64 {
        self.values.get(stat as usize).copied().unwrap_or(0)
    }

    /// Every outcome counter (`pass`/`drop`) with its value.
    pub fn outcomes(&self) -> impl Iterator<Item = (Stat, u64)> + '_ {
        Stat::ALL
            .into_iter()
            .filter(|s| s.verdict().is_some())
            .map(|s| (s, self.get(s)))
    }

    /// Packets refused (sum of the `drop` outcomes).
    pub fn dropped(&self) -> u64 {
        self.outcomes()
            .filter(|(s, _)| s.verdict() == Some("drop"))
            .map(|(_, n)| n)
            .sum()
    }
}

impl StatsMap {
    pub(super) fn new(map: StatsArray) -> StatsMap {
        StatsMap { map }
    }

    /// Reads every counter, summed over CPUs.
    pub fn read(&self) -> anyhow::Result<Counters> {
        let values = self
            .per_cpu()?
            .into_iter()
            .map(|cpus| cpus.iter().sum())
            .collect();
        Ok(Counters { values })
    }

    /// Reads every counter for every CPU: `[stat][cpu]`.
    pub(super) fn per_cpu(&self) -> anyhow::Result<Vec<Vec<u64>>> {
        Stat::ALL
            .into_iter()
            .map(|s| Ok(self.map.get(&(s as u32), 0)?.to_vec()))
            .collect()
    }
}
