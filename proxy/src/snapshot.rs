//! The running configuration: one immutable value, swapped whole when configuration
//! changes. A TCP connection takes the snapshot current when it is accepted and keeps it to
//! the end, so a change never alters a byte stream mid-way; an HTTP request takes the one
//! current when it arrives, so long-lived connections follow route changes as with Envoy.
//! Either way the data path takes no lock.
//!
//! The shapes follow what istiod sends a sidecar (spec/proxy.md section 1) — listeners with
//! filter-chain matches, `tcp_proxy` and `http_connection_manager` handlers, clusters named
//! `outbound|9080||reviews.default.svc.cluster.local` with endpoints — so that both the
//! static file and the xDS translation produce this same value.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Route tables live in [`crate::route`], with the functions that select from them.
pub use crate::route::{Route, RouteTable, VirtualHost};

/// Envoy's default upstream connect timeout, and istiod's.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Envoy's default tcp_proxy idle timeout.
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long an upstream HTTP connection may sit unused in the pool: below the 5 s keep-alive
/// of Node.js, Apache and uvicorn, so the proxy closes an idle connection before the server
/// does and never sends a request into one the server is closing (the 503 `UC` races of
/// istio#45802 and #55138).
pub const DEFAULT_HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(4);
/// Envoy's HTTP connection manager default: a stream with no activity in either direction
/// for this long is ended (408 before the response starts, a reset after).
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long protocol detection waits for the client's first bytes before treating the
/// connection as opaque TCP (so server-first protocols work).
pub const DEFAULT_DETECTION_TIMEOUT: Duration = Duration::from_millis(100);

/// The well-known cluster names istiod uses for its catch-all chains.
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";

/// The whole configuration at one point in time.
#[derive(Debug, Default, Serialize)]
pub struct Snapshot {
    /// Where it came from (file path and load time, or the xDS versions).
    pub version: String,
    /// Listeners that own a socket (15001, 15006) and those that only receive hand-offs
    /// (`bind_to_port: false`), in configuration order.
    pub listeners: Vec<Arc<Listener>>,
    pub clusters: HashMap<String, Arc<Cluster>>,
    /// Route tables by name (RDS names such as "9080"), used by HTTP handlers.
    pub routes: HashMap<String, Arc<RouteTable>>,
    /// One line per HTTP request when set (Istio's `meshConfig.accessLogEncoding`); off by
    /// default, as in Istio.
    pub access_log: Option<crate::access_log::Format>,
}

impl Snapshot {
    /// The listener a handed-off connection belongs to: the one for its original `IP:port`,
    /// else the one for `0.0.0.0:port` (or `[::]:port`), as Envoy's `use_original_dst` does.
    /// Only listeners that do not own a socket and serve the same direction take hand-offs
    /// (an inbound connection to :9080 must not land on the outbound 0.0.0.0_9080).
    pub fn listener_for(
        &self,
        original: SocketAddr,
        direction: Direction,
    ) -> Option<&Arc<Listener>> {
        let handoff = || {
            self.listeners
                .iter()
                .filter(move |l| !l.bind_to_port && l.direction == direction)
        };
        handoff().find(|l| l.address == original).or_else(|| {
            handoff()
                .find(|l| l.address.port() == original.port() && l.address.ip().is_unspecified())
        })
    }

    /// The listener that owns the socket on `port` (15001, 15006).
    pub fn bound_listener(&self, port: u16) -> Option<&Arc<Listener>> {
        self.listeners
            .iter()
            .find(|l| l.bind_to_port && l.address.port() == port)
    }

