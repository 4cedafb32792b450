//! Classic pcap files (not pcapng): read Ethernet captures, write test fixtures.

use std::io::{self, Read, Write};

/// Link type of Ethernet captures.
pub const LINKTYPE_ETHERNET: u32 = 1;

/// Why a capture cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    /// Reading failed.
    #[error("read error: {0}")]
    Io(#[from] io::Error),
    /// The file is pcapng, which this reader does not handle.
    #[error(
        "this is a pcapng file; convert it with `editcap -F pcap IN OUT` (from wireshark-common)"
    )]
    PcapNg,
    /// The magic number is not a pcap one.
    #[error("not a pcap file (magic {0:#010x})")]
    BadMagic(u32),
    /// Not an Ethernet capture.
    #[error("link type {0} is not supported: only Ethernet (1) captures can be replayed")]
    LinkType(u32),
    /// The file ends inside a record.
    #[error("truncated record {0}: the file ends inside it")]
    Truncated(usize),
    /// A record claims an absurd length.
    #[error("record {index} claims {len} bytes, more than the snapshot length allows")]
    Oversized {
        /// Record number (1-based).
        index: usize,
        /// Claimed length.
        len: u32,
    },
}

/// A pcap reader over any byte source.
pub struct PcapReader<R> {
    input: R,
    big_endian: bool,
    snaplen: u32,
    index: usize,
}

/// One captured frame.
pub struct Packet {
    /// Bytes captured.
    pub data: Vec<u8>,
    /// Length on the wire (may exceed `data.len()` when the capture was cut short).
    pub wire_len: u32,
}

const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;
const MAGIC_PCAPNG: u32 = 0x0a0d_0d0a;
/// Upper bound for a record, whatever the header says (libpcap's largest
/// snapshot length): the reader refuses longer ones, the writer writes none.
pub const MAX_RECORD: u32 = 256 * 1024;

impl<R: Read> PcapReader<R> {
    /// Reads the global header; fails on anything but an Ethernet pcap.
    pub fn new(mut input: R) -> Result<Self, PcapError> {
        let mut header = [0u8; 24];
        input.read_exact(&mut header)?;
        let magic_le = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default());
        let big_endian = match magic_le {
            MAGIC_US | MAGIC_NS => false,
            m if m.swap_bytes() == MAGIC_US || m.swap_bytes() == MAGIC_NS => true,
            MAGIC_PCAPNG => return Err(PcapError::PcapNg),
            m => return Err(PcapError::BadMagic(m)),
        };
        let word = |b: &[u8]| {
            let b: [u8; 4] = b.try_into().unwrap_or_default();
            if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        let snaplen = word(&header[16..20]);
        let linktype = word(&header[20..24]) & 0x0fff_ffff;
        if linktype != LINKTYPE_ETHERNET {
            return Err(PcapError::LinkType(linktype));
        }
        Ok(PcapReader {
            input,
            big_endian,
            snaplen,
            index: 0,
        })
    }

    /// The next frame, `Ok(None)` at the end of the file.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, PcapError> {
        let mut header = [0u8; 16];
        match read_full(&mut self.input, &mut header)? {
            0 => return Ok(None),
            16 => {}
            _ => return Err(PcapError::Truncated(self.index + 1)),
        }
        self.index += 1;
        let word = |b: &[u8]| {
            let b: [u8; 4] = b.try_into().unwrap_or_default();
            if self.big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        let caplen = word(&header[8..12]);
        let wire_len = word(&header[12..16]);
        if caplen > MAX_RECORD.max(self.snaplen.min(MAX_RECORD)) {
            return Err(PcapError::Oversized {
                index: self.index,
                len: caplen,
            });
        }
        let mut data = vec![0u8; caplen as usize];
        if read_full(&mut self.input, &mut data)? != data.len() {
            return Err(PcapError::Truncated(self.index));
        }
        Ok(Some(Packet { data, wire_len }))
    }
}

fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Writes an Ethernet pcap (microsecond timestamps, little endian), with a
/// snapshot length of 65535 or the longest frame's. A frame longer than
/// [`MAX_RECORD`], which no reader would take back, is refused
/// (`InvalidInput`) before anything is written.
pub fn write_pcap(mut out: impl Write, frames: &[Vec<u8>]) -> io::Result<()> {
    let longest = frames.iter().map(Vec::len).max().unwrap_or(0);
    let snaplen = u32::try_from(longest)
        .ok()
        .filter(|len| *len <= MAX_RECORD)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a frame of {longest} bytes: pcap records hold at most {MAX_RECORD}"),
            )
        })?
        .max(65535);
    out.write_all(&MAGIC_US.to_le_bytes())?;
    out.write_all(&2u16.to_le_bytes())?;
    out.write_all(&4u16.to_le_bytes())?;
    out.write_all(&[0; 8])?;
    out.write_all(&snaplen.to_le_bytes())?;
    out.write_all(&LINKTYPE_ETHERNET.to_le_bytes())?;
    for (i, frame) in frames.iter().enumerate() {
        out.write_all(&(i as u32).to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        out.write_all(&(frame.len() as u32).to_le_bytes())?;
        out.write_all(&(frame.len() as u32).to_le_bytes())?;
        out.write_all(frame)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let frames = vec![vec![1u8; 60], vec![2u8; 1514]];
        let mut file = Vec::new();
        write_pcap(&mut file, &frames).unwrap();
        let mut r = PcapReader::new(&file[..]).unwrap();
        assert_eq!(r.next_packet().unwrap().unwrap().data, frames[0]);
        assert_eq!(r.next_packet().unwrap().unwrap().data, frames[1]);
        assert!(r.next_packet().unwrap().is_none());
    }

    /// Fuzz finding (`pcap` target, input `ff ff 00`): `write_pcap` wrote a
    /// 512 KiB frame that `PcapReader` then refused as oversized.
    #[test]
    fn the_writer_writes_only_what_the_reader_reads_back() {
        let limit = MAX_RECORD as usize;
        let frames = vec![vec![7u8; 100_000], vec![8u8; limit]];
        let mut file = Vec::new();
        write_pcap(&mut file, &frames).unwrap();
        assert_eq!(
            file[16..20],
            MAX_RECORD.to_le_bytes(),
            "snaplen covers them"
        );
        let mut r = PcapReader::new(&file[..]).unwrap();
        assert_eq!(r.next_packet().unwrap().unwrap().data, frames[0]);
        assert_eq!(r.next_packet().unwrap().unwrap().data, frames[1]);
        assert!(r.next_packet().unwrap().is_none());
        let mut file = Vec::new();
        let err = write_pcap(&mut file, &[vec![0; 60], vec![0; 0x7fff * 16]]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(file.is_empty(), "nothing written");
    }

    #[test]
    fn bad_files_get_clear_errors() {
        let err = |bytes: &[u8]| PcapReader::new(bytes).err().unwrap().to_string();
        assert!(err(b"\x0a\x0d\x0d\x0a........................").contains("pcapng"));
        assert!(err(b"GET / HTTP/1.1\r\n\r\n.......").contains("not a pcap"));
        let mut raw_ip = Vec::new();
        write_pcap(&mut raw_ip, &[]).unwrap();
        raw_ip[20] = 101;
        assert!(err(&raw_ip).contains("link type 101"));
        let mut cut = Vec::new();
        write_pcap(&mut cut, &[vec![0; 100]]).unwrap();
        cut.truncate(24 + 16 + 50);
        let mut r = PcapReader::new(&cut[..]).unwrap();
        assert!(
            r.next_packet()
                .err()
                .unwrap()
                .to_string()
                .contains("truncated record 1")
        );
    }
}
