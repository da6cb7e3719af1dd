use std::io;
use std::sync::{Arc, Barrier, Mutex};

use super::*;
use crate::metrics::ProxyMetrics;

fn at(secs: u64, millis: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
}

fn addr(s: &str) -> Option<SocketAddr> {
    s.parse().ok()
}

/// A request from productpage to reviews as the client's sidecar logs it.
fn full() -> AccessLogEntry {
    AccessLogEntry {
        start_time: at(1_606_339_578, 409),
        method: Some("GET".into()),
        path: Some("/reviews/0".into()),
        protocol: Some("HTTP/1.1".into()),
        response_code: 200,
        response_flags: ResponseFlags::NONE,
        response_code_details: Some("via_upstream".into()),
        connection_termination_details: None,
        upstream_transport_failure_reason: None,
        bytes_received: 0,
        bytes_sent: 358,
        duration: Duration::from_micros(5_900),
        upstream_service_time: Some("5".into()),
        x_forwarded_for: None,
        user_agent: Some("Mozilla/5.0 (X11; Linux)".into()),
        request_id: Some("2b1b6d2e-1f0e-4a8b-9d3c-0d2e8c5b7a61".into()),
        authority: Some("reviews:9080".into()),
        upstream_host: addr("10.244.1.15:9080"),
        upstream_cluster: Some("outbound|9080||reviews.default.svc.cluster.local".into()),
        upstream_local_address: addr("10.244.2.19:60236"),
        downstream_local_address: addr("10.96.81.152:9080"),
        downstream_remote_address: addr("10.244.2.19:55058"),
        requested_server_name: None,
        route_name: Some("default".into()),
    }
}

fn no_route() -> AccessLogEntry {
    AccessLogEntry {
        start_time: at(951_868_799, 5),
        method: Some("POST".into()),
        path: Some("/api".into()),
        protocol: Some("HTTP/2".into()),
        response_code: 404,
        response_flags: ResponseFlags::NO_ROUTE_FOUND,
        response_code_details: Some("route_not_found".into()),
        bytes_received: 12,
        duration: Duration::from_millis(1),
        ..AccessLogEntry::default()
    }
}

fn hostile() -> AccessLogEntry {
    AccessLogEntry {
        method: Some("GET".into()),
        path: Some("/a b".into()),
        protocol: Some("HTTP/1.1".into()),
        response_code: 200,
        user_agent: Some("x\" 200\n[2020-01-01T00:00:00.000Z] \"GET /admin".into()),
        request_id: Some("a\\\"b\r\u{7f}\u{1b}\u{9b}".into()),
        authority: Some("host\u{2028}next".into()),
        route_name: Some("r\tx".into()),
        ..AccessLogEntry::default()
    }
}

#[test]
fn text_lines() {
    let cases: &[(&str, AccessLogEntry, &str)] = &[
        (
            "full",
            full(),
            concat!(
                r#"[2020-11-25T21:26:18.409Z] "GET /reviews/0 HTTP/1.1" 200 - via_upstream - "-" "#,
                r#"0 358 5 5 "-" "Mozilla/5.0 (X11; Linux)" "2b1b6d2e-1f0e-4a8b-9d3c-0d2e8c5b7a61" "#,
                r#""reviews:9080" "10.244.1.15:9080" outbound|9080||reviews.default.svc.cluster.local "#,
                r#"10.244.2.19:60236 10.96.81.152:9080 10.244.2.19:55058 - default"#,
                "\n"
            ),
        ),
        (
            "no route",
            no_route(),
            concat!(
                r#"[2000-02-29T23:59:59.005Z] "POST /api HTTP/2" 404 NR route_not_found - "-" "#,
                r#"12 0 1 - "-" "-" "-" "-" "-" - - - - - -"#,
                "\n"
            ),
        ),
        (
            "empty",
            AccessLogEntry::default(),
            concat!(
                r#"[1970-01-01T00:00:00.000Z] "- - -" 0 - - - "-" 0 0 0 - "-" "-" "-" "-" "-" "#,
                r#"- - - - - -"#,
                "\n"
            ),
        ),
        (
            "flags and an empty header",
            AccessLogEntry {
                response_code: 503,
                response_flags: ResponseFlags::UPSTREAM_CONNECTION_FAILURE
                    | ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED,
                user_agent: Some(String::new()),
                upstream_transport_failure_reason: Some("delayed connect error: 111".into()),
                ..AccessLogEntry::default()
            },
            concat!(
                r#"[1970-01-01T00:00:00.000Z] "- - -" 503 UF,URX - - "delayed connect error: 111" "#,
                r#"0 0 0 - "-" "-" "-" "-" "-" - - - - - -"#,
                "\n"
            ),
        ),
        (
            "hostile values stay in their field",
            hostile(),
            concat!(
                r#"[1970-01-01T00:00:00.000Z] "GET /a\x20b HTTP/1.1" 200 - - - "-" 0 0 0 - "-" "#,
                r#""x\" 200\n[2020-01-01T00:00:00.000Z] \"GET /admin" "a\\\"b\r\x7f\x1b\x9b" "#,
                r#""host\u{2028}next" "-" - - - - - r\tx"#,
                "\n"
            ),
        ),
    ];
    for (name, entry, expected) in cases {
        let line = format(entry, Format::Text);
        assert_eq!(&line, expected, "{name}");
        assert_eq!(line.matches('\n').count(), 1, "{name}");
    }
}

