//! Expected values come from Istio's golden files in pkg/kube/inject/testdata/inject
//! (hello-probes, named_port, https-probes, native-sidecar: input pod, rewritten pod and
//! `ISTIO_KUBE_APP_PROBERS` text), from Istio's Go types (field order, `omitempty`), from
//! spec/injector.md section 2, and from the rules in the module documentation. None of them
//! was produced by running this code.

use serde_json::{Value, json};

use super::*;

mod property;
mod restore;

fn spec(value: Value) -> PodSpec {
    serde_json::from_value(value).expect("test pod spec")
}

fn pod(containers: Value) -> PodSpec {
    spec(json!({ "containers": containers }))
}

/// Rewrites, checks the JSON text and the rewritten spec, then checks that restoring gives
/// the input back.
#[track_caller]
fn check(input: PodSpec, status_port: u16, want_json: Option<&str>, want_spec: PodSpec) {
    let mut got = input.clone();
    let json = rewrite(&mut got, status_port).expect("rewrite should succeed");
    assert_eq!(json.as_deref(), want_json);
    assert_eq!(got, want_spec);
    if let Some(json) = json {
        restore(&mut got, &json).expect("restore should succeed");
        assert_eq!(got, input, "restore(rewrite(x)) != x");
    }
}

#[test]
fn istio_hello_probes() {
    // testdata/inject/hello-probes.yaml and its .injected.
    let input = pod(json!([
        {
            "name": "hello",
            "ports": [{"name": "http", "containerPort": 80}],
            "livenessProbe": {"httpGet": {"port": "http"}},
            "readinessProbe": {"httpGet": {"port": 3333}},
            "lifecycle": {
                "preStop": {"httpGet": {"port": 91}},
                "postStart": {"tcpSocket": {"port": 93}}
            }
        },
        {
            "name": "world",
            "ports": [{"name": "http", "containerPort": 90}],
            "livenessProbe": {"httpGet": {"port": "http"}},
            "readinessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]}}
        }
    ]));
    let want = pod(json!([
        {
            "name": "hello",
            "ports": [{"name": "http", "containerPort": 80}],
            "livenessProbe": {"httpGet": {"path": "/app-health/hello/livez", "port": 15020}},
            "readinessProbe": {"httpGet": {"path": "/app-health/hello/readyz", "port": 15020}},
            "lifecycle": {
                "preStop": {"httpGet": {"path": "/app-lifecycle/hello/prestopz", "port": 15020}},
                "postStart": {"httpGet": {"path": "/app-lifecycle/hello/poststartz", "port": 15020}}
            }
        },
        {
            "name": "world",
            "ports": [{"name": "http", "containerPort": 90}],
            "livenessProbe": {"httpGet": {"path": "/app-health/world/livez", "port": 15020}},
            "readinessProbe": {"exec": {"command": ["cat", "/tmp/healthy"]}}
        }
    ]));
    // Istio's text, plus skiffPortName where the pod used the name "http".
    let istio = concat!(
        r#"{"/app-health/hello/livez":{"httpGet":{"port":80},"skiffPortName":"http"},"#,
        r#""/app-health/hello/readyz":{"httpGet":{"port":3333}},"#,
        r#""/app-health/world/livez":{"httpGet":{"port":90},"skiffPortName":"http"},"#,
        r#""/app-lifecycle/hello/poststartz":{"tcpSocket":{"port":93}},"#,
        r#""/app-lifecycle/hello/prestopz":{"httpGet":{"port":91}}}"#
    );
    check(input, 15020, Some(istio), want);
}

#[test]
fn istio_named_port() {
    // testdata/inject/named_port.yaml: Istio writes {"httpGet":{"port":80}}.
    let input = pod(json!([{
        "name": "hello",
        "ports": [{"name": "http", "containerPort": 80}],
        "readinessProbe": {"httpGet": {"port": "http"}}
    }]));
    let want = pod(json!([{
        "name": "hello",
        "ports": [{"name": "http", "containerPort": 80}],
        "readinessProbe": {"httpGet": {"path": "/app-health/hello/readyz", "port": 15020}}
    }]));
    let json = r#"{"/app-health/hello/readyz":{"httpGet":{"port":80},"skiffPortName":"http"}}"#;
    check(input, 15020, Some(json), want);
}

