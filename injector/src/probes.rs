//! The app-probe rewrite (spec/injector.md, section 2, "Probe rewrite").
//!
//! With mutual TLS on, the kubelet's probes cannot reach the application any more: the
//! proxy captures every inbound connection and expects a mesh client certificate, which
//! the kubelet does not have (issues #4429, #9150, #18467 in spec section 6). Istio's answer,
//! kept here, is to point each probe at the proxy's status port, which the proxy excludes
//! from capture (`-d`), and to let the proxy run the original probe against the app from
//! inside the pod. [`rewrite`] does the pointing and returns the originals as the JSON the
//! injector puts into the proxy's `ISTIO_KUBE_APP_PROBERS` environment variable; the proxy
//! serves each path from it. [`restore`] undoes the rewrite for uninject and re-injection.
//!
//! # What is rewritten
//!
//! Every container except `istio-proxy`, and every init container with
//! `restartPolicy: Always` (a native sidecar, such as another mesh's agent: issue #53786)
//! except `istio-proxy`. Istio walks all init containers, but Kubernetes refuses probes and
//! lifecycle hooks on the other init containers, so leaving them alone lets the API server
//! report the user's own mistake instead of a rewritten one.
//!
//! | slot | handlers rewritten | new path |
//! |---|---|---|
//! | `readinessProbe` | httpGet, tcpSocket, grpc | `/app-health/<container>/readyz` |
//! | `livenessProbe` | httpGet, tcpSocket, grpc | `/app-health/<container>/livez` |
//! | `startupProbe` | httpGet, tcpSocket, grpc | `/app-health/<container>/startupz` |
//! | `lifecycle.postStart` | httpGet, tcpSocket | `/app-lifecycle/<container>/poststartz` |
//! | `lifecycle.preStop` | httpGet, tcpSocket | `/app-lifecycle/<container>/prestopz` |
//!
//! Hooks are rewritten together with the probes, under the same switch, as in Istio.
//! When a slot has several handlers (which the API server refuses), the first of httpGet,
//! tcpSocket, grpc is the one rewritten, as in Istio, and the others are left as they are.
//! The rewritten slot is an httpGet on the status port with the new path. Everything else
//! about the slot stays: the probe's timing fields (initialDelaySeconds, periodSeconds,
//! timeoutSeconds, successThreshold, failureThreshold, terminationGracePeriodSeconds) and,
//! for an httpGet, its `host` and `httpHeaders` (the proxy forwards the kubelet's headers to
//! the app, so a `Host` header still reaches it). An HTTPS scheme becomes HTTP, because the
//! kubelet now talks to the proxy, which speaks plain HTTP on the status port; the proxy
//! uses HTTPS towards the app. For the same reason the httpGet `protocol` field
//! (Kubernetes 1.37) is dropped from the rewritten probe and kept in the JSON.
//!
//! Left alone: exec, sleep and empty slots, and slots that already point at the status
//! port (a named port is resolved first), so rewriting an already rewritten pod changes
//! nothing. The injector still strips a previous injection with [`restore`] first, so that
//! the JSON stays complete. A status port of 0 means there is no status server to answer,
//! so nothing is rewritten.
//!
//! # `ISTIO_KUBE_APP_PROBERS`
//!
//! A JSON object from the new path to the original handler, with named ports resolved to
//! numbers against the container's `ports` (the first port of that name, as the kubelet
//! does). This is Istio's `KubeAppProbers` type (pkg/kube/inject/app_probe.go, read by
//! pilot-agent's status server). Apart from the Skiff additions listed below, the text is
//! byte for byte what Istio's Go encoder writes: keys of the outer object sorted, fields in
//! Go's order, `<`, `>`, `&`, U+2028 and U+2029 escaped as `\u003c` and so on.
//!
//! ```json
//! {
//!   "/app-health/web/livez": {"tcpSocket": {"port": 3306}, "timeoutSeconds": 1},
//!   "/app-health/web/readyz": {
//!     "httpGet": {"path": "/ready", "port": 8080, "host": "10.0.0.1", "scheme": "HTTPS",
//!                 "httpHeaders": [{"name": "Host", "value": "web.example"}]},
//!     "timeoutSeconds": 3,
//!     "skiffPortName": "http"
//!   },
//!   "/app-health/web/startupz": {"grpc": {"port": 9090, "service": null}, "timeoutSeconds": 1},
//!   "/app-lifecycle/web/prestopz": {"httpGet": {"path": "/shutdown", "port": 8080}}
//! }
//! ```
//!
//! - Exactly one of `httpGet` (fields `path`, `port`, `host`, `scheme`, `httpHeaders`, then
//!   `protocol`), `tcpSocket` (`port`, `host`) or `grpc` (`port`, `service`, which Go writes
//!   as `null` when unset, then `mode`). `protocol` and `mode` are Kubernetes 1.37 fields
//!   that Istio's Go types do not have yet; they are written only when set. `port` is always
//!   a number. Optional fields are left out when unset.
//! - `timeoutSeconds`: the probe's, left out when unset or 0 (hooks have none); the proxy
//!   uses it as the timeout of its own request to the app.
//! - `skiffPortName` (Skiff only; Istio's agent ignores unknown fields): the port name the
//!   pod used, present only when the original port was a name, so that [`restore`] can put
//!   the name back. JSON written by Istio lacks it, and restoring from it yields the number.
//! - Where Istio's encoder would drop an explicitly empty value (`path: ""`, `host: ""`,
//!   `httpHeaders: []`), Skiff writes it, so that [`restore`] can tell it from an absent one.
//!
//! Everything here is pure: typed pod data in, typed pod data and a string out.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, GRPCAction, HTTPGetAction, LifecycleHandler, PodSpec, Probe,
    TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use thiserror::Error;

