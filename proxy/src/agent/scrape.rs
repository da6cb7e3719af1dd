//! The merged metrics endpoint: the proxy's own metrics followed by the application's, as
//! named by `ISTIO_PROMETHEUS_ANNOTATIONS` (injector/src/prometheus.rs documents the writing
//! side).
//!
//! The variable is Istio's `PrometheusScrapeConfiguration`:
//! `{"scrape":"true","path":"/metrics","port":"8080"}`, optionally with
//! `"targets":[{"port":"8080","path":"/metrics"},...]` and Skiff's `skiffAnnotations` (which
//! the proxy ignores). Read as Istio's agent reads it: a false `scrape` turns app scraping
//! off; without targets, the port defaults to 80 and the path to `/metrics`. One Skiff rule
//! on top: a value whose `scrape`, `path` and `port` are all empty and that has no targets
//! means "do not scrape the app" (Skiff's injector writes that for e.g.
//! `prometheus.io/path: ""`, to keep the annotation for uninjection).
//!
//! A failing app scrape never fails the response: the proxy's metrics are still served,
//! the failure is logged and counted in `skiff_agent_app_scrape_failures_total`.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST, HeaderName, USER_AGENT};
use hyper::{HeaderMap, Request, StatusCode};
use serde::Deserialize;
use thiserror::Error;

use super::Agent;
use crate::admin::http::{self, Fetched, Overflow, Protocol, Reply};
use crate::metrics::{Format, strip_openmetrics_eof};

/// The environment variable the injector fills.
pub const PROMETHEUS_ENV: &str = "ISTIO_PROMETHEUS_ANNOTATIONS";

/// Istio's cap on one application exposition, so that a runaway exporter cannot make the
/// proxy buffer without bound.
pub const MAX_APP_METRICS_BYTES: usize = 10 * 1024 * 1024;

const DEFAULT_PORT: u16 = 80;
const DEFAULT_PATH: &str = "/metrics";
/// Prometheus sends its scrape timeout in this header; the app scrape must end before it.
const SCRAPE_TIMEOUT_HEADER: HeaderName =
    HeaderName::from_static("x-prometheus-scrape-timeout-seconds");
/// Part of Prometheus' timeout left for writing the merged answer.
const SCRAPE_TIMEOUT_SHARE: f64 = 0.9;

/// Ports of the proxy that cannot be an application's metrics port (Istio's list): they
/// would reach the proxy's own listeners or count its metrics twice.
const RESERVED_PORTS: [u16; 9] = [
    15000, 15001, 15004, 15006, 15008, 15020, 15021, 15053, 15090,
];

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScrapeConfigError {
    #[error("{PROMETHEUS_ENV} is not a Prometheus scrape configuration in JSON: {0}")]
    Json(String),
    #[error(
        "{PROMETHEUS_ENV}: the metrics port {port:?} {reason}; fix the pod's prometheus.io/port or \
         prometheus.istio.io/scrape-targets annotation"
    )]
    Port { port: String, reason: String },
}

/// One application metrics endpoint, on the app's host (127.0.0.1 or ::1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeTarget {
    pub port: u16,
    /// Starts with `/`; may carry a query.
    pub path: String,
}

/// The application endpoints to merge, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeConfig {
    pub targets: Vec<ScrapeTarget>,
}

#[derive(Debug, Deserialize)]
struct Raw {
    #[serde(default)]
    scrape: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    port: String,
    #[serde(default)]
    targets: Vec<RawTarget>,
}

#[derive(Debug, Deserialize)]
struct RawTarget {
    #[serde(default)]
    port: String,
    #[serde(default)]
    path: String,
}

impl ScrapeConfig {
    /// Reads the variable's value (see the module documentation); `None` when the app is not
    /// to be scraped. `status_port` is the agent's own port, which must not be a target.
    pub fn parse(json: &str, status_port: u16) -> Result<Option<ScrapeConfig>, ScrapeConfigError> {
        if json.trim().is_empty() {
            return Ok(None);
        }
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| ScrapeConfigError::Json(e.to_string()))?;
        if !value.is_object() {
            return Err(ScrapeConfigError::Json(
                "it is not a JSON object".to_owned(),
            ));
        }
        let raw: Raw =
            serde_json::from_value(value).map_err(|e| ScrapeConfigError::Json(e.to_string()))?;
        if is_go_false(&raw.scrape) {
            return Ok(None);
        }
        if raw.scrape.is_empty()
            && raw.path.is_empty()
            && raw.port.is_empty()
            && raw.targets.is_empty()
        {
            return Ok(None);
        }
        let written: Vec<(String, String)> = if raw.targets.is_empty() {
            vec![(raw.port, raw.path)]
        } else {
            raw.targets.into_iter().map(|t| (t.port, t.path)).collect()
        };
        let mut targets = Vec::with_capacity(written.len());
        for (port, path) in written {
            let port = if port.trim().is_empty() {
                DEFAULT_PORT
            } else {
                check_port(port.trim(), status_port)
                    .map_err(|reason| ScrapeConfigError::Port { port, reason })?
            };
            let path = match path.trim() {
                "" => DEFAULT_PATH.to_owned(),
                p if p.starts_with('/') => p.to_owned(),
                p => format!("/{p}"),
            };
            targets.push(ScrapeTarget { port, path });
        }
        Ok(Some(ScrapeConfig { targets }))
    }
}

