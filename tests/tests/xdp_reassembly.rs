//! Reassembly in the XDP program, frame by frame through BPF_PROG_TEST_RUN:
//! hellos split over segments and records are decided in the kernel, and every
//! way the stream can go wrong before the decision passes (fail open), counted.

use std::net::IpAddr;

use gateway::{
    frame::{TPID_8021Q, TcpFrame, flags, tcp_view},
    hello::{ClientHello, Ext, records, reference, sslv2_hello},
    tls_version::TlsVersion::{Tls12, Tls13},
    xdp::{FrameVerdict, MapSizes, ProgramLog, XDP_DROP, XDP_PASS, XdpFilter, XdpPolicy},
};
use gateway_common::{Stat, version};
use gateway_tests::{CLIENT_V4, CLIENT_V6, SERVER_V4, SERVER_V6, fresh_port, policy, require_root};

/// One client connection: frames with consistent sequence numbers.
struct Conn {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    isn: u32,
    vlan: bool,
}

impl Conn {
    fn v4() -> Conn {
        Conn {
            src: CLIENT_V4,
            dst: SERVER_V4,
            sport: fresh_port(),
            isn: 0x7fff_fff0, // the stream crosses 2^31 and wraps nowhere near here
            vlan: false,
        }
    }

    fn frame(&self, flags: u8, seq: u32, payload: &[u8]) -> TcpFrame {
        let mut f = TcpFrame::new(self.src, self.dst, self.sport, 443, payload.to_vec());
        f.flags = flags;
        f.seq = seq;
        if self.vlan {
            f.vlans = vec![(TPID_8021Q, 42)];
        }
        f
    }

    fn syn(&self) -> TcpFrame {
        self.frame(flags::SYN, self.isn, &[])
    }

    /// Stream bytes starting at stream offset `off` (0 = the first byte after the SYN).
    fn data(&self, off: usize, bytes: &[u8]) -> TcpFrame {
        let seq = self.isn.wrapping_add(1).wrapping_add(off as u32);
        self.frame(flags::PSH | flags::ACK, seq, bytes)
    }
}

fn filter_with(policy: &XdpPolicy, tables: MapSizes) -> XdpFilter {
    require_root("loading the XDP program (BPF_PROG_LOAD, BPF_PROG_TEST_RUN)");
    let mut filter = XdpFilter::load_with(ProgramLog::Off, tables).expect("load the XDP program");
    filter.apply(policy).expect("apply the policy");
    filter
}

fn filter() -> XdpFilter {
    filter_with(
        &policy(Tls12, &[("strict.test", Tls13)]),
        MapSizes::default(),
    )
}

fn run(filter: &XdpFilter, frame: &TcpFrame) -> FrameVerdict {
    filter.run_frame(&frame.build()).expect("BPF_PROG_TEST_RUN")
}

/// A TLS hello of `legacy` version padded to browser size (two segments at MTU 1500).
fn padded(legacy: u16, sni: &str) -> Vec<u8> {
    let mut h = ClientHello::legacy(legacy, Some(sni));
    h.extensions.as_mut().unwrap().push(Ext::padding(2000));
    h.message()
}

/// A padded TLS 1.0 hello for a zone hostname, in one record.
fn old_hello_stream() -> Vec<u8> {
    records(
        &padded(version::TLS1_0, "zone.test"),
        version::TLS1_0,
        16384,
    )
}

/// Sends `stream` cut at `cuts`, returning the verdicts.
fn send(filter: &XdpFilter, conn: &Conn, stream: &[u8], cuts: &[usize]) -> Vec<FrameVerdict> {
    let mut bounds = vec![0];
    bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < stream.len()));
    bounds.push(stream.len());
    bounds
        .windows(2)
        .map(|w| run(filter, &conn.data(w[0], &stream[w[0]..w[1]])))
        .collect()
}

fn stats(v: &[FrameVerdict]) -> Vec<Stat> {
    v.iter().map(|v| v.stat).collect()
}

