//! The command lines of the two containers, in the shape of Istio's so that operators can
//! read an injected pod the way they read an Istio one.

use std::fmt::Display;

use super::settings::Settings;
use super::{HEALTH_PORT, INBOUND_CAPTURE_PORT, OUTBOUND_CAPTURE_PORT, PROMETHEUS_PORT, PROXY_UID};
use crate::config::InjectionConfig;

fn join<T: Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// `-d`: the proxy's own inbound ports (Prometheus, health), then the excluded ports, then
/// the status port unless it is 0 or already listed (Istio's `excludeInboundPort`).
fn local_exclude_ports(settings: &Settings) -> String {
    let mut ports = vec![PROMETHEUS_PORT, HEALTH_PORT];
    ports.extend(&settings.traffic.exclude_inbound_ports);
    let status = settings.status_port;
    if status != 0 && !settings.traffic.exclude_inbound_ports.contains(&status) {
        ports.push(status);
    }
    join(&ports)
}

/// skiff-init's arguments: Istio's istio-iptables argument list, in Istio's order.
///
/// `-p -z -u -m -i -x -b -d` are always given (an empty `-i` or `-b` turns capture off in
/// that direction); then `-q`, `-o`, `-k` and `-c` when set; then `--log_output_level`
/// and, when configured, `--log_as_json`. `-u` is 1337 in every mode, TPROXY included.
/// Lists are written normalised (trimmed, empty items dropped, addresses in canonical
/// form) rather than as the annotation's raw text.
pub fn init_args(settings: &Settings) -> Vec<String> {
    let traffic = &settings.traffic;
    let mut args: Vec<String> = vec![
        "-p".into(),
        OUTBOUND_CAPTURE_PORT.to_string(),
        "-z".into(),
        INBOUND_CAPTURE_PORT.to_string(),
        "-u".into(),
        PROXY_UID.to_string(),
        "-m".into(),
        settings.interception_mode.as_str().into(),
        "-i".into(),
        traffic.include_outbound_ip_ranges.to_string(),
        "-x".into(),
        join(&traffic.exclude_outbound_ip_ranges),
        "-b".into(),
        traffic.include_inbound_ports.to_string(),
        "-d".into(),
        local_exclude_ports(settings),
    ];
    if let Some(ports) = &traffic.include_outbound_ports {
        args.extend(["-q".into(), join(ports)]);
    }
    if let Some(ports) = &traffic.exclude_outbound_ports {
        args.extend(["-o".into(), join(ports)]);
    }
    if let Some(interfaces) = &traffic.reroute_virtual_interfaces {
        args.extend(["-k".into(), interfaces.join(",")]);
    }
    if let Some(interfaces) = &traffic.exclude_interfaces {
        args.extend(["-c".into(), interfaces.join(",")]);
    }
    args.push(format!(
        "--log_output_level={}",
        join(&settings.agent_log_level)
    ));
    if settings.log_as_json {
        args.push("--log_as_json".into());
    }
    args
}

/// skiff-proxy's arguments, Istio's `proxy sidecar` command line. `$(POD_NAMESPACE)` is
/// expanded by the kubelet from the container's environment.
pub fn proxy_args(config: &InjectionConfig, settings: &Settings) -> Vec<String> {
    let mut args = vec![
        "proxy".to_owned(),
        "sidecar".to_owned(),
        "--domain".to_owned(),
        format!("$(POD_NAMESPACE).svc.{}", config.cluster_domain),
        format!("--proxyLogLevel={}", settings.log_level.as_str()),
        format!(
            "--proxyComponentLogLevel={}",
            join(&settings.component_log_level)
        ),
        format!("--log_output_level={}", join(&settings.agent_log_level)),
    ];
    if settings.log_as_json {
        args.push("--log_as_json".to_owned());
    }
    args
}
