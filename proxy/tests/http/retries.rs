//! Envoy's retry semantics: conditions, limits, other hosts, replayable bodies, budgets.

use std::net::SocketAddr;

use hyper::body::Bytes;

use crate::harness::*;

/// An address that refuses connections: bound but not listening, and held (keep the
/// socket) so that no other test process can take the port meanwhile.
fn closed_port() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

fn routes(policy: &str) -> String {
    format!(
        r#"
virtualHosts:
  - domains: ["*"]
    includeRequestAttemptCount: true
    routes:
      - match: {{prefix: /}}
        route:
          cluster: app
          retryPolicy: {policy}
"#
    )
}

const APP: &str = "- {name: app, endpoints: [\"{app}\"]}";

#[tokio::test]
async fn a_server_failing_twice_is_retried_until_it_answers() {
    let app = Upstream::start(|_, n| async move {
        if n < 2 {
            text(503, "busy")
        } else {
            text(200, "ok")
        }
    })
    .await;
    let proxy = proxy(
        &routes("{retryOn: 5xx, numRetries: 2, backoff: {baseInterval: 1ms}}"),
        APP,
        &[("app", app.addr)],
    )
    .await;
    let reply = Client::h1(proxy.addr).await.get("app", "/", &[]).await;
    assert_eq!((reply.status, reply.text()), (200, "ok"));
    let counts: Vec<String> = app
        .seen()
        .iter()
        .map(|s| {
            s.headers["x-envoy-attempt-count"]
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(counts, ["1", "2", "3"]);
    let reported = proxy.recorder.wait_for(1).await;
    assert_eq!(reported[0].outcome.response_code, 200);
    assert!(reported[0].outcome.flags.is_empty());
}

#[tokio::test]
async fn retries_stop_at_num_retries_with_urx() {
    let app = Upstream::start(|_, _| async { text(503, "busy") }).await;
    let proxy = proxy(
        &routes("{retryOn: \"gateway-error\", numRetries: 2, backoff: {baseInterval: 1ms}}"),
        APP,
        &[("app", app.addr)],
    )
    .await;
    let reply = Client::h1(proxy.addr).await.get("app", "/", &[]).await;
    assert_eq!(
        (reply.status, reply.text()),
        (503, "busy"),
        "the last answer is passed on"
    );
    assert_eq!(app.requests(), 3);
    let reported = proxy.recorder.wait_for(1).await;
    assert_eq!(reported[0].outcome.flags.to_string(), "URX");
}

#[tokio::test]
async fn responses_outside_the_conditions_are_not_retried() {
    let app = Upstream::start(|_, n| async move {
        if n == 0 {
            text(500, "broken")
        } else {
            text(429, "slow down")
        }
    })
    .await;
    let proxy = proxy(
        &routes("{retryOn: \"retriable-status-codes\", retriableStatusCodes: [500], numRetries: 3, backoff: {baseInterval: 1ms}}"),
        APP,
        &[("app", app.addr)],
    )
    .await;
    let reply = Client::h1(proxy.addr).await.get("app", "/", &[]).await;
    assert_eq!(reply.status, 429, "500 is listed and retried, 429 is not");
    assert_eq!(app.requests(), 2);
}

#[tokio::test]
async fn a_connect_failure_is_retried_on_another_endpoint() {
    let app = Upstream::named("live").await;
    let (_held, dead) = closed_port();
    let clusters = "- {name: app, lbPolicy: ROUND_ROBIN, endpoints: [\"{dead}\", \"{app}\"]}";
    let addrs = [("app", app.addr), ("dead", dead)];
    let with_retry = proxy(
        &routes("{retryOn: connect-failure, numRetries: 1, retryHostPredicate: [previous_hosts], backoff: {baseInterval: 1ms}}"),
        clusters,
        &addrs,
    )
    .await;
    let mut client = Client::h1(with_retry.addr).await;
    for _ in 0..10 {
        let reply = client.get("app", "/", &[]).await;
        assert_eq!((reply.status, reply.text()), (200, "live"));
    }
    assert_eq!(app.requests(), 10);

    // Without the policy, the dead endpoint's turns fail with UF: the test above can fail.
    let without = proxy("routes: [{prefix: /, cluster: app}]", clusters, &addrs).await;
    let mut client = Client::h1(without.addr).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(client.get("app", "/", &[]).await.status);
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 503, 503]);
    let flags: Vec<String> = without
        .recorder
        .wait_for(4)
        .await
        .iter()
        .map(|r| r.outcome.flags.to_string())
        .filter(|f| f != "-")
        .collect();
    assert_eq!(flags, ["UF", "UF"]);
}

#[tokio::test]
async fn bodies_are_replayed_only_when_they_fit_the_buffer() {
    let app = Upstream::start(|_, _| async { text(503, "busy") }).await;
    let proxy = proxy(
        &routes("{retryOn: 5xx, numRetries: 2, backoff: {baseInterval: 1ms}}"),
        APP,
        &[("app", app.addr)],
    )
    .await;
    let mut client = Client::h1(proxy.addr).await;
    let small = Bytes::from(vec![b's'; 1024]);
    let reply = client.send("POST", "app", "/", &[], small).await;
    assert_eq!(reply.status, 503);
    let lens: Vec<usize> = app.seen().iter().map(|s| s.body_len).collect();
    assert_eq!(
        lens,
        [1024, 1024, 1024],
        "every attempt carried the whole body"
    );

    let large = Bytes::from(vec![b'l'; 200 * 1024]);
    let reply = client.send("POST", "app", "/", &[], large).await;
    assert_eq!(reply.status, 503);
    let lens: Vec<usize> = app.seen().iter().skip(3).map(|s| s.body_len).collect();
    assert_eq!(
        lens,
        [200 * 1024],
        "a body beyond the replay buffer is sent once"
    );
}

#[tokio::test]
async fn an_exhausted_retry_budget_stops_retries() {
    let app = Upstream::start(|_, _| async { text(503, "busy") }).await;
    let clusters = "- {name: app, endpoints: [\"{app}\"], retryBudget: {budgetPercent: 0, minRetryConcurrency: 0}}";
    let proxy = proxy(
        &routes("{retryOn: 5xx, numRetries: 3, backoff: {baseInterval: 1ms}}"),
        clusters,
        &[("app", app.addr)],
    )
    .await;
    let reply = Client::h1(proxy.addr).await.get("app", "/", &[]).await;
    assert_eq!(reply.status, 503);
    assert_eq!(app.requests(), 1, "no retry fits a zero budget");
}

#[tokio::test]
async fn a_per_try_timeout_moves_on_to_the_next_try() {
    let app = Upstream::start(|_, n| async move {
        if n == 0 {
            // The first try never answers; the proxy gives up on it.
            std::future::pending::<()>().await;
        }
        text(200, "second")
    })
    .await;
    let proxy = proxy(
        &routes(
            "{retryOn: 5xx, numRetries: 1, perTryTimeout: 100ms, backoff: {baseInterval: 1ms}}",
        ),
        APP,
        &[("app", app.addr)],
    )
    .await;
    let reply = Client::h1(proxy.addr).await.get("app", "/", &[]).await;
    assert_eq!((reply.status, reply.text()), (200, "second"));
    assert_eq!(app.requests(), 2);
    // The abandoned try's connection was closed, cancelling it upstream.
    tokio::time::timeout(PATIENCE, async {
        while app.closed_count.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            let closed = app.closed.notified();
            if app.closed_count.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                break;
            }
            closed.await;
        }
    })
    .await
    .expect("the first try's upstream connection was not closed");
}
