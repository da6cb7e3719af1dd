//! Skiff's injection config: the cluster-wide defaults of what injection adds, as typed YAML
//! (spec/injector.md, section 0) instead of Istio's text template plus `values.yaml`.
//!
//! Every key is optional; a missing key takes the default documented on its field, which is
//! Istio's default unless section 0 says otherwise (native sidecars are on). An empty file
//! is the built-in defaults. Keys are camelCase, and a key Skiff does not know is an error
//! that names it: a typo in a cluster-wide config must not silently fall back to a default.
//!
//! Values are checked while the YAML is read, with the same parsers that check the
//! per-pod annotations ([`crate::annotations::parse`]), so a config value and the
//! annotation that overrides it accept exactly the same spellings, and an error carries
//! the key's path and the line and column.
//!
//! ```yaml
//! policy: enabled
//! neverInjectSelector:
//!   - matchExpressions: [{key: app, operator: In, values: [legacy]}]
//! resources:
//!   requests: {cpu: 50m, memory: 64Mi}
//! traffic:
//!   excludeOutboundIPRanges: 169.254.169.254/32
//! proxyEnv:
//!   SKIFF_WORKER_THREADS: "2"
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::annotations::{
    AgentLogLevel, CaptureSet, Cidr, ComponentLogLevel, InterceptionMode, ProxyLogLevel, Quantity,
    ScopedLogLevel,
};
use crate::policy::{InjectionPolicy, LabelSelector, PolicyConfig, PolicyError};

mod de;
pub(crate) use de::{is_env_name, reserved_port_reason};
#[cfg(test)]
mod tests;

/// The proxy image when the config names none: Skiff's own build of this injector's version,
/// so that an injector and the proxies it injects are released together.
pub const DEFAULT_PROXY_IMAGE: &str =
    concat!("ghcr.io/skiff-mesh/skiff-proxy:", env!("CARGO_PKG_VERSION"));
/// The init image when the config names none; same version rule as the proxy.
pub const DEFAULT_INIT_IMAGE: &str =
    concat!("ghcr.io/skiff-mesh/skiff-init:", env!("CARGO_PKG_VERSION"));
/// istiod's TLS xDS port in its own namespace, where Istio's sidecars find it.
pub const DEFAULT_DISCOVERY_ADDRESS: &str = "istiod.istio-system.svc:15012";
/// Ports the injected pod already uses for Skiff itself (admin, outbound and inbound
/// capture, health, Prometheus, DNS): a status port on one of them could not be bound.
pub const RESERVED_PORTS: [u16; 6] = [15000, 15001, 15006, 15021, 15053, 15090];

