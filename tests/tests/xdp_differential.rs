//! Differential test: the XDP program (in the kernel) and the userspace reference
//! model agree on randomly generated and mutated ClientHellos, each the only
//! segment the program sees of a fresh flow whose SYN it did not see (what
//! `reference::judge` models): decided at once, or kept for reassembly
//! (`PassHelloPartial`) when the bytes so far cannot decide it. Whole flows of
//! several segments are `xdp_stream_differential`'s.

use gateway::{
    frame::{flags, tcp_view},
    hello::{
        ClientHello, Ext, records,
        reference::{self, Action},
    },
    tls_version::TlsVersion,
    xdp::{XDP_PASS, XdpFilter, XdpPolicy},
};
use gateway_common::{PAYLOAD_CAP, version};
use gateway_tests::{loaded_filter, policy, segment};
use proptest::prelude::*;

/// Names the policy knows, in varied case, plus names it does not.
const NAMES: [&str; 6] = [
    "api.test",
    "API.Test",
    "old.test",
    "new.test",
    "x.y.z.test",
    "unknown.test",
];

const VERSIONS: [u16; 10] = [
    0x0000, // found by fuzzing: a version of its own, not "none"
    version::SSL3,
    version::TLS1_0,
    version::TLS1_1,
    version::TLS1_2,
    version::TLS1_3,
    0x0a0a,
    0x7a7a,
    0x7f1c, // a TLS 1.3 draft
    0x0305,
];

fn ext() -> impl Strategy<Value = Ext> {
    prop_oneof![
        prop::sample::select(NAMES.to_vec()).prop_map(Ext::sni),
        prop::collection::vec(prop::sample::select(VERSIONS.to_vec()), 0..6)
            .prop_map(Ext::SupportedVersions),
        (0u16..64, 0usize..40).prop_map(|(t, n)| Ext::Raw(t, vec![0x61; n])),
        (900usize..1300).prop_map(Ext::key_share),
        Just(Ext::grease()),
    ]
}

fn hello() -> impl Strategy<Value = ClientHello> {
    (
        prop::sample::select(vec![0x0300u16, 0x0301, 0x0302, 0x0303, 0x0304, 0x0200]),
        0usize..34,
        1usize..40,
        prop::option::weighted(0.9, prop::collection::vec(ext(), 0..8)),
    )
        .prop_map(|(legacy, sid, ciphers, extensions)| {
            let mut h = ClientHello::legacy(legacy, None);
            h.session_id = vec![7; sid];
            h.ciphers = (0..ciphers as u16).map(|c| 0xc000 + c).collect();
            h.extensions = extensions;
            h
        })
}

/// A payload: a hello in one or more records, maybe cut, maybe with bytes changed.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    (
        hello(),
        prop::sample::select(vec![usize::MAX, 16384, 300, 64]),
        prop::option::of(any::<prop::sample::Index>()),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
    )
        .prop_map(|(h, fragment, cut, mutations)| {
            let mut bytes = records(&h.message(), version::TLS1_0, fragment);
            if let Some(cut) = cut {
                bytes.truncate(cut.index(bytes.len()) + 1);
            }
            for (at, value) in mutations {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            bytes.truncate(PAYLOAD_CAP + 64);
            bytes
        })
}

fn check(filter: &XdpFilter, p: &XdpPolicy, payload: Vec<u8>) -> Result<(), TestCaseError> {
    let model = reference::judge(&payload, p);
    let frame = segment(payload).build();
    let got = filter.run_frame(&frame).expect("BPF_PROG_TEST_RUN");
    prop_assert_eq!(got.stat, model.stat);
    let seen = got.hello.map(|h| (h.max_version, h.sni));
    prop_assert_eq!(seen, model.hello());
    prop_assert_eq!(got.split, model.split);
    // Reset mode: a refused hello becomes a RST, everything else passes unchanged.
    prop_assert_eq!(got.action, XDP_PASS);
    let reset = tcp_view(&got.output).is_some_and(|t| t.flags == flags::RST | flags::ACK);
    prop_assert_eq!(reset, model.action == Action::Reset);
    prop_assert_eq!(got.output == frame, model.action == Action::Pass);
    Ok(())
}

/// Checks one payload with a filter loaded once per thread and policy.
fn check_with_cached_filter(p: &XdpPolicy, payload: Vec<u8>) -> Result<(), TestCaseError> {
    thread_local! {
        static FILTERS: std::cell::RefCell<Vec<(XdpPolicy, XdpFilter)>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    FILTERS.with(|cell| {
        let mut filters = cell.borrow_mut();
        if !filters.iter().any(|(q, _)| q == p) {
            filters.push((p.clone(), loaded_filter(p)));
        }
        let (_, filter) = filters.iter().find(|(q, _)| q == p).expect("just added");
        check(filter, p, payload)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn program_and_model_agree(payload in payload()) {
        let p = policy(TlsVersion::Tls12, &[
            ("api.test", TlsVersion::Tls13),
            ("old.test", TlsVersion::Tls10),
            ("x.y.z.test", TlsVersion::Tls11),
        ]);
        check_with_cached_filter(&p, payload)?;
    }

    #[test]
    fn arbitrary_bytes_agree_too(payload in prop::collection::vec(any::<u8>(), 0..600), tls in any::<bool>()) {
        // Half of the inputs start like a handshake record so that they get further.
        let mut payload = payload;
        if tls && payload.len() >= 6 {
            payload[..6].copy_from_slice(&[22, 3, 1, 2, 0, 1]);
        }
        prop_assume!(!payload.is_empty());
        let p = policy(TlsVersion::Tls11, &[("a", TlsVersion::Tls13)]);
        check_with_cached_filter(&p, payload)?;
    }
}
