//! The gateway: an XDP ClientHello filter in the kernel and, in userspace, the
//! TLS terminator, the control plane and the operator tools around them.
//!
//! **The data path**, one connection top to bottom:
//! 1. A frame reaches the XDP program ([`xdp`] loads it and writes its maps).
//!    It reads the ClientHello (across segments and records) far enough to
//!    learn the SNI and the highest version offered, and refuses hellos below
//!    the hostname's minimum; what it cannot decide passes.
//! 2. What survives goes through the kernel's TCP stack to the terminator
//!    ([`terminator`]): the BoringSSL acceptor ([`tls`]) picks the hostname's
//!    certificate (DER, handed over per connection), minimum, ciphers and
//!    client-certificate policy from the current snapshot, and verifies the
//!    client's certificate and revocation.
//! 3. Each request is checked (Host against SNI, spoofed certificate headers
//!    stripped), its fields filled in ([`rules::fields`]: the rules' execution
//!    context), evaluated by the zone's rules ([`rules`]), and proxied to the
//!    origin, trust and forwarding mode the current snapshot gives its hostname,
//!    with the client certificate's details.
//!
//! **The control path**, one change to both layers:
//! 1. The configuration comes from a file ([`config`]) or from the control
//!    plane ([`control`]), changed through the admin API and dashboard
//!    ([`admin`]) and committed to one of its two backends: its own redb
//!    store, or etcd in a fleet, where every node installs each revision from
//!    its watch ([`control::backend::fleet`]). Certificates come from [`pki`].
//! 2. It is compiled ([`compiled`]): whole at start and on a file's reload, or
//!    from the delta a store change makes, at the cost of what it touches.
//! 3. [`layers`] puts it in force: the terminator's snapshot is swapped
//!    atomically, and the XDP maps get only the entries that differ, in an
//!    order that never leaves a weaker policy in between.
//!
//! [`daemon`] runs it all; [`metrics`] serves both layers' counters; [`logs`]
//! writes the access and handshake logs.

#![cfg_attr(not(test), warn(clippy::too_many_lines))]

pub mod acme;
pub mod admin;
pub mod cli;
pub mod clock;
pub mod compiled;
pub mod config;
pub mod control;
pub mod daemon;
pub mod frame;
pub mod hello;
pub mod http_client;
pub mod layers;
pub mod logs;
pub mod metrics;
pub mod pcap;
pub mod pki;
pub mod privileges;
pub mod replay;
pub mod rules;
pub mod terminator;
pub mod tls;
pub mod tls_version;
pub mod xdp;