/// The injection config. `Default` is the built-in config (what an empty file gives).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct InjectionConfig {
    /// What happens to a pod that neither opts in nor out (Istio's
    /// `global.proxy.autoInject`): `enabled` injects it, `disabled` leaves it alone.
    /// Default `enabled`. Any other value is an error, where Istio would silently stop
    /// injecting.
    #[serde(deserialize_with = "de::policy")]
    pub policy: InjectionPolicy,
    /// Label selectors (`matchLabels`, `matchExpressions`), OR'ed: a pod without an explicit
    /// choice that matches one is not injected, whatever the policy. Checked before
    /// `alwaysInjectSelector`. Default: none.
    #[serde(deserialize_with = "de::selectors")]
    pub never_inject_selector: Vec<LabelSelector>,
    /// Label selectors, OR'ed: a pod without an explicit choice that matches one (and no
    /// `neverInjectSelector`) is injected even under the `disabled` policy. Default: none.
    #[serde(deserialize_with = "de::selectors")]
    pub always_inject_selector: Vec<LabelSelector>,
    /// The control-plane revision this injector serves; written to the pod's `istio.io/rev`
    /// annotation and the status annotation. Default `default` (Istio's unnamed revision).
    #[serde(deserialize_with = "de::label_value")]
    pub revision: String,
    /// The full image reference of the `istio-proxy` container. Default
    /// `ghcr.io/skiff-mesh/skiff-proxy:<injector version>`. A pod's
    /// `sidecar.istio.io/proxyImage` replaces it (and the init image); its
    /// `sidecar.istio.io/proxyImageType` changes the tag suffix.
    #[serde(deserialize_with = "de::image")]
    pub proxy_image: String,
    /// The full image reference of the `istio-init` container. Default
    /// `ghcr.io/skiff-mesh/skiff-init:<injector version>`.
    #[serde(deserialize_with = "de::image")]
    pub init_image: String,
    /// `imagePullPolicy` of both containers: `Always`, `IfNotPresent` or `Never`. Default:
    /// unset, so Kubernetes decides (`Always` for `:latest`, else `IfNotPresent`).
    pub image_pull_policy: Option<ImagePullPolicy>,
    /// Secret names appended to the pod's `imagePullSecrets` (Istio's
    /// `global.imagePullSecrets`), for a private registry. Default: none.
    #[serde(deserialize_with = "de::secret_names")]
    pub image_pull_secrets: Vec<String>,
    /// Requests and limits of the proxy and the init container. Default requests
    /// `cpu: 100m, memory: 128Mi`, limits `cpu: 2, memory: 1Gi`. Writing `resources`
    /// replaces all of it (`resources: {}` sets none). Any one of the pod annotations
    /// `sidecar.istio.io/proxyCPU`, `proxyMemory`, `proxyCPULimit`, `proxyMemoryLimit`
    /// replaces it entirely.
    pub resources: Resources,
    /// The proxy's own log level (`--proxyLogLevel`): trace, debug, info, warning, error,
    /// critical or off. Default `warning`. Pod annotation: `sidecar.istio.io/logLevel`.
    #[serde(deserialize_with = "de::proxy_log_level")]
    pub log_level: ProxyLogLevel,
    /// Per-component proxy log levels (`--proxyComponentLogLevel`), `component:level`
    /// items separated by commas. Default `misc:error`. Pod annotation:
    /// `sidecar.istio.io/componentLogLevel`.
    #[serde(deserialize_with = "de::component_log_level")]
    pub component_log_level: Vec<ComponentLogLevel>,
    /// The agent log level of the proxy and of the init container (`--log_output_level`):
    /// `scope:level` items (a bare level means `default:level`). Default `default:info`.
    /// Pod annotation: `sidecar.istio.io/agentLogLevel`.
    #[serde(deserialize_with = "de::agent_log_level")]
    pub agent_log_level: Vec<ScopedLogLevel>,
    /// Adds `--log_as_json` to both containers (Istio's `global.logAsJson`). Default false.
    pub log_as_json: bool,
    /// The control plane's xDS address, `host:port` (the proxy's `discoveryAddress`).
    /// Default `istiod.istio-system.svc:15012`.
    #[serde(deserialize_with = "de::address")]
    pub discovery_address: String,
    /// The certificate authority's address (`CA_ADDR`), `host:port`. Default: the
    /// `discoveryAddress`, because istiod is also the CA.
    #[serde(deserialize_with = "de::optional_address")]
    pub ca_address: Option<String>,
    /// The mesh's SPIFFE trust domain (`TRUST_DOMAIN`). Default `cluster.local`. Empty
    /// means unset: the proxy then learns it from the control plane.
    pub trust_domain: String,
    /// The cluster's DNS domain, used in the proxy's `--domain
    /// $(POD_NAMESPACE).svc.<clusterDomain>`. Default `cluster.local`.
    #[serde(deserialize_with = "de::dns_name")]
    pub cluster_domain: String,
    /// This cluster's name in a multi-cluster mesh (`ISTIO_META_CLUSTER_ID`). Default
    /// `Kubernetes`.
    #[serde(deserialize_with = "de::non_empty")]
    pub cluster_id: String,
    /// The mesh id (`ISTIO_META_MESH_ID`). Default: empty, meaning the trust domain is used,
    /// as in Istio.
    pub mesh_id: String,
    /// The network of this cluster's pods (`ISTIO_META_NETWORK` and the label
    /// `topology.istio.io/network`); a pod's own `topology.istio.io/network` label wins.
    /// Default: empty, meaning a single network.
    #[serde(deserialize_with = "de::optional_label_value")]
    pub network: String,
    /// How the init container captures traffic: `REDIRECT`, `TPROXY` or `NONE` (no init
    /// container at all). Default `REDIRECT`. Pod annotation:
    /// `sidecar.istio.io/interceptionMode`, or `interceptionMode` in `proxy.istio.io/config`.
    #[serde(deserialize_with = "de::interception_mode")]
    pub interception_mode: InterceptionMode,
    /// Whether the proxy is a native sidecar (an init container with `restartPolicy:
    /// Always`), which starts before the app's init containers and does not keep Jobs from
    /// finishing. Default true: Skiff's choice (spec section 0), where Istio detects the
    /// kubelet version. Needs Kubernetes 1.29 or newer. Pod annotation:
    /// `sidecar.istio.io/nativeSidecar`.
    pub native_sidecar: bool,
    /// Whether the app containers' HTTP, TCP and gRPC probes are rewritten to go through the
    /// proxy's status port, so that they work under strict mTLS. Default true. Pod
    /// annotation: `sidecar.istio.io/rewriteAppHTTPProbers`.
    pub rewrite_app_probes: bool,
    /// In the classic (non-native) layout, puts the proxy first and holds the app
    /// containers until it is ready. Ignored for native sidecars, which always start first.
    /// Default false. Per pod: `holdApplicationUntilProxyStarts` in `proxy.istio.io/config`.
    pub hold_application_until_proxy_starts: bool,
    /// Whether the proxy's status port serves the app's Prometheus metrics merged with its
    /// own (and the pod's `prometheus.io/*` annotations are pointed at it). Default true.
    /// Pod annotation: `prometheus.istio.io/merge-metrics`.
    pub enable_prometheus_merge: bool,
    /// Adds NET_BIND_SERVICE to the proxy and runs it as root, so that it can listen on
    /// ports below 1024. Default false. Pod annotation: `sidecar.istio.io/capNetBindService`.
    pub cap_net_bind_service: bool,
    /// The proxy's status port: app-probe rewrites, merged metrics and the drain hook; it is
    /// never captured (`-d`). 0 turns it off and drops the proxy's own probes. Default 15020.
    /// Pod annotation: `status.sidecar.istio.io/port`.
    #[serde(deserialize_with = "de::status_port")]
    pub status_port: u16,
    /// `initialDelaySeconds` of the proxy's readiness probe. Default 0. Pod annotation:
    /// `readiness.status.sidecar.istio.io/initialDelaySeconds`.
    #[serde(deserialize_with = "de::non_negative")]
    pub readiness_initial_delay_seconds: i32,
    /// `periodSeconds` of the proxy's readiness probe. Default 15. Pod annotation:
    /// `readiness.status.sidecar.istio.io/periodSeconds`.
    #[serde(deserialize_with = "de::positive")]
    pub readiness_period_seconds: i32,
    /// `failureThreshold` of the proxy's readiness probe. Default 4. Pod annotation:
    /// `readiness.status.sidecar.istio.io/failureThreshold`.
    #[serde(deserialize_with = "de::positive")]
    pub readiness_failure_threshold: i32,
    /// The proxy's startup probe. Default enabled, `failureThreshold: 600` (ten minutes at
    /// one probe a second).
    pub startup_probe: StartupProbe,
    /// What the init container captures (Istio's `global.proxy.*` traffic values).
    pub traffic: TrafficConfig,
    /// Sends the pod's DNS (port 53) to the proxy on 15053, by setting
    /// `ISTIO_META_DNS_CAPTURE=true` on both containers. Default false. Per pod:
    /// `proxyMetadata` in `proxy.istio.io/config`.
    pub dns_capture: bool,
    /// Istio's `proxyMetadata`: environment of both the proxy and the init container, also
    /// recorded in the proxy's `PROXY_CONFIG`. Names must be environment variable names.
    /// Default: none.
    #[serde(deserialize_with = "de::env_map")]
    pub proxy_metadata: BTreeMap<String, String>,
    /// Extra environment of the proxy container only, after everything the injector sets
    /// (an entry with the name of an injected variable replaces its value). Default: none.
    #[serde(deserialize_with = "de::env_map")]
    pub proxy_env: BTreeMap<String, String>,
}

