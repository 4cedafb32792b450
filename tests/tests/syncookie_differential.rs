//! Differential test of the SYN-cookie answer: random SYNs (option layouts
//! of every kind, well and badly formed; ECN asked or not; IPv4 and IPv6;
//! with and without VLAN tags) run through the `cookie_syn` program with
//! BPF_PROG_TEST_RUN, and the SYN-ACK it makes is checked against the model
//! in `gateway_common::syncookie`: addresses, MACs and ports swapped, the
//! acknowledgment the client's ISN + 1, a cookie that checks with the key the
//! loader wrote and carries the options the model agrees to, those options
//! written as the model writes them, and valid IP and TCP checksums. Then the
//! client's next segment: a bare ACK is dropped by `cookie_ack` only with the
//! cookie intact, and a refused first hello is answered by `cookie_reset` with
//! a RST only then (else dropped).

use gateway::xdp::{ProgramLog, XDP_DROP, XDP_PASS, XDP_TX, XdpFilter, cookies};
use gateway_common::syncookie::{
    self, CookieKey, Handshake, SYNACK_OPTIONS_MAX, SYNACK_WINDOW, SynOptions,
};
use proptest::prelude::*;

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const TCP_ECE: u8 = 0x40;
const TCP_CWR: u8 = 0x80;
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const SERVER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

/// One TCP option as a SYN may carry it.
#[derive(Clone, Debug)]
enum Opt {
    Mss(u16),
    Wscale(u8),
    SackOk,
    Timestamps(u32, u32),
    Nop,
    End,
    /// A kind the program does not know, with its body.
    Unknown(u8, Vec<u8>),
    /// A known kind with a wrong length byte (0, 1, short, long).
    BadLength(u8, u8),
}

impl Opt {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Opt::Mss(v) => [vec![2, 4], v.to_be_bytes().to_vec()].concat(),
            Opt::Wscale(s) => vec![3, 3, *s],
            Opt::SackOk => vec![4, 2],
            Opt::Timestamps(a, b) => [
                vec![8, 10],
                a.to_be_bytes().to_vec(),
                b.to_be_bytes().to_vec(),
            ]
            .concat(),
            Opt::Nop => vec![1],
            Opt::End => vec![0],
            Opt::Unknown(kind, body) => [vec![*kind, body.len() as u8 + 2], body.clone()].concat(),
            Opt::BadLength(kind, len) => {
                let mut b = vec![*kind, *len];
                b.resize(usize::from(*len).max(2), 0x5a);
                b
            }
        }
    }
}

fn opt() -> impl Strategy<Value = Opt> {
    prop_oneof![
        4 => prop_oneof![
            any::<u16>(),
            prop::sample::select(vec![0u16, 1, 535, 536, 1220, 1300, 1420, 1440, 1460, 8940, 9000])
        ]
        .prop_map(Opt::Mss),
        3 => (0u8..=20).prop_map(Opt::Wscale),
        3 => Just(Opt::SackOk),
        3 => (any::<u32>(), any::<u32>()).prop_map(|(a, b)| Opt::Timestamps(a, b)),
        3 => Just(Opt::Nop),
        1 => Just(Opt::End),
        1 => (
            prop::sample::select(vec![5u8, 6, 19, 28, 30, 34, 254]),
            prop::collection::vec(any::<u8>(), 0..8)
        )
            .prop_map(|(k, b)| Opt::Unknown(k, b)),
        1 => (prop::sample::select(vec![2u8, 3, 4, 8]), 0u8..12)
            .prop_map(|(k, l)| Opt::BadLength(k, l)),
    ]
}

/// A random SYN.
#[derive(Clone, Debug)]
struct Syn {
    ipv6: bool,
    vlans: usize,
    sport: u16,
    dport: u16,
    isn: u32,
    ecn: (bool, bool),
    options: Vec<Opt>,
    allow: u32,
}

fn syn() -> impl Strategy<Value = Syn> {
    (
        any::<bool>(),
        0usize..=2,
        1u16..,
        prop::sample::select(vec![443u16, 8443]),
        any::<u32>(),
        (any::<bool>(), any::<bool>()),
        prop::collection::vec(opt(), 0..10),
        0u32..16,
    )
        .prop_map(
            |(ipv6, vlans, sport, dport, isn, ecn, options, allow)| Syn {
                ipv6,
                vlans,
                sport,
                dport,
                isn,
                ecn,
                options,
                allow,
            },
        )
}

