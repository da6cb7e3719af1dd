//! Choosing the virtual host, route and cluster of each request.

use crate::harness::*;

const CANARY: &str = r#"
virtualHosts:
  - domains: ["reviews", "reviews:9080"]
    routes:
      - match:
          prefix: /
          headers: [{name: cookie, regex: ".*group=dev.*"}]
        route: {cluster: v2}
      - match: {path: /ratings}
        route: {cluster: ratings}
      - {prefix: /, cluster: v1}
"#;

const CLUSTERS: &str = r#"
- {name: v1, endpoints: ["{v1}"]}
- {name: v2, endpoints: ["{v2}"]}
- {name: ratings, endpoints: ["{ratings}"]}
"#;

#[tokio::test]
async fn cookie_routes_dev_to_v2_and_everyone_else_to_v1() {
    let (v1, v2, ratings) = (
        Upstream::named("v1").await,
        Upstream::named("v2").await,
        Upstream::named("ratings").await,
    );
    let proxy = proxy(
        CANARY,
        CLUSTERS,
        &[("v1", v1.addr), ("v2", v2.addr), ("ratings", ratings.addr)],
    )
    .await;
    for mut client in [Client::h1(proxy.addr).await, Client::h2(proxy.addr).await] {
        let plain = client.get("reviews:9080", "/reviews/1", &[]).await;
        assert_eq!((plain.status, plain.text()), (200, "v1"));
        let dev = client
            .get(
                "reviews",
                "/reviews/1",
                &[("cookie", "user=jason; group=dev")],
            )
            .await;
        assert_eq!((dev.status, dev.text()), (200, "v2"));
        let other = client
            .get("reviews", "/", &[("cookie", "group=prod")])
            .await;
        assert_eq!(other.text(), "v1");
        let by_path = client.get("reviews", "/ratings", &[]).await;
        assert_eq!(by_path.text(), "ratings");
        let not_exact = client.get("reviews", "/ratings/2", &[]).await;
        assert_eq!(not_exact.text(), "v1");
    }
    let reported = proxy.recorder.wait_for(10).await;
    let clusters: Vec<&str> = reported.iter().map(|r| r.cluster.as_str()).collect();
    assert_eq!(
        clusters,
        [
            "v1", "v2", "v1", "ratings", "v1", "v1", "v2", "v1", "ratings", "v1"
        ]
    );
    assert!(reported.iter().all(|r| r.outcome.response_code == 200));
    // The upstream saw the client's authority, not its own address.
    assert!(v2.seen().iter().all(|s| {
        s.headers.get("host").is_some_and(|h| h == "reviews") || s.uri.contains("//reviews")
    }));
}

#[tokio::test]
async fn no_route_is_404_nr_and_a_missing_cluster_503_nc() {
    let v1 = Upstream::named("v1").await;
    let routes = r#"
virtualHosts:
  - domains: [reviews]
    routes:
      - {prefix: /gone, cluster: missing}
      - {prefix: /api, cluster: v1}
"#;
    let clusters = "- {name: v1, endpoints: [\"{v1}\"]}\n- {name: missing, type: BLACK_HOLE}";
    // As when RDS names a cluster CDS has not delivered.
    let proxy = proxy_with(routes, clusters, &[("v1", v1.addr)], |s| {
        s.clusters.remove("missing");
    })
    .await;
    let mut client = Client::h1(proxy.addr).await;
    let wrong_host = client.get("details", "/api", &[]).await;
    assert_eq!(wrong_host.status, 404);
    let wrong_path = client.get("reviews", "/other", &[]).await;
    assert_eq!(wrong_path.status, 404);
    let gone = client.get("reviews", "/gone", &[]).await;
    assert_eq!(gone.status, 503);
    let ok = client.get("reviews", "/api", &[]).await;
    assert_eq!(ok.status, 200);
    let reported = proxy.recorder.wait_for(4).await;
    let flags: Vec<String> = reported
        .iter()
        .map(|r| r.outcome.flags.to_string())
        .collect();
    assert_eq!(flags, ["NR", "NR", "NC", "-"]);
    assert_eq!(v1.requests(), 1);
}

/// Heads are bounded like Envoy's 60 KiB default: a 50 KiB header passes, an 80 KiB one
/// is answered 431 by the proxy and never reaches the app.
#[tokio::test]
async fn request_heads_up_to_64_kib_pass_and_larger_ones_get_431() {
    let v1 = Upstream::named("v1").await;
    let routes =
        "virtualHosts:\n  - domains: [reviews]\n    routes:\n      - {prefix: /, cluster: v1}\n";
    let proxy = proxy(
        routes,
        "- {name: v1, endpoints: [\"{v1}\"]}",
        &[("v1", v1.addr)],
    )
    .await;
    let big = "x".repeat(50 * 1024);
    let mut client = Client::h1(proxy.addr).await;
    let passed = client.get("reviews", "/", &[("x-big", &big)]).await;
    assert_eq!(passed.status, 200);
    let huge = "x".repeat(80 * 1024);
    let mut client = Client::h1(proxy.addr).await;
    let refused = client.get("reviews", "/", &[("x-big", &huge)]).await;
    assert_eq!(refused.status, 431);
    assert_eq!(v1.requests(), 1);
}

