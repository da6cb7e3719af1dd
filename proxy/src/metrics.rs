//! The proxy's metrics: Istio's standard TCP and request metrics plus Skiff's own, in one
//! prometheus-client [`Registry`]. The request metrics (and Envoy's response flags) live in
//! the `http` submodule, re-exported here.
//!
//! Istio's dashboards, Kiali and most alerting rules are written against the names and labels
//! Envoy's stats plugin emits (`istio_tcp_connections_opened_total{reporter="source",...}`),
//! so Skiff emits the same names with the labels it can fill; a label it cannot know (for
//! example the peer workload before metadata exchange exists) is `"unknown"`, as Istio writes
//! it. Skiff's own metrics are prefixed `skiff_`.
//!
//! The data path pays for metrics once per connection, not per byte: [`ProxyMetrics::connection`]
//! looks the label set up once (taking the family's lock only then) and returns a
//! [`ConnectionMetrics`] holding clones of the four counters, whose updates are single atomic
//! adds.
//!
//! The text is produced on demand by [`ProxyMetrics::encode`] (OpenMetrics) or
//! [`ProxyMetrics::encode_as`] (OpenMetrics or Prometheus text 0.0.4, see [`Format`]).

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

use crate::snapshot::{
    BLACKHOLE_CLUSTER, Direction, INBOUND_PASSTHROUGH_CLUSTER, PASSTHROUGH_CLUSTER,
};

mod format;
mod http;
#[cfg(test)]
mod tests;

pub use format::Format;
pub(crate) use format::{openmetrics_to_plain_stats, strip_openmetrics_eof};
pub use http::{
    BYTES_BUCKETS, DURATION_BUCKETS, RequestMetricsFamily, RequestOutcome, RequestProtocol,
    RequestSeries, ResponseFlags, SeriesKey, UnknownResponseFlag,
};

/// What Istio writes for a label whose value the proxy does not know.
pub const UNKNOWN: &str = "unknown";

/// The `reason` label values of `skiff_proxy_connection_errors_total`. Constants rather than
/// free text so that the set stays small (each value is a time series) and dashboards can
/// rely on the spelling.
pub mod reason {
    /// The upstream did not accept the connection within the cluster's connect timeout.
    pub const CONNECT_TIMEOUT: &str = "connect_timeout";
    /// The upstream refused the connection (RST to SYN) or was unreachable.
    pub const CONNECT_REFUSED: &str = "connect_refused";
    /// The route or chain named a cluster the snapshot does not have.
    pub const NO_CLUSTER: &str = "no_cluster";
    /// The cluster exists but has no endpoint to connect to.
    pub const NO_ENDPOINT: &str = "no_endpoint";
    /// The connection would have been sent back into the proxy itself.
    pub const LOOP: &str = "loop";
    /// Closed after the idle timeout without traffic.
    pub const IDLE_TIMEOUT: &str = "idle_timeout";
    /// A peer reset the connection mid-stream.
    pub const RESET: &str = "reset";
    /// Reading the first bytes for protocol detection failed (not a timeout: those fall
    /// back to opaque TCP).
    pub const DETECTION_ERROR: &str = "detection_error";
    /// Sent to BlackHoleCluster (or matched no chain and no default chain).
    pub const BLACKHOLE: &str = "blackhole";
    /// No listener or filter chain matched the connection.
    pub const NO_CHAIN: &str = "no_chain";
    /// SO_ORIGINAL_DST could not be read for a redirected connection.
    pub const ORIGINAL_DST: &str = "original_dst";
    /// A chain or an endpoint needs TLS, which Skiff does not terminate or originate yet.
    pub const TLS_UNSUPPORTED: &str = "tls_unsupported";
}

/// Which side of a connection reports a metric, as Istio's `reporter` label says it: the
/// client's proxy reports `source` (outbound), the server's proxy `destination` (inbound).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reporter {
    Source,
    Destination,
}

impl Reporter {
    pub fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
        }
    }

    /// Outbound connections are reported by their source, inbound ones by their destination.
    pub fn for_direction(direction: Direction) -> Reporter {
        match direction {
            Direction::Outbound => Reporter::Source,
            Direction::Inbound => Reporter::Destination,
        }
    }
}

impl EncodeLabelValue for Reporter {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// The workload a proxy runs beside (from `ISTIO_META_WORKLOAD_NAME` and `POD_NAMESPACE`),
/// shared by every connection's labels. `Arc<str>` so that building a label set per
/// connection copies pointers, not strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Workload {
    pub name: Arc<str>,
    pub namespace: Arc<str>,
}

