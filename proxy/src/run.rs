//! Running the sidecar: binding the ports, wiring configuration, data path, metrics and the
//! health/admin/agent servers together, and stopping in order (drain, then exit).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

use crate::admin::{self, Admin, LogControl, ProcessControl};
use crate::agent::{self, Agent, AgentConfig};
use crate::config_store::ConfigStore;
use crate::cow_map::CowMap;
use crate::health::{self, Readiness};
use crate::http::pool::Pools;
use crate::http::record::AccessLogs;
use crate::listener::{
    ConnectionInfo, ConnectionStats, KernelOriginalDst, Proxy, Telemetry, Tracker,
};
use crate::metrics::{
    ConnectionMetrics, ProxyMetrics, RequestMetricsFamily, RequestOutcome, TcpLabels, Workload,
};
use crate::snapshot::Direction;
use crate::tcp::End;
use crate::xds::client::XdsOptions;
use crate::xds::status::XdsStatus;

/// The sidecar's ports (Istio's numbers by default).
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub outbound: u16,
    pub inbound: u16,
    pub admin: u16,
    pub status: u16,
    pub health: u16,
    pub prometheus: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            outbound: 15001,
            inbound: 15006,
            admin: 15000,
            status: 15020,
            health: 15021,
            prometheus: 15090,
        }
    }
}

pub struct Options {
    /// A static configuration file; without one the configuration comes from `xds`.
    pub config: Option<PathBuf>,
    /// The control plane, when there is no static file.
    pub xds: Option<XdsOptions>,
    pub ports: Ports,
    /// How long open connections may take to finish after SIGTERM or a drain.
    pub drain_timeout: Duration,
    /// This pod's workload, for metric labels.
    pub workload: Workload,
    pub log: Option<Arc<dyn LogControl>>,
}

/// How the proxy ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Drained after SIGTERM/SIGINT (or the drain deadline passed): exit code 0.
    Drained { left_open: usize },
    /// `/quitquitquit`: exit code 0 at once.
    Quit,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] crate::static_config::StaticConfigError),
    #[error(
        "cannot listen on {addr}: {source} (is another proxy running in this network namespace?)"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Agent(#[from] agent::AgentConfigError),
}

/// Reports connections and requests to the Prometheus metrics, labelled as Istio labels
/// them.
struct MetricsTelemetry {
    metrics: Arc<ProxyMetrics>,
    workload: Workload,
    /// The request metrics handle of each cluster, by direction, so that a request's label
    /// set is built once per cluster rather than per request.
    outbound: CowMap<RequestMetricsFamily>,
    inbound: CowMap<RequestMetricsFamily>,
}

impl MetricsTelemetry {
    fn new(metrics: Arc<ProxyMetrics>, workload: Workload) -> MetricsTelemetry {
        MetricsTelemetry {
            metrics,
            workload,
            outbound: CowMap::default(),
            inbound: CowMap::default(),
        }
    }

    fn labels(&self, direction: Direction, cluster: &str) -> TcpLabels {
        match direction {
            Direction::Outbound => TcpLabels::outbound(&self.workload, cluster),
            Direction::Inbound => TcpLabels::inbound(&self.workload, cluster),
        }
    }
}

impl Telemetry for MetricsTelemetry {
    fn connection(&self, info: &ConnectionInfo) -> Box<dyn ConnectionStats> {
        let labels = self.labels(info.direction, &info.cluster);
        let connection = self.metrics.connection(&labels);
        connection.opened();
        Box::new(connection)
    }

    fn error(&self, reason: &'static str) {
        self.metrics.error(reason);
    }

    fn request(&self, direction: Direction, cluster: &str, outcome: RequestOutcome) {
        let families = match direction {
            Direction::Outbound => &self.outbound,
            Direction::Inbound => &self.inbound,
        };
        families
            .get_or_insert_with(cluster, || {
                self.metrics.requests(self.labels(direction, cluster))
            })
            .record(outcome);
    }
}

impl ConnectionStats for ConnectionMetrics {
    // Istio counts from the downstream peer's side: "received" is the request direction.
    fn to_upstream(&self, bytes: u64) {
        self.received(bytes);
    }
    fn to_downstream(&self, bytes: u64) {
        self.sent(bytes);
    }
    fn closed(&self, _end: End) {
        ConnectionMetrics::closed(self);
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, RunError> {
    let fail = |source| RunError::Bind { addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(fail)?;
    socket.set_reuseaddr(true).map_err(fail)?;
    if addr.is_ipv6() {
        // Its own family only: the IPv4 socket on the same port takes IPv4.
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Ipv6V6Only, &true)
            .map_err(|e| fail(e.into()))?;
    }
    socket.bind(addr).map_err(fail)?;
    socket.listen(1024).map_err(fail)
}

/// Binds `port` on 0.0.0.0 and, when the kernel has IPv6, on [::] too.
async fn bind_both(port: u16) -> Result<Vec<TcpListener>, RunError> {
    let mut listeners = vec![bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)).await?];
    match bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port)).await {
        Ok(l) => listeners.push(l),
        Err(err) => tracing::debug!("no IPv6 listener: {err}"),
    }
    Ok(listeners)
}

