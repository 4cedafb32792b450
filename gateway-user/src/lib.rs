//! The gateway: an XDP ClientHello filter in the kernel and, in userspace, the
//! loader, policy, metrics and operator tools around it.
//!
//! One connection, top to bottom: a frame reaches the XDP filter ([`xdp`]),
//! which refuses ClientHellos below the hostname's minimum TLS version and
//! counts everything; what survives goes to the kernel's TCP stack and on to
//! the terminator. The policy comes from the configuration ([`config`]).

pub mod cli;
pub mod clock;
pub mod compiled;
pub mod config;
pub mod control;
pub mod daemon;
pub mod frame;
pub mod hello;
pub mod layers;
pub mod metrics;
pub mod pcap;
pub mod replay;
pub mod rules;
pub mod terminator;
pub mod tls;
pub mod tls_version;
pub mod xdp;
