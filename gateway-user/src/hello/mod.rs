//! TLS ClientHellos outside the kernel: a builder for test and flood traffic,
//! and a reference model of the XDP filter's decision, written independently of
//! the eBPF code so the two can be checked against each other.

mod build;
pub mod reference;

pub use build::{ClientHello, Ext, records, sslv2_hello};
