//! The agent port (15020): what Istio's pilot-agent serves beside Envoy, here served by the
//! proxy itself.
//!
//! | path | method | what |
//! |---|---|---|
//! | `/stats/prometheus`, `/metrics` | GET | the proxy's metrics followed by the app's (see [`scrape`]) |
//! | `/app-health/<container>/{readyz,livez,startupz}` | any | the app's original probe, run now (see [`probers`]) |
//! | `/app-lifecycle/<container>/{poststartz,prestopz}` | any | the app's original hook |
//! | `/healthz/ready` | GET | the proxy's readiness, as on the health port |
//! | `/drain` | POST, localhost only | start draining (the native sidecar's preStop hook) |
//! | `/quitquitquit` | POST, localhost only | exit (what Kubernetes Jobs call when done) |
//!
//! The port is reachable from the node (the kubelet probes it) and is excluded from capture,
//! so the endpoints that change the proxy's state answer only to this pod's own processes.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use thiserror::Error;
use tokio::net::TcpListener;

use crate::admin::ProcessControl;
use crate::admin::http::{self, Conn, Reply};
use crate::health::READY_PATH;
use crate::metrics::ProxyMetrics;

mod grpc;
mod probe;
pub mod probers;
pub mod scrape;
#[cfg(test)]
mod tests;
mod tls;

pub use probe::{DEFAULT_HOOK_TIMEOUT, DEFAULT_PROBE_TIMEOUT};
pub use probers::{APP_PROBERS_ENV, AppProbe, AppProbers, ProbersError};
pub use scrape::{PROMETHEUS_ENV, ScrapeConfig, ScrapeConfigError, ScrapeTarget};

/// Istio's default status port.
pub const DEFAULT_STATUS_PORT: u16 = 15020;
/// How long an app metrics scrape may take when Prometheus does not say (it sends its
/// timeout in `X-Prometheus-Scrape-Timeout-Seconds`).
pub const DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// The part of an app's probe answer passed back to the kubelet (Istio's limit).
pub const PROBE_BODY_LIMIT: usize = 10 * 1024;
/// Set to `true` to probe the app on localhost instead of the pod IP (Istio's switch).
pub const LEGACY_LOCALHOST_ENV: &str = "REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AgentConfigError {
    #[error(transparent)]
    Probers(#[from] ProbersError),
    #[error(transparent)]
    Scrape(#[from] ScrapeConfigError),
    #[error("INSTANCE_IP {0:?} is not an IP address")]
    InstanceIp(String),
}

/// What the agent needs to know about the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The agent's own port, so that an app scrape cannot target it and the kubelet's
    /// `Host: <ip>:15020` can be rewritten to the app's port.
    pub status_port: u16,
    pub probers: AppProbers,
    /// `None`: only the proxy's metrics are served.
    pub scrape: Option<ScrapeConfig>,
    /// Where probes without a `host` go: the pod IP, or localhost in legacy mode.
    pub probe_destination: IpAddr,
    /// Where the app's metrics are scraped (localhost, as Istio's agent does).
    pub metrics_host: IpAddr,
    pub scrape_timeout: Duration,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            status_port: DEFAULT_STATUS_PORT,
            probers: AppProbers::default(),
            scrape: None,
            probe_destination: IpAddr::V4(Ipv4Addr::LOCALHOST),
            metrics_host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            scrape_timeout: DEFAULT_SCRAPE_TIMEOUT,
        }
    }
}

impl AgentConfig {
    /// Reads `ISTIO_KUBE_APP_PROBERS`, `ISTIO_PROMETHEUS_ANNOTATIONS`, `INSTANCE_IP` and
    /// `REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION` from the environment.
    pub fn from_env(status_port: u16) -> Result<AgentConfig, AgentConfigError> {
        let var = |name: &str| std::env::var(name).ok();
        AgentConfig::from_values(&EnvValues {
            status_port,
            probers: var(APP_PROBERS_ENV).as_deref(),
            prometheus: var(PROMETHEUS_ENV).as_deref(),
            instance_ip: var("INSTANCE_IP").as_deref(),
            legacy_localhost: var(LEGACY_LOCALHOST_ENV)
                .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1"),
        })
    }

