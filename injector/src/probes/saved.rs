//! The JSON form of one saved prober (one value of `ISTIO_KUBE_APP_PROBERS`), declared in
//! the order of Istio's Go types so that the text matches Istio's. See the module
//! documentation of [`super`] for the shape.
//!
//! Optional fields are `Option`s that are left out only when `None`, so an explicitly empty
//! value survives the trip through the JSON; Go's `omitempty` would drop it.

use k8s_openapi::api::core::v1::{GRPCAction, HTTPGetAction, HTTPHeader, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SavedProber {
    #[serde(rename = "httpGet", default, skip_serializing_if = "Option::is_none")]
    http_get: Option<SavedHttpGet>,
    #[serde(rename = "tcpSocket", default, skip_serializing_if = "Option::is_none")]
    tcp_socket: Option<SavedTcpSocket>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grpc: Option<SavedGrpc>,
    /// Go's `omitempty` on an int32: 0 and unset are both left out.
    #[serde(rename = "timeoutSeconds", default, skip_serializing_if = "is_zero")]
    timeout_seconds: i32,
    /// Skiff only: the port name the pod used, when it used one.
    #[serde(
        rename = "skiffPortName",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    skiff_port_name: Option<String>,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

/// The original handler of a slot, in its saved form.
pub(crate) enum SavedAction {
    Http(SavedHttpGet),
    Tcp(SavedTcpSocket),
    Grpc(SavedGrpc),
}

/// A saved handler turned back into the pod's own type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Restored {
    Http(HTTPGetAction),
    Tcp(TCPSocketAction),
    Grpc(GRPCAction),
}

impl SavedProber {
    pub(crate) fn new(
        action: SavedAction,
        timeout_seconds: i32,
        port_name: Option<String>,
    ) -> Self {
        let mut prober = Self {
            http_get: None,
            tcp_socket: None,
            grpc: None,
            timeout_seconds,
            skiff_port_name: port_name,
        };
        match action {
            SavedAction::Http(h) => prober.http_get = Some(h),
            SavedAction::Tcp(t) => prober.tcp_socket = Some(t),
            SavedAction::Grpc(g) => prober.grpc = Some(g),
        }
        prober
    }

    /// The handler as the pod had it. The error completes "the prober of <path> ...".
    pub(crate) fn into_restored(self) -> Result<Restored, String> {
        let port = |saved: IntOrString, name: Option<String>| match name {
            Some(name) => IntOrString::String(name),
            None => saved,
        };
        let name = self.skiff_port_name;
        match (self.http_get, self.tcp_socket, self.grpc) {
            (Some(h), None, None) => Ok(Restored::Http(HTTPGetAction {
                host: h.host,
                http_headers: h.http_headers.map(|headers| {
                    headers
                        .into_iter()
                        .map(|SavedHeader { name, value }| HTTPHeader { name, value })
                        .collect()
                }),
                path: h.path,
                port: port(h.port, name),
                protocol: h.protocol,
                scheme: h.scheme,
            })),
            (None, Some(t), None) => Ok(Restored::Tcp(TCPSocketAction {
                host: t.host,
                port: port(t.port, name),
            })),
            (None, None, Some(g)) => Ok(Restored::Grpc(GRPCAction {
                mode: g.mode,
                port: g.port,
                service: g.service,
            })),
            (None, None, None) => Err("has none of httpGet, tcpSocket and grpc".to_owned()),
            _ => Err("has more than one of httpGet, tcpSocket and grpc".to_owned()),
        }
    }
}

/// Istio's order: path, port, host, scheme, httpHeaders; `protocol` (Kubernetes 1.37,
/// unknown to Istio) comes last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SavedHttpGet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    port: IntOrString,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scheme: Option<String>,
    #[serde(
        rename = "httpHeaders",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    http_headers: Option<Vec<SavedHeader>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    protocol: Option<String>,
}

impl SavedHttpGet {
    /// `port` is the resolved number; the original scheme is kept (HTTPS stays HTTPS here).
    pub(crate) fn new(original: &HTTPGetAction, port: i32) -> Self {
        Self {
            path: original.path.clone(),
            port: IntOrString::Int(port),
            host: original.host.clone(),
            scheme: original.scheme.clone(),
            http_headers: original.http_headers.as_ref().map(|headers| {
                headers
                    .iter()
                    .map(|h| SavedHeader {
                        name: h.name.clone(),
                        value: h.value.clone(),
                    })
                    .collect()
            }),
            protocol: original.protocol.clone(),
        }
    }
}

/// Both fields are always written, as in Go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SavedHeader {
    #[serde(default)]
    name: String,
    #[serde(default)]
    value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SavedTcpSocket {
    port: IntOrString,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    host: Option<String>,
}

impl SavedTcpSocket {
    pub(crate) fn new(original: &TCPSocketAction, port: i32) -> Self {
        Self {
            port: IntOrString::Int(port),
            host: original.host.clone(),
        }
    }
}

/// Go declares `service` without `omitempty`, so an unset service is written as `null`;
/// `mode` (Kubernetes 1.37, unknown to Istio) comes last and only when set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SavedGrpc {
    port: i32,
    #[serde(default)]
    service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mode: Option<String>,
}

impl SavedGrpc {
    pub(crate) fn new(original: &GRPCAction) -> Self {
        Self {
            port: original.port,
            service: original.service.clone(),
            mode: original.mode.clone(),
        }
    }
}