#[test]
fn istio_https_probe() {
    // testdata/inject/https-probes.yaml: the scheme is kept in the JSON only.
    let input = pod(json!([{
        "name": "hello",
        "readinessProbe": {"httpGet": {"port": 3333, "scheme": "HTTPS"}}
    }]));
    let want = pod(json!([{
        "name": "hello",
        "readinessProbe": {"httpGet": {"path": "/app-health/hello/readyz", "port": 15020, "scheme": "HTTP"}}
    }]));
    let json = r#"{"/app-health/hello/readyz":{"httpGet":{"port":3333,"scheme":"HTTPS"}}}"#;
    check(input, 15020, Some(json), want);
}

#[test]
fn istio_native_sidecar_of_another_mesh() {
    // testdata/inject/native-sidecar.yaml: an init container with restartPolicy Always.
    let input = spec(json!({
        "initContainers": [{
            "name": "other-sidecar",
            "restartPolicy": "Always",
            "readinessProbe": {"httpGet": {"port": 3333}},
            "ports": [{"name": "http", "containerPort": 80}]
        }],
        "containers": [{"name": "hello", "ports": [{"name": "http", "containerPort": 80}]}]
    }));
    let want = spec(json!({
        "initContainers": [{
            "name": "other-sidecar",
            "restartPolicy": "Always",
            "readinessProbe": {"httpGet": {"path": "/app-health/other-sidecar/readyz", "port": 15020}},
            "ports": [{"name": "http", "containerPort": 80}]
        }],
        "containers": [{"name": "hello", "ports": [{"name": "http", "containerPort": 80}]}]
    }));
    let json = r#"{"/app-health/other-sidecar/readyz":{"httpGet":{"port":3333}}}"#;
    check(input, 15020, Some(json), want);
}

/// One container named `app` with the given fields, before and after, and the JSON.
struct Case {
    name: &'static str,
    status_port: u16,
    before: Value,
    after: Value,
    json: Option<&'static str>,
}

fn app(fields: Value) -> Value {
    let mut c = json!({"name": "app"});
    if let (Some(c), Some(fields)) = (c.as_object_mut(), fields.as_object()) {
        c.extend(fields.clone());
    }
    c
}