#[test]
fn a_two_segment_hello_is_refused_on_its_completing_segment_which_becomes_a_reset() {
    let filter = filter();
    let before = filter.stats().read().unwrap();
    let conn = Conn::v4();
    assert_eq!(run(&filter, &conn.syn()).stat, Stat::PassControl);
    let stream = old_hello_stream();
    assert!(stream.len() > 2000, "{} bytes", stream.len());
    let first = run(&filter, &conn.data(0, &stream[..1448]));
    assert_eq!(first.stat, Stat::PassHelloPartial);
    assert_eq!(first.action, XDP_PASS);
    let second = conn.data(1448, &stream[1448..]);
    let v = run(&filter, &second);
    assert_eq!(v.stat, Stat::DropTls10);
    assert_eq!(
        v.action, XDP_PASS,
        "turned into a reset for the local stack"
    );
    let tcp = tcp_view(&v.output).expect("still a TCP frame");
    assert_eq!(tcp.flags, flags::RST | flags::ACK);
    assert_eq!(
        tcp.seq, second.seq,
        "the reset is where the stack expects data"
    );
    let hello = v.hello.expect("the hello was read");
    assert_eq!(
        (hello.max_version, hello.sni.as_deref()),
        (version::TLS1_0, Some("zone.test"))
    );
    // The client's retransmission passes unchanged: the stack answers it with a reset.
    let again = run(&filter, &second);
    assert_eq!(again.stat, Stat::DropRetransmit);
    assert_eq!(again.output, second.build());
    let after = filter.stats().read().unwrap();
    assert_eq!(
        after.get(Stat::SplitRefused) - before.get(Stat::SplitRefused),
        1
    );
}

#[test]
fn ipv6_and_vlan_tagged_flows_are_reassembled_too() {
    let filter = filter();
    let stream = records(
        &padded(version::TLS1_2, "strict.test"),
        version::TLS1_0,
        16384,
    );
    let mut conn = Conn::v4();
    conn.src = CLIENT_V6;
    conn.dst = SERVER_V6;
    conn.vlan = true;
    run(&filter, &conn.syn());
    let v = send(&filter, &conn, &stream, &[1200]);
    assert_eq!(stats(&v), [Stat::PassHelloPartial, Stat::DropTls12]);
    // The same hello for a hostname on the zone's 1.2 minimum is allowed.
    let conn = Conn::v4();
    let stream = records(
        &padded(version::TLS1_2, "other.test"),
        version::TLS1_0,
        16384,
    );
    let v = send(&filter, &conn, &stream, &[1200]);
    assert_eq!(stats(&v), [Stat::PassHelloPartial, Stat::PassAllowed]);
}

#[test]
fn every_cut_of_a_hello_and_its_records_is_refused_in_order() {
    let filter = filter();
    let message = padded(version::TLS1_1, "zone.test");
    let one_record = records(&message, version::TLS1_0, 16384);
    let five_records = records(&message, version::TLS1_0, message.len() / 5 + 1);
    let tiny_records = records(&message[..], version::TLS1_0, 7);
    let one_byte_start: Vec<usize> = (1..50).collect();
    let cases: [(&str, &Vec<u8>, Vec<usize>); 6] = [
        ("record header cut after 3 bytes", &one_record, vec![3]),
        ("handshake header cut", &one_record, vec![7]),
        (
            "first 50 bytes in 1-byte segments",
            &one_record,
            one_byte_start,
        ),
        (
            "five records, three segments",
            &five_records,
            vec![700, 1400],
        ),
        ("7-byte records, two segments", &tiny_records, vec![1448]),
        ("five records in one segment", &five_records, vec![]),
    ];
    for (what, stream, cuts) in cases {
        for syn in [true, false] {
            let conn = Conn::v4();
            if syn {
                run(&filter, &conn.syn());
            }
            let v = stats(&send(&filter, &conn, stream, &cuts));
            let (last, rest) = v.split_last().unwrap();
            assert_eq!(*last, Stat::DropTls11, "{what} (SYN seen: {syn}): {v:?}");
            assert!(
                rest.iter().all(|s| *s == Stat::PassHelloPartial),
                "{what} (SYN seen: {syn}): {v:?}"
            );
        }
    }
}

