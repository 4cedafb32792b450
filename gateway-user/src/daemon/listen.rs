//! The terminator's listening sockets.

use std::{net::SocketAddr, time::Duration};

use tokio::net::TcpListener;

/// A TLS listener; IPv6 ones are IPv6-only, so `0.0.0.0` and `[::]` can both be
/// listed. Connections are handed to userspace only once the client has sent
/// data (`TCP_DEFER_ACCEPT`, up to `defer`): a ClientHello the XDP filter turns
/// into a reset tears its connection down in the kernel before the terminator
/// ever accepts it, and connections that never speak cost no task until then.
pub(super) fn bind(addr: SocketAddr, defer: Duration) -> anyhow::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    use std::os::fd::AsRawFd;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let secs = libc::c_int::try_from(defer.as_millis().div_ceil(1000).max(1)).unwrap_or(10);
    // SAFETY: setsockopt on a socket we own, with an int option value of the right size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        log::warn!(
            "TCP_DEFER_ACCEPT on {addr}: {}; connections are accepted before they speak",
            std::io::Error::last_os_error()
        );
    }
    socket.listen(1024)?;
    Ok(TcpListener::from_std(socket.into())?)
}
