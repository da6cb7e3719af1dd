//! Running one original probe against the app, the way the kubelet would have, and turning
//! the result into the answer the kubelet reads from the agent: 200 when healthy, 503 (with
//! the reason in the body) when not.
//!
//! Where the probe goes (Istio's agent behaves the same): to the pod's own IP by default
//! (what the kubelet probes, so an app listening only on the pod IP stays healthy), or to
//! the probe's `host` when it names one. Connections to the pod itself leave from
//! 127.0.0.6 (`::6`), which skiff-init's rules never capture, so a probe reaches the app
//! directly instead of looping through the inbound listener (where mutual TLS would refuse
//! it).
//!
//! `scheme: HTTPS` probes (and gRPC probes in TLS mode) use the same request and the same
//! status rule over TLS, without verifying the app's certificate, as the kubelet does (see
//! [`tls`](super::tls)).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{HeaderMap, Request, StatusCode, Uri};

use super::grpc::{self, ServingStatus};
use super::probers::{AppProbe, Grpc, HttpGet, ProbeAction, Scheme, TcpSocket};
use super::tls::{self, Transport};
use super::{AgentConfig, PROBE_BODY_LIMIT};
use crate::admin::http::{
    self, Overflow, PASSTHROUGH_SOURCE_V4, PASSTHROUGH_SOURCE_V6, Protocol, Reply,
};

/// The kubelet's default `timeoutSeconds`.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Lifecycle hooks have no timeout of their own; the kubelet bounds them by the pod's
/// termination grace period, whose default is 30 s.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// A probe's result: `Ok` (healthy) with the body to return, or `Err` with the reason.
type Outcome = Result<Bytes, String>;

/// Runs `probe` (served at `path`) and answers the kubelet.
pub(crate) async fn answer(
    config: &AgentConfig,
    path: &str,
    probe: &AppProbe,
    incoming: &HeaderMap,
) -> Reply {
    let default = if path.starts_with("/app-lifecycle/") {
        DEFAULT_HOOK_TIMEOUT
    } else {
        DEFAULT_PROBE_TIMEOUT
    };
    let timeout = probe.timeout.unwrap_or(default);
    let outcome = match &probe.action {
        ProbeAction::HttpGet(h) => http_get(config, h, timeout, incoming).await,
        ProbeAction::TcpSocket(t) => tcp_socket(config, t, timeout).await,
        ProbeAction::Grpc(g) => grpc(config, g, timeout, incoming).await,
    };
    match outcome {
        Ok(body) => http::text(StatusCode::OK, body),
        Err(reason) => {
            tracing::info!(probe = path, %reason, "application probe failed");
            http::text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n"))
        }
    }
}

/// Where a probe connects and from which source address.
async fn target(
    config: &AgentConfig,
    host: Option<&str>,
    port: u16,
    timeout: Duration,
) -> Result<(SocketAddr, Option<IpAddr>), String> {
    let ip = match host {
        None => config.probe_destination,
        Some(host) => match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => ip,
            Err(_) => {
                let lookup = tokio::net::lookup_host((host, port));
                let mut addresses = tokio::time::timeout(timeout, lookup)
                    .await
                    .map_err(|_| format!("resolving {host:?} took longer than {timeout:?}"))?
                    .map_err(|e| format!("cannot resolve {host:?}: {e}"))?;
                addresses
                    .next()
                    .map(|a| a.ip())
                    .ok_or_else(|| format!("{host:?} has no address"))?
            }
        },
    };
    let to_self = ip.is_loopback() || ip == config.probe_destination;
    let source = to_self.then_some(match ip {
        IpAddr::V4(_) => IpAddr::V4(PASSTHROUGH_SOURCE_V4),
        IpAddr::V6(_) => IpAddr::V6(PASSTHROUGH_SOURCE_V6),
    });
    Ok((SocketAddr::new(ip, port), source))
}

async fn tcp_socket(config: &AgentConfig, probe: &TcpSocket, timeout: Duration) -> Outcome {
    let attempt = async {
        let (address, source) = target(config, probe.host.as_deref(), probe.port, timeout).await?;
        http::connect(address, source)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Bytes::new())
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "TCP connect to port {} took longer than {timeout:?}",
                probe.port
            ))
        })
}

/// Headers that belong to one connection and are not passed on to the app.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

