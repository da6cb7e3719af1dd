//! The HTTP plumbing shared by the admin (15000), Prometheus (15090), agent (15020) and
//! health (15021) servers, and the small one-shot client the agent and the CLI helpers use.
//!
//! The servers speak HTTP/1.1 only: their clients (kubelet, Prometheus, curl, the CLI) all
//! do, and it lets a handler run an action after its response has left the process (the
//! connection closes once the response is written; see [`Conn::after_close`]).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Incoming};
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Every response of these servers is small and built whole.
pub(crate) type Reply = Response<Full<Bytes>>;

/// A client that sends its headers this slowly is not a probe or a scraper.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in flight (a probe, a scrape) before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed accept (e.g. out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

type Deferred = Box<dyn FnOnce() + Send>;

/// What a handler knows about the connection its request came on.
#[derive(Clone)]
pub(crate) struct Conn {
    peer: SocketAddr,
    after_close: Arc<Mutex<Vec<Deferred>>>,
}

impl Conn {
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Runs `action` once this connection is closed, i.e. after the response has been
    /// written (the response should carry `Connection: close`, see [`close_after`]). Used
    /// by `/quitquitquit`, so that the caller gets its answer before the process exits.
    pub(crate) fn after_close(&self, action: impl FnOnce() + Send + 'static) {
        let mut actions = self.after_close.lock().unwrap_or_else(|p| p.into_inner());
        actions.push(Box::new(action));
    }
}

/// Whether `peer` is this host (for endpoints that change the proxy's state). The inbound
/// passthrough source 127.0.0.6 is refused even though it is a loopback address: a
/// connection from it was forwarded by the proxy from somebody else.
pub(crate) fn is_local_peer(peer: SocketAddr) -> bool {
    let ip = match peer.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    ip.is_loopback() && ip != IpAddr::V4(PASSTHROUGH_SOURCE_V4)
}

/// The source address of the proxy's own connections to its app (Envoy's inbound
/// passthrough bind): skiff-init's rules let it through without capture.
pub(crate) const PASSTHROUGH_SOURCE_V4: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
pub(crate) const PASSTHROUGH_SOURCE_V6: Ipv6Addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);

/// Accepts on `listener` and answers each request with `handler` until `shutdown`
/// resolves; then stops accepting and gives requests in flight [`SHUTDOWN_GRACE`].
pub(crate) async fn serve<H, F>(
    name: &'static str,
    listener: TcpListener,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>, Conn) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Reply> + Send + 'static,
{
    let local = listener.local_addr().ok();
    tracing::debug!(server = name, address = ?local, "serving");
    let graceful = GracefulShutdown::new();
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Finished connections are reaped here so the set does not grow.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(server = name, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let conn = Conn {
            peer,
            after_close: Arc::default(),
        };
        let handler = handler.clone();
        let service_conn = conn.clone();
        let service = hyper::service::service_fn(move |req| {
            let response = handler(req, service_conn.clone());
            async move { Ok::<_, std::convert::Infallible>(response.await) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(server = name, %peer, error = %e, "connection ended with an error");
            }
            let actions =
                std::mem::take(&mut *conn.after_close.lock().unwrap_or_else(|p| p.into_inner()));
            for action in actions {
                action();
            }
        });
    }
    drop(listener);
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    if tokio::time::timeout_at(deadline, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!(
            server = name,
            "requests still in flight at shutdown are dropped"
        );
    }
    // Let finished connections run their after-close actions; dropping the set aborts the
    // connections still open at the deadline.
    while let Ok(Some(_)) = tokio::time::timeout_at(deadline, connections.join_next()).await {}
}