#[test]
fn identical_retransmissions_change_nothing_and_different_bytes_give_up() {
    let filter = filter();
    let stream = old_hello_stream();
    // The first segment twice, then a partial overlap that carries new bytes too.
    let conn = Conn::v4();
    run(&filter, &conn.syn());
    assert_eq!(
        run(&filter, &conn.data(0, &stream[..1000])).stat,
        Stat::PassHelloPartial
    );
    assert_eq!(
        run(&filter, &conn.data(0, &stream[..1000])).stat,
        Stat::PassHelloPartial
    );
    assert_eq!(
        run(&filter, &conn.data(500, &stream[500..1500])).stat,
        Stat::PassHelloPartial
    );
    assert_eq!(
        run(&filter, &conn.data(1500, &stream[1500..])).stat,
        Stat::DropTls10
    );
    // A retransmission whose bytes differ: the program cannot know which the
    // stack keeps, so it gives up and passes the rest.
    let conn = Conn::v4();
    run(&filter, &conn.syn());
    run(&filter, &conn.data(0, &stream[..1000]));
    let mut changed = stream[..1000].to_vec();
    changed[600] ^= 0x20;
    assert_eq!(
        run(&filter, &conn.data(0, &changed)).stat,
        Stat::PassOverlapMismatch
    );
    assert!(!run(&filter, &conn.data(1000, &stream[1000..])).refused());
}

#[test]
fn gaps_and_out_of_order_segments_pass() {
    let filter = filter();
    let stream = old_hello_stream();
    // A gap before the decision.
    let conn = Conn::v4();
    run(&filter, &conn.syn());
    run(&filter, &conn.data(0, &stream[..700]));
    assert_eq!(
        run(&filter, &conn.data(1400, &stream[1400..])).stat,
        Stat::PassOutOfOrder
    );
    assert!(!run(&filter, &conn.data(700, &stream[700..1400])).refused());
    // The second segment first: the start is missing.
    let conn = Conn::v4();
    run(&filter, &conn.syn());
    assert_eq!(
        run(&filter, &conn.data(1400, &stream[1400..])).stat,
        Stat::PassOutOfOrder
    );
    assert!(!run(&filter, &conn.data(0, &stream[..1400])).refused());
}

#[test]
fn hello_lookalikes_later_in_the_stream_are_never_parsed() {
    let filter = filter();
    let allowed = ClientHello::modern("zone.test").record();
    let old = ClientHello::legacy(version::TLS1_0, Some("zone.test")).record();
    let conn = Conn::v4();
    run(&filter, &conn.syn());
    assert_eq!(
        run(&filter, &conn.data(0, &allowed)).stat,
        Stat::PassAllowed
    );
    // A plaintext TLS 1.0 ClientHello where application data could be, and a
    // TLS 1.2 renegotiation record (encrypted handshake) further on.
    let at = allowed.len() + 300;
    assert_eq!(run(&filter, &conn.data(at, &old)).stat, Stat::PassMidStream);
    let mut reneg = vec![22, 3, 3, 0, 64, 1];
    reneg.extend((0..63).map(|i| (i * 37) as u8));
    assert_eq!(
        run(&filter, &conn.data(at + 5000, &reneg)).stat,
        Stat::PassMidStream
    );
    // A stream that began with something else never starts a hello later.
    let conn = Conn::v4();
    run(&filter, &conn.syn());
    assert_eq!(
        run(&filter, &conn.data(0, b"GET / HTTP/1.1\r\n\r\n")).stat,
        Stat::PassNotTls
    );
    assert_eq!(run(&filter, &conn.data(18, &old)).stat, Stat::PassMidStream);
}

#[test]
fn a_hello_larger_than_the_buffers_passes() {
    let filter = filter();
    let mut h = ClientHello::legacy(version::TLS1_0, Some("zone.test"));
    h.extensions.as_mut().unwrap().push(Ext::padding(6000));
    let stream = records(&h.message(), version::TLS1_0, 16384);
    let conn = Conn::v4();
    run(&filter, &conn.syn());
    let v = stats(&send(&filter, &conn, &stream, &[1448, 2896, 4344, 5792]));
    assert!(v.contains(&Stat::PassTooLarge), "{v:?}");
    assert!(!v.iter().any(|s| s.verdict() == Some("drop")), "{v:?}");
    // 1-byte records: the stream outgrows its buffer before the handshake bytes do.
    let mut h = ClientHello::legacy(version::TLS1_0, Some("zone.test"));
    h.extensions.as_mut().unwrap().push(Ext::padding(1500));
    let stream = records(&h.message(), version::TLS1_0, 1);
    assert!(stream.len() > 8192);
    let conn = Conn::v4();
    let cuts: Vec<usize> = (1..stream.len() / 1448 + 1).map(|i| i * 1448).collect();
    let v = stats(&send(&filter, &conn, &stream, &cuts));
    assert!(v.contains(&Stat::PassTooLarge), "{v:?}");
    assert!(!v.iter().any(|s| s.verdict() == Some("drop")), "{v:?}");
}

