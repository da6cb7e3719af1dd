//! The config's defaults merged with one pod's overrides: every value the containers are
//! built from, decided in one place so that each precedence rule is written once.
//!
//! Precedence, highest first: the pod's annotation, then the pod's `proxy.istio.io/config`
//! (for the ProxyConfig fields Skiff reads), then the injection config.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::SidecarError;
use crate::annotations::{
    CaptureSet, Cidr, ComponentLogLevel, ImageType, InterceptionMode, PodOverrides, ProxyLogLevel,
    ResourceOverrides, ScopedLogLevel, key,
};
use crate::config::{InjectionConfig, RESERVED_PORTS, ResourceList, Resources};

/// The ProxyConfig field names (Istio's mesh config spelling) that Skiff reads from
/// `proxy.istio.io/config`.
const PC_HOLD: &str = "holdApplicationUntilProxyStarts";
const PC_INTERCEPTION_MODE: &str = "interceptionMode";
const PC_STATUS_PORT: &str = "statusPort";
const PC_METADATA: &str = "proxyMetadata";
const PC_DISCOVERY_ADDRESS: &str = "discoveryAddress";

/// Set in the proxy's and the init container's environment to capture DNS (Istio's switch).
pub const DNS_CAPTURE_ENV: &str = "ISTIO_META_DNS_CAPTURE";

/// Effective values for one pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub native: bool,
    /// Only ever true in the classic layout.
    pub hold_application: bool,
    pub interception_mode: InterceptionMode,
    /// 0: no status port.
    pub status_port: u16,
    pub rewrite_app_probes: bool,
    pub prometheus_merge: bool,
    pub cap_net_bind_service: bool,
    pub proxy_image: String,
    pub init_image: String,
    pub resources: Resources,
    pub traffic: Traffic,
    pub log_level: ProxyLogLevel,
    pub component_log_level: Vec<ComponentLogLevel>,
    pub agent_log_level: Vec<ScopedLogLevel>,
    pub log_as_json: bool,
    pub readiness: ProbeTiming,
    /// Istio's `proxyMetadata`: environment of both containers.
    pub proxy_metadata: BTreeMap<String, String>,
    /// The proxy's `PROXY_CONFIG`: the configured fields with the pod's
    /// `proxy.istio.io/config` on top, and the effective values of the fields Skiff reads.
    pub proxy_config: Map<String, Value>,
}

/// The capture rules skiff-init is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traffic {
    pub include_outbound_ip_ranges: CaptureSet<Cidr>,
    pub exclude_outbound_ip_ranges: Vec<Cidr>,
    pub include_inbound_ports: CaptureSet<u16>,
    pub exclude_inbound_ports: Vec<u16>,
    /// `-q`; `None` omits the flag. Istio passes `-q` when the annotation is present (even
    /// empty) or the configured list is not empty.
    pub include_outbound_ports: Option<Vec<u16>>,
    /// `-o`; same rule as `-q`.
    pub exclude_outbound_ports: Option<Vec<u16>>,
    /// `-k`; only from the pod's annotations.
    pub reroute_virtual_interfaces: Option<Vec<String>>,
    /// `-c`; only from the pod's annotations.
    pub exclude_interfaces: Option<Vec<String>>,
}

/// The proxy's readiness probe timing, in the int32 the Kubernetes API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTiming {
    pub initial_delay_seconds: i32,
    pub period_seconds: i32,
    pub failure_threshold: i32,
}

fn pc_error(field: &str, reason: &str) -> SidecarError {
    SidecarError::ProxyConfig {
        field: field.to_owned(),
        reason: reason.to_owned(),
    }
}

/// The fields of the pod's ProxyConfig that change what is injected.
#[derive(Default)]
struct PodProxyConfig {
    hold: Option<bool>,
    interception_mode: Option<InterceptionMode>,
    status_port: Option<u16>,
    metadata: BTreeMap<String, String>,
}

fn number(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse().ok()
        }
        _ => v.as_u64(),
    }
}

