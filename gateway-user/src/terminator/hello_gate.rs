//! The hello gate: a connection gets its TLS state only once its whole
//! ClientHello has arrived.
//!
//! A hello split over TCP segments is decided by the XDP filter when its last
//! segment arrives; until then the first segments reach the socket. Without
//! the gate the terminator would build its BoringSSL state on the first
//! segment and tear it down when the filter resets the connection, which made
//! a flood of split, sub-minimum hellos cost userspace about as much as with
//! no filter at all. With it, such a connection costs an accept and a peek.
//!
//! The gate peeks at the receive queue (nothing is consumed, so BoringSSL then
//! reads the same bytes) and walks the TLS records until the handshake
//! message's length is covered. Anything that is not a TLS handshake record, or
//! a hello larger than the peek buffer, passes at once: the handshake itself
//! then refuses or serves it, as without the gate.

use std::{io, os::fd::AsRawFd};

use tokio::{io::Interest, net::TcpStream};

/// The bytes the gate peeks at most: a browser's hello with a post-quantum key
/// share is under 2 KiB; larger ones pass the gate unchecked.
pub const PEEK: usize = 4096;

/// What the bytes at the start of a connection are, so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hello {
    /// The handshake message is complete.
    Complete,
    /// A TLS handshake record whose message is still arriving.
    Incomplete,
    /// Not a TLS handshake (or unreadable as one): the gate cannot judge.
    Other,
}

/// Where `bytes` (the start of a connection) stand: records are walked until
/// their payload covers the first handshake message, its 4-byte header and body.
pub fn hello_state(bytes: &[u8]) -> Hello {
    let mut header = [0u8; 4];
    let (mut have, mut pos, mut payload) = (0usize, 0usize, 0usize);
    loop {
        match bytes.get(pos) {
            None => return Hello::Incomplete,
            Some(22) => {}
            Some(_) => return Hello::Other, // judged from its first byte
        }
        let Some(record) = bytes.get(pos..pos + 5) else {
            return Hello::Incomplete;
        };
        let len = usize::from(u16::from_be_bytes([record[3], record[4]]));
        if record[0] != 22 || record[1] != 3 || len == 0 || len > 16_384 {
            return Hello::Other;
        }
        let Some(body) = bytes.get(pos + 5..pos + 5 + len) else {
            return Hello::Incomplete;
        };
        for &b in body.iter().take(4 - have) {
            header[have] = b;
            have += 1;
        }
        payload += len;
        pos += 5 + len;
        if have == 4 {
            if header[0] != 1 {
                return Hello::Other; // not a ClientHello
            }
            let body_len =
                usize::from(header[1]) << 16 | usize::from(header[2]) << 8 | usize::from(header[3]);
            if payload >= 4 + body_len {
                return Hello::Complete;
            }
        }
    }
}

/// Waits until the connection's first handshake message has wholly arrived or
/// the bytes cannot be judged (`Ok(true)`), or the peer closes or resets the
/// connection first (`Ok(false)`; the XDP filter's reset of a refused split
/// hello among them). Errors are the socket's.
pub async fn wait_for_hello(tcp: &TcpStream) -> io::Result<bool> {
    loop {
        let ready = tcp.ready(Interest::READABLE).await?;
        let closed = ready.is_read_closed() || ready.is_error();
        // The peek runs inside try_io, so that a WouldBlock clears only the
        // readiness it saw: a segment arriving meanwhile wakes the next wait.
        let outcome = tcp.try_io(Interest::READABLE, || {
            let mut buf = [0u8; PEEK];
            let n = recv(tcp, &mut buf, libc::MSG_PEEK)?;
            match (n, hello_state(&buf[..n])) {
                (0, _) => Ok(false),
                (_, Hello::Incomplete) if closed => Ok(false),
                (n, Hello::Incomplete) if n < PEEK => Err(io::ErrorKind::WouldBlock.into()),
                _ => Ok(true),
            }
        });
        match outcome {
            Ok(whole) => return Ok(whole),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// Reads and drops what the peer sent so far (a hello that never completed),
/// so that closing the connection ends it with a FIN, not the reset that
/// unread data would cause.
pub fn discard_queued(tcp: &TcpStream) {
    let mut buf = [0u8; PEEK];
    // The socket is read directly: tokio's cached readiness says "not ready"
    // after the gate's last peek, whatever is queued.
    for _ in 0..16 {
        if !matches!(recv(tcp, &mut buf, 0), Ok(n) if n > 0) {
            break;
        }
    }
}

/// `recv(2)` without blocking, with `flags` besides.
fn recv(tcp: &TcpStream, buf: &mut [u8], flags: i32) -> io::Result<usize> {
    // SAFETY: a valid, writable buffer of the length passed.
    let n = unsafe {
        libc::recv(
            tcp.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            flags | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hello::{ClientHello, records};
    use gateway_common::version;

    #[test]
    fn a_hello_is_complete_only_with_its_last_byte() {
        let record = ClientHello::modern("api.example.com").record();
        assert_eq!(hello_state(&record), Hello::Complete);
        for cut in [0, 1, 4, 5, 6, 9, record.len() / 2, record.len() - 1] {
            assert_eq!(
                hello_state(&record[..cut]),
                Hello::Incomplete,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn a_hello_cut_into_records_is_complete_when_they_cover_it() {
        let message = ClientHello::modern("api.example.com").message();
        for size in [1, 3, 4, 5, 100] {
            let bytes = records(&message, version::TLS1_0, size);
            assert_eq!(hello_state(&bytes), Hello::Complete, "records of {size}");
            let last = bytes.len() - 1;
            assert_eq!(
                hello_state(&bytes[..last]),
                Hello::Incomplete,
                "records of {size}"
            );
        }
    }

    #[test]
    fn what_is_not_a_tls_hello_passes_at_once() {
        assert_eq!(hello_state(b"GET / HTTP/1.1\r\n"), Hello::Other);
        assert_eq!(
            hello_state(b"G"),
            Hello::Other,
            "one byte is enough to tell"
        );
        assert_eq!(
            hello_state(&crate::hello::sslv2_hello(0x0301)),
            Hello::Other
        );
        assert_eq!(
            hello_state(&[22, 3, 1, 0, 0]),
            Hello::Other,
            "an empty record"
        );
        assert_eq!(
            hello_state(&[22, 3, 1, 0x48, 1]),
            Hello::Other,
            "a record over 16 KiB"
        );
        assert_eq!(
            hello_state(&[22, 3, 1, 0, 4, 2, 0, 0, 0]),
            Hello::Other,
            "a ServerHello"
        );
    }
}