/// Kubernetes' `imagePullPolicy` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ImagePullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl ImagePullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// Requests and limits. A part that is absent is not set on the containers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default)]
    pub requests: ResourceList,
    #[serde(default)]
    pub limits: ResourceList,
}

/// Istio's `global.proxy.resources`.
impl Default for Resources {
    fn default() -> Self {
        // These literals are valid quantities (a unit test checks it), so `ok()` never
        // turns them into "unset".
        let q = |text: &str| text.parse::<Quantity>().ok();
        Self {
            requests: ResourceList {
                cpu: q("100m"),
                memory: q("128Mi"),
            },
            limits: ResourceList {
                cpu: q("2"),
                memory: q("1Gi"),
            },
        }
    }
}

impl Resources {
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.limits.is_empty()
    }
}

/// CPU and memory amounts, as Kubernetes quantities (`100m`, `0.5`, `128Mi`, `1Gi`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceList {
    #[serde(default, deserialize_with = "de::cpu")]
    pub cpu: Option<Quantity>,
    #[serde(default, deserialize_with = "de::memory")]
    pub memory: Option<Quantity>,
}

impl ResourceList {
    pub fn is_empty(&self) -> bool {
        self.cpu.is_none() && self.memory.is_none()
    }
}

/// The proxy's startup probe (GET `/healthz/ready` on 15021 every second).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct StartupProbe {
    /// Default true. Without it, the readiness probe alone decides when the proxy is ready,
    /// and a native sidecar no longer holds back the containers after it.
    pub enabled: bool,
    /// Failed probes before the kubelet restarts the proxy. Default 600.
    #[serde(deserialize_with = "de::positive")]
    pub failure_threshold: i32,
}

