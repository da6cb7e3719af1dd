//! `Cluster` resources (CDS) into [`ClusterTemplate`]s: everything of a snapshot cluster but
//! its endpoints, which come from EDS, from the inline `load_assignment`, or from DNS.
//!
//! - Discovery: EDS (endpoints under `eds_cluster_config.service_name`, else the cluster's
//!   name), STATIC (the inline `load_assignment`; istiod's `BlackHoleCluster`, STATIC with no
//!   endpoints, refuses connections), STRICT_DNS and LOGICAL_DNS (the `load_assignment` hosts,
//!   resolved every `dns_refresh_rate`, default 5 s), ORIGINAL_DST (PassthroughCluster,
//!   InboundPassthroughCluster, headless services).
//! - `lb_policy` ROUND_ROBIN, LEAST_REQUEST, RANDOM (or the same three as a typed
//!   `load_balancing_policy`). ORIGINAL_DST ignores the policy (one destination).
//! - `connect_timeout`, default 5 s as in Envoy (istiod sends 10 s).
//! - `upstream_bind_config`: `source_address` plus `extra_source_addresses` /
//!   `additional_source_addresses`, at most one IP per family, port 0.
//! - HTTP version: `typed_extension_protocol_options["envoy.extensions.upstreams.http.v3
//!   .HttpProtocolOptions"]`: `explicit_http_config` h2 → HTTP/2, http/1 → HTTP/1.1;
//!   `use_downstream_protocol_config` → the client's version; `auto_config` → the client's
//!   version too (Skiff has no upstream ALPN yet). The legacy `http2_protocol_options` →
//!   HTTP/2. With none of these, HTTP/1.1, as in Envoy.
//! - `common_http_protocol_options.idle_timeout` → how long an idle pooled connection is
//!   kept; `0s` means never closed (Envoy's "disabled"). **Absent, Skiff keeps its 4 s default
//!   where Envoy keeps 1 h**: closing before the usual 5 s server keep-alive avoids the 503
//!   `UC` race (istio#45802, #55138).
//! - `circuit_breakers.thresholds[priority DEFAULT].retry_budget` (`budget_percent`,
//!   `min_retry_concurrency`; Envoy's defaults 20 % and 3). Without one Skiff still applies
//!   its default budget (20 %, 3), where Envoy would count only `max_retries`.
//! - TLS: a `transport_socket` `envoy.transport_sockets.tls` (`UpstreamTlsContext`: `sni`,
//!   ALPN, exact SANs, SDS secret names) → TLS for every endpoint; istiod's auto-mTLS
//!   `transport_socket_matches` (`{tlsMode: istio}` → TLS, `{}` → raw_buffer) → TLS only for
//!   endpoints whose metadata says `tlsMode: istio`; raw_buffer or none → plaintext. The ALPN
//!   `istio-peer-exchange` is dropped (Skiff does not speak the TCP metadata exchange, so it
//!   offers `istio` alone, as spec/proxy.md section 1 asks).
//!
//! Refused (NACK): `cluster_type` (custom clusters), RING_HASH and MAGLEV (consistent hashing
//! promises session affinity that Skiff's balancers would break), CLUSTER_PROVIDED outside
//! ORIGINAL_DST, ORIGINAL_DST by HTTP header, EDS from a source other than ADS, HTTP/3,
//! transport sockets other than TLS and raw_buffer (PROXY protocol, HBONE/internal upstream),
//! transport-socket matches other than istiod's auto-mTLS, inline certificates or CA, SAN
//! matchers other than `exact`, unknown protocol options, upstream network filters other than
//! Istio's metadata exchange.
//!
//! Accepted but not honoured:
//! - `circuit_breakers` thresholds (`max_connections`, `max_pending_requests`,
//!   `max_requests`, `max_retries`, `track_remaining`, `max_connection_pools`,
//!   `per_host_thresholds`; istiod sends uint32 max) and `retry_budget.budget_interval`;
//! - `outlier_detection`, `health_checks`, `common_lb_config` (`healthy_panic_threshold`,
//!   `locality_weighted_lb_config`, zone-aware routing, `update_merge_window`, ...),
//!   `lb_subset_config`, the slow start / `choice_count` / `active_request_bias` of
//!   `round_robin_lb_config` and `least_request_lb_config`,
//!   `original_dst_lb_config.upstream_port_override` (the connection keeps its own port);
//! - `max_requests_per_connection` (cluster and `common_http_protocol_options`), the other
//!   `common_http_protocol_options` (`max_connection_duration`, `max_headers_count`,
//!   `max_stream_duration`, `headers_with_underscores_action`), the HTTP/1 and HTTP/2 option
//!   details (e.g. `max_concurrent_streams`), `upstream_http_protocol_options` (`auto_sni`,
//!   `auto_san_validation`), `envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions`;
//! - `dns_lookup_family` (all A and AAAA answers are used), `respect_dns_ttl`, `dns_jitter`,
//!   `dns_failure_refresh_rate`, `dns_resolvers`, `dns_resolution_config`,
//!   `typed_dns_resolver_config`, `use_tcp_for_dns_lookups`; LOGICAL_DNS uses every address
//!   of its host, like STRICT_DNS, where Envoy connects to the first;
//! - `metadata`, `filters` (`istio.metadata_exchange`), `alt_stat_name`, `stats_matcher`,
//!   `track_cluster_stats`, `track_timeout_budgets`, `lrs_server`;
//! - `upstream_connection_options` (TCP keep-alive), `per_connection_buffer_limit_bytes`,
//!   `cleanup_interval`, `wait_for_warm_on_init`, `preconnect_policy`,
//!   `close_connections_on_host_health_failure`, `ignore_health_on_host_removal`,
//!   `connection_pool_per_downstream_connection`, `upstream_config`;
//! - `upstream_bind_config.freebind`, `socket_options`, `local_address_selector`;
//! - `eds_config.initial_fetch_timeout` and `resource_api_version`;
//! - in `UpstreamTlsContext`: `tls_params` (versions, ciphers, curves), `auto_host_sni`,
//!   `auto_sni_san_validation`, `allow_renegotiation`, `max_session_keys`, and the validation
//!   context's fields other than SANs (`system_root_certs`, `verify_certificate_spki` /
//!   `_hash`, `crl`, `max_verify_depth`, ...).

