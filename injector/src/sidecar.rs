//! What injection adds to one pod (spec/injector.md, section 2, with section 0's decisions):
//! the `istio-init` container, the `istio-proxy` container, the volumes, the image pull
//! secrets, and the labels and annotations to set.
//!
//! [`build`] is pure: typed pod data, the injection config and the parsed annotations in, a
//! [`Sidecar`] out. It does not place anything in the pod: the caller inserts the containers
//! (native: `initContainers = [istio-init, istio-proxy, the user's...]`; classic: `istio-init`
//! after the user's init containers and the proxy last, or first with
//! [`Sidecar::hold_application`]) and writes the status annotation. Keeping placement out
//! lets re-injection, `uninject` and the webhook share one builder.
//!
//! Every value the pod can influence has been validated by [`crate::annotations::parse`]
//! already; what is left to check here (the shapes inside `proxy.istio.io/config` and the
//! user volumes) becomes a [`SidecarError`] naming the annotation, never a panic.
//!
//! The layout follows Istio's injection template, so that tooling that looks for Istio's
//! container, volume, port and variable names finds them. Where Skiff differs, the item's
//! documentation says so.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, ExecAction, HTTPGetAction, Lifecycle, LifecycleHandler,
    LocalObjectReference, PodSpec, Probe, ResourceRequirements, SecurityContext, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use thiserror::Error;

use crate::annotations::{InterceptionMode, PodOverrides};
use crate::config::{InjectionConfig, ResourceList, Resources};

mod args;
mod env;
mod metadata;
mod settings;
#[cfg(test)]
mod tests;
mod volumes;

pub use args::{init_args, proxy_args};
pub use env::{APP_PROBERS_ENV, BOOTSTRAP_OVERRIDE_FILE, PROMETHEUS_ANNOTATIONS_ENV};
pub use metadata::{Workload, canonical_name, canonical_revision, workload};
pub use settings::{DNS_CAPTURE_ENV, ProbeTiming, Settings, Traffic};
pub use volumes::{
    CRL_CONFIGMAP, CUSTOM_BOOTSTRAP_VOLUME, ROOT_CERT_CONFIGMAP, TOKEN_AUDIENCE,
    TOKEN_EXPIRATION_SECONDS,
};

/// The init container's name; Istio's, so that `kubectl logs -c istio-init` keeps working.
pub const INIT_CONTAINER_NAME: &str = "istio-init";
/// The proxy container's name; Istio's, for dashboards and `kubectl logs -c istio-proxy`.
pub const PROXY_CONTAINER_NAME: &str = "istio-proxy";
/// The program of the init image.
pub const INIT_BINARY: &str = "skiff-init";
/// The program of the proxy image; also what the lifecycle hooks run.
pub const PROXY_BINARY: &str = "skiff-proxy";
/// The proxy's uid and gid; skiff-init exempts this uid's traffic from capture.
pub const PROXY_UID: i64 = 1337;
/// Outbound capture port (`-p`).
pub const OUTBOUND_CAPTURE_PORT: u16 = 15001;
/// Inbound capture port (`-z`).
pub const INBOUND_CAPTURE_PORT: u16 = 15006;
/// The proxy's readiness endpoint (`/healthz/ready`) listens here.
pub const HEALTH_PORT: u16 = 15021;
/// The proxy's own Prometheus endpoint.
pub const PROMETHEUS_PORT: u16 = 15090;
/// The proxy's admin port (localhost only); the drain hook's target without a status port.
pub const ADMIN_PORT: u16 = 15000;
/// The readiness and startup probes' path.
pub const READY_PATH: &str = "/healthz/ready";

/// Label: whether peers should use mutual TLS to reach the pod.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode";
pub const CANONICAL_NAME_LABEL: &str = "service.istio.io/canonical-name";
pub const CANONICAL_REVISION_LABEL: &str = "service.istio.io/canonical-revision";
/// Label: overrides the derived workload name (`ISTIO_META_WORKLOAD_NAME`).
pub const WORKLOAD_NAME_LABEL: &str = "service.istio.io/workload-name";
pub const NETWORK_LABEL: &str = "topology.istio.io/network";
/// Annotation: the revision that injected the pod.
pub const REVISION_ANNOTATION: &str = "istio.io/rev";
pub const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";
pub const DEFAULT_LOGS_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-logs-container";

