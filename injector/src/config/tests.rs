//! Expected values come from spec/injector.md (sections 0, 2 and 3: Istio's defaults and
//! Skiff's own decisions), from the Kubernetes rules for quantities, label values and
//! selectors, and from the annotation grammars the config shares (see the module docs).

use std::net::IpAddr;

use super::*;
use crate::policy::{Operator, Requirement};

mod errors;

pub(super) fn load(text: &str) -> InjectionConfig {
    match InjectionConfig::from_yaml(text) {
        Ok(config) => config,
        Err(e) => panic!("{text:?} should load, got: {e}"),
    }
}

pub(super) fn fail(text: &str) -> ConfigError {
    match InjectionConfig::from_yaml(text) {
        Ok(config) => panic!("{text:?} should be refused, got {config:?}"),
        Err(e) => e,
    }
}

pub(super) fn q(text: &str) -> Quantity {
    text.parse().expect("test quantity")
}

pub(super) fn cidr(addr: &str, prefix: u8) -> Cidr {
    Cidr {
        addr: addr.parse::<IpAddr>().expect("test address"),
        prefix,
    }
}

#[test]
fn defaults_are_istios_and_skiffs() {
    let c = InjectionConfig::default();
    assert_eq!(c.policy, InjectionPolicy::Enabled);
    assert!(c.never_inject_selector.is_empty());
    assert!(c.always_inject_selector.is_empty());
    assert_eq!(c.revision, "default");
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        c.proxy_image,
        format!("ghcr.io/skiff-mesh/skiff-proxy:{version}")
    );
    assert_eq!(
        c.init_image,
        format!("ghcr.io/skiff-mesh/skiff-init:{version}")
    );
    assert_eq!(c.image_pull_policy, None);
    assert!(c.image_pull_secrets.is_empty());
    assert_eq!(c.resources.requests.cpu, Some(q("100m")));
    assert_eq!(c.resources.requests.memory, Some(q("128Mi")));
    assert_eq!(c.resources.limits.cpu, Some(q("2")));
    assert_eq!(c.resources.limits.memory, Some(q("1Gi")));
    assert_eq!(c.log_level, ProxyLogLevel::Warning);
    let components: Vec<String> = c
        .component_log_level
        .iter()
        .map(|l| l.to_string())
        .collect();
    assert_eq!(components, ["misc:error"]);
    let agent: Vec<String> = c.agent_log_level.iter().map(|l| l.to_string()).collect();
    assert_eq!(agent, ["default:info"]);
    assert!(!c.log_as_json);
    assert_eq!(c.discovery_address, "istiod.istio-system.svc:15012");
    assert_eq!(c.ca_address(), "istiod.istio-system.svc:15012");
    assert_eq!(c.trust_domain, "cluster.local");
    assert_eq!(c.cluster_domain, "cluster.local");
    assert_eq!(c.cluster_id, "Kubernetes");
    assert_eq!(c.mesh_id(), "cluster.local");
    assert_eq!(c.network, "");
    assert_eq!(c.interception_mode, InterceptionMode::Redirect);
    assert!(c.native_sidecar);
    assert!(c.rewrite_app_probes);
    assert!(!c.hold_application_until_proxy_starts);
    assert!(c.enable_prometheus_merge);
    assert!(!c.cap_net_bind_service);
    assert_eq!(c.status_port, 15020);
    assert_eq!(c.readiness_initial_delay_seconds, 0);
    assert_eq!(c.readiness_period_seconds, 15);
    assert_eq!(c.readiness_failure_threshold, 4);
    assert_eq!(
        c.startup_probe,
        StartupProbe {
            enabled: true,
            failure_threshold: 600
        }
    );
    assert_eq!(c.traffic.include_outbound_ip_ranges, CaptureSet::All);
    assert!(c.traffic.exclude_outbound_ip_ranges.is_empty());
    assert_eq!(c.traffic.include_inbound_ports, CaptureSet::All);
    assert!(c.traffic.exclude_inbound_ports.is_empty());
    assert!(c.traffic.include_outbound_ports.is_empty());
    assert!(c.traffic.exclude_outbound_ports.is_empty());
    assert!(!c.dns_capture);
    assert!(c.proxy_metadata.is_empty());
    assert!(c.proxy_env.is_empty());
    assert!(c.validate().is_ok());
}

#[test]
fn empty_and_comment_only_files_are_the_defaults() {
    for text in [
        "",
        "\n",
        "   \n\n",
        "# nothing here\n",
        "---\n",
        "~\n",
        "null",
    ] {
        assert_eq!(load(text), InjectionConfig::default(), "{text:?}");
    }
    assert_eq!(load("{}"), InjectionConfig::default());
}