    pub fn cluster(&self, name: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Direction {
    Inbound,
    Outbound,
}

#[derive(Debug, Serialize)]
pub struct Listener {
    pub name: String,
    pub address: SocketAddr,
    /// False for per-service listeners that only receive connections handed off by a
    /// virtual listener.
    pub bind_to_port: bool,
    /// Hand accepted connections to the listener of their original destination.
    pub use_original_dst: bool,
    pub direction: Direction,
    /// Whether to sniff the first bytes (TLS ClientHello, HTTP) before choosing a chain.
    pub detection: Detection,
    /// Original-destination ports that skip detection even when it is on (server-first
    /// protocols such as MySQL on a port that would otherwise wait for the timeout).
    pub detection_skip_ports: Vec<u16>,
    /// Tried in order; the first whose match accepts the connection wins.
    pub filter_chains: Vec<FilterChain>,
    /// Used when no chain matches; without it such a connection is closed.
    pub default_chain: Option<FilterChain>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Detection {
    pub enabled: bool,
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
}

impl Default for Detection {
    fn default() -> Self {
        Detection {
            enabled: true,
            timeout: DEFAULT_DETECTION_TIMEOUT,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct FilterChain {
    pub name: String,
    pub matcher: ChainMatch,
    pub handler: Handler,
    /// TLS the chain terminates (istiod's mTLS chains). Recorded so that such a chain is
    /// never served as plaintext: until Skiff terminates TLS itself, connections that
    /// select it are closed with reason `tls_unsupported`.
    pub tls: Option<DownstreamTls>,
}

/// A chain's `DownstreamTlsContext`, as far as Skiff reads it today.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DownstreamTls {
    pub require_client_certificate: bool,
    pub alpn: Vec<String>,
    /// SDS secret names (istiod: `default` for the certificate, `ROOTCA` for validation).
    pub certificate_secret: Option<String>,
    pub validation_secret: Option<String>,
}

/// A cluster's `UpstreamTlsContext`, as far as Skiff reads it today.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UpstreamTls {
    pub sni: Option<String>,
    pub alpn: Vec<String>,
    /// SANs the server certificate must carry (exact match), e.g.
    /// `spiffe://cluster.local/ns/default/sa/bookinfo-details`.
    pub subject_alt_names: Vec<String>,
    pub certificate_secret: Option<String>,
    pub validation_secret: Option<String>,
}

/// Whether connections to a cluster's endpoints must use TLS.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamTransport {
    #[default]
    Plaintext,
    /// Every endpoint (a `transport_socket` with TLS).
    Tls(UpstreamTls),
    /// Istio's auto-mTLS (`transport_socket_matches` on `tlsMode: istio`): endpoints whose
    /// metadata says `tlsMode: istio` use TLS, the others plaintext.
    IstioAuto(UpstreamTls),
}

/// Envoy's FilterChainMatch: every field that is set must match; empty lists match all.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ChainMatch {
    pub destination_port: Option<u16>,
    /// On the original destination address.
    pub prefix_ranges: Vec<Cidr>,
    pub source_prefix_ranges: Vec<Cidr>,
    pub transport_protocol: Option<Transport>,
    /// ALPN values (from a TLS ClientHello) or `http/1.1` / `h2c` from detection.
    pub application_protocols: Vec<String>,
    pub server_names: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    RawBuffer,
    Tls,
}

/// What a detected connection looks like, for chain matching.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionFacts {
    pub original_dst: Option<SocketAddr>,
    pub source: Option<SocketAddr>,
    pub transport: Option<Transport>,
    /// `http/1.1`, `h2c`, or the ClientHello's ALPN list.
    pub application_protocols: Vec<String>,
    pub server_name: Option<String>,
}

impl ChainMatch {
    pub fn matches(&self, facts: &ConnectionFacts) -> bool {
        if let Some(port) = self.destination_port
            && facts.original_dst.map(|d| d.port()) != Some(port)
        {
            return false;
        }
        let in_ranges = |ranges: &[Cidr], addr: Option<SocketAddr>| {
            ranges.is_empty() || addr.is_some_and(|a| ranges.iter().any(|r| r.contains(a.ip())))
        };
        if !in_ranges(&self.prefix_ranges, facts.original_dst)
            || !in_ranges(&self.source_prefix_ranges, facts.source)
        {
            return false;
        }
        if let Some(t) = self.transport_protocol
            && facts.transport != Some(t)
        {
            return false;
        }
        if !self.application_protocols.is_empty()
            && !facts
                .application_protocols
                .iter()
                .any(|p| self.application_protocols.contains(p))
        {
            return false;
        }
        if !self.server_names.is_empty()
            && !facts
                .server_name
                .as_ref()
                .is_some_and(|n| self.server_names.contains(n))
        {
            return false;
        }
        true
    }
}

/// What handles a connection once its chain is chosen.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Handler {
    /// `tcp_proxy`: bytes in both directions to one cluster (or a weighted pick).
    Tcp(TcpProxy),
    /// `http_connection_manager`: requests routed one by one through a route table.
    Http(HttpManager),
}