#[tokio::test]
async fn pipelined_and_chunked_http1_requests_are_answered_in_order() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = Upstream::start(|seen, _| async move {
        let body: &'static str = if seen.uri == "/one" {
            "first"
        } else {
            "second"
        };
        text(200, body)
    })
    .await;
    let proxy = proxy(
        "routes: [{prefix: /, cluster: app}]",
        "- {name: app, endpoints: [\"{app}\"]}",
        &[("app", app.addr)],
    )
    .await;
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    // Two requests in one write, the first with a chunked body, the second closing.
    stream
        .write_all(
            b"POST /one HTTP/1.1\r\nhost: app\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n\
              GET /two HTTP/1.1\r\nhost: app\r\nconnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(PATIENCE, stream.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let first = answer.find("first").expect("first answer");
    let second = answer.find("second").expect("second answer");
    assert!(first < second, "answers in request order: {answer}");
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 2);
    assert_eq!(app.seen()[0].body_len, 11, "the chunked body arrived whole");
}

#[tokio::test]
async fn the_cluster_decides_the_upstream_protocol() {
    let app = Upstream::named("app").await;
    let clusters = "- {name: h2, protocol: HTTP2, endpoints: [\"{app}\"]}\n- {name: h1, protocol: HTTP1, endpoints: [\"{app}\"]}";
    let routes = "routes: [{prefix: /h2, cluster: h2}, {prefix: /, cluster: h1}]";
    let proxy = proxy(routes, clusters, &[("app", app.addr)]).await;
    Client::h1(proxy.addr)
        .await
        .get("reviews", "/h2", &[])
        .await;
    Client::h2(proxy.addr)
        .await
        .get("reviews", "/h1", &[])
        .await;
    let seen = app.seen();
    assert_eq!(
        seen[0].version,
        hyper::Version::HTTP_2,
        "HTTP/1.1 in, h2c out"
    );
    assert_eq!(seen[0].uri, "http://reviews/h2");
    assert_eq!(
        seen[1].version,
        hyper::Version::HTTP_11,
        "h2c in, HTTP/1.1 out"
    );
    assert_eq!(seen[1].headers["host"], "reviews");
}

#[tokio::test]
async fn grpc_requests_are_labelled_and_retried_on_their_status() {
    let app = Upstream::start(|_, n| async move {
        let status = if n == 0 { "14" } else { "0" };
        hyper::Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", status)
            .body(http_body_util::Full::new(hyper::body::Bytes::new()))
            .unwrap()
    })
    .await;
    let routes = r#"
routes:
  - match: {prefix: /}
    route: {cluster: app, retryPolicy: {retryOn: unavailable, numRetries: 1, backoff: {baseInterval: 1ms}}}
"#;
    let proxy = proxy(
        routes,
        "- {name: app, protocol: HTTP2, endpoints: [\"{app}\"]}",
        &[("app", app.addr)],
    )
    .await;
    let reply = Client::h2(proxy.addr)
        .await
        .send(
            "POST",
            "greeter",
            "/helloworld.Greeter/SayHello",
            &[("content-type", "application/grpc"), ("te", "trailers")],
            hyper::body::Bytes::from_static(b"\0\0\0\0\0"),
        )
        .await;
    assert_eq!(
        reply.header("grpc-status"),
        Some("0"),
        "UNAVAILABLE was retried"
    );
    assert_eq!(app.requests(), 2);
    assert_eq!(
        app.seen()[0].headers["te"],
        "trailers",
        "te: trailers survives for gRPC"
    );
    let reported = proxy.recorder.wait_for(1).await;
    assert_eq!(
        reported[0].outcome.protocol,
        skiff_proxy::metrics::RequestProtocol::Grpc
    );
    assert_eq!(reported[0].outcome.grpc_status, Some(0));
}

#[tokio::test]
async fn a_new_route_table_applies_to_the_next_request_on_an_open_connection() {
    let (v1, v2) = (Upstream::named("v1").await, Upstream::named("v2").await);
    let addrs = [("v1", v1.addr), ("v2", v2.addr), ("ratings", v1.addr)];
    let to = |cluster: &str| format!("routes: [{{prefix: /, cluster: {cluster}}}]");
    let proxy = proxy(&to("v1"), CLUSTERS, &addrs).await;
    for mut client in [Client::h1(proxy.addr).await, Client::h2(proxy.addr).await] {
        assert_eq!(client.get("reviews", "/", &[]).await.text(), "v1");
        proxy.reconfigure(&to("v2"), CLUSTERS, &addrs);
        assert_eq!(
            client.get("reviews", "/", &[]).await.text(),
            "v2",
            "the same connection follows the new table"
        );
        proxy.reconfigure(&to("v1"), CLUSTERS, &addrs);
    }
}