use std::net::IpAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, ClusterProtocolSelection, DiscoveryType, LbConfig, LbPolicy as XdsLb,
};
use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster as XdsCluster, LoadBalancingPolicy,
};
use envoy_types::pb::envoy::config::core::v3::{
    BindConfig, RoutingPriority, SocketAddress, config_source, socket_address,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
};
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
use prost::{Message, Name};

use super::endpoint::{kept_endpoints, load_assignment};
use super::{EndpointSpec, Invalid};
use crate::snapshot::{
    BLACKHOLE_CLUSTER, Cluster, DEFAULT_HTTP_IDLE_TIMEOUT, Discovery, LbPolicy, RetryBudget,
    UpstreamProtocol, UpstreamTransport,
};

#[path = "cluster_tls.rs"]
mod tls;
use tls::transport;

/// Envoy's `connect_timeout` when the cluster gives none.
pub const ENVOY_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Envoy's `dns_refresh_rate` when the cluster gives none.
pub const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(5);
/// The `typed_extension_protocol_options` key of the HTTP upstream options.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
const TCP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.tcp.v3.TcpProtocolOptions";
/// Upstream network filters accepted and ignored: Istio's TCP metadata exchange.
const IGNORED_FILTERS: &[&str] = &[
    "istio.metadata_exchange",
    "envoy.filters.network.upstream.metadata_exchange",
];
/// The ALPN of Istio's TCP metadata exchange, dropped from the ALPN Skiff offers.
pub const PEER_EXCHANGE_ALPN: &str = "istio-peer-exchange";
const TLS_SOCKET: &str = "envoy.transport_sockets.tls";
const RAW_BUFFER_SOCKET: &str = "envoy.transport_sockets.raw_buffer";

/// Where a cluster's endpoints come from.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterSource {
    /// Endpoints from EDS, under this name (eds_cluster_config.service_name, else the cluster name).
    Eds {
        service_name: String,
    },
    /// STATIC with its inline load_assignment.
    Static {
        endpoints: Vec<EndpointSpec>,
    },
    /// STRICT_DNS / LOGICAL_DNS: resolve these hosts (system resolver) every `refresh`.
    Dns {
        targets: Vec<DnsTarget>,
        refresh: Duration,
    },
    OriginalDst,
    BlackHole,
}

/// A host of a DNS cluster, with what each of its addresses inherits.
#[derive(Debug, Clone, PartialEq)]
pub struct DnsTarget {
    pub host: String,
    pub port: u16,
    pub weight: u32,
    pub tls_mode_istio: bool,
    pub locality: Option<String>,
}