#[derive(Debug, Serialize)]
pub struct TcpProxy {
    pub stat_prefix: String,
    pub cluster: ClusterChoice,
    #[serde(with = "duration_ms")]
    pub idle_timeout: Duration,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterChoice {
    Single(String),
    /// Picked per connection in proportion to the weights.
    Weighted(Vec<(String, u32)>),
}

#[derive(Debug, Serialize)]
pub struct HttpManager {
    pub stat_prefix: String,
    /// The RDS name, resolved in [`Snapshot::routes`], or an inline table.
    pub route_config: RouteSource,
    /// Envoy's `use_remote_address`: true when this proxy is the edge that knows the real
    /// client, so it appends the peer's address to `x-forwarded-for` and sets
    /// `x-forwarded-proto`; false trusts what the client sent (Envoy's and istiod's default
    /// for sidecars).
    pub use_remote_address: bool,
    /// A request or response with no bytes moving either way for this long is ended.
    /// `Duration::ZERO` means no stream idle timeout at all (Envoy's and the static
    /// config's `0s`), not an immediate one.
    #[serde(with = "duration_ms")]
    pub stream_idle_timeout: Duration,
}

impl HttpManager {
    pub fn new(stat_prefix: impl Into<String>, route_config: RouteSource) -> HttpManager {
        HttpManager {
            stat_prefix: stat_prefix.into(),
            route_config,
            use_remote_address: false,
            stream_idle_timeout: DEFAULT_STREAM_IDLE_TIMEOUT,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteSource {
    Rds(String),
    Inline(Arc<RouteTable>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LbPolicy {
    RoundRobin,
    /// Power of two choices on active connections (Envoy's LEAST_REQUEST).
    LeastRequest,
    Random,
}

/// How a cluster finds its endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Discovery {
    /// A fixed list (STATIC, or EDS once delivered).
    Static,
    /// The connection's own original destination (PassthroughCluster, InboundPassthrough).
    OriginalDst,
    /// Refuses every connection (BlackHoleCluster).
    BlackHole,
}

/// The HTTP version of requests sent to a cluster's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UpstreamProtocol {
    /// The client's own version (Envoy's `use_downstream_protocol_config`, what istiod
    /// sends for auto-detected ports).
    #[default]
    Downstream,
    Http1,
    /// HTTP/2 with prior knowledge (h2c) on plain connections.
    Http2,
}

/// Envoy's retry budget: retries in flight may be at most `budget_percent` of the requests
/// in flight to the cluster, but always at least `min_retry_concurrency`, so that retries
/// cannot multiply the load on a cluster that is already failing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RetryBudget {
    pub budget_percent: f64,
    pub min_retry_concurrency: u32,
}

impl Default for RetryBudget {
    /// Envoy's defaults when a budget is configured without values.
    fn default() -> Self {
        RetryBudget {
            budget_percent: 20.0,
            min_retry_concurrency: 3,
        }
    }
}

/// Requests and retries in flight to one cluster, for the retry budget.
#[derive(Debug, Default)]
pub struct ClusterLoad {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
}

#[derive(Debug, Serialize)]
pub struct Cluster {
    pub name: String,
    pub discovery: Discovery,
    pub lb_policy: LbPolicy,
    #[serde(with = "duration_ms")]
    pub connect_timeout: Duration,
    /// Source addresses for upstream connections, at most one per family: a connection
    /// uses the one of its destination's family, or lets the kernel choose when there is
    /// none. Inbound passthrough binds 127.0.0.6 and ::6, so skiff-init's rules do not
    /// capture its connections again.
    pub upstream_bind: Vec<IpAddr>,
    pub endpoints: Vec<Endpoint>,
    /// The HTTP version spoken to the endpoints (HTTP chains only).
    pub protocol: UpstreamProtocol,
    /// Pooled HTTP connections unused for this long are closed.
    #[serde(with = "duration_ms")]
    pub http_idle_timeout: Duration,
    pub retry_budget: RetryBudget,
    /// TLS towards the endpoints. Until Skiff originates TLS itself, a connection that would
    /// need it fails (TCP: reason `tls_unsupported`; HTTP: 503 `UF`) rather than leaving as
    /// plaintext.
    pub transport: UpstreamTransport,
    /// Round-robin position; shared by the connections of this snapshot.
    #[serde(skip)]
    pub next: AtomicUsize,
    #[serde(skip)]
    pub load: ClusterLoad,
}

impl Cluster {
    /// Whether connecting to endpoint `index` (None: the original destination) would need
    /// TLS.
    pub fn needs_tls(&self, index: Option<usize>) -> bool {
        match &self.transport {
            UpstreamTransport::Plaintext => false,
            UpstreamTransport::Tls(_) => true,
            UpstreamTransport::IstioAuto(_) => index
                .and_then(|i| self.endpoints.get(i))
                .is_some_and(|e| e.tls_mode_istio),
        }
    }

    pub fn new(name: impl Into<String>, discovery: Discovery, endpoints: Vec<Endpoint>) -> Cluster {
        Cluster {
            name: name.into(),
            discovery,
            lb_policy: LbPolicy::LeastRequest,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            upstream_bind: Vec::new(),
            endpoints,
            protocol: UpstreamProtocol::Downstream,
            http_idle_timeout: DEFAULT_HTTP_IDLE_TIMEOUT,
            retry_budget: RetryBudget::default(),
            transport: UpstreamTransport::Plaintext,
            next: AtomicUsize::new(0),
            load: ClusterLoad::default(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Endpoint {
    pub address: SocketAddr,
    pub weight: u32,
    /// The endpoint's `tlsMode` metadata is `istio` (it has a sidecar that speaks mTLS).
    pub tls_mode_istio: bool,
    /// `region/zone/sub_zone`, when the control plane said; shown in /config_dump.
    pub locality: Option<String>,
    /// Connections open to this endpoint now (for least-request).
    #[serde(skip)]
    pub active: AtomicU64,
}

impl Endpoint {
    pub fn new(address: SocketAddr) -> Endpoint {
        Endpoint {
            address,
            weight: 1,
            tls_mode_istio: false,
            locality: None,
            active: AtomicU64::new(0),
        }
    }

    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }
}

/// An IP network (address and prefix length), as in filter-chain matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("prefix length {p:?} must be 0..={max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[full] & mask) == (b[full] & mask)
}

mod duration_ms {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u128(d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener(name: &str, address: &str, bind: bool) -> Arc<Listener> {
        Arc::new(Listener {
            name: name.into(),
            address: address.parse().unwrap(),
            bind_to_port: bind,
            use_original_dst: bind,
            direction: Direction::Outbound,
            detection: Detection::default(),
            detection_skip_ports: Vec::new(),
            filter_chains: Vec::new(),
            default_chain: None,
        })
    }

    #[test]
    fn handoff_prefers_exact_address_then_wildcard_port() {
        let snapshot = Snapshot {
            listeners: vec![
                listener("virtualOutbound", "0.0.0.0:15001", true),
                listener("0.0.0.0_9080", "0.0.0.0:9080", false),
                listener("10.96.0.10_53", "10.96.0.10:53", false),
                listener("0.0.0.0_53", "0.0.0.0:53", false),
            ],
            ..Snapshot::default()
        };
        let name = |dst: &str| {
            snapshot
                .listener_for(dst.parse().unwrap(), Direction::Outbound)
                .map(|l| l.name.clone())
        };
        assert_eq!(name("10.96.0.10:53").as_deref(), Some("10.96.0.10_53"));
        assert_eq!(name("10.96.0.11:53").as_deref(), Some("0.0.0.0_53"));
        assert_eq!(name("10.1.2.3:9080").as_deref(), Some("0.0.0.0_9080"));
        assert_eq!(
            name("10.1.2.3:15001"),
            None,
            "bound listeners take no hand-offs"
        );
        assert_eq!(name("10.1.2.3:7777"), None);
        assert!(
            snapshot
                .listener_for("10.1.2.3:9080".parse().unwrap(), Direction::Inbound)
                .is_none(),
            "an inbound connection is never handed to an outbound listener"
        );
        assert_eq!(
            snapshot.bound_listener(15001).map(|l| l.name.as_str()),
            Some("virtualOutbound")
        );
    }

    #[test]
    fn chain_match_fields() {
        let facts = ConnectionFacts {
            original_dst: Some("10.1.2.3:80".parse().unwrap()),
            source: Some("10.1.9.9:40000".parse().unwrap()),
            transport: Some(Transport::RawBuffer),
            application_protocols: vec!["http/1.1".into()],
            server_name: None,
        };
        let m = |f: fn(&mut ChainMatch)| {
            let mut m = ChainMatch::default();
            f(&mut m);
            m.matches(&facts)
        };
        assert!(m(|_| {}));
        assert!(m(|m| m.destination_port = Some(80)));
        assert!(!m(|m| m.destination_port = Some(81)));
        assert!(m(|m| m.prefix_ranges = vec!["10.1.0.0/16".parse().unwrap()]));
        assert!(!m(
            |m| m.prefix_ranges = vec!["10.2.0.0/16".parse().unwrap()]
        ));
        assert!(m(
            |m| m.source_prefix_ranges = vec!["10.1.9.9".parse().unwrap()]
        ));
        assert!(m(|m| m.transport_protocol = Some(Transport::RawBuffer)));
        assert!(!m(|m| m.transport_protocol = Some(Transport::Tls)));
        assert!(m(
            |m| m.application_protocols = vec!["http/1.1".into(), "h2c".into()]
        ));
        assert!(!m(|m| m.application_protocols = vec!["h2c".into()]));
        assert!(!m(|m| m.server_names = vec!["a.example".into()]));
    }

    #[test]
    fn cidr_containment() {
        let c: Cidr = "10.96.0.0/12".parse().unwrap();
        assert!(c.contains("10.100.1.1".parse().unwrap()));
        assert!(!c.contains("10.112.0.1".parse().unwrap()));
        assert!(!c.contains("fd00::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd77::2".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
    }
}