#[test]
fn every_key_is_read() {
    let text = r#"
policy: disabled
neverInjectSelector:
  - matchLabels: {app: legacy}
alwaysInjectSelector:
  - matchExpressions:
      - {key: tier, operator: In, values: [web, api]}
      - {key: canary, operator: Exists}
revision: canary-1
proxyImage: registry.example/mesh/proxy:9.9
initImage: registry.example/mesh/init:9.9
imagePullPolicy: Always
imagePullSecrets: [regcred, other.cred]
resources:
  requests: {cpu: 50m, memory: 64Mi}
  limits: {cpu: 1, memory: 0.5Gi}
logLevel: debug
componentLogLevel: "misc:info,upstream:debug"
agentLogLevel: "default:debug,xds:warn"
logAsJson: true
discoveryAddress: "istiod-canary.istio-system.svc:15012"
caAddress: "ca.example:443"
trustDomain: example.org
clusterDomain: corp.local
clusterId: east
meshId: mesh1
network: net-1
interceptionMode: TPROXY
nativeSidecar: false
rewriteAppProbes: false
holdApplicationUntilProxyStarts: true
enablePrometheusMerge: false
capNetBindService: true
statusPort: 15999
readinessInitialDelaySeconds: 2
readinessPeriodSeconds: 5
readinessFailureThreshold: 30
startupProbe: {enabled: false, failureThreshold: 10}
traffic:
  includeOutboundIPRanges: "10.0.0.0/8, fd00::/8"
  excludeOutboundIPRanges: [169.254.169.254/32]
  includeInboundPorts: "8080,9090"
  excludeInboundPorts: 8443
  includeOutboundPorts: "3306"
  excludeOutboundPorts: [25, 465]
dnsCapture: true
proxyMetadata: {ISTIO_META_DNS_AUTO_ALLOCATE: "true", FOO: 1}
proxyEnv: {SKIFF_WORKER_THREADS: 4, RUST_LOG: info}
"#;
    let c = load(text);
    assert_eq!(c.policy, InjectionPolicy::Disabled);
    assert_eq!(
        c.never_inject_selector,
        vec![LabelSelector {
            match_labels: [("app".to_owned(), "legacy".to_owned())].into(),
            match_expressions: vec![],
        }]
    );
    assert_eq!(
        c.always_inject_selector,
        vec![LabelSelector {
            match_labels: Default::default(),
            match_expressions: vec![
                Requirement::new("tier", Operator::In, &["web", "api"]),
                Requirement::new("canary", Operator::Exists, &[]),
            ],
        }]
    );
    assert_eq!(c.revision, "canary-1");
    assert_eq!(c.proxy_image, "registry.example/mesh/proxy:9.9");
    assert_eq!(c.init_image, "registry.example/mesh/init:9.9");
    assert_eq!(c.image_pull_policy, Some(ImagePullPolicy::Always));
    assert_eq!(c.image_pull_secrets, ["regcred", "other.cred"]);
    assert_eq!(c.resources.requests.cpu, Some(q("50m")));
    assert_eq!(c.resources.requests.memory, Some(q("64Mi")));
    assert_eq!(c.resources.limits.cpu, Some(q("1")));
    assert_eq!(c.resources.limits.memory, Some(q("0.5Gi")));
    assert_eq!(c.log_level, ProxyLogLevel::Debug);
    let components: Vec<String> = c
        .component_log_level
        .iter()
        .map(|l| l.to_string())
        .collect();
    assert_eq!(components, ["misc:info", "upstream:debug"]);
    let agent: Vec<String> = c.agent_log_level.iter().map(|l| l.to_string()).collect();
    assert_eq!(agent, ["default:debug", "xds:warn"]);
    assert!(c.log_as_json);
    assert_eq!(c.discovery_address, "istiod-canary.istio-system.svc:15012");
    assert_eq!(c.ca_address(), "ca.example:443");
    assert_eq!(c.trust_domain, "example.org");
    assert_eq!(c.cluster_domain, "corp.local");
    assert_eq!(c.cluster_id, "east");
    assert_eq!(c.mesh_id(), "mesh1");
    assert_eq!(c.network, "net-1");
    assert_eq!(c.interception_mode, InterceptionMode::Tproxy);
    assert!(!c.native_sidecar);
    assert!(!c.rewrite_app_probes);
    assert!(c.hold_application_until_proxy_starts);
    assert!(!c.enable_prometheus_merge);
    assert!(c.cap_net_bind_service);
    assert_eq!(c.status_port, 15999);
    assert_eq!(c.readiness_initial_delay_seconds, 2);
    assert_eq!(c.readiness_period_seconds, 5);
    assert_eq!(c.readiness_failure_threshold, 30);
    assert_eq!(
        c.startup_probe,
        StartupProbe {
            enabled: false,
            failure_threshold: 10
        }
    );
    assert_eq!(
        c.traffic.include_outbound_ip_ranges,
        CaptureSet::Only(vec![cidr("10.0.0.0", 8), cidr("fd00::", 8)])
    );
    assert_eq!(
        c.traffic.exclude_outbound_ip_ranges,
        [cidr("169.254.169.254", 32)]
    );
    assert_eq!(
        c.traffic.include_inbound_ports,
        CaptureSet::Only(vec![8080, 9090])
    );
    assert_eq!(c.traffic.exclude_inbound_ports, [8443]);
    assert_eq!(c.traffic.include_outbound_ports, [3306]);
    assert_eq!(c.traffic.exclude_outbound_ports, [25, 465]);
    assert!(c.dns_capture);
    assert_eq!(
        c.proxy_metadata,
        BTreeMap::from([
            ("FOO".to_owned(), "1".to_owned()),
            ("ISTIO_META_DNS_AUTO_ALLOCATE".to_owned(), "true".to_owned()),
        ])
    );
    assert_eq!(
        c.proxy_env,
        BTreeMap::from([
            ("RUST_LOG".to_owned(), "info".to_owned()),
            ("SKIFF_WORKER_THREADS".to_owned(), "4".to_owned()),
        ])
    );
}

