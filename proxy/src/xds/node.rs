//! The `Node` the proxy presents to istiod, in the format of Istio's pilot-agent
//! (`pkg/bootstrap/config.go`, `pkg/model/proxy.go`), from the environment skiff-injector
//! gives the container and the downward-API files it mounts.
//!
//! - `id`: `sidecar~{INSTANCE_IP}~{POD_NAME}.{POD_NAMESPACE}~{POD_NAMESPACE}.svc.cluster.local`
//!   (the first IP of `INSTANCE_IP`; the last part is `ISTIO_META_DNS_DOMAIN` when set, where
//!   pilot-agent takes its `--domain` flag).
//! - `cluster`: Istio's service cluster: `PROXY_CONFIG.serviceCluster` when set, else by
//!   `PROXY_CONFIG.tracingServiceName` (default APP_LABEL_AND_NAMESPACE): `{app label}.{ns}`,
//!   else `{ISTIO_META_WORKLOAD_NAME}.{ns}`, else `istio-proxy.{ns}`.
//! - `metadata`: every `ISTIO_META_*` variable as a string without the prefix (those of
//!   `PROXY_CONFIG.proxyMetadata` first, the environment's winning), then: NAMESPACE, NAME,
//!   INSTANCE_IPS (comma-separated), SERVICE_ACCOUNT, LABELS and ANNOTATIONS (string maps),
//!   PROXY_CONFIG (the `PROXY_CONFIG` JSON as given; pilot-agent would first merge the mesh's
//!   `defaultConfig` into it), ISTIO_VERSION, CLUSTER_ID (default `Kubernetes`),
//!   INTERCEPTION_MODE (default `REDIRECT`), ENVOY_STATUS_PORT 15021 and
//!   ENVOY_PROMETHEUS_PORT 15090 (numbers, as Istio writes them). MESH_ID, WORKLOAD_NAME,
//!   OWNER, POD_PORTS, NODE_NAME, NETWORK, APP_CONTAINERS come through as `ISTIO_META_*`.
//! - ISTIO_VERSION is the version istiod generates configuration for: `ISTIO_META_ISTIO_VERSION`,
//!   else `ISTIO_VERSION`, else [`DEFAULT_ISTIO_VERSION`], the Istio release whose
//!   configuration Skiff is tested against.
//! - LABELS: `ISTIO_METAJSON_LABELS` (a JSON object), overridden by the downward-API file
//!   `/etc/istio/pod/labels` (`key="value"` lines), without `pod-template-hash`; the
//!   `istio-locality` label (`region.zone.subzone`) also sets `locality`. ANNOTATIONS: the same
//!   from `ISTIO_METAJSON_ANNOTATIONS` and `/etc/istio/pod/annotations`.
//! - `user_agent_name` `skiff`, `user_agent_version` this crate's version.
//!
//! `ENABLE_HBONE` is never passed on: Skiff cannot tunnel over HBONE, and istiod would answer
//! it with clusters and listeners Skiff must refuse.
//!
//! Not done: pilot-agent's other `ISTIO_METAJSON_*` variables (merged key by key into the
//! metadata), platform metadata (GCP, AWS), instance IPs from the network interfaces.

use std::collections::{BTreeMap, HashMap};
use std::io::ErrorKind;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use envoy_types::pb::envoy::config::core::v3::{Locality, Node, node::UserAgentVersionType};
use envoy_types::pb::google::protobuf::{ListValue, NullValue, Struct, Value, value::Kind};

