//! The access log: one line per request, in Istio's text format or as JSON.

use skiff_proxy::access_log::Format;

use crate::harness::*;

#[tokio::test]
async fn json_lines_describe_each_request() {
    let app = Upstream::named("app").await;
    let routes = r#"
virtualHosts:
  - domains: [reviews]
    routes:
      - name: api
        match: {prefix: /api}
        route: {cluster: app, prefixRewrite: /v2}
"#;
    let proxy = proxy_with(
        routes,
        "- {name: app, endpoints: [\"{app}\"]}",
        &[("app", app.addr)],
        |s| {
            s.access_log = Some(Format::Json);
        },
    )
    .await;
    let mut client = Client::h1(proxy.addr).await;
    client
        .get(
            "reviews",
            "/api/x",
            &[("user-agent", "curl/8"), ("x-request-id", "rid-1")],
        )
        .await;
    client.get("nowhere", "/", &[]).await;
    proxy.recorder.wait_for(2).await;
    let lines = proxy.log_lines(Format::Json);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let ok: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/api/x");
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert_eq!(ok["response_code"], 200);
    assert_eq!(ok["response_flags"], "-");
    assert_eq!(ok["response_code_details"], "via_upstream");
    assert_eq!(ok["bytes_sent"], 3);
    assert_eq!(ok["user_agent"], "curl/8");
    assert_eq!(ok["request_id"], "rid-1");
    assert_eq!(ok["authority"], "reviews");
    assert_eq!(ok["upstream_cluster"], "app");
    assert_eq!(ok["upstream_host"], app.addr.to_string());
    assert_eq!(ok["route_name"], "api");
    assert_eq!(ok["downstream_local_address"], VIP);
    let nr: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(nr["response_code"], 404);
    assert_eq!(nr["response_flags"], "NR");
    assert_eq!(nr["response_code_details"], "route_not_found");
}

#[tokio::test]
async fn text_lines_follow_istios_format_and_the_log_is_off_by_default() {
    let app = Upstream::named("app").await;
    let routes = "routes: [{prefix: /, cluster: app}]";
    let clusters = "- {name: app, endpoints: [\"{app}\"]}";
    let on = proxy_with(routes, clusters, &[("app", app.addr)], |s| {
        s.access_log = Some(Format::Text);
    })
    .await;
    Client::h2(on.addr)
        .await
        .get("reviews", "/p?q=1", &[("x-request-id", "abc")])
        .await;
    on.recorder.wait_for(1).await;
    let lines = on.log_lines(Format::Text);
    assert_eq!(lines.len(), 1);
    let line = &lines[0];
    assert!(line.starts_with('['), "{line}");
    assert!(
        line.contains("] \"GET /p?q=1 HTTP/2\" 200 - via_upstream - \"-\" 0 3 "),
        "{line}"
    );
    assert!(line.contains("\"abc\" \"reviews\""), "{line}");

    let off = proxy(routes, clusters, &[("app", app.addr)]).await;
    Client::h1(off.addr).await.get("reviews", "/", &[]).await;
    off.recorder.wait_for(1).await;
    assert!(off.log.lock().unwrap().is_empty());
}
