//! Application probes run by the agent against local servers, and the agent's own
//! endpoints.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hyper::{Method, StatusCode};
use rustls::pki_types::ServerName;

use super::support::{
    Handshake, agent, app, closed_port, grpc_server, https_app, next_seen, page, silent_port,
};
use crate::admin::http::testing::{call, get, post, within};
use crate::admin::request;
use crate::agent::tls::server_name;
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
    let (_held, refused) = closed_port().await;
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

/// The next handshake the HTTPS app completed.
async fn next_handshake(
    handshakes: &mut tokio::sync::mpsc::UnboundedReceiver<Handshake>,
) -> Handshake {
    within("the HTTPS app to complete a handshake", handshakes.recv())
        .await
        .expect("handshake channel open")
}

#[tokio::test]
async fn https_probes_accept_any_certificate_and_map_app_status() {
    // The probe's host is a name: the first address "localhost" resolves to, which is
    // where the probe connects.
    let localhost = tokio::net::lookup_host(("localhost", 0))
        .await
        .expect("resolve localhost")
        .next()
        .expect("localhost has an address")
        .ip();
    let (tls, tls_task, mut handshakes) = https_app(
        localhost,
        vec![
            ("/ready", page(StatusCode::OK, "secure ok")),
            (
                "/fail",
                page(StatusCode::INTERNAL_SERVER_ERROR, "database down"),
            ),
        ],
        vec![],
    )
    .await;
    let (on_ip, on_ip_task, mut on_ip_handshakes) = https_app(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        vec![("/ready", page(StatusCode::OK, "secure ok"))],
        vec![],
    )
    .await;
    let json = concat!(
        r#"{"/app-health/web/readyz":{"httpGet":{"path":"/ready","port":{on_ip},"scheme":"HTTPS"},"timeoutSeconds":3},"#,
        r#""/app-health/web/livez":{"httpGet":{"path":"/fail","port":{tls},"host":"localhost","scheme":"HTTPS"},"timeoutSeconds":3},"#,
        r#""/app-health/web/startupz":{"httpGet":{"path":"/ready","port":{tls},"host":"localhost","scheme":"https"},"timeoutSeconds":3},"#,
        r#""/app-health/h2/readyz":{"httpGet":{"path":"/ready","port":{tls},"host":"localhost","scheme":"HTTPS","protocol":"HTTP2"},"timeoutSeconds":3}}"#
    );
    let (server, _agent, _calls) = agent(config(
        json,
        &[("tls", tls.port()), ("on_ip", on_ip.port())],
    ))
    .await;

    // To the pod's address: no SNI, since SNI carries only names.
    let answer = get(server.address, "/app-health/web/readyz").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (StatusCode::OK, "secure ok")
    );
    let handshake = next_handshake(&mut on_ip_handshakes).await;
    assert_eq!(handshake.sni, None);
    assert_eq!(handshake.alpn.as_deref(), Some(b"http/1.1".as_slice()));

    struct Case {
        path: &'static str,
        status: StatusCode,
        body_has: String,
        alpn: &'static [u8],
    }
    let cases = [
        Case {
            path: "/app-health/web/livez",
            status: StatusCode::SERVICE_UNAVAILABLE,
            body_has: format!(
                "HTTPS probe of {tls}/fail answered 500 Internal Server Error: database down"
            ),
            alpn: b"http/1.1",
        },
        Case {
            path: "/app-health/web/startupz",
            status: StatusCode::OK,
            body_has: "secure ok".to_owned(),
            alpn: b"http/1.1",
        },
        Case {
            path: "/app-health/h2/readyz",
            status: StatusCode::OK,
            body_has: "secure ok".to_owned(),
            alpn: b"h2",
        },
    ];
    for case in cases {
        let answer = get(server.address, case.path).await;
        assert_eq!(answer.status, case.status, "{}: {}", case.path, answer.body);
        assert!(
            answer.body.contains(&case.body_has),
            "{}: {}",
            case.path,
            answer.body
        );
        // A host name is sent in SNI.
        let handshake = next_handshake(&mut handshakes).await;
        assert_eq!(handshake.sni.as_deref(), Some("localhost"), "{}", case.path);
        assert_eq!(handshake.alpn.as_deref(), Some(case.alpn), "{}", case.path);
    }
    server.stop().await;
    tls_task.abort();
    on_ip_task.abort();
}