/// Go's `strconv.ParseBool` false spellings, which is how the annotation is read.
fn is_go_false(value: &str) -> bool {
    matches!(value, "0" | "f" | "F" | "false" | "FALSE" | "False")
}

fn check_port(text: &str, status_port: u16) -> Result<u16, String> {
    let port = text
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| text.parse::<u16>().ok())
        .flatten()
        .filter(|p| *p > 0)
        .ok_or_else(|| "is not a port number (1-65535)".to_owned())?;
    if port == status_port {
        return Err(
            "is the agent's own port, where the merged metrics are served (a scrape loop)"
                .to_owned(),
        );
    }
    if RESERVED_PORTS.contains(&port) {
        return Err("is one of the proxy's own ports".to_owned());
    }
    Ok(port)
}

/// One target's answer, ready to be concatenated.
struct Exposition {
    format: Format,
    body: Bytes,
}

/// The answer to `GET /stats/prometheus` on the agent port.
pub(crate) async fn merged_metrics(agent: &Agent, incoming: &HeaderMap) -> Reply {
    let accept = incoming.get(ACCEPT).and_then(|v| v.to_str().ok());
    let requested = Format::negotiate(accept);
    let mut app = Vec::new();
    if let Some(config) = &agent.config.scrape {
        let timeout = scrape_timeout(incoming, agent.config.scrape_timeout);
        let mut scrapes = Vec::with_capacity(config.targets.len());
        for target in &config.targets {
            let address = SocketAddr::new(agent.config.metrics_host, target.port);
            let request = scrape_request(address, &target.path, requested, incoming);
            scrapes.push(tokio::spawn(scrape(address, request, timeout)));
        }
        for (target, scrape) in config.targets.iter().zip(scrapes) {
            let result = match scrape.await {
                Ok(result) => result,
                Err(e) => Err(format!("the scrape task failed: {e}")),
            };
            agent.metrics.app_scrape(result.is_ok());
            match result {
                Ok(exposition) => app.push(exposition),
                Err(reason) => tracing::warn!(
                    port = target.port,
                    path = %target.path,
                    %reason,
                    "scraping the application's metrics failed; serving the proxy's alone"
                ),
            }
        }
    }
    // The first answer's format wins, as in Istio's agent; if the app's endpoints disagree,
    // plain text is the one both can be read as.
    let format = match app.first() {
        None => requested,
        Some(first) if app.iter().all(|e| e.format == first.format) => first.format,
        Some(_) => Format::Text,
    };
    let mut out = agent.metrics.encode_unterminated(format).into_bytes();
    for exposition in &app {
        let body = strip_openmetrics_eof(&exposition.body);
        out.extend_from_slice(body);
        if !body.is_empty() && !body.ends_with(b"\n") {
            out.push(b'\n');
        }
    }
    if format == Format::OpenMetrics {
        out.extend_from_slice(b"# EOF\n");
    }
    http::response(StatusCode::OK, format.content_type(), out)
}

fn scrape_timeout(incoming: &HeaderMap, default: Duration) -> Duration {
    let from_prometheus = incoming
        .get(SCRAPE_TIMEOUT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s * SCRAPE_TIMEOUT_SHARE).ok());
    from_prometheus
        .unwrap_or(default)
        .max(Duration::from_millis(100))
}

/// The scrape request: Prometheus' user agent and timeout passed on, as Istio's agent does,
/// and an `Accept` that never asks for protobuf, which cannot be concatenated.
fn scrape_request(
    address: SocketAddr,
    path: &str,
    format: Format,
    incoming: &HeaderMap,
) -> Result<Request<Empty<Bytes>>, String> {
    let mut builder = Request::get(path)
        .header(HOST, host_header(address))
        .header(ACCEPT, format.upstream_accept());
    for name in [USER_AGENT, SCRAPE_TIMEOUT_HEADER] {
        if let Some(value) = incoming.get(&name) {
            builder = builder.header(name, value.clone());
        }
    }
    builder
        .body(Empty::new())
        .map_err(|e| format!("invalid scrape request for {path:?}: {e}"))
}

/// `localhost:<port>`, what Istio's agent sends (apps behind name-based virtual hosting
/// expect a name, not an address).
fn host_header(address: SocketAddr) -> String {
    format!("localhost:{}", address.port())
}

async fn scrape(
    address: SocketAddr,
    request: Result<Request<Empty<Bytes>>, String>,
    timeout: Duration,
) -> Result<Exposition, String> {
    let request = request?;
    let fetched: Fetched = http::fetch(
        address,
        None,
        Protocol::Http1,
        request,
        MAX_APP_METRICS_BYTES,
        Overflow::Fail,
        timeout,
    )
    .await
    .map_err(|e| format!("{address}: {e}"))?;
    if fetched.status != StatusCode::OK {
        return Err(format!("{address} answered {}", fetched.status));
    }
    let content_type = fetched
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let format = Format::of_content_type(content_type).ok_or_else(|| {
        format!("{address} answered in {content_type:?}, which cannot be merged as text")
    })?;
    Ok(Exposition {
        format,
        body: fetched.body,
    })
}
