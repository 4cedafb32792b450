//! Where the control plane commits: its own redb store ([`store`]), or etcd
//! shared by a fleet ([`fleet`]).

pub mod fleet;
pub mod store;
