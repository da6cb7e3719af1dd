use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::StatusCode;
use hyper::body::Incoming;
use hyper::body::{Body, Bytes, Frame};
use hyper::header::{CONNECTION, HeaderValue, UPGRADE};
use hyper::service::service_fn;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Barrier, Notify, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::*;
use crate::http::BoxError;

/// Bounds every wait, so that a bug fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(5);

type ServerBody = UnsyncBoxBody<Bytes, Infallible>;

struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// One message per server connection that has ended.
    closed: mpsc::UnboundedReceiver<()>,
}

impl Server {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    async fn connection_closed(&mut self) {
        timeout(WAIT, self.closed.recv())
            .await
            .expect("the server connection is still open")
            .expect("the server is gone");
    }
}

/// A hyper server on 127.0.0.1 (HTTP/1.1 with upgrades, or h2c) answering with `handler`.
async fn serve<H, F>(h2: bool, handler: H) -> Server
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ServerBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (closed_tx, closed) = mpsc::unbounded_channel();
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let handler = handler.clone();
            let closed = closed_tx.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let response = handler(request);
                    async move { Ok::<_, Infallible>(response.await) }
                });
                let io = TokioIo::new(stream);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .with_upgrades()
                        .await;
                }
                let _ = closed.send(());
            });
        }
    });
    Server {
        addr,
        accepted,
        closed,
    }
}

fn text(body: &'static str) -> Response<ServerBody> {
    Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed_unsync())
}

