//! The per-pod annotations that change what injection adds (spec/injector.md, section 3):
//! parsed once, validated, and turned into typed [`PodOverrides`].
//!
//! Istio checks some of these annotations and passes the rest into its template as text,
//! where a typo becomes a broken init container or a silently ignored setting. Skiff
//! validates every value it honours (spec section 0) and rejects the pod with a message
//! naming the annotation, the value and what is allowed, so a user sees the mistake at
//! `kubectl apply` time. The parsing is pure: plain strings in, plain data out; the webhook
//! feeds it untrusted input, so nothing here may panic.
//!
//! Rules shared by every list-valued annotation:
//! - items are separated by commas and kept in the order written;
//! - whitespace around an item is ignored (Istio trims port and interface items), so
//!   `"80, 443"` is two ports;
//! - empty items are dropped, as istio-iptables and skiff-init do, so `"80,,443,"` is two
//!   ports and `""` is an empty list.
//!
//! Annotations not listed in [`key`] are ignored. `sidecar.istio.io/inject` belongs to
//! [`crate::policy`]; Skiff's own markers (`sidecar.istio.io/status`,
//! `proxy.istio.io/overrides`) are read by the code that re-injects.

use std::collections::BTreeMap;

use serde_json::Value;
use thiserror::Error;

use crate::policy::Labels;

pub mod key;
mod quantity;
#[cfg(test)]
mod tests;
mod values;

pub use quantity::{Quantity, QuantityError};
use values::is_digits;
pub use values::{
    AgentLogLevel, CaptureSet, Cidr, ComponentLogLevel, ImageType, InterceptionMode, ProxyLogLevel,
    ScopedLogLevel,
};

/// What a pod's annotations ask for. `None` means the annotation is absent and the
/// injection config's default applies; a present annotation always yields `Some`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodOverrides {
    /// `-i`: which outbound destinations are captured.
    pub include_outbound_ip_ranges: Option<CaptureSet<Cidr>>,
    /// `-x`.
    pub exclude_outbound_ip_ranges: Option<Vec<Cidr>>,
    /// `-b`: which inbound ports are captured.
    pub include_inbound_ports: Option<CaptureSet<u16>>,
    /// Added to `-d` after 15090 and 15021.
    pub exclude_inbound_ports: Option<Vec<u16>>,
    /// `-q`.
    pub include_outbound_ports: Option<Vec<u16>>,
    /// `-o`.
    pub exclude_outbound_ports: Option<Vec<u16>>,
    /// `-c`.
    pub exclude_interfaces: Option<Vec<String>>,
    /// `-k`: `istio.io/reroute-virtual-interfaces` when present (even empty, as Istio's
    /// template checks presence), else the deprecated
    /// `traffic.sidecar.istio.io/kubevirtInterfaces`. Both are validated when both are set.
    pub reroute_virtual_interfaces: Option<Vec<String>>,
    pub interception_mode: Option<InterceptionMode>,
    /// Overrides the config's native-sidecar default (Skiff's default is native).
    pub native_sidecar: Option<bool>,
    pub rewrite_app_http_probers: Option<bool>,
    /// Adds NET_BIND_SERVICE to the proxy and runs it as root.
    pub cap_net_bind_service: Option<bool>,
    /// The proxy's own log level.
    pub log_level: Option<ProxyLogLevel>,
    /// Per-component proxy log levels; an empty list clears the default `misc:error`.
    pub component_log_level: Option<Vec<ComponentLogLevel>>,
    /// `--log_output_level` of the proxy's agent side and of the init container.
    pub agent_log_level: Option<Vec<ScopedLogLevel>>,
    /// The full image of the proxy and init containers. Istio uses the annotation only when
    /// it contains a `/` (a bare `proxyv2:1.2` is ignored and the configured image stays),
    /// so a value without `/` leaves this `None`.
    pub proxy_image: Option<String>,
    pub proxy_image_type: Option<ImageType>,
    /// When any field is set, these replace the configured proxy resources entirely, for the
    /// init container too.
    pub resources: ResourceOverrides,
    /// The name of a ConfigMap mounted at /etc/istio/custom-bootstrap.
    pub bootstrap_override: Option<String>,
    /// Extra pod volumes: volume name → the rest of the Volume object.
    pub user_volumes: Option<BTreeMap<String, Value>>,
    /// Extra proxy mounts: volume name → the rest of the VolumeMount object.
    pub user_volume_mounts: Option<BTreeMap<String, Value>>,
    /// `Some(0)` means "no status port": the proxy's readiness and startup probes are
    /// dropped and nothing is added to `-d`.
    pub status_port: Option<u16>,
    pub readiness_initial_delay_seconds: Option<u32>,
    pub readiness_period_seconds: Option<u32>,
    pub readiness_failure_threshold: Option<u32>,
    pub merge_metrics: Option<bool>,
    /// The per-pod ProxyConfig (mesh config field names, e.g.
    /// `holdApplicationUntilProxyStarts`), as written; only its shape is checked here. An
    /// empty or `null` document is an empty ProxyConfig, as in Istio.
    pub proxy_config: Option<BTreeMap<String, Value>>,
}