pub(crate) fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Reply {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Reply {
    response(status, "text/plain; charset=utf-8", body)
}

/// Marks `response` so that the server closes the connection after writing it.
pub(crate) fn close_after(mut response: Reply) -> Reply {
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

pub(crate) fn method_not_allowed(allowed: &'static str) -> Reply {
    let mut response = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("this endpoint takes {allowed}\n"),
    );
    response
        .headers_mut()
        .insert(hyper::header::ALLOW, HeaderValue::from_static(allowed));
    response
}

pub(crate) fn forbidden_remote() -> Reply {
    text(
        StatusCode::FORBIDDEN,
        "only requests from localhost are allowed\n",
    )
}

/// The decoded value of `key` in a query string (`a=1&level=debug`), `+` read as a space
/// and `%XX` decoded, as HTML forms and curl's `--data-urlencode` write them.
pub(crate) fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Why a one-shot request to a local endpoint (the app, another proxy port) failed.
#[derive(Debug, Error)]
pub enum FetchError {
    #[error("connect to {address} failed: {source}")]
    Connect {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("HTTP exchange failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("response body larger than {0} bytes")]
    TooLarge(usize),
    #[error("invalid request: {0}")]
    Request(String),
}

/// A response read whole (up to a limit).
#[derive(Debug)]
pub(crate) struct Fetched {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// Present when the body ended with trailers (gRPC's status).
    pub(crate) trailers: Option<HeaderMap>,
}

/// What to do when a body is longer than the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// Keep the first `limit` bytes (probe bodies are only echoed for diagnosis).
    Truncate,
    /// Fail (a truncated metrics exposition would be wrong).
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    /// HTTP/2 with prior knowledge (h2c), as gRPC uses it without TLS.
    Http2,
}

/// Opens a TCP connection to `address`, from `source` when given. When the source address
/// cannot be bound (`::6` is not configured on every host), connects from the default
/// address instead: the connection may then be captured by the inbound rules, which is
/// still better than no probe at all.
pub(crate) async fn connect(
    address: SocketAddr,
    source: Option<IpAddr>,
) -> Result<TcpStream, FetchError> {
    let failed = |source| FetchError::Connect { address, source };
    let socket = || {
        if address.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
    };
    if let Some(ip) = source.filter(|ip| ip.is_ipv4() == address.is_ipv4()) {
        let bound = socket().and_then(|s| s.bind(SocketAddr::new(ip, 0)).map(|()| s));
        match bound {
            Ok(s) => return s.connect(address).await.map_err(failed),
            Err(e) => {
                tracing::debug!(%ip, error = %e, "cannot bind the probe source address; using the default")
            }
        }
    }
    socket()
        .map_err(failed)?
        .connect(address)
        .await
        .map_err(failed)
}

/// Sends one request on `stream` and reads the whole response. The caller bounds the time.
/// Any byte stream does: a TCP connection, or TLS over one (the agent's HTTPS probes).
pub(crate) async fn exchange<S, B>(
    stream: S,
    protocol: Protocol,
    request: Request<B>,
    limit: usize,
    overflow: Overflow,
) -> Result<Fetched, FetchError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = TokioIo::new(stream);
    match protocol {
        Protocol::Http1 => {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
            drive(connection, async move {
                read(sender.send_request(request).await?, limit, overflow).await
            })
            .await
        }
        Protocol::Http2 => {
            let (mut sender, connection) =
                hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .handshake(io)
                    .await?;
            drive(connection, async move {
                read(sender.send_request(request).await?, limit, overflow).await
            })
            .await
        }
    }
}

/// Runs a client connection alongside the exchange that uses it, without spawning a task
/// that could outlive the caller's timeout. If the connection finishes first (the server
/// closed it), the exchange still gets to read what was already received.
async fn drive<C, E>(connection: C, exchange: E) -> Result<Fetched, FetchError>
where
    C: Future<Output = Result<(), hyper::Error>>,
    E: Future<Output = Result<Fetched, FetchError>>,
{
    let mut connection = std::pin::pin!(connection);
    let mut exchange = std::pin::pin!(exchange);
    tokio::select! {
        biased;
        result = &mut exchange => result,
        ended = &mut connection => {
            if let Err(e) = ended {
                tracing::trace!(error = %e, "client connection ended with an error");
            }
            exchange.await
        }
    }
}

async fn read(
    response: Response<Incoming>,
    limit: usize,
    overflow: Overflow,
) -> Result<Fetched, FetchError> {
    let (parts, mut body) = response.into_parts();
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        match frame.into_data() {
            Ok(chunk) => {
                let room = limit.saturating_sub(data.len());
                if chunk.len() > room {
                    if overflow == Overflow::Fail {
                        return Err(FetchError::TooLarge(limit));
                    }
                    data.extend_from_slice(&chunk[..room]);
                    break;
                }
                data.extend_from_slice(&chunk);
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = Some(t);
                }
            }
        }
    }
    Ok(Fetched {
        status: parts.status,
        headers: parts.headers,
        body: Bytes::from(data),
        trailers,
    })
}

/// `exchange` bounded by `timeout`, connect included.
pub(crate) async fn fetch<B>(
    address: SocketAddr,
    source: Option<IpAddr>,
    protocol: Protocol,
    request: Request<B>,
    limit: usize,
    overflow: Overflow,
    timeout: Duration,
) -> Result<Fetched, FetchError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let attempt = async {
        let stream = connect(address, source).await?;
        exchange(stream, protocol, request, limit, overflow).await
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(Err(FetchError::Timeout(timeout)))
}

#[cfg(test)]
pub(crate) mod testing;