/// Everything of a cluster but its endpoints, so the snapshot can be rebuilt when only EDS changes.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterTemplate {
    pub name: String,
    pub source: ClusterSource,
    pub lb_policy: LbPolicy,
    pub connect_timeout: Duration,
    pub upstream_bind: Vec<IpAddr>,
    pub protocol: UpstreamProtocol,
    pub http_idle_timeout: Duration,
    pub retry_budget: RetryBudget,
    pub transport: UpstreamTransport,
}

impl ClusterTemplate {
    /// The snapshot cluster. `endpoints` are those EDS delivered (EDS clusters) or DNS resolved
    /// (STRICT_DNS, LOGICAL_DNS); a STATIC cluster uses its own inline ones and ORIGINAL_DST
    /// and black-hole clusters have none, whatever `endpoints` holds.
    pub fn build(&self, endpoints: &[EndpointSpec]) -> Cluster {
        let specs = match &self.source {
            ClusterSource::Eds { .. } | ClusterSource::Dns { .. } => endpoints,
            ClusterSource::Static { endpoints } => endpoints.as_slice(),
            ClusterSource::OriginalDst | ClusterSource::BlackHole => &[],
        };
        let discovery = match self.source {
            ClusterSource::OriginalDst => Discovery::OriginalDst,
            ClusterSource::BlackHole => Discovery::BlackHole,
            _ => Discovery::Static,
        };
        let endpoints = specs.iter().map(EndpointSpec::to_endpoint).collect();
        let mut cluster = Cluster::new(self.name.clone(), discovery, endpoints);
        cluster.lb_policy = self.lb_policy;
        cluster.connect_timeout = self.connect_timeout;
        cluster.upstream_bind = self.upstream_bind.clone();
        cluster.protocol = self.protocol;
        cluster.http_idle_timeout = self.http_idle_timeout;
        cluster.retry_budget = self.retry_budget;
        cluster.transport = self.transport.clone();
        cluster
    }
}

/// Translates one CDS resource.
pub fn cluster(c: &XdsCluster) -> Result<ClusterTemplate, Invalid> {
    if c.name.is_empty() {
        return Err(Invalid::new("name", "is empty"));
    }
    let kind = discovery_type(c)?;
    let source = source(c, kind)?;
    let lb_policy = lb_policy(c, kind)?;
    let connect_timeout =
        duration(c.connect_timeout.as_ref(), "connect_timeout")?.unwrap_or(ENVOY_CONNECT_TIMEOUT);
    let upstream_bind = match &c.upstream_bind_config {
        Some(bind) => upstream_bind(bind).map_err(|e| e.at("upstream_bind_config"))?,
        None => Vec::new(),
    };
    let (protocol, http_idle_timeout) = http_options(c)?;
    let retry_budget = match &c.circuit_breakers {
        Some(cb) => retry_budget(cb).map_err(|e| e.at("circuit_breakers"))?,
        None => RetryBudget::default(),
    };
    let transport = transport(c)?;
    filters(c)?;
    Ok(ClusterTemplate {
        name: c.name.clone(),
        source,
        lb_policy,
        connect_timeout,
        upstream_bind,
        protocol,
        http_idle_timeout,
        retry_budget,
        transport,
    })
}

fn discovery_type(c: &XdsCluster) -> Result<DiscoveryType, Invalid> {
    match &c.cluster_discovery_type {
        None => Ok(DiscoveryType::Static),
        Some(ClusterDiscoveryType::Type(t)) => DiscoveryType::try_from(*t)
            .map_err(|_| Invalid::new("type", format!("{t} is not a known discovery type"))),
        Some(ClusterDiscoveryType::ClusterType(custom)) => Err(Invalid::new(
            "cluster_type",
            format!(
                "custom cluster type {:?} is not supported; use type STATIC, STRICT_DNS, \
                 LOGICAL_DNS, EDS or ORIGINAL_DST",
                custom.name
            ),
        )),
    }
}