/// Answers with the Host header and the URI the server received.
async fn echo(request: Request<Incoming>) -> Response<ServerBody> {
    let host = request
        .headers()
        .get(HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or("-");
    let body = format!("{host} {}", request.uri());
    Response::new(Full::new(Bytes::from(body)).boxed_unsync())
}

fn target(addr: SocketAddr, version: Version) -> Target {
    Target {
        addr,
        version,
        bind: None,
        connect_timeout: WAIT,
        idle_timeout: Duration::from_secs(30),
    }
}

fn empty() -> ProxyBody {
    Empty::<Bytes>::new()
        .map_err(|never: Infallible| -> BoxError { match never {} })
        .boxed_unsync()
}

fn get(path: &str) -> Request<ProxyBody> {
    Request::builder()
        .uri(path)
        .header(HOST, "app.test")
        .body(empty())
        .unwrap()
}

async fn send(pools: &Pools, target: &Target, request: Request<ProxyBody>) -> Sent {
    timeout(WAIT, pools.send(target, request))
        .await
        .expect("send timed out")
        .expect("send failed")
}

async fn body(sent: Sent) -> String {
    let collected = timeout(WAIT, sent.response.into_body().collect())
        .await
        .expect("body timed out")
        .expect("body failed");
    String::from_utf8(collected.to_bytes().to_vec()).unwrap()
}

/// Polls `done` until it holds: connections return to the pool from a task of their own.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let polled = timeout(WAIT, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    polled
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection() {
    let server = serve(false, echo).await;
    let pools = Pools::new();
    let target = target(server.addr, Version::HTTP_11);

    let first = send(&pools, &target, get("/a")).await;
    assert!(!first.reused);
    assert_eq!(
        first.local.map(|local| local.ip()),
        Some(Ipv4Addr::LOCALHOST.into())
    );
    assert_eq!(body(first).await, "app.test /a");
    eventually("the connection to be pooled", || pools.idle() == 1).await;

    let second = send(&pools, &target, get("/b?x=1")).await;
    assert!(second.reused);
    assert_eq!(body(second).await, "app.test /b?x=1");
    assert_eq!(server.accepted(), 1);
}

/// The usual case costs no task: by the time the proxy reads the body's end, hyper has
/// marked the connection ready, and it goes straight back to the idle list.
#[tokio::test]
async fn a_connection_whose_response_was_read_is_pooled_at_once() {
    let server = serve(false, echo).await;
    let pools = Pools::new();
    let target = target(server.addr, Version::HTTP_11);
    for round in 0..20 {
        let sent = send(&pools, &target, get("/a")).await;
        assert_eq!(sent.reused, round > 0);
        assert_eq!(body(sent).await, "app.test /a");
        assert_eq!(pools.idle(), 1, "round {round}: pooled without waiting");
    }
}

#[tokio::test]
async fn concurrent_requests_use_two_connections_then_reuse_both() {
    // The server answers only once both requests are in: they cannot share a connection.
    let barrier = Arc::new(Barrier::new(2));
    let server = serve(false, move |_request| {
        let barrier = barrier.clone();
        async move {
            barrier.wait().await;
            text("ok")
        }
    })
    .await;
    let pools = Pools::new();
    let target = target(server.addr, Version::HTTP_11);

    for round in 0..2 {
        let (a, b) = tokio::join!(
            send(&pools, &target, get("/")),
            send(&pools, &target, get("/"))
        );
        assert_eq!(
            (a.reused, b.reused),
            (round == 1, round == 1),
            "round {round}"
        );
        assert_ne!(a.local, b.local);
        assert_eq!(body(a).await, "ok");
        assert_eq!(body(b).await, "ok");
        eventually("both connections to be pooled", || pools.idle() == 2).await;
    }
    assert_eq!(server.accepted(), 2);
}

#[tokio::test]
async fn the_newest_idle_connection_is_reused_first() {
    // Two requests in flight at once, then answered one after the other.
    let gates = Arc::new([Notify::new(), Notify::new()]);
    let (got_tx, mut got) = mpsc::unbounded_channel();
    let server = serve(false, {
        let gates = gates.clone();
        move |request| {
            let (gates, got) = (gates.clone(), got_tx.clone());
            async move {
                let _ = got.send(());
                gates[usize::from(request.uri().path() == "/b")]
                    .notified()
                    .await;
                text("ok")
            }
        }
    })
    .await;
    let pools = Pools::new();
    let target = target(server.addr, Version::HTTP_11);

    let (pools, target) = (&pools, &target);
    let request = |path: &'static str| async move {
        let sent = send(pools, target, get(path)).await;
        let local = sent.local;
        body(sent).await;
        local
    };
    let answer_in_order = async {
        for _ in 0..2 {
            timeout(WAIT, got.recv()).await.unwrap().unwrap();
        }
        gates[0].notify_one();
        eventually("the first connection to be pooled", || pools.idle() == 1).await;
        gates[1].notify_one();
        eventually("the second connection to be pooled", || pools.idle() == 2).await;
    };
    let (_, b, ()) = tokio::join!(request("/a"), request("/b"), answer_in_order);

    gates[0].notify_one();
    let next = send(pools, target, get("/a")).await;
    assert!(next.reused);
    assert_eq!(next.local, b);
    assert_eq!(server.accepted(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_requests_share_one_connection() {
    // All 20 requests are in flight at once, and arrive while no connection exists.
    let barrier = Arc::new(Barrier::new(20));
    let server = serve(true, move |request| {
        let barrier = barrier.clone();
        async move {
            barrier.wait().await;
            echo(request).await
        }
    })
    .await;
    let pools = Pools::new();
    let target = target(server.addr, Version::HTTP_2);

    let mut requests = JoinSet::new();
    for i in 0..20 {
        let (pools, target) = (pools.clone(), target.clone());
        requests.spawn(async move {
            let sent = send(&pools, &target, get(&format!("/{i}"))).await;
            (i, sent.reused, body(sent).await)
        });
    }
    let mut dialled = 0;
    while let Some(done) = requests.join_next().await {
        let (i, reused, body) = done.unwrap();
        // The client's Host went out as :authority, not the endpoint address.
        assert_eq!(body, format!("app.test http://app.test/{i}"));
        dialled += usize::from(!reused);
    }
    assert_eq!(dialled, 1);
    assert_eq!(server.accepted(), 1);
    assert_eq!(pools.idle(), 1);
}

#[tokio::test]
async fn idle_connections_close_after_the_idle_timeout() {
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let mut server = serve(version == Version::HTTP_2, echo).await;
        let pools = Pools::new();
        let target = Target {
            idle_timeout: Duration::from_millis(50),
            ..target(server.addr, version)
        };

        let first = send(&pools, &target, get("/")).await;
        body(first).await;
        server.connection_closed().await;
        assert_eq!(pools.idle(), 0, "{version:?}");

        let second = send(&pools, &target, get("/")).await;
        assert!(!second.reused, "{version:?}");
        body(second).await;
        assert_eq!(server.accepted(), 2, "{version:?}");
    }
}

#[tokio::test]
async fn connection_close_from_the_server_is_honoured() {
    let mut server = serve(false, |_request| async {
        let mut response = text("bye");
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        response
    })
    .await;
    let pools = Pools::new();
    let target = target(server.addr, Version::HTTP_11);

    let first = send(&pools, &target, get("/")).await;
    assert_eq!(body(first).await, "bye");
    server.connection_closed().await;

    let second = send(&pools, &target, get("/")).await;
    assert!(!second.reused);
    assert_eq!(body(second).await, "bye");
    assert_eq!(server.accepted(), 2);
}

async fn read_head(stream: &mut TcpStream) {
    let mut head = Vec::new();
    let mut buf = [0; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the client closed before sending a request");
        head.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test]
async fn connection_the_server_closed_while_idle_is_not_reused() {
    // A keep-alive server that later closes the idle connection without a word, and
    // answers the next request only on a new connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (close, closing) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut first, _) = listener.accept().await.unwrap();
        read_head(&mut first).await;
        first
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst")
            .await
            .unwrap();
        let _ = closing.await;
        drop(first);
        let (mut second, _) = listener.accept().await.unwrap();
        read_head(&mut second).await;
        second
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond")
            .await
            .unwrap();
        std::future::pending::<()>().await;
    });
    let pools = Pools::new();
    let target = target(addr, Version::HTTP_11);

    let first = send(&pools, &target, get("/")).await;
    assert_eq!(body(first).await, "first");
    eventually("the connection to be pooled", || pools.idle() == 1).await;
    close.send(()).unwrap();
    eventually("the close to be noticed", || pools.idle() == 0).await;

    let second = send(&pools, &target, get("/")).await;
    assert!(!second.reused);
    assert_eq!(body(second).await, "second");
}

#[tokio::test]
async fn connect_failure_is_a_connect_error() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let pools = Pools::new();
    for version in [Version::HTTP_11, Version::HTTP_2] {
        let sent = timeout(WAIT, pools.send(&target(closed, version), get("/")))
            .await
            .unwrap();
        let err = sent.unwrap_err();
        assert!(
            matches!(err, SendError::Connect(ConnectError::Failed { .. })),
            "{err:?}"
        );
    }
    let target = target(closed, Version::HTTP_11);
    let upgrade = timeout(WAIT, pools.send_upgrade(&target, get("/"))).await;
    let err = upgrade.unwrap().unwrap_err();
    assert!(matches!(err, SendError::Connect(_)), "{err:?}");
    assert_eq!(pools.idle(), 0);
}

