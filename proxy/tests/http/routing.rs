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