fn source(c: &XdsCluster, kind: DiscoveryType) -> Result<ClusterSource, Invalid> {
    match kind {
        DiscoveryType::Eds => {
            let mut service_name = c.name.clone();
            if let Some(eds) = &c.eds_cluster_config {
                if !eds.service_name.is_empty() {
                    service_name.clone_from(&eds.service_name);
                }
                let specifier = eds
                    .eds_config
                    .as_ref()
                    .and_then(|s| s.config_source_specifier.as_ref());
                let over_ads = matches!(
                    specifier,
                    None | Some(
                        config_source::ConfigSourceSpecifier::Ads(_)
                            | config_source::ConfigSourceSpecifier::Self_(_)
                    )
                );
                if !over_ads {
                    return Err(Invalid::new(
                        "eds_cluster_config.eds_config",
                        "Skiff receives endpoints only on the ADS stream; use ads: {}",
                    ));
                }
            }
            Ok(ClusterSource::Eds { service_name })
        }
        DiscoveryType::Static => {
            let endpoints = match &c.load_assignment {
                Some(cla) => load_assignment(cla).map_err(|e| e.at("load_assignment"))?,
                None => Vec::new(),
            };
            if endpoints.is_empty() && c.name == BLACKHOLE_CLUSTER {
                Ok(ClusterSource::BlackHole)
            } else {
                Ok(ClusterSource::Static { endpoints })
            }
        }
        DiscoveryType::StrictDns | DiscoveryType::LogicalDns => {
            let kept = match &c.load_assignment {
                Some(cla) => kept_endpoints(cla, |host| Ok(host.to_owned()))
                    .map_err(|e| e.at("load_assignment"))?,
                None => Vec::new(),
            };
            let targets = kept
                .into_iter()
                .map(|k| DnsTarget {
                    host: k.host,
                    port: k.port,
                    weight: k.weight,
                    tls_mode_istio: k.tls_mode_istio,
                    locality: k.locality,
                })
                .collect();
            #[allow(deprecated)]
            let refresh = duration(c.dns_refresh_rate.as_ref(), "dns_refresh_rate")?;
            let refresh = match refresh {
                None => DEFAULT_DNS_REFRESH,
                Some(r) if r >= Duration::from_millis(1) => r,
                Some(_) => {
                    return Err(Invalid::new("dns_refresh_rate", "must be at least 1ms"));
                }
            };
            Ok(ClusterSource::Dns { targets, refresh })
        }
        DiscoveryType::OriginalDst => {
            if let Some(LbConfig::OriginalDstLbConfig(o)) = &c.lb_config
                && o.use_http_header
            {
                return Err(Invalid::new(
                    "original_dst_lb_config.use_http_header",
                    "Skiff connects to the connection's own original destination; choosing it \
                     by an HTTP header is not supported",
                ));
            }
            Ok(ClusterSource::OriginalDst)
        }
    }
}

fn lb_policy(c: &XdsCluster, kind: DiscoveryType) -> Result<LbPolicy, Invalid> {
    if kind == DiscoveryType::OriginalDst {
        // One destination per connection: nothing to balance (istiod says CLUSTER_PROVIDED).
        return Ok(LbPolicy::LeastRequest);
    }
    if let Some(policy) = &c.load_balancing_policy {
        return typed_lb_policy(policy).map_err(|e| e.at("load_balancing_policy"));
    }
    match XdsLb::try_from(c.lb_policy) {
        Ok(XdsLb::RoundRobin) => Ok(LbPolicy::RoundRobin),
        Ok(XdsLb::LeastRequest) => Ok(LbPolicy::LeastRequest),
        Ok(XdsLb::Random) => Ok(LbPolicy::Random),
        Ok(p @ (XdsLb::RingHash | XdsLb::Maglev)) => {
            Err(consistent_hash("lb_policy", p.as_str_name()))
        }
        Ok(XdsLb::ClusterProvided) => Err(Invalid::new(
            "lb_policy",
            "CLUSTER_PROVIDED is only meaningful for ORIGINAL_DST clusters",
        )),
        Ok(XdsLb::LoadBalancingPolicyConfig) => Err(Invalid::new(
            "lb_policy",
            "LOAD_BALANCING_POLICY_CONFIG needs load_balancing_policy",
        )),
        Err(_) => Err(Invalid::new(
            "lb_policy",
            format!("{} is not a known load-balancing policy", c.lb_policy),
        )),
    }
}

fn consistent_hash(field: &str, policy: &str) -> Invalid {
    Invalid::new(
        field,
        format!(
            "{policy} (a DestinationRule's consistentHash) is not supported: Skiff would spread \
             the requests that consistent hashing keeps on one endpoint (session affinity); \
             use ROUND_ROBIN, LEAST_REQUEST or RANDOM"
        ),
    )
}

