//! The merged metrics endpoint, against small local apps.

use hyper::{Method, StatusCode};

use super::support::{Page, agent, app, closed_port, next_seen, page, silent_port};
use crate::admin::http::testing::{call, get};
use crate::agent::{AgentConfig, ScrapeConfig, ScrapeTarget};
use crate::metrics::Format;

const APP_TEXT: &str = "# HELP app_requests_total Requests.\n# TYPE app_requests_total counter\napp_requests_total 7\n";
const APP_OPENMETRICS: &str =
    "# HELP app_requests Requests.\n# TYPE app_requests counter\napp_requests_total 7\n# EOF\n";

fn config(targets: &[(u16, &str)]) -> AgentConfig {
    AgentConfig {
        scrape: Some(ScrapeConfig {
            targets: targets
                .iter()
                .map(|(port, path)| ScrapeTarget {
                    port: *port,
                    path: (*path).to_owned(),
                })
                .collect(),
        }),
        ..AgentConfig::default()
    }
}

/// The value of the sample line named exactly `series`.
fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
}

#[tokio::test]
async fn proxy_metrics_then_app_metrics_in_text() {
    let (app, mut seen) = app(vec![("/metrics", page(StatusCode::OK, APP_TEXT))]).await;
    let (server, _agent, _calls) = agent(config(&[(app.port(), "/metrics")])).await;

    let answer = call(
        server.address,
        Method::GET,
        "/stats/prometheus",
        &[
            ("user-agent", "Prometheus/3.0"),
            ("x-prometheus-scrape-timeout-seconds", "4"),
        ],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type(), Format::Text.content_type());
    let own = answer
        .body
        .find("# TYPE skiff_proxy_active_connections gauge")
        .expect("proxy metrics");
    let app_part = answer
        .body
        .find("app_requests_total 7")
        .expect("app metrics");
    assert!(
        own < app_part,
        "the proxy's metrics come first:\n{}",
        answer.body
    );
    assert_eq!(
        sample(&answer.body, "skiff_agent_app_scrapes_total"),
        Some("1")
    );
    assert_eq!(
        sample(&answer.body, "skiff_agent_app_scrape_failures_total"),
        Some("0")
    );
    assert!(!answer.body.contains("# EOF"));

    let request = next_seen(&mut seen).await;
    assert_eq!(request.path_and_query, "/metrics");
    assert_eq!(request.headers["user-agent"], "Prometheus/3.0");
    assert_eq!(request.headers["x-prometheus-scrape-timeout-seconds"], "4");
    let accept = request.headers["accept"].to_str().unwrap();
    assert!(
        accept.starts_with("text/plain") && !accept.contains("protobuf"),
        "{accept}"
    );

    // /metrics is the same endpoint, as on Istio's agent.
    let alias = get(server.address, "/metrics").await;
    assert!(alias.body.contains("app_requests_total 7"));
    assert_eq!(
        sample(&alias.body, "skiff_agent_app_scrapes_total"),
        Some("2")
    );
    server.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn openmetrics_app_makes_an_openmetrics_answer_with_one_eof() {
    let om = Page {
        status: StatusCode::OK,
        content_type: Some("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        body: APP_OPENMETRICS,
    };
    let (app, mut seen) = app(vec![("/metrics", om)]).await;
    let (server, _agent, _calls) = agent(config(&[(app.port(), "/metrics")])).await;

    let answer = call(
        server.address,
        Method::GET,
        "/stats/prometheus",
        &[(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )],
    )
    .await;
    assert_eq!(answer.content_type(), Format::OpenMetrics.content_type());
    assert_eq!(answer.body.matches("# EOF").count(), 1, "{}", answer.body);
    assert!(
        answer.body.ends_with("app_requests_total 7\n# EOF\n"),
        "{}",
        answer.body
    );
    assert!(
        answer
            .body
            .contains("# TYPE skiff_proxy_active_connections gauge\n")
    );
    let accept = next_seen(&mut seen).await.headers["accept"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        accept.starts_with("application/openmetrics-text"),
        "{accept}"
    );
    server.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn several_targets_in_order_and_a_failing_one_is_skipped() {
    let untyped = Page {
        status: StatusCode::OK,
        content_type: None,
        // No final newline: the merge adds one.
        body: "second_metric 2",
    };
    let (app, _seen) = app(vec![
        ("/metrics", page(StatusCode::OK, "first_metric 1\n")),
        ("/custom", untyped),
        ("/broken", page(StatusCode::INTERNAL_SERVER_ERROR, "oops")),
    ])
    .await;
    let (_held, refused) = closed_port().await;
    let (server, _agent, _calls) = agent(config(&[
        (app.port(), "/metrics"),
        (refused, "/metrics"),
        (app.port(), "/custom"),
        (app.port(), "/broken"),
    ]))
    .await;

    let answer = get(server.address, "/stats/prometheus").await;
    assert_eq!(answer.status, StatusCode::OK);
    let first = answer.body.find("first_metric 1\n").expect("first target");
    let second = answer.body.find("second_metric 2\n").expect("third target");
    assert!(first < second);
    assert!(!answer.body.contains("oops"));
    assert_eq!(
        sample(&answer.body, "skiff_agent_app_scrapes_total"),
        Some("4")
    );
    assert_eq!(
        sample(&answer.body, "skiff_agent_app_scrape_failures_total"),
        Some("2")
    );
    server.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_silent_app_does_not_hold_up_the_proxy_metrics() {
    let (_silent, port) = silent_port().await;
    let (server, _agent, _calls) = agent(config(&[(port, "/metrics")])).await;
    // Prometheus' timeout header bounds the app scrape.
    let answer = call(
        server.address,
        Method::GET,
        "/stats/prometheus",
        &[("x-prometheus-scrape-timeout-seconds", "0.3")],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer
            .body
            .contains("# TYPE skiff_proxy_active_connections gauge")
    );
    assert_eq!(
        sample(&answer.body, "skiff_agent_app_scrape_failures_total"),
        Some("1")
    );
    server.stop().await;
}

#[tokio::test]
async fn a_protobuf_answer_is_not_merged() {
    let proto = Page {
        status: StatusCode::OK,
        content_type: Some(
            "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited",
        ),
        body: "\u{1}binary",
    };
    let (app, _seen) = app(vec![("/metrics", proto)]).await;
    let (server, _agent, _calls) = agent(config(&[(app.port(), "/metrics")])).await;
    let answer = get(server.address, "/stats/prometheus").await;
    assert!(!answer.body.contains("binary"));
    assert_eq!(
        sample(&answer.body, "skiff_agent_app_scrape_failures_total"),
        Some("1")
    );
    server.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn without_scrape_configuration_only_the_proxy() {
    let (server, agent, _calls) = agent(AgentConfig::default()).await;
    agent.metrics.config_reload(true);
    let text = get(server.address, "/stats/prometheus").await;
    assert_eq!(text.status, StatusCode::OK);
    assert_eq!(
        sample(&text.body, "skiff_proxy_config_reloads_total"),
        Some("1")
    );
    assert_eq!(
        sample(&text.body, "skiff_agent_app_scrapes_total"),
        Some("0")
    );
    // With no app to follow, the scraper's preference decides.
    let open = call(
        server.address,
        Method::GET,
        "/stats/prometheus",
        &[("accept", "application/openmetrics-text")],
    )
    .await;
    assert_eq!(open.content_type(), Format::OpenMetrics.content_type());
    assert!(open.body.ends_with("# EOF\n"));
    assert_eq!(
        call(server.address, Method::POST, "/stats/prometheus", &[])
            .await
            .status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    server.stop().await;
}
