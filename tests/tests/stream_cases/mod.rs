//! The cases of the stream differential test: a plan (what proptest generates
//! and shrinks), and the flow it describes (the stream's bytes and the
//! segments in arrival order).

use gateway::{
    frame::flags,
    hello::{ClientHello, Ext, sslv2_hello},
};
use gateway_common::version;
use proptest::{prelude::*, sample::Index};

/// Names the policy knows, in varied case, plus names it does not.
pub(crate) const NAMES: [&str; 8] = [
    "api.test",
    "API.Test",
    "old.test",
    "OLD.TEST",
    "new.test",
    "x.y.z.test",
    "X.y.Z.test",
    "unknown.test",
];

/// Versions offered in `supported_versions`: real ones, GREASE, drafts, SSL 2's.
pub(crate) const VERSIONS: [u16; 11] = [
    version::SSL3,
    version::TLS1_0,
    version::TLS1_1,
    version::TLS1_2,
    version::TLS1_3,
    0x0a0a,
    0x7a7a,
    0x7f1c, // a TLS 1.3 draft
    0x0305,
    version::SSL2,
    0x0200,
];

/// Segments cut by the plan's sizes before the rest goes in full-size segments.
pub(crate) const MAX_CUT_SEGMENTS: usize = 40;

/// What the stream begins with.
#[derive(Clone, Debug)]
pub(crate) enum Start {
    Hello(ClientHello),
    Sslv2(u16),
    Bytes(Vec<u8>),
}

/// How the hello is put into records.
#[derive(Clone, Debug)]
pub(crate) enum Records {
    One,
    Fixed(usize),
    Sizes(Vec<usize>),
}

/// A change to one record header.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Header {
    ContentType(u8),
    Major(u8),
    Length(u16),
    LengthDelta(i16),
}

/// What follows the hello in the stream.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Trailer {
    Nothing,
    ChangeCipherSpec,
    AppData(u8),
    HelloAgain,
}

/// How a run of the stream is cut into segments.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Cut {
    Size(usize),
    Ones(usize),
}

/// A change to the arrival order.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event {
    Duplicate(Index),
    Changed(Index, Index, u8),
    Swap,
    Lose,
    Repacketised(Index, Index),
    Syn,
    Ack,
    Rst(Index),
}

/// One generated flow, before it is turned into bytes and segments.
#[derive(Clone, Debug)]
pub(crate) struct Plan {
    pub start: Start,
    pub record_version: u16,
    pub records: Records,
    pub headers: Vec<(Index, Header)>,
    pub bytes: Vec<(Index, u8)>,
    pub trailer: Trailer,
    pub cuts: Vec<Cut>,
    pub events: Vec<(Index, Event)>,
    pub syn: bool,
    pub isn: u32,
    pub wire: Wire,
}

/// How the flow's frames look on the wire.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Wire {
    pub v6: bool,
    pub vlan: bool,
    /// A TCP timestamp option in every segment, as Linux clients send.
    pub timestamps: bool,
    /// Frames padded to Ethernet's 60-byte minimum, as a NIC delivers them.
    pub pad: bool,
}

/// One segment the client sends.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Send {
    Syn,
    Ack,
    Rst {
        off: usize,
        len: usize,
    },
    Data {
        off: usize,
        len: usize,
        flip: Option<(usize, u8)>,
    },
}

/// A flow: the client's stream and its segments in arrival order.
pub(crate) struct Case {
    pub stream: Vec<u8>,
    pub sends: Vec<Send>,
    pub syn: bool,
    pub isn: u32,
    pub wire: Wire,
}

/// Host names the policy knows with one byte changed, or of any length.
pub(crate) fn odd_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (
            prop::sample::select(NAMES.to_vec()),
            any::<Index>(),
            any::<u8>()
        )
            .prop_map(|(name, at, b)| {
                let mut name = name.as_bytes().to_vec();
                let i = at.index(name.len());
                name[i] = b;
                name
            }),
        prop_oneof![Just(0usize), Just(255), Just(256), 1usize..300].prop_map(|n| (0..n)
            .map(|i| if i % 3 == 0 { b'A' } else { b'a' })
            .collect()),
    ]
}

