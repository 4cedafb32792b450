//! The input of the stream targets (`hello_stream`, `xdp_differential`): a
//! fixed header that says how one flow delivers a client's stream, then the
//! stream's bytes.
//!
//! Header (`HEADER_LEN` bytes, big-endian):
//!
//! | bytes  | field |
//! |--------|-------|
//! | 0      | flags: 1 a SYN comes first, 2 drop mode (else reset mode), 4 IPv6, 8 a VLAN tag, 16 TCP timestamps, 32 frames padded to 60 bytes |
//! | 1..5   | initial sequence number (the stream's first byte is at ISN + 1 with a SYN, ISN without) |
//! | 5..21  | 8 cut points, u16 each, taken modulo the stream's length (0: none); the in-order segments run between them |
//! | 21..37 | 4 events of 4 bytes (kind, at, p, q) applied in turn to the in-order segments: duplicate, swap, lose, repacketised retransmission, changed retransmission, empty ACK, SYN, RST carrying data |
//!
//! The stream is the rest of the input, at most `MAX_STREAM` bytes (beyond
//! the filter's `STREAM_CAP`, so that giving up as too large is reachable).

#![allow(dead_code)] // each target uses its own part

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use gateway::{
    config::RefuseMode,
    frame::{TPID_8021Q, TcpFrame, flags},
    tls_version::TlsVersion,
    xdp::XdpPolicy,
};

/// Bytes of the header before the stream.
pub const HEADER_LEN: usize = 37;
/// Stream bytes used; the rest of a longer input is ignored.
pub const MAX_STREAM: usize = 9000;
/// Cut points in the header.
pub const CUTS: usize = 8;
/// Events in the header.
pub const EVENTS: usize = 4;

/// Header flag: a SYN comes first.
pub const SYN: u8 = 1;
/// Header flag: refused hellos are dropped (else rewritten into a RST).
pub const DROP: u8 = 2;
/// Header flag: IPv6.
pub const V6: u8 = 4;
/// Header flag: one 802.1Q tag.
pub const VLAN: u8 = 8;
/// Header flag: a TCP timestamp option in every segment.
pub const TIMESTAMPS: u8 = 16;
/// Header flag: frames padded to Ethernet's 60-byte minimum.
pub const PAD: u8 = 32;

/// Event kinds (the kind byte modulo `EVENT_KINDS`; 0 is no event).
pub mod event {
    /// (at, p): segment `at` again, later (at a position chosen by `p`).
    pub const DUPLICATE: u8 = 1;
    /// (at): segments `at` and `at + 1` change places.
    pub const SWAP: u8 = 2;
    /// (at): segment `at` is lost.
    pub const LOSE: u8 = 3;
    /// (at, p, q): a retransmission of stream bytes from `p/256` of the
    /// stream, `1 + 16 q` bytes at most, inserted at `at`.
    pub const REPACKETISED: u8 = 4;
    /// (at, p, q): segment `p` again right after itself with byte `q` changed (xor `at | 1`).
    pub const CHANGED: u8 = 5;
    /// (at): an empty ACK inserted at `at`.
    pub const ACK: u8 = 6;
    /// (at): a SYN inserted at `at` (the client opens the same 4-tuple again).
    pub const SYN: u8 = 7;
    /// (at, p): a RST+ACK carrying segment `p`'s bytes, inserted at `at`.
    pub const RST: u8 = 8;
}
/// Kinds of event, "none" included.
pub const EVENT_KINDS: u8 = 9;

/// The header, field by field (what the seeds are written from).
#[derive(Clone, Debug, Default)]
pub struct Header {
    pub flags: u8,
    pub isn: u32,
    pub cuts: [u16; CUTS],
    /// (kind, at, p, q)
    pub events: [[u8; 4]; EVENTS],
}

