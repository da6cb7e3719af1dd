//! L4 forwarding: connecting upstream within a budget (trying the next endpoint when one is
//! unreachable) and copying bytes both ways with half-close and an idle timeout.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::balance;
use crate::snapshot::{Cluster, Discovery};

/// Why no upstream connection could be made; each maps to an error-counter reason.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cluster {0} has no endpoints")]
    NoEndpoint(String),
    #[error("cluster {0} is a black hole")]
    BlackHole(String),
    #[error("connecting to {addr} timed out")]
    Timeout { addr: SocketAddr },
    /// The endpoint must be reached over TLS (istiod's auto-mTLS), which Skiff does not
    /// originate yet: refused rather than sent in plaintext.
    #[error("cluster {cluster} requires TLS to {addr}, which Skiff does not originate yet")]
    TlsRequired { cluster: String, addr: SocketAddr },
    #[error("connecting to {addr}: {source}")]
    Failed {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

impl ConnectError {
    pub fn reason(&self) -> &'static str {
        match self {
            ConnectError::NoEndpoint(_) => "no_endpoint",
            ConnectError::BlackHole(_) => "blackhole",
            ConnectError::Timeout { .. } => "connect_timeout",
            ConnectError::TlsRequired { .. } => "tls_unsupported",
            ConnectError::Failed { source, .. }
                if source.kind() == io::ErrorKind::ConnectionRefused =>
            {
                "connect_refused"
            }
            ConnectError::Failed { .. } => "connect_error",
        }
    }
}

/// An open upstream connection and the endpoint it belongs to (whose active count it holds
/// until dropped).
pub struct Upstream {
    pub stream: TcpStream,
    pub addr: SocketAddr,
    _active: Option<ActiveGuard>,
}