pub(crate) fn ext() -> impl Strategy<Value = Ext> {
    prop_oneof![
        3 => prop::sample::select(NAMES.to_vec()).prop_map(Ext::sni),
        1 => odd_name().prop_map(Ext::ServerName),
        3 => prop::collection::vec(prop::sample::select(VERSIONS.to_vec()), 0..6)
            .prop_map(Ext::SupportedVersions),
        3 => (0u16..64, 0usize..40).prop_map(|(t, n)| Ext::Raw(t, vec![0x61; n])),
        1 => (900usize..1300).prop_map(Ext::key_share),
        1 => (0usize..600).prop_map(Ext::padding),
        1 => Just(Ext::grease()),
    ]
}

/// Adds a padding extension that brings the message to about `size` bytes.
pub(crate) fn pad_to(h: &mut ClientHello, size: usize) {
    let len = h.message().len();
    if let Some(exts) = h.extensions.as_mut().filter(|_| len + 4 < size) {
        exts.push(Ext::padding(size - len - 4));
    }
}

/// A few extensions, or more than the filter walks (64) with some of them
/// around the limit.
pub(crate) fn extensions() -> impl Strategy<Value = Vec<Ext>> {
    let many = (
        prop::collection::vec(ext(), 0..3),
        58usize..72,
        prop::collection::vec(ext(), 0..3),
    )
        .prop_map(|(mut exts, fillers, after)| {
            exts.extend((0..fillers).map(|i| Ext::Raw(0x4000 + i as u16, Vec::new())));
            exts.extend(after);
            exts
        });
    prop_oneof![9 => prop::collection::vec(ext(), 0..8), 1 => many]
}

pub(crate) fn random_hello() -> impl Strategy<Value = ClientHello> {
    (
        prop::sample::select(vec![0x0300u16, 0x0301, 0x0302, 0x0303, 0x0304, 0x0200]),
        0usize..34,
        1usize..40,
        prop::option::weighted(0.9, extensions()),
        prop::option::weighted(0.3, 1800usize..2400),
    )
        .prop_map(|(legacy, sid, ciphers, extensions, pad)| {
            let mut h = ClientHello::legacy(legacy, None);
            h.session_id = vec![7; sid];
            h.ciphers = (0..ciphers as u16).map(|c| 0xc000 + c).collect();
            h.extensions = extensions;
            if let Some(size) = pad {
                pad_to(&mut h, size);
            }
            h
        })
}

/// Hellos like browsers' and older clients': SNI (or none), versions, a key
/// share of up to post-quantum size, padding to browser size.
pub(crate) fn browser_hello() -> impl Strategy<Value = ClientHello> {
    let versions = vec![
        vec![0x3a3a, version::TLS1_3, version::TLS1_2],
        vec![version::TLS1_3],
        vec![version::TLS1_2, version::TLS1_1],
        vec![version::TLS1_1, version::TLS1_0],
        vec![0x3a3a, version::TLS1_0],
        vec![],
    ];
    (
        prop::option::weighted(0.9, prop::sample::select(NAMES.to_vec())),
        prop::option::weighted(0.8, prop::sample::select(versions)),
        prop::sample::select(vec![0x0301u16, 0x0302, 0x0303]),
        prop_oneof![Just(32usize), Just(1216), 0usize..1300],
        prop::option::weighted(0.5, prop_oneof![Just(512usize), 1800usize..2200]),
        any::<bool>(),
    )
        .prop_map(|(name, versions, legacy, share, pad, sni_last)| {
            let mut h = ClientHello::modern("placeholder.test");
            h.legacy_version = legacy;
            let exts = h
                .extensions
                .as_mut()
                .expect("modern hellos have extensions");
            exts.retain(|e| !matches!(e, Ext::ServerName(_) | Ext::SupportedVersions(_)));
            exts.retain(|e| !matches!(e, Ext::Raw(51, _)));
            exts.push(Ext::key_share(share));
            if let Some(v) = versions {
                exts.insert(3, Ext::SupportedVersions(v));
            }
            if let Some(name) = name {
                let at = if sni_last { exts.len() } else { 1 };
                exts.insert(at, Ext::sni(name));
            }
            if let Some(size) = pad {
                pad_to(&mut h, size);
            }
            h
        })
}