#[test]
fn json_lines() {
    let cases: &[(&str, AccessLogEntry, &str)] = &[
        (
            "full",
            full(),
            concat!(
                r#"{"start_time":"2020-11-25T21:26:18.409Z","method":"GET","path":"/reviews/0","#,
                r#""protocol":"HTTP/1.1","response_code":200,"response_flags":"-","#,
                r#""response_code_details":"via_upstream","connection_termination_details":null,"#,
                r#""upstream_transport_failure_reason":null,"bytes_received":0,"bytes_sent":358,"#,
                r#""duration":5,"upstream_service_time":"5","x_forwarded_for":null,"#,
                r#""user_agent":"Mozilla/5.0 (X11; Linux)","#,
                r#""request_id":"2b1b6d2e-1f0e-4a8b-9d3c-0d2e8c5b7a61","authority":"reviews:9080","#,
                r#""upstream_host":"10.244.1.15:9080","#,
                r#""upstream_cluster":"outbound|9080||reviews.default.svc.cluster.local","#,
                r#""upstream_local_address":"10.244.2.19:60236","#,
                r#""downstream_local_address":"10.96.81.152:9080","#,
                r#""downstream_remote_address":"10.244.2.19:55058","requested_server_name":null,"#,
                r#""route_name":"default"}"#,
                "\n"
            ),
        ),
        (
            "hostile",
            hostile(),
            concat!(
                r#"{"start_time":"1970-01-01T00:00:00.000Z","method":"GET","path":"/a b","#,
                r#""protocol":"HTTP/1.1","response_code":200,"response_flags":"-","#,
                r#""response_code_details":null,"connection_termination_details":null,"#,
                r#""upstream_transport_failure_reason":null,"bytes_received":0,"bytes_sent":0,"#,
                r#""duration":0,"upstream_service_time":null,"x_forwarded_for":null,"#,
                r#""user_agent":"x\" 200\n[2020-01-01T00:00:00.000Z] \"GET /admin","#,
                r#""request_id":"a\\\"b\r\u007f\u001b\u009b","authority":"host\u2028next","#,
                r#""upstream_host":null,"upstream_cluster":null,"#,
                r#""upstream_local_address":null,"downstream_local_address":null,"#,
                r#""downstream_remote_address":null,"requested_server_name":null,"#,
                r#""route_name":"r\tx"}"#,
                "\n"
            ),
        ),
    ];
    for (name, entry, expected) in cases {
        let line = format(entry, Format::Json);
        assert_eq!(&line, expected, "{name}");
        assert_eq!(line.matches('\n').count(), 1, "{name}");
        // And it parses back to the same values.
        let parsed: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
        assert_eq!(
            parsed["user_agent"].as_str(),
            entry.user_agent.as_deref(),
            "{name}"
        );
        assert_eq!(parsed["response_code"], entry.response_code, "{name}");
    }
}

