//! Building Ethernet frames that carry TCP segments, with correct checksums:
//! test input for the XDP filter, replay fixtures and flood traffic.

use std::net::IpAddr;

/// 802.1Q tag protocol id.
pub const TPID_8021Q: u16 = 0x8100;
/// 802.1ad (QinQ outer) tag protocol id.
pub const TPID_8021AD: u16 = 0x88a8;

/// TCP flag bits.
pub mod flags {
    /// FIN
    pub const FIN: u8 = 0x01;
    /// SYN
    pub const SYN: u8 = 0x02;
    /// RST
    pub const RST: u8 = 0x04;
    /// PSH
    pub const PSH: u8 = 0x08;
    /// ACK
    pub const ACK: u8 = 0x10;
}

/// A TCP segment in an Ethernet frame, described field by field.
#[derive(Clone, Debug)]
pub struct TcpFrame {
    /// VLAN tags, outermost first: (TPID, TCI).
    pub vlans: Vec<(u16, u16)>,
    /// Source address (both addresses must be the same family).
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IPv4 options (padded to 4 bytes when built; ignored for IPv6).
    pub ip_options: Vec<u8>,
    /// IPv4 fragment offset in 8-byte units and the more-fragments flag.
    pub fragment: (u16, bool),
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// TCP flags.
    pub flags: u8,
    /// TCP options (padded to 4 bytes when built).
    pub tcp_options: Vec<u8>,
    /// Segment payload.
    pub payload: Vec<u8>,
}

impl TcpFrame {
    /// A PSH+ACK segment from `src:sport` to `dst:dport` carrying `payload`.
    pub fn new(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: Vec<u8>) -> TcpFrame {
        TcpFrame {
            vlans: Vec::new(),
            src,
            dst,
            ip_options: Vec::new(),
            fragment: (0, false),
            sport,
            dport,
            seq: 1,
            ack: 1,
            flags: flags::PSH | flags::ACK,
            tcp_options: Vec::new(),
            payload,
        }
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut tcp_options = self.tcp_options.clone();
        pad4(&mut tcp_options);
        let tcp_len = 20 + tcp_options.len();
        let mut tcp = Vec::with_capacity(tcp_len + self.payload.len());
        tcp.extend_from_slice(&self.sport.to_be_bytes());
        tcp.extend_from_slice(&self.dport.to_be_bytes());
        tcp.extend_from_slice(&self.seq.to_be_bytes());
        tcp.extend_from_slice(&self.ack.to_be_bytes());
        tcp.push(((tcp_len / 4) as u8) << 4);
        tcp.push(self.flags);
        tcp.extend_from_slice(&64240u16.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
        tcp.extend_from_slice(&tcp_options);
        tcp.extend_from_slice(&self.payload);

        let mut frame = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
        for (tpid, tci) in &self.vlans {
            frame.extend_from_slice(&tpid.to_be_bytes());
            frame.extend_from_slice(&tci.to_be_bytes());
        }
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let mut opts = self.ip_options.clone();
                pad4(&mut opts);
                let ihl = 20 + opts.len();
                let total = (ihl + tcp.len()) as u16;
                let frag = (self.fragment.0 & 0x1fff) | if self.fragment.1 { 0x2000 } else { 0 };
                let mut ip = vec![0x40 | (ihl / 4) as u8, 0];
                ip.extend_from_slice(&total.to_be_bytes());
                ip.extend_from_slice(&[0x12, 0x34]);
                ip.extend_from_slice(&frag.to_be_bytes());
                ip.extend_from_slice(&[64, 6, 0, 0]);
                ip.extend_from_slice(&src.octets());
                ip.extend_from_slice(&dst.octets());
                ip.extend_from_slice(&opts);
                let csum = checksum(&[&ip]);
                ip[10..12].copy_from_slice(&csum.to_be_bytes());
                let pseudo = [
                    &src.octets()[..],
                    &dst.octets()[..],
                    &[0, 6],
                    &(tcp.len() as u16).to_be_bytes(),
                ]
                .concat();
                let csum = checksum(&[&pseudo, &tcp]);
                tcp[16..18].copy_from_slice(&csum.to_be_bytes());
                frame.extend_from_slice(&0x0800u16.to_be_bytes());
                frame.extend_from_slice(&ip);
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let mut ip = vec![0x60, 0, 0, 0];
                ip.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
                ip.extend_from_slice(&[6, 64]);
                ip.extend_from_slice(&src.octets());
                ip.extend_from_slice(&dst.octets());
                let pseudo = [
                    &src.octets()[..],
                    &dst.octets()[..],
                    &(tcp.len() as u32).to_be_bytes(),
                    &[0, 0, 0, 6],
                ]
                .concat();
                let csum = checksum(&[&pseudo, &tcp]);
                tcp[16..18].copy_from_slice(&csum.to_be_bytes());
                frame.extend_from_slice(&0x86ddu16.to_be_bytes());
                frame.extend_from_slice(&ip);
            }
            _ => panic!("TcpFrame: source and destination must be the same address family"),
        }
        frame.extend_from_slice(&tcp);
        frame
    }
}