#[test]
fn a_partial_file_keeps_the_other_defaults() {
    let c = load("logLevel: info\ntraffic:\n  excludeInboundPorts: \"8080\"\n");
    let expected = InjectionConfig {
        log_level: ProxyLogLevel::Info,
        traffic: TrafficConfig {
            exclude_inbound_ports: vec![8080],
            ..TrafficConfig::default()
        },
        ..InjectionConfig::default()
    };
    assert_eq!(c, expected);
}

#[test]
fn writing_resources_replaces_all_of_them() {
    let c = load("resources:\n  requests:\n    cpu: 10m\n");
    assert_eq!(
        c.resources,
        Resources {
            requests: ResourceList {
                cpu: Some(q("10m")),
                memory: None
            },
            limits: ResourceList::default(),
        }
    );
    assert!(load("resources: {}").resources.is_empty());
}

#[test]
fn empty_traffic_values_turn_capture_off() {
    let c = load("traffic:\n  includeOutboundIPRanges: \"\"\n  includeInboundPorts: []\n");
    assert_eq!(c.traffic.include_outbound_ip_ranges, CaptureSet::Nothing);
    assert_eq!(c.traffic.include_inbound_ports, CaptureSet::Nothing);
    assert_eq!(
        load("traffic:\n  includeInboundPorts: \"*\"\n")
            .traffic
            .include_inbound_ports,
        CaptureSet::All
    );
}

#[test]
fn validate_catches_what_code_can_build() {
    let c = InjectionConfig {
        status_port: 15090,
        ..InjectionConfig::default()
    };
    let e = c.validate().expect_err("reserved");
    assert!(e.to_string().contains("statusPort: 15090"), "{e}");
    assert!(
        InjectionConfig {
            status_port: 0,
            ..InjectionConfig::default()
        }
        .validate()
        .is_ok()
    );
}

#[test]
fn policy_config_carries_the_selectors() {
    let c = load("policy: disabled\nneverInjectSelector: [{matchLabels: {a: b}}]\n");
    let p = c.policy_config();
    assert_eq!(p.policy, InjectionPolicy::Disabled);
    assert_eq!(p.never_inject_selector.len(), 1);
    assert!(p.always_inject_selector.is_empty());
}

#[test]
fn nulls_and_numbers_read_as_the_annotations_would() {
    let c = load(
        "caAddress: ~\nnetwork: ~\nstatusPort: \"0\"\nresources: {limits: {cpu: ~, memory: 2Gi}}\n",
    );
    assert_eq!(c.ca_address, None);
    assert_eq!(c.network, "");
    assert_eq!(c.status_port, 0);
    assert_eq!(
        c.resources.limits,
        ResourceList {
            cpu: None,
            memory: Some(q("2Gi"))
        }
    );
    assert!(c.resources.requests.is_empty());
    // A YAML null for a traffic list is the empty string: capture off, as `""` is.
    let c = load("traffic: {includeInboundPorts: ~}");
    assert_eq!(c.traffic.include_inbound_ports, CaptureSet::Nothing);
    // Numbers where the annotations take text.
    let c = load("statusPort: 15030\nresources: {requests: {cpu: 0.5}}\n");
    assert_eq!(c.status_port, 15030);
    assert_eq!(c.resources.requests.cpu, Some(q("0.5")));
    // A string where only a string makes sense.
    let e = fail("proxyImage: 12");
    assert!(e.to_string().contains("proxyImage: invalid type"), "{e}");
    let e = fail("policy: ~");
    assert!(e.to_string().contains("policy: is null"), "{e}");
}
