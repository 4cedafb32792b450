//! The fastest stateless flood this machine makes: the kernel's own XDP traffic
//! generator, `BPF_PROG_RUN` in live-frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`,
//! the mechanism behind xdp-tools' `xdp-trafficgen`), in place of the pktgen
//! this kernel lacks.
//!
//! A ten-instruction XDP program, loaded here from raw instructions, gives each
//! copy of a crafted hello frame a random source address and port and
//! redirects it out of the client's veth. The frames cross to the server's veth
//! as XDP frames, not socket buffers, so the server's XDP program meets them as
//! it meets packets from a NIC driver: before any socket buffer exists.
//!
//! Sources stay inside the lab's ranges: 198.19.1.0 to 198.19.64.255 and
//! fd00:0:0:19::100 to fd00:0:0:19::40ff, ports 32769 to 49152. Each changed
//! field is balanced by another (the IPv4 identification, the source port), so
//! the IPv4 and TCP checksums the frame was built with stay right without being
//! recomputed.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Instant,
};

use super::{
    Bounds, FloodResult, pace,
    stateless::{Packet, Target},
};

/// Frames per `BPF_PROG_RUN` call at most (each call sets up its own page pool,
/// so calls are few and long).
const MAX_REPEAT: u64 = 1 << 20;
/// Distinct hellos (SNIs, families) the calls take turns with.
const TEMPLATES: u64 = 64;
/// The random offset's range: 14 bits.
const SPREAD: i32 = 0x3fff;

/// A raw BPF instruction.
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

// Opcodes (include/uapi/linux/bpf.h).
const LDX_W: u8 = 0x61;
const STX_H: u8 = 0x6b;
const MOV_X: u8 = 0xbf;
const MOV_K: u8 = 0xb7;
const ADD_K: u8 = 0x07;
const AND_K: u8 = 0x57;
const SUB_X: u8 = 0x1f;
const TO_BE: u8 = 0xdc;
const JGT_X: u8 = 0x2d;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
const GET_PRANDOM_U32: i32 = 7;
const REDIRECT: i32 = 23;

/// What the program writes into one big-endian 16-bit field of each copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    /// `base + r`, r the copy's random offset.
    Plus(i32),
    /// `base - r`: balances a `Plus` in the same checksum.
    Minus(i32),
    /// The template's own value. The server's XDP program may rewrite a frame
    /// in place (a refused hello into a reset), and live frames are recycled
    /// without being initialised again, so each copy restores these.
    Fixed(u16),
}

/// Frames shorter than this are sent as they are (the verifier needs a bound).
const MIN_LEN: i16 = 72;

/// The generator program: write `fields` (offset from the frame start, value),
/// then redirect out of `ifindex`.
fn program(ifindex: u32, fields: &[(i16, Field)]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_W, 6, 1, 0, 0), // r6 = data
        insn(LDX_W, 7, 1, 4, 0), // r7 = data_end
        insn(MOV_X, 8, 6, 0, 0),
        insn(ADD_K, 8, 0, 0, MIN_LEN as i32),
        insn(JGT_X, 8, 7, 0, 0), // patched below: too short, send as is
        insn(CALL, 0, 0, 0, GET_PRANDOM_U32),
        insn(AND_K, 0, 0, 0, SPREAD),
    ];
    for &(off, field) in fields {
        match field {
            Field::Plus(base) => {
                p.push(insn(MOV_X, 1, 0, 0, 0));
                p.push(insn(ADD_K, 1, 0, 0, base));
            }
            Field::Minus(base) => {
                p.push(insn(MOV_K, 1, 0, 0, base));
                p.push(insn(SUB_X, 1, 0, 0, 0));
            }
            Field::Fixed(value) => p.push(insn(MOV_K, 1, 0, 0, i32::from(value))),
        }
        p.push(insn(TO_BE, 1, 0, 0, 16));
        p.push(insn(STX_H, 6, 1, off, 0));
    }
    p[4].off = (p.len() - 5) as i16;
    p.extend([
        insn(MOV_K, 1, 0, 0, ifindex as i32),
        insn(MOV_K, 2, 0, 0, 0),
        insn(CALL, 0, 0, 0, REDIRECT),
        insn(EXIT, 0, 0, 0, 0),
    ]);
    p
}