impl Workload {
    /// Empty parts become `"unknown"`, as Istio labels them.
    pub fn new(name: &str, namespace: &str) -> Workload {
        Workload {
            name: known(name),
            namespace: known(namespace),
        }
    }

    pub fn unknown() -> Workload {
        Workload::new("", "")
    }
}

fn known(value: &str) -> Arc<str> {
    Arc::from(if value.is_empty() { UNKNOWN } else { value })
}

/// The destination service as Istio's labels split it, worked out from a cluster name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceLabels {
    /// `destination_service`: the service's host name.
    pub host: Arc<str>,
    /// `destination_service_name`: the short name (or the well-known cluster name for
    /// passthrough and blackhole traffic, as Istio reports it).
    pub name: Arc<str>,
    /// `destination_service_namespace`.
    pub namespace: Arc<str>,
}

impl ServiceLabels {
    pub fn unknown() -> ServiceLabels {
        let unknown: Arc<str> = Arc::from(UNKNOWN);
        ServiceLabels {
            host: unknown.clone(),
            name: unknown.clone(),
            namespace: unknown,
        }
    }

    /// From istiod's cluster names: `outbound|9080|v1|reviews.default.svc.cluster.local`
    /// gives host `reviews.default.svc.cluster.local`, name `reviews`, namespace `default`;
    /// a host outside `*.svc.*` (a ServiceEntry such as `httpbin.org`) is its own name with
    /// an unknown namespace; `inbound|9080||` (no host, as istiod names inbound clusters
    /// today) and unparsable names are unknown; PassthroughCluster, InboundPassthroughCluster
    /// and BlackHoleCluster keep their name as the service name, as Istio reports them.
    pub fn from_cluster(cluster: &str) -> ServiceLabels {
        let special = [
            PASSTHROUGH_CLUSTER,
            INBOUND_PASSTHROUGH_CLUSTER,
            BLACKHOLE_CLUSTER,
        ];
        if let Some(name) = special.iter().find(|s| cluster.starts_with(**s)) {
            return ServiceLabels {
                name: Arc::from(*name),
                ..ServiceLabels::unknown()
            };
        }
        let mut parts = cluster.split('|');
        let (Some(direction), Some(_port), Some(_subset), Some(host), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return ServiceLabels::unknown();
        };
        if !matches!(direction, "outbound" | "inbound") || host.is_empty() {
            return ServiceLabels::unknown();
        }
        let labels: Vec<&str> = host.split('.').collect();
        let (name, namespace) = match labels.as_slice() {
            [name, namespace, "svc", ..] => (known(name), known(namespace)),
            _ => (Arc::from(host), Arc::from(UNKNOWN)),
        };
        ServiceLabels {
            host: Arc::from(host),
            name,
            namespace,
        }
    }
}

/// The labels of Istio's TCP metrics. Built once per connection (or once per cluster and
/// cached by the caller); every field is public so the data path can fill in what it learns.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TcpLabels {
    pub reporter: Reporter,
    pub source_workload: Arc<str>,
    pub source_workload_namespace: Arc<str>,
    pub destination_workload: Arc<str>,
    pub destination_workload_namespace: Arc<str>,
    pub destination_service: Arc<str>,
    pub destination_service_name: Arc<str>,
    pub destination_service_namespace: Arc<str>,
}

impl TcpLabels {
    /// A connection this proxy's workload opens to `cluster`: the source is known, the
    /// destination workload is not (Skiff has no peer metadata exchange yet).
    pub fn outbound(local: &Workload, cluster: &str) -> TcpLabels {
        let unknown = Workload::unknown();
        TcpLabels::new(
            Reporter::Source,
            local,
            &unknown,
            ServiceLabels::from_cluster(cluster),
        )
    }

    /// A connection to this proxy's workload through the inbound `cluster`: the destination
    /// is known, the source workload is not.
    pub fn inbound(local: &Workload, cluster: &str) -> TcpLabels {
        let unknown = Workload::unknown();
        TcpLabels::new(
            Reporter::Destination,
            &unknown,
            local,
            ServiceLabels::from_cluster(cluster),
        )
    }

