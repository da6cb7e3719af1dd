//! Parsing of the two injector-written variables (literals as injector/src/probes.rs and
//! injector/src/prometheus.rs document and test them) and the agent's configuration; the
//! servers are tested in the submodules.

use std::net::IpAddr;
use std::time::Duration;

use super::probers::{Grpc, HttpGet, ProbeAction, Scheme, TcpSocket, is_probe_path};
use super::*;

mod merged;
mod probes;
mod support;

/// The example of injector/src/probes.rs' module documentation, as one line.
const INJECTOR_DOC_EXAMPLE: &str = concat!(
    r#"{"/app-health/web/livez":{"tcpSocket":{"port":3306},"timeoutSeconds":1},"#,
    r#""/app-health/web/readyz":{"httpGet":{"path":"/ready","port":8080,"host":"10.0.0.1","scheme":"HTTPS","#,
    r#""httpHeaders":[{"name":"Host","value":"web.example"}]},"timeoutSeconds":3,"skiffPortName":"http"},"#,
    r#""/app-health/web/startupz":{"grpc":{"port":9090,"service":null},"timeoutSeconds":1},"#,
    r#""/app-lifecycle/web/prestopz":{"httpGet":{"path":"/shutdown","port":8080}}}"#
);

fn http_get(path: &str, port: u16) -> HttpGet {
    HttpGet {
        path: path.to_owned(),
        port,
        host: None,
        scheme: Scheme::Http,
        headers: Vec::new(),
        protocol: None,
    }
}

fn probe(action: ProbeAction, timeout_seconds: Option<u64>) -> AppProbe {
    AppProbe {
        action,
        timeout: timeout_seconds.map(Duration::from_secs),
    }
}

#[test]
fn probers_from_the_injector_documentation() {
    let probers = AppProbers::parse(INJECTOR_DOC_EXAMPLE).expect("parses");
    assert_eq!(probers.len(), 4);
    let cases = [
        (
            "/app-health/web/livez",
            probe(
                ProbeAction::TcpSocket(TcpSocket {
                    port: 3306,
                    host: None,
                }),
                Some(1),
            ),
        ),
        (
            "/app-health/web/readyz",
            probe(
                ProbeAction::HttpGet(HttpGet {
                    host: Some("10.0.0.1".into()),
                    scheme: Scheme::Https,
                    headers: vec![("Host".into(), "web.example".into())],
                    ..http_get("/ready", 8080)
                }),
                Some(3),
            ),
        ),
        (
            "/app-health/web/startupz",
            probe(
                ProbeAction::Grpc(Grpc {
                    port: 9090,
                    service: String::new(),
                    mode: None,
                }),
                Some(1),
            ),
        ),
        (
            "/app-lifecycle/web/prestopz",
            probe(ProbeAction::HttpGet(http_get("/shutdown", 8080)), None),
        ),
    ];
    for (path, want) in cases {
        assert_eq!(probers.get(path), Some(&want), "{path}");
    }
}