    /// [`from_env`](Self::from_env) without the environment.
    pub fn from_values(values: &EnvValues<'_>) -> Result<AgentConfig, AgentConfigError> {
        let probers = AppProbers::parse(values.probers.unwrap_or_default())?;
        let scrape =
            ScrapeConfig::parse(values.prometheus.unwrap_or_default(), values.status_port)?;
        let pod_ip = match values
            .instance_ip
            .map(str::trim)
            .filter(|ip| !ip.is_empty())
        {
            None => None,
            Some(ip) => Some(
                ip.parse::<IpAddr>()
                    .map_err(|_| AgentConfigError::InstanceIp(ip.to_owned()))?,
            ),
        };
        // A pod with only an IPv6 address has no 127.0.0.1 to reach the app on.
        let localhost = match pod_ip {
            Some(IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
        };
        let probe_destination = match pod_ip {
            Some(ip) if !values.legacy_localhost => ip,
            _ => localhost,
        };
        Ok(AgentConfig {
            status_port: values.status_port,
            probers,
            scrape,
            probe_destination,
            metrics_host: localhost,
            scrape_timeout: DEFAULT_SCRAPE_TIMEOUT,
        })
    }
}

/// The environment [`AgentConfig::from_values`] reads.
#[derive(Debug, Clone, Default)]
pub struct EnvValues<'a> {
    pub status_port: u16,
    pub probers: Option<&'a str>,
    pub prometheus: Option<&'a str>,
    pub instance_ip: Option<&'a str>,
    pub legacy_localhost: bool,
}

/// What the agent server serves.
#[derive(Debug, Clone)]
pub struct Agent {
    pub config: AgentConfig,
    pub metrics: Arc<ProxyMetrics>,
    pub control: ProcessControl,
}

/// Serves the agent endpoints on `listener` (the proxy binds 0.0.0.0:15020, or `[::]`)
/// until `shutdown`.
pub async fn serve_agent(
    listener: TcpListener,
    agent: Arc<Agent>,
    shutdown: impl Future<Output = ()>,
) {
    if !agent.config.probers.is_empty() {
        tracing::info!(probes = ?agent.config.probers.paths().collect::<Vec<_>>(), "serving application probes");
    }
    let handler = move |request: Request<Incoming>, conn: Conn| {
        let agent = agent.clone();
        async move { route(&agent, request, &conn).await }
    };
    http::serve("agent", listener, handler, shutdown).await;
}

async fn route(agent: &Agent, request: Request<Incoming>, conn: &Conn) -> Reply {
    let path = request.uri().path();
    let method = request.method();
    let read = matches!(*method, Method::GET | Method::HEAD);
    if path.starts_with("/app-health/") || path.starts_with("/app-lifecycle/") {
        return match agent.config.probers.get(path) {
            Some(probe) => probe::answer(&agent.config, path, probe, request.headers()).await,
            None => http::text(
                StatusCode::NOT_FOUND,
                format!("no application probe is configured for {path}\n"),
            ),
        };
    }
    match path {
        "/stats/prometheus" | "/metrics" if read => {
            scrape::merged_metrics(agent, request.headers()).await
        }
        READY_PATH if read => agent.control.readiness().probe_response(),
        "/drain" | "/quitquitquit" if !http::is_local_peer(conn.peer()) => http::forbidden_remote(),
        "/drain" if *method == Method::POST => agent.control.drain_response(),
        "/quitquitquit" if *method == Method::POST => agent.control.quit_response(conn),
        "/stats/prometheus" | "/metrics" | READY_PATH => http::method_not_allowed("GET"),
        "/drain" | "/quitquitquit" => http::method_not_allowed("POST"),
        _ => http::text(StatusCode::NOT_FOUND, "not found\n"),
    }
}