#[tokio::test]
async fn https_probe_of_a_plain_http_port_fails_the_handshake_at_once() {
    let (app, mut seen) = app(vec![("/ready", page(StatusCode::OK, "plain ok"))]).await;
    // A timeout longer than the client's bound on the whole call: an answer at all means
    // the failure did not wait for it.
    let json = r#"{"/app-health/web/readyz":{"httpGet":{"path":"/ready","port":{app},"scheme":"HTTPS"},"timeoutSeconds":60}}"#;
    let (server, _agent, _calls) = agent(config(json, &[("app", app.port())])).await;
    let answer = get(server.address, "/app-health/web/readyz").await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    for part in [
        format!(
            "HTTPS probe of {}/ready: TLS handshake with {} failed",
            app.address, app.address
        ),
        "the answer was not TLS: the port may serve plain HTTP".to_owned(),
    ] {
        assert!(answer.body.contains(&part), "{part:?} in {}", answer.body);
    }
    // The request itself was never sent in the clear.
    assert!(seen.try_recv().is_err());
    server.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn https_probe_times_out_when_the_handshake_never_completes() {
    // The connection is accepted (by the kernel) and the ClientHello never answered.
    let (_silent, silent) = silent_port().await;
    let json = r#"{"/app-health/web/readyz":{"httpGet":{"path":"/","port":{silent},"scheme":"HTTPS"},"timeoutSeconds":1}}"#;
    let (server, _agent, _calls) = agent(config(json, &[("silent", silent)])).await;
    let answer = get(server.address, "/app-health/web/readyz").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    let want = format!("the TLS handshake with 127.0.0.1:{silent} did not complete within 1s");
    assert!(answer.body.contains(&want), "{}", answer.body);
    server.stop().await;
}

/// The name a TLS probe gives the server: the probe's host when it is a name (sent in SNI),
/// else the address it connects to (not sent).
#[test]
fn tls_server_names() {
    let ip = |s: &str| ServerName::from(s.parse::<IpAddr>().unwrap());
    let dns = |s: &'static str| ServerName::try_from(s).unwrap();
    let cases = [
        (None, "10.1.2.3", ip("10.1.2.3")),
        (Some("web.example"), "10.1.2.3", dns("web.example")),
        (Some("web.example."), "10.1.2.3", dns("web.example")),
        (Some("localhost"), "127.0.0.1", dns("localhost")),
        (Some("10.0.0.9"), "10.0.0.9", ip("10.0.0.9")),
        (Some("[fd00::1]"), "fd00::1", ip("fd00::1")),
        (Some("fd00::1"), "fd00::1", ip("fd00::1")),
        // Not a DNS name: no SNI rather than no probe.
        (Some("no spaces allowed"), "10.1.2.3", ip("10.1.2.3")),
    ];
    for (host, target, want) in cases {
        let address = SocketAddr::new(target.parse().unwrap(), 8443);
        assert_eq!(server_name(host, address), want, "{host:?}");
    }
}

#[tokio::test]
async fn tcp_probes_connect() {
    let (_open, open) = silent_port().await;
    let (_held, closed) = closed_port().await;
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
    let (_held, closed) = closed_port().await;
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
            // TLS to the plaintext server: the handshake fails.
            path: "/app-health/other/startupz",
            status: StatusCode::SERVICE_UNAVAILABLE,
            body_has: "TLS handshake with",
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
async fn grpc_probes_in_tls_mode() {
    let (tls, tls_task, mut handshakes) = https_app(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        vec![],
        vec![("", 1), ("payments", 2)],
    )
    .await;
    let json = concat!(
        r#"{"/app-health/api/readyz":{"grpc":{"port":{tls},"service":null,"mode":"TLS"},"timeoutSeconds":2},"#,
        r#""/app-health/api/livez":{"grpc":{"port":{tls},"service":"payments","mode":"tls"},"timeoutSeconds":2},"#,
        r#""/app-health/api/startupz":{"grpc":{"port":{tls}},"timeoutSeconds":2}}"#
    );
    let (server, _agent, _calls) = agent(config(json, &[("tls", tls.port())])).await;
    let cases = [
        ("/app-health/api/readyz", StatusCode::OK, ""),
        (
            "/app-health/api/livez",
            StatusCode::SERVICE_UNAVAILABLE,
            "NOT_SERVING",
        ),
    ];
    for (path, status, body_has) in cases {
        let answer = get(server.address, path).await;
        assert_eq!(answer.status, status, "{path}: {}", answer.body);
        assert!(answer.body.contains(body_has), "{path}: {}", answer.body);
        let handshake = next_handshake(&mut handshakes).await;
        assert_eq!(handshake.alpn.as_deref(), Some(b"h2".as_slice()), "{path}");
        assert_eq!(handshake.sni, None, "{path}");
    }
    // Without the mode, plaintext h2c to a TLS port fails.
    let answer = get(server.address, "/app-health/api/startupz").await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    server.stop().await;
    tls_task.abort();
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