#[test]
fn probers_single_entries() {
    let cases: Vec<(&str, &str, AppProbe)> = vec![
        (
            "Istio's own example",
            r#"{"/app-health/httpbin/livez":{"httpGet":{"path": "/hello", "port": 8080}}}"#,
            probe(ProbeAction::HttpGet(http_get("/hello", 8080)), None),
        ),
        (
            "scheme HTTP kept, timeout",
            r#"{"/app-health/app/livez":{"httpGet":{"path":"/live","port":8080,"scheme":"HTTP"},"timeoutSeconds":1}}"#,
            probe(ProbeAction::HttpGet(http_get("/live", 8080)), Some(1)),
        ),
        (
            "tcp with host",
            r#"{"/app-health/app/livez":{"tcpSocket":{"port":3306,"host":"db"},"timeoutSeconds":3}}"#,
            probe(
                ProbeAction::TcpSocket(TcpSocket {
                    port: 3306,
                    host: Some("db".into()),
                }),
                Some(3),
            ),
        ),
        (
            "grpc with a service",
            r#"{"/app-health/app/startupz":{"grpc":{"port":9090,"service":"health"}}}"#,
            probe(
                ProbeAction::Grpc(Grpc {
                    port: 9090,
                    service: "health".into(),
                    mode: None,
                }),
                None,
            ),
        ),
        (
            "grpc mode kept",
            r#"{"/app-health/app/readyz":{"grpc":{"port":9090,"service":null,"mode":"TLS"}}}"#,
            probe(
                ProbeAction::Grpc(Grpc {
                    port: 9090,
                    service: String::new(),
                    mode: Some("TLS".into()),
                }),
                None,
            ),
        ),
        (
            "protocol kept",
            r#"{"/app-health/app/readyz":{"httpGet":{"port":8080,"protocol":"HTTP2"}}}"#,
            probe(
                ProbeAction::HttpGet(HttpGet {
                    protocol: Some("HTTP2".into()),
                    ..http_get("/", 8080)
                }),
                None,
            ),
        ),
        (
            "explicitly empty path, host and headers",
            r#"{"/app-health/app/readyz":{"httpGet":{"path":"","port":8080,"host":"","httpHeaders":[]}}}"#,
            probe(ProbeAction::HttpGet(http_get("/", 8080)), None),
        ),
        (
            "Go's HTML escaping is plain JSON",
            r#"{"/app-health/app/readyz":{"httpGet":{"path":"/h?a=1\u0026b=\u003c2\u003e","port":8080}}}"#,
            probe(ProbeAction::HttpGet(http_get("/h?a=1&b=<2>", 8080)), None),
        ),
        (
            "skiffPortName ignored",
            r#"{"/app-health/app/livez":{"tcpSocket":{"port":8080},"skiffPortName":"web"}}"#,
            probe(
                ProbeAction::TcpSocket(TcpSocket {
                    port: 8080,
                    host: None,
                }),
                None,
            ),
        ),
        (
            "hook with headers",
            r#"{"/app-lifecycle/app/prestopz":{"httpGet":{"path":"/shutdown","port":8080,"httpHeaders":[{"name":"X-Stop","value":"1"}]}}}"#,
            probe(
                ProbeAction::HttpGet(HttpGet {
                    headers: vec![("X-Stop".into(), "1".into())],
                    ..http_get("/shutdown", 8080)
                }),
                None,
            ),
        ),
        (
            "path without its slash, port as a string of digits, timeout 0",
            r#"{"/app-health/app/readyz":{"httpGet":{"path":"ready","port":"8080"},"timeoutSeconds":0}}"#,
            probe(ProbeAction::HttpGet(http_get("/ready", 8080)), None),
        ),
    ];
    for (name, json, want) in cases {
        let probers = AppProbers::parse(json).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(probers.len(), 1, "{name}");
        let path = probers.paths().next().unwrap().to_owned();
        assert_eq!(probers.get(&path), Some(&want), "{name}");
    }
}

#[test]
fn probers_errors() {
    let cases = [
        ("not JSON", "{", "is not a JSON object"),
        ("an array", "[]", "is not a JSON object"),
        (
            "bad suffix",
            r#"{"/app-health/web/ready":{"tcpSocket":{"port":1}}}"#,
            "is not an app probe path",
        ),
        (
            "empty container",
            r#"{"/app-health//readyz":{"tcpSocket":{"port":1}}}"#,
            "is not an app probe path",
        ),
        (
            "nested container",
            r#"{"/app-health/a/b/readyz":{"tcpSocket":{"port":1}}}"#,
            "is not an app probe path",
        ),
        (
            "no handler",
            r#"{"/app-health/web/readyz":{"timeoutSeconds":1}}"#,
            "has none of httpGet, tcpSocket and grpc",
        ),
        (
            "two handlers",
            r#"{"/app-health/web/readyz":{"tcpSocket":{"port":1},"grpc":{"port":2}}}"#,
            "has more than one",
        ),
        (
            "named port",
            r#"{"/app-health/web/readyz":{"httpGet":{"port":"http"}}}"#,
            "uses the port name \"http\"",
        ),
        (
            "port 0",
            r#"{"/app-health/web/readyz":{"tcpSocket":{"port":0}}}"#,
            "not a port number",
        ),
        (
            "port too large",
            r#"{"/app-health/web/readyz":{"grpc":{"port":70000}}}"#,
            "not a port number",
        ),
        (
            "bad scheme",
            r#"{"/app-health/web/readyz":{"httpGet":{"port":80,"scheme":"FTP"}}}"#,
            "has the scheme \"FTP\"",
        ),
    ];
    for (name, json, want) in cases {
        let error = AppProbers::parse(json).expect_err(name).to_string();
        assert!(error.contains(want), "{name}: {error}");
        assert!(error.starts_with(APP_PROBERS_ENV), "{name}: {error}");
    }
    assert!(AppProbers::parse("").expect("empty").is_empty());
    assert!(AppProbers::parse("{}").expect("empty object").is_empty());
}