/// The four resource annotations; any one of them replaces the configured resources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceOverrides {
    pub cpu_request: Option<Quantity>,
    pub memory_request: Option<Quantity>,
    pub cpu_limit: Option<Quantity>,
    pub memory_limit: Option<Quantity>,
}

impl ResourceOverrides {
    /// Whether the configured resources are replaced (spec: "any one of them replaces
    /// `global.proxy.resources` entirely").
    pub fn is_set(&self) -> bool {
        self.cpu_request.is_some()
            || self.memory_request.is_some()
            || self.cpu_limit.is_some()
            || self.memory_limit.is_some()
    }
}

/// The first annotation (in key order) whose value Skiff cannot honour. The webhook turns
/// it into `allowed: false`, so the message is what the user sees from `kubectl`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("annotation {key}: {} {reason}", shown(.value))]
pub struct AnnotationError {
    pub key: String,
    /// The full value; the message shows at most [`SHOWN_VALUE_CHARS`] characters of it.
    pub value: String,
    /// What is wrong and what is allowed, e.g. `is not a port list: "http" is not a port
    /// (1-65535)`.
    pub reason: String,
}

/// Annotation values can be up to 256 KiB; echoing all of that back through the API server
/// would bury the reason.
pub const SHOWN_VALUE_CHARS: usize = 200;

fn shown(value: &str) -> String {
    match value.char_indices().nth(SHOWN_VALUE_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!(
            "{:?}... ({} characters)",
            &value[..cut],
            value.chars().count()
        ),
    }
}

/// Kubernetes refuses a pod whose annotations (keys and values together) exceed 256 KiB.
/// The API server only checks this after the webhook has run, so a longer value is refused
/// here first rather than spending time parsing it.
pub const MAX_VALUE_BYTES: usize = 256 * 1024;

/// How deeply `[` and `{` may nest in `proxy.istio.io/config`. A ProxyConfig nests a
/// handful of levels; the YAML parser needs microseconds per level of nesting, so a value
/// of nothing but brackets would otherwise cost seconds of CPU per admission request.
pub const MAX_PROXY_CONFIG_DEPTH: usize = 64;