struct ActiveGuard {
    cluster: Arc<Cluster>,
    index: usize,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.cluster.endpoints[self.index]
            .active
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Connects to `cluster` for a connection whose original destination is `original`, trying
/// endpoints in balancer order until one answers or the cluster's connect timeout is spent.
pub async fn connect(
    cluster: &Arc<Cluster>,
    original: SocketAddr,
) -> Result<Upstream, ConnectError> {
    let deadline = Instant::now() + cluster.connect_timeout;
    match cluster.discovery {
        Discovery::BlackHole => Err(ConnectError::BlackHole(cluster.name.clone())),
        Discovery::OriginalDst => {
            if cluster.needs_tls(None) {
                return Err(ConnectError::TlsRequired {
                    cluster: cluster.name.clone(),
                    addr: original,
                });
            }
            let stream = dial(original, &cluster.upstream_bind, deadline).await?;
            Ok(Upstream {
                stream,
                addr: original,
                _active: None,
            })
        }
        Discovery::Static => {
            let order = balance::attempt_order(cluster);
            if order.is_empty() {
                return Err(ConnectError::NoEndpoint(cluster.name.clone()));
            }
            let mut last = None;
            for index in order {
                let endpoint = &cluster.endpoints[index];
                if cluster.needs_tls(Some(index)) {
                    last = Some(ConnectError::TlsRequired {
                        cluster: cluster.name.clone(),
                        addr: endpoint.address,
                    });
                    continue;
                }
                endpoint.active.fetch_add(1, Ordering::Relaxed);
                let guard = ActiveGuard {
                    cluster: cluster.clone(),
                    index,
                };
                match dial(endpoint.address, &cluster.upstream_bind, deadline).await {
                    Ok(stream) => {
                        return Ok(Upstream {
                            stream,
                            addr: endpoint.address,
                            _active: Some(guard),
                        });
                    }
                    Err(err) => {
                        tracing::debug!(cluster = %cluster.name, "{err}; trying the next endpoint");
                        let timed_out = matches!(err, ConnectError::Timeout { .. });
                        last = Some(err);
                        if timed_out || Instant::now() >= deadline {
                            break;
                        }
                    }
                }
            }
            Err(last.unwrap_or_else(|| ConnectError::NoEndpoint(cluster.name.clone())))
        }
    }
}

/// One TCP connect, from `bind` when given (127.0.0.6 for inbound passthrough; its IPv6
/// counterpart ::6 for IPv6 destinations).
pub(crate) async fn dial(
    addr: SocketAddr,
    bind: &[IpAddr],
    deadline: Instant,
) -> Result<TcpStream, ConnectError> {
    let failed = |source| ConnectError::Failed { addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(failed)?;
    if let Some(ip) = bind.iter().find(|ip| ip.is_ipv4() == addr.is_ipv4()) {
        socket.bind(SocketAddr::new(*ip, 0)).map_err(failed)?;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let stream = tokio::time::timeout(left, socket.connect(addr))
        .await
        .map_err(|_| ConnectError::Timeout { addr })?
        .map_err(failed)?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// How a forwarded connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    /// Bytes from the downstream client to upstream.
    pub sent: u64,
    /// Bytes from upstream back to the client.
    pub received: u64,
    pub end: End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both sides finished (each direction saw EOF and was shut down).
    Closed,
    IdleTimeout,
    /// A read or write failed (reset, broken pipe).
    Error,
}

/// The proxy's own copy buffer, per direction. A read that fills it marks the stream as a
/// bulk transfer, which then moves inside the kernel (see [`Relay`]).
const BUFFER: usize = 16 * 1024;

/// A connection the relay drives both ways at once, as two halves.
pub trait Relay {
    type Read<'a>: AsyncRead + Unpin + Socket
    where
        Self: 'a;
    type Write<'a>: AsyncWrite + Unpin + Socket
    where
        Self: 'a;
    fn halves(&mut self) -> (Self::Read<'_>, Self::Write<'_>);
}

/// The TCP socket under a half, when there is one: between two sockets, bulk bytes are
/// spliced rather than copied through the proxy.
pub trait Socket {
    fn socket(&self) -> Option<&TcpStream>;
}

impl Relay for TcpStream {
    type Read<'a> = tokio::net::tcp::ReadHalf<'a>;
    type Write<'a> = tokio::net::tcp::WriteHalf<'a>;
    fn halves(&mut self) -> (Self::Read<'_>, Self::Write<'_>) {
        self.split()
    }
}

impl Socket for tokio::net::tcp::ReadHalf<'_> {
    fn socket(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

impl Socket for tokio::net::tcp::WriteHalf<'_> {
    fn socket(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

/// Any other stream (an upgraded HTTP connection, an in-memory pipe in tests): copied
/// through the proxy's buffer.
pub struct Buffered<T>(pub T);

impl<T: AsyncRead + AsyncWrite + Unpin> Relay for Buffered<T> {
    type Read<'a>
        = tokio::io::ReadHalf<&'a mut T>
    where
        T: 'a;
    type Write<'a>
        = tokio::io::WriteHalf<&'a mut T>
    where
        T: 'a;
    fn halves(&mut self) -> (Self::Read<'_>, Self::Write<'_>) {
        tokio::io::split(&mut self.0)
    }
}

impl<T> Socket for tokio::io::ReadHalf<T> {
    fn socket(&self) -> Option<&TcpStream> {
        None
    }
}

impl<T> Socket for tokio::io::WriteHalf<T> {
    fn socket(&self) -> Option<&TcpStream> {
        None
    }
}

/// Copies `first` (bytes already read from the client during detection) and then both
/// directions until both have finished. EOF in one direction shuts down the write side of
/// the other connection (half-close), so request/response protocols that close their
/// sending side keep receiving. `on_bytes` learns each chunk as it passes, for metrics.
pub async fn forward<D: Relay, U: Relay>(
    mut downstream: D,
    mut upstream: U,
    first: &[u8],
    idle_timeout: Duration,
    on_bytes: impl Fn(Direction, u64) + Send + Sync,
) -> Transfer {
    let (mut down_r, mut down_w) = downstream.halves();
    let (mut up_r, mut up_w) = upstream.halves();
    let activity = AtomicU64::new(0);
    // tokio's clock, so the idle timer and the activity stamps agree (also under test time).
    let started = tokio::time::Instant::now();
    let touch = || activity.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
    let sent = AtomicU64::new(first.len() as u64);
    let received = AtomicU64::new(0);
    let totals = |end| Transfer {
        sent: sent.load(Ordering::Relaxed),
        received: received.load(Ordering::Relaxed),
        end,
    };

    let upstream_first = async {
        if !first.is_empty() {
            up_w.write_all(first).await?;
            on_bytes(Direction::Upstream, first.len() as u64);
        }
        Ok::<_, io::Error>(())
    };
    if upstream_first.await.is_err() {
        return totals(End::Error);
    }
    let client_to_server = async {
        let ok = pump(&mut down_r, &mut up_w, &touch, &sent, |n| {
            on_bytes(Direction::Upstream, n)
        })
        .await;
        let _ = up_w.shutdown().await;
        ok
    };
    let server_to_client = async {
        let ok = pump(&mut up_r, &mut down_w, &touch, &received, |n| {
            on_bytes(Direction::Downstream, n)
        })
        .await;
        let _ = down_w.shutdown().await;
        ok
    };
    let idle = async {
        loop {
            let last = Duration::from_millis(activity.load(Ordering::Relaxed));
            let quiet_until = started + last + idle_timeout;
            if tokio::time::Instant::now() >= quiet_until {
                return;
            }
            tokio::time::sleep_until(quiet_until).await;
        }
    };
    let both = async { tokio::join!(client_to_server, server_to_client) };
    let end = tokio::select! {
        (up_ok, down_ok) = both => if up_ok && down_ok { End::Closed } else { End::Error },
        _ = idle => End::IdleTimeout,
    };
    totals(end)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to upstream.
    Upstream,
    /// Upstream to client.
    Downstream,
}

/// Copies until EOF, adding to `total`; returns whether it ended cleanly. Small exchanges
/// go through the proxy's buffer; once a read fills it and both ends are sockets, the rest
/// of the stream is spliced (a pipe costs two descriptors, so only bulk streams get one).
async fn pump<R, W>(
    from: &mut R,
    to: &mut W,
    touch: &impl Fn(),
    total: &AtomicU64,
    on: impl Fn(u64),
) -> bool
where
    R: AsyncRead + Unpin + Socket,
    W: AsyncWrite + Unpin + Socket,
{
    let mut buf = vec![0u8; BUFFER];
    let count = |n: usize| {
        total.fetch_add(n as u64, Ordering::Relaxed);
        on(n as u64);
    };
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => return true,
            Ok(n) => n,
            Err(_) => return false,
        };
        touch();
        if to.write_all(&buf[..n]).await.is_err() {
            return false;
        }
        count(n);
        if n < BUFFER {
            continue;
        }
        let (Some(source), Some(sink)) = (from.socket(), to.socket()) else {
            continue;
        };
        let Ok(pipe) = crate::splice::Pipe::new() else {
            continue;
        };
        drop(buf);
        loop {
            match pipe.relay(source, sink).await {
                Ok(0) => return true,
                Ok(n) => {
                    touch();
                    count(n);
                }
                Err(_) => return false,
            }
        }
    }
}

#[cfg(test)]
#[path = "tcp_tests.rs"]
mod tests;
