use super::format::openmetrics_to_text;
use super::*;

fn labels() -> TcpLabels {
    TcpLabels::outbound(
        &Workload::new("productpage-v1", "default"),
        "outbound|9080||reviews.default.svc.cluster.local",
    )
}

/// The value of the one sample line that starts with `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<String> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .map(|l| l[series.len() + 1..].to_owned())
}

const OUTBOUND_SERIES: &str = concat!(
    r#"{reporter="source",source_workload="productpage-v1",source_workload_namespace="default","#,
    r#"destination_workload="unknown",destination_workload_namespace="unknown","#,
    r#"destination_service="reviews.default.svc.cluster.local",destination_service_name="reviews","#,
    r#"destination_service_namespace="default"}"#
);

#[test]
fn connection_lifecycle_updates_istio_families() {
    let metrics = ProxyMetrics::new();
    let conn = metrics.connection(&labels());
    conn.opened();
    conn.opened();
    conn.received(100);
    conn.sent(40);
    conn.sent(2);
    conn.sent(0);
    let text = metrics.encode();
    let value = |name: &str| sample(&text, &format!("{name}{OUTBOUND_SERIES}"));
    assert_eq!(
        value("istio_tcp_connections_opened_total").as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(
        value("istio_tcp_connections_closed_total").as_deref(),
        Some("0")
    );
    assert_eq!(
        value("istio_tcp_received_bytes_total").as_deref(),
        Some("100")
    );
    assert_eq!(value("istio_tcp_sent_bytes_total").as_deref(), Some("42"));
    assert_eq!(
        sample(&text, "skiff_proxy_active_connections").as_deref(),
        Some("1")
    );

    conn.closed();
    conn.closed();
    let text = metrics.encode();
    let value = |name: &str| sample(&text, &format!("{name}{OUTBOUND_SERIES}"));
    assert_eq!(
        value("istio_tcp_connections_closed_total").as_deref(),
        Some("1")
    );
    assert_eq!(
        sample(&text, "skiff_proxy_active_connections").as_deref(),
        Some("0")
    );
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn dropping_an_open_connection_counts_its_close() {
    let metrics = ProxyMetrics::new();
    let never_opened = metrics.connection(&labels());
    drop(never_opened);
    let opened = metrics.connection(&labels());
    opened.opened();
    let second = metrics.connection(&labels());
    second.opened();
    drop(opened);
    let text = metrics.encode();
    let value = |name: &str| sample(&text, &format!("{name}{OUTBOUND_SERIES}"));
    assert_eq!(
        value("istio_tcp_connections_opened_total").as_deref(),
        Some("2")
    );
    assert_eq!(
        value("istio_tcp_connections_closed_total").as_deref(),
        Some("1")
    );
    assert_eq!(
        sample(&text, "skiff_proxy_active_connections").as_deref(),
        Some("1")
    );
}

#[test]
fn errors_reloads_and_scrapes() {
    let metrics = ProxyMetrics::new();
    metrics.error(reason::CONNECT_TIMEOUT);
    metrics.error(reason::CONNECT_TIMEOUT);
    metrics.error(reason::NO_CLUSTER);
    metrics.config_reload(true);
    metrics.config_reload(false);
    metrics.app_scrape(true);
    metrics.app_scrape(false);
    let text = metrics.encode();
    let cases = [
        (
            r#"skiff_proxy_connection_errors_total{reason="connect_timeout"}"#,
            "2",
        ),
        (
            r#"skiff_proxy_connection_errors_total{reason="no_cluster"}"#,
            "1",
        ),
        ("skiff_proxy_config_reloads_total", "2"),
        ("skiff_proxy_config_reload_failures_total", "1"),
        ("skiff_agent_app_scrapes_total", "2"),
        ("skiff_agent_app_scrape_failures_total", "1"),
    ];
    for (series, want) in cases {
        assert_eq!(
            sample(&text, series).as_deref(),
            Some(want),
            "{series} in\n{text}"
        );
    }
}

#[test]
fn inbound_labels_report_destination() {
    let local = Workload::new("reviews-v1", "default");
    let labels = TcpLabels::inbound(&local, "inbound|9080||");
    assert_eq!(labels.reporter, Reporter::Destination);
    assert_eq!(&*labels.destination_workload, "reviews-v1");
    assert_eq!(&*labels.destination_workload_namespace, "default");
    assert_eq!(&*labels.source_workload, UNKNOWN);
    assert_eq!(&*labels.destination_service, UNKNOWN);
    assert_eq!(
        Reporter::for_direction(Direction::Inbound),
        Reporter::Destination
    );
    assert_eq!(
        Reporter::for_direction(Direction::Outbound),
        Reporter::Source
    );
    assert_eq!(Workload::new("", ""), Workload::unknown());
}

#[test]
fn service_labels_from_cluster_names() {
    struct Case {
        cluster: &'static str,
        host: &'static str,
        name: &'static str,
        namespace: &'static str,
    }
    let cases = [
        Case {
            cluster: "outbound|9080||reviews.default.svc.cluster.local",
            host: "reviews.default.svc.cluster.local",
            name: "reviews",
            namespace: "default",
        },
        Case {
            cluster: "outbound|9080|v2|reviews.bookinfo.svc.cluster.local",
            host: "reviews.bookinfo.svc.cluster.local",
            name: "reviews",
            namespace: "bookinfo",
        },
        Case {
            cluster: "inbound|9080|http|reviews.default.svc.cluster.local",
            host: "reviews.default.svc.cluster.local",
            name: "reviews",
            namespace: "default",
        },
        Case {
            cluster: "outbound|443||httpbin.org",
            host: "httpbin.org",
            name: "httpbin.org",
            namespace: "unknown",
        },
        Case {
            cluster: "inbound|9080||",
            host: "unknown",
            name: "unknown",
            namespace: "unknown",
        },
        Case {
            cluster: "PassthroughCluster",
            host: "unknown",
            name: "PassthroughCluster",
            namespace: "unknown",
        },
        Case {
            cluster: "InboundPassthroughClusterIpv4",
            host: "unknown",
            name: "InboundPassthroughCluster",
            namespace: "unknown",
        },
        Case {
            cluster: "BlackHoleCluster",
            host: "unknown",
            name: "BlackHoleCluster",
            namespace: "unknown",
        },
        Case {
            cluster: "my-static-cluster",
            host: "unknown",
            name: "unknown",
            namespace: "unknown",
        },
        Case {
            cluster: "outbound|1|2|3|4",
            host: "unknown",
            name: "unknown",
            namespace: "unknown",
        },
    ];
    for case in cases {
        let got = ServiceLabels::from_cluster(case.cluster);
        assert_eq!(
            (&*got.host, &*got.name, &*got.namespace),
            (case.host, case.name, case.namespace),
            "{}",
            case.cluster
        );
    }
}

#[test]
fn accept_negotiation() {
    let cases = [
        (None, Format::Text),
        (Some("*/*"), Format::Text),
        (Some("text/plain"), Format::Text),
        (Some("application/openmetrics-text"), Format::OpenMetrics),
        // Prometheus 2.x
        (
            Some(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            ),
            Format::OpenMetrics,
        ),
        // Prometheus 3.x
        (
            Some(
                "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
            ),
            Format::OpenMetrics,
        ),
        (
            Some("text/plain;q=1, application/openmetrics-text;q=0.5"),
            Format::Text,
        ),
        (Some("application/openmetrics-text;q=0"), Format::Text),
        (Some("application/vnd.google.protobuf"), Format::Text),
    ];
    for (accept, want) in cases {
        assert_eq!(Format::negotiate(accept), want, "{accept:?}");
    }
}

#[test]
fn content_type_recognition() {
    let cases = [
        (None, Some(Format::Text)),
        (
            Some("text/plain; version=0.0.4; charset=utf-8"),
            Some(Format::Text),
        ),
        (
            Some("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            Some(Format::OpenMetrics),
        ),
        (
            Some(
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited",
            ),
            None,
        ),
        (Some("text/html"), None),
    ];
    for (content_type, want) in cases {
        assert_eq!(
            Format::of_content_type(content_type),
            want,
            "{content_type:?}"
        );
    }
}

#[test]
fn openmetrics_to_prometheus_text() {
    let cases = [
        (
            "counter gets _total in HELP and TYPE; _created dropped",
            concat!(
                "# HELP requests Requests.\n",
                "# TYPE requests counter\n",
                "requests_total{code=\"200\"} 3\n",
                "requests_created{code=\"200\"} 1700000000.0\n",
                "# EOF\n"
            ),
            concat!(
                "# HELP requests_total Requests.\n",
                "# TYPE requests_total counter\n",
                "requests_total{code=\"200\"} 3\n"
            ),
        ),
        (
            "gauge unchanged; unit dropped; unknown type becomes untyped",
            concat!(
                "# HELP temp Temperature.\n",
                "# TYPE temp gauge\n",
                "# UNIT temp celsius\n",
                "temp 21\n",
                "# TYPE build info\n",
                "build_info{version=\"1\"} 1\n",
                "# EOF\n"
            ),
            concat!(
                "# HELP temp Temperature.\n",
                "# TYPE temp gauge\n",
                "temp 21\n",
                "# TYPE build untyped\n",
                "build_info{version=\"1\"} 1\n"
            ),
        ),
        (
            "exemplar removed",
            "# TYPE c counter\nc_total 1 # {trace_id=\"a\"} 1\n# EOF\n",
            "# TYPE c_total counter\nc_total 1\n",
        ),
    ];
    for (name, input, want) in cases {
        assert_eq!(openmetrics_to_text(input), want, "{name}");
    }
}

#[test]
fn registry_encodes_in_both_formats() {
    let metrics = ProxyMetrics::new();
    metrics.config_reload(true);
    let open = metrics.encode_as(Format::OpenMetrics);
    assert!(
        open.contains("# TYPE skiff_proxy_config_reloads counter\n"),
        "{open}"
    );
    assert!(open.ends_with("# EOF\n"));
    let text = metrics.encode_as(Format::Text);
    assert!(
        text.contains("# TYPE skiff_proxy_config_reloads_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("\nskiff_proxy_config_reloads_total 1\n"),
        "{text}"
    );
    assert!(!text.contains("# EOF"));
    assert!(
        !metrics
            .encode_unterminated(Format::OpenMetrics)
            .contains("# EOF")
    );
}

#[test]
fn other_modules_can_register() {
    let metrics = ProxyMetrics::new();
    let pushes: Counter = Counter::default();
    metrics.register("skiff_xds_pushes", "xDS pushes received", pushes.clone());
    pushes.inc();
    assert_eq!(
        sample(&metrics.encode(), "skiff_xds_pushes_total").as_deref(),
        Some("1")
    );
}

#[test]
fn eof_stripping() {
    let cases: [(&[u8], &[u8]); 5] = [
        (b"a 1\n# EOF\n", b"a 1\n"),
        (b"a 1\n# EOF", b"a 1\n"),
        (b"a 1\n# EOF\r\n\n", b"a 1\n"),
        (b"a 1\n", b"a 1\n"),
        (b"a 1 # EOF\n", b"a 1 # EOF\n"),
    ];
    for (input, want) in cases {
        assert_eq!(
            strip_openmetrics_eof(input),
            want,
            "{:?}",
            String::from_utf8_lossy(input)
        );
    }
}

#[test]
fn plain_stats_shape() {
    let open = "# TYPE a counter\na_total{x=\"1 2\"} 3\n# EOF\n";
    assert_eq!(openmetrics_to_plain_stats(open), "a_total{x=\"1 2\"}: 3\n");
}
