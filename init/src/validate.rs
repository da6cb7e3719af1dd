//! The redirect self-test (`--run-validation`): prove that the rules really send the proxy's
//! own loopback connections to the inbound capture port, before the pod starts.
//!
//! Listeners take the capture ports on loopback; a client dials the passthrough address
//! (127.0.0.6 / ::6) on the probe port as the proxy user would, once a second. The rule
//! "lo, proxy uid, not localhost → inbound redirect" must turn that into a connection on a
//! listener whose original destination is the probe port.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    self, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, sockopt,
};

use crate::config::Config;
use crate::error::InitError;
use crate::plan::Family;

const PASSTHROUGH_V4: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
const PASSTHROUGH_V6: Ipv6Addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);
const ATTEMPT_EVERY: Duration = Duration::from_secs(1);

/// Runs the self-test for each family; the first failure is returned.
pub fn run(cfg: &Config, families: &[Family]) -> Result<(), InitError> {
    for family in families {
        let (local, target) = match family {
            Family::V4 => (IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V4(PASSTHROUGH_V4)),
            Family::V6 => (IpAddr::V6(Ipv6Addr::LOCALHOST), IpAddr::V6(PASSTHROUGH_V6)),
        };
        let probe = SocketAddr::new(target, cfg.probe_port);
        let fail = |reason: String| InitError::Validation {
            probe: probe.to_string(),
            reason,
        };
        let listeners = [cfg.inbound_capture_port, cfg.proxy_port]
            .into_iter()
            .map(|port| listen(SocketAddr::new(local, port)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(format!("cannot listen on the capture ports: {e}")))?;
        let owner = proxy_owner(cfg);
        let deadline = Instant::now() + cfg.probe_timeout;
        let mut last_error = "timed out".to_string();
        loop {
            let attempt_end = (Instant::now() + ATTEMPT_EVERY).min(deadline);
            if let Err(e) = dial_as(
                owner,
                SocketAddr::new(local, 0),
                probe,
                attempt_end - Instant::now(),
            ) {
                last_error = format!("dialing {probe}: {e}");
            }
            match accept_until(&listeners, attempt_end)? {
                Some(port) if port == cfg.probe_port => {
                    tracing::info!(%probe, "iptables validation passed");
                    break;
                }
                Some(port) => {
                    last_error = format!(
                        "a connection arrived for original port {port}, not {}",
                        cfg.probe_port
                    )
                }
                None => {}
            }
            if Instant::now() >= deadline {
                return Err(fail(last_error));
            }
        }
    }
    Ok(())
}

/// The uid/gid to dial as: the proxy's, when running as root and the ids are numeric
/// (a root-owned socket is deliberately exempt from the redirect).
fn proxy_owner(cfg: &Config) -> Option<(u32, u32)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let uid = cfg.proxy_uids.first()?.parse().ok()?;
    let gid = cfg.proxy_gids.first()?.parse().ok()?;
    Some((uid, gid))
}

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let fd = new_socket(&addr)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::setsockopt(&fd, sockopt::ReusePort, &true)?;
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(addr),
    )?;
    socket::listen(&fd, Backlog::new(16)?)?;
    let listener = TcpListener::from(fd);
    listener.set_nonblocking(true)?;
    Ok(listener)
}

fn new_socket(addr: &SocketAddr) -> nix::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
}

/// Connects from `local` to `target` in a thread that has switched to `owner`. Linux keeps
/// credentials per thread at the syscall level, and the socket records them at creation,
/// so the owner match sees the proxy's ids while the rest of this process stays root.
fn dial_as(
    owner: Option<(u32, u32)>,
    local: SocketAddr,
    target: SocketAddr,
    timeout: Duration,
) -> std::io::Result<()> {
    std::thread::spawn(move || -> std::io::Result<()> {
        if let Some((uid, gid)) = owner {
            // SAFETY: raw setresgid/setresuid only change this thread's credentials; the
            // thread ends right after the dial.
            let rc = unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let rc = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let fd = new_socket(&local)?;
        socket::bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &SockaddrStorage::from(local),
        )?;
        let timeout = nix::sys::time::TimeVal::new(
            timeout.as_secs() as i64,
            timeout.subsec_micros().max(1000) as i64,
        );
        socket::setsockopt(&fd, sockopt::SendTimeout, &timeout)?;
        socket::connect(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &SockaddrStorage::from(target),
        )?;
        drop(TcpStream::from(fd));
        Ok(())
    })
    .join()
    .unwrap_or_else(|_| Err(std::io::Error::other("dialing thread panicked")))
}

/// Waits until `until` for a connection on any listener; returns its original port.
fn accept_until(listeners: &[TcpListener], until: Instant) -> Result<Option<u16>, InitError> {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let mut fds: Vec<PollFd> = listeners
            .iter()
            .map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN))
            .collect();
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let ready = poll(&mut fds, PollTimeout::from(ms)).map_err(std::io::Error::from)?;
        if ready == 0 {
            return Ok(None);
        }
        for listener in listeners {
            if let Ok((stream, _)) = listener.accept() {
                return Ok(original_port(&stream));
            }
        }
        if Instant::now() >= until {
            return Ok(None);
        }
    }
}

/// The destination port the client dialled, before REDIRECT rewrote it.
fn original_port(stream: &TcpStream) -> Option<u16> {
    match stream.local_addr().ok()? {
        SocketAddr::V4(_) => socket::getsockopt(stream, sockopt::OriginalDst)
            .ok()
            .map(|sin| u16::from_be(sin.sin_port)),
        SocketAddr::V6(_) => socket::getsockopt(stream, sockopt::Ip6tOriginalDst)
            .ok()
            .map(|sin6| u16::from_be(sin6.sin6_port)),
    }
}
