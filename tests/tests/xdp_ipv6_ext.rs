//! IPv6 extension headers in front of TCP, run in the kernel with
//! BPF_PROG_TEST_RUN: the filter looks through hop-by-hop, destination
//! options, a routing header with no segments left and an atomic fragment,
//! and passes everything else with its own counter (`PassIpv6ExtHeaders`,
//! or `PassFragment` for a real fragment).

use gateway::{
    frame::{TcpFrame, flags, tcp_view},
    hello::{ClientHello, Ext},
    tls_version::TlsVersion::Tls12,
    xdp::{FrameVerdict, XDP_PASS, XdpFilter},
};
use gateway_common::{Stat, version};
use gateway_tests::{CLIENT_V6, SERVER_V6, fresh_port, loaded_filter, policy};

/// Where the IPv6 header starts in an untagged frame.
const L3: usize = 14;
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DEST_OPTS: u8 = 60;
const AH: u8 = 51;
const TCP: u8 = 6;

/// One extension header: its kind and its bytes after the next-header byte.
struct Ext6 {
    kind: u8,
    body: Vec<u8>,
}

/// Options header (hop-by-hop or destination options) of `len8` 8-byte units,
/// filled with a Router Alert (hop-by-hop) or PadN.
fn options(kind: u8, len8: usize) -> Ext6 {
    let mut body = vec![(len8 - 1) as u8];
    if kind == HOP_BY_HOP {
        body.extend_from_slice(&[5, 2, 0, 0]); // Router Alert: MLD
    }
    let pad = len8 * 8 - 1 - body.len();
    body.push(1); // PadN
    body.push((pad - 2) as u8);
    body.resize(len8 * 8 - 1, 0);
    Ext6 { kind, body }
}

/// A segment-routing header (type 4) with one segment and `left` segments left.
fn routing(left: u8) -> Ext6 {
    let mut body = vec![2, 4, left, 0, 0, 0, 0];
    body.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    Ext6 {
        kind: ROUTING,
        body,
    }
}

/// A fragment header: offset in 8-byte units, more-fragments flag; byte 1 is
/// reserved and set, to show it is not taken for a length.
fn fragment(offset: u16, more: bool) -> Ext6 {
    let word = (offset << 3) | u16::from(more);
    let mut body = vec![0xff];
    body.extend_from_slice(&word.to_be_bytes());
    body.extend_from_slice(&[0x12, 0x34, 0x56, 0x78]);
    Ext6 {
        kind: FRAGMENT,
        body,
    }
}

/// The frame with `exts` inserted between the IPv6 header and TCP. The TCP
/// checksum stays valid: the pseudo-header's length is TCP's own.
fn with_exts(frame: &TcpFrame, exts: &[Ext6]) -> Vec<u8> {
    let mut bytes = frame.build();
    let tcp = bytes.split_off(L3 + 40);
    let mut chain = Vec::new();
    for (i, e) in exts.iter().enumerate() {
        chain.push(exts.get(i + 1).map_or(TCP, |n| n.kind));
        chain.extend_from_slice(&e.body);
    }
    if let Some(first) = exts.first() {
        bytes[L3 + 6] = first.kind;
    }
    let plen = u16::from_be_bytes([bytes[L3 + 4], bytes[L3 + 5]]) as usize + chain.len();
    bytes[L3 + 4..L3 + 6].copy_from_slice(&(plen as u16).to_be_bytes());
    bytes.extend_from_slice(&chain);
    bytes.extend_from_slice(&tcp);
    bytes
}

/// The frame with its extension headers (`chain` bytes) taken out again, so
/// `tcp_view` can read and check it.
fn without_exts(frame: &[u8], chain: usize, first_kind_after: u8) -> Vec<u8> {
    let mut out = frame[..L3 + 40].to_vec();
    out[L3 + 6] = first_kind_after;
    let plen = u16::from_be_bytes([out[L3 + 4], out[L3 + 5]]) as usize - chain;
    out[L3 + 4..L3 + 6].copy_from_slice(&(plen as u16).to_be_bytes());
    out.extend_from_slice(&frame[L3 + 40 + chain..]);
    out
}

fn v6(payload: Vec<u8>) -> TcpFrame {
    TcpFrame::new(CLIENT_V6, SERVER_V6, fresh_port(), 443, payload)
}

fn run(filter: &XdpFilter, frame: &[u8]) -> FrameVerdict {
    filter.run_frame(frame).expect("BPF_PROG_TEST_RUN")
}

fn chain_len(exts: &[Ext6]) -> usize {
    exts.iter().map(|e| e.body.len() + 1).sum()
}

