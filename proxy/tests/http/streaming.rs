//! Bodies that stream (large uploads and downloads, a slow reader) and connections that
//! leave HTTP (WebSocket).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::bodies::*;
use crate::harness::*;

const ROUTES: &str = "routes: [{match: {prefix: /}, route: {cluster: app, timeout: 0s}}]";
const CLUSTERS: &str = "- {name: app, endpoints: [\"{app}\"]}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mebibytes_stream_both_ways_intact() {
    let app = streaming_server().await;
    let proxy = proxy(ROUTES, CLUSTERS, &[("app", app)]).await;
    let len = 64 << 20;
    let (up, down) = tokio::join!(upload(proxy.addr, len), download(proxy.addr, len));
    assert_eq!(up, format!("{len} intact"));
    assert_eq!(down, len);
    let reported = proxy.recorder.wait_for(2).await;
    let mut sizes: Vec<(u64, u64)> = reported
        .iter()
        .map(|r| (r.outcome.request_bytes, r.outcome.response_bytes))
        .collect();
    sizes.sort();
    assert_eq!(sizes[0].0, 0, "the download sent no body");
    assert_eq!(sizes[0].1, len);
    assert_eq!(sizes[1].0, len);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_holds_up_no_one_else() {
    let app = streaming_server().await;
    let proxy = proxy(ROUTES, CLUSTERS, &[("app", app)]).await;
    let len: u64 = 4 << 20;
    let slow_done = Arc::new(AtomicBool::new(false));
    let done = slow_done.clone();
    let addr = proxy.addr;
    let slow = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(format!("GET /download/{len} HTTP/1.1\r\nhost: app\r\n\r\n").as_bytes())
            .await
            .unwrap();
        // Reads a little at a time, far slower than the proxy could send.
        let mut received = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            received.extend_from_slice(&buf[..n]);
            let body_start = received.windows(4).position(|w| w == b"\r\n\r\n");
            if let Some(start) = body_start
                && received.len() - (start + 4) >= len as usize
            {
                done.store(true, Ordering::SeqCst);
                let body = &received[start + 4..];
                return body
                    .iter()
                    .enumerate()
                    .all(|(i, b)| *b == pattern(i as u64));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let mut client = Client::h1(proxy.addr).await;
    for _ in 0..20 {
        let reply = client.get("app", "/download/1000", &[]).await;
        assert_eq!((reply.status, reply.body.len()), (200, 1000));
    }
    assert!(
        !slow_done.load(Ordering::SeqCst),
        "the fast requests should finish while the slow reader is still reading"
    );
    let intact = tokio::time::timeout(PATIENCE * 3, slow)
        .await
        .unwrap()
        .unwrap();
    assert!(intact, "the slow reader got every byte right");
}

#[tokio::test]
async fn websocket_upgrades_become_a_tunnel() {
    let app = streaming_server().await;
    let proxy = proxy(ROUTES, CLUSTERS, &[("app", app)]).await;
    let mut client = Client::h1(proxy.addr).await;
    let response = client
        .request(
            "GET",
            "app",
            "/ws",
            &[
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-version", "13"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
            Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    assert_eq!(response.headers()["upgrade"], "websocket");
    let upgraded = tokio::time::timeout(PATIENCE, hyper::upgrade::on(response))
        .await
        .unwrap()
        .expect("the client side upgrades");
    let mut io = TokioIo::new(upgraded);
    for message in [&b"ping"[..], b"a longer frame of bytes", b"\x81\x05hello"] {
        io.write_all(message).await.unwrap();
        let mut echo = vec![0u8; message.len()];
        tokio::time::timeout(PATIENCE, io.read_exact(&mut echo))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(echo, message);
    }
    drop(io);
    let reported = proxy.recorder.wait_for(1).await;
    assert_eq!(reported[0].outcome.response_code, 101);
    assert!(reported[0].outcome.request_bytes >= 31);
}
