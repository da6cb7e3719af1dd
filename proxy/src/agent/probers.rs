//! `ISTIO_KUBE_APP_PROBERS`: the app's original probes, which the injector replaced with
//! `httpGet` probes on the agent port (injector/src/probes.rs documents the writing side).
//!
//! A JSON object from the agent path (`/app-health/<container>/readyz`, ...) to the original
//! handler: exactly one of `httpGet` (`path`, `port`, `host`, `scheme`, `httpHeaders`,
//! `protocol`), `tcpSocket` (`port`, `host`) or `grpc` (`port`, `service`, `mode`), plus
//! `timeoutSeconds`. Unknown fields (Skiff's `skiffPortName`) are ignored. Both Skiff's and
//! Istio's injectors write it, so the proxy reads what either writes; where Istio's agent
//! refuses the whole value (a bad path, a named port, several handlers in one entry), so does
//! Skiff, naming the entry, because a probe that cannot be run would keep the pod unready
//! with no explanation.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

/// The environment variable the injector fills.
pub const APP_PROBERS_ENV: &str = "ISTIO_KUBE_APP_PROBERS";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProbersError {
    #[error("{APP_PROBERS_ENV} is not a JSON object of app probers: {0}")]
    Json(String),
    #[error(
        "{APP_PROBERS_ENV}: {0:?} is not an app probe path; expected \
         /app-health/<container>/{{readyz,livez,startupz}} or /app-lifecycle/<container>/{{poststartz,prestopz}}"
    )]
    Path(String),
    #[error("{APP_PROBERS_ENV}: the prober of {path} {reason}")]
    Prober { path: String, reason: String },
}

/// All probes of the pod, by agent path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppProbers {
    probes: BTreeMap<String, AppProbe>,
}

impl AppProbers {
    /// Reads the variable's value; an empty value means no probes.
    pub fn parse(json: &str) -> Result<AppProbers, ProbersError> {
        if json.trim().is_empty() {
            return Ok(AppProbers::default());
        }
        let raw: BTreeMap<String, RawProber> =
            serde_json::from_str(json).map_err(|e| ProbersError::Json(e.to_string()))?;
        let mut probes = BTreeMap::new();
        for (path, prober) in raw {
            if !is_probe_path(&path) {
                return Err(ProbersError::Path(path));
            }
            let probe = prober.into_probe().map_err(|reason| ProbersError::Prober {
                path: path.clone(),
                reason,
            })?;
            probes.insert(path, probe);
        }
        Ok(AppProbers { probes })
    }

    pub fn get(&self, path: &str) -> Option<&AppProbe> {
        self.probes.get(path)
    }

    pub fn len(&self) -> usize {
        self.probes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.probes.is_empty()
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.probes.keys().map(String::as_str)
    }
}