#[test]
fn a_flow_whose_slot_another_flow_took_passes() {
    // One reassembly slot: every two hellos in progress collide.
    let tables = MapSizes {
        anchors: 1 << 16,
        hello_flows: 1,
        ..MapSizes::default()
    };
    let filter = filter_with(&policy(Tls12, &[]), tables);
    let stream = old_hello_stream();
    let (a, b) = (Conn::v4(), Conn::v4());
    run(&filter, &a.data(0, &stream[..1000]));
    run(&filter, &b.data(0, &stream[..1000]));
    assert_eq!(
        run(&filter, &a.data(1000, &stream[1000..])).stat,
        Stat::PassEvicted
    );
    assert_eq!(
        run(&filter, &b.data(1000, &stream[1000..])).stat,
        Stat::DropTls10
    );
}

#[test]
fn a_flow_whose_syn_anchor_was_overwritten_is_still_decided() {
    // One anchor slot: the second SYN takes it, and the first flow's hello is
    // judged as a flow whose SYN was not seen (a hello header begins the stream).
    let tables = MapSizes {
        anchors: 1,
        hello_flows: 64,
        ..MapSizes::default()
    };
    let filter = filter_with(&policy(Tls12, &[]), tables);
    let stream = old_hello_stream();
    let (a, b) = (Conn::v4(), Conn::v4());
    run(&filter, &a.syn());
    run(&filter, &b.syn());
    let v = stats(&send(&filter, &a, &stream, &[1448]));
    assert_eq!(v, [Stat::PassHelloPartial, Stat::DropTls10]);
}

#[test]
fn table_sizes_are_checked() {
    require_root("loading the XDP program");
    for bad in [0, 3, 1 << 25] {
        let tables = MapSizes {
            anchors: bad,
            hello_flows: 16,
            ..MapSizes::default()
        };
        let err = XdpFilter::load_with(ProgramLog::Off, tables)
            .err()
            .expect("refused");
        assert!(format!("{err:#}").contains("power of two"), "{err:#}");
    }
    for bad in [0, 1 << 25] {
        let tables = MapSizes {
            hostnames: bad,
            ..MapSizes::default()
        };
        let err = XdpFilter::load_with(ProgramLog::Off, tables)
            .err()
            .expect("refused");
        assert!(format!("{err:#}").contains("hostnames"), "{err:#}");
    }
}

#[test]
fn the_hostname_table_is_sized_at_load_and_holds_more_than_the_object_declares() {
    // The object declares 65,536 entries; a table of a million (the default)
    // takes them, and a small one refuses the entry past its size.
    let mut big = XdpFilter::load_with(ProgramLog::Off, MapSizes::default()).unwrap();
    let mut p = policy(Tls12, &[]);
    for i in 0..70_000 {
        p.set_host(&format!("h{i}.test"), Some(Tls13)).unwrap();
    }
    big.apply(&p).unwrap();
    let small = MapSizes {
        hostnames: 1000,
        ..MapSizes::default()
    };
    let mut filter = XdpFilter::load_with(ProgramLog::Off, small).unwrap();
    let err = filter
        .apply(&p)
        .expect_err("more hostnames than the table holds");
    assert!(format!("{err:#}").contains("hostname policy"), "{err:#}");
}