fn read_pod_proxy_config(fields: &BTreeMap<String, Value>) -> Result<PodProxyConfig, SidecarError> {
    let mut out = PodProxyConfig::default();
    if let Some(v) = fields.get(PC_HOLD) {
        out.hold = match v {
            Value::Bool(b) => Some(*b),
            Value::Null => None,
            _ => return Err(pc_error(PC_HOLD, "is not a boolean: use true or false")),
        };
    }
    if let Some(v) = fields.get(PC_INTERCEPTION_MODE) {
        out.interception_mode = match v.as_str() {
            Some("REDIRECT") => Some(InterceptionMode::Redirect),
            Some("TPROXY") => Some(InterceptionMode::Tproxy),
            Some("NONE") => Some(InterceptionMode::None),
            _ if v.is_null() => None,
            _ => {
                return Err(pc_error(
                    PC_INTERCEPTION_MODE,
                    "is not an interception mode: use REDIRECT, TPROXY or NONE",
                ));
            }
        };
    }
    if let Some(v) = fields.get(PC_STATUS_PORT) {
        out.status_port = match v {
            Value::Null => None,
            // protojson, which Istio reads ProxyConfig with, also takes quoted numbers.
            _ => match number(v).and_then(|n| u16::try_from(n).ok()) {
                Some(port) => Some(port),
                None => {
                    return Err(pc_error(
                        PC_STATUS_PORT,
                        "is not a port: use a number from 1 to 65535, or 0 for no status port",
                    ));
                }
            },
        };
    }
    match fields.get(PC_METADATA) {
        None | Some(Value::Null) => {}
        Some(Value::Object(entries)) => {
            for (name, value) in entries {
                let Some(text) = value.as_str() else {
                    return Err(pc_error(
                        &format!("{PC_METADATA}.{name}"),
                        "is not a string: quote the value",
                    ));
                };
                if !crate::config::is_env_name(name) {
                    return Err(pc_error(
                        &format!("{PC_METADATA}.{name}"),
                        "is not an environment variable name: use letters, digits, '_', '-' \
                         and '.', not starting with a digit",
                    ));
                }
                out.metadata.insert(name.clone(), text.to_owned());
            }
        }
        Some(_) => {
            return Err(pc_error(
                PC_METADATA,
                "is not a mapping of environment variable names to strings",
            ));
        }
    }
    Ok(out)
}

/// Istio's `updateImageTypeIfPresent`: drop a known variant suffix from the tag, then add
/// the requested one (`default` adds none). An image without a tag is treated as `latest`.
fn with_image_type(image: &str, image_type: ImageType) -> Result<String, SidecarError> {
    if image.contains('@') {
        return Err(SidecarError::ImageType {
            image: image.to_owned(),
        });
    }
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    let (repository, tag) = match image[name_start..].rfind(':') {
        Some(i) => (&image[..name_start + i], &image[name_start + i + 1..]),
        None => (image, "latest"),
    };
    let base = ["-distroless", "-debug"]
        .iter()
        .find_map(|suffix| tag.strip_suffix(suffix))
        .unwrap_or(tag);
    Ok(match image_type {
        ImageType::Default => format!("{repository}:{base}"),
        other => format!("{repository}:{base}-{}", other.as_str()),
    })
}

/// Any one of the four annotations replaces the configured resources entirely.
fn resources(config: &InjectionConfig, overrides: &ResourceOverrides) -> Resources {
    if !overrides.is_set() {
        return config.resources.clone();
    }
    Resources {
        requests: ResourceList {
            cpu: overrides.cpu_request.clone(),
            memory: overrides.memory_request.clone(),
        },
        limits: ResourceList {
            cpu: overrides.cpu_limit.clone(),
            memory: overrides.memory_limit.clone(),
        },
    }
}

fn probe_field(key: &str, value: Option<u32>, default: i32) -> Result<i32, SidecarError> {
    match value {
        None => Ok(default),
        Some(value) => i32::try_from(value).map_err(|_| SidecarError::ProbeField {
            key: key.to_owned(),
            value,
        }),
    }
}

/// An empty configured list means "no flag"; a present annotation always gives the flag.
fn flag_list(annotation: &Option<Vec<u16>>, configured: &[u16]) -> Option<Vec<u16>> {
    annotation
        .clone()
        .or_else(|| (!configured.is_empty()).then(|| configured.to_vec()))
}

