use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::{Method, StatusCode};
use tokio::sync::mpsc;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, reload};

use super::http::testing::{Running, call, get, post, within};
use super::http::{is_local_peer, query_param};
use super::*;
use crate::metrics::TcpLabels;
use crate::metrics::Workload;
use crate::snapshot::{
    Cluster, ClusterChoice, Detection, Direction, Discovery, Endpoint, FilterChain, Handler,
    Listener, TcpProxy,
};

fn snapshot() -> Snapshot {
    let cluster = Cluster::new(
        "outbound|9080||reviews.default.svc.cluster.local",
        Discovery::Static,
        vec![Endpoint::new("10.1.2.3:9080".parse().unwrap())],
    );
    let listener = Listener {
        name: "virtualOutbound".into(),
        address: "0.0.0.0:15001".parse().unwrap(),
        bind_to_port: true,
        use_original_dst: true,
        direction: Direction::Outbound,
        detection: Detection::default(),
        detection_skip_ports: Vec::new(),
        filter_chains: vec![FilterChain {
            name: "reviews".into(),
            matcher: Default::default(),
            handler: Handler::Tcp(TcpProxy {
                stat_prefix: "reviews".into(),
                cluster: ClusterChoice::Single(cluster.name.clone()),
                idle_timeout: Duration::from_secs(3600),
            }),
            tls: None,
        }],
        default_chain: None,
    };
    Snapshot {
        version: "test-1".into(),
        listeners: vec![Arc::new(listener)],
        clusters: HashMap::from([(cluster.name.clone(), Arc::new(cluster))]),
        routes: HashMap::new(),
        access_log: None,
    }
}

/// Signals from the callbacks, read with a bound.
struct Calls {
    drains: mpsc::UnboundedReceiver<()>,
    quits: mpsc::UnboundedReceiver<()>,
}

fn control(readiness: Arc<Readiness>) -> (ProcessControl, Calls) {
    let (drain_tx, drains) = mpsc::unbounded_channel();
    let (quit_tx, quits) = mpsc::unbounded_channel();
    let control = ProcessControl::new(
        readiness,
        move || {
            let _ = drain_tx.send(());
        },
        move || {
            let _ = quit_tx.send(());
        },
    );
    (control, Calls { drains, quits })
}

fn ready() -> Arc<Readiness> {
    let readiness = Arc::new(Readiness::new());
    readiness.set_config_loaded(true);
    readiness.set_listeners_bound(true);
    readiness
}

async fn start_admin(admin: Admin) -> Running {
    let admin = Arc::new(admin);
    Running::start(|listener, shutdown| serve_admin(listener, admin, shutdown)).await
}

fn admin_with(readiness: Arc<Readiness>, log: Option<Arc<dyn LogControl>>) -> (Admin, Calls) {
    let swap = Arc::new(ArcSwap::from_pointee(snapshot()));
    let (control, calls) = control(readiness);
    let admin = Admin {
        snapshot: snapshot_source(swap),
        metrics: Arc::new(ProxyMetrics::new()),
        control,
        log,
        xds: None,
    };
    (admin, calls)
}

#[tokio::test]
async fn config_dump_is_the_snapshot_as_json() {
    let (admin, _calls) = admin_with(ready(), None);
    let server = start_admin(admin).await;
    let answer = get(server.address, "/config_dump").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.content_type(), "application/json");
    let json: serde_json::Value = serde_json::from_str(&answer.body).expect("JSON");
    assert_eq!(json["version"], "test-1");
    assert_eq!(json["listeners"][0]["name"], "virtualOutbound");
    assert_eq!(json["listeners"][0]["address"], "0.0.0.0:15001");
    assert_eq!(
        json["listeners"][0]["filter_chains"][0]["handler"]["tcp"]["cluster"]["single"],
        "outbound|9080||reviews.default.svc.cluster.local"
    );
    let cluster = &json["clusters"]["outbound|9080||reviews.default.svc.cluster.local"];
    assert_eq!(cluster["endpoints"][0]["address"], "10.1.2.3:9080");
    assert_eq!(cluster["connect_timeout"], 10000);
    assert_eq!(
        call(server.address, Method::POST, "/config_dump", &[])
            .await
            .status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    server.stop().await;
}