pub(crate) fn start(browser: bool) -> BoxedStrategy<Start> {
    if browser {
        return browser_hello().prop_map(Start::Hello).boxed();
    }
    prop_oneof![
        16 => random_hello().prop_map(Start::Hello),
        2 => browser_hello().prop_map(Start::Hello),
        1 => prop::sample::select(vec![version::SSL2, version::TLS1_0]).prop_map(Start::Sslv2),
        1 => (prop::collection::vec(any::<u8>(), 1..64), any::<bool>()).prop_map(|(mut b, tls)| {
            if tls && b.len() >= 6 {
                b[..6].copy_from_slice(&[22, 3, 1, 2, 0, 1]);
            }
            Start::Bytes(b)
        }),
    ]
    .boxed()
}

pub(crate) fn records() -> impl Strategy<Value = Records> {
    prop_oneof![
        4 => Just(Records::One),
        1 => Just(Records::Fixed(1)),
        2 => (2usize..64).prop_map(Records::Fixed),
        2 => (64usize..3000).prop_map(Records::Fixed),
        2 => prop::collection::vec(prop_oneof![1usize..8, 8usize..1500], 1..12)
            .prop_map(Records::Sizes),
    ]
}

pub(crate) fn header() -> impl Strategy<Value = Header> {
    prop_oneof![
        prop::sample::select(vec![20u8, 21, 23, 0x96]).prop_map(Header::ContentType),
        prop::sample::select(vec![0u8, 2, 4]).prop_map(Header::Major),
        prop::sample::select(vec![0u16, 1, 16384 + 2048, 16384 + 2049, 0xffff])
            .prop_map(Header::Length),
        (-3i16..=3).prop_map(Header::LengthDelta),
    ]
}

pub(crate) fn cut() -> impl Strategy<Value = Cut> {
    prop_oneof![
        4 => Just(Cut::Size(1448)),
        1 => prop::sample::select(vec![536usize, 1460]).prop_map(Cut::Size),
        3 => (1usize..40).prop_map(Cut::Size),
        2 => (40usize..1448).prop_map(Cut::Size),
        1 => (1usize..=24).prop_map(Cut::Ones),
        1 => (1449usize..3800).prop_map(Cut::Size),
    ]
}

pub(crate) fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => any::<Index>().prop_map(Event::Duplicate),
        2 => (any::<Index>(), any::<Index>(), 1u8..=255).prop_map(|(s, b, x)| Event::Changed(s, b, x)),
        2 => Just(Event::Swap),
        1 => Just(Event::Lose),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(o, l)| Event::Repacketised(o, l)),
        1 => Just(Event::Syn),
        1 => Just(Event::Ack),
        1 => any::<Index>().prop_map(Event::Rst),
    ]
}

/// Up to `n` items, none at all with probability `1 - p`.
pub(crate) fn some<T: std::fmt::Debug>(
    p: f64,
    n: usize,
    s: impl Strategy<Value = T>,
) -> impl Strategy<Value = Vec<T>> {
    prop::option::weighted(p, prop::collection::vec(s, 1..=n)).prop_map(Option::unwrap_or_default)
}

pub(crate) fn wire() -> impl Strategy<Value = Wire> {
    (
        prop::bool::weighted(0.25),
        prop::bool::weighted(0.2),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(v6, vlan, timestamps, pad)| Wire {
            v6,
            vlan,
            timestamps,
            pad,
        })
}

