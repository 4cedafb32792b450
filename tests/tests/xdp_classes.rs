//! The XDP filter on every class of packet, run in the kernel with BPF_PROG_TEST_RUN.

use gateway::{
    config::RefuseMode,
    frame::{TPID_8021AD, TPID_8021Q, TcpFrame, flags, tcp_view},
    hello::{ClientHello, Ext, records, reference, sslv2_hello},
    tls_version::TlsVersion::{Tls10, Tls11, Tls12, Tls13},
    xdp::{FrameVerdict, XDP_DROP, XDP_PASS, XdpFilter, XdpPolicy},
};
use gateway_common::{Stat, version};
use gateway_tests::{CLIENT_V6, SERVER_V6, fresh_port, loaded_filter, policy, segment};

fn run(filter: &XdpFilter, frame: &TcpFrame) -> FrameVerdict {
    filter.run_frame(&frame.build()).expect("BPF_PROG_TEST_RUN")
}

fn hello_with_versions(sni: &str, versions: &[u16]) -> Vec<u8> {
    let mut h = ClientHello::legacy(version::TLS1_2, Some(sni));
    h.extensions
        .as_mut()
        .unwrap()
        .push(Ext::SupportedVersions(versions.to_vec()));
    h.record()
}

#[test]
fn legacy_hellos_are_judged_by_legacy_version_capped_at_1_2() {
    let filter = loaded_filter(&policy(Tls12, &[]));
    let cases = [
        (version::TLS1_0, Stat::DropTls10),
        (version::TLS1_1, Stat::DropTls11),
        (version::TLS1_2, Stat::PassAllowed),
        // A legacy_version above 1.2 without supported_versions means 1.2.
        (version::TLS1_3, Stat::PassAllowed),
        (version::SSL3, Stat::DropSsl3),
    ];
    for (legacy, want) in cases {
        let v = run(
            &filter,
            &segment(ClientHello::legacy(legacy, Some("a.test")).record()),
        );
        assert_eq!(v.stat, want, "legacy_version {legacy:#06x}");
        let seen = v.hello.expect("version determined");
        assert_eq!(seen.max_version, legacy.min(version::TLS1_2));
        assert_eq!(seen.sni.as_deref(), Some("a.test"));
    }
    // Against a 1.3 minimum even 1.2 is refused.
    let filter = loaded_filter(&policy(Tls13, &[]));
    let v = run(
        &filter,
        &segment(ClientHello::legacy(version::TLS1_2, None).record()),
    );
    assert_eq!(v.stat, Stat::DropTls12);
}

#[test]
fn supported_versions_decides_over_legacy_version() {
    let filter = loaded_filter(&policy(Tls12, &[]));
    let cases: [(&[u16], Stat, u16); 7] = [
        (&[version::TLS1_0], Stat::DropTls10, version::TLS1_0),
        (
            &[version::TLS1_1, version::TLS1_0],
            Stat::DropTls11,
            version::TLS1_1,
        ),
        (&[version::TLS1_2], Stat::PassAllowed, version::TLS1_2),
        (&[version::TLS1_3], Stat::PassAllowed, version::TLS1_3),
        (
            &[version::TLS1_2, version::TLS1_3],
            Stat::PassAllowed,
            version::TLS1_3,
        ),
        // GREASE values are skipped wherever they stand, even when they sort highest.
        (
            &[0xfafa, version::TLS1_1, 0x0a0a],
            Stat::DropTls11,
            version::TLS1_1,
        ),
        // 0x0000 is a version like any other (found by fuzzing: it once meant "none").
        (&[0x0000, 0x2a2a], Stat::DropSsl3, 0x0000),
    ];
    for (versions, want, max) in cases {
        let v = run(&filter, &segment(hello_with_versions("b.test", versions)));
        assert_eq!(v.stat, want, "{versions:x?}");
        assert_eq!(v.hello.unwrap().max_version, max);
    }
    // Only GREASE: nothing a server could pick, so nothing to decide.
    let v = run(&filter, &segment(hello_with_versions("b.test", &[0x2a2a])));
    assert_eq!(v.stat, Stat::PassMalformed);
}