/// Envoy takes the first policy of the list it supports.
fn typed_lb_policy(policy: &LoadBalancingPolicy) -> Result<LbPolicy, Invalid> {
    const PREFIX: &str = "envoy.extensions.load_balancing_policies.";
    for (i, p) in policy.policies.iter().enumerate() {
        let Some(any) = p
            .typed_extension_config
            .as_ref()
            .and_then(|t| t.typed_config.as_ref())
        else {
            continue;
        };
        match type_name(&any.type_url).strip_prefix(PREFIX) {
            Some("round_robin.v3.RoundRobin") => return Ok(LbPolicy::RoundRobin),
            Some("least_request.v3.LeastRequest") => return Ok(LbPolicy::LeastRequest),
            Some("random.v3.Random") => return Ok(LbPolicy::Random),
            Some(t @ ("ring_hash.v3.RingHash" | "maglev.v3.Maglev")) => {
                return Err(consistent_hash(&format!("policies[{i}]"), t));
            }
            _ => {}
        }
    }
    Err(Invalid::new(
        "policies",
        "none is supported; Skiff balances with round_robin, least_request or random",
    ))
}

/// A protobuf duration as a std one; negative or malformed ones are refused.
fn duration(d: Option<&PbDuration>, field: &str) -> Result<Option<Duration>, Invalid> {
    let Some(d) = d else { return Ok(None) };
    match (u64::try_from(d.seconds), u32::try_from(d.nanos)) {
        (Ok(s), Ok(n)) if n < 1_000_000_000 => Ok(Some(Duration::new(s, n))),
        _ => Err(Invalid::new(
            field,
            format!(
                "{}s {}ns is not a valid non-negative duration",
                d.seconds, d.nanos
            ),
        )),
    }
}

#[allow(deprecated)] // additional_source_addresses: istiod still sends it to older proxies.
fn upstream_bind(bind: &BindConfig) -> Result<Vec<IpAddr>, Invalid> {
    let mut addrs = Vec::new();
    if let Some(a) = &bind.source_address {
        bind_address(&mut addrs, a).map_err(|e| e.at("source_address"))?;
    }
    for (i, extra) in bind.extra_source_addresses.iter().enumerate() {
        let at = format!("extra_source_addresses[{i}].address");
        let a = extra
            .address
            .as_ref()
            .ok_or_else(|| Invalid::new(&at, "is missing"))?;
        bind_address(&mut addrs, a).map_err(|e| e.at(&at))?;
    }
    for (i, a) in bind.additional_source_addresses.iter().enumerate() {
        bind_address(&mut addrs, a)
            .map_err(|e| e.at(&format!("additional_source_addresses[{i}]")))?;
    }
    Ok(addrs)
}

fn bind_address(addrs: &mut Vec<IpAddr>, a: &SocketAddress) -> Result<(), Invalid> {
    let ip: IpAddr = a
        .address
        .parse()
        .map_err(|_| Invalid::new("address", format!("{:?} is not an IP address", a.address)))?;
    match a.port_specifier {
        None | Some(socket_address::PortSpecifier::PortValue(0)) => {}
        _ => {
            return Err(Invalid::new(
                "port_value",
                "Skiff binds only the source address; the port must be 0 (any)",
            ));
        }
    }
    if let Some(other) = addrs.iter().find(|o| o.is_ipv4() == ip.is_ipv4()) {
        return Err(Invalid::new(
            "address",
            format!(
                "{ip} is a second source address of the family of {other}; give at most one per family"
            ),
        ));
    }
    addrs.push(ip);
    Ok(())
}