impl Settings {
    /// Merges the config with the pod's overrides.
    pub fn resolve(
        config: &InjectionConfig,
        overrides: &PodOverrides,
    ) -> Result<Settings, SidecarError> {
        let empty = BTreeMap::new();
        let pod_fields = overrides.proxy_config.as_ref().unwrap_or(&empty);
        let pod_pc = read_pod_proxy_config(pod_fields)?;

        let native = overrides.native_sidecar.unwrap_or(config.native_sidecar);
        let wants_hold = pod_pc
            .hold
            .unwrap_or(config.hold_application_until_proxy_starts);
        let interception_mode = overrides
            .interception_mode
            .or(pod_pc.interception_mode)
            .unwrap_or(config.interception_mode);

        let (status_port, status_source) = match (overrides.status_port, pod_pc.status_port) {
            (Some(port), _) => (port, format!("annotation {}", key::STATUS_PORT)),
            (None, Some(port)) => (
                port,
                format!("annotation {}: field {PC_STATUS_PORT}", key::PROXY_CONFIG),
            ),
            (None, None) => (
                config.status_port,
                "injection config: statusPort".to_owned(),
            ),
        };
        if status_port != 0 && RESERVED_PORTS.contains(&status_port) {
            return Err(SidecarError::StatusPort {
                source_name: status_source,
                reason: crate::config::reserved_port_reason(status_port),
            });
        }

        let (proxy_image, init_image) = match (&overrides.proxy_image, overrides.proxy_image_type) {
            (Some(image), _) => (image.clone(), image.clone()),
            (None, Some(image_type)) => (
                with_image_type(&config.proxy_image, image_type)?,
                with_image_type(&config.init_image, image_type)?,
            ),
            (None, None) => (config.proxy_image.clone(), config.init_image.clone()),
        };

        let configured = &config.traffic;
        let traffic = Traffic {
            include_outbound_ip_ranges: overrides
                .include_outbound_ip_ranges
                .clone()
                .unwrap_or_else(|| configured.include_outbound_ip_ranges.clone()),
            exclude_outbound_ip_ranges: overrides
                .exclude_outbound_ip_ranges
                .clone()
                .unwrap_or_else(|| configured.exclude_outbound_ip_ranges.clone()),
            include_inbound_ports: overrides
                .include_inbound_ports
                .clone()
                .unwrap_or_else(|| configured.include_inbound_ports.clone()),
            exclude_inbound_ports: overrides
                .exclude_inbound_ports
                .clone()
                .unwrap_or_else(|| configured.exclude_inbound_ports.clone()),
            include_outbound_ports: flag_list(
                &overrides.include_outbound_ports,
                &configured.include_outbound_ports,
            ),
            exclude_outbound_ports: flag_list(
                &overrides.exclude_outbound_ports,
                &configured.exclude_outbound_ports,
            ),
            reroute_virtual_interfaces: overrides.reroute_virtual_interfaces.clone(),
            exclude_interfaces: overrides.exclude_interfaces.clone(),
        };

        let readiness = ProbeTiming {
            initial_delay_seconds: probe_field(
                key::READINESS_INITIAL_DELAY_SECONDS,
                overrides.readiness_initial_delay_seconds,
                config.readiness_initial_delay_seconds,
            )?,
            period_seconds: probe_field(
                key::READINESS_PERIOD_SECONDS,
                overrides.readiness_period_seconds,
                config.readiness_period_seconds,
            )?,
            failure_threshold: probe_field(
                key::READINESS_FAILURE_THRESHOLD,
                overrides.readiness_failure_threshold,
                config.readiness_failure_threshold,
            )?,
        };

        let mut proxy_metadata = config.proxy_metadata.clone();
        if config.dns_capture {
            proxy_metadata.insert(DNS_CAPTURE_ENV.to_owned(), "true".to_owned());
        }
        proxy_metadata.extend(pod_pc.metadata);

        let mut proxy_config = Map::new();
        proxy_config.insert(
            PC_DISCOVERY_ADDRESS.to_owned(),
            Value::String(config.discovery_address.clone()),
        );
        for (name, value) in pod_fields {
            proxy_config.insert(name.clone(), value.clone());
        }
        proxy_config.insert(PC_STATUS_PORT.to_owned(), Value::from(status_port));
        proxy_config.insert(
            PC_INTERCEPTION_MODE.to_owned(),
            Value::String(interception_mode.as_str().to_owned()),
        );
        if wants_hold {
            proxy_config.insert(PC_HOLD.to_owned(), Value::Bool(true));
        } else {
            proxy_config.remove(PC_HOLD);
        }
        if proxy_metadata.is_empty() {
            proxy_config.remove(PC_METADATA);
        } else {
            let entries = proxy_metadata
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            proxy_config.insert(PC_METADATA.to_owned(), Value::Object(entries));
        }

        Ok(Settings {
            native,
            hold_application: wants_hold && !native,
            interception_mode,
            status_port,
            rewrite_app_probes: overrides
                .rewrite_app_http_probers
                .unwrap_or(config.rewrite_app_probes),
            prometheus_merge: overrides
                .merge_metrics
                .unwrap_or(config.enable_prometheus_merge),
            cap_net_bind_service: overrides
                .cap_net_bind_service
                .unwrap_or(config.cap_net_bind_service),
            proxy_image,
            init_image,
            resources: resources(config, &overrides.resources),
            traffic,
            log_level: overrides.log_level.unwrap_or(config.log_level),
            component_log_level: overrides
                .component_log_level
                .clone()
                .unwrap_or_else(|| config.component_log_level.clone()),
            agent_log_level: overrides
                .agent_log_level
                .clone()
                .unwrap_or_else(|| config.agent_log_level.clone()),
            log_as_json: config.log_as_json,
            readiness,
            proxy_metadata,
            proxy_config,
        })
    }
}
