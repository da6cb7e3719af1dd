//! The annotation keys [`super::parse`] honours, spelled exactly as Istio does, so that the
//! sidecar builder and the tests refer to them by name rather than by string.

pub const INCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/includeOutboundIPRanges";
pub const EXCLUDE_OUTBOUND_IP_RANGES: &str = "traffic.sidecar.istio.io/excludeOutboundIPRanges";
pub const INCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeInboundPorts";
pub const EXCLUDE_INBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
pub const INCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/includeOutboundPorts";
pub const EXCLUDE_OUTBOUND_PORTS: &str = "traffic.sidecar.istio.io/excludeOutboundPorts";
pub const EXCLUDE_INTERFACES: &str = "traffic.sidecar.istio.io/excludeInterfaces";
/// Deprecated spelling of [`REROUTE_VIRTUAL_INTERFACES`], which wins when both are set.
pub const KUBEVIRT_INTERFACES: &str = "traffic.sidecar.istio.io/kubevirtInterfaces";
pub const REROUTE_VIRTUAL_INTERFACES: &str = "istio.io/reroute-virtual-interfaces";
pub const INTERCEPTION_MODE: &str = "sidecar.istio.io/interceptionMode";
pub const NATIVE_SIDECAR: &str = "sidecar.istio.io/nativeSidecar";
pub const REWRITE_APP_HTTP_PROBERS: &str = "sidecar.istio.io/rewriteAppHTTPProbers";
pub const CAP_NET_BIND_SERVICE: &str = "sidecar.istio.io/capNetBindService";
pub const LOG_LEVEL: &str = "sidecar.istio.io/logLevel";
pub const COMPONENT_LOG_LEVEL: &str = "sidecar.istio.io/componentLogLevel";
pub const AGENT_LOG_LEVEL: &str = "sidecar.istio.io/agentLogLevel";
pub const PROXY_IMAGE: &str = "sidecar.istio.io/proxyImage";
pub const PROXY_IMAGE_TYPE: &str = "sidecar.istio.io/proxyImageType";
pub const PROXY_CPU: &str = "sidecar.istio.io/proxyCPU";
pub const PROXY_MEMORY: &str = "sidecar.istio.io/proxyMemory";
pub const PROXY_CPU_LIMIT: &str = "sidecar.istio.io/proxyCPULimit";
pub const PROXY_MEMORY_LIMIT: &str = "sidecar.istio.io/proxyMemoryLimit";
pub const BOOTSTRAP_OVERRIDE: &str = "sidecar.istio.io/bootstrapOverride";
pub const USER_VOLUME: &str = "sidecar.istio.io/userVolume";
pub const USER_VOLUME_MOUNT: &str = "sidecar.istio.io/userVolumeMount";
pub const STATUS_PORT: &str = "status.sidecar.istio.io/port";
pub const READINESS_INITIAL_DELAY_SECONDS: &str =
    "readiness.status.sidecar.istio.io/initialDelaySeconds";
pub const READINESS_PERIOD_SECONDS: &str = "readiness.status.sidecar.istio.io/periodSeconds";
pub const READINESS_FAILURE_THRESHOLD: &str = "readiness.status.sidecar.istio.io/failureThreshold";
pub const MERGE_METRICS: &str = "prometheus.istio.io/merge-metrics";
pub const PROXY_CONFIG: &str = "proxy.istio.io/config";

/// Every key above, for callers (and tests) that need to walk them.
pub const ALL: [&str; 31] = [
    INCLUDE_OUTBOUND_IP_RANGES,
    EXCLUDE_OUTBOUND_IP_RANGES,
    INCLUDE_INBOUND_PORTS,
    EXCLUDE_INBOUND_PORTS,
    INCLUDE_OUTBOUND_PORTS,
    EXCLUDE_OUTBOUND_PORTS,
    EXCLUDE_INTERFACES,
    KUBEVIRT_INTERFACES,
    REROUTE_VIRTUAL_INTERFACES,
    INTERCEPTION_MODE,
    NATIVE_SIDECAR,
    REWRITE_APP_HTTP_PROBERS,
    CAP_NET_BIND_SERVICE,
    LOG_LEVEL,
    COMPONENT_LOG_LEVEL,
    AGENT_LOG_LEVEL,
    PROXY_IMAGE,
    PROXY_IMAGE_TYPE,
    PROXY_CPU,
    PROXY_MEMORY,
    PROXY_CPU_LIMIT,
    PROXY_MEMORY_LIMIT,
    BOOTSTRAP_OVERRIDE,
    USER_VOLUME,
    USER_VOLUME_MOUNT,
    STATUS_PORT,
    READINESS_INITIAL_DELAY_SECONDS,
    READINESS_PERIOD_SECONDS,
    READINESS_FAILURE_THRESHOLD,
    MERGE_METRICS,
    PROXY_CONFIG,
];