/// Where the injector's downward-API volume puts the Pod's labels and annotations.
pub const POD_LABELS_FILE: &str = "/etc/istio/pod/labels";
pub const POD_ANNOTATIONS_FILE: &str = "/etc/istio/pod/annotations";
/// The Istio version Skiff reports when the environment names none.
pub const DEFAULT_ISTIO_VERSION: &str = "1.24.0";
pub const USER_AGENT_NAME: &str = "skiff";
/// The ports istiod is told the status and Prometheus listeners use.
pub const ENVOY_STATUS_PORT: u16 = 15021;
pub const ENVOY_PROMETHEUS_PORT: u16 = 15090;
const META_PREFIX: &str = "ISTIO_META_";
const LOCALITY_LABEL: &str = "istio-locality";
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// Why the node identity cannot be built; names the variable or file and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("environment variable {var} is not set; {hint}")]
    Missing {
        var: &'static str,
        hint: &'static str,
    },
    #[error("environment variable {var} is invalid: {reason}; {hint}")]
    Invalid {
        var: &'static str,
        reason: String,
        hint: &'static str,
    },
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// What [`node_from`] reads.
pub struct NodeSources<'a> {
    /// A variable's value.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// The names of the environment's variables, for the `ISTIO_META_*` pass-through.
    pub names: &'a [String],
    pub labels_file: &'a Path,
    pub annotations_file: &'a Path,
}

/// The node from `env`, the `ISTIO_META_*` names of the process environment and the
/// downward-API files at their usual paths.
pub fn node(env: &dyn Fn(&str) -> Option<String>) -> Result<Node, NodeError> {
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .collect();
    node_from(&NodeSources {
        env,
        names: &names,
        labels_file: Path::new(POD_LABELS_FILE),
        annotations_file: Path::new(POD_ANNOTATIONS_FILE),
    })
}

