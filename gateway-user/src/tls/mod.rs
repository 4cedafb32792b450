//! TLS termination: the compiled per-hostname policy, the BoringSSL acceptor,
//! client certificate verification and revocation, session resumption, and
//! ACME TLS-ALPN-01 challenge answers.

pub mod acceptor;
pub mod challenge;
pub mod client_auth;
pub mod context;
pub mod offered;
pub mod resumption;
pub mod revocation;
pub mod snapshot;
pub mod tickets;

pub use snapshot::{HostTls, TlsSnapshot};