/// Reads every annotation of section 3 that shapes the injected containers and volumes.
/// Annotations are visited in key order and the first bad one is reported, so the same pod
/// always gets the same message.
pub fn parse(annotations: &Labels) -> Result<PodOverrides, AnnotationError> {
    let mut out = PodOverrides::default();
    let mut kubevirt = None;
    let mut reroute = None;
    for (name, value) in annotations {
        let v = value.as_str();
        let res = &mut out.resources;
        let known = key::ALL.contains(&name.as_str());
        let result = match name.as_str() {
            _ if known && v.len() > MAX_VALUE_BYTES => Err(format!(
                "is longer than the {} KiB Kubernetes allows for all of a pod's annotations \
                 together",
                MAX_VALUE_BYTES / 1024
            )),
            key::INCLUDE_OUTBOUND_IP_RANGES => set(
                &mut out.include_outbound_ip_ranges,
                capture_set(v, cidr_list),
            ),
            key::EXCLUDE_OUTBOUND_IP_RANGES => set(&mut out.exclude_outbound_ip_ranges, cidrs(v)),
            key::INCLUDE_INBOUND_PORTS => {
                set(&mut out.include_inbound_ports, capture_set(v, port_list))
            }
            key::EXCLUDE_INBOUND_PORTS => set(&mut out.exclude_inbound_ports, ports(v)),
            key::INCLUDE_OUTBOUND_PORTS => set(&mut out.include_outbound_ports, ports(v)),
            key::EXCLUDE_OUTBOUND_PORTS => set(&mut out.exclude_outbound_ports, ports(v)),
            key::EXCLUDE_INTERFACES => set(&mut out.exclude_interfaces, interfaces(v)),
            key::KUBEVIRT_INTERFACES => set(&mut kubevirt, interfaces(v)),
            key::REROUTE_VIRTUAL_INTERFACES => set(&mut reroute, interfaces(v)),
            key::INTERCEPTION_MODE => set(&mut out.interception_mode, interception_mode(v)),
            key::NATIVE_SIDECAR => set(&mut out.native_sidecar, true_or_false(v)),
            key::REWRITE_APP_HTTP_PROBERS => {
                set(&mut out.rewrite_app_http_probers, go_parse_bool(v))
            }
            key::CAP_NET_BIND_SERVICE => set(&mut out.cap_net_bind_service, true_or_false(v)),
            key::LOG_LEVEL => set(&mut out.log_level, proxy_log_level(v)),
            key::COMPONENT_LOG_LEVEL => set(&mut out.component_log_level, component_levels(v)),
            key::AGENT_LOG_LEVEL => set(&mut out.agent_log_level, agent_levels(v)),
            key::PROXY_IMAGE => proxy_image(v).map(|image| out.proxy_image = image),
            key::PROXY_IMAGE_TYPE => set(&mut out.proxy_image_type, image_type(v)),
            key::PROXY_CPU => set(&mut res.cpu_request, resource(v)),
            key::PROXY_MEMORY => set(&mut res.memory_request, resource(v)),
            key::PROXY_CPU_LIMIT => set(&mut res.cpu_limit, resource(v)),
            key::PROXY_MEMORY_LIMIT => set(&mut res.memory_limit, resource(v)),
            key::BOOTSTRAP_OVERRIDE => set(&mut out.bootstrap_override, configmap_name(v)),
            key::USER_VOLUME => set(&mut out.user_volumes, named_objects(v, "volumes")),
            key::USER_VOLUME_MOUNT => set(
                &mut out.user_volume_mounts,
                named_objects(v, "volume mounts"),
            ),
            key::STATUS_PORT => set(&mut out.status_port, status_port(v)),
            key::READINESS_INITIAL_DELAY_SECONDS => {
                set(&mut out.readiness_initial_delay_seconds, uint32(v))
            }
            key::READINESS_PERIOD_SECONDS => set(&mut out.readiness_period_seconds, uint32(v)),
            key::READINESS_FAILURE_THRESHOLD => {
                set(&mut out.readiness_failure_threshold, uint32(v))
            }
            key::MERGE_METRICS => set(&mut out.merge_metrics, go_parse_bool(v)),
            key::PROXY_CONFIG => set(&mut out.proxy_config, proxy_config(v)),
            _ => Ok(()),
        };
        result.map_err(|reason| AnnotationError {
            key: name.clone(),
            value: value.clone(),
            reason,
        })?;
    }
    out.reroute_virtual_interfaces = reroute.or(kubevirt);
    Ok(out)
}