#[test]
fn hellos_behind_walked_extension_headers_are_decided() {
    let filter = loaded_filter(&policy(Tls12, &[]));
    let old = ClientHello::legacy(version::TLS1_0, Some("zone.test")).record();
    let modern = ClientHello::modern("zone.test").record();
    let cases: Vec<(&str, Vec<Ext6>)> = vec![
        ("hop-by-hop", vec![options(HOP_BY_HOP, 1)]),
        ("destination options", vec![options(DEST_OPTS, 3)]),
        ("routing, no segments left", vec![routing(0)]),
        ("atomic fragment", vec![fragment(0, false)]),
        (
            "hop-by-hop, destination options, routing, fragment",
            vec![
                options(HOP_BY_HOP, 1),
                options(DEST_OPTS, 2),
                routing(0),
                fragment(0, false),
            ],
        ),
    ];
    for (what, exts) in cases {
        let frame = with_exts(&v6(old.clone()), &exts);
        let v = run(&filter, &frame);
        assert_eq!((v.stat, v.action), (Stat::DropTls10, XDP_PASS), "{what}");
        let seen = v.hello.as_ref().expect("the hello was read");
        assert_eq!(seen.sni.as_deref(), Some("zone.test"), "{what}");
        // The RST is rewritten in place, behind the same headers, checksum intact.
        assert_eq!(v.output.len(), frame.len(), "{what}");
        let plain = without_exts(&v.output, chain_len(&exts), TCP);
        let reset = tcp_view(&plain).expect("a TCP frame");
        assert_eq!(reset.flags, flags::RST | flags::ACK, "{what}");
        assert!(reset.checksum_ok, "{what}: the RST's checksum verifies");
        let v = run(&filter, &with_exts(&v6(modern.clone()), &exts));
        assert_eq!(v.stat, Stat::PassAllowed, "{what}");
    }
}

#[test]
fn a_split_hello_behind_extension_headers_is_reassembled() {
    let filter = loaded_filter(&policy(Tls12, &[]));
    let mut h = ClientHello::legacy(version::TLS1_0, Some("zone.test"));
    h.extensions.as_mut().unwrap().push(Ext::padding(2000));
    let stream = h.record();
    let exts = || vec![options(HOP_BY_HOP, 1), options(DEST_OPTS, 1)];
    let sport = fresh_port();
    let isn = 1000u32;
    let seg = |f: u8, seq: u32, payload: &[u8]| {
        let mut t = TcpFrame::new(CLIENT_V6, SERVER_V6, sport, 443, payload.to_vec());
        (t.flags, t.seq) = (f, seq);
        with_exts(&t, &exts())
    };
    assert_eq!(
        run(&filter, &seg(flags::SYN, isn, &[])).stat,
        Stat::PassControl
    );
    let first = run(&filter, &seg(flags::ACK, isn + 1, &stream[..1200]));
    assert_eq!(first.stat, Stat::PassHelloPartial);
    let rest = run(&filter, &seg(flags::ACK, isn + 1201, &stream[1200..]));
    assert_eq!(
        (rest.stat, rest.split),
        (Stat::DropTls10, Some(Stat::SplitRefused))
    );
}

#[test]
fn other_extension_headers_and_fragments_pass_with_their_own_reason() {
    let filter = loaded_filter(&policy(Tls12, &[]));
    let old = ClientHello::legacy(version::TLS1_0, Some("zone.test")).record();
    let ah = Ext6 {
        kind: AH,
        body: vec![
            2, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    };
    let five = (0..5).map(|_| options(DEST_OPTS, 1)).collect::<Vec<_>>();
    let cases: Vec<(&str, Vec<Ext6>, Stat)> = vec![
        ("AH", vec![ah], Stat::PassIpv6ExtHeaders),
        (
            "routing, a segment left",
            vec![routing(1)],
            Stat::PassIpv6ExtHeaders,
        ),
        ("five headers", five, Stat::PassIpv6ExtHeaders),
        (
            "over 255 bytes of headers",
            vec![options(HOP_BY_HOP, 26)],
            Stat::PassIpv6ExtHeaders,
        ),
        (
            "first fragment",
            vec![fragment(0, true)],
            Stat::PassFragment,
        ),
        (
            "later fragment",
            vec![fragment(185, true)],
            Stat::PassFragment,
        ),
        (
            "last fragment",
            vec![fragment(185, false)],
            Stat::PassFragment,
        ),
    ];
    let before = filter.stats().read().unwrap();
    for (what, exts, stat) in cases {
        let frame = with_exts(&v6(old.clone()), &exts);
        let v = run(&filter, &frame);
        assert_eq!((v.stat, v.action), (stat, XDP_PASS), "{what}");
        assert_eq!(v.output, frame, "{what}: passed unchanged");
    }
    let after = filter.stats().read().unwrap();
    assert_eq!(
        after.get(Stat::PassIpv6ExtHeaders) - before.get(Stat::PassIpv6ExtHeaders),
        4
    );
    // An upper layer other than TCP behind a walked header is not TCP.
    let mut udp = with_exts(&v6(old.clone()), &[options(HOP_BY_HOP, 1)]);
    udp[L3 + 40] = 17;
    assert_eq!(run(&filter, &udp).stat, Stat::PassNotTcp);
    // A header longer than the packet says it carries is malformed.
    let mut short = with_exts(&v6(old), &[options(DEST_OPTS, 1)]);
    short[L3 + 4..L3 + 6].copy_from_slice(&4u16.to_be_bytes());
    assert_eq!(run(&filter, &short).stat, Stat::PassMalformed);
}
