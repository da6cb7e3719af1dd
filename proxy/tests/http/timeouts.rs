//! Route timeouts (504 `UT`, the upstream request cancelled) and the stream idle timeout.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::harness::*;

/// Waits until the upstream has seen `n` connections close.
async fn wait_closed(app: &Upstream, n: usize) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let closed = app.closed.notified();
            if app.closed_count.load(Ordering::SeqCst) >= n {
                return;
            }
            closed.await;
        }
    })
    .await
    .expect("the upstream connection was not closed");
}

#[tokio::test]
async fn a_route_timeout_answers_504_ut_and_cancels_the_upstream_request() {
    let (got, mut got_rx) = tokio::sync::mpsc::unbounded_channel();
    let app = Upstream::start(move |_, _| {
        let got = got.clone();
        async move {
            let _ = got.send(());
            std::future::pending::<()>().await;
            text(200, "never")
        }
    })
    .await;
    let routes = "routes: [{match: {prefix: /}, route: {cluster: app, timeout: 200ms}}]";
    let proxy = proxy(
        routes,
        "- {name: app, endpoints: [\"{app}\"]}",
        &[("app", app.addr)],
    )
    .await;
    for mut client in [Client::h1(proxy.addr).await, Client::h2(proxy.addr).await] {
        let started = tokio::time::Instant::now();
        let reply = client.get("app", "/slow", &[]).await;
        assert_eq!(
            (reply.status, reply.text()),
            (504, "upstream request timeout")
        );
        assert!(started.elapsed() >= Duration::from_millis(200));
        got_rx
            .recv()
            .await
            .expect("the request reached the upstream");
    }
    // HTTP/1.1 upstream: the connection carrying the abandoned request is closed.
    wait_closed(&app, 1).await;
    let reported = proxy.recorder.wait_for(2).await;
    for r in &reported {
        assert_eq!(r.outcome.response_code, 504);
        assert_eq!(r.outcome.flags.to_string(), "UT");
    }
}

#[tokio::test]
async fn a_zero_timeout_means_none() {
    let app = Upstream::start(|_, _| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        text(200, "late")
    })
    .await;
    let routes = "routes: [{match: {prefix: /}, route: {cluster: app, timeout: 0s}}]";
    let proxy = proxy(
        routes,
        "- {name: app, endpoints: [\"{app}\"]}",
        &[("app", app.addr)],
    )
    .await;
    let reply = Client::h1(proxy.addr).await.get("app", "/", &[]).await;
    assert_eq!((reply.status, reply.text()), (200, "late"));
}

/// A server that answers headers and part of a body, then goes quiet.
async fn stalling_server() -> std::net::SocketAddr {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
                    .await;
                let _ = stream.read(&mut buf).await; // until the proxy hangs up
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_response_that_stops_moving_is_ended_by_the_stream_idle_timeout() {
    let app = stalling_server().await;
    let routes = "streamIdleTimeout: 200ms\nroutes: [{match: {prefix: /}, route: {cluster: app, timeout: 0s}}]";
    let proxy = proxy(
        routes,
        "- {name: app, endpoints: [\"{app}\"]}",
        &[("app", app)],
    )
    .await;
    let mut client = Client::h1(proxy.addr).await;
    let response = client
        .request("GET", "app", "/", &[], Default::default())
        .await
        .expect("headers arrive");
    assert_eq!(response.status(), 200);
    use http_body_util::BodyExt;
    let body = tokio::time::timeout(PATIENCE, response.into_body().collect()).await;
    assert!(
        body.expect("ended in time").is_err(),
        "the body must end in error"
    );
    let reported = proxy.recorder.wait_for(1).await;
    assert_eq!(reported[0].outcome.flags.to_string(), "SI");
    assert_eq!(reported[0].outcome.response_bytes, 7);
}