fn set<T>(slot: &mut Option<T>, parsed: Result<T, String>) -> Result<(), String> {
    *slot = Some(parsed?);
    Ok(())
}

/// The comma rules of the module documentation.
fn items(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// Only the exact value `*` is the wildcard, as in Istio: `*` inside a list is an error.
fn capture_set<T>(
    value: &str,
    list: fn(&str) -> Result<Vec<T>, String>,
) -> Result<CaptureSet<T>, String> {
    if value == "*" {
        return Ok(CaptureSet::All);
    }
    let only = list(value).map_err(|e| format!("is not \"*\" or {e}"))?;
    Ok(if only.is_empty() {
        CaptureSet::Nothing
    } else {
        CaptureSet::Only(only)
    })
}

fn cidr_list(value: &str) -> Result<Vec<Cidr>, String> {
    items(value)
        .map(|item| item.parse::<Cidr>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("a CIDR list: {e}"))
}

fn cidrs(value: &str) -> Result<Vec<Cidr>, String> {
    cidr_list(value).map_err(|e| format!("is not {e}"))
}

/// Port 0 is refused in lists: it cannot be captured or excluded, and skiff-init refuses it.
fn port_list(value: &str) -> Result<Vec<u16>, String> {
    items(value)
        .map(|item| match item.parse::<u16>() {
            Ok(port) if port > 0 && is_digits(item) => Ok(port),
            _ => Err(format!("a port list: {item:?} is not a port (1-65535)")),
        })
        .collect()
}

fn ports(value: &str) -> Result<Vec<u16>, String> {
    port_list(value).map_err(|e| format!("is not {e}"))
}

/// Linux allows at most 15 bytes; the character set is Istio's (`ValidateInterfaceNames`).
fn interfaces(value: &str) -> Result<Vec<String>, String> {
    items(value)
        .map(|name| {
            let mut chars = name.chars();
            let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
            let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if first_ok && rest_ok && name.len() <= 15 {
                Ok(name.to_owned())
            } else {
                Err(format!(
                    "is not an interface list: {name:?} is not an interface name (a letter, then \
                     letters, digits, '_', '.' or '-'; at most 15 characters)"
                ))
            }
        })
        .collect()
}

fn interception_mode(value: &str) -> Result<InterceptionMode, String> {
    match value {
        "REDIRECT" => Ok(InterceptionMode::Redirect),
        "TPROXY" => Ok(InterceptionMode::Tproxy),
        "NONE" => Ok(InterceptionMode::None),
        _ => Err("is not an interception mode: use REDIRECT, TPROXY or NONE".to_owned()),
    }
}

/// What Go's `strconv.ParseBool` accepts; Istio reads `rewriteAppHTTPProbers` and
/// `prometheus.istio.io/merge-metrics` with it.
fn go_parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(
            "is not a boolean: use one of 1, t, T, TRUE, true, True, 0, f, F, FALSE, \
                  false, False"
                .to_owned(),
        ),
    }
}

/// Istio compares `nativeSidecar` and `capNetBindService` with the literal strings `true`
/// and `false` and treats every other spelling inconsistently (e.g. `True` is "native" in
/// the template but "use the default" in the container placement), so only those two are
/// accepted.
fn true_or_false(value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("is not a boolean: use true or false".to_owned()),
    }
}

fn proxy_level_names() -> String {
    let names: Vec<_> = ProxyLogLevel::ALL.iter().map(|l| l.as_str()).collect();
    names.join(", ")
}

fn agent_level_names() -> String {
    let names: Vec<_> = AgentLogLevel::ALL.iter().map(|l| l.as_str()).collect();
    names.join(", ")
}

