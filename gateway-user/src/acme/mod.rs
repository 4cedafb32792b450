//! ACME (RFC 8555) certificates for custom hostnames: a minimal client over
//! the project's HTTP client and BoringSSL ([`client`], [`jws`]), one order by
//! TLS-ALPN-01 ([`order`], answered by `tls::challenge` in the terminator),
//! and the background task that orders, installs and renews the certificates
//! of hostnames whose source is `acme` ([`manager`]).

pub mod client;
pub mod jws;
pub mod manager;
pub mod order;
