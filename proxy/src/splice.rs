//! Moving a TCP stream's bytes to another socket inside the kernel (splice(2) through a
//! pipe), so bulk transfers are not copied into the proxy and back out: the pages the
//! receiving socket holds are handed to the sending one.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// How much one splice may move. A pipe larger than the default 64 KiB lets one call carry
/// what a fast sender has queued (fewer wake-ups per megabyte); when the kernel refuses the
/// size (a user over `pipe-user-pages-soft`), the default pipe still works.
const PIPE_BYTES: usize = 256 * 1024;

/// A pipe between two sockets, with the bytes it holds.
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    pub fn new() -> io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        let capacity = match fcntl(&write, FcntlArg::F_SETPIPE_SZ(PIPE_BYTES as i32)) {
            Ok(size) => size as usize,
            Err(_) => 64 * 1024,
        };
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }

    /// Moves what `from` has to `to` and returns the byte count; 0 is EOF from `from`.
    /// Waits for `from` to be readable and for `to` to take everything moved, so the pipe
    /// is empty again when this returns.
    pub async fn relay(&self, from: &TcpStream, to: &TcpStream) -> io::Result<usize> {
        let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
        let moved = loop {
            from.readable().await?;
            match from.try_io(Interest::READABLE, || {
                splice(from.as_fd(), None, &self.write, None, self.capacity, flags)
                    .map_err(errno_to_io)
            }) {
                Ok(n) => break n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => return Err(err),
            }
        };
        let mut left = moved;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(&self.read, None, to.as_fd(), None, left, flags).map_err(errno_to_io)
            }) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => left -= n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(err) => return Err(err),
            }
        }
        Ok(moved)
    }
}

fn errno_to_io(errno: Errno) -> io::Error {
    io::Error::from_raw_os_error(errno as i32)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected pair of loopback sockets.
    pub(crate) async fn socket_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn bytes_cross_from_one_socket_to_another_until_eof() {
        let (mut sender, from) = socket_pair().await;
        let (to, mut receiver) = socket_pair().await;
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let writer = {
            let data = data.clone();
            tokio::spawn(async move {
                sender.write_all(&data).await.unwrap();
                sender.shutdown().await.unwrap();
            })
        };
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            receiver.read_to_end(&mut got).await.unwrap();
            got
        });
        let pipe = Pipe::new().unwrap();
        let mut total = 0;
        loop {
            let n = pipe.relay(&from, &to).await.unwrap();
            if n == 0 {
                break;
            }
            assert!(n <= pipe.capacity);
            total += n;
        }
        drop(to);
        writer.await.unwrap();
        assert_eq!(total, data.len());
        assert!(
            reader.await.unwrap() == data,
            "the bytes arrive whole and in order"
        );
    }

    #[tokio::test]
    async fn a_reset_sender_is_an_error_not_eof() {
        let (sender, from) = socket_pair().await;
        let (to, _receiver) = socket_pair().await;
        // A zero linger makes the close a RST instead of a FIN.
        sender.set_zero_linger().unwrap();
        drop(sender);
        let result = Pipe::new().unwrap().relay(&from, &to).await;
        assert!(result.is_err(), "got {result:?}");
    }
}