/// Runs the sidecar until it is told to stop.
pub async fn run(options: Options) -> Result<Exit, RunError> {
    let metrics = Arc::new(ProxyMetrics::new());
    let readiness = Arc::new(Readiness::new());
    let store = Arc::new(match &options.config {
        Some(path) => ConfigStore::from_file(path)?,
        None => ConfigStore::pending(),
    });
    let ports = options.ports;

    let (stop_tx, stop_rx) = watch::channel(false);
    let (exit_tx, mut exit_rx) = tokio::sync::mpsc::unbounded_channel::<Exit>();
    let drain_stop = stop_tx.clone();
    let quit = exit_tx.clone();
    let control = ProcessControl::new(
        readiness.clone(),
        move || {
            // Stop taking new connections; open ones finish (the pod is about to stop).
            let _ = drain_stop.send(true);
        },
        move || {
            let _ = quit.send(Exit::Quit);
        },
    );

    let tracker = Arc::new(Tracker::default());
    let snapshots = store.clone();
    let proxy = Arc::new(Proxy {
        snapshot: Arc::new(move || snapshots.current()),
        original_dst: Box::new(KernelOriginalDst),
        telemetry: Arc::new(MetricsTelemetry::new(
            metrics.clone(),
            options.workload.clone(),
        )),
        tracker: tracker.clone(),
        pools: Pools::new(),
        access_logs: Arc::new(AccessLogs::stdout(metrics.access_log_dropped())),
    });
    for port in [ports.outbound, ports.inbound] {
        for socket in bind_both(port).await? {
            tokio::spawn(proxy.clone().serve(socket, port, stop_rx.clone()));
        }
    }
    readiness.set_listeners_bound(true);

    // The servers that report health keep running while connections drain.
    let (servers_tx, servers_rx) = watch::channel(false);
    let servers_down = move || {
        let mut rx = servers_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    let health = bind(SocketAddr::from(([0, 0, 0, 0], ports.health))).await?;
    tokio::spawn(health::serve_health(
        health,
        readiness.clone(),
        servers_down(),
    ));
    let prometheus = bind(SocketAddr::from(([0, 0, 0, 0], ports.prometheus))).await?;
    tokio::spawn(admin::serve_prometheus(
        prometheus,
        metrics.clone(),
        servers_down(),
    ));
    let xds_status = options
        .xds
        .as_ref()
        .filter(|_| options.config.is_none())
        .map(|x| Arc::new(XdsStatus::new(&x.address.to_string(), x.delta, &metrics)));
    let admin_socket = bind(SocketAddr::from(([127, 0, 0, 1], ports.admin))).await?;
    let snapshot_for_admin = store.clone();
    let admin_state = Arc::new(Admin {
        snapshot: Arc::new(move || snapshot_for_admin.current()),
        metrics: metrics.clone(),
        control: control.clone(),
        log: options.log.clone(),
        xds: xds_status.clone(),
    });
    tokio::spawn(admin::serve_admin(
        admin_socket,
        admin_state,
        servers_down(),
    ));
    let agent_socket = bind(SocketAddr::from(([0, 0, 0, 0], ports.status))).await?;
    let agent_state = Arc::new(Agent {
        config: AgentConfig::from_env(ports.status)?,
        metrics: metrics.clone(),
        control: control.clone(),
    });
    tokio::spawn(agent::serve_agent(
        agent_socket,
        agent_state,
        servers_down(),
    ));

    if let Some(path) = options.config.clone() {
        tokio::spawn(store.clone().watch_file(path, servers_down()));
    } else if let (Some(xds), Some(status)) = (options.xds, xds_status) {
        let (stop, stopped) = watch::channel(false);
        let down = servers_down();
        tokio::spawn(async move {
            down.await;
            let _ = stop.send(true);
        });
        tokio::spawn(crate::xds::client::run(xds, store.clone(), status, stopped));
    } else {
        tracing::warn!("no static config and no control plane: the proxy will never be ready");
    }
    tracing::info!(?ports, "skiff-proxy listening");
    let mut status = store.subscribe();
    let announce = readiness.clone();
    tokio::spawn(async move {
        loop {
            let loaded = status.borrow_and_update().loaded;
            announce.set_config_loaded(loaded);
            if loaded && announce.is_ready() {
                tracing::info!("skiff-proxy ready");
                break;
            }
            if status.changed().await.is_err() {
                break;
            }
        }
    });

    let exit = tokio::select! {
        exit = exit_rx.recv() => exit.unwrap_or(Exit::Quit),
        _ = signal() => {
            tracing::info!(timeout = ?options.drain_timeout, open = tracker.active(), "draining");
            control.drain();
            let _ = stop_tx.send(true);
            let left_open = match tokio::time::timeout(options.drain_timeout, tracker.wait_idle()).await {
                Ok(()) => 0,
                Err(_) => tracker.active(),
            };
            Exit::Drained { left_open }
        }
    };
    let _ = servers_tx.send(true);
    Ok(exit)
}

async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}
