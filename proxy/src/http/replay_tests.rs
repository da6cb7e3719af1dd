use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::HeaderMap;
use hyper::body::{Body, Bytes, Frame, SizeHint};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::*;
use crate::http::ProxyBody;

const WAIT: Duration = Duration::from_secs(5);

/// A client body fed by the test, so reads and attempts can be interleaved. With `remaining`
/// it behaves like a Content-Length body: an exact size hint, and end of stream once all read.
struct ChanBody {
    rx: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
    remaining: Option<u64>,
}

type Tx = mpsc::Sender<Result<Frame<Bytes>, BoxError>>;

fn chan(capacity: usize, remaining: Option<u64>) -> (Tx, ChanBody) {
    let (tx, rx) = mpsc::channel(capacity);
    (tx, ChanBody { rx, remaining })
}

impl Body for ChanBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            let len = frame.data_ref().map_or(0, |d| d.len() as u64);
            self.remaining = self.remaining.map(|r| r.saturating_sub(len));
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        self.remaining.map(SizeHint::with_exact).unwrap_or_default()
    }
}

/// An empty body that must never be polled.
struct EmptyUnpolled;

impl Body for EmptyUnpolled {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        panic!("an empty body was polled")
    }

    fn is_end_stream(&self) -> bool {
        true
    }
}

/// A body whose first poll panics, as a buggy client body might.
struct Panicking;

impl Body for Panicking {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        panic!("client body bug")
    }
}

fn data(s: &'static str) -> Result<Frame<Bytes>, BoxError> {
    Ok(Frame::data(Bytes::from_static(s.as_bytes())))
}

fn trailers() -> HeaderMap {
    let mut map = HeaderMap::new();
    map.insert("grpc-status", "0".parse().unwrap());
    map
}

async fn next(body: &mut ReplayBody) -> Option<Result<Frame<Bytes>, BoxError>> {
    timeout(WAIT, body.frame()).await.expect("frame timed out")
}

async fn next_data(body: &mut ReplayBody) -> Bytes {
    next(body)
        .await
        .expect("frame")
        .expect("ok frame")
        .into_data()
        .expect("data frame")
}

/// Everything left in an attempt: data concatenated, and trailers if any.
async fn collect(body: ReplayBody) -> (Bytes, Option<HeaderMap>) {
    let collected = timeout(WAIT, body.collect())
        .await
        .expect("collect timed out")
        .expect("body ok");
    let trailers = collected.trailers().cloned();
    (collected.to_bytes(), trailers)
}

#[test]
fn replay_body_boxes_into_proxy_body() {
    fn assert_bounds<T: Body + Send + Sync + Unpin + 'static>() {}
    assert_bounds::<ReplayBody>();
    let replay = Replay::new(Full::new(Bytes::from_static(b"x")), DEFAULT_REPLAY_LIMIT);
    let _boxed: ProxyBody = ProxyBody::new(replay.attempt().unwrap());
}

#[tokio::test]
async fn single_attempt_passes_data_and_trailers_through() {
    let (tx, source) = chan(8, None);
    tx.send(data("hello")).await.unwrap();
    tx.send(data(" world")).await.unwrap();
    tx.send(Ok(Frame::trailers(trailers()))).await.unwrap();
    drop(tx);
    let replay = Replay::new(source, DEFAULT_REPLAY_LIMIT);
    let mut body = replay.attempt().unwrap();
    assert_eq!(next_data(&mut body).await, "hello");
    assert_eq!(next_data(&mut body).await, " world");
    let last = next(&mut body).await.unwrap().unwrap();
    assert_eq!(last.into_trailers().unwrap(), trailers());
    assert!(next(&mut body).await.is_none());
    assert!(body.is_end_stream());
    assert!(replay.is_complete());
    assert_eq!(replay.received(), 11);
}

#[tokio::test]
async fn second_attempt_replays_a_fully_read_body() {
    let (tx, source) = chan(8, None);
    tx.send(data("abc")).await.unwrap();
    tx.send(data("def")).await.unwrap();
    tx.send(Ok(Frame::trailers(trailers()))).await.unwrap();
    drop(tx);
    let replay = Replay::new(source, DEFAULT_REPLAY_LIMIT);
    let first = collect(replay.attempt().unwrap()).await;
    assert_eq!(first, (Bytes::from_static(b"abcdef"), Some(trailers())));
    assert!(replay.replayable());
    // The source is exhausted: the second attempt can only come from the buffer.
    let second = collect(replay.attempt().unwrap()).await;
    assert_eq!(first, second);
    let third = replay.attempt().unwrap();
    assert!(!third.is_end_stream());
    assert_eq!(collect(third).await, first);
    assert_eq!(replay.received(), 6);
}