/// Flows of browser-like hellos (`browser`) or of random and mutated ones.
pub(crate) fn plan(browser: bool) -> impl Strategy<Value = Plan> {
    let mutate = if browser { 0.05 } else { 0.2 };
    (
        start(browser),
        prop::sample::select(vec![version::TLS1_0, version::TLS1_2]),
        records(),
        some(mutate, 2, (any::<Index>(), header())),
        some(mutate, 2, (any::<Index>(), any::<u8>())),
        prop_oneof![
            6 => Just(Trailer::Nothing),
            1 => Just(Trailer::ChangeCipherSpec),
            1 => any::<u8>().prop_map(Trailer::AppData),
            1 => Just(Trailer::HelloAgain),
        ],
        prop::collection::vec(cut(), 1..6),
        some(0.6, if browser { 3 } else { 5 }, (any::<Index>(), event())),
        any::<bool>(),
        prop_oneof![3 => any::<u32>(), 1 => (u32::MAX - 4000)..=u32::MAX],
        wire(),
    )
        .prop_map(
            |(
                start,
                record_version,
                records,
                headers,
                bytes,
                trailer,
                cuts,
                events,
                syn,
                isn,
                wire,
            )| Plan {
                start,
                record_version,
                records,
                headers,
                bytes,
                trailer,
                cuts,
                events,
                syn,
                isn,
                wire,
            },
        )
}

impl Plan {
    /// The flow the plan describes.
    pub(crate) fn case(&self) -> Case {
        let stream = self.stream();
        let mut sends = self.segments(stream.len());
        for (at, event) in &self.events {
            let at = at.index(sends.len() + 1);
            apply(&mut sends, at, *event, stream.len());
        }
        if self.syn {
            sends.insert(0, Send::Syn);
        }
        Case {
            stream,
            sends,
            syn: self.syn,
            isn: self.isn,
            wire: self.wire,
        }
    }

    /// The client's stream: the hello in its records, mutated, then the trailer.
    pub(crate) fn stream(&self) -> Vec<u8> {
        let (mut stream, heads) = match &self.start {
            Start::Hello(h) => self.layout(&h.message()),
            Start::Sslv2(v) => (sslv2_hello(*v), Vec::new()),
            Start::Bytes(b) => (b.clone(), Vec::new()),
        };
        for (at, change) in self.headers.iter().filter(|_| !heads.is_empty()) {
            let h = heads[at.index(heads.len())];
            match *change {
                Header::ContentType(t) => stream[h] = t,
                Header::Major(m) => stream[h + 1] = m,
                Header::Length(l) => stream[h + 3..h + 5].copy_from_slice(&l.to_be_bytes()),
                Header::LengthDelta(d) => {
                    let l = u16::from_be_bytes([stream[h + 3], stream[h + 4]]);
                    stream[h + 3..h + 5].copy_from_slice(&l.wrapping_add_signed(d).to_be_bytes());
                }
            }
        }
        let whole = stream.clone();
        match self.trailer {
            Trailer::Nothing => {}
            Trailer::ChangeCipherSpec => stream.extend_from_slice(&[20, 3, 3, 0, 1, 1]),
            Trailer::AppData(n) => {
                stream.extend_from_slice(&[23, 3, 3, 0, n.max(1)]);
                stream.extend(std::iter::repeat_n(0x17, usize::from(n.max(1))));
            }
            Trailer::HelloAgain => stream.extend_from_slice(&whole),
        }
        for (at, value) in &self.bytes {
            let i = at.index(stream.len());
            stream[i] = *value;
        }
        stream
    }

