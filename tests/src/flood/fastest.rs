//! The fastest stateless flood this machine allows: live XDP frames
//! ([`live`]) where the kernel runs them, else AF_PACKET ([`stateless`]).
//!
//! Some kernels refuse `BPF_PROG_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES` (the
//! call fails with EPERM, for one). Then the flood is sent with AF_PACKET
//! instead, which is slower but crosses the same veth to the same XDP program;
//! the process says so once, naming the error, and skips live frames from then
//! on. Setting [`NO_LIVE_FRAMES_ENV`] to `1` forces the AF_PACKET path, to try
//! the fallback on a machine that allows live frames.

use std::sync::OnceLock;

use super::{
    Bounds, FloodResult, live,
    stateless::{self, Packet, Target},
};

/// Set to `1` to flood with AF_PACKET even where live XDP frames work.
pub const NO_LIVE_FRAMES_ENV: &str = "GATEWAY_FLOOD_NO_LIVE_FRAMES";

/// Which generator sent a stateless flood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generator {
    /// `BPF_PROG_RUN` in live-frames mode ([`live::blast`]).
    LiveFrames,
    /// A packet socket and `sendmmsg` ([`stateless::blast`]).
    AfPacket,
}

impl Generator {
    /// Short name, for tables and JSON.
    pub fn key(self) -> &'static str {
        match self {
            Generator::LiveFrames => "live-xdp-frames",
            Generator::AfPacket => "af_packet",
        }
    }

    /// The generator to try first: [`Generator::AfPacket`] when
    /// [`NO_LIVE_FRAMES_ENV`] is `1` (said once per process), else
    /// [`Generator::LiveFrames`].
    pub fn preferred() -> Generator {
        static FORCED: OnceLock<bool> = OnceLock::new();
        let forced = *FORCED.get_or_init(|| {
            let forced = std::env::var(NO_LIVE_FRAMES_ENV).is_ok_and(|v| v == "1");
            if forced {
                eprintln!(
                    "{NO_LIVE_FRAMES_ENV}=1: not trying live XDP frames; flooding with AF_PACKET"
                );
            }
            forced
        });
        if forced {
            Generator::AfPacket
        } else {
            Generator::LiveFrames
        }
    }
}

/// Why this kernel refused live XDP frames, once it has (in this process).
static LIVE_REFUSED: OnceLock<String> = OnceLock::new();

/// Why live XDP frames were refused in this process, if they were.
pub fn live_frames_refusal() -> Option<&'static str> {
    LIVE_REFUSED.get().map(String::as_str)
}

/// An OS error as its errno's name and text, e.g. `EPERM: Operation not permitted`.
pub fn errno_name(error: &std::io::Error) -> String {
    let Some(code) = error.raw_os_error() else {
        return error.to_string();
    };
    let name = match code {
        libc::EPERM => "EPERM".to_string(),
        libc::EACCES => "EACCES".to_string(),
        libc::EINVAL => "EINVAL".to_string(),
        libc::ENOSYS => "ENOSYS".to_string(),
        libc::EOPNOTSUPP => "EOPNOTSUPP".to_string(),
        libc::ENODEV => "ENODEV".to_string(),
        libc::ENXIO => "ENXIO".to_string(),
        libc::E2BIG => "E2BIG".to_string(),
        libc::EFAULT => "EFAULT".to_string(),
        libc::ENOMEM => "ENOMEM".to_string(),
        524 => "ENOTSUPP".to_string(), // the kernel's own, not in libc
        other => format!("errno {other}"),
    };
    let text = error.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    format!("{name}: {text}")
}

/// Floods `target` out of `iface` within `bounds` with `first` if it can: live
/// XDP frames fall back to AF_PACKET (sending `frames`, e.g. from
/// [`stateless::hello_frames`]) where the kernel refuses them. Returns the
/// generator that ran and what it did. Must run inside the client namespace,
/// with an XDP program attached to the server's veth.
pub fn blast_with(
    first: Generator,
    iface: &str,
    target: Target,
    frames: &[Vec<u8>],
    bounds: Bounds,
) -> std::io::Result<(Generator, FloodResult)> {
    blast_packets(first, iface, target, Packet::Hello, frames, bounds)
}

/// [`blast_with`] for floods of `packet`; `frames` (for AF_PACKET) must carry
/// the same kind of packet, e.g. from [`stateless::frames`].
pub fn blast_packets(
    first: Generator,
    iface: &str,
    target: Target,
    packet: Packet,
    frames: &[Vec<u8>],
    bounds: Bounds,
) -> std::io::Result<(Generator, FloodResult)> {
    if first == Generator::LiveFrames && LIVE_REFUSED.get().is_none() {
        match live::blast_packets(iface, target, packet, bounds) {
            Ok(result) => return Ok((Generator::LiveFrames, result)),
            Err(e) => {
                let why = errno_name(&e);
                if LIVE_REFUSED.set(why.clone()).is_ok() {
                    eprintln!(
                        "live XDP frames refused by this kernel ({why}); flooding with \
                         AF_PACKET instead"
                    );
                }
            }
        }
    }
    let result = stateless::blast(iface, frames, bounds)?;
    Ok((Generator::AfPacket, result))
}

/// [`blast_with`] the [`Generator::preferred`] one: live XDP frames unless the
/// kernel refuses them or [`NO_LIVE_FRAMES_ENV`] is `1`.
pub fn blast_fastest(
    iface: &str,
    target: Target,
    frames: &[Vec<u8>],
    bounds: Bounds,
) -> std::io::Result<(Generator, FloodResult)> {
    blast_with(Generator::preferred(), iface, target, frames, bounds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_errno_is_named_with_its_text() {
        let e = std::io::Error::from_raw_os_error(libc::EPERM);
        assert_eq!(errno_name(&e), "EPERM: Operation not permitted");
        let e = std::io::Error::from_raw_os_error(524);
        assert!(
            errno_name(&e).starts_with("ENOTSUPP: "),
            "{}",
            errno_name(&e)
        );
    }
}
