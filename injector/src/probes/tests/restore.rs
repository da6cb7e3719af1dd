//! [`restore`] on its own: JSON written by Istio, slots changed since injection, and
//! malformed JSON.

use serde_json::json;

use super::pod;
use crate::probes::*;

#[test]
fn restore_from_istio_json_gives_numeric_ports() {
    // Istio's named_port golden file: no skiffPortName, so the name cannot come back.
    let mut got = pod(json!([{
        "name": "hello",
        "ports": [{"name": "http", "containerPort": 80}],
        "readinessProbe": {"httpGet": {"path": "/app-health/hello/readyz", "port": 15020}}
    }]));
    restore(
        &mut got,
        r#"{"/app-health/hello/readyz":{"httpGet":{"port":80}}}"#,
    )
    .expect("restore");
    assert_eq!(
        got,
        pod(json!([{
            "name": "hello",
            "ports": [{"name": "http", "containerPort": 80}],
            "readinessProbe": {"httpGet": {"port": 80}}
        }]))
    );
}

#[test]
fn restore_skips_slots_that_are_gone_or_changed() {
    let json = concat!(
        r#"{"/app-health/gone/readyz":{"httpGet":{"port":80}},"#,
        r#""/app-health/web/livez":{"tcpSocket":{"port":81}},"#,
        r#""/app-health/web/readyz":{"httpGet":{"port":82}},"#,
        r#""/app-health/web/startupz":{"grpc":{"port":83,"service":null}},"#,
        r#""/app-lifecycle/web/prestopz":{"httpGet":{"port":84}},"#,
        r#""/app-lifecycle/web/poststartz":{"tcpSocket":{"port":85}}}"#
    );
    let input = pod(json!([{
        "name": "web",
        // Edited by the user after injection: a different path.
        "readinessProbe": {"httpGet": {"path": "/mine", "port": 15020}},
        // Removed: no liveness probe. Replaced by exec: startup probe.
        "startupProbe": {"exec": {"command": ["true"]}},
        // Still ours.
        "lifecycle": {"preStop": {"httpGet": {"path": "/app-lifecycle/web/prestopz", "port": 15020}}}
    }]));
    let want = pod(json!([{
        "name": "web",
        "readinessProbe": {"httpGet": {"path": "/mine", "port": 15020}},
        "startupProbe": {"exec": {"command": ["true"]}},
        "lifecycle": {"preStop": {"httpGet": {"port": 84}}}
    }]));
    let mut got = input;
    restore(&mut got, json).expect("restore");
    assert_eq!(got, want);
}

#[test]
fn restore_leaves_the_proxy_alone() {
    let input = pod(json!([{
        "name": "istio-proxy",
        "readinessProbe": {"httpGet": {"path": "/app-health/istio-proxy/readyz", "port": 15020}}
    }]));
    let mut got = input.clone();
    restore(
        &mut got,
        r#"{"/app-health/istio-proxy/readyz":{"httpGet":{"port":80}}}"#,
    )
    .expect("restore");
    assert_eq!(got, input);
}

#[test]
fn restore_errors() {
    let cases = [
        (
            r#"{"/app-health/web/ready":{"httpGet":{"port":80}}}"#,
            "ISTIO_KUBE_APP_PROBERS: \"/app-health/web/ready\" is not an app probe path; \
             expected /app-health/<container>/{readyz,livez,startupz} or \
             /app-lifecycle/<container>/{poststartz,prestopz}",
        ),
        (
            r#"{"/app-lifecycle/web/readyz":{"httpGet":{"port":80}}}"#,
            "ISTIO_KUBE_APP_PROBERS: \"/app-lifecycle/web/readyz\" is not an app probe path; \
             expected /app-health/<container>/{readyz,livez,startupz} or \
             /app-lifecycle/<container>/{poststartz,prestopz}",
        ),
        (
            r#"{"/app-health//readyz":{"httpGet":{"port":80}}}"#,
            "ISTIO_KUBE_APP_PROBERS: \"/app-health//readyz\" is not an app probe path; \
             expected /app-health/<container>/{readyz,livez,startupz} or \
             /app-lifecycle/<container>/{poststartz,prestopz}",
        ),
        (
            r#"{"/app-health/web/readyz":{"timeoutSeconds":1}}"#,
            "ISTIO_KUBE_APP_PROBERS: the prober of /app-health/web/readyz has none of httpGet, \
             tcpSocket and grpc",
        ),
        (
            r#"{"/app-health/web/readyz":{"httpGet":{"port":80},"tcpSocket":{"port":81}}}"#,
            "ISTIO_KUBE_APP_PROBERS: the prober of /app-health/web/readyz has more than one of \
             httpGet, tcpSocket and grpc",
        ),
        (
            r#"{"/app-lifecycle/web/prestopz":{"grpc":{"port":80}}}"#,
            "ISTIO_KUBE_APP_PROBERS: the prober of /app-lifecycle/web/prestopz is a grpc \
             action, which a lifecycle hook cannot have",
        ),
    ];
    let input = pod(json!([{
        "name": "web",
        "readinessProbe": {"httpGet": {"path": "/app-health/web/readyz", "port": 15020}}
    }]));
    // Not JSON, or not an object: the message starts with the variable's name; the rest is
    // serde_json's own description.
    for json in ["", "[]", "{", r#"{"/app-health/web/readyz": 1}"#, "null"] {
        let mut got = input.clone();
        match restore(&mut got, json) {
            Ok(()) => panic!("{json:?} should be refused"),
            Err(e) => assert!(
                e.to_string()
                    .starts_with("ISTIO_KUBE_APP_PROBERS is not a JSON object of app probers: "),
                "{json:?}: {e}"
            ),
        }
        assert_eq!(got, input);
    }
    for (json, message) in cases {
        let mut got = input.clone();
        match restore(&mut got, json) {
            Ok(()) => panic!("{json:?} should be refused"),
            Err(e) => assert_eq!(e.to_string(), message, "{json:?}"),
        }
        assert_eq!(got, input, "{json:?}: the spec must be unchanged on error");
    }
}
