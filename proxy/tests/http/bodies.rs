#![allow(dead_code)] // Shared by two test binaries; each uses part of it.

//! The streaming test server and clients: pattern bodies that either end can check byte
//! by byte without holding them, in both test binaries that stream.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use hyper::body::{Body, Bytes, Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::Client;

pub const CHUNK: usize = 64 * 1024;

/// The byte at `position` of every test body, so either end can check what arrived.
pub fn pattern(position: u64) -> u8 {
    (position % 251) as u8
}

/// A response body of `len` pattern bytes, made chunk by chunk as it is read.
pub struct PatternBody {
    sent: u64,
    len: u64,
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent >= self.len {
            return Poll::Ready(None);
        }
        let n = (self.len - self.sent).min(CHUNK as u64);
        let chunk: Vec<u8> = (self.sent..self.sent + n).map(pattern).collect();
        self.sent += n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    /// Exact, so the response carries a content-length rather than chunked framing.
    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.len - self.sent)
    }
}

type Reply = Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>;

/// `POST /upload` checks a pattern body and answers with its length; `GET /download/N`
/// streams N pattern bytes; `GET /ws` upgrades and echoes.
pub async fn streaming_server() -> SocketAddr {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|request: Request<Incoming>| async move {
                    Ok::<Reply, Infallible>(serve(request).await)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn serve(mut request: Request<Incoming>) -> Reply {
    let boxed = |b: http_body_util::Full<Bytes>| b.boxed();
    let path = request.uri().path().to_owned();
    if path == "/ws" {
        let on = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            let Ok(upgraded) = on.await else { return };
            let mut io = TokioIo::new(upgraded);
            let mut buf = [0u8; 1024];
            while let Ok(n) = io.read(&mut buf).await {
                if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        });
        return Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(boxed(Default::default()))
            .unwrap();
    }
    if let Some(n) = path.strip_prefix("/download/") {
        let len = n.parse().unwrap_or(0);
        return Response::new(PatternBody { sent: 0, len }.boxed());
    }
    let mut body = request.into_body();
    let mut at = 0u64;
    let mut intact = true;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            intact = false;
            break;
        };
        if let Some(data) = frame.data_ref() {
            for b in data.iter() {
                intact &= *b == pattern(at);
                at += 1;
            }
        }
    }
    let answer = format!("{at} {}", if intact { "intact" } else { "corrupt" });
    Response::new(boxed(http_body_util::Full::new(Bytes::from(answer))))
}

/// Uploads `len` pattern bytes with a raw HTTP/1.1 request and returns the answer's body.
pub async fn upload(proxy: SocketAddr, len: u64) -> String {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nhost: app\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(CHUNK as u64);
        let chunk: Vec<u8> = (at..at + n).map(pattern).collect();
        stream.write_all(&chunk).await.unwrap();
        at += n;
    }
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or(response)
}

/// Downloads `len` pattern bytes through hyper, checking every byte; returns the count.
pub async fn download(proxy: SocketAddr, len: u64) -> u64 {
    let mut client = Client::h1(proxy).await;
    let response = client
        .request("GET", "app", &format!("/download/{len}"), &[], Bytes::new())
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut at = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("the download broke");
        if let Some(data) = frame.data_ref() {
            for b in data.iter() {
                assert_eq!(*b, pattern(at), "byte {at} of the download");
                at += 1;
            }
        }
    }
    at
}