#[test]
fn modern_browser_hello_passes_with_grease_everywhere() {
    let filter = loaded_filter(&policy(Tls13, &[]));
    let v = run(
        &filter,
        &segment(ClientHello::modern("www.example.com").record()),
    );
    assert_eq!(v.stat, Stat::PassAllowed);
    assert_eq!(v.action, XDP_PASS);
    let seen = v.hello.unwrap();
    assert_eq!(seen.max_version, version::TLS1_3);
    assert_eq!(seen.sni.as_deref(), Some("www.example.com"));
}

#[test]
fn sslv2_format_and_ssl3_are_below_every_minimum() {
    let filter = loaded_filter(&policy(Tls10, &[]));
    for v2 in [version::SSL2, version::TLS1_0] {
        let v = run(&filter, &segment(sslv2_hello(v2)));
        assert_eq!(
            v.stat,
            Stat::DropSsl2,
            "SSLv2-format hello offering {v2:#06x}"
        );
    }
    let v = run(
        &filter,
        &segment(ClientHello::legacy(version::SSL3, Some("c.test")).record()),
    );
    assert_eq!(v.stat, Stat::DropSsl3);
    // A TLS 1.0 hello is fine when the minimum is 1.0.
    let v = run(
        &filter,
        &segment(ClientHello::legacy(version::TLS1_0, None).record()),
    );
    assert_eq!(v.stat, Stat::PassAllowed);
}

#[test]
fn per_host_minimums_match_the_lowercased_sni_exactly() {
    let filter = loaded_filter(&policy(
        Tls12,
        &[("strict.test", Tls13), ("old.test", Tls10)],
    ));
    let cases = [
        ("strict.test", version::TLS1_2, Stat::DropTls12),
        ("STRICT.Test", version::TLS1_2, Stat::DropTls12),
        ("other.test", version::TLS1_2, Stat::PassAllowed),
        // Subdomains of a configured name use the zone's minimum.
        ("sub.strict.test", version::TLS1_2, Stat::PassAllowed),
        ("old.test", version::TLS1_0, Stat::PassAllowed),
        ("other.test", version::TLS1_0, Stat::DropTls10),
        // A name that only starts like a configured one is another name.
        ("strict.test.evil", version::TLS1_2, Stat::PassAllowed),
        ("old.tes", version::TLS1_0, Stat::DropTls10),
    ];
    for (sni, offered, want) in cases {
        let v = run(&filter, &segment(hello_with_versions(sni, &[offered])));
        assert_eq!(v.stat, want, "{sni} offering {offered:#06x}");
        assert_eq!(v.hello.unwrap().sni.unwrap(), sni.to_ascii_lowercase());
    }
}

#[test]
fn hellos_without_sni_get_their_own_minimum() {
    let mut p = policy(Tls13, &[]);
    p.no_sni_min = Tls11;
    let filter = loaded_filter(&p);
    let v = run(
        &filter,
        &segment(ClientHello::legacy(version::TLS1_1, None).record()),
    );
    assert_eq!(v.stat, Stat::PassAllowed);
    assert_eq!(v.hello.unwrap().sni, None);
    let v = run(
        &filter,
        &segment(ClientHello::legacy(version::TLS1_0, None).record()),
    );
    assert_eq!(v.stat, Stat::DropTls10);
}