/// Everything [`build`] reads. The two JSON strings are computed by the probe rewrite and
/// the Prometheus merge, which run before the builder because they also change the pod.
#[derive(Debug, Clone, Copy)]
pub struct SidecarInput<'a> {
    /// The pod (or pod template) metadata, before injection.
    pub metadata: &'a ObjectMeta,
    pub spec: &'a PodSpec,
    /// The admission request's namespace: pods created through a controller often have
    /// no `metadata.namespace` yet.
    pub namespace: &'a str,
    pub config: &'a InjectionConfig,
    pub overrides: &'a PodOverrides,
    /// `ISTIO_KUBE_APP_PROBERS`: the app probes the proxy runs on the kubelet's behalf.
    pub app_probers: Option<&'a str>,
    /// `ISTIO_PROMETHEUS_ANNOTATIONS`: the app's own scrape target before the merge.
    pub prometheus_annotations: Option<&'a str>,
    /// The object that holds the template when it is not a pod (`inject` of a Deployment,
    /// say): then it, not the template's metadata, names the workload.
    pub owner: Option<&'a Owner>,
}

/// A workload object known from outside the pod template: its `kind`, `apiVersion` and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub kind: String,
    pub api_version: String,
    pub name: String,
}

/// What injection adds to one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Sidecar {
    /// `istio-init`; `None` for interception mode NONE, which installs no iptables rules.
    pub init_container: Option<Container>,
    /// `istio-proxy`.
    pub proxy: Container,
    /// The proxy belongs in `initContainers` (it has `restartPolicy: Always`), right after
    /// `istio-init`; otherwise it is a regular container.
    pub native: bool,
    /// Classic layout only: the proxy goes first among the containers (it has a postStart
    /// hook that waits until it is ready, so the kubelet starts the app after it).
    pub hold_application: bool,
    /// Added to the pod's volumes, in this order.
    pub volumes: Vec<Volume>,
    /// Appended to the pod's `imagePullSecrets`.
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Labels to set. A label the pod already has with a non-empty value is never here:
    /// the pod's own value is kept.
    pub labels: BTreeMap<String, String>,
    /// Annotations to set (besides the status annotation, which the caller writes).
    pub annotations: BTreeMap<String, String>,
    /// The merged settings the containers were built from (status port, interception
    /// mode, ...), for the caller's bookkeeping.
    pub settings: Settings,
}

/// A pod whose annotations ask for something the builder cannot produce. The webhook turns
/// it into `allowed: false`, so the message is what the user sees from `kubectl`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SidecarError {
    /// A field of `proxy.istio.io/config` that Skiff reads has the wrong type or value.
    #[error("annotation proxy.istio.io/config: field {field}: {reason}")]
    ProxyConfig { field: String, reason: String },
    /// The status port is one the sidecar uses itself.
    #[error("{source_name}: {reason}")]
    StatusPort { source_name: String, reason: String },
    /// A readiness annotation's value does not fit the Kubernetes int32 field.
    #[error(
        "annotation {key}: {value} is larger than the 2147483647 Kubernetes allows for a probe \
         field; use a smaller number"
    )]
    ProbeField { key: String, value: u32 },
    /// `sidecar.istio.io/proxyImageType` cannot change an image pinned by digest.
    #[error(
        "annotation sidecar.istio.io/proxyImageType: the image {image} is pinned by digest, \
         so no tag suffix can be added; remove the annotation, or name the full image with \
         sidecar.istio.io/proxyImage"
    )]
    ImageType { image: String },
    /// An entry of `sidecar.istio.io/userVolume` or `userVolumeMount` that is not a
    /// Volume or VolumeMount, or that collides with what injection adds.
    #[error("annotation {key}: entry {name:?}: {reason}")]
    UserVolume {
        key: String,
        name: String,
        reason: String,
    },
}

