//! Classic pcap files: `gateway::pcap::PcapReader` over arbitrary bytes, and
//! the round trip through `gateway::pcap::write_pcap`.
//!
//! Invariants:
//! - reading never panics and ends: each record consumes its 16-byte header
//!   and its data, so there are at most `len / 16` of them, and their bytes
//!   never exceed what the input holds; `Ok(None)` comes only when every byte
//!   was consumed;
//! - a source that returns a few bytes per read and is interrupted now and
//!   then reads exactly like the whole slice (same packets, same error);
//! - round trip: the packets of a fully read input, and frames cut from the
//!   input (a u16 length before each, see `frames`), written by `write_pcap`,
//!   read back exactly as those frames, with `wire_len` their length; frames
//!   over `MAX_RECORD` are refused by the writer before it writes anything.
#![no_main]

use std::io::{self, Read};

use gateway::pcap::{MAX_RECORD, PcapReader, write_pcap};
use libfuzzer_sys::fuzz_target;

/// Everything a reader gives: packets (data, wire length), then how it ended
/// (`None`: at the end of the file; else the error's text).
type Outcome = (Vec<(Vec<u8>, u32)>, Option<String>);

fn read_all(input: impl Read, max_bytes: usize) -> Outcome {
    let mut reader = match PcapReader::new(input) {
        Ok(r) => r,
        Err(e) => return (Vec::new(), Some(e.to_string())),
    };
    let (mut packets, mut consumed) = (Vec::new(), 24usize);
    loop {
        match reader.next_packet() {
            Ok(Some(p)) => {
                consumed += 16 + p.data.len();
                assert!(consumed <= max_bytes, "packets hold more than the input");
                packets.push((p.data, p.wire_len));
                assert!(packets.len() <= max_bytes / 16, "more records than headers");
            }
            Ok(None) => {
                assert_eq!(consumed, max_bytes, "the end before the last byte");
                return (packets, None);
            }
            Err(e) => return (packets, Some(e.to_string())),
        }
    }
}

/// A source giving at most `chunk` bytes per read, interrupted every third call.
struct Trickle<'a> {
    data: &'a [u8],
    chunk: usize,
    calls: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.calls.is_multiple_of(3) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = buf.len().min(self.chunk).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Frames cut from the input, each after a little-endian u16 length; the
/// first may be a large one (top two bits set: `(len & 0x3fff) * 32` bytes of
/// the byte after the length), which is costly, so only one.
fn frames(mut data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let [a, b, rest @ ..] = data {
        let len = u16::from_le_bytes([*a, *b]);
        if out.is_empty() && len & 0xc000 == 0xc000 {
            let fill = rest.first().copied().unwrap_or(0);
            out.push(vec![fill; usize::from(len & 0x3fff) * 32]);
            data = rest.get(1..).unwrap_or_default();
        } else {
            let n = usize::from(len).min(rest.len());
            out.push(rest[..n].to_vec());
            data = &rest[n..];
        }
    }
    out
}

/// Writes `frames` and reads them back: they must come back as they went;
/// a frame longer than a record holds is refused before anything is written.
fn round_trip(frames: &[Vec<u8>]) {
    let mut file = Vec::new();
    let too_long = frames.iter().any(|f| f.len() > MAX_RECORD as usize);
    match write_pcap(&mut file, frames) {
        Ok(()) => assert!(!too_long, "wrote a frame over {MAX_RECORD} bytes"),
        Err(e) if too_long && e.kind() == io::ErrorKind::InvalidInput => {
            return assert!(file.is_empty(), "a refused file is not begun");
        }
        Err(e) => panic!("writing to memory: {e}"),
    }
    let (packets, end) = read_all(&file[..], file.len());
    assert_eq!(end, None, "a written file reads to its end");
    assert_eq!(packets.len(), frames.len(), "as many packets as frames");
    for ((data, wire_len), frame) in packets.iter().zip(frames) {
        assert_eq!(data, frame, "the frame comes back");
        assert_eq!(*wire_len as usize, frame.len(), "wire length");
    }
}

fuzz_target!(|data: &[u8]| {
    let whole = read_all(data, data.len());
    let trickle = Trickle {
        data,
        chunk: data.len() % 7 + 1,
        calls: 0,
    };
    assert_eq!(read_all(trickle, data.len()), whole, "a trickling source");
    if whole.1.is_none() {
        let read: Vec<Vec<u8>> = whole.0.into_iter().map(|(d, _)| d).collect();
        round_trip(&read);
    }
    round_trip(&frames(data));
});