#[test]
fn timestamps_are_utc_with_milliseconds() {
    let cases: &[(SystemTime, &str)] = &[
        (UNIX_EPOCH, "1970-01-01T00:00:00.000Z"),
        (at(951_868_799, 999), "2000-02-29T23:59:59.999Z"),
        (at(946_641_600, 0), "1999-12-31T12:00:00.000Z"),
        (at(4_107_542_400, 1), "2100-03-01T00:00:00.001Z"),
        (
            UNIX_EPOCH - Duration::from_secs(10),
            "1970-01-01T00:00:00.000Z",
        ),
    ];
    for (time, expected) in cases {
        let mut out = String::new();
        push_timestamp(&mut out, *time);
        assert_eq!(&out, expected);
    }
}

#[test]
fn encodings_parse_like_istio() {
    let cases: &[(&str, Option<Format>)] = &[
        ("TEXT", Some(Format::Text)),
        ("json", Some(Format::Json)),
        (" Json ", Some(Format::Json)),
        ("yaml", None),
        ("", None),
    ];
    for (text, expected) in cases {
        assert_eq!(text.parse::<Format>().ok(), *expected, "{text:?}");
    }
}

/// A `Write` into shared memory, optionally stopping at its first write until the test
/// releases a barrier.
#[derive(Clone)]
struct Sink {
    written: Arc<Mutex<Vec<u8>>>,
    gate: Option<(mpsc::SyncSender<()>, Arc<Barrier>)>,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some((entered, barrier)) = self.gate.take() {
            let _ = entered.send(());
            barrier.wait();
        }
        self.written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn numbered(i: u64) -> AccessLogEntry {
    AccessLogEntry {
        bytes_sent: i,
        ..AccessLogEntry::default()
    }
}

fn sent_column(written: &[u8]) -> Vec<u64> {
    String::from_utf8_lossy(written)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["bytes_sent"].as_u64())
        .collect()
}

#[test]
fn writer_delivers_in_order() {
    let written = Arc::new(Mutex::new(Vec::new()));
    let sink = Sink {
        written: written.clone(),
        gate: None,
    };
    let dropped = Counter::default();
    let log = AccessLog::new(Format::Json, Box::new(sink), 1024, dropped.clone()).expect("spawn");
    for i in 0..500 {
        log.log(&numbered(i));
    }
    log.flush().expect("flush");
    assert_eq!(dropped.get(), 0);
    let got = sent_column(&written.lock().expect("lock"));
    assert_eq!(got, (0..500).collect::<Vec<_>>());
}

#[test]
fn writer_drops_and_counts_when_the_sink_blocks() {
    const CAPACITY: u64 = 8;
    const EXTRA: u64 = 5;
    let metrics = ProxyMetrics::new();
    let written = Arc::new(Mutex::new(Vec::new()));
    let (entered_tx, entered_rx) = mpsc::sync_channel(1);
    let barrier = Arc::new(Barrier::new(2));
    let sink = Sink {
        written: written.clone(),
        gate: Some((entered_tx, barrier.clone())),
    };
    let log = AccessLog::new(
        Format::Json,
        Box::new(sink),
        CAPACITY as usize,
        metrics.access_log_dropped(),
    )
    .expect("spawn");

    // The writer takes line 0 and blocks in the sink: the queue is empty again.
    log.log(&numbered(0));
    entered_rx.recv().expect("writer reached the sink");
    // These fill the queue, then EXTRA more are dropped, all without blocking this thread.
    for i in 1..=CAPACITY + EXTRA {
        log.log(&numbered(i));
    }
    assert!(
        metrics
            .encode()
            .lines()
            .any(|l| l == format!("skiff_proxy_access_log_dropped_total {EXTRA}")),
        "{}",
        metrics.encode()
    );

    barrier.wait();
    log.flush().expect("flush");
    let got = sent_column(&written.lock().expect("lock"));
    assert_eq!(got, (0..=CAPACITY).collect::<Vec<_>>());
}

struct Broken;

impl Write for Broken {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::from(io::ErrorKind::BrokenPipe))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn lines_a_failing_sink_loses_are_counted() {
    let dropped = Counter::default();
    let log = AccessLog::new(Format::Text, Box::new(Broken), 16, dropped.clone()).expect("spawn");
    for i in 0..3 {
        log.log(&numbered(i));
    }
    log.flush().expect("flush");
    assert_eq!(dropped.get(), 3);
}
