//! What a node has installed, whether it follows etcd now, whether it leads,
//! and the metrics that show it; and the report it publishes.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use prometheus::{Gauge, IntCounter, IntGauge, Registry};
use serde::{Deserialize, Serialize};

/// What this node has installed and whether it follows etcd now.
pub struct Progress {
    applied: tokio::sync::watch::Sender<i64>,
    stale_since: Mutex<Option<Instant>>,
    last_error: Mutex<Option<String>>,
    leader: AtomicBool,
    /// The lease this node's report and leadership are on (0: none yet).
    lease: std::sync::atomic::AtomicI64,
    revision_gauge: IntGauge,
    stale_gauge: Gauge,
    /// Watches re-established after a failure.
    pub reconnects: IntCounter,
    /// Revisions refused.
    pub refused: IntCounter,
}

/// A node's report, as published under its key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's name.
    pub node: String,
    /// The revision it has installed.
    pub revision: i64,
    /// Why it refused the last revision it refused, if it is still behind.
    pub error: Option<String>,
    /// Whether it lost etcd (serving its last configuration).
    pub stale: bool,
    /// Whether it does the fleet's periodic work.
    pub leader: bool,
    /// When its report last changed (RFC 3339); the lease keeps it meanwhile.
    pub updated_on: String,
}

impl Progress {
    pub(super) fn new(registry: &Registry) -> anyhow::Result<Progress> {
        let revision_gauge = IntGauge::new(
            "gateway_config_revision",
            "The etcd revision of the configuration this node has installed.",
        )?;
        let stale_gauge = Gauge::new(
            "gateway_config_stale_seconds",
            "How long this node has been serving its last configuration without etcd (0: following).",
        )?;
        let reconnects = IntCounter::new(
            "gateway_config_watch_reconnects_total",
            "Times the watch on etcd was lost and made again.",
        )?;
        let refused = IntCounter::new(
            "gateway_config_refused_total",
            "Configuration revisions this node refused (it kept the last good one).",
        )?;
        for c in [
            Box::new(revision_gauge.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(stale_gauge.clone()),
            Box::new(reconnects.clone()),
            Box::new(refused.clone()),
        ] {
            registry.register(c)?;
        }
        Ok(Progress {
            applied: tokio::sync::watch::Sender::new(0),
            // Made at the process's start: it has not heard from etcd since,
            // so a start that waits for etcd in vain is stale from the first
            // moment, not from when the wait ends.
            stale_since: Mutex::new(Some(Instant::now())),
            last_error: Mutex::new(None),
            leader: AtomicBool::new(false),
            lease: Default::default(),
            revision_gauge,
            stale_gauge,
            reconnects,
            refused,
        })
    }

    /// The revision installed.
    pub fn applied(&self) -> i64 {
        *self.applied.borrow()
    }

    /// Records the revision installed (it clears a refusal's error).
    pub fn set_applied(&self, revision: i64) {
        self.applied.send_replace(revision);
        self.revision_gauge.set(revision);
        *lock(&self.last_error) = None;
    }

    /// Waits until `revision` is installed, up to `wait`; whether it is.
    pub async fn wait_applied(&self, revision: i64, wait: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(wait, rx.wait_for(|r| *r >= revision))
            .await
            .is_ok()
    }

    /// A receiver that sees each installed revision.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<i64> {
        self.applied.subscribe()
    }

    /// Records a refused revision.
    pub fn refuse(&self, revision: i64, why: String) {
        log::error!(
            "configuration revision {revision} refused, keeping revision {}: {why}",
            self.applied()
        );
        self.refused.inc();
        *lock(&self.last_error) = Some(format!("revision {revision} refused: {why}"));
        self.applied.send_modify(|_| {});
    }

    /// Why the last revision was refused, while this node is behind it.
    pub fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }

    /// Marks this node as following etcd, or not.
    pub fn set_stale(&self, stale: bool) {
        let mut since = lock(&self.stale_since);
        match (stale, since.is_some()) {
            (true, false) => *since = Some(Instant::now()),
            (false, true) => *since = None,
            _ => {}
        }
        drop(since);
        self.update_gauges();
    }

    /// Since when this node has served without etcd, if it does.
    pub fn stale_for(&self) -> Option<Duration> {
        lock(&self.stale_since).map(|t| t.elapsed())
    }

    /// Brings the stale gauge up to date (called every second).
    pub fn update_gauges(&self) {
        self.stale_gauge
            .set(self.stale_for().map_or(0.0, |d| d.as_secs_f64()));
    }

    /// The lease this node reports on, once granted.
    pub fn lease(&self) -> Option<i64> {
        Some(self.lease.load(Ordering::Relaxed)).filter(|l| *l != 0)
    }

    /// Records the lease granted.
    pub(super) fn set_lease(&self, lease: i64) {
        self.lease.store(lease, Ordering::Relaxed);
    }

    /// Whether this node holds the leader key.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    pub(super) fn set_leader(&self, leader: bool) {
        if self.leader.swap(leader, Ordering::Relaxed) != leader {
            log::info!(
                "this node {} the fleet's periodic work",
                if leader { "now does" } else { "no longer does" }
            );
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_stale_from_its_start_until_it_hears_from_etcd() {
        let progress = Progress::new(&Registry::new()).unwrap();
        assert!(progress.stale_for().is_some(), "stale before etcd answered");
        std::thread::sleep(Duration::from_millis(20));
        progress.set_stale(true);
        assert!(
            progress.stale_for().unwrap() >= Duration::from_millis(20),
            "marking it stale again keeps the clock of its start"
        );
        progress.set_stale(false);
        assert_eq!(progress.stale_for(), None);
    }
}