#[tokio::test]
async fn config_dump_follows_the_swap() {
    let swap = Arc::new(ArcSwap::from_pointee(snapshot()));
    let (control, _calls) = control(ready());
    let admin = Admin {
        snapshot: snapshot_source(swap.clone()),
        metrics: Arc::new(ProxyMetrics::new()),
        control,
        log: None,
        xds: None,
    };
    let server = start_admin(admin).await;
    swap.store(Arc::new(Snapshot {
        version: "test-2".into(),
        ..Snapshot::default()
    }));
    let json: serde_json::Value =
        serde_json::from_str(&get(server.address, "/config_dump").await.body).unwrap();
    assert_eq!(json["version"], "test-2");
    server.stop().await;
}

#[tokio::test]
async fn stats_in_every_shape() {
    let (admin, _calls) = admin_with(ready(), None);
    let metrics = admin.metrics.clone();
    let conn = metrics.connection(&TcpLabels::outbound(
        &Workload::new("productpage-v1", "default"),
        "outbound|9080||reviews.default.svc.cluster.local",
    ));
    conn.opened();
    conn.received(7);
    let server = start_admin(admin).await;
    let address = server.address;

    let plain = get(address, "/stats").await;
    assert_eq!(plain.status, StatusCode::OK);
    assert!(
        plain
            .body
            .contains("istio_tcp_received_bytes_total{reporter=\"source\""),
        "{}",
        plain.body
    );
    assert!(plain.body.contains("}: 7\n"), "{}", plain.body);

    let text = get(address, "/stats/prometheus").await;
    assert_eq!(
        text.content_type(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(
        text.body
            .contains("# TYPE istio_tcp_connections_opened_total counter"),
        "{}",
        text.body
    );
    assert!(!text.body.contains("# EOF"));

    let open = call(
        address,
        Method::GET,
        "/stats/prometheus",
        &[("accept", "application/openmetrics-text")],
    )
    .await;
    assert_eq!(
        open.content_type(),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(
        open.body
            .contains("# TYPE istio_tcp_connections_opened counter"),
        "{}",
        open.body
    );
    assert!(open.body.ends_with("# EOF\n"));

    let same = get(address, "/stats?format=prometheus").await;
    assert!(
        same.body
            .contains("# TYPE istio_tcp_connections_opened_total counter")
    );
    assert_eq!(
        get(address, "/stats?format=yaml").await.status,
        StatusCode::BAD_REQUEST
    );
    server.stop().await;
}

#[tokio::test]
async fn ready_reports_envoy_server_state() {
    let readiness = Arc::new(Readiness::new());
    let (admin, _calls) = admin_with(readiness.clone(), None);
    let server = start_admin(admin).await;
    let answer = get(server.address, "/ready").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "INITIALIZING\n")
    );
    readiness.set_config_loaded(true);
    readiness.set_listeners_bound(true);
    let answer = get(server.address, "/ready").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "LIVE\n")
    );
    readiness.start_draining();
    let answer = get(server.address, "/ready").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "DRAINING\n")
    );
    server.stop().await;
}

#[tokio::test]
async fn logging_level_changes_at_run_time() {
    let (layer, handle) = reload::Layer::new(EnvFilter::new("info"));
    // The subscriber owns the filter; the handle only reaches it while it lives.
    let _subscriber = tracing_subscriber::registry().with(layer);
    let log: Arc<dyn LogControl> = Arc::new(handle.clone());
    let (admin, _calls) = admin_with(ready(), Some(log));
    let server = start_admin(admin).await;
    let address = server.address;
    let current = || handle.with_current(|f| f.to_string()).unwrap();

    let answer = get(address, "/logging").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "active log filter: info\n")
    );

    struct Case {
        method: Method,
        query: &'static str,
        status: StatusCode,
        filter: &'static str,
    }
    let cases = [
        Case {
            method: Method::POST,
            query: "level=debug",
            status: StatusCode::OK,
            filter: "debug",
        },
        Case {
            method: Method::GET,
            query: "level=warning",
            status: StatusCode::OK,
            filter: "warn",
        },
        Case {
            method: Method::POST,
            query: "level=info%2Cskiff_proxy%3A%3Aadmin%3Dtrace",
            status: StatusCode::OK,
            filter: "skiff_proxy::admin=trace,info",
        },
        Case {
            method: Method::POST,
            query: "level=verbose",
            status: StatusCode::BAD_REQUEST,
            filter: "skiff_proxy::admin=trace,info",
        },
        Case {
            method: Method::POST,
            query: "level=info%2Cx%3Dloud",
            status: StatusCode::BAD_REQUEST,
            filter: "skiff_proxy::admin=trace,info",
        },
        Case {
            method: Method::POST,
            query: "level=",
            status: StatusCode::BAD_REQUEST,
            filter: "skiff_proxy::admin=trace,info",
        },
        Case {
            method: Method::POST,
            query: "level=critical",
            status: StatusCode::OK,
            filter: "error",
        },
    ];
    for case in cases {
        let answer = call(
            address,
            case.method.clone(),
            &format!("/logging?{}", case.query),
            &[],
        )
        .await;
        assert_eq!(
            answer.status, case.status,
            "{} {}: {}",
            case.method, case.query, answer.body
        );
        assert_eq!(current(), case.filter, "{} {}", case.method, case.query);
    }
    assert_eq!(
        call(address, Method::DELETE, "/logging", &[]).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    server.stop().await;
}

