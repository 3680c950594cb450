//! Sockets that share one local port: the rendezvous connection, the listener and every punch
//! attempt are bound to the same port with `SO_REUSEADDR` + `SO_REUSEPORT` (socket2), then
//! handed to tokio.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpSocket};

fn reusable(local: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(local), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&local.into())?;
    Ok(socket)
}

/// A TCP socket bound to `local` (port 0: the kernel picks one), ready to connect.
///
/// # Errors
/// If the socket cannot be created or bound.
pub fn bound_socket(local: SocketAddr) -> io::Result<TcpSocket> {
    let socket = reusable(local)?;
    let std_stream: std::net::TcpStream = socket.into();
    Ok(TcpSocket::from_std_stream(std_stream))
}

/// A socket for one punch attempt: like [`bound_socket`], but closing it before it connects
/// aborts it at once (`SO_LINGER` 0). Without that, an attempt abandoned in the middle of a
/// simultaneous open lingers in FIN-WAIT with the pair's 4-tuple, and every later attempt of the
/// pair fails with "cannot assign requested address" until the kernel lets it go.
///
/// # Errors
/// If the socket cannot be created, configured or bound.
pub fn punch_socket(local: SocketAddr) -> io::Result<TcpSocket> {
    let socket = bound_socket(local)?;
    socket2::SockRef::from(&socket).set_linger(Some(std::time::Duration::ZERO))?;
    Ok(socket)
}

/// Turns a connected punch socket back to an orderly close (FIN, not reset).
///
/// # Errors
/// If the option cannot be set.
pub fn orderly_close(stream: &tokio::net::TcpStream) -> io::Result<()> {
    socket2::SockRef::from(stream).set_linger(None)
}

/// A listener on `local` that shares the port with connecting sockets.
///
/// # Errors
/// If the socket cannot be created, bound or put in listening state.
pub fn shared_listener(local: SocketAddr) -> io::Result<TcpListener> {
    let socket = reusable(local)?;
    socket.listen(1024)?;
    let std_listener: std::net::TcpListener = socket.into();
    TcpListener::from_std(std_listener)
}