#[test]
fn longest_sni_is_read_whole_and_shorter_names_after_it_are_not_polluted() {
    let long = format!("{}.test", "a".repeat(250));
    assert_eq!(long.len(), 255);
    let filter = loaded_filter(&policy(Tls12, &[(long.as_str(), Tls13), ("a.test", Tls10)]));
    let v = run(
        &filter,
        &segment(hello_with_versions(
            &long.to_uppercase(),
            &[version::TLS1_2],
        )),
    );
    assert_eq!(v.stat, Stat::DropTls12);
    assert_eq!(v.hello.unwrap().sni.as_deref(), Some(long.as_str()));
    // The key buffer held 255 bytes; a 6-byte name must still match exactly.
    let v = run(
        &filter,
        &segment(hello_with_versions("a.test", &[version::TLS1_0])),
    );
    assert_eq!(v.stat, Stat::PassAllowed);
    // 256 bytes is not a valid host name: malformed, passed.
    let v = run(
        &filter,
        &segment(hello_with_versions(&format!("b{long}"), &[version::TLS1_0])),
    );
    assert_eq!(v.stat, Stat::PassMalformed);
}

#[test]
fn ipv6_vlans_and_header_options_are_parsed() {
    let filter = loaded_filter(&policy(Tls12, &[]));
    let tls10 = ClientHello::legacy(version::TLS1_0, Some("d.test")).record();
    let mut frames = Vec::new();
    frames.push((
        "IPv6",
        TcpFrame::new(CLIENT_V6, SERVER_V6, fresh_port(), 443, tls10.clone()),
    ));
    let mut f = segment(tls10.clone());
    f.vlans = vec![(TPID_8021Q, 100)];
    frames.push(("one 802.1Q tag", f));
    let mut f = segment(tls10.clone());
    f.vlans = vec![(TPID_8021AD, 200), (TPID_8021Q, 100)];
    frames.push(("802.1ad + 802.1Q", f));
    let mut f = TcpFrame::new(CLIENT_V6, SERVER_V6, fresh_port(), 443, tls10.clone());
    f.vlans = vec![(TPID_8021AD, 200), (TPID_8021Q, 100)];
    frames.push(("IPv6 with two tags", f));
    let mut f = segment(tls10.clone());
    // 40 bytes of options: MSS, SACK permitted, timestamps, window scale, then NOPs.
    let mut opts = vec![2, 4, 5, 0xb4, 4, 2, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8, 3, 3, 7];
    opts.resize(40, 1);
    f.tcp_options = opts;
    frames.push(("maximal TCP options", f));
    let mut f = segment(tls10.clone());
    f.ip_options = vec![1; 40];
    frames.push(("maximal IPv4 options", f));
    for (what, frame) in frames {
        let v = run(&filter, &frame);
        assert_eq!(v.stat, Stat::DropTls10, "{what}");
        let reset = tcp_view(&v.output).expect("a TCP frame");
        assert_eq!(
            reset.flags,
            flags::RST | flags::ACK,
            "{what}: rewritten into a RST"
        );
        assert!(reset.checksum_ok, "{what}: the RST's checksum verifies");
    }
    // Three VLAN tags are beyond what the filter reads: passed untouched.
    let mut f = segment(tls10);
    f.vlans = vec![(TPID_8021AD, 1), (TPID_8021Q, 2), (TPID_8021Q, 3)];
    assert_eq!(run(&filter, &f).stat, Stat::PassNotTcp);
}

#[test]
fn refused_segment_becomes_a_reset_and_its_retransmission_passes_unchanged() {
    let filter = loaded_filter(&policy(Tls12, &[]));
    let frame = segment(ClientHello::legacy(version::TLS1_1, Some("e.test")).record());
    let bytes = frame.build();
    let first = filter.run_frame(&bytes).unwrap();
    assert_eq!(first.stat, Stat::DropTls11);
    assert_eq!(first.action, XDP_PASS, "the RST goes up to the local stack");
    let view = tcp_view(&first.output).unwrap();
    assert_eq!(
        (view.flags, view.seq, view.checksum_ok),
        (flags::RST | flags::ACK, frame.seq, true)
    );
    // The stack has torn the socket down; the client's retransmission reaches it
    // as is, and the stack answers with a RST so the client fails at once.
    let again = filter.run_frame(&bytes).unwrap();
    assert_eq!(again.stat, Stat::DropRetransmit);
    assert_eq!(again.output, bytes);

    // With `refuse = "drop"` the hello is simply dropped, every time.
    let mut p = policy(Tls12, &[]);
    p.refuse = RefuseMode::Drop;
    let filter = loaded_filter(&p);
    for _ in 0..2 {
        let v = filter.run_frame(&bytes).unwrap();
        assert_eq!((v.stat, v.action), (Stat::DropTls11, XDP_DROP));
    }
}