pub(crate) mod go_json;
mod restore;
mod saved;
#[cfg(test)]
mod tests;

pub use restore::restore;
use saved::{SavedAction, SavedGrpc, SavedHttpGet, SavedProber, SavedTcpSocket};

/// The environment variable of the proxy container that carries [`rewrite`]'s JSON.
pub const APP_PROBERS_ENV: &str = "ISTIO_KUBE_APP_PROBERS";

/// The proxy's own container; its probes target the proxy itself and are never rewritten.
const PROXY_CONTAINER: &str = "istio-proxy";

/// One probe or hook of a container, named as in the pod spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Slot {
    Readiness,
    Liveness,
    Startup,
    PostStart,
    PreStop,
}

impl Slot {
    /// Every slot, in the order [`rewrite`] visits them (which decides which error a pod
    /// with several problems gets).
    pub const ALL: [Slot; 5] = [
        Slot::Readiness,
        Slot::Liveness,
        Slot::Startup,
        Slot::PostStart,
        Slot::PreStop,
    ];

    /// The field in the container spec, for messages.
    pub fn field(self) -> &'static str {
        match self {
            Self::Readiness => "readinessProbe",
            Self::Liveness => "livenessProbe",
            Self::Startup => "startupProbe",
            Self::PostStart => "lifecycle.postStart",
            Self::PreStop => "lifecycle.preStop",
        }
    }

    /// The path the proxy serves this slot of `container` on (Istio's `FormatProberURL`).
    pub fn path(self, container: &str) -> String {
        format!("/{}/{container}/{}", self.prefix(), self.suffix())
    }

    fn prefix(self) -> &'static str {
        if self.is_hook() {
            "app-lifecycle"
        } else {
            "app-health"
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Self::Readiness => "readyz",
            Self::Liveness => "livez",
            Self::Startup => "startupz",
            Self::PostStart => "poststartz",
            Self::PreStop => "prestopz",
        }
    }

    /// Lifecycle hooks have no gRPC handler and no timeout.
    fn is_hook(self) -> bool {
        matches!(self, Self::PostStart | Self::PreStop)
    }

    /// The inverse of [`Slot::path`]: the container and slot of a path, if it is one. The
    /// container part must be non-empty and contain no `/`, as the proxy requires.
    pub fn parse_path(path: &str) -> Option<(&str, Slot)> {
        let rest = path.strip_prefix('/')?;
        let (prefix, rest) = rest.split_once('/')?;
        let (container, suffix) = rest.rsplit_once('/')?;
        if container.is_empty() || container.contains('/') {
            return None;
        }
        let slot = Slot::ALL
            .into_iter()
            .find(|s| s.prefix() == prefix && s.suffix() == suffix)?;
        Some((container, slot))
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.field())
    }
}

