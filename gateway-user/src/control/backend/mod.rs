//! Where the control plane commits: its own redb store ([`store`]), or etcd
//! shared by a fleet ([`fleet`]). Either way the change is compiled first and
//! put in force by the core's one `apply`.

use self::{fleet::FleetBackend, store::Store};
use super::audit;

pub mod fleet;
pub mod store;

/// The store a control plane commits to.
pub enum Backend {
    /// Its own redb store: a change is committed there, then put in force.
    Local(Store),
    /// etcd, shared by a fleet: a change is committed there, and every node
    /// (this one too) installs it from its watch.
    Fleet(Box<FleetBackend>),
}

impl Backend {
    /// The redb store: the configuration itself, or a fleet node's local copy.
    pub fn store(&self) -> &Store {
        match self {
            Backend::Local(store) => store,
            Backend::Fleet(fleet) => fleet.store(),
        }
    }

    /// Audit entries: see [`Store::audit`] and [`fleet::Fleet::audit`].
    pub async fn audit(
        &self,
        since: Option<i64>,
        before: Option<i64>,
        page: (usize, usize),
    ) -> anyhow::Result<(Vec<audit::Entry>, usize)> {
        match self {
            Backend::Local(store) => store.audit(since, before, page),
            Backend::Fleet(fleet) => fleet.fleet.audit(since, before, page).await,
        }
    }
}