/// Template `i`: the frame every copy starts from, with the balanced fields at
/// their base values (offset 0), and the fields the program writes.
fn template(target: Target, i: u64, packet: Packet) -> (Vec<u8>, Vec<(i16, Field)>) {
    let v6 = i % 4 == 3;
    let (src, dst) = if v6 {
        let src = Ipv6Addr::new(0xfd00, 0, 0, 0x19, 0, 0, 0, 0x0100);
        (IpAddr::V6(src), IpAddr::V6(target.v6))
    } else {
        (
            IpAddr::V4(Ipv4Addr::new(198, 19, 1, 0)),
            IpAddr::V4(target.v4),
        )
    };
    let mut bytes = packet.segment(src, dst, 0xc000, target.port, i).build();
    if !v6 {
        // Identification 0x8000 (TcpFrame writes 0x1234), checksum redone.
        bytes[18..20].copy_from_slice(&0x8000u16.to_be_bytes());
        bytes[24..26].fill(0);
        let sum = gateway::frame::checksum(&[&bytes[14..34]]);
        bytes[24..26].copy_from_slice(&sum.to_be_bytes());
    }
    bytes[..6].copy_from_slice(&target.macs.1);
    bytes[6..12].copy_from_slice(&target.macs.0);
    let word = |off: usize| u16::from_be_bytes([bytes[off], bytes[off + 1]]);
    let tcp = if v6 { 54 } else { 34 };
    let mut fields = if v6 {
        vec![(36, Field::Plus(0x0100))] // source address, low word
    } else {
        vec![
            (28, Field::Plus(0x0100)),  // source address, low word
            (18, Field::Minus(0x8000)), // identification balances it
        ]
    };
    fields.extend([
        (tcp as i16, Field::Minus(0xc000)), // source port balances it in TCP's sum
        (tcp as i16 + 12, Field::Fixed(word(tcp + 12))), // data offset and flags
        (tcp as i16 + 16, Field::Fixed(word(tcp + 16))), // TCP checksum
    ]);
    (bytes, fields)
}

