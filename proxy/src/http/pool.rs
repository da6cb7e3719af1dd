//! Upstream HTTP connection pools, written over hyper's connection-level client rather than
//! hyper-util's legacy `Client`: that one derives the connection from the URI and, for
//! HTTP/2, sends the endpoint address as `:authority`, while a mesh proxy must pick the
//! endpoint itself and keep the client's Host.
//!
//! HTTP/1.1 connections carry one request at a time and wait, once the response has been
//! read, in a per-endpoint idle list; HTTP/2 keeps one connection per endpoint that every
//! request shares. Both close after `idle_timeout` unused, which is shorter than common
//! server keep-alives so that the proxy, not the server, ends an idle connection.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::client::conn::{http1, http2};
use hyper::header::HOST;
use hyper::http::uri::{Authority, PathAndQuery, Scheme, Uri};
use hyper::{Method, Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::ProxyBody;

#[path = "pool_body.rs"]
mod body;
use crate::tcp::{self, ConnectError};
use body::Park;
pub use body::UpstreamBody;

/// Beyond this many idle HTTP/1.1 connections to one endpoint, the oldest are closed: a
/// burst should not leave hundreds of sockets open on both sides afterwards.
const MAX_IDLE_PER_ENDPOINT: usize = 256;
/// Bounds of the reaper's period, which follows the smallest idle timeout seen.
const MIN_TICK: Duration = Duration::from_millis(50);
const MAX_TICK: Duration = Duration::from_secs(1);
/// How many connections one request may try when they hand it back unsent (closed under
/// it); bounded so that an endpoint that accepts and drops every connection cannot loop us.
const MAX_ATTEMPTS: usize = 3;
/// Stands in for deadlines too far away to represent (a configured `Duration::MAX`).
const FAR: Duration = Duration::from_secs(86_400 * 365 * 30);

/// The upstream connection pools of the process. They outlive configuration reloads, so
/// that a new snapshot keeps the warm connections of the old one.
pub struct Pools {
    me: Weak<Pools>,
    /// Copy-on-write: read without locking on every request, replaced when an endpoint is
    /// first used or when the reaper drops empty ones.
    endpoints: ArcSwap<HashMap<Key, Arc<Endpoint>>>,
    /// Serialises replacements of `endpoints` so that none is lost.
    insert: Mutex<()>,
    reaping: AtomicBool,
    /// The smallest idle timeout seen, in milliseconds: the reaper's period.
    tick_ms: AtomicU64,
    next_id: AtomicU64,
}

/// Where and how to send one request.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `HTTP_2` for h2c with prior knowledge; anything else is HTTP/1.1.
    pub version: Version,
    /// Source address to bind, already chosen for the address family.
    pub bind: Option<IpAddr>,
    pub connect_timeout: Duration,
    /// A pooled connection unused this long is closed and never reused.
    pub idle_timeout: Duration,
}

#[derive(Debug)]
pub struct Sent {
    pub response: Response<UpstreamBody>,
    /// Whether the request went over a connection that had served requests before.
    pub reused: bool,
    /// The upstream connection's local address (the access log's UPSTREAM_LOCAL_ADDRESS).
    pub local: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made (Envoy's UF).
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The connection or stream failed after taking the request and before the response
    /// head (Envoy's UC / UR). `refused_stream`: an HTTP/2 REFUSED_STREAM reset, so the
    /// server did not process it and a retry is safe. `reused`: on a pooled connection.
    #[error("upstream reset before the response head: {source}")]
    Reset {
        refused_stream: bool,
        reused: bool,
        #[source]
        source: hyper::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    addr: SocketAddr,
    h2: bool,
    bind: Option<IpAddr>,
}

impl Key {
    fn of(target: &Target) -> Key {
        Key {
            addr: target.addr,
            h2: target.version == Version::HTTP_2,
            bind: target.bind,
        }
    }
}

#[derive(Default)]
struct Endpoint {
    /// HTTP/1.1 connections ready for a request, newest last (reused first: the warmest
    /// socket, and the oldest ones age out).
    idle: Mutex<Vec<Idle>>,
    /// The HTTP/2 connection all requests share.
    shared: Mutex<Option<Shared>>,
    /// Held while dialling HTTP/2, so that a burst of first requests makes one connection.
    dialing: tokio::sync::Mutex<()>,
    /// HTTP/2 dial attempts finished, and how the last one failed: requests that queued
    /// behind a failed dial share its error instead of each waiting a connect timeout.
    dials: AtomicU64,
    failure: Mutex<Option<ConnectError>>,
}

/// An HTTP/1.1 connection; dropping it closes the socket, even with a request in flight,
/// so that the server sees a cancelled request end.
struct H1 {
    sender: http1::SendRequest<ProxyBody>,
    task: Task,
    local: Option<SocketAddr>,
}

struct Idle {
    conn: H1,
    expires: Instant,
}

#[derive(Clone)]
struct H2 {
    id: u64,
    sender: http2::SendRequest<ProxyBody>,
    local: Option<SocketAddr>,
}

struct Shared {
    conn: H2,
    expires: Instant,
}

enum Conn {
    H1(H1),
    H2(H2),
}

/// Aborts a connection task when dropped, unless disarmed.
struct Task(Option<AbortHandle>);

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}

impl Pools {
    pub fn new() -> Arc<Pools> {
        Arc::new_cyclic(|me| Pools {
            me: me.clone(),
            endpoints: ArcSwap::from_pointee(HashMap::new()),
            insert: Mutex::new(()),
            reaping: AtomicBool::new(false),
            tick_ms: AtomicU64::new(u64::MAX),
            next_id: AtomicU64::new(0),
        })
    }