impl Default for StartupProbe {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_threshold: 600,
        }
    }
}

/// The cluster-wide defaults of the `traffic.sidecar.istio.io/*` annotations. Each value is
/// written as the annotation is (a comma-separated string), or as a YAML list.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrafficConfig {
    /// `-i`: outbound destinations that are captured: `*` (all), CIDRs, or empty (no
    /// outbound capture). Default `*`.
    #[serde(
        rename = "includeOutboundIPRanges",
        deserialize_with = "de::include_outbound_ip_ranges"
    )]
    pub include_outbound_ip_ranges: CaptureSet<Cidr>,
    /// `-x`: outbound destinations never captured (CIDRs). Default empty.
    #[serde(
        rename = "excludeOutboundIPRanges",
        deserialize_with = "de::exclude_outbound_ip_ranges"
    )]
    pub exclude_outbound_ip_ranges: Vec<Cidr>,
    /// `-b`: inbound ports that are captured: `*` (all), ports, or empty (no inbound
    /// capture). Default `*`.
    #[serde(
        rename = "includeInboundPorts",
        deserialize_with = "de::include_inbound_ports"
    )]
    pub include_inbound_ports: CaptureSet<u16>,
    /// Inbound ports never captured, added to `-d` after 15090 and 15021. Default empty.
    #[serde(
        rename = "excludeInboundPorts",
        deserialize_with = "de::exclude_inbound_ports"
    )]
    pub exclude_inbound_ports: Vec<u16>,
    /// `-q`: outbound ports always captured, whatever the destination. Default empty (no
    /// `-q`).
    #[serde(
        rename = "includeOutboundPorts",
        deserialize_with = "de::include_outbound_ports"
    )]
    pub include_outbound_ports: Vec<u16>,
    /// `-o`: outbound ports never captured. Default empty (no `-o`).
    #[serde(
        rename = "excludeOutboundPorts",
        deserialize_with = "de::exclude_outbound_ports"
    )]
    pub exclude_outbound_ports: Vec<u16>,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        Self {
            include_outbound_ip_ranges: CaptureSet::All,
            exclude_outbound_ip_ranges: Vec::new(),
            include_inbound_ports: CaptureSet::All,
            exclude_inbound_ports: Vec::new(),
            include_outbound_ports: Vec::new(),
            exclude_outbound_ports: Vec::new(),
        }
    }
}

impl Default for InjectionConfig {
    fn default() -> Self {
        Self {
            policy: InjectionPolicy::Enabled,
            never_inject_selector: Vec::new(),
            always_inject_selector: Vec::new(),
            revision: "default".to_owned(),
            proxy_image: DEFAULT_PROXY_IMAGE.to_owned(),
            init_image: DEFAULT_INIT_IMAGE.to_owned(),
            image_pull_policy: None,
            image_pull_secrets: Vec::new(),
            resources: Resources::default(),
            log_level: ProxyLogLevel::Warning,
            component_log_level: vec![ComponentLogLevel {
                component: "misc".to_owned(),
                level: ProxyLogLevel::Error,
            }],
            agent_log_level: vec![ScopedLogLevel {
                scope: "default".to_owned(),
                level: AgentLogLevel::Info,
            }],
            log_as_json: false,
            discovery_address: DEFAULT_DISCOVERY_ADDRESS.to_owned(),
            ca_address: None,
            trust_domain: "cluster.local".to_owned(),
            cluster_domain: "cluster.local".to_owned(),
            cluster_id: "Kubernetes".to_owned(),
            mesh_id: String::new(),
            network: String::new(),
            interception_mode: InterceptionMode::Redirect,
            native_sidecar: true,
            rewrite_app_probes: true,
            hold_application_until_proxy_starts: false,
            enable_prometheus_merge: true,
            cap_net_bind_service: false,
            status_port: 15020,
            readiness_initial_delay_seconds: 0,
            readiness_period_seconds: 15,
            readiness_failure_threshold: 4,
            startup_probe: StartupProbe::default(),
            traffic: TrafficConfig::default(),
            dns_capture: false,
            proxy_metadata: BTreeMap::new(),
            proxy_env: BTreeMap::new(),
        }
    }
}