#[test]
fn single_slot_table() {
    let timing = json!({
        "initialDelaySeconds": 5, "periodSeconds": 7, "timeoutSeconds": 3,
        "successThreshold": 1, "failureThreshold": 4, "terminationGracePeriodSeconds": 30
    });
    let with_timing = |handler: Value| {
        let mut probe = timing.clone();
        if let (Some(p), Some(h)) = (probe.as_object_mut(), handler.as_object()) {
            p.extend(h.clone());
        }
        probe
    };
    let cases = vec![
        Case {
            name: "http with every field: timing, host and headers stay, scheme HTTPS becomes HTTP",
            status_port: 15020,
            before: app(json!({"readinessProbe": with_timing(json!({"httpGet": {
                "path": "/ready", "port": 8080, "host": "10.0.0.1", "scheme": "HTTPS",
                "httpHeaders": [{"name": "Host", "value": "web.example"}]
            }}))})),
            after: app(json!({"readinessProbe": with_timing(json!({"httpGet": {
                "path": "/app-health/app/readyz", "port": 15020, "host": "10.0.0.1",
                "scheme": "HTTP", "httpHeaders": [{"name": "Host", "value": "web.example"}]
            }}))})),
            json: Some(concat!(
                r#"{"/app-health/app/readyz":{"httpGet":{"path":"/ready","port":8080,"#,
                r#""host":"10.0.0.1","scheme":"HTTPS","httpHeaders":[{"name":"Host","value":"web.example"}]},"#,
                r#""timeoutSeconds":3}}"#
            )),
        },
        Case {
            name: "http scheme HTTP is kept",
            status_port: 15020,
            before: app(
                json!({"livenessProbe": {"httpGet": {"path": "/live", "port": 8080, "scheme": "HTTP"}, "timeoutSeconds": 1}}),
            ),
            after: app(
                json!({"livenessProbe": {"httpGet": {"path": "/app-health/app/livez", "port": 15020, "scheme": "HTTP"}, "timeoutSeconds": 1}}),
            ),
            json: Some(
                r#"{"/app-health/app/livez":{"httpGet":{"path":"/live","port":8080,"scheme":"HTTP"},"timeoutSeconds":1}}"#,
            ),
        },
        Case {
            name: "tcp becomes a bare httpGet; host only in the JSON",
            status_port: 15020,
            before: app(
                json!({"livenessProbe": with_timing(json!({"tcpSocket": {"port": 3306, "host": "db"}}))}),
            ),
            after: app(
                json!({"livenessProbe": with_timing(json!({"httpGet": {"path": "/app-health/app/livez", "port": 15020}}))}),
            ),
            json: Some(
                r#"{"/app-health/app/livez":{"tcpSocket":{"port":3306,"host":"db"},"timeoutSeconds":3}}"#,
            ),
        },
        Case {
            name: "grpc with a service",
            status_port: 15020,
            before: app(
                json!({"startupProbe": {"grpc": {"port": 9090, "service": "health"}, "periodSeconds": 2}}),
            ),
            after: app(
                json!({"startupProbe": {"httpGet": {"path": "/app-health/app/startupz", "port": 15020}, "periodSeconds": 2}}),
            ),
            json: Some(r#"{"/app-health/app/startupz":{"grpc":{"port":9090,"service":"health"}}}"#),
        },
        Case {
            name: "grpc without a service: Go writes service null",
            status_port: 15020,
            before: app(json!({"readinessProbe": {"grpc": {"port": 9090}, "timeoutSeconds": 2}})),
            after: app(
                json!({"readinessProbe": {"httpGet": {"path": "/app-health/app/readyz", "port": 15020}, "timeoutSeconds": 2}}),
            ),
            json: Some(
                r#"{"/app-health/app/readyz":{"grpc":{"port":9090,"service":null},"timeoutSeconds":2}}"#,
            ),
        },
        Case {
            name: "timeoutSeconds 0 is left out, as Go's omitempty does",
            status_port: 15020,
            before: app(
                json!({"readinessProbe": {"httpGet": {"port": 8080}, "timeoutSeconds": 0}}),
            ),
            after: app(
                json!({"readinessProbe": {"httpGet": {"path": "/app-health/app/readyz", "port": 15020}, "timeoutSeconds": 0}}),
            ),
            json: Some(r#"{"/app-health/app/readyz":{"httpGet":{"port":8080}}}"#),
        },
        Case {
            name: "named port resolves against the container's ports; the first of a name wins",
            status_port: 15020,
            before: app(json!({
                "ports": [{"containerPort": 7000}, {"name": "web", "containerPort": 8080}, {"name": "web", "containerPort": 9090}],
                "livenessProbe": {"tcpSocket": {"port": "web"}}
            })),
            after: app(json!({
                "ports": [{"containerPort": 7000}, {"name": "web", "containerPort": 8080}, {"name": "web", "containerPort": 9090}],
                "livenessProbe": {"httpGet": {"path": "/app-health/app/livez", "port": 15020}}
            })),
            json: Some(
                r#"{"/app-health/app/livez":{"tcpSocket":{"port":8080},"skiffPortName":"web"}}"#,
            ),
        },
        Case {
            name: "exec probe untouched",
            status_port: 15020,
            before: app(json!({"livenessProbe": {"exec": {"command": ["true"]}}})),
            after: app(json!({"livenessProbe": {"exec": {"command": ["true"]}}})),
            json: None,
        },
        Case {
            name: "http probe already on the status port untouched, whatever its path",
            status_port: 15020,
            before: app(
                json!({"readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15020}}}),
            ),
            after: app(
                json!({"readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15020}}}),
            ),
            json: None,
        },
        Case {
            name: "named port that is the status port untouched",
            status_port: 15020,
            before: app(
                json!({"ports": [{"name": "status", "containerPort": 15020}], "readinessProbe": {"httpGet": {"port": "status"}}}),
            ),
            after: app(
                json!({"ports": [{"name": "status", "containerPort": 15020}], "readinessProbe": {"httpGet": {"port": "status"}}}),
            ),
            json: None,
        },
        Case {
            name: "tcp and grpc on the status port untouched",
            status_port: 15020,
            before: app(
                json!({"livenessProbe": {"tcpSocket": {"port": 15020}}, "startupProbe": {"grpc": {"port": 15020}}}),
            ),
            after: app(
                json!({"livenessProbe": {"tcpSocket": {"port": 15020}}, "startupProbe": {"grpc": {"port": 15020}}}),
            ),
            json: None,
        },
        Case {
            name: "status port other than 15020: 15020 is then an app port like any other",
            status_port: 16000,
            before: app(
                json!({"readinessProbe": {"httpGet": {"port": 15020}}, "livenessProbe": {"httpGet": {"port": 16000}}}),
            ),
            after: app(
                json!({"readinessProbe": {"httpGet": {"path": "/app-health/app/readyz", "port": 16000}}, "livenessProbe": {"httpGet": {"port": 16000}}}),
            ),
            json: Some(r#"{"/app-health/app/readyz":{"httpGet":{"port":15020}}}"#),
        },
        Case {
            name: "hooks: httpGet preStop keeps its headers, tcp postStart becomes a bare httpGet",
            status_port: 15020,
            before: app(json!({"lifecycle": {
                "preStop": {"httpGet": {"path": "/shutdown", "port": 8080, "httpHeaders": [{"name": "X-Stop", "value": "1"}]}},
                "postStart": {"tcpSocket": {"port": 8081}},
                "stopSignal": "SIGTERM"
            }})),
            after: app(json!({"lifecycle": {
                "preStop": {"httpGet": {"path": "/app-lifecycle/app/prestopz", "port": 15020, "httpHeaders": [{"name": "X-Stop", "value": "1"}]}},
                "postStart": {"httpGet": {"path": "/app-lifecycle/app/poststartz", "port": 15020}},
                "stopSignal": "SIGTERM"
            }})),
            json: Some(concat!(
                r#"{"/app-lifecycle/app/poststartz":{"tcpSocket":{"port":8081}},"#,
                r#""/app-lifecycle/app/prestopz":{"httpGet":{"path":"/shutdown","port":8080,"httpHeaders":[{"name":"X-Stop","value":"1"}]}}}"#
            )),
        },
        Case {
            name: "exec and sleep hooks untouched",
            status_port: 15020,
            before: app(
                json!({"lifecycle": {"preStop": {"sleep": {"seconds": 5}}, "postStart": {"exec": {"command": ["true"]}}}}),
            ),
            after: app(
                json!({"lifecycle": {"preStop": {"sleep": {"seconds": 5}}, "postStart": {"exec": {"command": ["true"]}}}}),
            ),
            json: None,
        },
        Case {
            name: "hook on the status port untouched (e.g. a preStop that drains the proxy)",
            status_port: 15020,
            before: app(
                json!({"lifecycle": {"preStop": {"httpGet": {"path": "/drain", "port": 15020}}}}),
            ),
            after: app(
                json!({"lifecycle": {"preStop": {"httpGet": {"path": "/drain", "port": 15020}}}}),
            ),
            json: None,
        },
        Case {
            name: "protocol is dropped from the rewritten probe and kept in the JSON",
            status_port: 15020,
            before: app(
                json!({"readinessProbe": {"httpGet": {"port": 8080, "protocol": "HTTP2"}}}),
            ),
            after: app(
                json!({"readinessProbe": {"httpGet": {"path": "/app-health/app/readyz", "port": 15020}}}),
            ),
            json: Some(
                r#"{"/app-health/app/readyz":{"httpGet":{"port":8080,"protocol":"HTTP2"}}}"#,
            ),
        },
        Case {
            name: "grpc mode is kept in the JSON",
            status_port: 15020,
            before: app(json!({"readinessProbe": {"grpc": {"port": 9090, "mode": "TLS"}}})),
            after: app(
                json!({"readinessProbe": {"httpGet": {"path": "/app-health/app/readyz", "port": 15020}}}),
            ),
            json: Some(
                r#"{"/app-health/app/readyz":{"grpc":{"port":9090,"service":null,"mode":"TLS"}}}"#,
            ),
        },
        Case {
            name: "explicitly empty path, host and headers are written, not dropped",
            status_port: 15020,
            before: app(
                json!({"readinessProbe": {"httpGet": {"path": "", "host": "", "port": 8080, "httpHeaders": []}}}),
            ),
            after: app(
                json!({"readinessProbe": {"httpGet": {"path": "/app-health/app/readyz", "host": "", "port": 15020, "httpHeaders": []}}}),
            ),
            json: Some(
                r#"{"/app-health/app/readyz":{"httpGet":{"path":"","port":8080,"host":"","httpHeaders":[]}}}"#,
            ),
        },
        Case {
            name: "Go's HTML escaping of <, > and &",
            status_port: 15020,
            before: app(
                json!({"readinessProbe": {"httpGet": {"path": "/h?a=1&b=<2>", "port": 8080}}}),
            ),
            after: app(
                json!({"readinessProbe": {"httpGet": {"path": "/app-health/app/readyz", "port": 15020}}}),
            ),
            json: Some(
                r#"{"/app-health/app/readyz":{"httpGet":{"path":"/h?a=1\u0026b=\u003c2\u003e","port":8080}}}"#,
            ),
        },
        Case {
            name: "a probe with httpGet and exec (refused by the API server): httpGet is rewritten",
            status_port: 15020,
            before: app(
                json!({"readinessProbe": {"httpGet": {"port": 8080}, "exec": {"command": ["true"]}}}),
            ),
            after: app(
                json!({"readinessProbe": {"httpGet": {"path": "/app-health/app/readyz", "port": 15020}, "exec": {"command": ["true"]}}}),
            ),
            json: Some(r#"{"/app-health/app/readyz":{"httpGet":{"port":8080}}}"#),
        },
        Case {
            name: "a probe with tcpSocket and grpc: tcpSocket wins, grpc stays",
            status_port: 15020,
            before: app(
                json!({"readinessProbe": {"tcpSocket": {"port": 8080}, "grpc": {"port": 9090}}}),
            ),
            after: app(
                json!({"readinessProbe": {"httpGet": {"path": "/app-health/app/readyz", "port": 15020}, "grpc": {"port": 9090}}}),
            ),
            json: Some(r#"{"/app-health/app/readyz":{"tcpSocket":{"port":8080}}}"#),
        },
        Case {
            name: "status port 0: nothing can answer, nothing is rewritten",
            status_port: 0,
            before: app(json!({"readinessProbe": {"httpGet": {"port": 8080}}})),
            after: app(json!({"readinessProbe": {"httpGet": {"port": 8080}}})),
            json: None,
        },
    ];
    for case in cases {
        let mut got = pod(json!([case.before.clone()]));
        let json = rewrite(&mut got, case.status_port)
            .unwrap_or_else(|e| panic!("{}: rewrite failed: {e}", case.name));
        assert_eq!(json.as_deref(), case.json, "{}", case.name);
        assert_eq!(got, pod(json!([case.after])), "{}", case.name);
        if let Some(json) = json {
            restore(&mut got, &json)
                .unwrap_or_else(|e| panic!("{}: restore failed: {e}", case.name));
        }
        assert_eq!(got, pod(json!([case.before])), "{}: round trip", case.name);
    }
}

#[test]
fn multiple_containers_skip_the_proxy_and_plain_init_containers() {
    let input = spec(json!({
        "initContainers": [
            {"name": "istio-init"},
            // A plain init container: Kubernetes refuses probes there, so they stay for the
            // API server to report.
            {"name": "migrate", "readinessProbe": {"httpGet": {"port": 8080}}},
            {"name": "istio-proxy", "restartPolicy": "Always",
             "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}}},
            {"name": "log-agent", "restartPolicy": "Always", "livenessProbe": {"tcpSocket": {"port": 24224}}}
        ],
        "containers": [
            {"name": "web", "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}}},
            {"name": "istio-proxy", "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}}},
            {"name": "worker", "livenessProbe": {"grpc": {"port": 9090}}}
        ]
    }));
    let want = spec(json!({
        "initContainers": [
            {"name": "istio-init"},
            {"name": "migrate", "readinessProbe": {"httpGet": {"port": 8080}}},
            {"name": "istio-proxy", "restartPolicy": "Always",
             "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}}},
            {"name": "log-agent", "restartPolicy": "Always",
             "livenessProbe": {"httpGet": {"path": "/app-health/log-agent/livez", "port": 15020}}}
        ],
        "containers": [
            {"name": "web", "readinessProbe": {"httpGet": {"path": "/app-health/web/readyz", "port": 15020}}},
            {"name": "istio-proxy", "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": 15021}}},
            {"name": "worker", "livenessProbe": {"httpGet": {"path": "/app-health/worker/livez", "port": 15020}}}
        ]
    }));
    let json = concat!(
        r#"{"/app-health/log-agent/livez":{"tcpSocket":{"port":24224}},"#,
        r#""/app-health/web/readyz":{"httpGet":{"path":"/ready","port":8080}},"#,
        r#""/app-health/worker/livez":{"grpc":{"port":9090,"service":null}}}"#
    );
    check(input, 15020, Some(json), want);
}

#[test]
fn rewriting_twice_changes_nothing_the_second_time() {
    let input = pod(json!([
        {"name": "a", "ports": [{"name": "p", "containerPort": 81}],
         "readinessProbe": {"httpGet": {"port": "p"}}, "livenessProbe": {"tcpSocket": {"port": 82}}},
        {"name": "b", "lifecycle": {"preStop": {"httpGet": {"port": 83}}}}
    ]));
    let mut once = input.clone();
    assert!(rewrite(&mut once, 15020).expect("first rewrite").is_some());
    let mut twice = once.clone();
    assert_eq!(rewrite(&mut twice, 15020).expect("second rewrite"), None);
    assert_eq!(twice, once);
}

#[test]
fn errors_name_the_container_slot_and_port() {
    let cases: Vec<(&str, PodSpec, &str)> = vec![
        (
            "unknown named port",
            pod(
                json!([{"name": "web", "ports": [{"name": "http", "containerPort": 80}, {"containerPort": 81}],
                        "livenessProbe": {"httpGet": {"port": "metrics"}}}]),
            ),
            "container web: livenessProbe uses the port name \"metrics\", but the container has \
             no port of that name (its port names: http); add it to the container's ports or \
             use the port number",
        ),
        (
            "unknown named port, no named ports at all",
            pod(
                json!([{"name": "web", "lifecycle": {"preStop": {"tcpSocket": {"port": "admin"}}}}]),
            ),
            "container web: lifecycle.preStop uses the port name \"admin\", but the container has \
             no port of that name (it has no named ports); add it to the container's ports or \
             use the port number",
        ),
        (
            "port 0",
            pod(json!([{"name": "web", "readinessProbe": {"httpGet": {"port": 0}}}])),
            "container web: readinessProbe port 0 is not a port number (1-65535)",
        ),
        (
            "port above 65535",
            pod(json!([{"name": "web", "startupProbe": {"tcpSocket": {"port": 70000}}}])),
            "container web: startupProbe port 70000 is not a port number (1-65535)",
        ),
        (
            "negative grpc port",
            pod(json!([{"name": "web", "readinessProbe": {"grpc": {"port": -1}}}])),
            "container web: readinessProbe port -1 is not a port number (1-65535)",
        ),
        (
            "named port with containerPort 0",
            pod(
                json!([{"name": "web", "ports": [{"name": "http", "containerPort": 0}],
                        "readinessProbe": {"httpGet": {"port": "http"}}}]),
            ),
            "container web: readinessProbe port \"http\" is containerPort 0, which is not a port \
             number (1-65535)",
        ),
        (
            "container name that is not a DNS label",
            pod(json!([{"name": "Web_1", "readinessProbe": {"httpGet": {"port": 8080}}}])),
            "container name \"Web_1\" cannot be used in the probe path /app-health/Web_1/readyz: \
             use lowercase letters, digits and '-', as Kubernetes requires",
        ),
        (
            "container name with a slash",
            pod(json!([{"name": "a/b", "lifecycle": {"postStart": {"httpGet": {"port": 8080}}}}])),
            "container name \"a/b\" cannot be used in the probe path \
             /app-lifecycle/a/b/poststartz: use lowercase letters, digits and '-', as Kubernetes \
             requires",
        ),
        (
            "duplicate names across a sidecar init container and a container",
            spec(
                json!({"initContainers": [{"name": "web", "restartPolicy": "Always"}],
                        "containers": [{"name": "web"}]}),
            ),
            "two containers are named \"web\"; their probe paths (/app-health/web/...) would \
             collide. Kubernetes requires container names to be unique across containers and \
             initContainers",
        ),
    ];
    for (name, input, message) in cases {
        let mut got = input.clone();
        match rewrite(&mut got, 15020) {
            Ok(json) => panic!("{name}: should fail, got {json:?}"),
            Err(e) => assert_eq!(e.to_string(), message, "{name}"),
        }
        assert_eq!(got, input, "{name}: the spec must be unchanged on error");
    }
}

#[test]
fn an_error_after_a_rewritten_slot_leaves_the_spec_unchanged() {
    let input = pod(json!([
        {"name": "a", "readinessProbe": {"httpGet": {"port": 8080}}},
        {"name": "b", "readinessProbe": {"httpGet": {"port": "missing"}}}
    ]));
    let mut got = input.clone();
    assert!(matches!(
        rewrite(&mut got, 15020),
        Err(ProbeError::UnknownPortName { .. })
    ));
    assert_eq!(got, input);
}

#[test]
fn slot_paths_parse_back() {
    for slot in Slot::ALL {
        let path = slot.path("my-app");
        assert_eq!(Slot::parse_path(&path), Some(("my-app", slot)), "{path}");
    }
    assert_eq!(
        Slot::PostStart.path("x"),
        "/app-lifecycle/x/poststartz",
        "FormatProberURL"
    );
    for bad in [
        "",
        "/",
        "app-health/x/readyz",
        "/app-health/x",
        "/app-health/a/b/readyz",
        "/other/x/readyz",
    ] {
        assert_eq!(Slot::parse_path(bad), None, "{bad}");
    }
}

/// Varied pods for the round-trip property, beyond the tables above.
#[test]
fn round_trip_over_varied_specs() {
    let specs = [
        spec(json!({"containers": []})),
        spec(json!({"containers": [{"name": "only"}]})),
        spec(json!({
            "initContainers": [
                {"name": "side", "restartPolicy": "Always",
                 "ports": [{"name": "h", "containerPort": 1}],
                 "readinessProbe": {"httpGet": {"port": "h", "scheme": "HTTPS"}},
                 "startupProbe": {"grpc": {"port": 65535, "service": ""}},
                 "lifecycle": {"postStart": {"tcpSocket": {"port": "h", "host": "x"}}}},
                {"name": "plain", "livenessProbe": {"tcpSocket": {"port": 1}}}
            ],
            "containers": [
                {"name": "a", "ports": [{"name": "t", "containerPort": 8080}],
                 "readinessProbe": {"tcpSocket": {"port": "t"}, "initialDelaySeconds": 10},
                 "livenessProbe": {"httpGet": {"port": 15020, "path": "/already"}},
                 "startupProbe": {"exec": {"command": ["x"]}},
                 "lifecycle": {"preStop": {"httpGet": {"port": "t", "path": "/q&a"}},
                               "postStart": {"sleep": {"seconds": 1}}}},
                {"name": "b", "readinessProbe": {"httpGet": {"port": 8080, "path": "/app-health/b/readyz"}}},
                {"name": "istio-proxy", "readinessProbe": {"httpGet": {"port": 15021}}}
            ]
        })),
    ];
    for input in specs {
        let mut got = input.clone();
        if let Some(json) = rewrite(&mut got, 15020).expect("rewrite") {
            restore(&mut got, &json).expect("restore");
        }
        assert_eq!(got, input);
    }
}