#[tokio::test]
async fn second_attempt_continues_from_the_source_after_the_buffer() {
    let (tx, source) = chan(8, None);
    tx.send(data("ab")).await.unwrap();
    tx.send(data("cd")).await.unwrap();
    let replay = Replay::new(source, DEFAULT_REPLAY_LIMIT);
    let mut first = replay.attempt().unwrap();
    assert_eq!(next_data(&mut first).await, "ab");

    let mut second = replay.attempt().unwrap();
    assert_eq!(next_data(&mut second).await, "ab");
    assert_eq!(next_data(&mut second).await, "cd");
    // Caught up: it now waits on the client.
    assert!(
        timeout(Duration::from_millis(50), second.frame())
            .await
            .is_err()
    );
    tx.send(data("ef")).await.unwrap();
    tx.send(Ok(Frame::trailers(trailers()))).await.unwrap();
    drop(tx);
    let rest = collect(second).await;
    assert_eq!(rest, (Bytes::from_static(b"ef"), Some(trailers())));
    assert!(replay.is_complete());

    let third = collect(replay.attempt().unwrap()).await;
    assert_eq!(third, (Bytes::from_static(b"abcdef"), Some(trailers())));
}

#[tokio::test]
async fn retired_attempt_errors_and_leaves_the_source_alone() {
    let (tx, source) = chan(8, None);
    tx.send(data("ab")).await.unwrap();
    tx.send(data("cd")).await.unwrap();
    drop(tx);
    let replay = Replay::new(source, DEFAULT_REPLAY_LIMIT);
    let mut first = replay.attempt().unwrap();
    assert_eq!(next_data(&mut first).await, "ab");
    let second = replay.attempt().unwrap();

    assert!(!first.is_end_stream());
    let err = next(&mut first).await.unwrap().unwrap_err();
    assert!(matches!(
        err.downcast_ref::<ReplayError>(),
        Some(ReplayError::Retired)
    ));
    assert!(next(&mut first).await.is_none());
    assert!(first.is_end_stream());
    // "cd" was still with the client, and the retired body did not take it.
    assert_eq!(collect(second).await.0, "abcd");
}

#[tokio::test]
async fn overflow_drops_the_buffer_but_the_attempt_streams_on() {
    let (tx, source) = chan(8, None);
    for chunk in ["01234", "56789", "abcde", "fghij", "klmno"] {
        tx.send(data(chunk)).await.unwrap();
    }
    drop(tx);
    let replay = Replay::new(source, 10);
    let mut body = replay.attempt().unwrap();
    let mut read = Vec::new();
    read.extend_from_slice(&next_data(&mut body).await);
    read.extend_from_slice(&next_data(&mut body).await);
    // Exactly at the limit is still replayable.
    assert!(replay.replayable());
    assert_eq!(replay.buffered_bytes(), 10);
    read.extend_from_slice(&next_data(&mut body).await);
    assert!(!replay.replayable());
    assert_eq!(replay.buffered_bytes(), 0);
    assert!(replay.attempt().is_none());
    read.extend_from_slice(&collect(body).await.0);
    assert_eq!(read, b"0123456789abcdefghijklmno");
    assert_eq!(replay.received(), 25);
    assert!(replay.is_complete());
    assert!(replay.attempt().is_none());
}

#[tokio::test]
async fn exact_size_hints_hold_across_attempts() {
    let replay = Replay::new(Full::new(Bytes::from_static(b"hello world")), 64);
    let mut first = replay.attempt().unwrap();
    assert_eq!(first.size_hint().exact(), Some(11));
    assert_eq!(next_data(&mut first).await, "hello world");
    assert_eq!(first.size_hint().exact(), Some(0));
    assert!(first.is_end_stream());
    let second = replay.attempt().unwrap();
    assert_eq!(second.size_hint().exact(), Some(11));
    assert!(!second.is_end_stream());

    let (tx, source) = chan(8, Some(11));
    tx.send(data("hell")).await.unwrap();
    tx.send(data("o world")).await.unwrap();
    let replay = Replay::new(source, 64);
    let mut first = replay.attempt().unwrap();
    assert_eq!(first.size_hint().exact(), Some(11));
    assert_eq!(next_data(&mut first).await, "hell");
    assert_eq!(first.size_hint().exact(), Some(7));
    let mut second = replay.attempt().unwrap();
    assert_eq!(second.size_hint().exact(), Some(11));
    assert_eq!(next_data(&mut second).await, "hell");
    assert_eq!(second.size_hint().exact(), Some(7));
    assert_eq!(next_data(&mut second).await, "o world");
    // The source reported its end with the last byte: no extra poll needed.
    assert_eq!(second.size_hint().exact(), Some(0));
    assert!(second.is_end_stream());
    assert!(replay.is_complete());
}

