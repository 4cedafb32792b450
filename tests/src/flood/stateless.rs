//! The stateless floods: crafted Ethernet frames from spoofed off-link
//! sources, written to the client's veth with AF_PACKET. Each frame is a TCP
//! segment carrying a whole sub-minimum ClientHello with no handshake before
//! it ([`Packet::Hello`]), or a SYN with a browser's options ([`Packet::Syn`]).
//!
//! Speed comes from doing nothing per packet but the send: a pool of frames is
//! built once (every source address, port and SNI distinct within the pool), and
//! [`blast`] hands them to the kernel 64 at a time with `sendmmsg(2)` on a packet
//! socket that bypasses the qdisc layer.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Instant,
};

use gateway::frame::TcpFrame;

use super::{Bounds, FloodResult, old_hello, pace};
use crate::lab::{CLIENT_V4, CLIENT_V6, IFACE, Lab, SERVER_V4, SERVER_V6, run};

/// The spoofed IPv4 sources: off-link for the server (the lab's link is
/// 198.18.0.0/24), inside the benchmarking range 198.18.0.0/15.
pub const SPOOFED_V4: &str = "198.19.0.0/16";
/// The spoofed IPv6 sources, inside fd00::/8 and off the lab's fd00::/64.
pub const SPOOFED_V6: &str = "fd00:0:0:19::/64";

/// Routes [`SPOOFED_V4`] and [`SPOOFED_V6`] from the server through the client,
/// as a server's routes lead to the Internet through its router: the server's
/// kernel then answers spoofed segments (with resets) without resolving each
/// source's address, and the client namespace, which does not forward, drops
/// the answers.
pub fn route_spoofed_sources(lab: &Lab) -> anyhow::Result<()> {
    for (net, via) in [(SPOOFED_V4, CLIENT_V4), (SPOOFED_V6, CLIENT_V6)] {
        run(lab
            .in_server("ip")
            .args(["route", "add", net, "via", via, "dev", IFACE]))?;
    }
    Ok(())
}

/// Frames in a pool: distinct sources, ports and SNIs within it.
pub const POOL: usize = 8192;
/// Frames per `sendmmsg` call.
const BATCH: usize = 64;

/// Who the frames are from and to.
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// Source and destination MAC addresses (client's veth, server's veth).
    pub macs: ([u8; 6], [u8; 6]),
    /// The server's IPv4 address.
    pub v4: Ipv4Addr,
    /// The server's IPv6 address.
    pub v6: Ipv6Addr,
    /// The server's TCP port.
    pub port: u16,
}

impl Target {
    /// The lab's server, seen from its client, on `port`.
    pub fn lab(lab: &Lab, port: u16) -> anyhow::Result<Target> {
        Ok(Target {
            macs: (lab.mac(false)?, lab.mac(true)?),
            v4: SERVER_V4.parse()?,
            v6: SERVER_V6.parse()?,
            port,
        })
    }
}

/// What a spoofed frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packet {
    /// A whole sub-minimum ClientHello ([`old_hello`]) in a PSH+ACK segment.
    Hello,
    /// A SYN with MSS, SACK-permitted, timestamp and window-scale options,
    /// as a Linux client sends it.
    Syn,
}

impl Packet {
    /// Segment number `i` of this kind from `src:sport` to `dst:dport`.
    pub fn segment(self, src: IpAddr, dst: IpAddr, sport: u16, dport: u16, i: u64) -> TcpFrame {
        let mut frame = match self {
            Packet::Hello => TcpFrame::new(src, dst, sport, dport, old_hello(i)),
            Packet::Syn => {
                let mut f = TcpFrame::new(src, dst, sport, dport, Vec::new());
                f.flags = gateway::frame::flags::SYN;
                f.ack = 0;
                let ts = (i as u32).wrapping_mul(977).to_be_bytes();
                f.tcp_options = [
                    &[2, 4, 0x05, 0xb4, 4, 2, 8, 10][..], // MSS 1460, SACK-permitted, TS
                    &ts,
                    &[0, 0, 0, 0, 1, 3, 3, 7], // TS echo 0, NOP, window scale 7
                ]
                .concat();
                f
            }
        };
        frame.seq = 0x1000_0000u32.wrapping_add((i as u32).wrapping_mul(2_654_435_761));
        frame
    }
}

/// [`POOL`] frames to `target`, one in four over IPv6: frame `i` comes from its
/// own address in [`SPOOFED_V4`] or [`SPOOFED_V6`] and its own port, and carries
/// [`old_hello(i)`](old_hello) in one segment.
pub fn hello_frames(target: Target) -> Vec<Vec<u8>> {
    frames(target, Packet::Hello)
}

/// [`POOL`] frames of `packet` to `target`, as [`hello_frames`] makes them.
pub fn frames(target: Target, packet: Packet) -> Vec<Vec<u8>> {
    (0..POOL as u64)
        .map(|i| {
            let (src, dst) = if i % 4 == 3 {
                let src = Ipv6Addr::new(0xfd00, 0, 0, 0x19, 0, 0, (i >> 16) as u16, i as u16);
                (IpAddr::V6(src), IpAddr::V6(target.v6))
            } else {
                let src = Ipv4Addr::new(198, 19, (i >> 8) as u8, i as u8);
                (IpAddr::V4(src), IpAddr::V4(target.v4))
            };
            let sport = 1024 + ((i * 7919) % 64000) as u16;
            let mut bytes = packet.segment(src, dst, sport, target.port, i).build();
            bytes[..6].copy_from_slice(&target.macs.1);
            bytes[6..12].copy_from_slice(&target.macs.0);
            bytes
        })
        .collect()
}