#[test]
fn a_hello_cut_at_any_byte_is_never_refused_wrongly() {
    // The hosts that allow 1.0 make every cut that hides the SNI undecidable.
    let p = policy(Tls12, &[("legacy.test", Tls10)]);
    let filter = loaded_filter(&p);
    let mut modern = ClientHello::modern("modern.test");
    modern
        .extensions
        .as_mut()
        .unwrap()
        .push(Ext::key_share(1200));
    let cases = [
        ("TLS 1.3 browser hello", modern.record(), false),
        (
            "TLS 1.0 hello to a 1.0 host",
            ClientHello::legacy(version::TLS1_0, Some("legacy.test")).record(),
            false,
        ),
        (
            "TLS 1.0 hello to the zone",
            ClientHello::legacy(version::TLS1_0, Some("zone.test")).record(),
            true,
        ),
    ];
    for (what, record, refuse_whole) in cases {
        for cut in 1..=record.len() {
            let v = run(&filter, &segment(record[..cut].to_vec()));
            let whole = cut == record.len();
            assert_eq!(
                v.refused(),
                whole && refuse_whole,
                "{what} cut at {cut}/{}: {:?}",
                record.len(),
                v.stat
            );
            let model = reference::judge(&record[..cut], &p);
            assert_eq!(
                v.stat, model.stat,
                "{what} cut at {cut}: program and model differ"
            );
        }
    }
}

#[test]
fn a_hello_spread_over_records_or_followed_by_another_record() {
    let filter = loaded_filter(&policy(Tls12, &[]));
    let message = ClientHello::legacy(version::TLS1_0, Some("f.test")).message();
    // Fragmented into records of 40 bytes: read through every record header.
    let before = filter.stats().read().unwrap();
    let v = run(&filter, &segment(records(&message, version::TLS1_0, 40)));
    assert_eq!(v.stat, Stat::DropTls10);
    let after = filter.stats().read().unwrap();
    assert_eq!(
        after.get(Stat::SplitRefused) - before.get(Stat::SplitRefused),
        1
    );
    // The whole hello in its record, then a ChangeCipherSpec record in the same segment.
    let mut two = records(&message, version::TLS1_0, usize::MAX);
    two.extend_from_slice(&[20, 3, 3, 0, 1, 1]);
    let v = run(&filter, &segment(two));
    assert_eq!(v.stat, Stat::DropTls10);
}

#[test]
fn a_split_post_quantum_hello_passes_even_when_its_first_segment_looks_old() {
    // legacy_version 1.2 and no supported_versions in the first 1,400 bytes: only
    // the rest of the hello (in the next segment) can tell.
    let filter = loaded_filter(&policy(Tls13, &[]));
    let mut h = ClientHello::modern("pq.test");
    let exts = h.extensions.as_mut().unwrap();
    exts.retain(|e| !matches!(e, Ext::SupportedVersions(_)));
    exts.push(Ext::key_share(1250));
    exts.push(Ext::SupportedVersions(vec![version::TLS1_3]));
    let record = h.record();
    let mut first = segment(record[..1400].to_vec());
    let v = run(&filter, &first);
    assert_eq!(v.stat, Stat::PassHelloPartial);
    // The rest, in the same flow: decided and allowed.
    first.seq += 1400;
    first.payload = record[1400..].to_vec();
    let v = run(&filter, &first);
    assert_eq!(v.stat, Stat::PassAllowed);
    assert_eq!(v.hello.map(|h| h.max_version), Some(version::TLS1_3));
}