fn proxy_log_level(value: &str) -> Result<ProxyLogLevel, String> {
    ProxyLogLevel::from_name(value).ok_or_else(|| {
        format!(
            "is not a proxy log level: use one of {}",
            proxy_level_names()
        )
    })
}

/// A logger name as Envoy and Istio spell them: letters, digits, `_` and `-`.
fn is_scope_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

/// Envoy requires the component in every item of `--component-log-level`.
fn component_levels(value: &str) -> Result<Vec<ComponentLogLevel>, String> {
    items(value)
        .map(|item| match item.split_once(':') {
            Some((component, level)) if is_scope_name(component) => {
                match ProxyLogLevel::from_name(level) {
                    Some(level) => Ok(ComponentLogLevel {
                        component: component.to_owned(),
                        level,
                    }),
                    None => Err(format!(
                        "is not a component log level list: {level:?} in {item:?} is not a \
                         level (use one of {})",
                        proxy_level_names()
                    )),
                }
            }
            _ => Err(format!(
                "is not a component log level list: {item:?} is not component:level (e.g. \
                 misc:error)"
            )),
        })
        .collect()
}

/// Istio's `--log_output_level`: `scope:level` items, a bare `level` meaning `default`.
/// An empty list is refused because the agent refuses it at start-up.
fn agent_levels(value: &str) -> Result<Vec<ScopedLogLevel>, String> {
    let levels = items(value)
        .map(|item| {
            let (scope, level) = item.split_once(':').unwrap_or(("default", item));
            if !is_scope_name(scope) {
                return Err(format!(
                    "is not an agent log level list: {item:?} is not scope:level (e.g. \
                     default:info)"
                ));
            }
            match AgentLogLevel::from_name(level) {
                Some(level) => Ok(ScopedLogLevel {
                    scope: scope.to_owned(),
                    level,
                }),
                None => Err(format!(
                    "is not an agent log level list: {level:?} in {item:?} is not a level (use \
                     one of {})",
                    agent_level_names()
                )),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    if levels.is_empty() {
        return Err("is not an agent log level list: it is empty (e.g. default:info)".to_owned());
    }
    Ok(levels)
}

/// `Ok(None)` for a value without `/`, which Istio ignores (see [`PodOverrides::proxy_image`]).
fn proxy_image(value: &str) -> Result<Option<String>, String> {
    if !value.contains('/') {
        return Ok(None);
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("is not an image reference: it contains whitespace".to_owned());
    }
    Ok(Some(value.to_owned()))
}

fn image_type(value: &str) -> Result<ImageType, String> {
    match value {
        "debug" => Ok(ImageType::Debug),
        "distroless" => Ok(ImageType::Distroless),
        "default" => Ok(ImageType::Default),
        _ => Err("is not an image type: use debug, distroless or default".to_owned()),
    }
}

/// The API server refuses negative requests and limits, so they are refused here, where
/// the message can name the annotation.
fn resource(value: &str) -> Result<Quantity, String> {
    let quantity: Quantity = value.parse().map_err(|e| {
        format!("is not a Kubernetes quantity: {e} (write e.g. 100m, 0.5, 128Mi, 1Gi or 1e3)")
    })?;
    if quantity.is_negative() {
        return Err("is not a resource amount: it is negative".to_owned());
    }
    Ok(quantity)
}

/// Lowercase letters, digits and `-`, starting and ending with a letter or digit.
fn is_label_shaped(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    bytes.iter().all(|b| alnum(b) || *b == b'-')
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
}

/// A DNS-1123 label: what Kubernetes requires of volume names.
fn is_dns_label(name: &str) -> bool {
    name.len() <= 63 && is_label_shaped(name)
}

/// A DNS-1123 subdomain: what Kubernetes requires of ConfigMap names. Only the whole name
/// is limited (to 253 characters), not each dot-separated part.
fn configmap_name(value: &str) -> Result<String, String> {
    if value.len() <= 253 && value.split('.').all(is_label_shaped) {
        Ok(value.to_owned())
    } else {
        Err(
            "is not a ConfigMap name: use lowercase letters, digits, '-' and '.', starting and \
             ending with a letter or digit, at most 253 characters"
                .to_owned(),
        )
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// `userVolume` and `userVolumeMount`: a JSON object from volume name to the rest of the
/// Volume or VolumeMount, which the injector completes with `name`.
fn named_objects(value: &str, what: &str) -> Result<BTreeMap<String, Value>, String> {
    let wrong = |detail: String| {
        format!("is not a JSON object of {what} (e.g. {{\"name\": {{...}}}}): {detail}")
    };
    let parsed: Value = serde_json::from_str(value).map_err(|e| wrong(e.to_string()))?;
    let Value::Object(entries) = parsed else {
        return Err(wrong(format!("it is {}", kind_of(&parsed))));
    };
    for (name, entry) in &entries {
        if !is_dns_label(name) {
            return Err(wrong(format!(
                "{name:?} is not a volume name (lowercase letters, digits and '-', starting and \
                 ending with a letter or digit, at most 63 characters)"
            )));
        }
        if !entry.is_object() {
            return Err(wrong(format!(
                "the entry {name:?} is {}, not an object",
                kind_of(entry)
            )));
        }
    }
    Ok(entries.into_iter().collect())
}

/// Ports are trimmed and 0 is allowed, as in Istio's `parsePort`.
fn status_port(value: &str) -> Result<u16, String> {
    let trimmed = value.trim();
    match trimmed.parse::<u16>() {
        Ok(port) if is_digits(trimmed) => Ok(port),
        _ => Err("is not a status port: use 1-65535, or 0 for no proxy probes".to_owned()),
    }
}

/// Go's `strconv.ParseUint(value, 10, 32)`: digits only, leading zeros allowed.
fn uint32(value: &str) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(n) if is_digits(value) => Ok(n),
        _ => Err("is not a whole number from 0 to 4294967295".to_owned()),
    }
}

/// YAML or JSON (a JSON object is also a YAML mapping).
fn proxy_config(value: &str) -> Result<BTreeMap<String, Value>, String> {
    if value.trim().is_empty() {
        return Ok(BTreeMap::new());
    }
    if flow_depth_exceeds(value, MAX_PROXY_CONFIG_DEPTH) {
        return Err(format!(
            "is not a ProxyConfig: it nests [ and {{ more than {MAX_PROXY_CONFIG_DEPTH} levels \
             deep"
        ));
    }
    let parsed: Value = yaml_serde::from_str(value)
        .map_err(|e| format!("is not a ProxyConfig in YAML or JSON: {e}"))?;
    match parsed {
        Value::Object(fields) => Ok(fields.into_iter().collect()),
        Value::Null => Ok(BTreeMap::new()),
        other => Err(format!(
            "is not a ProxyConfig: it must be a mapping of ProxyConfig fields (e.g. \
             holdApplicationUntilProxyStarts: true), not {}",
            kind_of(&other)
        )),
    }
}

/// Whether `[`/`{` nest deeper than `limit`, skipping quoted text and comments. The scan is
/// rough on purpose: an apostrophe or `#` inside plain text makes it skip some text, which
/// under-counts (the YAML parser's own recursion limit still applies). It over-counts only
/// for more than `limit` unbalanced brackets in a block scalar, or in quoted text that
/// follows such an apostrophe, which no ProxyConfig has.
fn flow_depth_exceeds(text: &str, limit: usize) -> bool {
    let mut depth = 0usize;
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b'#' => {
                bytes.by_ref().find(|b| *b == b'\n');
            }
            b'\'' => {
                bytes.by_ref().find(|b| *b == b'\'');
            }
            b'"' => {
                while let Some(b) = bytes.next() {
                    match b {
                        b'\\' => {
                            bytes.next();
                        }
                        b'"' => break,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    false
}
