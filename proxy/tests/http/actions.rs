//! What a route does to a request: weighted splits, rewrites, header changes, and the
//! headers the proxy itself manages.

use crate::harness::*;

const SPLIT_CLUSTERS: &str = r#"
- {name: v1, endpoints: ["{v1}"]}
- {name: v2, endpoints: ["{v2}"]}
"#;

/// Sends `n` requests over a few h2c connections and counts the answers by body.
async fn split(proxy: &TestProxy, n: usize) -> std::collections::HashMap<String, usize> {
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let addr = proxy.addr;
        tasks.push(tokio::spawn(async move {
            let mut client = Client::h2(addr).await;
            let mut bodies = Vec::new();
            for _ in 0..n / 4 {
                bodies.push(client.get("reviews", "/", &[]).await.text().to_owned());
            }
            bodies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    tally(all.iter().map(String::as_str))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_clusters_split_in_proportion() {
    let (v1, v2) = (Upstream::named("v1").await, Upstream::named("v2").await);
    let addrs = [("v1", v1.addr), ("v2", v2.addr)];
    // Binomial bounds at six standard deviations: a correct split fails about once in
    // half a billion runs; a split off by a few points fails every time.
    let half = proxy(
        "routes: [{prefix: /, weightedClusters: [{name: v1, weight: 50}, {name: v2, weight: 50}]}]",
        SPLIT_CLUSTERS,
        &addrs,
    )
    .await;
    let counts = split(&half, 2000).await;
    let v2_count = counts.get("v2").copied().unwrap_or(0);
    assert!((866..=1134).contains(&v2_count), "50/50 gave {counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 2000);

    // The seeds' canary: 1 % to v2. Over 8000 requests, 80 expected, sigma 8.9.
    let canary = proxy(
        "routes: [{prefix: /, weightedClusters: [{name: v1, weight: 99}, {name: v2, weight: 1}]}]",
        SPLIT_CLUSTERS,
        &addrs,
    )
    .await;
    let counts = split(&canary, 8000).await;
    let v2_count = counts.get("v2").copied().unwrap_or(0);
    assert!((27..=133).contains(&v2_count), "99/1 gave {counts:?}");
}

#[tokio::test]
async fn rewrites_change_path_and_authority_and_keep_the_query() {
    let app = Upstream::named("app").await;
    let routes = r#"
virtualHosts:
  - domains: ["*"]
    routes:
      - match: {pathSeparatedPrefix: /api}
        route: {cluster: app, prefixRewrite: /v1/api, hostRewrite: reviews.internal}
      - match: {regex: "/service/[^/]+/.*"}
        route: {cluster: app, regexRewrite: {pattern: "^/service/([^/]+)", substitution: "/\\1"}}
      - {prefix: /, cluster: app}
"#;
    let proxy = proxy(
        routes,
        "- {name: app, endpoints: [\"{app}\"]}",
        &[("app", app.addr)],
    )
    .await;
    let mut h1 = Client::h1(proxy.addr).await;
    h1.get("reviews", "/api/books?id=7", &[]).await;
    h1.get("reviews", "/service/ratings/stars?x=1", &[]).await;
    h1.get("reviews", "/apix", &[]).await;
    let mut h2 = Client::h2(proxy.addr).await;
    h2.get("reviews", "/api", &[]).await;
    let seen = app.seen();
    assert_eq!(seen[0].uri, "/v1/api/books?id=7");
    assert_eq!(seen[0].headers["host"], "reviews.internal");
    assert_eq!(seen[0].headers["x-envoy-original-path"], "/api/books?id=7");
    assert_eq!(seen[1].uri, "/ratings/stars?x=1");
    assert_eq!(seen[2].uri, "/apix", "not under /api: no rewrite");
    assert!(!seen[2].headers.contains_key("x-envoy-original-path"));
    // h2c upstream (the client's own version): the authority travels as :authority.
    assert_eq!(seen[3].version, hyper::Version::HTTP_2);
    assert_eq!(seen[3].uri, "http://reviews.internal/v1/api");
}

#[tokio::test]
async fn header_mutations_apply_at_every_level() {
    let app = Upstream::start(|_, _| async {
        let mut r = text(200, "app");
        r.headers_mut()
            .insert("server", "app-server".parse().unwrap());
        r.headers_mut()
            .insert("x-internal", "secret".parse().unwrap());
        r
    })
    .await;
    let routes = r#"
requestHeadersToAdd: [{name: x-table, value: t}]
responseHeadersToRemove: [x-internal]
virtualHosts:
  - domains: ["*"]
    requestHeadersToAdd: [{name: x-env, value: vhost, append: false}]
    responseHeadersToAdd: [{name: x-mesh, value: skiff}]
    routes:
      - match: {prefix: /}
        route: {cluster: app}
        requestHeadersToAdd: [{name: x-route, value: r}]
        requestHeadersToRemove: [x-drop]
        responseHeadersToRemove: [server]
"#;
    let proxy = proxy(
        routes,
        "- {name: app, endpoints: [\"{app}\"]}",
        &[("app", app.addr)],
    )
    .await;
    let reply = Client::h1(proxy.addr)
        .await
        .get("reviews", "/", &[("x-drop", "1"), ("x-env", "client")])
        .await;
    let seen = &app.seen()[0];
    assert_eq!(seen.headers["x-table"], "t");
    assert_eq!(seen.headers["x-route"], "r");
    assert_eq!(seen.headers["x-env"], "vhost", "overwritten, not appended");
    assert!(!seen.headers.contains_key("x-drop"));
    assert_eq!(reply.header("x-mesh"), Some("skiff"));
    assert_eq!(reply.header("server"), None);
    assert_eq!(reply.header("x-internal"), None);
    assert!(reply.header("x-envoy-upstream-service-time").is_some());
}

#[tokio::test]
async fn proxy_headers_request_id_forwarding_and_trace_context() {
    let app = Upstream::named("app").await;
    let routes = "useRemoteAddress: true\nroutes: [{prefix: /, cluster: app}]";
    let proxy = proxy(
        routes,
        "- {name: app, endpoints: [\"{app}\"]}",
        &[("app", app.addr)],
    )
    .await;
    let mut client = Client::h1(proxy.addr).await;
    client
        .get(
            "reviews",
            "/",
            &[
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
                ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
                ("x-forwarded-for", "192.0.2.1"),
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "1"),
            ],
        )
        .await;
    client
        .get("reviews", "/", &[("x-request-id", "my-id")])
        .await;
    let seen = app.seen();
    let id = seen[0].headers["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 36, "a generated UUID: {id}");
    assert_eq!(&id[14..15], "4");
    assert_eq!(seen[1].headers["x-request-id"], "my-id");
    assert_eq!(
        seen[0].headers["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(
        seen[0].headers["x-b3-traceid"],
        "80f198ee56343ba864fe8b2a57d3eff7"
    );
    assert_eq!(seen[0].headers["x-forwarded-for"], "192.0.2.1, 127.0.0.1");
    assert_eq!(seen[0].headers["x-forwarded-proto"], "http");
    assert!(
        !seen[0].headers.contains_key("x-hop"),
        "named in Connection: hop-by-hop"
    );
}

#[tokio::test]
async fn direct_responses_need_no_upstream() {
    let routes = r#"
virtualHosts:
  - domains: ["*"]
    routes:
      - match: {path: /healthz}
        directResponse: {status: 200, body: fine}
      - match: {prefix: /}
        directResponse: {status: 403}
"#;
    let proxy = proxy(routes, "[]", &[]).await;
    let mut client = Client::h2(proxy.addr).await;
    let ok = client.get("x", "/healthz", &[]).await;
    assert_eq!((ok.status, ok.text()), (200, "fine"));
    assert_eq!(client.get("x", "/admin", &[]).await.status, 403);
    let reported = proxy.recorder.wait_for(2).await;
    assert_eq!(reported[1].outcome.response_code, 403);
}