#[test]
fn traffic_that_is_not_a_client_hello_passes() {
    let filter = loaded_filter(&policy(Tls13, &[]));
    let cases: [(&str, Vec<u8>, Stat); 5] = [
        (
            "HTTP",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Stat::PassNotTls,
        ),
        (
            "TLS application data",
            vec![23, 3, 3, 0, 4, 1, 2, 3, 4],
            Stat::PassNotTls,
        ),
        (
            "ServerHello",
            vec![22, 3, 3, 0, 4, 2, 0, 0, 0],
            Stat::PassNotClientHello,
        ),
        ("one byte", vec![22], Stat::PassHelloPartial),
        ("zeros", vec![0; 64], Stat::PassNotTls),
    ];
    for (what, payload, want) in cases {
        assert_eq!(run(&filter, &segment(payload)).stat, want, "{what}");
    }
}

#[test]
fn other_ports_control_segments_and_fragments_pass() {
    let filter = loaded_filter(&policy(Tls13, &[]));
    let tls10 = ClientHello::legacy(version::TLS1_0, Some("g.test")).record();
    let mut f = segment(tls10.clone());
    f.dport = 80;
    assert_eq!(run(&filter, &f).stat, Stat::PassOtherPort);
    let mut f = segment(Vec::new());
    f.flags = flags::SYN;
    assert_eq!(run(&filter, &f).stat, Stat::PassControl);
    // A SYN with data (TCP Fast Open) never reaches the parser either.
    let mut f = segment(tls10.clone());
    f.flags = flags::SYN;
    assert_eq!(run(&filter, &f).stat, Stat::PassControl);
    let mut f = segment(tls10.clone());
    f.flags = flags::RST | flags::ACK;
    assert_eq!(run(&filter, &f).stat, Stat::PassControl);
    for fragment in [(0, true), (185, false), (185, true)] {
        let mut f = segment(tls10.clone());
        f.fragment = fragment;
        assert_eq!(run(&filter, &f).stat, Stat::PassFragment, "{fragment:?}");
    }
    // UDP and ARP are not TCP.
    let mut udp = segment(tls10).build();
    udp[14 + 9] = 17;
    assert_eq!(filter.run_frame(&udp).unwrap().stat, Stat::PassNotTcp);
    let mut arp = vec![0xff; 12];
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.resize(60, 0);
    assert_eq!(filter.run_frame(&arp).unwrap().stat, Stat::PassNotTcp);
}

#[test]
fn malformed_hellos_pass() {
    let filter = loaded_filter(&policy(Tls13, &[]));
    let base = ClientHello::legacy(version::TLS1_0, Some("h.test"));
    let mut dup = base.clone();
    dup.extensions.as_mut().unwrap().push(Ext::sni("i.test"));
    let mut dup_versions = base.clone();
    let exts = dup_versions.extensions.as_mut().unwrap();
    exts.push(Ext::SupportedVersions(vec![version::TLS1_0]));
    exts.push(Ext::SupportedVersions(vec![version::TLS1_0]));
    let mut no_compression = base.clone();
    no_compression.compression.clear();
    let mut odd_ciphers = base.clone();
    odd_ciphers.ciphers.clear();
    let mut long_session = base.clone();
    long_session.session_id = vec![1; 33];
    let mut bad_legacy = base.clone();
    bad_legacy.legacy_version = 0x0201;
    let mut bad_ext_len = base.record();
    let last = bad_ext_len.len() - 1;
    bad_ext_len[last - 5] = 0xff; // an extension length past the block's end
    let mut huge_record = base.record();
    huge_record[3] = 0xff;
    let cases = [
        ("duplicate server_name", dup.record()),
        ("duplicate supported_versions", dup_versions.record()),
        ("no compression method", no_compression.record()),
        ("no cipher suites", odd_ciphers.record()),
        ("33-byte session id", long_session.record()),
        ("legacy_version 2.1", bad_legacy.record()),
        ("extension past the block", bad_ext_len),
        ("record longer than allowed", huge_record),
    ];
    for (what, payload) in cases {
        let v = run(&filter, &segment(payload));
        assert_eq!(v.stat, Stat::PassMalformed, "{what}");
    }
}

