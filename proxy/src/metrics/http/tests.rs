use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::super::{ProxyMetrics, TcpLabels, Workload};
use super::*;

fn family(metrics: &ProxyMetrics) -> RequestMetricsFamily {
    metrics.requests(TcpLabels::outbound(
        &Workload::new("productpage-v1", "default"),
        "outbound|9080||reviews.default.svc.cluster.local",
    ))
}

fn outcome(code: u16, flags: ResponseFlags) -> RequestOutcome {
    RequestOutcome {
        protocol: RequestProtocol::Http,
        response_code: code,
        flags,
        grpc_status: None,
        duration: Duration::from_micros(7_500),
        request_bytes: 120,
        response_bytes: 4_000,
    }
}

fn key(code: u16) -> SeriesKey {
    SeriesKey {
        protocol: RequestProtocol::Http,
        response_code: code,
        flags: ResponseFlags::NONE,
        grpc_status: None,
    }
}

const BASE: &str = concat!(
    r#"reporter="source",source_workload="productpage-v1",source_workload_namespace="default","#,
    r#"destination_workload="unknown",destination_workload_namespace="unknown","#,
    r#"destination_service="reviews.default.svc.cluster.local",destination_service_name="reviews","#,
    r#"destination_service_namespace="default""#
);

#[test]
fn response_flags_print_like_envoy() {
    let cases: &[(ResponseFlags, &str)] = &[
        (ResponseFlags::NONE, "-"),
        (ResponseFlags::NO_ROUTE_FOUND, "NR"),
        (ResponseFlags::NO_CLUSTER_FOUND, "NC"),
        (ResponseFlags::UPSTREAM_REQUEST_TIMEOUT, "UT"),
        (ResponseFlags::UPSTREAM_OVERFLOW, "UO"),
        (ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION, "DC"),
        (ResponseFlags::UNAUTHORIZED_EXTERNAL_SERVICE, "UAEX"),
        // Envoy's order, not the order of insertion.
        (
            ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED
                | ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
            "UF,URX",
        ),
        (
            ResponseFlags::NO_CLUSTER_FOUND
                | ResponseFlags::NO_HEALTHY_UPSTREAM
                | ResponseFlags::UPSTREAM_CONNECTION_TERMINATION,
            "UH,UC,NC",
        ),
        (
            ResponseFlags::UNCONDITIONAL_DROP_OVERLOAD | ResponseFlags::FAILED_LOCAL_HEALTH_CHECK,
            "LH,UDO",
        ),
    ];
    for (flags, text) in cases {
        assert_eq!(flags.to_string(), *text);
        assert_eq!(text.parse::<ResponseFlags>().as_ref(), Ok(flags), "{text}");
    }
}

#[test]
fn response_flags_parse_rejects_unknown_names() {
    let cases: &[(&str, Result<ResponseFlags, UnknownResponseFlag>)] = &[
        ("", Ok(ResponseFlags::NONE)),
        (
            "URX,UF",
            Ok(ResponseFlags::UPSTREAM_CONNECTION_FAILURE
                | ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED),
        ),
        (
            "UF, UH",
            Ok(ResponseFlags::UPSTREAM_CONNECTION_FAILURE | ResponseFlags::NO_HEALTHY_UPSTREAM),
        ),
        ("XX", Err(UnknownResponseFlag("XX".into()))),
        ("UF,", Err(UnknownResponseFlag(String::new()))),
        ("uf", Err(UnknownResponseFlag("uf".into()))),
    ];
    for (text, expected) in cases {
        assert_eq!(&text.parse::<ResponseFlags>(), expected, "{text:?}");
    }
}

#[test]
fn every_flag_has_a_distinct_bit_and_name() {
    for (i, (a, name_a)) in FLAG_NAMES.iter().enumerate() {
        for (b, name_b) in &FLAG_NAMES[i + 1..] {
            assert_ne!(a, b);
            assert_ne!(name_a, name_b);
        }
    }
}