/// The upstream HTTP version and pool idle timeout.
#[allow(deprecated)] // the legacy per-cluster protocol fields, still honoured
fn http_options(c: &XdsCluster) -> Result<(UpstreamProtocol, Duration), Invalid> {
    let mut protocol = if c.http2_protocol_options.is_none() {
        UpstreamProtocol::Http1
    } else if c.protocol_selection == ClusterProtocolSelection::UseDownstreamProtocol as i32 {
        UpstreamProtocol::Downstream
    } else {
        UpstreamProtocol::Http2
    };
    let mut idle = c
        .common_http_protocol_options
        .as_ref()
        .and_then(|o| o.idle_timeout.as_ref());
    let field = |key: &str| format!("typed_extension_protocol_options[{key:?}]");
    let mut keys: Vec<&String> = c.typed_extension_protocol_options.keys().collect();
    keys.sort();
    let mut typed: Option<HttpProtocolOptions> = None;
    for key in keys {
        match key.as_str() {
            HTTP_PROTOCOL_OPTIONS => {
                let any = &c.typed_extension_protocol_options[key];
                typed = Some(decode(any).map_err(|e| e.at(&field(key)))?);
            }
            TCP_PROTOCOL_OPTIONS => {}
            other => {
                return Err(Invalid::new(
                    field(other),
                    format!(
                        "protocol options {other:?} are not supported; Skiff reads only {HTTP_PROTOCOL_OPTIONS}"
                    ),
                ));
            }
        }
    }
    if let Some(options) = &typed {
        let at = |f: &str| format!("{}.{f}", field(HTTP_PROTOCOL_OPTIONS));
        if let Some(common) = &options.common_http_protocol_options {
            idle = common.idle_timeout.as_ref().or(idle);
        }
        match &options.upstream_protocol_options {
            Some(UpstreamProtocolOptions::ExplicitHttpConfig(explicit)) => {
                protocol = match &explicit.protocol_config {
                    Some(ProtocolConfig::HttpProtocolOptions(_)) => UpstreamProtocol::Http1,
                    Some(ProtocolConfig::Http2ProtocolOptions(_)) => UpstreamProtocol::Http2,
                    Some(ProtocolConfig::Http3ProtocolOptions(_)) => {
                        return Err(Invalid::new(
                            at("explicit_http_config.http3_protocol_options"),
                            "HTTP/3 is not supported; use HTTP/1.1 or HTTP/2",
                        ));
                    }
                    None => {
                        return Err(Invalid::new(
                            at("explicit_http_config"),
                            "names no protocol; give http_protocol_options or http2_protocol_options",
                        ));
                    }
                };
            }
            Some(
                UpstreamProtocolOptions::UseDownstreamProtocolConfig(_)
                | UpstreamProtocolOptions::AutoConfig(_),
            ) => protocol = UpstreamProtocol::Downstream,
            None => {}
        }
    }
    let idle = match duration(idle, "common_http_protocol_options.idle_timeout")? {
        None => DEFAULT_HTTP_IDLE_TIMEOUT,
        Some(Duration::ZERO) => Duration::MAX,
        Some(d) => d,
    };
    Ok((protocol, idle))
}

fn retry_budget(cb: &CircuitBreakers) -> Result<RetryBudget, Invalid> {
    let default = RoutingPriority::Default as i32;
    let Some((i, budget)) = cb
        .thresholds
        .iter()
        .enumerate()
        .find(|(_, t)| t.priority == default)
        .and_then(|(i, t)| Some((i, t.retry_budget.as_ref()?)))
    else {
        return Ok(RetryBudget::default());
    };
    let mut out = RetryBudget::default();
    if let Some(p) = &budget.budget_percent {
        if !(0.0..=100.0).contains(&p.value) {
            return Err(Invalid::new(
                format!("thresholds[{i}].retry_budget.budget_percent"),
                format!("{} is not a percentage (0-100)", p.value),
            ));
        }
        out.budget_percent = p.value;
    }
    if let Some(n) = &budget.min_retry_concurrency {
        out.min_retry_concurrency = n.value;
    }
    Ok(out)
}

fn filters(c: &XdsCluster) -> Result<(), Invalid> {
    for (i, f) in c.filters.iter().enumerate() {
        if !IGNORED_FILTERS.contains(&f.name.as_str()) {
            return Err(Invalid::new(
                format!("filters[{i}]"),
                format!(
                    "upstream network filter {:?} is not supported; Skiff accepts only Istio's \
                     metadata exchange (ignored)",
                    f.name
                ),
            ));
        }
    }
    Ok(())
}

/// The message name of a type URL (`type.googleapis.com/a.b.C` → `a.b.C`).
fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

/// Decodes a typed config, checking its type first.
fn decode<M: Message + Name + Default>(any: &Any) -> Result<M, Invalid> {
    let want = M::full_name();
    if type_name(&any.type_url) != want {
        return Err(Invalid::new(
            "",
            format!("is a {:?}; expected {want}", any.type_url),
        ));
    }
    M::decode(any.value.as_slice())
        .map_err(|e| Invalid::new("", format!("cannot be decoded as {want}: {e}")))
}

#[cfg(test)]
#[path = "cluster_tests.rs"]
mod tests;