async fn http_get(
    config: &AgentConfig,
    probe: &HttpGet,
    timeout: Duration,
    incoming: &HeaderMap,
) -> Outcome {
    let protocol = match probe
        .protocol
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("HTTP") | Some("HTTP1") | Some("HTTP/1.1") => Protocol::Http1,
        Some("HTTP2") | Some("H2C") | Some("HTTP/2") => Protocol::Http2,
        Some(_) => {
            return Err(format!(
                "the probe protocol {:?} is not supported; use HTTP2 or leave it unset",
                probe.protocol.as_deref().unwrap_or_default()
            ));
        }
    };
    let (transport, kind) = match probe.scheme {
        Scheme::Http => (Transport::Tcp, "HTTP"),
        Scheme::Https => (
            Transport::Tls {
                host: probe.host.as_deref(),
            },
            "HTTPS",
        ),
    };
    let (address, source) = target(config, probe.host.as_deref(), probe.port, timeout).await?;
    let authority = host_value(config, probe, address, incoming);
    let request = build_request(probe, protocol, &authority, incoming)?;
    let fetched = tls::fetch(
        (address, source),
        transport,
        protocol,
        request,
        PROBE_BODY_LIMIT,
        Overflow::Truncate,
        timeout,
    )
    .await
    .map_err(|e| format!("{kind} probe of {address}{}: {e}", probe.path))?;
    let status = fetched.status;
    // The kubelet's rule: 200-399 is success. A redirect is not followed; without its
    // Location the kubelet could not follow it either, so it becomes a plain 200.
    if (200..400).contains(&status.as_u16()) {
        Ok(fetched.body)
    } else {
        let body = String::from_utf8_lossy(&fetched.body);
        Err(format!(
            "{kind} probe of {address}{} answered {status}{}",
            probe.path,
            if body.trim().is_empty() {
                String::new()
            } else {
                format!(": {}", body.trim())
            }
        ))
    }
}

/// The `Host` the app sees: the kubelet's (which is the probe's `Host` header when it has
/// one), with the agent port replaced by the app's, as Istio's agent does; else the probe's
/// own `Host` header; else the address.
fn host_value(
    config: &AgentConfig,
    probe: &HttpGet,
    address: SocketAddr,
    incoming: &HeaderMap,
) -> String {
    if let Some(host) = incoming.get(header::HOST).and_then(|v| v.to_str().ok()) {
        return match host.rsplit_once(':') {
            Some((name, port)) if port.parse::<u16>().ok() == Some(config.status_port) => {
                format!("{name}:{}", probe.port)
            }
            _ => host.to_owned(),
        };
    }
    let saved = probe
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("host"));
    match saved {
        Some((_, value)) => value.clone(),
        None => address.to_string(),
    }
}

fn build_request(
    probe: &HttpGet,
    protocol: Protocol,
    authority: &str,
    incoming: &HeaderMap,
) -> Result<Request<Empty<Bytes>>, String> {
    let uri = match protocol {
        Protocol::Http1 => probe.path.clone(),
        // HTTP/2 carries the host in :authority and the scheme in :scheme, which hyper
        // takes from the URI.
        Protocol::Http2 => {
            let scheme = match probe.scheme {
                Scheme::Http => "http",
                Scheme::Https => "https",
            };
            format!("{scheme}://{authority}{}", probe.path)
        }
    };
    let uri: Uri = uri.parse().map_err(|e| {
        format!(
            "the probe path {:?} is not a valid request target: {e}",
            probe.path
        )
    })?;
    let mut request = Request::get(uri)
        .body(Empty::new())
        .map_err(|e| format!("invalid probe request: {e}"))?;
    let headers = request.headers_mut();
    // The kubelet's own headers (its User-Agent, Accept and the probe's httpHeaders) go
    // through as they came.
    for (name, value) in incoming {
        let skip = HOP_BY_HOP.contains(&name.as_str())
            || name == header::HOST
            || name == header::CONTENT_LENGTH
            || name == header::EXPECT;
        if !skip {
            headers.append(name.clone(), value.clone());
        }
    }
    // When the request did not come from a kubelet that sent them (someone curling the
    // agent), the probe's headers still apply.
    for (name, value) in &probe.headers {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            return Err(format!(
                "the probe header {name:?}: {value:?} is not a valid HTTP header"
            ));
        };
        if name != header::HOST && !incoming.contains_key(&name) {
            headers.append(name, value);
        }
    }
    if protocol == Protocol::Http1 {
        let host = HeaderValue::from_str(authority)
            .map_err(|_| format!("{authority:?} is not a valid Host header"))?;
        headers.insert(header::HOST, host);
        // One probe, one connection, as the kubelet does: no idle connection for the app to
        // time out.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if !headers.contains_key(header::USER_AGENT) {
        headers.insert(header::USER_AGENT, HeaderValue::from_static("kube-probe"));
    }
    Ok(request)
}

async fn grpc(
    config: &AgentConfig,
    probe: &Grpc,
    timeout: Duration,
    incoming: &HeaderMap,
) -> Outcome {
    // Only TLS changes anything; other modes (and none) are plaintext h2c.
    let transport = if probe
        .mode
        .as_deref()
        .is_some_and(|m| m.eq_ignore_ascii_case("TLS"))
    {
        Transport::Tls { host: None }
    } else {
        Transport::Tcp
    };
    let attempt = async {
        let target = target(config, None, probe.port, timeout).await?;
        grpc::check(
            target,
            transport,
            &probe.service,
            incoming.get(header::USER_AGENT),
            timeout,
        )
        .await
    };
    let status = tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("gRPC health check took longer than {timeout:?}")))?;
    match status {
        ServingStatus::Serving => Ok(Bytes::new()),
        other => Err(format!(
            "gRPC health check of port {} service {:?}: {}",
            probe.port,
            probe.service,
            other.name()
        )),
    }
}
