//! The proxy's own probes and the status port (spec section 2: readiness GET
//! /healthz/ready on 15021, period 15, timeout 3, failureThreshold 4; startup period 1,
//! failureThreshold 600; both dropped when the status port is 0; section 3 for the
//! readiness annotations).

use super::*;

#[test]
fn status_port_zero_drops_the_probes() {
    let s = inject(&[(key::STATUS_PORT, "0")]);
    assert_eq!(s.proxy.readiness_probe, None);
    assert_eq!(s.proxy.startup_probe, None);
    // The drain request then goes to the admin port.
    let pre_stop = s
        .proxy
        .lifecycle
        .and_then(|l| l.pre_stop)
        .and_then(|h| h.exec);
    assert_eq!(
        pre_stop.and_then(|e| e.command),
        Some(strings(&[
            "skiff-proxy",
            "request",
            "--debug-port=15000",
            "POST",
            "drain"
        ]))
    );
    assert_eq!(s.settings.status_port, 0);
}

#[test]
fn custom_status_port() {
    let s = inject(&[(key::STATUS_PORT, "15030")]);
    // The probes stay on the health port; the drain hook and PROXY_CONFIG follow.
    let ready = s.proxy.readiness_probe.clone().expect("readiness");
    assert_eq!(ready.http_get.expect("get").port, IntOrString::Int(15021));
    let pre_stop = s
        .proxy
        .lifecycle
        .clone()
        .and_then(|l| l.pre_stop)
        .and_then(|h| h.exec);
    assert_eq!(
        pre_stop.and_then(|e| e.command),
        Some(strings(&[
            "skiff-proxy",
            "request",
            "--debug-port=15030",
            "POST",
            "drain"
        ]))
    );
    let proxy_config = env_value(&s.proxy, "PROXY_CONFIG").expect("PROXY_CONFIG");
    let parsed: serde_json::Value = serde_json::from_str(&proxy_config).expect("json");
    assert_eq!(parsed["statusPort"], 15030);
    // From the pod's ProxyConfig when there is no annotation.
    let s = inject(&[(key::PROXY_CONFIG, "statusPort: 15031")]);
    assert_eq!(s.settings.status_port, 15031);
    // A port the sidecar uses itself is refused, naming where it came from.
    let e = inject_err(&[(key::STATUS_PORT, "15090")]);
    assert!(matches!(e, SidecarError::StatusPort { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("annotation status.sidecar.istio.io/port: 15090"),
        "{e}"
    );
    let e = inject_err(&[(key::PROXY_CONFIG, "statusPort: 15001")]);
    assert!(
        e.to_string()
            .contains("proxy.istio.io/config: field statusPort"),
        "{e}"
    );
}

#[test]
fn readiness_annotations_override_the_probe() {
    let s = inject(&[
        (key::READINESS_INITIAL_DELAY_SECONDS, "5"),
        (key::READINESS_PERIOD_SECONDS, "10"),
        (key::READINESS_FAILURE_THRESHOLD, "2"),
    ]);
    let ready = s.proxy.readiness_probe.expect("readiness");
    assert_eq!(ready.initial_delay_seconds, Some(5));
    assert_eq!(ready.period_seconds, Some(10));
    assert_eq!(ready.failure_threshold, Some(2));
    assert_eq!(ready.timeout_seconds, Some(3));
    // The startup probe is not affected.
    let startup = s.proxy.startup_probe.expect("startup");
    assert_eq!(startup.period_seconds, Some(1));
    // uint32 values above int32 do not fit the Kubernetes field.
    let e = inject_err(&[(key::READINESS_PERIOD_SECONDS, "3000000000")]);
    assert_eq!(
        e,
        SidecarError::ProbeField {
            key: key::READINESS_PERIOD_SECONDS.to_owned(),
            value: 3_000_000_000
        }
    );
}

#[test]
fn startup_probe_can_be_turned_off() {
    let config = InjectionConfig {
        startup_probe: crate::config::StartupProbe {
            enabled: false,
            failure_threshold: 600,
        },
        ..InjectionConfig::default()
    };
    let s = inject_with(&config, &[]);
    assert_eq!(s.proxy.startup_probe, None);
    assert!(s.proxy.readiness_probe.is_some());
}