#[test]
fn policy_changes_apply_to_the_next_packet() {
    let mut filter = loaded_filter(&policy(Tls12, &[]));
    let hello = || segment(hello_with_versions("live.test", &[version::TLS1_2]));
    assert_eq!(run(&filter, &hello()).stat, Stat::PassAllowed);
    filter
        .apply(&policy(Tls12, &[("live.test", Tls13)]))
        .unwrap();
    assert_eq!(run(&filter, &hello()).stat, Stat::DropTls12);
    filter.apply(&policy(Tls12, &[])).unwrap();
    assert_eq!(run(&filter, &hello()).stat, Stat::PassAllowed);
    let mut p: XdpPolicy = policy(Tls10, &[]);
    p.ports = [8443].into_iter().collect();
    filter.apply(&p).unwrap();
    let v = run(
        &filter,
        &segment(ClientHello::legacy(version::SSL3, None).record()),
    );
    assert_eq!(v.stat, Stat::PassOtherPort, "443 is no longer inspected");
}

#[test]
fn a_refused_policy_leaves_the_running_one_whole() {
    // The floor (the lowest minimum) judges a hello whose SNI lies beyond the
    // extension walk's bound: 1.1 offered, 70 extensions before the SNI.
    let mut h = ClientHello::legacy(version::TLS1_1, None);
    let exts = h.extensions.as_mut().unwrap();
    exts.push(Ext::SupportedVersions(vec![version::TLS1_1]));
    exts.extend((0..70).map(|i| Ext::Raw(100 + i, vec![1])));
    exts.push(Ext::sni("far.test"));
    let hello = || segment(h.record());
    let mut filter = loaded_filter(&policy(Tls12, &[]));
    assert_eq!(run(&filter, &hello()).stat, Stat::DropTls11);
    // A policy that would lower the floor to 1.0 but names an impossible SNI is
    // refused when it is compiled, so nothing reaches the maps: the floor stays at 1.2.
    let long = format!("{}.test", "a".repeat(300));
    let mut refused = policy(Tls12, &[("old.test", Tls10)]);
    let err = refused
        .set_host(&long, Some(Tls13))
        .expect_err("a 305-byte hostname cannot be an SNI");
    assert!(format!("{err:#}").contains("cannot be an SNI"), "{err:#}");
    assert_eq!(run(&filter, &hello()).stat, Stat::DropTls11);
    // The same policy without the bad name lowers it.
    filter
        .apply(&policy(Tls12, &[("old.test", Tls10)]))
        .unwrap();
    assert_eq!(run(&filter, &hello()).stat, Stat::PassUndecidable);
}

#[test]
fn a_change_written_entry_by_entry_ends_where_a_whole_write_does() {
    let old = policy(Tls12, &[("a.test", Tls13), ("b.test", Tls10)]);
    let mut new = old.clone();
    new.set_host("a.test", None).unwrap();
    new.set_host("b.test", Some(Tls13)).unwrap();
    new.set_host("c.test", Some(Tls11)).unwrap();
    new.zone_min = Tls11;
    let mut changed = loaded_filter(&old);
    changed.apply_change(&old, &new).unwrap();
    let whole = loaded_filter(&new);
    let original = loaded_filter(&old);
    let mut differs = 0;
    for sni in ["a.test", "b.test", "c.test", "d.test"] {
        for v in [
            version::TLS1_0,
            version::TLS1_1,
            version::TLS1_2,
            version::TLS1_3,
        ] {
            let frame = segment(hello_with_versions(sni, &[v]));
            let (got, want) = (run(&changed, &frame).stat, run(&whole, &frame).stat);
            assert_eq!(got, want, "{sni} offering {v:x}");
            let before = run(&original, &frame).stat;
            differs += usize::from(before != want);
        }
    }
    assert!(
        differs >= 4,
        "the change must change verdicts to mean anything"
    );
}