#[test]
fn probe_paths() {
    let cases = [
        ("/app-health/web/readyz", true),
        ("/app-health/web/livez", true),
        ("/app-health/web/startupz", true),
        ("/app-lifecycle/web/prestopz", true),
        ("/app-lifecycle/web/poststartz", true),
        ("/app-health/web/readyz/", false),
        ("app-health/web/readyz", false),
        ("/app-health/web", false),
        ("/healthz/ready", false),
    ];
    for (path, want) in cases {
        assert_eq!(is_probe_path(path), want, "{path}");
    }
}

fn targets(list: &[(u16, &str)]) -> Option<ScrapeConfig> {
    Some(ScrapeConfig {
        targets: list
            .iter()
            .map(|(port, path)| ScrapeTarget {
                port: *port,
                path: (*path).to_owned(),
            })
            .collect(),
    })
}

#[test]
fn scrape_configuration_values() {
    let cases = [
        (
            "the usual",
            r#"{"scrape":"true","path":"/metrics","port":"9102"}"#,
            targets(&[(9102, "/metrics")]),
        ),
        (
            "port only",
            r#"{"scrape":"","path":"","port":"9102"}"#,
            targets(&[(9102, "/metrics")]),
        ),
        (
            "scrape only: Istio's port 80",
            r#"{"scrape":"T","path":"","port":""}"#,
            targets(&[(80, "/metrics")]),
        ),
        (
            "path without port",
            r#"{"scrape":"true","path":"","port":"8080"}"#,
            targets(&[(8080, "/metrics")]),
        ),
        (
            "leading zero",
            r#"{"scrape":"","path":"","port":"08080"}"#,
            targets(&[(8080, "/metrics")]),
        ),
        (
            "Go escaping in the path",
            r#"{"scrape":"","path":"/m?a=1\u0026b=\u003c2\u003e","port":""}"#,
            targets(&[(80, "/m?a=1&b=<2>")]),
        ),
        (
            "targets",
            concat!(
                r#"{"scrape":"true","path":"/metrics","port":"8080","targets":"#,
                r#"[{"port":"8080","path":"/metrics"},{"port":"9100","path":"/custom-metrics"}]}"#
            ),
            targets(&[(8080, "/metrics"), (9100, "/custom-metrics")]),
        ),
        (
            "targets with skiffAnnotations",
            concat!(
                r#"{"scrape":"","path":"/metrics","port":"8080","targets":"#,
                r#"[{"port":"8080","path":"/metrics"},{"port":"9100","path":"/custom"}],"#,
                r#""skiffAnnotations":{"prometheus.istio.io/scrape-targets":" 8080 , 9100: /custom ,"}}"#
            ),
            targets(&[(8080, "/metrics"), (9100, "/custom")]),
        ),
        (
            "all empty with skiffAnnotations: do not scrape",
            r#"{"scrape":"","path":"","port":"","skiffAnnotations":{"prometheus.io/path":""}}"#,
            None,
        ),
        (
            "scrape false",
            r#"{"scrape":"false","path":"/metrics","port":"8080"}"#,
            None,
        ),
        (
            "scrape F",
            r#"{"scrape":"F","path":"","port":"8080"}"#,
            None,
        ),
        ("unset", "", None),
        (
            "unknown fields ignored",
            r#"{"port":"81","future":1}"#,
            targets(&[(81, "/metrics")]),
        ),
    ];
    for (name, json, want) in cases {
        let got = ScrapeConfig::parse(json, 15020).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn scrape_configuration_errors() {
    let cases = [
        ("not JSON", "{", "is not a Prometheus scrape configuration"),
        ("an array", r#"["8080"]"#, "it is not a JSON object"),
        (
            "port as a number",
            r#"{"port":8080}"#,
            "is not a Prometheus scrape configuration",
        ),
        (
            "the status port",
            r#"{"scrape":"true","port":"15020"}"#,
            "the agent's own port",
        ),
        (
            "the status port, zero-padded",
            r#"{"port":"015020"}"#,
            "the agent's own port",
        ),
        (
            "a proxy port",
            r#"{"port":"15090"}"#,
            "one of the proxy's own ports",
        ),
        ("a name", r#"{"port":"metrics"}"#, "not a port number"),
        (
            "a bad target",
            r#"{"targets":[{"port":"8080","path":"/m"},{"port":"99999","path":"/m"}]}"#,
            "\"99999\" is not a port number",
        ),
    ];
    for (name, json, want) in cases {
        let error = ScrapeConfig::parse(json, 15020)
            .expect_err(name)
            .to_string();
        assert!(error.contains(want), "{name}: {error}");
        assert!(error.starts_with(PROMETHEUS_ENV), "{name}: {error}");
    }
}

#[test]
fn agent_configuration_from_the_environment_values() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    struct Case {
        name: &'static str,
        instance_ip: Option<&'static str>,
        legacy: bool,
        probe_destination: IpAddr,
        metrics_host: IpAddr,
    }
    let cases = [
        Case {
            name: "pod IP is the probe destination, as for the kubelet",
            instance_ip: Some("10.1.2.3"),
            legacy: false,
            probe_destination: ip("10.1.2.3"),
            metrics_host: ip("127.0.0.1"),
        },
        Case {
            name: "legacy localhost",
            instance_ip: Some("10.1.2.3"),
            legacy: true,
            probe_destination: ip("127.0.0.1"),
            metrics_host: ip("127.0.0.1"),
        },
        Case {
            name: "IPv6 pod",
            instance_ip: Some("fd00::5"),
            legacy: false,
            probe_destination: ip("fd00::5"),
            metrics_host: ip("::1"),
        },
        Case {
            name: "no pod IP",
            instance_ip: None,
            legacy: false,
            probe_destination: ip("127.0.0.1"),
            metrics_host: ip("127.0.0.1"),
        },
    ];
    for case in cases {
        let config = AgentConfig::from_values(&EnvValues {
            status_port: 15020,
            probers: Some(INJECTOR_DOC_EXAMPLE),
            prometheus: Some(r#"{"scrape":"true","path":"/metrics","port":"9102"}"#),
            instance_ip: case.instance_ip,
            legacy_localhost: case.legacy,
        })
        .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert_eq!(
            config.probe_destination, case.probe_destination,
            "{}",
            case.name
        );
        assert_eq!(config.metrics_host, case.metrics_host, "{}", case.name);
        assert_eq!(config.probers.len(), 4, "{}", case.name);
        assert_eq!(
            config.scrape,
            targets(&[(9102, "/metrics")]),
            "{}",
            case.name
        );
    }

    let bad_ip = AgentConfig::from_values(&EnvValues {
        status_port: 15020,
        instance_ip: Some("pod-ip"),
        ..EnvValues::default()
    });
    assert_eq!(bad_ip, Err(AgentConfigError::InstanceIp("pod-ip".into())));
    let bad_probers = AgentConfig::from_values(&EnvValues {
        status_port: 15020,
        probers: Some("{"),
        ..EnvValues::default()
    });
    assert!(
        matches!(bad_probers, Err(AgentConfigError::Probers(_))),
        "{bad_probers:?}"
    );
    let nothing = AgentConfig::from_values(&EnvValues {
        status_port: 15020,
        ..EnvValues::default()
    })
    .expect("no variables");
    assert!(nothing.probers.is_empty());
    assert_eq!(nothing.scrape, None);
}
