//! Builders of the resources istiod sends a sidecar (see `spec/proxy.md` section 1), shaped
//! like a real sidecar's config dump, each returned as a `(name, Any)` pair ready for
//! [`XdsServer::set`](crate::xds_server::XdsServer::set).
//!
//! Listeners are in [`listeners`] (re-exported here); clusters, endpoints and routes below.

mod listeners;

pub use listeners::*;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use envoy_types::pb::envoy::config::cluster::v3::{self as cluster, Cluster};
use envoy_types::pb::envoy::config::core::v3::{
    self as core, Address, AggregatedConfigSource, ApiVersion, BindConfig, ConfigSource,
    SocketAddress,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::route::v3::{
    self as route, HeaderMatcher, RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch,
    VirtualHost, WeightedCluster,
};
use envoy_types::pb::envoy::extensions::retry::host::previous_hosts::v3::PreviousHostsPredicate;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration, Struct, UInt32Value};
use prost::{Message, Name};

/// Istio's cluster names.
pub const PASSTHROUGH_CLUSTER: &str = "PassthroughCluster";
pub const INBOUND_PASSTHROUGH_CLUSTER: &str = "InboundPassthroughCluster";
pub const BLACKHOLE_CLUSTER: &str = "BlackHoleCluster";
/// The source address of inbound connections to the app (so the capture rules skip them).
pub const INBOUND_PASSTHROUGH_BIND: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);

/// Packs a message into envoy-types' `Any`.
pub fn pack<M: Message + Name>(msg: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: msg.encode_to_vec(),
    }
}

/// Decodes an `Any` back into `M`; `None` when the type URL or the bytes do not fit.
pub fn unpack<M: Message + Name + Default>(any: &Any) -> Option<M> {
    if any.type_url != M::type_url() {
        return None;
    }
    M::decode(any.value.as_slice()).ok()
}

fn named<M: Message + Name>(name: impl Into<String>, msg: &M) -> (String, Any) {
    (name.into(), pack(msg))
}

/// `udpa.type.v1.TypedStruct` (same wire form as `xds.type.v3.TypedStruct`), which istiod
/// wraps its own filters' configs in; envoy-types has no Rust type for it.
#[derive(Clone, PartialEq, Message)]
pub struct TypedStruct {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<Struct>,
}

pub const TYPED_STRUCT_URL: &str = "type.googleapis.com/udpa.type.v1.TypedStruct";

/// An `Any` holding a `TypedStruct` for the config type `inner_type_url` with `value`.
pub fn typed_struct(inner_type_url: &str, value: Struct) -> Any {
    Any {
        type_url: TYPED_STRUCT_URL.to_string(),
        value: TypedStruct {
            type_url: inner_type_url.to_string(),
            value: Some(value),
        }
        .encode_to_vec(),
    }
}

pub(crate) fn seconds(seconds: i64) -> Option<Duration> {
    Some(Duration { seconds, nanos: 0 })
}

pub(crate) fn bool_value(value: bool) -> Option<BoolValue> {
    Some(BoolValue { value })
}

pub(crate) fn u32_value(value: u32) -> Option<UInt32Value> {
    Some(UInt32Value { value })
}

pub(crate) fn socket_address(ip: IpAddr, port: u16) -> Option<Address> {
    Some(Address {
        address: Some(core::address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(core::socket_address::PortSpecifier::PortValue(u32::from(
                port,
            ))),
            ..Default::default()
        })),
    })
}