    /// Sends `request` over a pooled connection to `target`, dialling when none is usable.
    /// The URI may be origin-form or absolute; headers are sent as given.
    pub async fn send(
        &self,
        target: &Target,
        mut request: Request<ProxyBody>,
    ) -> Result<Sent, SendError> {
        let key = Key::of(target);
        if key.h2 {
            *request.version_mut() = Version::HTTP_2;
            absolute_uri(&mut request);
        } else {
            h1_version(&mut request);
        }
        let millis = u64::try_from(target.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        // Loads first: a read-modify-write on every request would bounce the cache line.
        if millis < self.tick_ms.load(Ordering::Relaxed) {
            self.tick_ms.fetch_min(millis, Ordering::Relaxed);
        }
        let endpoint = self.endpoint(key);
        self.start_reaper();
        let mut attempt = 1;
        loop {
            // The last attempt dials: pooled connections kept handing the request back.
            let (mut conn, reused) = self
                .connection(&endpoint, target, attempt == MAX_ATTEMPTS)
                .await?;
            let sent = match &mut conn {
                Conn::H1(h1) => h1.sender.try_send_request(request).await,
                Conn::H2(h2) => h2.sender.try_send_request(request).await,
            };
            let mut err = match sent {
                Ok(response) => {
                    let (local, park) = match conn {
                        Conn::H1(conn) => {
                            let local = conn.local;
                            let park = Park {
                                pools: self.me.clone(),
                                key,
                                conn,
                                idle_timeout: target.idle_timeout,
                            };
                            (local, Some(park))
                        }
                        Conn::H2(h2) => (h2.local, None),
                    };
                    return Ok(Sent {
                        response: response.map(|inner| UpstreamBody { inner, park }),
                        reused,
                        local,
                    });
                }
                Err(err) => err,
            };
            // Handed back unsent: the connection closed (or an HTTP/2 one received GOAWAY)
            // before writing it, so the server never saw it.
            match err.take_message() {
                Some(unsent) if attempt < MAX_ATTEMPTS => {
                    tracing::debug!(addr = %target.addr, reused, "upstream connection closed before the request was sent; trying another");
                    if let Conn::H2(h2) = conn {
                        endpoint.evict(h2.id);
                    }
                    request = unsent;
                    attempt += 1;
                }
                _ => return Err(reset(err.into_error(), reused)),
            }
        }
    }

    /// Sends an `Upgrade` request over a fresh HTTP/1.1 connection that is never pooled, so
    /// that `hyper::upgrade::on(&mut sent.response)` yields the socket after a 101.
    pub async fn send_upgrade(
        &self,
        target: &Target,
        mut request: Request<ProxyBody>,
    ) -> Result<Sent, SendError> {
        h1_version(&mut request);
        let mut conn = dial_h1(target, true).await?;
        let sent = conn.sender.send_request(request).await;
        let response = sent.map_err(|source| reset(source, false))?;
        // The connection task must outlive this call: it hands the socket to the upgrade.
        conn.task.0 = None;
        Ok(Sent {
            response: response.map(|inner| UpstreamBody { inner, park: None }),
            reused: false,
            local: conn.local,
        })
    }

    /// Idle pooled connections now: HTTP/1.1 connections waiting for a request, plus the
    /// open shared HTTP/2 connections.
    pub fn idle(&self) -> usize {
        self.endpoints
            .load()
            .values()
            .map(|endpoint| endpoint.idle())
            .sum()
    }

    /// A connection to send on, and whether it served requests before.
    ///
    /// Dialling is boxed: it is the rare path and its state is large, and an inline state
    /// would make every request's future that much bigger to build and move.
    async fn connection(
        &self,
        endpoint: &Endpoint,
        target: &Target,
        fresh: bool,
    ) -> Result<(Conn, bool), SendError> {
        if !Key::of(target).h2 {
            return match (!fresh).then(|| endpoint.checkout()).flatten() {
                Some(h1) => Ok((Conn::H1(h1), true)),
                None => Ok((Conn::H1(Box::pin(dial_h1(target, false)).await?), false)),
            };
        }
        if let Some(h2) = endpoint.shared(target.idle_timeout) {
            return Ok((Conn::H2(h2), true));
        }
        Box::pin(self.dial_shared(endpoint, target)).await
    }

    /// Makes the endpoint's shared HTTP/2 connection, once for a burst of first requests.
    async fn dial_shared(
        &self,
        endpoint: &Endpoint,
        target: &Target,
    ) -> Result<(Conn, bool), SendError> {
        let seen = endpoint.dials.load(Ordering::Acquire);
        let _flight = endpoint.dialing.lock().await;
        if let Some(h2) = endpoint.shared(target.idle_timeout) {
            return Ok((Conn::H2(h2), true));
        }
        if endpoint.dials.load(Ordering::Acquire) != seen {
            let failure = lock(&endpoint.failure).as_ref().and_then(copy);
            if let Some(failure) = failure {
                return Err(failure.into());
            }
        }
        let dialled = dial(target).await;
        *lock(&endpoint.failure) = dialled.as_ref().err().and_then(copy);
        endpoint.dials.fetch_add(1, Ordering::Release);
        let (stream, local) = dialled?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| reset(source, false))?;
        let addr = target.addr;
        // Not aborted on drop: it ends by itself once every stream and sender is gone.
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                tracing::debug!(%addr, "upstream HTTP/2 connection failed: {err}");
            }
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let h2 = H2 { id, sender, local };
        let expires = after(Instant::now(), target.idle_timeout);
        *lock(&endpoint.shared) = Some(Shared {
            conn: h2.clone(),
            expires,
        });
        Ok((Conn::H2(h2), false))
    }