#[tokio::test]
async fn dropping_the_send_closes_the_h1_connection() {
    let (got_tx, mut got) = mpsc::unbounded_channel();
    let mut server = serve(false, move |_request| {
        let got = got_tx.clone();
        async move {
            let _ = got.send(());
            std::future::pending().await
        }
    })
    .await;
    let pools = Pools::new();
    let target = target(server.addr, Version::HTTP_11);

    let sending = pools.send(&target, get("/slow"));
    tokio::select! {
        _ = sending => panic!("the server never answers"),
        got = timeout(WAIT, got.recv()) => got.expect("the server got no request").unwrap(),
    }
    server.connection_closed().await;
    assert_eq!(pools.idle(), 0);
}

struct DropSignal(mpsc::UnboundedSender<&'static str>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        let _ = self.0.send("dropped");
    }
}

#[tokio::test]
async fn dropping_the_send_resets_only_the_h2_stream() {
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let server = serve(true, move |request| {
        let events = events_tx.clone();
        async move {
            if request.uri().path() == "/slow" {
                let _dropped = DropSignal(events.clone());
                let _ = events.send("got");
                std::future::pending::<()>().await;
            }
            text("ok")
        }
    })
    .await;
    let pools = Pools::new();
    let target = target(server.addr, Version::HTTP_2);

    let sending = pools.send(&target, get("/slow"));
    tokio::select! {
        _ = sending => panic!("the server never answers"),
        got = timeout(WAIT, events.recv()) => assert_eq!(got.unwrap(), Some("got")),
    }
    // The server dropped the handler: it received RST_STREAM.
    assert_eq!(timeout(WAIT, events.recv()).await.unwrap(), Some("dropped"));

    let next = send(&pools, &target, get("/fast")).await;
    assert!(next.reused);
    assert_eq!(body(next).await, "ok");
    assert_eq!(server.accepted(), 1);
}

/// A response body that sends one chunk and then never ends.
struct Endless(bool);

impl Body for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.0 {
            return Poll::Pending;
        }
        self.0 = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"chunk")))))
    }
}

#[tokio::test]
async fn connection_with_an_unfinished_body_is_not_reused() {
    let mut server = serve(false, |request| async move {
        if request.uri().path() == "/endless" {
            Response::new(Endless(false).boxed_unsync())
        } else {
            text("ok")
        }
    })
    .await;
    let pools = Pools::new();
    let target = target(server.addr, Version::HTTP_11);

    let mut endless = send(&pools, &target, get("/endless")).await;
    let frame = timeout(WAIT, endless.response.body_mut().frame())
        .await
        .unwrap();
    assert_eq!(frame.unwrap().unwrap().into_data().unwrap(), "chunk");

    // The connection is busy while its body streams: it must not be pooled (the yields
    // give a wrongly parked one the chance to show), another request gets its own, and
    // the streaming one is left alone.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(pools.idle(), 0);
    let other = send(&pools, &target, get("/")).await;
    assert!(!other.reused);
    let other_local = other.local;
    assert_eq!(body(other).await, "ok");
    eventually("the other connection to be pooled", || pools.idle() == 1).await;
    assert!(
        server.closed.try_recv().is_err(),
        "the busy connection was closed"
    );

    drop(endless);
    server.connection_closed().await;
    assert_eq!(pools.idle(), 1);
    let next = send(&pools, &target, get("/")).await;
    assert!(next.reused);
    assert_eq!(next.local, other_local);
    assert_eq!(server.accepted(), 2);
}