#[tokio::test]
async fn unknown_size_hints_count_the_buffered_bytes() {
    let (tx, source) = chan(8, None);
    tx.send(data("abcd")).await.unwrap();
    let replay = Replay::new(source, 64);
    let mut first = replay.attempt().unwrap();
    next_data(&mut first).await;
    let second = replay.attempt().unwrap();
    let hint = second.size_hint();
    assert_eq!((hint.lower(), hint.upper()), (4, None));
    drop(tx);
}

#[tokio::test]
async fn empty_body_ends_without_polling() {
    let replay = Replay::new(EmptyUnpolled, DEFAULT_REPLAY_LIMIT);
    assert!(replay.is_complete());
    timeout(WAIT, replay.complete()).await.unwrap();
    for _ in 0..2 {
        let mut body = replay.attempt().unwrap();
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        assert!(next(&mut body).await.is_none());
    }
    assert_eq!(replay.received(), 0);
}

#[tokio::test]
async fn source_error_ends_the_attempt_and_completes() {
    let (tx, source) = chan(8, None);
    tx.send(data("ab")).await.unwrap();
    tx.send(Err("client reset".into())).await.unwrap();
    let replay = Replay::new(source, DEFAULT_REPLAY_LIMIT);
    let waiter = tokio::spawn({
        let replay = replay.clone();
        async move { replay.complete().await }
    });
    let mut body = replay.attempt().unwrap();
    assert_eq!(next_data(&mut body).await, "ab");
    let err = next(&mut body).await.unwrap().unwrap_err();
    assert_eq!(err.to_string(), "client reset");
    assert!(next(&mut body).await.is_none());
    timeout(WAIT, waiter).await.unwrap().unwrap();
    assert!(replay.is_complete());
    assert!(!replay.replayable());
    assert!(replay.attempt().is_none());
    assert_eq!(replay.received(), 2);
}

#[tokio::test]
async fn panicking_source_fails_the_body_instead_of_poisoning() {
    let replay = Replay::new(Panicking, DEFAULT_REPLAY_LIMIT);
    let mut body = replay.attempt().unwrap();
    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let _ = Pin::new(&mut body).poll_frame(&mut cx);
    }));
    assert!(polled.is_err());
    let err = next(&mut body).await.unwrap().unwrap_err();
    assert!(matches!(
        err.downcast_ref::<ReplayError>(),
        Some(ReplayError::Failed)
    ));
    assert!(replay.is_complete());
    assert!(!replay.replayable());
    assert!(replay.attempt().is_none());
}

#[tokio::test]
async fn complete_resolves_at_end_of_stream() {
    let (tx, source) = chan(8, None);
    let replay = Replay::new(source, DEFAULT_REPLAY_LIMIT);
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let replay = replay.clone();
            tokio::spawn(async move { replay.complete().await })
        })
        .collect();
    // A cancelled waiter must not disturb the others.
    assert!(
        timeout(Duration::from_millis(20), replay.complete())
            .await
            .is_err()
    );
    let mut body = replay.attempt().unwrap();
    tx.send(data("abc")).await.unwrap();
    tx.send(data("defg")).await.unwrap();
    assert_eq!(next_data(&mut body).await, "abc");
    assert_eq!(next_data(&mut body).await, "defg");
    tokio::task::yield_now().await;
    assert!(!replay.is_complete());
    assert!(waiters.iter().all(|w| !w.is_finished()));
    drop(tx);
    assert!(next(&mut body).await.is_none());
    for waiter in waiters {
        timeout(WAIT, waiter).await.unwrap().unwrap();
    }
    assert!(replay.is_complete());
    assert_eq!(replay.received(), 7);
}