/// A packet socket bound to one interface for sending only, past the qdisc.
struct PacketSocket(OwnedFd);

impl PacketSocket {
    fn open(iface: &str) -> std::io::Result<PacketSocket> {
        let last = std::io::Error::last_os_error;
        // SAFETY: plain socket(2); protocol 0 means the socket receives nothing.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            return Err(last());
        }
        // SAFETY: fd was just opened and is owned by this value only.
        let socket = PacketSocket(unsafe { OwnedFd::from_raw_fd(fd) });
        let name = std::ffi::CString::new(iface).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        // SAFETY: a NUL-terminated interface name.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(last());
        }
        // SAFETY: a zeroed sockaddr_ll is valid; the fields set describe the interface.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        // SAFETY: a valid address of the stated size.
        let rc = unsafe {
            libc::bind(
                fd,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc != 0 {
            return Err(last());
        }
        socket.set(libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)?;
        socket.set(libc::SOL_SOCKET, libc::SO_SNDBUF, 4 << 20)?;
        Ok(socket)
    }

    fn set(&self, level: i32, option: i32, value: i32) -> std::io::Result<()> {
        // SAFETY: an int option read from a live local.
        let rc = unsafe {
            libc::setsockopt(
                self.0.as_raw_fd(),
                level,
                option,
                (&value as *const i32).cast(),
                std::mem::size_of::<i32>() as u32,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Sends `frames` with one `sendmmsg`; how many the kernel took.
    fn send_batch(&self, frames: &[&[u8]]) -> std::io::Result<usize> {
        let mut iov: [libc::iovec; BATCH] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        // SAFETY: mmsghdr is plain data; zeroed is a valid empty header.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        let n = frames.len().min(BATCH);
        for (i, frame) in frames.iter().take(n).enumerate() {
            iov[i].iov_base = frame.as_ptr() as *mut libc::c_void;
            iov[i].iov_len = frame.len();
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: n headers, each pointing at one live iovec over a live frame.
        let sent = unsafe { libc::sendmmsg(self.0.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
        if sent < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(sent as usize)
        }
    }
}

/// Sends `frames` round and round on `iface` within `bounds` (rate 0: as fast as
/// one core can). A batch the kernel refuses (its queue to the peer full) counts
/// as errors and is not retried: a flood does not wait. Must run inside the
/// client namespace.
pub fn blast(iface: &str, frames: &[Vec<u8>], bounds: Bounds) -> std::io::Result<FloodResult> {
    if frames.is_empty() {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    let socket = PacketSocket::open(iface)?;
    let pool: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    let start = Instant::now();
    let mut result = FloodResult::default();
    let mut next = 0usize;
    let mut done = 0u64;
    while done < bounds.count && start.elapsed() < bounds.max_time {
        let want = (bounds.count - done).min(BATCH as u64) as usize;
        let end = (next + want).min(pool.len());
        let batch = &pool[next..end];
        match socket.send_batch(batch) {
            Ok(n) => {
                result.sent += n as u64;
                result.errors += (batch.len() - n) as u64;
            }
            Err(_) => result.errors += batch.len() as u64,
        }
        done += batch.len() as u64;
        next = if end == pool.len() { 0 } else { end };
        pace(bounds, start, done);
    }
    result.elapsed = start.elapsed();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway::frame::tcp_view;

    #[test]
    fn the_pool_has_distinct_sources_in_the_lab_ranges_only() {
        let target = Target {
            macs: ([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1]),
            v4: Ipv4Addr::new(198, 18, 0, 1),
            v6: "fd00::1".parse().unwrap(),
            port: 443,
        };
        let frames = hello_frames(target);
        assert_eq!(frames.len(), POOL);
        let mut sources = std::collections::HashSet::new();
        for f in &frames {
            assert!(tcp_view(f).expect("a TCP frame").checksum_ok);
            let (src, tcp) = match u16::from_be_bytes([f[12], f[13]]) {
                0x0800 => (f[26..30].to_vec(), 34),
                0x86dd => (f[22..38].to_vec(), 54),
                other => panic!("ethertype {other:#x}"),
            };
            let lab = if src.len() == 4 {
                &[198, 19][..]
            } else {
                &[0xfd, 0, 0, 0, 0, 0, 0, 0x19][..]
            };
            assert!(src.starts_with(lab), "{src:?}");
            assert_eq!(u16::from_be_bytes([f[tcp + 2], f[tcp + 3]]), 443);
            sources.insert((src, [f[tcp], f[tcp + 1]]));
        }
        assert_eq!(sources.len(), POOL, "every frame has its own source");
    }

    #[test]
    fn syn_frames_are_bare_syns_with_options() {
        let target = Target {
            macs: ([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1]),
            v4: Ipv4Addr::new(198, 18, 0, 1),
            v6: "fd00::1".parse().unwrap(),
            port: 443,
        };
        for f in frames(target, Packet::Syn).iter().take(8) {
            let view = tcp_view(f).expect("a TCP frame");
            assert!(view.checksum_ok);
            assert_eq!(view.flags, gateway::frame::flags::SYN);
            let tcp = if f[12] == 0x08 { 34 } else { 54 };
            assert_eq!(f[tcp + 12] >> 4, 10, "20 bytes of options");
            assert_eq!(f.len(), tcp + 40, "no payload");
        }
    }
}