/// Why a pod's probes cannot be rewritten, or why saved probers cannot be put back. The
/// webhook rejects the pod with this message, so it says what to change.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProbeError {
    /// The kubelet would fail such a probe too; rewriting it would hide that behind a
    /// proxy error at run time.
    #[error(
        "container {container}: {slot} uses the port name {port:?}, but the container has no \
         port of that name ({}); add it to the container's ports or use the port number",
        known_names(.known)
    )]
    UnknownPortName {
        container: String,
        slot: Slot,
        port: String,
        /// The container's port names, in the order declared.
        known: Vec<String>,
    },
    #[error("container {container}: {slot} port {port} is not a port number (1-65535)")]
    InvalidPort {
        container: String,
        slot: Slot,
        port: i64,
    },
    #[error(
        "container {container}: {slot} port {name:?} is containerPort {container_port}, which \
         is not a port number (1-65535)"
    )]
    InvalidNamedPort {
        container: String,
        slot: Slot,
        name: String,
        container_port: i32,
    },
    /// The name becomes one segment of the path the kubelet requests.
    #[error(
        "container name {container:?} cannot be used in the probe path {}: use lowercase \
         letters, digits and '-', as Kubernetes requires",
        .slot.path(.container)
    )]
    ContainerName { container: String, slot: Slot },
    /// Two containers would share probe paths, and the proxy could serve only one of them.
    #[error(
        "two containers are named {container:?}; their probe paths (/app-health/{container}/...) \
         would collide. Kubernetes requires container names to be unique across containers and \
         initContainers"
    )]
    DuplicateContainer { container: String },
    #[error("{APP_PROBERS_ENV} is not a JSON object of app probers: {reason}")]
    SavedJson { reason: String },
    #[error(
        "{APP_PROBERS_ENV}: {path:?} is not an app probe path; expected \
         /app-health/<container>/{{readyz,livez,startupz}} or \
         /app-lifecycle/<container>/{{poststartz,prestopz}}"
    )]
    SavedPath { path: String },
    #[error("{APP_PROBERS_ENV}: the prober of {path} {reason}")]
    SavedProber { path: String, reason: String },
    /// Serialising these plain types cannot fail; the variant keeps a future field from
    /// ever turning into a panic.
    #[error("could not write {APP_PROBERS_ENV}: {reason}")]
    Encode { reason: String },
}

fn known_names(names: &[String]) -> String {
    if names.is_empty() {
        "it has no named ports".to_owned()
    } else {
        format!("its port names: {}", names.join(", "))
    }
}

/// Points every probe and hook of the app containers at the proxy's status port (see the
/// module documentation) and returns the originals as `ISTIO_KUBE_APP_PROBERS`, or `None`
/// when nothing was rewritten. On error `spec` is left unchanged.
pub fn rewrite(spec: &mut PodSpec, status_port: u16) -> Result<Option<String>, ProbeError> {
    if status_port == 0 {
        return Ok(None);
    }
    let mut out = spec.clone();
    let mut saved = BTreeMap::new();
    let mut names = BTreeSet::new();
    for container in app_containers(&mut out) {
        if !names.insert(container.name.clone()) {
            return Err(ProbeError::DuplicateContainer {
                container: container.name.clone(),
            });
        }
        rewrite_container(container, status_port, &mut saved)?;
    }
    if saved.is_empty() {
        return Ok(None);
    }
    let json = go_json::to_string(&saved).map_err(|e| ProbeError::Encode {
        reason: e.to_string(),
    })?;
    *spec = out;
    Ok(Some(json))
}