impl Header {
    /// The header's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![self.flags];
        out.extend_from_slice(&self.isn.to_be_bytes());
        for c in self.cuts {
            out.extend_from_slice(&c.to_be_bytes());
        }
        for e in self.events {
            out.extend_from_slice(&e);
        }
        debug_assert_eq!(out.len(), HEADER_LEN);
        out
    }

    /// A whole fuzz input: this header, then `stream`.
    pub fn input(&self, stream: &[u8]) -> Vec<u8> {
        let mut out = self.to_bytes();
        out.extend_from_slice(stream);
        out
    }

    fn parse(h: &[u8; HEADER_LEN]) -> Header {
        let u16_at = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        let mut cuts = [0; CUTS];
        for (i, c) in cuts.iter_mut().enumerate() {
            *c = u16_at(5 + 2 * i);
        }
        let mut events = [[0; 4]; EVENTS];
        for (i, e) in events.iter_mut().enumerate() {
            e.copy_from_slice(&h[21 + 4 * i..25 + 4 * i]);
        }
        Header {
            flags: h[0],
            isn: u32::from_be_bytes([h[1], h[2], h[3], h[4]]),
            cuts,
            events,
        }
    }
}

/// One segment the client sends: stream offsets into [`Input::stream`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Send {
    Syn,
    Ack,
    Rst {
        off: usize,
        len: usize,
    },
    Data {
        off: usize,
        len: usize,
        /// (index in the segment, xor): a changed retransmission.
        flip: Option<(usize, u8)>,
    },
}

/// A decoded fuzz input.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    pub header: Header,
    pub stream: &'a [u8],
}