    pub fn new(
        reporter: Reporter,
        source: &Workload,
        destination: &Workload,
        service: ServiceLabels,
    ) -> TcpLabels {
        TcpLabels {
            reporter,
            source_workload: source.name.clone(),
            source_workload_namespace: source.namespace.clone(),
            destination_workload: destination.name.clone(),
            destination_workload_namespace: destination.namespace.clone(),
            destination_service: service.host,
            destination_service_name: service.name,
            destination_service_namespace: service.namespace,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorLabels {
    reason: &'static str,
}

/// Every metric of the proxy, registered in one registry so that one scrape returns all.
#[derive(Debug)]
pub struct ProxyMetrics {
    /// Behind a mutex only so that other modules (xDS) can register their metrics after
    /// start; the data path never touches it.
    registry: Mutex<Registry>,
    tcp_opened: Family<TcpLabels, Counter>,
    tcp_closed: Family<TcpLabels, Counter>,
    tcp_sent: Family<TcpLabels, Counter>,
    tcp_received: Family<TcpLabels, Counter>,
    requests: http::RequestFamilies,
    access_log_dropped: Counter,
    connection_errors: Family<ErrorLabels, Counter>,
    active_connections: Gauge,
    config_reloads: Counter,
    config_reload_failures: Counter,
    app_scrapes: Counter,
    app_scrape_failures: Counter,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        ProxyMetrics::new()
    }
}

impl ProxyMetrics {
    pub fn new() -> ProxyMetrics {
        let metrics = ProxyMetrics {
            registry: Mutex::new(Registry::default()),
            tcp_opened: Family::default(),
            tcp_closed: Family::default(),
            tcp_sent: Family::default(),
            tcp_received: Family::default(),
            requests: http::RequestFamilies::new(),
            access_log_dropped: Counter::default(),
            connection_errors: Family::default(),
            active_connections: Gauge::default(),
            config_reloads: Counter::default(),
            config_reload_failures: Counter::default(),
            app_scrapes: Counter::default(),
            app_scrape_failures: Counter::default(),
        };
        {
            let mut r = metrics.registry();
            // prometheus-client appends `_total` to counters, giving Istio's exact names.
            r.register(
                "istio_tcp_connections_opened",
                "Total number of TCP connections opened",
                metrics.tcp_opened.clone(),
            );
            r.register(
                "istio_tcp_connections_closed",
                "Total number of TCP connections closed",
                metrics.tcp_closed.clone(),
            );
            r.register(
                "istio_tcp_sent_bytes",
                "Total bytes sent to the downstream peer (the response direction) on TCP connections",
                metrics.tcp_sent.clone(),
            );
            r.register(
                "istio_tcp_received_bytes",
                "Total bytes received from the downstream peer (the request direction) on TCP connections",
                metrics.tcp_received.clone(),
            );
            metrics.requests.register(&mut r);
            r.register(
                "skiff_proxy_access_log_dropped",
                "Access log lines dropped because the writer could not keep up (or failed)",
                metrics.access_log_dropped.clone(),
            );
            r.register(
                "skiff_proxy_connection_errors",
                "Connections that failed or were refused, by reason",
                metrics.connection_errors.clone(),
            );
            r.register(
                "skiff_proxy_active_connections",
                "Proxied connections open now",
                metrics.active_connections.clone(),
            );
            r.register(
                "skiff_proxy_config_reloads",
                "Configuration updates the proxy tried to apply, including failed ones",
                metrics.config_reloads.clone(),
            );
            r.register(
                "skiff_proxy_config_reload_failures",
                "Configuration updates the proxy rejected",
                metrics.config_reload_failures.clone(),
            );
            r.register(
                "skiff_agent_app_scrapes",
                "Scrapes of the application's own metrics for the merged endpoint",
                metrics.app_scrapes.clone(),
            );
            r.register(
                "skiff_agent_app_scrape_failures",
                "Scrapes of the application's own metrics that failed",
                metrics.app_scrape_failures.clone(),
            );
        }
        metrics
    }

    /// A poisoned lock only means another thread panicked while registering; the registry
    /// itself is still consistent, so keep serving it.
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a metric of another module (e.g. `skiff_xds_*`) to the same scrape.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry().register(name, help, metric);
    }

    /// The counters of one connection. Call once per connection; the label lookup happens
    /// here, so the returned handle's updates take no lock.
    pub fn connection(&self, labels: &TcpLabels) -> ConnectionMetrics {
        ConnectionMetrics {
            opened: self.tcp_opened.get_or_create_owned(labels),
            closed: self.tcp_closed.get_or_create_owned(labels),
            sent: self.tcp_sent.get_or_create_owned(labels),
            received: self.tcp_received.get_or_create_owned(labels),
            active: self.active_connections.clone(),
            state: AtomicU8::new(STATE_NEW),
        }
    }

    /// The request metrics of one route or cluster in one direction. Call once per
    /// (route/cluster, direction) and keep the handle: `labels` are the connection-level
    /// labels ([`TcpLabels::outbound`] / [`TcpLabels::inbound`]), and the handle adds the
    /// per-request ones without allocating on the common path.
    pub fn requests(&self, labels: TcpLabels) -> RequestMetricsFamily {
        RequestMetricsFamily::new(self.requests.clone(), labels)
    }

    /// The counter the access log's writer increments for each line it drops; a clone shares
    /// the registered series.
    pub fn access_log_dropped(&self) -> Counter {
        self.access_log_dropped.clone()
    }

    /// Counts one failed connection. `reason` should be one of [`reason`]'s constants.
    pub fn error(&self, reason: &'static str) {
        self.connection_errors
            .get_or_create(&ErrorLabels { reason })
            .inc();
    }

    /// Counts one configuration update; `applied` is false when it was rejected.
    pub fn config_reload(&self, applied: bool) {
        self.config_reloads.inc();
        if !applied {
            self.config_reload_failures.inc();
        }
    }

    /// Counts one scrape of an application metrics endpoint for the merged endpoint.
    pub fn app_scrape(&self, succeeded: bool) {
        self.app_scrapes.inc();
        if !succeeded {
            self.app_scrape_failures.inc();
        }
    }

    /// The whole registry as an OpenMetrics document (ending in `# EOF`).
    pub fn encode(&self) -> String {
        self.encode_as(Format::OpenMetrics)
    }

    /// The whole registry as a complete document in `format`.
    pub fn encode_as(&self, format: Format) -> String {
        let mut text = self.encode_open();
        match format {
            Format::OpenMetrics => {
                text.push_str("# EOF\n");
                text
            }
            Format::Text => format::openmetrics_to_text(&text),
        }
    }

    /// The registry in `format` without the OpenMetrics terminator, so that other
    /// expositions (the application's) can follow it in the same response.
    pub(crate) fn encode_unterminated(&self, format: Format) -> String {
        let text = self.encode_open();
        match format {
            Format::OpenMetrics => text,
            Format::Text => format::openmetrics_to_text(&text),
        }
    }

    fn encode_open(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail; a metric's own encoder could in theory, and then
        // the scrape is partial rather than a panic.
        if let Err(e) =
            prometheus_client::encoding::text::encode_registry(&mut text, &self.registry())
        {
            tracing::warn!(error = %e, "encoding metrics failed; the scrape is incomplete");
        }
        text
    }
}

const STATE_NEW: u8 = 0;
const STATE_OPEN: u8 = 1;
const STATE_CLOSED: u8 = 2;

/// The metrics of one connection. `Sync`, so both copy directions can update it through a
/// shared reference. Dropping it after [`opened`](Self::opened) without
/// [`closed`](Self::closed) counts the close, so a cancelled task cannot leave the
/// active-connections gauge too high.
#[derive(Debug)]
pub struct ConnectionMetrics {
    opened: Counter,
    closed: Counter,
    sent: Counter,
    received: Counter,
    active: Gauge,
    state: AtomicU8,
}

impl ConnectionMetrics {
    /// The connection is established. Only the first call counts.
    pub fn opened(&self) {
        if self
            .state
            .compare_exchange(STATE_NEW, STATE_OPEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.opened.inc();
            self.active.inc();
        }
    }

    /// `n` bytes went to the downstream peer (the response direction).
    pub fn sent(&self, n: u64) {
        if n > 0 {
            self.sent.inc_by(n);
        }
    }

    /// `n` bytes came from the downstream peer (the request direction).
    pub fn received(&self, n: u64) {
        if n > 0 {
            self.received.inc_by(n);
        }
    }

    /// The connection is closed. Counts only after [`opened`](Self::opened), and only once.
    pub fn closed(&self) {
        if self
            .state
            .compare_exchange(
                STATE_OPEN,
                STATE_CLOSED,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        {
            self.closed.inc();
            self.active.dec();
        }
    }
}

impl Drop for ConnectionMetrics {
    fn drop(&mut self) {
        self.closed();
    }
}