/// `{ads: {}, initial_fetch_timeout: 0s, resource_api_version: V3}`, as istiod writes it.
pub fn ads_config_source() -> ConfigSource {
    ConfigSource {
        initial_fetch_timeout: seconds(0),
        resource_api_version: ApiVersion::V3 as i32,
        config_source_specifier: Some(core::config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        ..Default::default()
    }
}

/// Istio's outbound cluster name: `outbound|<port>|<subset>|<fqdn>`.
pub fn outbound_cluster_name(port: u16, subset: &str, fqdn: &str) -> String {
    format!("outbound|{port}|{subset}|{fqdn}")
}

/// Istio's inbound cluster name: `inbound|<port>||`.
pub fn inbound_cluster_name(port: u16) -> String {
    format!("inbound|{port}||")
}

// ---------------------------------------------------------------------------------------
// Clusters

/// Circuit breakers at uint32 max with `track_remaining`, as istiod's defaults.
fn default_circuit_breakers() -> cluster::CircuitBreakers {
    cluster::CircuitBreakers {
        thresholds: vec![cluster::circuit_breakers::Thresholds {
            max_connections: u32_value(u32::MAX),
            max_pending_requests: u32_value(u32::MAX),
            max_requests: u32_value(u32::MAX),
            max_retries: u32_value(u32::MAX),
            track_remaining: true,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// `typed_extension_protocol_options` with HttpProtocolOptions using the downstream's
/// protocol (what istiod sets for auto-detected ports).
fn use_downstream_protocol() -> HashMap<String, Any> {
    use envoy_types::pb::envoy::config::core::v3::{Http1ProtocolOptions, Http2ProtocolOptions};
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
        UpstreamProtocolOptions, UseDownstreamHttpConfig,
    };
    let options = HttpProtocolOptions {
        common_http_protocol_options: Some(core::HttpProtocolOptions {
            idle_timeout: seconds(3600),
            ..Default::default()
        }),
        upstream_protocol_options: Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(
            UseDownstreamHttpConfig {
                http_protocol_options: Some(Http1ProtocolOptions::default()),
                http2_protocol_options: Some(Http2ProtocolOptions {
                    max_concurrent_streams: u32_value(1 << 30),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )),
        ..Default::default()
    };
    HashMap::from([(HttpProtocolOptions::full_name(), pack(&options))])
}

fn discovery(
    kind: cluster::cluster::DiscoveryType,
) -> Option<cluster::cluster::ClusterDiscoveryType> {
    Some(cluster::cluster::ClusterDiscoveryType::Type(kind as i32))
}

fn bind_inbound_passthrough() -> Option<BindConfig> {
    let Some(Address {
        address: Some(core::address::Address::SocketAddress(source)),
    }) = socket_address(IpAddr::V4(INBOUND_PASSTHROUGH_BIND), 0)
    else {
        unreachable!("socket_address builds a socket address")
    };
    Some(BindConfig {
        source_address: Some(source),
        ..Default::default()
    })
}

/// An outbound EDS cluster (`outbound|9080||reviews.default.svc.cluster.local`): endpoints
/// over ADS, connect_timeout 10 s, LEAST_REQUEST, istiod's circuit breakers, and HTTP
/// protocol options that follow the downstream protocol.
pub fn eds_cluster(name: &str) -> (String, Any) {
    use cluster::cluster::{DiscoveryType, EdsClusterConfig, LbPolicy};
    let c = Cluster {
        name: name.to_string(),
        cluster_discovery_type: discovery(DiscoveryType::Eds),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads_config_source()),
            service_name: name.to_string(),
        }),
        connect_timeout: seconds(10),
        lb_policy: LbPolicy::LeastRequest as i32,
        circuit_breakers: Some(default_circuit_breakers()),
        typed_extension_protocol_options: use_downstream_protocol(),
        common_lb_config: Some(cluster::cluster::CommonLbConfig {
            locality_config_specifier: Some(
                cluster::cluster::common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                    Default::default(),
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    named(name, &c)
}

/// `inbound|<port>||`: STATIC to the app on 127.0.0.1:<port>, connecting from 127.0.0.6.
pub fn static_inbound_cluster(port: u16) -> (String, Any) {
    use cluster::cluster::{DiscoveryType, LbPolicy};
    let name = inbound_cluster_name(port);
    let c = Cluster {
        name: name.clone(),
        cluster_discovery_type: discovery(DiscoveryType::Static),
        connect_timeout: seconds(10),
        lb_policy: LbPolicy::RoundRobin as i32,
        circuit_breakers: Some(default_circuit_breakers()),
        upstream_bind_config: bind_inbound_passthrough(),
        load_assignment: Some(load_assignment(
            &name,
            &[(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port), 1)],
        )),
        ..Default::default()
    };
    named(name, &c)
}

/// PassthroughCluster (ORIGINAL_DST, CLUSTER_PROVIDED), InboundPassthroughCluster
/// (ORIGINAL_DST from 127.0.0.6) and BlackHoleCluster (STATIC, no endpoints).
pub fn passthrough_clusters() -> Vec<(String, Any)> {
    use cluster::cluster::{DiscoveryType, LbPolicy};
    let passthrough = Cluster {
        name: PASSTHROUGH_CLUSTER.to_string(),
        cluster_discovery_type: discovery(DiscoveryType::OriginalDst),
        connect_timeout: seconds(10),
        lb_policy: LbPolicy::ClusterProvided as i32,
        circuit_breakers: Some(default_circuit_breakers()),
        typed_extension_protocol_options: use_downstream_protocol(),
        ..Default::default()
    };
    let inbound = Cluster {
        name: INBOUND_PASSTHROUGH_CLUSTER.to_string(),
        upstream_bind_config: bind_inbound_passthrough(),
        ..passthrough.clone()
    };
    let blackhole = Cluster {
        name: BLACKHOLE_CLUSTER.to_string(),
        cluster_discovery_type: discovery(DiscoveryType::Static),
        connect_timeout: seconds(10),
        ..Default::default()
    };
    vec![
        named(PASSTHROUGH_CLUSTER, &passthrough),
        named(INBOUND_PASSTHROUGH_CLUSTER, &inbound),
        named(BLACKHOLE_CLUSTER, &blackhole),
    ]
}

// ---------------------------------------------------------------------------------------
// Endpoints

fn load_assignment(cluster: &str, endpoints: &[(SocketAddr, u32)]) -> ClusterLoadAssignment {
    use envoy_types::pb::envoy::config::endpoint::v3::cluster_load_assignment::Policy;
    let lb_endpoints: Vec<LbEndpoint> = endpoints
        .iter()
        .map(|(addr, weight)| LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: socket_address(addr.ip(), addr.port()),
                ..Default::default()
            })),
            health_status: core::HealthStatus::Healthy as i32,
            load_balancing_weight: u32_value(*weight),
            ..Default::default()
        })
        .collect();
    let total: u32 = endpoints.iter().map(|(_, w)| *w).sum();
    ClusterLoadAssignment {
        cluster_name: cluster.to_string(),
        endpoints: if lb_endpoints.is_empty() {
            Vec::new()
        } else {
            vec![LocalityLbEndpoints {
                locality: Some(core::Locality::default()),
                lb_endpoints,
                load_balancing_weight: u32_value(total.max(1)),
                ..Default::default()
            }]
        },
        policy: Some(Policy {
            overprovisioning_factor: u32_value(140),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The ClusterLoadAssignment of `cluster`: one locality with the endpoints and their weights
/// (no `tlsMode` metadata: no mTLS yet).
pub fn endpoints(cluster: &str, endpoints: &[(SocketAddr, u32)]) -> (String, Any) {
    named(cluster, &load_assignment(cluster, endpoints))
}

// ---------------------------------------------------------------------------------------
// Routes

/// A RouteConfiguration (RDS name = the port, e.g. "9080").
pub fn route_config(name: &str, vhosts: Vec<VirtualHost>) -> (String, Any) {
    named(name, &route_configuration(name, vhosts))
}

pub(crate) fn route_configuration(name: &str, vhosts: Vec<VirtualHost>) -> RouteConfiguration {
    RouteConfiguration {
        name: name.to_string(),
        virtual_hosts: vhosts,
        validate_clusters: bool_value(false),
        ..Default::default()
    }
}

/// A virtual host (e.g. `reviews.default.svc.cluster.local:9080` with its domains).
pub fn vhost(name: &str, domains: &[&str], routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: name.to_string(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
        include_request_attempt_count: true,
        ..Default::default()
    }
}

/// istiod's default retry policy.
pub fn default_retry_policy() -> RetryPolicy {
    RetryPolicy {
        retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
            .to_string(),
        num_retries: u32_value(2),
        retry_host_predicate: vec![route::retry_policy::RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".to_string(),
            config_type: Some(
                route::retry_policy::retry_host_predicate::ConfigType::TypedConfig(pack(
                    &PreviousHostsPredicate {},
                )),
            ),
        }],
        host_selection_retry_max_attempts: 5,
        retriable_status_codes: vec![503],
        ..Default::default()
    }
}

fn prefix_match(prefix: &str) -> RouteMatch {
    RouteMatch {
        path_specifier: Some(route::route_match::PathSpecifier::Prefix(
            prefix.to_string(),
        )),
        ..Default::default()
    }
}

fn forward(cluster_specifier: route::route_action::ClusterSpecifier) -> route::route::Action {
    route::route::Action::Route(RouteAction {
        cluster_specifier: Some(cluster_specifier),
        timeout: seconds(0),
        retry_policy: Some(default_retry_policy()),
        max_stream_duration: Some(route::route_action::MaxStreamDuration {
            max_stream_duration: seconds(0),
            grpc_timeout_header_max: seconds(0),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn cluster_action(cluster: &str) -> route::route::Action {
    forward(route::route_action::ClusterSpecifier::Cluster(
        cluster.to_string(),
    ))
}

/// istiod's default route: `prefix /` to `cluster`, `timeout 0s`, the default retry policy.
pub fn route_to(cluster: &str) -> Route {
    Route {
        name: "default".to_string(),
        r#match: Some(prefix_match("/")),
        action: Some(cluster_action(cluster)),
        decorator: Some(route::Decorator {
            operation: format!("{cluster}/*"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A route for requests whose `cookie` header matches `regex` (a VirtualService header
/// match), to `cluster`.
pub fn cookie_route(regex: &str, cluster: &str) -> Route {
    let mut matcher = prefix_match("/");
    matcher.headers.push(HeaderMatcher {
        name: "cookie".to_string(),
        header_match_specifier: Some(route::header_matcher::HeaderMatchSpecifier::StringMatch(
            StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::SafeRegex(RegexMatcher {
                    regex: regex.to_string(),
                    ..Default::default()
                })),
                ..Default::default()
            },
        )),
        ..Default::default()
    });
    Route {
        r#match: Some(matcher),
        action: Some(cluster_action(cluster)),
        ..Default::default()
    }
}

/// A route splitting `prefix /` across clusters by weight (VirtualService weights).
pub fn weighted_route(clusters: &[(&str, u32)]) -> Route {
    let weighted = WeightedCluster {
        clusters: clusters
            .iter()
            .map(|(name, weight)| route::weighted_cluster::ClusterWeight {
                name: name.to_string(),
                weight: u32_value(*weight),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    Route {
        r#match: Some(prefix_match("/")),
        action: Some(forward(
            route::route_action::ClusterSpecifier::WeightedClusters(weighted),
        )),
        ..Default::default()
    }
}