#[tokio::test]
async fn logging_without_a_handle_is_not_implemented() {
    let (admin, _calls) = admin_with(ready(), None);
    let server = start_admin(admin).await;
    assert_eq!(
        get(server.address, "/logging?level=debug").await.status,
        StatusCode::NOT_IMPLEMENTED
    );
    server.stop().await;
}

#[tokio::test]
async fn drain_marks_unready_and_calls_back_once() {
    let readiness = ready();
    let (admin, mut calls) = admin_with(readiness.clone(), None);
    let server = start_admin(admin).await;
    let address = server.address;

    assert_eq!(
        get(address, "/drain").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert!(!readiness.is_draining());

    let answer = post(address, "/drain").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "OK\n")
    );
    within("drain callback", calls.drains.recv())
        .await
        .expect("drain callback");
    assert!(readiness.is_draining());
    assert_eq!(readiness.check(), Err(crate::health::NotReady::Draining));

    let again = post(address, "/drain_listeners").await;
    assert_eq!(
        (again.status, again.body.as_str()),
        (StatusCode::OK, "OK (already draining)\n")
    );
    assert!(
        calls.drains.try_recv().is_err(),
        "the drain callback runs once"
    );
    server.stop().await;
}

#[tokio::test]
async fn quitquitquit_answers_then_calls_back() {
    let (admin, mut calls) = admin_with(ready(), None);
    let server = start_admin(admin).await;
    assert_eq!(
        get(server.address, "/quitquitquit").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert!(calls.quits.try_recv().is_err());
    let answer = post(server.address, "/quitquitquit").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "OK\n")
    );
    assert_eq!(
        answer.headers.get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    within("quit callback", calls.quits.recv())
        .await
        .expect("quit callback");
    server.stop().await;
}