/// Builds what injection adds to the pod described by `input`.
pub fn build(input: &SidecarInput<'_>) -> Result<Sidecar, SidecarError> {
    let settings = Settings::resolve(input.config, input.overrides)?;
    let config = input.config;
    let labels = input.metadata.labels.clone().unwrap_or_default();
    let workload = match input.owner {
        Some(owner) => Workload::of_owner(owner, input.metadata, input.namespace),
        None => workload(input.metadata, input.namespace),
    };
    let network = network(&labels, config);

    let (extra_volumes, extra_mounts) = volumes::user_volumes(input.overrides)?;
    let mut pod_volumes = volumes::volumes(input.overrides.bootstrap_override.as_deref());
    pod_volumes.extend(extra_volumes);
    let mut mounts = volumes::proxy_mounts(input.overrides.bootstrap_override.is_some());
    mounts.extend(extra_mounts);

    let env = env::proxy_env(&env::EnvInput {
        metadata: input.metadata,
        spec: input.spec,
        config,
        settings: &settings,
        workload: &workload,
        network: network.as_deref(),
        bootstrap_override: input.overrides.bootstrap_override.is_some(),
        app_probers: input.app_probers,
        prometheus_annotations: input.prometheus_annotations,
    });

    let resources = resource_requirements(&settings.resources);
    let pull_policy = config.image_pull_policy.map(|p| p.as_str().to_owned());

    let init_container =
        (settings.interception_mode != InterceptionMode::None).then(|| Container {
            name: INIT_CONTAINER_NAME.to_owned(),
            image: Some(settings.init_image.clone()),
            command: Some(vec![INIT_BINARY.to_owned()]),
            args: Some(init_args(&settings)),
            image_pull_policy: pull_policy.clone(),
            env: env::init_env(&settings),
            resources: resources.clone(),
            security_context: Some(init_security_context()),
            ..Container::default()
        });

    let proxy = Container {
        name: PROXY_CONTAINER_NAME.to_owned(),
        image: Some(settings.proxy_image.clone()),
        command: Some(vec![PROXY_BINARY.to_owned()]),
        args: Some(proxy_args(config, &settings)),
        ports: Some(vec![ContainerPort {
            container_port: i32::from(PROMETHEUS_PORT),
            name: Some("http-envoy-prom".to_owned()),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        env: Some(env),
        image_pull_policy: pull_policy,
        readiness_probe: readiness_probe(&settings),
        startup_probe: startup_probe(config, &settings),
        security_context: Some(proxy_security_context(&settings)),
        resources,
        volume_mounts: Some(mounts),
        restart_policy: settings.native.then(|| "Always".to_owned()),
        lifecycle: lifecycle(&settings),
        ..Container::default()
    };

    let image_pull_secrets = config
        .image_pull_secrets
        .iter()
        .map(|name| LocalObjectReference { name: name.clone() })
        .collect();

    Ok(Sidecar {
        init_container,
        proxy,
        native: settings.native,
        hold_application: settings.hold_application,
        volumes: pod_volumes,
        image_pull_secrets,
        labels: metadata::labels_to_add(&labels, &workload, network.as_deref()),
        annotations: metadata::annotations_to_add(input.metadata, input.spec, config),
        settings,
    })
}

/// The pod's `topology.istio.io/network` label when present (even empty, as in Istio),
/// else the configured network; `None` when that is empty.
fn network(labels: &BTreeMap<String, String>, config: &InjectionConfig) -> Option<String> {
    let network = labels.get(NETWORK_LABEL).unwrap_or(&config.network);
    (!network.is_empty()).then(|| network.clone())
}

fn quantity_map(list: &ResourceList) -> Option<BTreeMap<String, K8sQuantity>> {
    let mut map = BTreeMap::new();
    if let Some(cpu) = &list.cpu {
        map.insert("cpu".to_owned(), K8sQuantity(cpu.as_str().to_owned()));
    }
    if let Some(memory) = &list.memory {
        map.insert("memory".to_owned(), K8sQuantity(memory.as_str().to_owned()));
    }
    (!map.is_empty()).then_some(map)
}

/// The same requirements go on the init container: Kubernetes sizes a pod by its largest
/// init container too, and Istio gives both the proxy's.
fn resource_requirements(resources: &Resources) -> Option<ResourceRequirements> {
    if resources.is_empty() {
        return None;
    }
    Some(ResourceRequirements {
        requests: quantity_map(&resources.requests),
        limits: quantity_map(&resources.limits),
        claims: None,
    })
}

fn caps(list: &[&str]) -> Option<Vec<String>> {
    Some(list.iter().map(|c| (*c).to_owned()).collect())
}

/// Root with NET_ADMIN and NET_RAW: the minimum that iptables-restore in the pod's network
/// namespace needs, and nothing else (no privilege escalation, every other capability
/// dropped).
fn init_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            add: caps(&["NET_ADMIN", "NET_RAW"]),
            drop: caps(&["ALL"]),
        }),
        read_only_root_filesystem: Some(false),
        run_as_group: Some(0),
        run_as_non_root: Some(false),
        run_as_user: Some(0),
        ..SecurityContext::default()
    }
}

