//! The app in every server pod (`skiff-bench app`, hidden): one thread serving HTTP/1.1
//! keep-alive and h2c (prior knowledge) on one port — a fixed small body for GETs, the
//! received body's length for requests with a body — and a TCP sink for the bulk scenario.
//!
//! The sink reads frames of [`FRAME`] bytes whose first byte is [`MORE`] or [`LAST`]; after
//! the last one it answers the number of bytes received as a big-endian u64. The framing
//! (rather than a half-close) keeps the measurement independent of how each proxy
//! propagates a shutdown.

use std::convert::Infallible;

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The answer to a GET (small, like an API's JSON reply).
pub const BODY: &[u8] = b"{\"reviews\":[{\"id\":1,\"stars\":5}]}\n";
/// Size of one bulk frame, header byte included.
pub const FRAME: usize = 64 * 1024;
pub const MORE: u8 = 0;
pub const LAST: u8 = 1;

/// Serves until killed.
pub fn run(http_port: u16, sink_port: u16) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    rt.block_on(async move {
        let http = TcpListener::bind(("0.0.0.0", http_port))
            .await
            .with_context(|| format!("bind the app on {http_port}"))?;
        let sink = TcpListener::bind(("0.0.0.0", sink_port))
            .await
            .with_context(|| format!("bind the sink on {sink_port}"))?;
        tokio::spawn(async move {
            while let Ok((stream, _)) = sink.accept().await {
                tokio::spawn(drain(stream));
            }
        });
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder.http2().max_concurrent_streams(1024);
        loop {
            let (stream, _) = http.accept().await.context("accept")?;
            let _ = stream.set_nodelay(true);
            let builder = builder.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(answer);
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let has_body = req.headers().contains_key(hyper::header::CONTENT_LENGTH)
        || req.headers().contains_key(hyper::header::TRANSFER_ENCODING)
        || req.method() == hyper::Method::POST;
    let body = if has_body {
        let mut length = 0usize;
        let mut body = req.into_body();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => length += frame.data_ref().map_or(0, |d| d.len()),
                Err(_) => break,
            }
        }
        Bytes::from(format!("{length}\n"))
    } else {
        Bytes::from_static(BODY)
    };
    Ok(Response::builder()
        .header("content-type", "text/plain")
        .body(Full::new(body))
        .expect("a valid response"))
}

/// The TCP sink: counts framed bytes until the last frame, then answers the count.
async fn drain(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut frame = vec![0u8; FRAME];
    let mut total = 0u64;
    loop {
        if stream.read_exact(&mut frame).await.is_err() {
            return;
        }
        total += FRAME as u64;
        if frame[0] == LAST {
            break;
        }
    }
    let _ = stream.write_all(&total.to_be_bytes()).await;
    let _ = stream.shutdown().await;
}