#[tokio::test]
async fn unknown_admin_path_is_404_with_help() {
    let (admin, _calls) = admin_with(ready(), None);
    let server = start_admin(admin).await;
    let answer = get(server.address, "/clusters").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.body.contains("/config_dump"));
    assert_eq!(get(server.address, "/help").await.status, StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn prometheus_port_serves_only_metrics() {
    let metrics = Arc::new(ProxyMetrics::new());
    metrics.config_reload(true);
    let server = Running::start({
        let metrics = metrics.clone();
        |listener, shutdown| serve_prometheus(listener, metrics, shutdown)
    })
    .await;
    let answer = get(server.address, "/stats/prometheus").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.body.contains("skiff_proxy_config_reloads_total 1"),
        "{}",
        answer.body
    );
    assert_eq!(
        get(server.address, "/config_dump").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post(server.address, "/stats/prometheus").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_request_helper() {
    let readiness = ready();
    let (admin, mut calls) = admin_with(readiness.clone(), None);
    let server = start_admin(admin).await;
    let port = server.port();

    let answer = within(
        "request",
        tokio::task::spawn_blocking(move || request(port, "post", "drain")),
    )
    .await
    .expect("request thread");
    assert_eq!(answer.expect("drain request"), "OK\n");
    within("drain callback", calls.drains.recv())
        .await
        .expect("drain callback");

    let missing = within(
        "request",
        tokio::task::spawn_blocking(move || request(port, "GET", "/nope")),
    )
    .await
    .expect("request thread");
    match missing {
        Err(RequestError::Status { status, .. }) => assert_eq!(status, StatusCode::NOT_FOUND),
        other => panic!("expected a 404 error, got {other:?}"),
    }
    let bad_method = request(port, "NOT A METHOD", "drain");
    assert!(
        matches!(bad_method, Err(RequestError::Method(_))),
        "{bad_method:?}"
    );
    server.stop().await;

    // Nobody listens any more.
    let refused = within(
        "request",
        tokio::task::spawn_blocking(move || request(port, "GET", "ready")),
    )
    .await
    .expect("request thread");
    assert!(
        matches!(refused, Err(RequestError::Fetch { .. })),
        "{refused:?}"
    );
}

#[tokio::test]
async fn wait_returns_once_ready_and_times_out_otherwise() {
    let readiness = Arc::new(Readiness::new());
    let health = Running::start({
        let readiness = readiness.clone();
        |listener, shutdown| crate::health::serve_health(listener, readiness, shutdown)
    })
    .await;
    let short = WaitOptions {
        address: health.address,
        timeout: Duration::from_millis(300),
        period: Duration::from_millis(50),
        request_timeout: Duration::from_millis(200),
    };
    match within("wait", wait_async(&short)).await {
        Err(WaitError::Timeout { attempts, last, .. }) => {
            assert!(attempts >= 2, "{attempts}");
            assert!(last.contains("503"), "{last}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }

    // The proxy becomes ready while wait polls.
    let long = WaitOptions {
        timeout: Duration::from_secs(8),
        ..short.clone()
    };
    let waiting = tokio::spawn(async move { wait_async(&long).await });
    readiness.set_config_loaded(true);
    readiness.set_listeners_bound(true);
    within("wait", waiting)
        .await
        .expect("wait task")
        .expect("ready");

    // The blocking form, from a thread without a runtime.
    let blocking = short.clone();
    within(
        "blocking wait",
        tokio::task::spawn_blocking(move || wait(&blocking)),
    )
    .await
    .expect("wait thread")
    .expect("ready");
    health.stop().await;
}

#[test]
fn local_peers() {
    let cases: [(&str, bool); 7] = [
        ("127.0.0.1:5000", true),
        ("127.1.2.3:5000", true),
        ("[::1]:5000", true),
        ("[::ffff:127.0.0.1]:5000", true),
        ("127.0.0.6:5000", false),
        ("10.1.2.3:5000", false),
        ("[fd00::1]:5000", false),
    ];
    for (peer, want) in cases {
        assert_eq!(
            is_local_peer(peer.parse::<SocketAddr>().unwrap()),
            want,
            "{peer}"
        );
    }
}

#[test]
fn query_parameters() {
    let cases = [
        (Some("level=debug"), "level", Some("debug")),
        (Some("a=1&level=warn"), "level", Some("warn")),
        (
            Some("level=info%2Cx%3Dtrace"),
            "level",
            Some("info,x=trace"),
        ),
        (Some("level=a+b"), "level", Some("a b")),
        (Some("level=100%"), "level", Some("100%")),
        (Some("level=%zz"), "level", Some("%zz")),
        (Some("level"), "level", Some("")),
        (Some("other=1"), "level", None),
        (None, "level", None),
    ];
    for (query, key, want) in cases {
        assert_eq!(query_param(query, key).as_deref(), want, "{query:?}");
    }
}

#[test]
fn log_filter_values() {
    let cases = [
        ("debug", Ok("debug")),
        ("WARNING", Ok("warn")),
        ("critical", Ok("error")),
        ("off", Ok("off")),
        ("info,skiff_proxy=trace", Ok("skiff_proxy=trace,info")),
        ("skiff_proxy::tcp", Ok("skiff_proxy::tcp=trace")),
        ("verbose", Err(())),
        ("", Err(())),
        ("info,x=loud", Err(())),
    ];
    for (value, want) in cases {
        let got = parse_filter(value).map(|f| f.to_string()).map_err(|_| ());
        assert_eq!(got, want.map(str::to_owned), "{value:?}");
    }
}