fn pad4(v: &mut Vec<u8>) {
    while !v.len().is_multiple_of(4) {
        v.push(0); // TCP/IP option "end of list"
    }
}

/// The Internet checksum over the concatenation of `parts`.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for part in parts {
        for &b in *part {
            match odd.take() {
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, b])),
                None => odd = Some(b),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The TCP header fields of a frame built like [`TcpFrame::build`] (untagged or tagged).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpView {
    /// TCP flags.
    pub flags: u8,
    /// Sequence number.
    pub seq: u32,
    /// Whether the TCP checksum verifies.
    pub checksum_ok: bool,
}

/// Reads the TCP header of an Ethernet frame; `None` if it is not TCP over IP.
pub fn tcp_view(frame: &[u8]) -> Option<TcpView> {
    let mut off = 12;
    let mut proto = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
    while proto == TPID_8021Q || proto == TPID_8021AD {
        off += 4;
        proto = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
    }
    let l3 = off + 2;
    let (tcp, pseudo) = match proto {
        0x0800 => {
            let ihl = usize::from(frame.get(l3)? & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([
                *frame.get(l3 + 2)?,
                *frame.get(l3 + 3)?,
            ]));
            let tcp = frame.get(l3 + ihl..l3 + total)?;
            let addrs = frame.get(l3 + 12..l3 + 20)?;
            (
                tcp,
                [addrs, &[0, 6], &(tcp.len() as u16).to_be_bytes()].concat(),
            )
        }
        0x86dd => {
            let plen = usize::from(u16::from_be_bytes([
                *frame.get(l3 + 4)?,
                *frame.get(l3 + 5)?,
            ]));
            let tcp = frame.get(l3 + 40..l3 + 40 + plen)?;
            let addrs = frame.get(l3 + 8..l3 + 40)?;
            (
                tcp,
                [addrs, &(tcp.len() as u32).to_be_bytes(), &[0, 0, 0, 6]].concat(),
            )
        }
        _ => return None,
    };
    Some(TcpView {
        flags: *tcp.get(13)?,
        seq: u32::from_be_bytes(tcp.get(4..8)?.try_into().ok()?),
        checksum_ok: checksum(&[&pseudo, tcp]) == 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_frames_have_valid_checksums() {
        for (src, dst) in [("198.18.0.2", "198.18.0.1"), ("fd00::2", "fd00::1")] {
            let mut f = TcpFrame::new(
                src.parse().unwrap(),
                dst.parse().unwrap(),
                40000,
                443,
                b"hello".to_vec(),
            );
            f.vlans = vec![(TPID_8021AD, 10), (TPID_8021Q, 20)];
            f.tcp_options = vec![2, 4, 5, 0xb4, 1];
            f.ip_options = vec![1, 1, 1];
            let frame = f.build();
            let view = tcp_view(&frame).unwrap();
            assert!(view.checksum_ok, "{src}");
            assert_eq!(view.flags, flags::PSH | flags::ACK);
        }
    }
}