/// uid/gid 1337 with no capabilities, except: TPROXY needs NET_ADMIN (to set IP_TRANSPARENT
/// on its sockets) and `capNetBindService` needs NET_BIND_SERVICE; both run the proxy as
/// root (gid 1337), as in Istio.
fn proxy_security_context(settings: &Settings) -> SecurityContext {
    let tproxy = settings.interception_mode == InterceptionMode::Tproxy;
    let bind = settings.cap_net_bind_service;
    let mut add = Vec::new();
    if tproxy {
        add.push("NET_ADMIN".to_owned());
    }
    if bind {
        add.push("NET_BIND_SERVICE".to_owned());
    }
    let root = tproxy || bind;
    SecurityContext {
        allow_privilege_escalation: Some(false),
        privileged: Some(false),
        capabilities: Some(Capabilities {
            add: (!add.is_empty()).then_some(add),
            drop: caps(&["ALL"]),
        }),
        read_only_root_filesystem: Some(true),
        run_as_group: Some(PROXY_UID),
        run_as_non_root: Some(!root),
        run_as_user: Some(if root { 0 } else { PROXY_UID }),
        ..SecurityContext::default()
    }
}

fn ready_get() -> Option<HTTPGetAction> {
    Some(HTTPGetAction {
        path: Some(READY_PATH.to_owned()),
        port: IntOrString::Int(i32::from(HEALTH_PORT)),
        ..HTTPGetAction::default()
    })
}

/// Dropped with the status port (0), as in Istio: a pod that turned the status port off
/// asked for a proxy without health endpoints.
fn readiness_probe(settings: &Settings) -> Option<Probe> {
    if settings.status_port == 0 {
        return None;
    }
    let timing = &settings.readiness;
    Some(Probe {
        http_get: ready_get(),
        initial_delay_seconds: Some(timing.initial_delay_seconds),
        period_seconds: Some(timing.period_seconds),
        timeout_seconds: Some(3),
        failure_threshold: Some(timing.failure_threshold),
        ..Probe::default()
    })
}

/// Probed every second, so a native sidecar releases the next containers as soon as the
/// proxy is ready; 600 failures give a slow control plane ten minutes.
fn startup_probe(config: &InjectionConfig, settings: &Settings) -> Option<Probe> {
    if settings.status_port == 0 || !config.startup_probe.enabled {
        return None;
    }
    Some(Probe {
        http_get: ready_get(),
        initial_delay_seconds: Some(0),
        period_seconds: Some(1),
        timeout_seconds: Some(3),
        failure_threshold: Some(config.startup_probe.failure_threshold),
        ..Probe::default()
    })
}

fn exec(command: Vec<String>) -> Option<LifecycleHandler> {
    Some(LifecycleHandler {
        exec: Some(ExecAction {
            command: Some(command),
        }),
        ..LifecycleHandler::default()
    })
}

/// Native: a preStop hook starts draining when the pod begins to shut down, so that the
/// proxy stops taking new connections while the app finishes (the kubelet sends SIGTERM to
/// a native sidecar only after the app containers have stopped). It is an `exec` of
/// `skiff-proxy request ... POST drain`, like Istio's `pilot-agent request`, and not an
/// `httpGet`: the kubelet's httpGet hooks can only GET and come from outside the pod,
/// while the drain endpoint takes POST from localhost only, so that nobody else on the
/// network can drain a proxy. Without a status port the request goes to the admin port.
///
/// Classic with hold: a postStart hook that returns once the proxy is ready; the kubelet
/// starts the next container only after it returns.
fn lifecycle(settings: &Settings) -> Option<Lifecycle> {
    let command = |args: &[&str]| {
        let mut command = vec![PROXY_BINARY.to_owned()];
        command.extend(args.iter().map(|a| (*a).to_owned()));
        command
    };
    if settings.native {
        let port = match settings.status_port {
            0 => ADMIN_PORT,
            port => port,
        };
        let debug_port = format!("--debug-port={port}");
        Some(Lifecycle {
            pre_stop: exec(command(&["request", &debug_port, "POST", "drain"])),
            ..Lifecycle::default()
        })
    } else if settings.hold_application {
        Some(Lifecycle {
            post_start: exec(command(&["wait"])),
            ..Lifecycle::default()
        })
    } else {
        None
    }
}