    /// The message in records as the plan says, and where each header is.
    pub(crate) fn layout(&self, message: &[u8]) -> (Vec<u8>, Vec<usize>) {
        let (mut out, mut heads) = (Vec::new(), Vec::new());
        let mut at = 0;
        while at < message.len() {
            let size = match &self.records {
                Records::One => 16384,
                Records::Fixed(n) => *n,
                Records::Sizes(sizes) => sizes[heads.len() % sizes.len()],
            };
            let chunk = &message[at..message.len().min(at + size.clamp(1, 16384))];
            heads.push(out.len());
            out.push(22);
            out.extend_from_slice(&self.record_version.to_be_bytes());
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
            at += chunk.len();
        }
        (out, heads)
    }

    /// The stream cut into segments, in order.
    pub(crate) fn segments(&self, len: usize) -> Vec<Send> {
        let mut sends = Vec::new();
        let mut off = 0;
        let mut cuts = self.cuts.iter().cycle();
        while off < len {
            let sizes = match cuts.next() {
                _ if sends.len() >= MAX_CUT_SEGMENTS => vec![1448],
                Some(Cut::Size(n)) => vec![*n],
                Some(Cut::Ones(n)) => vec![1; *n],
                None => vec![1448],
            };
            for size in sizes {
                let size = size.min(len - off);
                if size > 0 {
                    sends.push(Send::Data {
                        off,
                        len: size,
                        flip: None,
                    });
                }
                off += size;
            }
        }
        sends
    }
}

/// Applies an event to the arrival order at position `at` (`0..=sends.len()`).
pub(crate) fn apply(sends: &mut Vec<Send>, at: usize, event: Event, stream_len: usize) {
    let n = sends.len();
    match event {
        Event::Duplicate(which) if n > 0 => {
            let i = which.index(n);
            sends.insert(at.max(i + 1), sends[i]);
        }
        Event::Changed(which, byte, xor) if n > 0 => {
            let i = which.index(n);
            if let Send::Data { off, len, .. } = sends[i] {
                let flip = Some((byte.index(len), xor));
                sends.insert(at.max(i + 1), Send::Data { off, len, flip });
            }
        }
        Event::Swap if at + 1 < n => sends.swap(at, at + 1),
        Event::Lose if at < n => {
            sends.remove(at);
        }
        Event::Repacketised(from, len) if stream_len > 0 => {
            let off = from.index(stream_len);
            let len = 1 + len.index((stream_len - off).min(1448));
            sends.insert(
                at,
                Send::Data {
                    off,
                    len,
                    flip: None,
                },
            );
        }
        Event::Syn => sends.insert(at, Send::Syn),
        Event::Ack => sends.insert(at, Send::Ack),
        Event::Rst(which) if n > 0 => {
            if let Send::Data { off, len, .. } = sends[which.index(n)] {
                sends.insert(at, Send::Rst { off, len });
            }
        }
        _ => {}
    }
}

impl Case {
    /// The flags, sequence number and payload of one segment.
    pub(crate) fn segment(&self, send: &Send) -> (u8, u32, Vec<u8>) {
        let first = if self.syn {
            self.isn.wrapping_add(1)
        } else {
            self.isn
        };
        match *send {
            Send::Syn => (flags::SYN, first.wrapping_sub(1), Vec::new()),
            Send::Ack => (flags::ACK, first, Vec::new()),
            Send::Rst { off, len } => (
                flags::RST | flags::ACK,
                first.wrapping_add(off as u32),
                self.stream[off..off + len].to_vec(),
            ),
            Send::Data { off, len, flip } => {
                let mut payload = self.stream[off..off + len].to_vec();
                if let Some((i, x)) = flip {
                    payload[i] ^= x;
                }
                (
                    flags::PSH | flags::ACK,
                    first.wrapping_add(off as u32),
                    payload,
                )
            }
        }
    }

    /// Everything needed to replay the case by hand.
    pub(crate) fn describe(&self) -> String {
        let hex: String = self.stream.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "isn {:#010x}, syn {}, {:?}, {} stream bytes (data offsets count from \
             the first byte, at isn{}):\n{hex}",
            self.isn,
            self.syn,
            self.wire,
            self.stream.len(),
            if self.syn { " + 1" } else { "" },
        )
    }
}