impl<'a> Input<'a> {
    /// The input's header and stream (`None`: shorter than the header).
    pub fn parse(data: &'a [u8]) -> Option<Input<'a>> {
        let (head, rest) = data.split_first_chunk::<HEADER_LEN>()?;
        Some(Input {
            header: Header::parse(head),
            stream: &rest[..rest.len().min(MAX_STREAM)],
        })
    }

    fn flag(&self, f: u8) -> bool {
        self.header.flags & f != 0
    }

    /// Whether the delivery begins with a SYN.
    pub fn syn(&self) -> bool {
        self.flag(SYN)
    }

    /// The filter's policy: the zone's and hostnames' minimums of
    /// [`zone_policy`], refusing in the mode the header says.
    pub fn policy(&self) -> XdpPolicy {
        let mut p = zone_policy();
        if self.flag(DROP) {
            p.refuse = RefuseMode::Drop;
        }
        p
    }

    /// Where the stream is cut: sorted, distinct, inside the stream.
    pub fn cut_points(&self) -> Vec<usize> {
        let len = self.stream.len();
        if len == 0 {
            return Vec::new();
        }
        let mut cuts: Vec<usize> = self
            .header
            .cuts
            .iter()
            .map(|&c| usize::from(c) % len)
            .filter(|&c| c > 0)
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        cuts
    }

    /// The whole stream in order, without overlaps: in one segment, or cut at
    /// the cut points (`cut`). Data segments only.
    pub fn in_order(&self, cut: bool) -> Vec<Send> {
        let len = self.stream.len();
        if len == 0 {
            return Vec::new();
        }
        let mut bounds = vec![0];
        if cut {
            bounds.extend(self.cut_points());
        }
        bounds.push(len);
        bounds
            .windows(2)
            .map(|w| Send::Data {
                off: w[0],
                len: w[1] - w[0],
                flip: None,
            })
            .collect()
    }

    /// The delivery the input describes: a SYN if the header says so, then the
    /// cut segments with the events applied.
    pub fn delivery(&self) -> Vec<Send> {
        let mut sends = self.in_order(true);
        for e in self.header.events {
            self.apply(&mut sends, e);
        }
        if self.syn() {
            sends.insert(0, Send::Syn);
        }
        sends
    }

    fn apply(&self, sends: &mut Vec<Send>, [kind, at, p, q]: [u8; 4]) {
        let n = sends.len();
        let (at, p, q) = (usize::from(at), usize::from(p), usize::from(q));
        let len = self.stream.len();
        match kind % EVENT_KINDS {
            event::DUPLICATE if n > 0 => {
                let i = at % n;
                let to = i + 1 + p % (n - i);
                sends.insert(to, sends[i]);
            }
            event::SWAP if n > 1 => sends.swap(at % (n - 1), at % (n - 1) + 1),
            event::LOSE if n > 0 => {
                sends.remove(at % n);
            }
            event::REPACKETISED if len > 0 => {
                let off = p * len / 256;
                let seg = 1 + (16 * q) % (len - off);
                sends.insert(
                    at % (n + 1),
                    Send::Data {
                        off,
                        len: seg,
                        flip: None,
                    },
                );
            }
            event::CHANGED if n > 0 => {
                let i = p % n;
                if let Send::Data { off, len, .. } = sends[i] {
                    let flip = Some((q % len, (at as u8) | 1));
                    sends.insert(i + 1, Send::Data { off, len, flip });
                }
            }
            event::ACK => sends.insert(at % (n + 1), Send::Ack),
            event::SYN => sends.insert(at % (n + 1), Send::Syn),
            event::RST if n > 0 => {
                if let Send::Data { off, len, .. } = sends[p % n] {
                    sends.insert(at % (n + 1), Send::Rst { off, len });
                }
            }
            _ => {}
        }
    }

    /// The sequence number of the stream's first byte, with or without a SYN first.
    pub fn first_seq(&self, syn: bool) -> u32 {
        if syn {
            self.header.isn.wrapping_add(1)
        } else {
            self.header.isn
        }
    }

    /// The TCP flags, sequence number and payload of one segment, the stream's
    /// first byte being at `first`.
    pub fn segment(&self, send: &Send, first: u32) -> (u8, u32, Vec<u8>) {
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

    /// The Ethernet frame of one segment from `src:sport` to `dst:443`, on the
    /// wire the header describes.
    pub fn frame(&self, send: &Send, src: IpAddr, dst: IpAddr, sport: u16) -> TcpFrame {
        let mut frame = TcpFrame::new(src, dst, sport, 443, Vec::new());
        (frame.flags, frame.seq, frame.payload) = self.segment(send, self.first_seq(self.syn()));
        if self.flag(VLAN) {
            frame.vlans = vec![(TPID_8021Q, 7)];
        }
        if self.flag(TIMESTAMPS) {
            frame.tcp_options = vec![1, 1, 8, 10, 0, 1, 2, 3, 0, 0, 0, 0];
        }
        frame
    }

    /// Whether the frames are IPv6.
    pub fn v6(&self) -> bool {
        self.flag(V6)
    }

    /// Whether frames are padded to 60 bytes.
    pub fn pad(&self) -> bool {
        self.flag(PAD)
    }

    /// Everything needed to replay the input by hand.
    pub fn describe(&self) -> String {
        let hex: String = self.stream.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "flags {:#04x}, isn {:#010x}, cut points {:?}, events {:?}, {} stream bytes:\n{hex}",
            self.header.flags,
            self.header.isn,
            self.cut_points(),
            self.header.events,
            self.stream.len(),
        )
    }
}

/// The policy of every hello target: zone minimum TLS 1.2, one hostname above
/// it, two below it (so the floor for an unseen SNI is TLS 1.0), reset mode.
pub fn zone_policy() -> XdpPolicy {
    let mut p = XdpPolicy::uniform(TlsVersion::Tls12);
    for (name, min) in [
        ("api.test", TlsVersion::Tls13),
        ("old.test", TlsVersion::Tls10),
        ("x.y.z.test", TlsVersion::Tls11),
    ] {
        p.set_host(name, Some(min)).expect("a valid hostname");
    }
    p
}

/// The server's address in the frames, by family (198.18.0.0/15, fd00::/8).
pub fn server(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1))
    } else {
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))
    }
}

/// The `n`th client address and port, by family (198.18.0.0/15, fd00::/8).
pub fn client(v6: bool, n: u64) -> (IpAddr, u16) {
    let port = 1024 + (n % 60_000) as u16;
    let host = 2 + (n / 60_000) as u32;
    let addr = if v6 {
        IpAddr::V6(Ipv6Addr::new(
            0xfd00,
            0,
            0,
            1,
            0,
            0,
            (host >> 16) as u16,
            host as u16,
        ))
    } else {
        IpAddr::V4(Ipv4Addr::from(0xc612_0000 | (host & 0x1_ffff)))
    };
    (addr, port)
}
