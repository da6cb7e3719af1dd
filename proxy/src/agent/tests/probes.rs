//! Application probes run by the agent against local servers, and the agent's own
//! endpoints.

use std::net::{IpAddr, Ipv4Addr};

use hyper::{Method, StatusCode};

use super::support::{agent, app, closed_port, grpc_server, next_seen, page, silent_port};
use crate::admin::http::testing::{call, get, post, within};
use crate::admin::request;
use crate::agent::{AgentConfig, AppProbers};

/// An agent whose probers are `json` with `{app}`, `{grpc}`, `{open}`, `{closed}` and
/// `{silent}` replaced by ports.
fn config(json: &str, ports: &[(&str, u16)]) -> AgentConfig {
    let json = ports.iter().fold(json.to_owned(), |json, (name, port)| {
        json.replace(&format!("{{{name}}}"), &port.to_string())
    });
    AgentConfig {
        probers: AppProbers::parse(&json).unwrap_or_else(|e| panic!("{e}\n{json}")),
        ..AgentConfig::default()
    }
}

#[tokio::test]
async fn http_probes_map_app_status_to_200_or_503() {
    let (app, mut seen) = app(vec![
        ("/ready", page(StatusCode::OK, "all good")),
        (
            "/fail",
            page(StatusCode::INTERNAL_SERVER_ERROR, "database down"),
        ),
        ("/moved", page(StatusCode::FOUND, "")),
    ])
    .await;
    let refused = closed_port().await;
    let json = concat!(
        r#"{"/app-health/web/readyz":{"httpGet":{"path":"/ready","port":{app},"#,
        r#""httpHeaders":[{"name":"X-Probe","value":"yes"}]},"timeoutSeconds":3},"#,
        r#""/app-health/web/livez":{"httpGet":{"path":"/fail","port":{app}},"timeoutSeconds":3},"#,
        r#""/app-health/web/startupz":{"httpGet":{"path":"/moved","port":{app}},"timeoutSeconds":3},"#,
        r#""/app-health/other/readyz":{"httpGet":{"path":"/ready","port":{refused}},"timeoutSeconds":3},"#,
        r#""/app-lifecycle/web/prestopz":{"httpGet":{"path":"/ready?phase=stop","port":{app}}}}"#
    );
    let (server, _agent, _calls) =
        agent(config(json, &[("app", app.port()), ("refused", refused)])).await;
    let address = server.address;

    struct Case {
        path: &'static str,
        status: StatusCode,
        body_has: &'static str,
    }
    let cases = [
        Case {
            path: "/app-health/web/readyz",
            status: StatusCode::OK,
            body_has: "all good",
        },
        Case {
            path: "/app-health/web/livez",
            status: StatusCode::SERVICE_UNAVAILABLE,
            body_has: "500 Internal Server Error: database down",
        },
        Case {
            path: "/app-health/web/startupz",
            status: StatusCode::OK,
            body_has: "",
        },
        Case {
            path: "/app-health/other/readyz",
            status: StatusCode::SERVICE_UNAVAILABLE,
            body_has: "connect to 127.0.0.1",
        },
        Case {
            path: "/app-lifecycle/web/prestopz",
            status: StatusCode::OK,
            body_has: "all good",
        },
        Case {
            path: "/app-health/nobody/readyz",
            status: StatusCode::NOT_FOUND,
            body_has: "no application probe",
        },
    ];
    for case in cases {
        let answer = call(
            address,
            Method::GET,
            case.path,
            &[
                ("user-agent", "kube-probe/1.33"),
                ("host", &format!("10.1.2.3:{}", 15020)),
            ],
        )
        .await;
        assert_eq!(answer.status, case.status, "{}: {}", case.path, answer.body);
        assert!(
            answer.body.contains(case.body_has),
            "{}: {}",
            case.path,
            answer.body
        );
    }

    // What the app saw of the readiness probe: its path, the kubelet's headers plus the
    // probe's, the agent port in Host replaced by the app's, from the passthrough source.
    let first = next_seen(&mut seen).await;
    assert_eq!(first.path_and_query, "/ready");
    assert_eq!(first.headers["x-probe"], "yes");
    assert_eq!(first.headers["user-agent"], "kube-probe/1.33");
    assert_eq!(
        first.headers["host"],
        format!("10.1.2.3:{}", app.port()).as_str()
    );
    assert_eq!(first.peer.ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6)));
    for _ in 0..2 {
        next_seen(&mut seen).await;
    }
    assert_eq!(
        next_seen(&mut seen).await.path_and_query,
        "/ready?phase=stop"
    );
    server.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn http_probe_times_out_with_the_probe_timeout() {
    let (_silent, silent) = silent_port().await;
    let json =
        r#"{"/app-health/web/readyz":{"httpGet":{"path":"/","port":{silent}},"timeoutSeconds":1}}"#;
    let (server, _agent, _calls) = agent(config(json, &[("silent", silent)])).await;
    let answer = get(server.address, "/app-health/web/readyz").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        answer.body.contains("no answer within 1s"),
        "{}",
        answer.body
    );
    server.stop().await;
}

#[tokio::test]
async fn https_probes_say_they_are_not_supported() {
    let json =
        r#"{"/app-health/web/readyz":{"httpGet":{"path":"/","port":8443,"scheme":"HTTPS"}}}"#;
    let (server, _agent, _calls) = agent(config(json, &[])).await;
    let answer = get(server.address, "/app-health/web/readyz").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        answer.body.contains("HTTPS probes are not supported"),
        "{}",
        answer.body
    );
    server.stop().await;
}