#[test]
fn exposition_has_istio_names_labels_and_buckets() {
    let metrics = ProxyMetrics::new();
    let requests = family(&metrics);
    requests.record(outcome(200, ResponseFlags::NONE));
    requests.record(RequestOutcome {
        protocol: RequestProtocol::Grpc,
        grpc_status: Some(14),
        ..outcome(503, ResponseFlags::NO_HEALTHY_UPSTREAM)
    });
    let text = metrics.encode_as(crate::metrics::Format::Text);
    let ok = format!(
        r#"{BASE},request_protocol="http",response_code="200",response_flags="-",grpc_response_status="""#
    );
    let unavailable = format!(
        r#"{BASE},request_protocol="grpc",response_code="503",response_flags="UH",grpc_response_status="14""#
    );
    let expected = [
        "# TYPE istio_requests_total counter".to_owned(),
        "# TYPE istio_request_duration_milliseconds histogram".to_owned(),
        "# TYPE istio_request_bytes histogram".to_owned(),
        "# TYPE istio_response_bytes histogram".to_owned(),
        "# TYPE skiff_proxy_access_log_dropped_total counter".to_owned(),
        format!("istio_requests_total{{{ok}}} 1"),
        format!("istio_requests_total{{{unavailable}}} 1"),
        format!("istio_request_duration_milliseconds_sum{{{ok}}} 7.5"),
        format!("istio_request_duration_milliseconds_count{{{ok}}} 1"),
        format!(r#"istio_request_duration_milliseconds_bucket{{le="5.0",{ok}}} 0"#),
        format!(r#"istio_request_duration_milliseconds_bucket{{le="10.0",{ok}}} 1"#),
        format!(r#"istio_request_duration_milliseconds_bucket{{le="+Inf",{ok}}} 1"#),
        format!(r#"istio_request_bytes_bucket{{le="100.0",{ok}}} 0"#),
        format!(r#"istio_request_bytes_bucket{{le="250.0",{ok}}} 1"#),
        format!("istio_request_bytes_sum{{{ok}}} 120.0"),
        format!(r#"istio_response_bytes_bucket{{le="2500.0",{unavailable}}} 0"#),
        format!(r#"istio_response_bytes_bucket{{le="5000.0",{unavailable}}} 1"#),
        format!("istio_response_bytes_sum{{{unavailable}}} 4000.0"),
        "skiff_proxy_access_log_dropped_total 0".to_owned(),
    ];
    for line in &expected {
        assert!(
            text.lines().any(|l| l == line),
            "missing line\n{line}\nin\n{text}"
        );
    }
    // Exactly Istio's (Envoy's default) buckets, in order, then +Inf.
    let les: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("istio_request_duration_milliseconds_bucket{") && l.contains(&ok))
        .filter_map(|l| l.split("le=\"").nth(1))
        .filter_map(|l| l.split('"').next())
        .collect();
    assert_eq!(
        les,
        [
            "0.5",
            "1.0",
            "5.0",
            "10.0",
            "25.0",
            "50.0",
            "100.0",
            "250.0",
            "500.0",
            "1000.0",
            "2500.0",
            "5000.0",
            "10000.0",
            "30000.0",
            "60000.0",
            "300000.0",
            "600000.0",
            "1800000.0",
            "3600000.0",
            "+Inf"
        ]
    );
    let byte_les = text
        .lines()
        .filter(|l| l.starts_with("istio_response_bytes_bucket{") && l.contains(&ok))
        .count();
    assert_eq!(byte_les, BYTES_BUCKETS.len() + 1);
}

#[test]
fn cache_returns_one_series_per_combination() {
    let metrics = ProxyMetrics::new();
    let requests = family(&metrics);
    let a = requests.series(key(200));
    let b = requests.clone().series(key(200));
    let c = requests.series(key(404));
    let grpc = requests.series(SeriesKey {
        protocol: RequestProtocol::Grpc,
        grpc_status: Some(0),
        ..key(200)
    });
    let flagged = requests.series(SeriesKey {
        flags: ResponseFlags::NO_ROUTE_FOUND,
        ..key(404)
    });
    assert!(Arc::ptr_eq(&a, &b));
    for (other, what) in [(&c, "code"), (&grpc, "protocol"), (&flagged, "flags")] {
        assert!(!Arc::ptr_eq(&a, other), "{what}");
    }
    assert!(!Arc::ptr_eq(&c, &flagged));
    assert_eq!(requests.cached(), 4);
    // Recording a cached combination does not grow the cache.
    requests.record(outcome(200, ResponseFlags::NONE));
    assert_eq!(requests.cached(), 4);
}

#[test]
fn combinations_beyond_the_cache_are_still_counted() {
    let metrics = ProxyMetrics::new();
    let requests = family(&metrics);
    for code in 100..100 + CACHE_CAPACITY as u16 + 10 {
        requests.record(outcome(code, ResponseFlags::NONE));
        requests.record(outcome(code, ResponseFlags::NONE));
    }
    assert_eq!(requests.cached(), CACHE_CAPACITY);
    let text = metrics.encode();
    let last = 100 + CACHE_CAPACITY as u16 + 9;
    let line = format!(
        r#"istio_requests_total{{{BASE},request_protocol="http",response_code="{last}",response_flags="-",grpc_response_status=""}} 2"#
    );
    assert!(text.lines().any(|l| l == line), "{text}");
}

#[test]
fn concurrent_recording_sums_correctly() {
    const THREADS: usize = 8;
    const PER_THREAD: u64 = 2_000;
    let metrics = ProxyMetrics::new();
    let requests = family(&metrics);
    let codes = [200u16, 404, 503];
    thread::scope(|s| {
        for t in 0..THREADS {
            let requests = requests.clone();
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    let code = codes[(i as usize + t) % codes.len()];
                    requests.record(outcome(code, ResponseFlags::NONE));
                }
            });
        }
    });
    assert_eq!(requests.cached(), codes.len());
    let text = metrics.encode();
    let mut total = 0;
    for code in codes {
        let prefix = format!(
            r#"istio_requests_total{{{BASE},request_protocol="http",response_code="{code}",response_flags="-",grpc_response_status=""}} "#
        );
        let value: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no series for {code}\n{text}"));
        total += value;
    }
    assert_eq!(total, THREADS as u64 * PER_THREAD);
    let count_line = format!(
        r#"istio_request_bytes_count{{{BASE},request_protocol="http",response_code="200",response_flags="-",grpc_response_status=""}} "#
    );
    let count_200: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(&count_line))
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    let expected_200 = (0..THREADS as u64)
        .map(|t| (0..PER_THREAD).filter(|i| (i + t) % 3 == 0).count() as u64)
        .sum::<u64>();
    assert_eq!(count_200, expected_200);
}
