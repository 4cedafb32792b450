//! TLS termination: the compiled per-hostname policy, the BoringSSL acceptor,
//! client certificate verification and revocation.

pub mod acceptor;
pub mod client_auth;
pub mod context;
pub mod revocation;
pub mod snapshot;

pub use snapshot::{HostTls, TlsSnapshot};
