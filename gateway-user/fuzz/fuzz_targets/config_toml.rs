//! The configuration file: `gateway::config::Config::parse` on arbitrary text
//! (the input as lossy UTF-8), then the XDP policy built from what it accepts.
//!
//! Invariants:
//! - parsing never panics, and a refusal's message (its whole chain) formats;
//! - parsing is deterministic: the same text gives the same configuration or
//!   the same error;
//! - an accepted configuration validates again, its rules compile, and every
//!   hostname passes `validate_hostname`;
//! - `XdpPolicy::from_config` gives each hostname its own minimum (else the
//!   zone's), hellos without SNI the no-SNI minimum (else the zone's), the
//!   configured ports and refuse mode, and a floor no higher than any minimum.
//!
//! `Config::parse` reads no file: materials stay paths (checked with strace
//! on the seed corpus; see the report of the fuzz campaign).
#![no_main]

use gateway::{
    config::{Config, validate_hostname},
    rules::RuleSet,
    xdp::XdpPolicy,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let config = match (Config::parse(&text), Config::parse(&text)) {
        (Ok(a), Ok(b)) => {
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "parsed twice");
            a
        }
        (Err(a), Err(b)) => {
            let message = format!("{a:#}");
            assert!(!message.is_empty());
            assert_eq!(message, format!("{b:#}"), "refused twice alike");
            return;
        }
        (a, b) => panic!("parsed twice: {a:?} then {b:?}"),
    };
    if let Err(e) = config.validate() {
        panic!("accepted, then refused by validate: {e:#}");
    }
    assert!(RuleSet::compile(&config.rules).is_ok(), "rules compile");
    let zone = config.zone.min_tls_version;
    let policy = XdpPolicy::from_config(&config).expect("a validated configuration compiles");
    assert_eq!(policy.zone_min, zone);
    assert_eq!(
        policy.min_for(None),
        config.zone.no_sni_min_tls_version.unwrap_or(zone),
        "the no-SNI minimum"
    );
    for host in &config.hostnames {
        assert!(validate_hostname(&host.name).is_ok(), "{:?}", host.name);
        let want = host.min_tls_version.unwrap_or(zone);
        let got = policy.min_for(Some(&host.name));
        assert_eq!(got, want, "minimum of {:?}", host.name);
        assert!(policy.floor() <= got, "floor above {:?}", host.name);
        // A wildcard's subdomains have no entry of their own: the zone's applies.
        if host.wildcard {
            let sub = format!("x.{}", host.name);
            if !config.hostnames.iter().any(|h| *h.name == *sub) {
                assert_eq!(policy.min_for(Some(&sub)), zone, "subdomain {sub}");
            }
        }
    }
    assert!(policy.floor() <= policy.min_for(None) && policy.floor() <= zone);
    assert!(
        policy.ports.iter().eq(config
            .xdp
            .ports
            .iter()
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
            .iter())
    );
    assert!(!policy.ports.is_empty() && !policy.ports.contains(&0));
    assert_eq!(policy.refuse, config.xdp.refuse);
    assert!(policy.hosts().len() <= config.hostnames.len());
});