#[tokio::test]
async fn large_body_streams_through_the_default_limit() {
    const CHUNK: usize = 16 * 1024;
    const TOTAL: usize = 64 * 1024 * 1024;
    let (tx, source) = chan(4, Some(TOTAL as u64));
    let producer = tokio::spawn(async move {
        let chunk = Bytes::from(vec![7u8; CHUNK]);
        for _ in 0..TOTAL / CHUNK {
            if tx.send(Ok(Frame::data(chunk.clone()))).await.is_err() {
                return;
            }
        }
    });
    let replay = Replay::new(source, DEFAULT_REPLAY_LIMIT);
    let mut body = replay.attempt().unwrap();
    assert_eq!(body.size_hint().exact(), Some(TOTAL as u64));
    let drained = timeout(Duration::from_secs(60), async {
        let mut total = 0;
        while let Some(frame) = body.frame().await {
            total += frame.unwrap().into_data().unwrap().len();
            assert!(replay.buffered_bytes() <= DEFAULT_REPLAY_LIMIT);
        }
        total
    })
    .await
    .expect("large body timed out");
    assert_eq!(drained, TOTAL);
    assert_eq!(replay.received(), TOTAL as u64);
    assert_eq!(replay.buffered_bytes(), 0);
    assert!(replay.is_complete());
    assert!(!replay.replayable());
    assert!(replay.attempt().is_none());
    producer.await.unwrap();
}

/// What the upstream saw: Content-Length, body, trailers.
type Seen = (Option<String>, Bytes, Option<HeaderMap>);

/// Sends each attempt over a real hyper connection (HTTP/1 or h2c) and returns what arrived.
async fn send_attempts(h2: bool, replay: &Replay, attempts: usize) -> Vec<Seen> {
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<Seen>();
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let seen_tx = seen_tx.clone();
        async move {
            let length = req
                .headers()
                .get("content-length")
                .map(|v| v.to_str().unwrap().to_owned());
            let collected = req.into_body().collect().await?;
            let trailers = collected.trailers().cloned();
            seen_tx
                .send((length, collected.to_bytes(), trailers))
                .unwrap();
            Ok::<_, hyper::Error>(hyper::Response::new(http_body_util::Empty::<Bytes>::new()))
        }
    });
    let server = TokioIo::new(server_io);
    let client = TokioIo::new(client_io);
    let mut sender = if h2 {
        tokio::spawn(
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(server, service),
        );
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), client)
            .await
            .unwrap();
        tokio::spawn(conn);
        Err(sender)
    } else {
        tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(server, service));
        let (sender, conn) = hyper::client::conn::http1::handshake(client).await.unwrap();
        tokio::spawn(conn);
        Ok(sender)
    };
    let mut seen = Vec::new();
    for _ in 0..attempts {
        let body = ProxyBody::new(replay.attempt().unwrap());
        let req = hyper::Request::post("http://upstream/").body(body).unwrap();
        let resp = match &mut sender {
            Ok(h1) => timeout(WAIT, h1.send_request(req)).await,
            Err(h2) => timeout(WAIT, h2.send_request(req)).await,
        };
        assert!(resp.unwrap().unwrap().status().is_success());
        seen.push(timeout(WAIT, seen_rx.recv()).await.unwrap().unwrap());
    }
    seen
}

#[tokio::test]
async fn attempts_go_over_hyper_connections_intact() {
    for h2 in [false, true] {
        let (tx, source) = chan(8, Some(11));
        tx.send(data("hello")).await.unwrap();
        tx.send(data(" world")).await.unwrap();
        let replay = Replay::new(source, DEFAULT_REPLAY_LIMIT);
        let seen = send_attempts(h2, &replay, 2).await;
        let expected = (
            Some("11".to_owned()),
            Bytes::from_static(b"hello world"),
            None,
        );
        assert_eq!(seen, vec![expected.clone(), expected], "h2: {h2}");

        // Trailers need h2; without a size the HTTP/1 attempt is chunked.
        let (tx, source) = chan(8, None);
        tx.send(data("grpc")).await.unwrap();
        tx.send(Ok(Frame::trailers(trailers()))).await.unwrap();
        drop(tx);
        let replay = Replay::new(source, DEFAULT_REPLAY_LIMIT);
        let seen = send_attempts(h2, &replay, 2).await;
        let expected = (None, Bytes::from_static(b"grpc"), h2.then(trailers));
        assert_eq!(seen, vec![expected.clone(), expected], "h2: {h2}");
    }
}