    fn endpoint(&self, key: Key) -> Arc<Endpoint> {
        if let Some(endpoint) = self.endpoints.load().get(&key) {
            return endpoint.clone();
        }
        let _insert = lock(&self.insert);
        let current = self.endpoints.load_full();
        if let Some(endpoint) = current.get(&key) {
            return endpoint.clone();
        }
        let endpoint = Arc::new(Endpoint::default());
        let mut next = HashMap::clone(&current);
        next.insert(key, endpoint.clone());
        self.endpoints.store(Arc::new(next));
        endpoint
    }

    /// Starts the reaper unless it runs. It holds only a `Weak`, so it ends with the pools,
    /// and it stops when no endpoint is left, so an idle process keeps no timer.
    fn start_reaper(&self) {
        if self.reaping.load(Ordering::SeqCst) || self.reaping.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak = self.me.clone();
        tokio::spawn(async move {
            loop {
                let Some(tick) = weak.upgrade().map(|pools| pools.tick()) else {
                    return;
                };
                tokio::time::sleep(tick).await;
                let Some(pools) = weak.upgrade() else {
                    return;
                };
                pools.reap();
                if !pools.endpoints.load().is_empty() {
                    continue;
                }
                pools.reaping.store(false, Ordering::SeqCst);
                // An endpoint added since the check may have seen `reaping` still set.
                if pools.endpoints.load().is_empty() || pools.reaping.swap(true, Ordering::SeqCst) {
                    return;
                }
            }
        });
    }

    fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms.load(Ordering::Relaxed)).clamp(MIN_TICK, MAX_TICK)
    }

    /// Closes expired and dead connections, then drops the endpoints left with nothing
    /// that no request is using.
    fn reap(&self) {
        let now = Instant::now();
        let mut vacant = false;
        for endpoint in self.endpoints.load().values() {
            vacant |= endpoint.reap(now) && Arc::strong_count(endpoint) == 1;
        }
        if !vacant {
            return;
        }
        let _insert = lock(&self.insert);
        let mut next = HashMap::clone(&self.endpoints.load_full());
        // Two references: the stored map and `next`; more means a request holds it.
        next.retain(|_, endpoint| Arc::strong_count(endpoint) > 2 || !endpoint.is_empty());
        self.endpoints.store(Arc::new(next));
    }
}