pub fn node_from(src: &NodeSources<'_>) -> Result<Node, NodeError> {
    let get = |name: &str| (src.env)(name).filter(|v| !v.is_empty());
    let required =
        |var: &'static str, hint: &'static str| get(var).ok_or(NodeError::Missing { var, hint });
    let pod = required(
        "POD_NAME",
        "set it from the downward API (fieldRef metadata.name), as skiff-injector does",
    )?;
    let namespace = required(
        "POD_NAMESPACE",
        "set it from the downward API (fieldRef metadata.namespace), as skiff-injector does",
    )?;
    let ip_hint = "set it to the Pod's IP (fieldRef status.podIP), or several separated by commas";
    let ips =
        instance_ips(&required("INSTANCE_IP", ip_hint)?).map_err(|reason| NodeError::Invalid {
            var: "INSTANCE_IP",
            reason,
            hint: ip_hint,
        })?;
    let proxy_config = match get("PROXY_CONFIG") {
        None => None,
        Some(json) => Some(json_object(&json).map_err(|reason| NodeError::Invalid {
            var: "PROXY_CONFIG",
            reason,
            hint: "give Istio's ProxyConfig as a JSON object, as skiff-injector writes it",
        })?),
    };

    let mut meta: HashMap<String, Value> = HashMap::new();
    if let Some(serde_json::Value::Object(pm)) =
        proxy_config.as_ref().and_then(|p| p.get("proxyMetadata"))
    {
        for (name, value) in pm {
            if let (Some(key), Some(value)) = (name.strip_prefix(META_PREFIX), value.as_str())
                && !key.is_empty()
            {
                meta.insert(key.to_owned(), string(value));
            }
        }
    }
    let mut names: Vec<&String> = src.names.iter().collect();
    names.sort();
    names.dedup();
    for name in names {
        if let Some(key) = name.strip_prefix(META_PREFIX)
            && !key.is_empty()
            && let Some(value) = (src.env)(name)
        {
            meta.insert(key.to_owned(), string(&value));
        }
    }
    // Skiff cannot tunnel over HBONE: asking for it would only bring configuration it refuses.
    meta.remove("ENABLE_HBONE");
    let meta_str = |meta: &HashMap<String, Value>, key: &str| match meta
        .get(key)
        .and_then(|v| v.kind.as_ref())
    {
        Some(Kind::StringValue(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };

    let mut labels = string_map(&get, "ISTIO_METAJSON_LABELS", src.labels_file)?;
    labels.remove(POD_TEMPLATE_HASH);
    let annotations = string_map(&get, "ISTIO_METAJSON_ANNOTATIONS", src.annotations_file)?;
    let locality = labels.get_mut(LOCALITY_LABEL).and_then(|value| {
        *value = value.replace('.', "/");
        locality(value)
    });

    let workload = meta_str(&meta, "WORKLOAD_NAME");
    let cluster = service_cluster(
        proxy_config.as_ref(),
        &labels,
        workload.as_deref(),
        &namespace,
    );
    let istio_version = meta_str(&meta, "ISTIO_VERSION")
        .or_else(|| get("ISTIO_VERSION"))
        .unwrap_or_else(|| DEFAULT_ISTIO_VERSION.to_owned());
    let domain =
        meta_str(&meta, "DNS_DOMAIN").unwrap_or_else(|| format!("{namespace}.svc.cluster.local"));
    let id = format!("sidecar~{}~{pod}.{namespace}~{domain}", ips[0]);

    let joined = ips
        .iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(",");
    meta.insert("NAMESPACE".into(), string(&namespace));
    meta.insert("NAME".into(), string(&pod));
    meta.insert("INSTANCE_IPS".into(), string(&joined));
    if let Some(sa) = get("SERVICE_ACCOUNT") {
        meta.insert("SERVICE_ACCOUNT".into(), string(&sa));
    }
    if !labels.is_empty() {
        meta.insert("LABELS".into(), string_struct(&labels));
    }
    if !annotations.is_empty() {
        meta.insert("ANNOTATIONS".into(), string_struct(&annotations));
    }
    if let Some(pc) = &proxy_config {
        meta.insert(
            "PROXY_CONFIG".into(),
            Value {
                kind: Some(Kind::StructValue(json_struct(pc))),
            },
        );
    }
    meta.insert("ISTIO_VERSION".into(), string(&istio_version));
    for (key, default) in [
        ("CLUSTER_ID", "Kubernetes"),
        ("INTERCEPTION_MODE", "REDIRECT"),
    ] {
        if meta_str(&meta, key).is_none() {
            meta.insert(key.into(), string(default));
        }
    }
    meta.insert("ENVOY_STATUS_PORT".into(), number(ENVOY_STATUS_PORT));
    meta.insert(
        "ENVOY_PROMETHEUS_PORT".into(),
        number(ENVOY_PROMETHEUS_PORT),
    );

    Ok(Node {
        id,
        cluster,
        metadata: Some(Struct { fields: meta }),
        locality,
        user_agent_name: USER_AGENT_NAME.to_owned(),
        user_agent_version_type: Some(UserAgentVersionType::UserAgentVersion(
            env!("CARGO_PKG_VERSION").to_owned(),
        )),
        ..Node::default()
    })
}

fn instance_ips(value: &str) -> Result<Vec<IpAddr>, String> {
    let mut ips: Vec<IpAddr> = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let ip = part
            .parse()
            .map_err(|_| format!("{part:?} is not an IP address"))?;
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    if ips.is_empty() {
        return Err(format!("{value:?} holds no IP address"));
    }
    Ok(ips)
}

/// Istio's service cluster (`getServiceCluster` in pilot-agent).
fn service_cluster(
    proxy_config: Option<&serde_json::Map<String, serde_json::Value>>,
    labels: &BTreeMap<String, String>,
    workload: Option<&str>,
    namespace: &str,
) -> String {
    let or_default = |name: &str| {
        if !name.is_empty() && name != "istio-proxy" {
            name.to_owned()
        } else if let Some(app) = labels.get("app") {
            format!("{app}.{namespace}")
        } else if let Some(workload) = workload {
            format!("{workload}.{namespace}")
        } else {
            format!("istio-proxy.{namespace}")
        }
    };
    let setting = |key: &str| {
        proxy_config
            .and_then(|p| p.get(key))
            .and_then(|v| v.as_str())
    };
    let canonical = || {
        [
            "service.istio.io/canonical-name",
            "app.kubernetes.io/name",
            "app",
        ]
        .iter()
        .find_map(|k| labels.get(*k).cloned())
        .unwrap_or_else(|| workload.unwrap_or("istio-proxy").to_owned())
    };
    if let Some(name) = setting("serviceCluster") {
        return or_default(name);
    }
    match setting("tracingServiceName") {
        Some("CANONICAL_NAME_ONLY") => or_default(&canonical()),
        Some("CANONICAL_NAME_AND_NAMESPACE") => format!("{}.{namespace}", canonical()),
        _ => or_default("istio-proxy"),
    }
}

/// `region/zone/sub_zone` (after the label's dots became slashes) as a locality.
fn locality(value: &str) -> Option<Locality> {
    if value.is_empty() {
        return None;
    }
    let mut parts = value.splitn(3, '/');
    Some(Locality {
        region: parts.next().unwrap_or_default().to_owned(),
        zone: parts.next().unwrap_or_default().to_owned(),
        sub_zone: parts.next().unwrap_or_default().to_owned(),
    })
}

/// A string map from a JSON variable, overridden by a downward-API file when there is one.
fn string_map(
    get: &dyn Fn(&str) -> Option<String>,
    var: &'static str,
    file: &Path,
) -> Result<BTreeMap<String, String>, NodeError> {
    let mut map = match get(var) {
        None => BTreeMap::new(),
        Some(json) => serde_json::from_str(&json).map_err(|e| NodeError::Invalid {
            var,
            reason: e.to_string(),
            hint: "give a JSON object of strings",
        })?,
    };
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(map),
        Err(e) => {
            return Err(NodeError::File {
                path: file.to_owned(),
                reason: e.to_string(),
            });
        }
    };
    for (n, line) in text.lines().enumerate() {
        let Some((key, quoted)) = line.split_once('=') else {
            continue;
        };
        let value = unquote(quoted).map_err(|reason| NodeError::File {
            path: file.to_owned(),
            reason: format!("line {}: {reason}", n + 1),
        })?;
        map.insert(key.to_owned(), value);
    }
    Ok(map)
}

/// Go's `strconv.Unquote` for the double-quoted strings the kubelet writes (`%q`).
fn unquote(quoted: &str) -> Result<String, String> {
    let inner = quoted
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .filter(|_| quoted.len() >= 2)
        .ok_or_else(|| format!("{quoted} is not a double-quoted string"))?;
    let mut out: Vec<u8> = Vec::with_capacity(inner.len());
    let mut chars = inner.chars();
    let bad = || format!("{quoted} has an invalid escape");
    while let Some(c) = chars.next() {
        if c == '"' {
            return Err(format!("{quoted} has an unescaped quote"));
        }
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let escaped = chars.next().ok_or_else(bad)?;
        let mut hex = |n: usize| -> Result<u32, String> {
            let digits: String = chars.by_ref().take(n).collect();
            if digits.len() != n {
                return Err(bad());
            }
            u32::from_str_radix(&digits, 16).map_err(|_| bad())
        };
        match escaped {
            'a' => out.push(0x07),
            'b' => out.push(0x08),
            'f' => out.push(0x0c),
            'n' => out.push(b'\n'),
            'r' => out.push(b'\r'),
            't' => out.push(b'\t'),
            'v' => out.push(0x0b),
            '\\' => out.push(b'\\'),
            '"' => out.push(b'"'),
            'x' => out.push(u8::try_from(hex(2)?).map_err(|_| bad())?),
            'u' | 'U' => {
                let c = char::from_u32(hex(if escaped == 'u' { 4 } else { 8 })?).ok_or_else(bad)?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            '0'..='7' => {
                let rest: String = chars.by_ref().take(2).collect();
                let octal = format!("{escaped}{rest}");
                let byte = u8::from_str_radix(&octal, 8)
                    .ok()
                    .filter(|_| octal.len() == 3);
                out.push(byte.ok_or_else(bad)?);
            }
            _ => return Err(bad()),
        }
    }
    String::from_utf8(out).map_err(|_| format!("{quoted} is not UTF-8"))
}

fn json_object(json: &str) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::from_str(json) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err("it is not a JSON object".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

fn number(n: u16) -> Value {
    Value {
        kind: Some(Kind::NumberValue(f64::from(n))),
    }
}

fn string_struct(map: &BTreeMap<String, String>) -> Value {
    let fields = map.iter().map(|(k, v)| (k.clone(), string(v))).collect();
    Value {
        kind: Some(Kind::StructValue(Struct { fields })),
    }
}

fn json_struct(map: &serde_json::Map<String, serde_json::Value>) -> Struct {
    Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_value(v)))
            .collect(),
    }
}

fn json_value(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(NullValue::NullValue as i32),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(json_value).collect(),
        }),
        J::Object(map) => Kind::StructValue(json_struct(map)),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