#[test]
fn an_sslv2_hello_whose_first_segment_is_shorter_than_its_header_is_decided() {
    let p = policy(Tls12, &[]);
    let filter = filter_with(&p, MapSizes::default());
    let before = filter.stats().read().unwrap();
    let hello = sslv2_hello(version::TLS1_0);
    for cut in 1..=10 {
        for syn in [true, false] {
            let conn = Conn::v4();
            let mut model = reference::Flow::new(&p);
            if syn {
                assert_eq!(run(&filter, &conn.syn()).stat, Stat::PassControl);
                model.segment(conn.isn, flags::SYN, &[]);
            }
            let first = conn.data(0, &hello[..cut]);
            let v = run(&filter, &first);
            assert_eq!(
                (v.stat, v.action),
                (Stat::PassHelloPartial, XDP_PASS),
                "cut at {cut}, SYN seen: {syn}"
            );
            assert_eq!(
                model.segment(first.seq, first.flags, &first.payload).stat,
                v.stat
            );
            let rest = conn.data(cut, &hello[cut..]);
            let v = run(&filter, &rest);
            assert_eq!(v.stat, Stat::DropSsl2, "cut at {cut}, SYN seen: {syn}");
            assert_eq!(v.split, Some(Stat::SplitRefused), "cut at {cut}");
            let seen = v.hello.as_ref().expect("the hello was reported");
            assert_eq!(
                (seen.max_version, seen.sni.as_deref()),
                (version::SSL2, None)
            );
            let reset = tcp_view(&v.output).expect("still a TCP frame");
            assert_eq!(reset.flags, flags::RST | flags::ACK, "cut at {cut}");
            assert!(reset.checksum_ok);
            let m = model.segment(rest.seq, rest.flags, &rest.payload);
            assert_eq!(
                (m.stat, m.split),
                (v.stat, v.split),
                "program and model, cut at {cut}"
            );
            // Its retransmission passes unchanged.
            assert_eq!(run(&filter, &rest).stat, Stat::DropRetransmit);
        }
    }
    let after = filter.stats().read().unwrap();
    assert_eq!(after.get(Stat::DropSsl2) - before.get(Stat::DropSsl2), 20);
    assert_eq!(after.get(Stat::HelloSsl2) - before.get(Stat::HelloSsl2), 20);
}

#[test]
fn a_short_start_that_is_no_sslv2_header_passes_once_the_header_is_in() {
    let filter = filter();
    let mut bad = sslv2_hello(version::SSL2);
    bad[10] = 0; // a 0-byte challenge: not an SSL 2 ClientHello
    let conn = Conn::v4();
    run(&filter, &conn.syn());
    assert_eq!(
        run(&filter, &conn.data(0, &bad[..4])).stat,
        Stat::PassHelloPartial
    );
    let v = run(&filter, &conn.data(4, &bad[4..]));
    assert_eq!((v.stat, v.action), (Stat::PassNotTls, XDP_PASS));
    assert_eq!(
        v.output,
        conn.data(4, &bad[4..]).build(),
        "passed unchanged"
    );
    // Bytes whose third is not 1 cannot begin one: decided at once, nothing kept.
    let conn = Conn::v4();
    run(&filter, &conn.syn());
    assert_eq!(
        run(&filter, &conn.data(0, &[0x80, 0x2e, 0x02])).stat,
        Stat::PassNotTls
    );
    // In drop mode the completing segment is dropped.
    let mut p = policy(Tls12, &[]);
    p.refuse = gateway::config::RefuseMode::Drop;
    let filter = filter_with(&p, MapSizes::default());
    let hello = sslv2_hello(version::SSL2);
    let conn = Conn::v4();
    run(&filter, &conn.syn());
    run(&filter, &conn.data(0, &hello[..2]));
    let v = run(&filter, &conn.data(2, &hello[2..]));
    assert_eq!((v.stat, v.action), (Stat::DropSsl2, XDP_DROP));
}

#[test]
fn a_fast_open_syn_with_a_hello_passes_and_the_resent_hello_is_decided() {
    // TCP Fast Open: the kernel takes a SYN's data only on a listener with
    // TCP_FASTOPEN set, which the gateway never sets; it acknowledges the SYN
    // alone and the client sends its hello again after the handshake.
    let filter = filter();
    let hello = ClientHello::legacy(version::TLS1_0, Some("zone.test")).record();
    for v6 in [false, true] {
        let mut conn = Conn::v4();
        if v6 {
            (conn.src, conn.dst) = (CLIENT_V6, SERVER_V6);
        }
        let mut syn = conn.syn();
        syn.payload = hello.clone();
        let v = run(&filter, &syn);
        assert_eq!(
            (v.stat, v.action),
            (Stat::PassControl, XDP_PASS),
            "v6: {v6}"
        );
        assert_eq!(v.output, syn.build(), "the SYN passes unchanged");
        assert_eq!(v.hello, None, "its data is not parsed");
        // The SYN anchored the stream: the resent hello at ISN + 1 is refused.
        let resent = conn.data(0, &hello);
        let v = run(&filter, &resent);
        assert_eq!(v.stat, Stat::DropTls10, "v6: {v6}");
        assert_eq!(tcp_view(&v.output).unwrap().flags, flags::RST | flags::ACK);
    }
}
