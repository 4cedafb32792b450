//! `/healthz` and `/readyz` on the metrics listener, for load balancers and
//! orchestrators: alive while the process serves; ready once the
//! configuration is installed, the XDP filter attached (when asked) and the
//! TLS listeners bound, and no longer ready once it drains to stop.

use std::sync::atomic::{AtomicU8, Ordering};

use hyper::StatusCode;

/// The state until [`Health::set_ready`] (the default, 0).
const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

/// Where the gateway is in its life, as `/readyz` reports it.
#[derive(Debug, Default)]
pub struct Health {
    state: AtomicU8,
}

impl Health {
    /// Everything is in force: the configuration, the filter, the listeners.
    pub fn set_ready(&self) {
        self.state.store(READY, Ordering::Release);
    }

    /// Stopping: finishing what is in flight, taking nothing new.
    pub fn set_draining(&self) {
        self.state.store(DRAINING, Ordering::Release);
    }

    /// `/readyz`'s status and body.
    pub fn readiness(&self) -> (StatusCode, &'static str) {
        match self.state.load(Ordering::Acquire) {
            READY => (StatusCode::OK, "ready\n"),
            DRAINING => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: draining to stop\n",
            ),
            STARTING => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: starting (configuration, XDP filter or listeners not yet in force)\n",
            ),
            _ => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "not ready: unknown state\n",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_start_and_drain() {
        let health = Health::default();
        assert_eq!(health.readiness().0, StatusCode::SERVICE_UNAVAILABLE);
        assert!(health.readiness().1.contains("starting"));
        health.set_ready();
        assert_eq!(health.readiness(), (StatusCode::OK, "ready\n"));
        health.set_draining();
        assert_eq!(health.readiness().0, StatusCode::SERVICE_UNAVAILABLE);
        assert!(health.readiness().1.contains("draining"));
    }
}
