//! The shape of the static config file, as serde reads it. Every struct refuses unknown
//! keys, so that a misspelt key is an error naming it rather than a silently ignored
//! setting. Values are checked by the readers in [`super::de`]; checks that involve more
//! than one value are in [`super::build`]. The meaning of each key is documented in
//! [`super::reference`].

use serde::Deserialize;

use super::de::{
    AccessLogSpec, BindIp, CidrText, Count, DetectionSpec, Domain, Dur, EndpointSpec, ListenAddr,
    Name, Percent, Port, Prefix, Timeout, Weight, present,
};
use crate::snapshot::{Direction, Discovery, LbPolicy, Transport, UpstreamProtocol};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct Document {
    #[serde(default)]
    pub listeners: Vec<ListenerSpec>,
    #[serde(default)]
    pub clusters: Vec<ClusterSpec>,
    /// Absent: no access log. Written empty (`accessLog:`) is refused rather than read as
    /// either.
    #[serde(default, deserialize_with = "present")]
    pub access_log: Option<AccessLogSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ListenerSpec {
    pub name: Name,
    pub address: ListenAddr,
    #[serde(default)]
    pub bind_to_port: Option<bool>,
    #[serde(default)]
    pub use_original_dst: bool,
    #[serde(default)]
    pub direction: DirectionSpec,
    #[serde(default)]
    pub detection: Option<DetectionSpec>,
    #[serde(default)]
    pub chains: Vec<ChainSpec>,
    #[serde(default)]
    pub tcp: Option<TcpSpec>,
    #[serde(default)]
    pub http: Option<HttpSpec>,
    #[serde(default)]
    pub default_cluster: Option<Name>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub(super) enum DirectionSpec {
    #[default]
    #[serde(rename = "outbound", alias = "OUTBOUND")]
    Outbound,
    #[serde(rename = "inbound", alias = "INBOUND")]
    Inbound,
}

impl From<DirectionSpec> for Direction {
    fn from(d: DirectionSpec) -> Direction {
        match d {
            DirectionSpec::Outbound => Direction::Outbound,
            DirectionSpec::Inbound => Direction::Inbound,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ChainSpec {
    #[serde(default)]
    pub name: Option<Name>,
    #[serde(default, rename = "match")]
    pub matcher: MatchSpec,
    #[serde(default)]
    pub tcp: Option<TcpSpec>,
    #[serde(default)]
    pub http: Option<HttpSpec>,
    /// `false` lets connections to this chain's `destinationPort` skip detection.
    #[serde(default)]
    pub detection: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct MatchSpec {
    pub destination_port: Option<Port>,
    pub prefix_ranges: Vec<CidrText>,
    pub source_prefix_ranges: Vec<CidrText>,
    pub transport_protocol: Option<TransportSpec>,
    pub application_protocols: Vec<Name>,
    pub server_names: Vec<Name>,
}

/// Envoy's spellings of the transport protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum TransportSpec {
    RawBuffer,
    Tls,
}

impl From<TransportSpec> for Transport {
    fn from(t: TransportSpec) -> Transport {
        match t {
            TransportSpec::RawBuffer => Transport::RawBuffer,
            TransportSpec::Tls => Transport::Tls,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct TcpSpec {
    #[serde(default)]
    pub cluster: Option<Name>,
    #[serde(default)]
    pub weighted_clusters: Option<Vec<WeightedSpec>>,
    #[serde(default)]
    pub idle_timeout: Option<Dur>,
    #[serde(default)]
    pub stat_prefix: Option<Name>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct WeightedSpec {
    pub name: Name,
    pub weight: Weight,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct HttpSpec {
    /// Short for one virtual host with `domains: ["*"]`.
    #[serde(default)]
    pub routes: Option<Vec<RouteSpec>>,
    #[serde(default)]
    pub virtual_hosts: Option<Vec<VirtualHostSpec>>,
    #[serde(default)]
    pub stat_prefix: Option<Name>,
    #[serde(default)]
    pub use_remote_address: bool,
    /// `0s` means none.
    #[serde(default)]
    pub stream_idle_timeout: Option<Timeout>,
    #[serde(default)]
    pub request_headers_to_add: Vec<HeaderToAddSpec>,
    #[serde(default)]
    pub request_headers_to_remove: Vec<Name>,
    #[serde(default)]
    pub response_headers_to_add: Vec<HeaderToAddSpec>,
    #[serde(default)]
    pub response_headers_to_remove: Vec<Name>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct VirtualHostSpec {
    #[serde(default)]
    pub name: Option<Name>,
    #[serde(default)]
    pub domains: Option<Vec<Domain>>,
    pub routes: Vec<RouteSpec>,
    #[serde(default)]
    pub retry_policy: Option<RetryPolicySpec>,
    #[serde(default)]
    pub include_request_attempt_count: bool,
    #[serde(default)]
    pub request_headers_to_add: Vec<HeaderToAddSpec>,
    #[serde(default)]
    pub request_headers_to_remove: Vec<Name>,
    #[serde(default)]
    pub response_headers_to_add: Vec<HeaderToAddSpec>,
    #[serde(default)]
    pub response_headers_to_remove: Vec<Name>,
}

impl VirtualHostSpec {
    /// The virtual host that `http.routes` is short for.
    pub fn everything(routes: Vec<RouteSpec>) -> VirtualHostSpec {
        VirtualHostSpec {
            name: None,
            domains: None,
            routes,
            retry_policy: None,
            include_request_attempt_count: false,
            request_headers_to_add: Vec::new(),
            request_headers_to_remove: Vec::new(),
            response_headers_to_add: Vec::new(),
            response_headers_to_remove: Vec::new(),
        }
    }
}

/// A route: the short form `{prefix, cluster | weightedClusters}`, or Envoy's
/// `{match, route | directResponse}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RouteSpec {
    #[serde(default)]
    pub name: Option<Name>,
    #[serde(default)]
    pub prefix: Option<Prefix>,
    #[serde(default)]
    pub cluster: Option<Name>,
    #[serde(default)]
    pub weighted_clusters: Option<Vec<WeightedSpec>>,
    #[serde(default, rename = "match")]
    pub matcher: Option<RouteMatchSpec>,
    #[serde(default)]
    pub route: Option<RouteActionSpec>,
    #[serde(default)]
    pub direct_response: Option<DirectResponseSpec>,
    #[serde(default)]
    pub request_headers_to_add: Vec<HeaderToAddSpec>,
    #[serde(default)]
    pub request_headers_to_remove: Vec<Name>,
    #[serde(default)]
    pub response_headers_to_add: Vec<HeaderToAddSpec>,
    #[serde(default)]
    pub response_headers_to_remove: Vec<Name>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RouteMatchSpec {
    pub prefix: Option<Prefix>,
    pub path: Option<Prefix>,
    pub regex: Option<String>,
    pub path_separated_prefix: Option<Prefix>,
    pub case_sensitive: Option<bool>,
    pub headers: Vec<ValueMatchSpec>,
    pub query_parameters: Vec<ValueMatchSpec>,
}

/// A header or query-parameter matcher: a name and one way to match its value
/// (`invert` is for headers only).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ValueMatchSpec {
    pub name: Name,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub contains: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub present: Option<bool>,
    #[serde(default)]
    pub invert: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RouteActionSpec {
    #[serde(default)]
    pub cluster: Option<Name>,
    #[serde(default)]
    pub weighted_clusters: Option<Vec<WeightedSpec>>,
    #[serde(default)]
    pub prefix_rewrite: Option<String>,
    #[serde(default)]
    pub regex_rewrite: Option<RegexRewriteSpec>,
    #[serde(default)]
    pub host_rewrite: Option<Name>,
    #[serde(default)]
    pub timeout: Option<Timeout>,
    #[serde(default)]
    pub retry_policy: Option<RetryPolicySpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RegexRewriteSpec {
    pub pattern: String,
    pub substitution: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RetryPolicySpec {
    pub retry_on: String,
    #[serde(default)]
    pub num_retries: Option<u32>,
    #[serde(default)]
    pub per_try_timeout: Option<Dur>,
    #[serde(default)]
    pub retriable_status_codes: Vec<u16>,
    #[serde(default)]
    pub retry_host_predicate: Vec<Name>,
    #[serde(default)]
    pub backoff: Option<BackoffSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct BackoffSpec {
    pub base_interval: Dur,
    #[serde(default)]
    pub max_interval: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct DirectResponseSpec {
    pub status: u16,
    #[serde(default)]
    pub body: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct HeaderToAddSpec {
    pub name: Name,
    pub value: String,
    #[serde(default)]
    pub append: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ClusterSpec {
    pub name: Name,
    #[serde(default, rename = "type")]
    pub kind: KindSpec,
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
    #[serde(default)]
    pub lb_policy: Option<LbPolicySpec>,
    #[serde(default)]
    pub connect_timeout: Option<Dur>,
    #[serde(default)]
    pub upstream_bind: Option<BindIp>,
    #[serde(default)]
    pub protocol: Option<ProtocolSpec>,
    #[serde(default)]
    pub http_idle_timeout: Option<Dur>,
    #[serde(default)]
    pub retry_budget: Option<RetryBudgetSpec>,
}

/// The HTTP version spoken to a cluster's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(super) enum ProtocolSpec {
    Downstream,
    Http1,
    Http2,
}

impl From<ProtocolSpec> for UpstreamProtocol {
    fn from(p: ProtocolSpec) -> UpstreamProtocol {
        match p {
            ProtocolSpec::Downstream => UpstreamProtocol::Downstream,
            ProtocolSpec::Http1 => UpstreamProtocol::Http1,
            ProtocolSpec::Http2 => UpstreamProtocol::Http2,
        }
    }
}

/// Envoy's `retry_budget`; each key defaults to Envoy's value.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RetryBudgetSpec {
    pub budget_percent: Option<Percent>,
    pub min_retry_concurrency: Option<Count>,
}

/// Envoy's cluster discovery types that a static config can express, plus Skiff's
/// `BLACK_HOLE` (Envoy writes a STATIC cluster without endpoints for it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(super) enum KindSpec {
    #[default]
    Static,
    OriginalDst,
    BlackHole,
}

impl From<KindSpec> for Discovery {
    fn from(k: KindSpec) -> Discovery {
        match k {
            KindSpec::Static => Discovery::Static,
            KindSpec::OriginalDst => Discovery::OriginalDst,
            KindSpec::BlackHole => Discovery::BlackHole,
        }
    }
}

/// Envoy's and Istio's spellings; Istio's `LEAST_CONN` is its alias of `LEAST_REQUEST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(super) enum LbPolicySpec {
    RoundRobin,
    #[serde(alias = "LEAST_CONN")]
    LeastRequest,
    Random,
}

impl From<LbPolicySpec> for LbPolicy {
    fn from(p: LbPolicySpec) -> LbPolicy {
        match p {
            LbPolicySpec::RoundRobin => LbPolicy::RoundRobin,
            LbPolicySpec::LeastRequest => LbPolicy::LeastRequest,
            LbPolicySpec::Random => LbPolicy::Random,
        }
    }
}