impl Endpoint {
    /// The newest idle connection still open and within its idle timeout.
    fn checkout(&self) -> Option<H1> {
        let now = Instant::now();
        let mut idle = lock(&self.idle);
        while let Some(Idle { conn, expires }) = idle.pop() {
            if expires > now && !conn.sender.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    fn park(&self, conn: H1, expires: Instant) {
        let mut idle = lock(&self.idle);
        idle.push(Idle { conn, expires });
        if idle.len() > MAX_IDLE_PER_ENDPOINT {
            idle.remove(0);
        }
    }

    /// The shared HTTP/2 connection if it is open and not idle past its timeout, which the
    /// use renews.
    fn shared(&self, idle_timeout: Duration) -> Option<H2> {
        let now = Instant::now();
        let mut slot = lock(&self.shared);
        match slot.as_mut() {
            Some(shared) if shared.usable(now) => {
                shared.expires = after(now, idle_timeout);
                Some(shared.conn.clone())
            }
            _ => {
                *slot = None;
                None
            }
        }
    }

    fn evict(&self, id: u64) {
        let mut slot = lock(&self.shared);
        if slot.as_ref().is_some_and(|shared| shared.conn.id == id) {
            *slot = None;
        }
    }

    /// Drops expired and closed connections; whether nothing is left. Dropping the shared
    /// HTTP/2 sender lets the connection finish its streams in flight and then close.
    fn reap(&self, now: Instant) -> bool {
        let mut idle = lock(&self.idle);
        idle.retain(|idle| idle.expires > now && !idle.conn.sender.is_closed());
        let mut shared = lock(&self.shared);
        if !shared.as_ref().is_some_and(|shared| shared.usable(now)) {
            *shared = None;
        }
        idle.is_empty() && shared.is_none()
    }

    fn is_empty(&self) -> bool {
        lock(&self.idle).is_empty() && lock(&self.shared).is_none()
    }

    fn idle(&self) -> usize {
        let idle = lock(&self.idle);
        let h1 = idle
            .iter()
            .filter(|idle| !idle.conn.sender.is_closed())
            .count();
        let h2 = lock(&self.shared)
            .as_ref()
            .is_some_and(|shared| !shared.conn.sender.is_closed());
        h1 + usize::from(h2)
    }
}

impl Shared {
    fn usable(&self, now: Instant) -> bool {
        self.expires > now && !self.conn.sender.is_closed()
    }
}

/// A copy of a dial failure for the requests that waited on the same dial (`io::Error`
/// cannot be cloned); dialling fails only with these two.
fn copy(err: &ConnectError) -> Option<ConnectError> {
    match err {
        ConnectError::Timeout { addr } => Some(ConnectError::Timeout { addr: *addr }),
        ConnectError::Failed { addr, source } => Some(ConnectError::Failed {
            addr: *addr,
            source: io::Error::new(source.kind(), source.to_string()),
        }),
        _ => None,
    }
}

async fn dial(target: &Target) -> Result<(TcpStream, Option<SocketAddr>), ConnectError> {
    let now = std::time::Instant::now();
    let deadline = now.checked_add(target.connect_timeout).unwrap_or(now + FAR);
    let stream = tcp::dial(target.addr, target.bind.as_slice(), deadline).await?;
    let local = stream.local_addr().ok();
    Ok((stream, local))
}

async fn dial_h1(target: &Target, upgrades: bool) -> Result<H1, SendError> {
    let (stream, local) = dial(target).await?;
    let (sender, conn) = http1::Builder::new()
        .max_buf_size(super::H1_MAX_BUFFER)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|source| reset(source, false))?;
    let addr = target.addr;
    let task = tokio::spawn(async move {
        let ended = if upgrades {
            conn.with_upgrades().await
        } else {
            conn.await
        };
        if let Err(err) = ended {
            tracing::debug!(%addr, "upstream HTTP/1.1 connection failed: {err}");
        }
    });
    Ok(H1 {
        sender,
        task: Task(Some(task.abort_handle())),
        local,
    })
}

fn reset(source: hyper::Error, reused: bool) -> SendError {
    SendError::Reset {
        refused_stream: refused_stream(&source),
        reused,
        source,
    }
}

fn refused_stream(err: &hyper::Error) -> bool {
    let mut cause = std::error::Error::source(err);
    while let Some(err) = cause {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        cause = err.source();
    }
    false
}

/// hyper writes HTTP/1.0 as such and anything else as HTTP/1.1 only by coercion (and
/// panics on versions it does not know), so a request from an HTTP/2 client is relabelled.
fn h1_version(request: &mut Request<ProxyBody>) {
    if request.version() != Version::HTTP_10 {
        *request.version_mut() = Version::HTTP_11;
    }
}

/// HTTP/2 takes `:scheme` and `:authority` from the URI, and a request without `:scheme`
/// is malformed; an origin-form URI gets `http` and the client's Host as authority.
fn absolute_uri(request: &mut Request<ProxyBody>) {
    let uri = request.uri();
    if request.method() == Method::CONNECT || uri.scheme().is_some() {
        return;
    }
    let authority = uri.authority().cloned().or_else(|| {
        let host = request.headers().get(HOST)?;
        Authority::try_from(host.as_bytes()).ok()
    });
    let mut parts = uri.clone().into_parts();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = authority;
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    // Without any authority there is no valid absolute form; the server will refuse it.
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
}

fn after(now: Instant, duration: Duration) -> Instant {
    now.checked_add(duration).unwrap_or(now + FAR)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded data stays consistent across a panic: every update is a single assignment.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