impl Syn {
    /// The option area as sent: at most 40 bytes, padded with zeros to a multiple of 4.
    fn area(&self) -> Vec<u8> {
        let mut area: Vec<u8> = self.options.iter().flat_map(Opt::bytes).collect();
        area.truncate(syncookie::MAX_OPTIONS);
        area.resize(area.len().div_ceil(4) * 4, 0);
        area
    }

    fn flags(&self) -> u8 {
        TCP_SYN | if self.ecn.0 { TCP_ECE } else { 0 } | if self.ecn.1 { TCP_CWR } else { 0 }
    }

    fn client_ip(&self) -> Vec<u8> {
        if self.ipv6 {
            vec![0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34]
        } else {
            vec![198, 18, 7, 9]
        }
    }

    fn server_ip(&self) -> Vec<u8> {
        if self.ipv6 {
            vec![0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]
        } else {
            vec![198, 18, 0, 1]
        }
    }

    /// The frame, and the offset of its IP header.
    fn frame(&self) -> (Vec<u8>, usize) {
        self.segment(self.flags(), self.isn, 0, &self.area(), &[])
    }

    /// A segment of this flow from the client, and the offset of its IP header.
    fn segment(
        &self,
        flags: u8,
        seq: u32,
        ack: u32,
        area: &[u8],
        payload: &[u8],
    ) -> (Vec<u8>, usize) {
        let mut tcp = Vec::new();
        tcp.extend(self.sport.to_be_bytes());
        tcp.extend(self.dport.to_be_bytes());
        tcp.extend(seq.to_be_bytes());
        tcp.extend(ack.to_be_bytes());
        tcp.push((((20 + area.len()) / 4) as u8) << 4);
        tcp.push(flags);
        tcp.extend(64240u16.to_be_bytes());
        tcp.extend([0u8; 4]);
        tcp.extend(area);
        tcp.extend(payload);
        let sum = tcp_sum(&self.client_ip(), &self.server_ip(), &tcp);
        tcp[16..18].copy_from_slice(&(!sum).to_be_bytes());
        let mut f = Vec::new();
        f.extend(SERVER_MAC);
        f.extend(CLIENT_MAC);
        for i in 0..self.vlans {
            f.extend(
                if i == 0 && self.vlans == 2 {
                    0x88a8u16
                } else {
                    0x8100
                }
                .to_be_bytes(),
            );
            f.extend((100 + i as u16).to_be_bytes());
        }
        let l3 = f.len() + 2;
        if self.ipv6 {
            f.extend([0x86, 0xdd, 0x60, 0, 0, 0]);
            f.extend((tcp.len() as u16).to_be_bytes());
            f.extend([6, 64]);
        } else {
            f.extend([0x08, 0x00, 0x45, 0]);
            f.extend(((20 + tcp.len()) as u16).to_be_bytes());
            f.extend([0, 1, 0x40, 0, 64, 6, 0, 0]);
        }
        f.extend(self.client_ip());
        f.extend(self.server_ip());
        if !self.ipv6 {
            let sum = !fold(sum16(&f[l3..l3 + 20], 0));
            f[l3 + 10..l3 + 12].copy_from_slice(&sum.to_be_bytes());
        }
        f.extend(tcp);
        (f, l3)
    }
}