#[tokio::test]
async fn request_handed_back_by_a_closing_connection_is_sent_on_a_new_one() {
    // An h2 server that, after one answer, announces GOAWAY but keeps the connection open
    // for a stream in flight; it answers anything on a second connection.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (announced, goaway_seen) = oneshot::channel();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut conn = h2::server::handshake(socket).await.unwrap();
        let mut ping_pong = conn.ping_pong().unwrap();
        let (_, mut respond) = conn.accept().await.unwrap().unwrap();
        respond.send_response(Response::new(()), true).unwrap();
        let (_, _held) = conn.accept().await.unwrap().unwrap();
        conn.graceful_shutdown();
        tokio::spawn(async move { while let Some(Ok(_)) = conn.accept().await {} });
        // The client acknowledges pings in order, so after the second pong it has read
        // the GOAWAY sent before it.
        for _ in 0..2 {
            ping_pong.ping(h2::Ping::opaque()).await.unwrap();
        }
        announced.send(()).unwrap();
        let (socket, _) = listener.accept().await.unwrap();
        let mut conn = h2::server::handshake(socket).await.unwrap();
        while let Some(Ok((_, mut respond))) = conn.accept().await {
            respond.send_response(Response::new(()), true).unwrap();
        }
    });
    let pools = Pools::new();
    let target = target(addr, Version::HTTP_2);

    let first = send(&pools, &target, get("/first")).await;
    assert!(!first.reused);
    let held = tokio::spawn({
        let (pools, target) = (pools.clone(), target.clone());
        async move { pools.send(&target, get("/held")).await.map(|_| ()) }
    });
    timeout(WAIT, goaway_seen).await.unwrap().unwrap();

    let next = send(&pools, &target, get("/next")).await;
    assert_eq!(next.response.status(), StatusCode::OK);
    assert!(!next.reused);
    assert_ne!(next.local, first.local);
    held.abort();
}

#[tokio::test]
async fn refused_stream_is_reported_as_such() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut conn = h2::server::handshake(socket).await.unwrap();
        while let Some(Ok((_request, mut respond))) = conn.accept().await {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
        }
    });
    let pools = Pools::new();
    let sent = timeout(WAIT, pools.send(&target(addr, Version::HTTP_2), get("/")))
        .await
        .unwrap();
    let err = sent.unwrap_err();
    assert!(
        matches!(
            err,
            SendError::Reset {
                refused_stream: true,
                reused: false,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn upgrade_hands_over_the_connection() {
    let server = serve(false, |mut request: Request<Incoming>| async move {
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0; 64];
            while let Ok(n @ 1..) = io.read(&mut buf).await {
                if io.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
        let mut response = text("");
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
        response
            .headers_mut()
            .insert(UPGRADE, HeaderValue::from_static("echo"));
        response
    })
    .await;
    let pools = Pools::new();
    let request = Request::builder()
        .uri("/ws")
        .header(HOST, "app.test")
        .header(CONNECTION, "upgrade")
        .header(UPGRADE, "echo")
        .body(empty())
        .unwrap();

    let target = target(server.addr, Version::HTTP_11);
    let sending = pools.send_upgrade(&target, request);
    let mut sent = timeout(WAIT, sending).await.unwrap().unwrap();
    assert_eq!(sent.response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let upgraded = timeout(WAIT, hyper::upgrade::on(&mut sent.response))
        .await
        .unwrap()
        .unwrap();
    let mut io = TokioIo::new(upgraded);
    io.write_all(b"hello").await.unwrap();
    let mut buf = [0; 5];
    timeout(WAIT, io.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"hello");
    assert_eq!(pools.idle(), 0);
}

#[test]
fn h2_requests_get_an_absolute_uri_from_the_host() {
    let mut request = get("/p?q=1");
    absolute_uri(&mut request);
    assert_eq!(request.uri(), "http://app.test/p?q=1");
    assert_eq!(request.headers()[HOST], "app.test");

    let mut absolute = Request::builder()
        .uri("https://other.test/x")
        .body(empty())
        .unwrap();
    absolute_uri(&mut absolute);
    assert_eq!(absolute.uri(), "https://other.test/x");

    let mut connect = Request::builder()
        .method(Method::CONNECT)
        .uri("app.test:443")
        .body(empty())
        .unwrap();
    absolute_uri(&mut connect);
    assert_eq!(connect.uri(), "app.test:443");

    let mut bad_host = get("/");
    bad_host
        .headers_mut()
        .insert(HOST, HeaderValue::from_static("a b"));
    absolute_uri(&mut bad_host);
    assert_eq!(bad_host.uri(), "/");
}