/// Istio's pattern: `/(app-health|app-lifecycle)/<one segment>/(livez|readyz|startupz|prestopz|poststartz)`.
pub fn is_probe_path(path: &str) -> bool {
    let mut parts = path.split('/');
    let (Some(""), Some(prefix), Some(container), Some(suffix), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    matches!(prefix, "app-health" | "app-lifecycle")
        && !container.is_empty()
        && matches!(
            suffix,
            "livez" | "readyz" | "startupz" | "prestopz" | "poststartz"
        )
}

/// One original probe or hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppProbe {
    pub action: ProbeAction,
    /// The probe's `timeoutSeconds`; `None` when unset (hooks have none).
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    HttpGet(HttpGet),
    TcpSocket(TcpSocket),
    Grpc(Grpc),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGet {
    /// Always starts with `/`.
    pub path: String,
    pub port: u16,
    /// Where to connect instead of the pod (the probe's `host`).
    pub host: Option<String>,
    pub scheme: Scheme,
    /// The probe's `httpHeaders`, in order.
    pub headers: Vec<(String, String)>,
    /// Kubernetes' `protocol` field (`HTTP2` for an h2 probe); `None` means HTTP/1.1.
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSocket {
    pub port: u16,
    pub host: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grpc {
    pub port: u16,
    /// The service name for grpc.health.v1; empty (the server's overall health) when unset.
    pub service: String,
    /// Kubernetes' `mode` field; `None` is plaintext.
    pub mode: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawProber {
    #[serde(rename = "httpGet", default)]
    http_get: Option<RawHttpGet>,
    #[serde(rename = "tcpSocket", default)]
    tcp_socket: Option<RawTcpSocket>,
    #[serde(default)]
    grpc: Option<RawGrpc>,
    #[serde(rename = "timeoutSeconds", default)]
    timeout_seconds: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct RawHttpGet {
    #[serde(default)]
    path: Option<String>,
    port: Value,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    scheme: Option<String>,
    #[serde(rename = "httpHeaders", default)]
    http_headers: Option<Vec<RawHeader>>,
    #[serde(default)]
    protocol: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawHeader {
    #[serde(default)]
    name: String,
    #[serde(default)]
    value: String,
}

#[derive(Debug, Deserialize)]
struct RawTcpSocket {
    port: Value,
    #[serde(default)]
    host: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawGrpc {
    port: Value,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    mode: Option<String>,
}

impl RawProber {
    fn into_probe(self) -> Result<AppProbe, String> {
        let timeout = self
            .timeout_seconds
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(s.unsigned_abs()));
        let action = match (self.http_get, self.tcp_socket, self.grpc) {
            (Some(h), None, None) => ProbeAction::HttpGet(HttpGet {
                path: match h.path.as_deref() {
                    None | Some("") => "/".to_owned(),
                    Some(p) if p.starts_with('/') => p.to_owned(),
                    Some(p) => format!("/{p}"),
                },
                port: port(&h.port)?,
                host: h.host.filter(|h| !h.is_empty()),
                scheme: match h.scheme.as_deref().map(str::to_ascii_uppercase).as_deref() {
                    None | Some("") | Some("HTTP") => Scheme::Http,
                    Some("HTTPS") => Scheme::Https,
                    Some(_) => {
                        return Err(format!(
                            "has the scheme {:?}; expected HTTP or HTTPS",
                            h.scheme.unwrap_or_default()
                        ));
                    }
                },
                headers: h
                    .http_headers
                    .unwrap_or_default()
                    .into_iter()
                    .map(|RawHeader { name, value }| (name, value))
                    .collect(),
                protocol: h.protocol.filter(|p| !p.is_empty()),
            }),
            (None, Some(t), None) => ProbeAction::TcpSocket(TcpSocket {
                port: port(&t.port)?,
                host: t.host.filter(|h| !h.is_empty()),
            }),
            (None, None, Some(g)) => ProbeAction::Grpc(Grpc {
                port: port(&g.port)?,
                service: g.service.unwrap_or_default(),
                mode: g.mode.filter(|m| !m.is_empty()),
            }),
            (None, None, None) => return Err("has none of httpGet, tcpSocket and grpc".to_owned()),
            _ => return Err("has more than one of httpGet, tcpSocket and grpc".to_owned()),
        };
        Ok(AppProbe { action, timeout })
    }
}

/// A port number; the injector resolves named ports, so a name here cannot be resolved. A
/// string of digits (an IntOrString written as a string) is read as its number.
fn port(value: &Value) -> Result<u16, String> {
    let number = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<u64>().ok()
        }
        Value::String(s) => {
            return Err(format!(
                "uses the port name {s:?}; the injector resolves names to numbers, so this value was not written by it"
            ));
        }
        _ => None,
    };
    number
        .filter(|n| (1..=65535).contains(n))
        .and_then(|n| u16::try_from(n).ok())
        .ok_or_else(|| format!("has the port {value}, which is not a port number (1-65535)"))
}