fn sum16(bytes: &[u8], start: u32) -> u32 {
    bytes.chunks(2).fold(start, |s, c| {
        s + u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
    })
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The folded sum of a TCP segment with its pseudo-header (0xffff when its checksum is right).
fn tcp_sum(src: &[u8], dst: &[u8], tcp: &[u8]) -> u16 {
    let pseudo = sum16(src, 0) + sum16(dst, 0) + 6 + tcp.len() as u32;
    fold(sum16(tcp, pseudo))
}

/// What a well-formed option list offers, read independently of the model
/// (the last of each option wins, as in the kernel's walk); `None` when the
/// list is not well formed (an end, a bad length, or over 40 bytes).
fn spec_offered(syn: &Syn) -> Option<syncookie::Offered> {
    let len: usize = syn.options.iter().map(|o| o.bytes().len()).sum();
    if len > syncookie::MAX_OPTIONS {
        return None;
    }
    let mut offered = syncookie::Offered {
        ecn: syn.ecn == (true, true),
        ..Default::default()
    };
    for o in &syn.options {
        match o {
            Opt::Mss(v) => offered.mss = *v,
            Opt::Wscale(v) => offered.wscale = Some(*v),
            Opt::SackOk => offered.sack = true,
            Opt::Timestamps(a, b) => offered.timestamps = Some((*a, *b)),
            Opt::Nop | Opt::Unknown(..) => {}
            Opt::End | Opt::BadLength(..) => return None,
        }
    }
    Some(offered)
}

/// What the model says the program must answer to `syn`.
struct Expected {
    agreed: SynOptions,
    /// The client's TSval to echo, when both sides use timestamps.
    echo: Option<u32>,
}

fn model(syn: &Syn) -> Expected {
    let offered = syncookie::parse_options(&syn.area(), syn.flags());
    if let Some(spec) = spec_offered(syn) {
        assert_eq!(offered, spec, "the model misreads well-formed options");
    }
    let agreed = SynOptions::agree(&offered, syn.allow, syn.ipv6);
    let echo = offered
        .timestamps
        .filter(|_| syn.allow & syncookie::ALLOW_TIMESTAMPS != 0)
        .map(|(tsval, _)| tsval);
    Expected { agreed, echo }
}

fn monotonic_slot() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    syncookie::time_slot(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// Checks the program's answer to `syn` against the model.
fn check_answer(
    syn: &Syn,
    ring: &[CookieKey; 3],
    action: u32,
    out: &[u8],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(action, XDP_TX, "not answered");
    let (sent, l3) = syn.frame();
    prop_assert_eq!(&out[..6], &CLIENT_MAC[..], "destination MAC");
    prop_assert_eq!(&out[6..12], &SERVER_MAC[..], "source MAC");
    prop_assert_eq!(&out[12..l3], &sent[12..l3], "VLAN tags and EtherType kept");
    let (ip_len, src, dst) = if syn.ipv6 {
        (40, &out[l3 + 8..l3 + 24], &out[l3 + 24..l3 + 40])
    } else {
        (20, &out[l3 + 12..l3 + 16], &out[l3 + 16..l3 + 20])
    };
    prop_assert_eq!(src, &syn.server_ip()[..], "source address");
    prop_assert_eq!(dst, &syn.client_ip()[..], "destination address");
    let tcp = &out[l3 + ip_len..];
    if syn.ipv6 {
        let plen = u16::from_be_bytes([out[l3 + 4], out[l3 + 5]]) as usize;
        prop_assert_eq!(plen, tcp.len(), "IPv6 payload length");
        prop_assert_eq!(out[l3 + 6], 6);
    } else {
        prop_assert_eq!(fold(sum16(&out[l3..l3 + 20], 0)), 0xffff, "IPv4 checksum");
        let total = u16::from_be_bytes([out[l3 + 2], out[l3 + 3]]) as usize;
        prop_assert_eq!(total, 20 + tcp.len(), "IPv4 total length");
    }
    prop_assert_eq!(tcp_sum(src, dst, tcp), 0xffff, "TCP checksum");
    let be32 = |at: usize| u32::from_be_bytes([tcp[at], tcp[at + 1], tcp[at + 2], tcp[at + 3]]);
    prop_assert_eq!(u16::from_be_bytes([tcp[0], tcp[1]]), syn.dport);
    prop_assert_eq!(u16::from_be_bytes([tcp[2], tcp[3]]), syn.sport);
    prop_assert_eq!(be32(8), syn.isn.wrapping_add(1), "ack = ISN + 1");
    let want = model(syn);
    let ecn = if want.agreed.ecn { TCP_ECE } else { 0 };
    prop_assert_eq!(tcp[13], TCP_SYN | TCP_ACK | ecn, "flags");
    prop_assert_eq!(u16::from_be_bytes([tcp[14], tcp[15]]), SYNACK_WINDOW);
    let cookie = be32(4);
    let flow = flow_of(syn);
    let slot = monotonic_slot();
    prop_assert_eq!(
        syncookie::check(ring, &flow, slot, cookie),
        Some(want.agreed),
        "the cookie {:#010x} checks with the ring and carries the agreed options",
        cookie
    );
    let mut opts = [0u8; SYNACK_OPTIONS_MAX];
    let ours = tcp
        .get(28..32)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let ts = want.echo.map(|echo| (ours.unwrap_or(0), echo));
    let len =
        syncookie::write_synack_options(&want.agreed, want.agreed.mss(syn.ipv6), ts, &mut opts);
    prop_assert_eq!(usize::from(tcp[12] >> 4) * 4, 20 + len, "data offset");
    prop_assert_eq!(&tcp[20..], &opts[..len], "options as the model writes them");
    Ok(())
}

/// The handshake the model identifies `syn` by.
fn flow_of(syn: &Syn) -> Handshake {
    let word =
        |b: &[u8], at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as u64;
    let (c, s) = (syn.client_ip(), syn.server_ip());
    let addrs = if syn.ipv6 {
        [
            word(&c, 0) | word(&c, 4) << 32,
            word(&c, 8) | word(&c, 12) << 32,
            word(&s, 0) | word(&s, 4) << 32,
            word(&s, 8) | word(&s, 12) << 32,
        ]
    } else {
        [word(&c, 0) | word(&s, 0) << 32, 0, 0, 0]
    };
    let mut ports = [0u8; 4];
    ports[..2].copy_from_slice(&syn.sport.to_be_bytes());
    ports[2..].copy_from_slice(&syn.dport.to_be_bytes());
    Handshake {
        addrs,
        ports: u32::from_ne_bytes(ports),
        client_isn: syn.isn,
        ipv6: syn.ipv6,
    }
}

fn loaded() -> XdpFilter {
    gateway_tests::require_root("loading the XDP programs (BPF_PROG_TEST_RUN)");
    let filter = XdpFilter::load(ProgramLog::Off).expect("load the XDP object");
    cookies::lock(&filter.cookie_control())
        .rotate_keys()
        .expect("write the key ring");
    filter
}

#[test]
fn cookie_syn_answers_random_syns_as_the_model_says() {
    let filter = loaded();
    let control = filter.cookie_control();
    let ring = cookies::lock(&control)
        .key_ring()
        .expect("read the key ring");
    assert!(
        ring.iter().filter(|k| k.slot != 0).count() >= 2,
        "the loader wrote no keys: {ring:?}"
    );
    let answered = [std::cell::Cell::new(0u32), std::cell::Cell::new(0u32)];
    let config = proptest::test_runner::Config {
        cases: 2000,
        ..Default::default()
    };
    proptest!(config, |(syn in syn())| {
        cookies::lock(&control).write_allow(syn.allow).expect("write the allowed options");
        let (frame, _) = syn.frame();
        let (action, out) = filter.run_program("cookie_syn", &frame).expect("test run");
        check_answer(&syn, &ring, action, &out)?;
        let n = &answered[usize::from(syn.ipv6)];
        n.set(n.get() + 1);
    });
    println!(
        "SYN-ACKs checked: {} IPv4, {} IPv6",
        answered[0].get(),
        answered[1].get()
    );
}

#[test]
fn a_syn_with_ip_options_is_left_to_the_kernel() {
    let filter = loaded();
    let syn = Syn {
        ipv6: false,
        vlans: 0,
        sport: 40000,
        dport: 443,
        isn: 7,
        ecn: (false, false),
        options: vec![Opt::Mss(1460)],
        allow: 15,
    };
    let (frame, l3) = syn.frame();
    // IPv4 with a 4-byte option (NOPs): IHL 6.
    let mut with_options = frame[..l3].to_vec();
    let mut ip = frame[l3..l3 + 20].to_vec();
    ip[0] = 0x46;
    let total = u16::from_be_bytes([ip[2], ip[3]]) + 4;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[10..12].copy_from_slice(&[0, 0]);
    ip.extend([1, 1, 1, 0]);
    let sum = !fold(sum16(&ip, 0));
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    with_options.extend(ip);
    with_options.extend(&frame[l3 + 20..]);
    let (action, out) = filter.run_program("cookie_syn", &with_options).unwrap();
    assert_eq!(action, XDP_PASS, "a SYN with IP options is the kernel's");
    assert_eq!(out, with_options, "and passes unchanged");
    let (action, _) = filter.run_program("cookie_syn", &frame).unwrap();
    assert_eq!(
        action, XDP_TX,
        "the same SYN without IP options is answered"
    );
}

/// How a segment after the handshake is changed before it is sent.
#[derive(Clone, Copy, Debug)]
enum Tamper {
    /// As the client sends it.
    None,
    /// One bit of the cookie's hash flipped.
    Hash(u8),
    /// The cookie's option bits changed.
    Options(u8),
    /// Another client port.
    Port,
}

fn tamper() -> impl Strategy<Value = Tamper> {
    prop_oneof![
        2 => Just(Tamper::None),
        1 => (8u8..32).prop_map(Tamper::Hash),
        1 => (1u8..=255).prop_map(Tamper::Options),
        1 => Just(Tamper::Port),
    ]
}

/// The client's segment after the cookie SYN-ACK: a bare ACK, or its first
/// data (a TLS 1.0 hello, refused), as `tamper` says.
fn after_handshake(syn: &Syn, cookie: u32, tamper: Tamper, data: bool) -> Vec<u8> {
    let mut syn = syn.clone();
    let ack = match tamper {
        Tamper::Hash(bit) => cookie ^ (1 << bit),
        Tamper::Options(x) => cookie ^ u32::from(x),
        Tamper::None | Tamper::Port => cookie,
    };
    if let Tamper::Port = tamper {
        syn.sport = syn.sport.wrapping_add(1).max(1);
    }
    let payload = if data {
        gateway::hello::records(
            &gateway::hello::ClientHello::legacy(0x0301, Some("lab.test")).message(),
            0x0301,
            usize::MAX,
        )
    } else {
        Vec::new()
    };
    let flags = if data { TCP_ACK | 0x08 } else { TCP_ACK };
    let seq = syn.isn.wrapping_add(1);
    syn.segment(flags, seq, ack.wrapping_add(1), &[], &payload)
        .0
}

#[test]
fn cookie_ack_and_cookie_reset_take_only_valid_cookies() {
    let filter = loaded();
    let control = filter.cookie_control();
    let config = proptest::test_runner::Config {
        cases: 500,
        ..Default::default()
    };
    proptest!(config, |(syn in syn(), tamper in tamper())| {
        cookies::lock(&control).write_allow(syn.allow).expect("write the allowed options");
        let (frame, l3) = syn.frame();
        let (action, out) = filter.run_program("cookie_syn", &frame).expect("test run");
        prop_assert_eq!(action, XDP_TX);
        let tcp = l3 + if syn.ipv6 { 40 } else { 20 };
        let cookie = u32::from_be_bytes([out[tcp + 4], out[tcp + 5], out[tcp + 6], out[tcp + 7]]);
        let valid = matches!(tamper, Tamper::None);
        let bare = after_handshake(&syn, cookie, tamper, false);
        let (action, _) = filter.run_program("cookie_ack", &bare).expect("test run");
        prop_assert_eq!(action, if valid { XDP_DROP } else { XDP_PASS }, "bare ACK, {:?}", tamper);
        let data = after_handshake(&syn, cookie, tamper, true);
        let (action, out) = filter.run_program("cookie_reset", &data).expect("test run");
        if !valid {
            prop_assert_eq!(action, XDP_DROP, "refused hello with a bad cookie, {:?}", tamper);
            return Ok(());
        }
        prop_assert_eq!(action, XDP_TX, "refused hello with a valid cookie: a RST back");
        let t = &out[tcp..];
        prop_assert_eq!(t.len(), 20, "a bare RST");
        prop_assert_eq!(t[13], 0x04, "RST only");
        prop_assert_eq!(u16::from_be_bytes([t[0], t[1]]), syn.dport);
        prop_assert_eq!(u16::from_be_bytes([t[2], t[3]]), syn.sport);
        let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
        prop_assert_eq!(seq, cookie.wrapping_add(1), "at the sequence number the client expects");
        let (src, dst) = (syn.server_ip(), syn.client_ip());
        prop_assert_eq!(tcp_sum(&src, &dst, t), 0xffff, "RST checksum");
        if !syn.ipv6 {
            prop_assert_eq!(fold(sum16(&out[l3..l3 + 20], 0)), 0xffff, "IPv4 checksum");
        }
    });
}