/// Why a config cannot be used. The webhook keeps its last good config when a reload fails,
/// and logs this message, so it says where the problem is and what to write instead.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read the injection config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Not YAML, the wrong shape, an unknown key, or a value the key does not accept.
    /// `message` starts with the key's path when yaml_serde knows it.
    #[error("{}: {message}", place(file.as_deref(), *line, *column))]
    Yaml {
        file: Option<PathBuf>,
        /// 1-based, when the parser knows where the problem is.
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// A value that is well-formed on its own but unusable (e.g. an invalid label selector).
    #[error("{}: {field}: {reason}", place(file.as_deref(), None, None))]
    Invalid {
        file: Option<PathBuf>,
        /// The key's path, e.g. `neverInjectSelector[0].matchLabels["app"]`.
        field: String,
        reason: String,
    },
}

fn place(file: Option<&Path>, line: Option<usize>, column: Option<usize>) -> String {
    let mut out = String::from("injection config");
    if let Some(file) = file {
        let _ = write!(out, " {}", file.display());
    }
    if let (Some(line), Some(column)) = (line, column) {
        let _ = write!(out, " at line {line} column {column}");
    }
    out
}

impl ConfigError {
    fn in_file(mut self, path: &Path) -> Self {
        match &mut self {
            Self::Yaml { file, .. } | Self::Invalid { file, .. } => {
                *file = Some(path.to_owned());
            }
            Self::Read { .. } => {}
        }
        self
    }

    fn from_yaml(error: &yaml_serde::Error) -> Self {
        let location = error.location();
        let mut message = error.to_string();
        if let Some(at) = &location {
            // The location is shown in front; drop yaml_serde's copy of it at the end.
            let suffix = format!(" at line {} column {}", at.line(), at.column());
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_owned();
            }
        }
        Self::Yaml {
            file: None,
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
            message,
        }
    }
}

impl InjectionConfig {
    /// Parses and validates a config. Empty text (or only comments) is the default config.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let value: yaml_serde::Value =
            yaml_serde::from_str(text).map_err(|e| ConfigError::from_yaml(&e))?;
        if value.is_null() {
            return Ok(Self::default());
        }
        // Parsed again from the text rather than from `value`, so that errors keep their
        // line and column.
        let config: Self = yaml_serde::from_str(text).map_err(|e| ConfigError::from_yaml(&e))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates the config file at `path`; errors name the file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|e| e.in_file(path))
    }

    /// The checks that need more than one value at a time. Single values are checked while
    /// the YAML is read; this is also what a config built in code should pass.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.policy_config().validate().map_err(|e| match e {
            PolicyError::Selector(e) => ConfigError::Invalid {
                file: None,
                field: e.field,
                reason: e.problem.to_string(),
            },
            other => ConfigError::Invalid {
                file: None,
                field: "policy".to_owned(),
                reason: other.to_string(),
            },
        })?;
        let status = self.status_port;
        if status != 0 && RESERVED_PORTS.contains(&status) {
            return Err(ConfigError::Invalid {
                file: None,
                field: "statusPort".to_owned(),
                reason: de::reserved_port_reason(status),
            });
        }
        Ok(())
    }

    /// The share of the config that decides whether a pod is injected.
    pub fn policy_config(&self) -> PolicyConfig {
        PolicyConfig {
            policy: self.policy,
            never_inject_selector: self.never_inject_selector.clone(),
            always_inject_selector: self.always_inject_selector.clone(),
        }
    }

    /// `CA_ADDR`: the configured CA, else the control plane.
    pub fn ca_address(&self) -> &str {
        self.ca_address
            .as_deref()
            .unwrap_or(&self.discovery_address)
    }

    /// `ISTIO_META_MESH_ID`: the mesh id, else the trust domain (empty when both are).
    pub fn mesh_id(&self) -> &str {
        if self.mesh_id.is_empty() {
            &self.trust_domain
        } else {
            &self.mesh_id
        }
    }
}
