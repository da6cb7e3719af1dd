//! Socket helpers for proving where a connection went: listeners that report the original
//! destination of what they accept, and bounded waits (poll), never sleeps.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// How long a test waits for traffic that should arrive.
pub const ARRIVAL: Duration = Duration::from_secs(5);

/// Waits up to `timeout` for a connection on `listener`; returns it with the address the
/// client originally dialled (via SO_ORIGINAL_DST, as the proxy reads it).
pub fn accept_within(
    listener: &TcpListener,
    timeout: Duration,
) -> io::Result<Option<(TcpStream, SocketAddr)>> {
    if !readable_within(listener, timeout)? {
        return Ok(None);
    }
    let (stream, _) = listener.accept()?;
    stream.set_nonblocking(false)?;
    let original = skiff_proxy::orig_dst::original_dst_of(&stream).map_err(io::Error::other)?;
    Ok(Some((stream, original)))
}

/// True if `listener` has a connection waiting right now. Used after the traffic under test
/// has provably gone elsewhere, so "nothing here" is not a race.
pub fn has_pending(listener: &TcpListener) -> io::Result<bool> {
    readable_within(listener, Duration::ZERO)
}

fn readable_within(fd: &impl AsFd, timeout: Duration) -> io::Result<bool> {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    Ok(poll(&mut fds, PollTimeout::from(ms)).map_err(io::Error::from)? > 0)
}

/// Binds a listener (non-blocking accept; use [`accept_within`]).
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Connects and exchanges one line, so the caller knows the far end really answered.
pub fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, ARRIVAL)?;
    stream.set_read_timeout(Some(ARRIVAL))?;
    Ok(stream)
}

/// Accepts one connection on `listener` and echoes what it reads back, in a thread; returns
/// the address the connection arrived at. (No SO_ORIGINAL_DST here: a namespace without NAT
/// rules may track no connection at all.)
pub fn echo_once(listener: TcpListener) -> std::thread::JoinHandle<io::Result<SocketAddr>> {
    std::thread::spawn(move || {
        if !readable_within(&listener, ARRIVAL)? {
            return Err(io::Error::other("no connection arrived"));
        }
        let (mut stream, _) = listener.accept()?;
        stream.set_nonblocking(false)?;
        let mut buf = [0u8; 64];
        let n = stream.read(&mut buf)?;
        stream.write_all(&buf[..n])?;
        stream.local_addr()
    })
}

/// Sends `message` and reads the echo.
pub fn roundtrip(stream: &mut TcpStream, message: &[u8]) -> io::Result<Vec<u8>> {
    stream.write_all(message)?;
    let mut buf = vec![0u8; message.len()];
    stream.read_exact(&mut buf)?;
    Ok(buf)
}

/// Waits up to `timeout` for a datagram on `socket`.
pub fn recv_within(socket: &UdpSocket, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
    if !readable_within(socket, timeout)? {
        return Ok(None);
    }
    let mut buf = [0u8; 512];
    let (n, _) = socket.recv_from(&mut buf)?;
    Ok(Some(buf[..n].to_vec()))
}