#[tokio::test]
async fn tcp_probes_connect() {
    let (_open, open) = silent_port().await;
    let closed = closed_port().await;
    let json = concat!(
        r#"{"/app-health/db/livez":{"tcpSocket":{"port":{open}},"timeoutSeconds":2},"#,
        r#""/app-health/db/readyz":{"tcpSocket":{"port":{closed}},"timeoutSeconds":2},"#,
        r#""/app-health/db/startupz":{"tcpSocket":{"port":{open},"host":"127.0.0.1"}}}"#
    );
    let (server, _agent, _calls) = agent(config(json, &[("open", open), ("closed", closed)])).await;
    let cases = [
        ("/app-health/db/livez", StatusCode::OK),
        ("/app-health/db/readyz", StatusCode::SERVICE_UNAVAILABLE),
        ("/app-health/db/startupz", StatusCode::OK),
    ];
    for (path, status) in cases {
        let answer = get(server.address, path).await;
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
    }
    server.stop().await;
}

#[tokio::test]
async fn grpc_probes_check_health() {
    // Wire values: 0 UNKNOWN, 1 SERVING, 2 NOT_SERVING.
    let (grpc, grpc_task, mut asked) =
        grpc_server(vec![("", 1), ("payments", 2), ("starting", 0)]).await;
    let closed = closed_port().await;
    let json = concat!(
        r#"{"/app-health/api/readyz":{"grpc":{"port":{grpc},"service":null},"timeoutSeconds":2},"#,
        r#""/app-health/api/livez":{"grpc":{"port":{grpc},"service":"payments"},"timeoutSeconds":2},"#,
        r#""/app-health/api/startupz":{"grpc":{"port":{grpc},"service":"starting"},"timeoutSeconds":2},"#,
        r#""/app-health/other/readyz":{"grpc":{"port":{grpc},"service":"nobody"},"timeoutSeconds":2},"#,
        r#""/app-health/other/livez":{"grpc":{"port":{closed}},"timeoutSeconds":2},"#,
        r#""/app-health/other/startupz":{"grpc":{"port":{grpc},"mode":"TLS"},"timeoutSeconds":2}}"#
    );
    let (server, _agent, _calls) =
        agent(config(json, &[("grpc", grpc.port()), ("closed", closed)])).await;
    struct Case {
        path: &'static str,
        status: StatusCode,
        body_has: &'static str,
        service: Option<&'static str>,
    }
    let cases = [
        Case {
            path: "/app-health/api/readyz",
            status: StatusCode::OK,
            body_has: "",
            service: Some(""),
        },
        Case {
            path: "/app-health/api/livez",
            status: StatusCode::SERVICE_UNAVAILABLE,
            body_has: "NOT_SERVING",
            service: Some("payments"),
        },
        Case {
            path: "/app-health/api/startupz",
            status: StatusCode::SERVICE_UNAVAILABLE,
            body_has: "UNKNOWN",
            service: Some("starting"),
        },
        Case {
            path: "/app-health/other/readyz",
            status: StatusCode::SERVICE_UNAVAILABLE,
            body_has: "status 5 (NOT_FOUND",
            service: Some("nobody"),
        },
        Case {
            path: "/app-health/other/livez",
            status: StatusCode::SERVICE_UNAVAILABLE,
            body_has: "connect to",
            service: None,
        },
        Case {
            path: "/app-health/other/startupz",
            status: StatusCode::SERVICE_UNAVAILABLE,
            body_has: "over TLS are not supported",
            service: None,
        },
    ];
    for case in cases {
        let answer = get(server.address, case.path).await;
        assert_eq!(answer.status, case.status, "{}: {}", case.path, answer.body);
        assert!(
            answer.body.contains(case.body_has),
            "{}: {}",
            case.path,
            answer.body
        );
        if let Some(service) = case.service {
            assert_eq!(
                within("the gRPC server", asked.recv()).await.as_deref(),
                Some(service),
                "{}",
                case.path
            );
        }
    }
    server.stop().await;
    grpc_task.abort();
}

#[tokio::test]
async fn http2_probe_uses_prior_knowledge() {
    let (h2, h2_task, _asked) = grpc_server(vec![]).await;
    let json = r#"{"/app-health/web/readyz":{"httpGet":{"path":"/healthz","port":{h2},"protocol":"HTTP2"},"timeoutSeconds":2}}"#;
    let (server, _agent, _calls) = agent(config(json, &[("h2", h2.port())])).await;
    let answer = get(server.address, "/app-health/web/readyz").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "h2 ok")
    );
    server.stop().await;
    h2_task.abort();
}

#[tokio::test]
async fn readiness_drain_and_quit_on_the_agent_port() {
    let (server, agent, mut calls) = agent(AgentConfig::default()).await;
    let address = server.address;
    assert_eq!(get(address, "/healthz/ready").await.status, StatusCode::OK);
    assert_eq!(
        get(address, "/drain").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(get(address, "/nothing").await.status, StatusCode::NOT_FOUND);

    // The native sidecar's preStop hook: `skiff-proxy request --debug-port=15020 POST drain`.
    let port = server.port();
    let drained = within(
        "request",
        tokio::task::spawn_blocking(move || request(port, "POST", "drain")),
    )
    .await
    .expect("request thread");
    assert_eq!(drained.expect("drain"), "OK\n");
    within("drain callback", calls.drains.recv())
        .await
        .expect("drain callback");
    assert!(agent.control.readiness().is_draining());
    let answer = get(address, "/healthz/ready").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.body.contains("draining"));

    let quit = post(address, "/quitquitquit").await;
    assert_eq!(quit.status, StatusCode::OK);
    within("quit callback", calls.quits.recv())
        .await
        .expect("quit callback");
    server.stop().await;
}
