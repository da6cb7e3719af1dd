//! The containers' environment: how the proxy learns who it is (pod, namespace, workload,
//! cluster, network) without talking to the Kubernetes API, in Istio's variable names and
//! order, so that the node metadata istiod receives is the same as from Istio's agent.

use k8s_openapi::api::core::v1::{
    ContainerPort, EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec, ResourceFieldSelector,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use super::metadata::Workload;
use super::settings::Settings;
use super::{PROXY_CONTAINER_NAME, WORKLOAD_NAME_LABEL};
use crate::config::InjectionConfig;

/// Where `ISTIO_BOOTSTRAP_OVERRIDE` points when `sidecar.istio.io/bootstrapOverride` is set.
pub const BOOTSTRAP_OVERRIDE_FILE: &str = "/etc/istio/custom-bootstrap/custom_bootstrap.json";
/// The app probes the proxy runs for the kubelet (JSON, computed by the probe rewrite).
pub const APP_PROBERS_ENV: &str = "ISTIO_KUBE_APP_PROBERS";
/// The app's own scrape settings before the metrics merge (JSON).
pub const PROMETHEUS_ANNOTATIONS_ENV: &str = "ISTIO_PROMETHEUS_ANNOTATIONS";
const ISTIO_BOOTSTRAP_OVERRIDE: &str = "ISTIO_BOOTSTRAP_OVERRIDE";

pub(super) struct EnvInput<'a> {
    pub metadata: &'a ObjectMeta,
    pub spec: &'a PodSpec,
    pub config: &'a InjectionConfig,
    pub settings: &'a Settings,
    pub workload: &'a Workload,
    pub network: Option<&'a str>,
    pub bootstrap_override: bool,
    pub app_probers: Option<&'a str>,
    pub prometheus_annotations: Option<&'a str>,
}

fn value(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

fn field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: path.to_owned(),
            }),
            ..EnvVarSource::default()
        }),
    }
}

fn resource(name: &str, resource: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            resource_field_ref: Some(ResourceFieldSelector {
                container_name: None,
                divisor: Some(K8sQuantity("1".to_owned())),
                resource: resource.to_owned(),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// Adds `var`, or replaces the value of an earlier variable of the same name in place, so
/// that a later source (proxyMetadata, proxyEnv) wins without a duplicate name.
fn set(env: &mut Vec<EnvVar>, var: EnvVar) {
    match env.iter_mut().find(|e| e.name == var.name) {
        Some(existing) => *existing = var,
        None => env.push(var),
    }
}

/// The app containers: every container except a user-defined `istio-proxy`.
pub(super) fn app_containers(
    spec: &PodSpec,
) -> impl Iterator<Item = &k8s_openapi::api::core::v1::Container> {
    spec.containers
        .iter()
        .filter(|c| c.name != PROXY_CONTAINER_NAME)
}

/// `ISTIO_META_POD_PORTS`: the app containers' declared ports, as a JSON list of
/// Kubernetes ContainerPort objects.
fn pod_ports(spec: &PodSpec) -> String {
    let ports: Vec<&ContainerPort> = app_containers(spec)
        .flat_map(|c| c.ports.iter().flatten())
        .collect();
    // Serialising plain Kubernetes structs cannot fail; "[]" is only a guard.
    serde_json::to_string(&ports).unwrap_or_else(|_| "[]".to_owned())
}

/// The proxy's environment, in the order of Istio's template.
pub(super) fn proxy_env(input: &EnvInput<'_>) -> Vec<EnvVar> {
    let config = input.config;
    let settings = input.settings;
    let mut env = vec![
        value("PILOT_CERT_PROVIDER", "istiod"),
        value("CA_ADDR", config.ca_address()),
        field("POD_NAME", "metadata.name"),
        field("POD_NAMESPACE", "metadata.namespace"),
        field("INSTANCE_IP", "status.podIP"),
        field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        field("HOST_IP", "status.hostIP"),
        resource("ISTIO_CPU_LIMIT", "limits.cpu"),
        value(
            "PROXY_CONFIG",
            &Value::Object(settings.proxy_config.clone()).to_string(),
        ),
        value("ISTIO_META_POD_PORTS", &pod_ports(input.spec)),
        value(
            "ISTIO_META_APP_CONTAINERS",
            &app_containers(input.spec)
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ),
        resource("GOMEMLIMIT", "limits.memory"),
        value("ISTIO_META_CLUSTER_ID", &config.cluster_id),
        field("ISTIO_META_NODE_NAME", "spec.nodeName"),
        value(
            "ISTIO_META_INTERCEPTION_MODE",
            settings.interception_mode.as_str(),
        ),
    ];
    if let Some(network) = input.network {
        env.push(value("ISTIO_META_NETWORK", network));
    }
    let workload_name = input
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(WORKLOAD_NAME_LABEL))
        .filter(|name| !name.is_empty())
        .map_or_else(|| input.workload.display_name(), String::clone);
    if !workload_name.is_empty() {
        env.push(value("ISTIO_META_WORKLOAD_NAME", &workload_name));
    }
    if let Some(owner) = input.workload.owner_uri() {
        env.push(value("ISTIO_META_OWNER", &owner));
    }
    if input.bootstrap_override {
        env.push(value(ISTIO_BOOTSTRAP_OVERRIDE, BOOTSTRAP_OVERRIDE_FILE));
    }
    let mesh_id = config.mesh_id();
    if !mesh_id.is_empty() {
        env.push(value("ISTIO_META_MESH_ID", mesh_id));
    }
    if !config.trust_domain.is_empty() {
        env.push(value("TRUST_DOMAIN", &config.trust_domain));
    }
    for (name, v) in &settings.proxy_metadata {
        set(&mut env, value(name, v));
    }
    for (name, v) in &config.proxy_env {
        set(&mut env, value(name, v));
    }
    if let Some(json) = input.prometheus_annotations {
        set(&mut env, value(PROMETHEUS_ANNOTATIONS_ENV, json));
    }
    if let Some(json) = input.app_probers {
        set(&mut env, value(APP_PROBERS_ENV, json));
    }
    env
}

/// The init container gets `proxyMetadata` (as in Istio), which is how
/// `ISTIO_META_DNS_CAPTURE=true` reaches skiff-init.
pub(super) fn init_env(settings: &Settings) -> Option<Vec<EnvVar>> {
    if settings.proxy_metadata.is_empty() {
        return None;
    }
    Some(
        settings
            .proxy_metadata
            .iter()
            .map(|(name, v)| value(name, v))
            .collect(),
    )
}