fn bpf(cmd: libc::c_long, attr: &mut [u64]) -> std::io::Result<i64> {
    // SAFETY: attr is a zero-initialised bpf_attr of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr) as u32,
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn load(insns: &[Insn]) -> std::io::Result<OwnedFd> {
    let license = c"GPL";
    let mut attr = [0u64; 16];
    // union bpf_attr, BPF_PROG_LOAD: prog_type, insn_cnt, insns, license.
    attr[0] = 6 | ((insns.len() as u64) << 32); // BPF_PROG_TYPE_XDP
    attr[1] = insns.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    let fd = bpf(5, &mut attr)?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends `repeat` copies of `frame` through the program (one `BPF_PROG_RUN`).
fn run(prog: &OwnedFd, frame: &[u8], repeat: u32) -> std::io::Result<()> {
    let mut attr = [0u64; 10];
    // union bpf_attr, test: prog_fd, retval, data_size_in, data_size_out,
    // data_in, data_out, repeat, duration, ctx sizes and pointers, flags, cpu, batch_size.
    attr[0] = prog.as_raw_fd() as u64;
    attr[1] = frame.len() as u64;
    attr[2] = frame.as_ptr() as u64;
    attr[4] = u64::from(repeat);
    attr[8] = 1 << 1; // BPF_F_TEST_XDP_LIVE_FRAMES; cpu 0
    attr[9] = 32; // batch_size: small flushes, so the peer starts on them early
    bpf(10, &mut attr).map(|_| ())
}

/// Floods `target` with hellos out of `iface` within `bounds` (rate 0: as fast
/// as one core can). Must run inside the client namespace, with an XDP program
/// attached to the server's veth (a veth takes XDP frames only then).
pub fn blast(iface: &str, target: Target, bounds: Bounds) -> std::io::Result<FloodResult> {
    blast_packets(iface, target, Packet::Hello, bounds)
}

/// [`blast`] with frames carrying `packet` (hellos or SYNs).
pub fn blast_packets(
    iface: &str,
    target: Target,
    packet: Packet,
    bounds: Bounds,
) -> std::io::Result<FloodResult> {
    let name = std::ffi::CString::new(iface).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: a NUL-terminated interface name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(std::io::Error::last_os_error());
    }
    let templates = (0..TEMPLATES)
        .map(|i| {
            let (frame, fields) = template(target, i, packet);
            Ok((load(&program(ifindex, &fields))?, frame))
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    // Paced, each call carries a millisecond's worth of frames; but a call also
    // sleeps about 20 ms setting up, so paced rates fall short (the flood bench
    // paces with AF_PACKET and uses this unpaced).
    let repeat = match bounds.rate {
        0 => MAX_REPEAT,
        r => (r / 1000).clamp(1, MAX_REPEAT),
    };
    let start = Instant::now();
    let mut result = FloodResult::default();
    let mut call = 0u64;
    while result.sent + result.errors < bounds.count && start.elapsed() < bounds.max_time {
        let n = repeat.min(bounds.count - result.sent - result.errors);
        let (prog, frame) = &templates[(call % TEMPLATES) as usize];
        match run(prog, frame, n as u32) {
            Ok(()) => result.sent += n,
            Err(e) if result.sent == 0 => return Err(e),
            Err(_) => result.errors += n,
        }
        call += 1;
        pace(bounds, start, result.sent + result.errors);
    }
    result.elapsed = start.elapsed();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway::frame::tcp_view;

    fn target() -> Target {
        Target {
            macs: ([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1]),
            v4: Ipv4Addr::new(198, 18, 0, 1),
            v6: "fd00::1".parse().unwrap(),
            port: 443,
        }
    }

    /// What the program does to a frame, done here in Rust for offset `r`.
    fn written(frame: &[u8], fields: &[(i16, Field)], r: u16) -> Vec<u8> {
        let mut f = frame.to_vec();
        for &(off, field) in fields {
            let v = match field {
                Field::Plus(base) => base as u16 + r,
                Field::Minus(base) => base as u16 - r,
                Field::Fixed(v) => v,
            };
            f[off as usize..off as usize + 2].copy_from_slice(&v.to_be_bytes());
        }
        f
    }

    #[test]
    fn balanced_fields_keep_every_checksum_right() {
        for (i, packet) in (0..8).map(|i| (i, [Packet::Hello, Packet::Syn][i as usize / 4])) {
            let (frame, fields) = template(target(), i, packet);
            assert_eq!(
                written(&frame, &fields, 0),
                frame,
                "offset 0 is the template"
            );
            for r in [1, 0x1234, SPREAD as u16] {
                let f = written(&frame, &fields, r);
                assert!(tcp_view(&f).unwrap().checksum_ok, "template {i}, r {r:#x}");
                if i % 4 != 3 {
                    assert_eq!(gateway::frame::checksum(&[&f[14..34]]), 0, "IPv4 header");
                    assert_eq!(f[26..28], [198, 19]);
                    assert!((1..=64).contains(&f[28]), "198.19.{}.x", f[28]);
                } else {
                    assert_eq!(f[22..30], [0xfd, 0, 0, 0, 0, 0, 0, 0x19]);
                }
            }
        }
    }

    #[test]
    fn the_program_jumps_inside_itself_and_ends_in_a_redirect() {
        let (_, fields) = template(target(), 0, Packet::Hello);
        let p = program(7, &fields);
        let jump = &p[4];
        assert_eq!(jump.code, JGT_X);
        let to = 5 + jump.off as usize;
        assert_eq!(
            p[to].code, MOV_K,
            "the short-frame jump lands on the redirect"
        );
        assert_eq!(p[to].imm, 7);
        assert_eq!(p[p.len() - 2].imm, REDIRECT);
        assert_eq!(p.last().unwrap().code, EXIT);
    }
}