/// The containers [`rewrite`] works on, init containers first (Istio's order).
fn app_containers(spec: &mut PodSpec) -> impl Iterator<Item = &mut Container> {
    let sidecars = spec
        .init_containers
        .iter_mut()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    sidecars
        .chain(spec.containers.iter_mut())
        .filter(|c| c.name != PROXY_CONTAINER)
}

/// The handler of a slot that the rewrite replaces.
enum Original<'a> {
    Http(&'a HTTPGetAction),
    Tcp(&'a TCPSocketAction),
    Grpc(&'a GRPCAction),
}

impl<'a> Original<'a> {
    /// Istio's precedence: httpGet, then tcpSocket, then grpc.
    fn of_probe(probe: &'a Probe) -> Option<Self> {
        if let Some(h) = &probe.http_get {
            Some(Self::Http(h))
        } else if let Some(t) = &probe.tcp_socket {
            Some(Self::Tcp(t))
        } else {
            probe.grpc.as_ref().map(Self::Grpc)
        }
    }

    fn of_hook(hook: &'a LifecycleHandler) -> Option<Self> {
        if let Some(h) = &hook.http_get {
            Some(Self::Http(h))
        } else {
            hook.tcp_socket.as_ref().map(Self::Tcp)
        }
    }
}

/// Which handler field a rewrite replaced, so that it can be cleared.
#[derive(Clone, Copy)]
enum Kind {
    Http,
    Tcp,
    Grpc,
}

/// One slot's rewrite, worked out before anything is changed.
struct Plan {
    kind: Kind,
    saved: SavedProber,
    probe: HTTPGetAction,
}

/// The facts about a container that resolving a port needs.
struct Context<'a> {
    container: &'a str,
    ports: &'a [ContainerPort],
    status_port: u16,
}

fn rewrite_container(
    container: &mut Container,
    status_port: u16,
    saved: &mut BTreeMap<String, SavedProber>,
) -> Result<(), ProbeError> {
    let Container {
        name,
        ports,
        readiness_probe,
        liveness_probe,
        startup_probe,
        lifecycle,
        ..
    } = container;
    let ctx = Context {
        container: name,
        ports: ports.as_deref().unwrap_or_default(),
        status_port,
    };
    let (post_start, pre_stop) = match lifecycle {
        Some(l) => (&mut l.post_start, &mut l.pre_stop),
        None => (&mut None, &mut None),
    };
    for (slot, probe) in [
        (Slot::Readiness, readiness_probe),
        (Slot::Liveness, liveness_probe),
        (Slot::Startup, startup_probe),
    ] {
        let Some(probe) = probe else { continue };
        let Some(original) = Original::of_probe(probe) else {
            continue;
        };
        let timeout = probe.timeout_seconds.unwrap_or(0);
        if let Some(plan) = plan(&ctx, slot, original, timeout)? {
            saved.insert(slot.path(ctx.container), plan.saved);
            match plan.kind {
                Kind::Http => {}
                Kind::Tcp => probe.tcp_socket = None,
                Kind::Grpc => probe.grpc = None,
            }
            probe.http_get = Some(plan.probe);
        }
    }
    for (slot, hook) in [(Slot::PostStart, post_start), (Slot::PreStop, pre_stop)] {
        let Some(hook) = hook else { continue };
        let Some(original) = Original::of_hook(hook) else {
            continue;
        };
        if let Some(plan) = plan(&ctx, slot, original, 0)? {
            saved.insert(slot.path(ctx.container), plan.saved);
            if let Kind::Tcp = plan.kind {
                hook.tcp_socket = None;
            }
            hook.http_get = Some(plan.probe);
        }
    }
    Ok(())
}

/// `None` when the handler already targets the status port.
fn plan(
    ctx: &Context<'_>,
    slot: Slot,
    original: Original<'_>,
    timeout_seconds: i32,
) -> Result<Option<Plan>, ProbeError> {
    let (port, port_name) = match &original {
        Original::Http(h) => resolve(ctx, slot, &h.port)?,
        Original::Tcp(t) => resolve(ctx, slot, &t.port)?,
        Original::Grpc(g) => (check_number(ctx, slot, g.port)?, None),
    };
    if port == i32::from(ctx.status_port) {
        return Ok(None);
    }
    if !is_path_segment(ctx.container) {
        return Err(ProbeError::ContainerName {
            container: ctx.container.to_owned(),
            slot,
        });
    }
    let path = slot.path(ctx.container);
    let status = IntOrString::Int(i32::from(ctx.status_port));
    let (kind, handler, probe) = match original {
        Original::Http(h) => {
            let scheme = match h.scheme.as_deref() {
                Some("HTTPS") => Some("HTTP".to_owned()),
                _ => h.scheme.clone(),
            };
            let probe = HTTPGetAction {
                path: Some(path),
                port: status,
                scheme,
                protocol: None,
                ..h.clone()
            };
            (
                Kind::Http,
                SavedAction::Http(SavedHttpGet::new(h, port)),
                probe,
            )
        }
        Original::Tcp(t) => {
            let probe = new_http_get(path, status);
            (
                Kind::Tcp,
                SavedAction::Tcp(SavedTcpSocket::new(t, port)),
                probe,
            )
        }
        Original::Grpc(g) => {
            let probe = new_http_get(path, status);
            (Kind::Grpc, SavedAction::Grpc(SavedGrpc::new(g)), probe)
        }
    };
    let saved = SavedProber::new(handler, timeout_seconds, port_name);
    Ok(Some(Plan { kind, saved, probe }))
}

/// What a tcpSocket or grpc slot becomes: Istio starts from an empty action, so nothing of
/// the original (such as a tcpSocket `host`) is carried over.
fn new_http_get(path: String, port: IntOrString) -> HTTPGetAction {
    HTTPGetAction {
        path: Some(path),
        port,
        ..HTTPGetAction::default()
    }
}

/// The port number and, for a named port, the name as written.
fn resolve(
    ctx: &Context<'_>,
    slot: Slot,
    port: &IntOrString,
) -> Result<(i32, Option<String>), ProbeError> {
    match port {
        IntOrString::Int(number) => Ok((check_number(ctx, slot, *number)?, None)),
        IntOrString::String(name) => {
            let Some(found) = ctx.ports.iter().find(|p| p.name.as_ref() == Some(name)) else {
                return Err(ProbeError::UnknownPortName {
                    container: ctx.container.to_owned(),
                    slot,
                    port: name.clone(),
                    known: ctx.ports.iter().filter_map(|p| p.name.clone()).collect(),
                });
            };
            if !(1..=65535).contains(&found.container_port) {
                return Err(ProbeError::InvalidNamedPort {
                    container: ctx.container.to_owned(),
                    slot,
                    name: name.clone(),
                    container_port: found.container_port,
                });
            }
            Ok((found.container_port, Some(name.clone())))
        }
    }
}

fn check_number(ctx: &Context<'_>, slot: Slot, port: i32) -> Result<i32, ProbeError> {
    if (1..=65535).contains(&port) {
        Ok(port)
    } else {
        Err(ProbeError::InvalidPort {
            container: ctx.container.to_owned(),
            slot,
            port: i64::from(port),
        })
    }
}

/// Kubernetes container names are DNS labels; anything else could change the meaning of
/// the path (a `/`, `..`, `?`), so it is refused rather than escaped.
fn is_path_segment(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}
