//! Listeners as istiod sends them to a sidecar: the two virtual listeners that catch the
//! redirected traffic (15001 outbound, 15006 inbound) and the per-service outbound listeners
//! (`bind_to_port: false`) they hand connections off to.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter,
    ListenerFilterChainMatchPredicate, filter, listener_filter,
    listener_filter_chain_match_predicate,
};
use envoy_types::pb::envoy::config::route::v3::route;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3::Cors;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::listener::original_dst::v3::OriginalDst;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::envoy::r#type::v3::Int32Range;
use envoy_types::pb::google::protobuf::{Any, Struct, Value, value};

use super::{
    BLACKHOLE_CLUSTER, INBOUND_PASSTHROUGH_CLUSTER, PASSTHROUGH_CLUSTER, ads_config_source,
    bool_value, inbound_cluster_name, named, pack, route_configuration, route_to, seconds,
    socket_address, typed_struct, u32_value, vhost,
};

pub const VIRTUAL_OUTBOUND: &str = "virtualOutbound";
pub const VIRTUAL_INBOUND: &str = "virtualInbound";
pub const OUTBOUND_CAPTURE_PORT: u16 = 15001;
pub const INBOUND_CAPTURE_PORT: u16 = 15006;

/// The inner type of istiod's HTTP `istio.metadata_exchange` TypedStruct.
pub const PEER_METADATA_TYPE: &str = "type.googleapis.com/io.istio.http.peer_metadata.Config";
/// The inner type of istiod's `istio.stats` TypedStruct.
pub const STATS_TYPE: &str = "type.googleapis.com/stats.PluginConfig";

fn any_address() -> IpAddr {
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}

fn network_filter(name: &str, config: Any) -> Filter {
    Filter {
        name: name.to_string(),
        config_type: Some(filter::ConfigType::TypedConfig(config)),
    }
}

fn tcp_proxy_filter(cluster: &str) -> Filter {
    let proxy = TcpProxy {
        stat_prefix: cluster.to_string(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.to_string())),
        ..Default::default()
    };
    network_filter("envoy.filters.network.tcp_proxy", pack(&proxy))
}

/// The `istio.stats` network filter (istiod sends it in a TypedStruct; Skiff ignores it).
fn stats_network_filter() -> Filter {
    network_filter("istio.stats", typed_struct(STATS_TYPE, Struct::default()))
}

fn listener_filter(name: &str, config: Any) -> ListenerFilter {
    ListenerFilter {
        name: name.to_string(),
        config_type: Some(listener_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

/// A listener filter disabled for destination ports in `start..end`.
fn disabled_for_ports(mut filter: ListenerFilter, ranges: &[(i32, i32)]) -> ListenerFilter {
    use listener_filter_chain_match_predicate::{MatchSet, Rule};
    let rules: Vec<ListenerFilterChainMatchPredicate> = ranges
        .iter()
        .map(|&(start, end)| ListenerFilterChainMatchPredicate {
            rule: Some(Rule::DestinationPortRange(Int32Range { start, end })),
        })
        .collect();
    filter.filter_disabled = Some(ListenerFilterChainMatchPredicate {
        rule: Some(Rule::OrMatch(MatchSet { rules })),
    });
    filter
}

fn tls_inspector() -> ListenerFilter {
    listener_filter(
        "envoy.filters.listener.tls_inspector",
        pack(&TlsInspector::default()),
    )
}

fn http_inspector() -> ListenerFilter {
    listener_filter(
        "envoy.filters.listener.http_inspector",
        pack(&HttpInspector {}),
    )
}

fn chain(name: &str, matcher: Option<FilterChainMatch>, filters: Vec<Filter>) -> FilterChain {
    FilterChain {
        name: name.to_string(),
        filter_chain_match: matcher,
        filters,
        ..Default::default()
    }
}

/// `virtualOutbound` on 0.0.0.0:15001: hands connections off by original destination;
/// what no listener takes goes to PassthroughCluster (ALLOW_ANY), and connections to 15001
/// itself to BlackHoleCluster.
pub fn virtual_outbound() -> (String, Any) {
    let listener = Listener {
        name: VIRTUAL_OUTBOUND.to_string(),
        address: socket_address(any_address(), OUTBOUND_CAPTURE_PORT),
        use_original_dst: bool_value(true),
        traffic_direction: TrafficDirection::Outbound as i32,
        filter_chains: vec![
            chain(
                "virtualOutbound-blackhole",
                Some(FilterChainMatch {
                    destination_port: u32_value(u32::from(OUTBOUND_CAPTURE_PORT)),
                    ..Default::default()
                }),
                vec![tcp_proxy_filter(BLACKHOLE_CLUSTER)],
            ),
            chain(
                "virtualOutbound-catchall-tcp",
                None,
                vec![
                    stats_network_filter(),
                    tcp_proxy_filter(PASSTHROUGH_CLUSTER),
                ],
            ),
        ],
        ..Default::default()
    };
    named(VIRTUAL_OUTBOUND, &listener)
}

fn http_filter(name: &str, config: Any) -> HttpFilter {
    HttpFilter {
        name: name.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

fn string_list(items: &[&str]) -> Value {
    Value {
        kind: Some(value::Kind::ListValue(
            envoy_types::pb::google::protobuf::ListValue {
                values: items
                    .iter()
                    .map(|key| Value {
                        kind: Some(value::Kind::StructValue(Struct {
                            fields: HashMap::from([(
                                key.to_string(),
                                Value {
                                    kind: Some(value::Kind::StructValue(Struct::default())),
                                },
                            )]),
                        })),
                    })
                    .collect(),
            },
        )),
    }
}

/// istiod's HTTP `istio.metadata_exchange` (peer metadata) filter, in a TypedStruct.
fn metadata_exchange_http_filter(outbound: bool) -> HttpFilter {
    let (discovery, propagation) = if outbound {
        ("upstream_discovery", "upstream_propagation")
    } else {
        ("downstream_discovery", "downstream_propagation")
    };
    let config = Struct {
        fields: HashMap::from([
            (
                discovery.to_string(),
                string_list(&["istio_headers", "workload_discovery"]),
            ),
            (propagation.to_string(), string_list(&["istio_headers"])),
        ]),
    };
    http_filter(
        "istio.metadata_exchange",
        typed_struct(PEER_METADATA_TYPE, config),
    )
}

fn stats_http_filter() -> HttpFilter {
    http_filter("istio.stats", typed_struct(STATS_TYPE, Struct::default()))
}

fn router_filter() -> HttpFilter {
    http_filter("envoy.filters.http.router", pack(&Router::default()))
}

fn hcm(
    stat_prefix: String,
    routes: http_connection_manager::RouteSpecifier,
    http_filters: Vec<HttpFilter>,
    forward_client_cert: http_connection_manager::ForwardClientCertDetails,
) -> Filter {
    let manager = HttpConnectionManager {
        stat_prefix,
        route_specifier: Some(routes),
        http_filters,
        use_remote_address: bool_value(false),
        forward_client_cert_details: forward_client_cert as i32,
        normalize_path: bool_value(true),
        stream_idle_timeout: seconds(0),
        path_with_escaped_slashes_action:
            http_connection_manager::PathWithEscapedSlashesAction::KeepUnchanged as i32,
        upgrade_configs: vec![http_connection_manager::UpgradeConfig {
            upgrade_type: "websocket".to_string(),
            ..Default::default()
        }],
        ..Default::default()
    };
    network_filter(
        "envoy.filters.network.http_connection_manager",
        pack(&manager),
    )
}

/// The inline route of an inbound chain: `inbound|<port>||`, virtual host
/// `inbound|http|<port>` for any domain, to cluster `inbound|<port>||` with `timeout 0s`.
fn inbound_route(port: u16) -> http_connection_manager::RouteSpecifier {
    let cluster = inbound_cluster_name(port);
    let mut route = route_to(&cluster);
    // Inbound routes carry no retry policy; the rest is as outbound.
    if let Some(route::Action::Route(action)) = route.action.as_mut() {
        action.retry_policy = None;
    }
    let host = vhost(&format!("inbound|http|{port}"), &["*"], vec![route]);
    http_connection_manager::RouteSpecifier::RouteConfig(route_configuration(&cluster, vec![host]))
}

/// `virtualInbound` on 0.0.0.0:15006: listener filters original_dst, tls_inspector and
/// http_inspector (no timeout, continue on timeout); for each of `ports` a plaintext chain
/// running HCM with the inline route `inbound|<port>||`; anything else goes to
/// InboundPassthroughCluster, and connections to 15006 itself to BlackHoleCluster.
pub fn virtual_inbound(ports: &[u16]) -> (String, Any) {
    let capture = i32::from(INBOUND_CAPTURE_PORT);
    let mut filter_chains = vec![chain(
        "virtualInbound-blackhole",
        Some(FilterChainMatch {
            destination_port: u32_value(u32::from(INBOUND_CAPTURE_PORT)),
            ..Default::default()
        }),
        vec![tcp_proxy_filter(BLACKHOLE_CLUSTER)],
    )];
    for &port in ports {
        filter_chains.push(chain(
            &format!("0.0.0.0_{port}"),
            Some(FilterChainMatch {
                destination_port: u32_value(u32::from(port)),
                transport_protocol: "raw_buffer".to_string(),
                ..Default::default()
            }),
            vec![hcm(
                format!("inbound_0.0.0.0_{port}"),
                inbound_route(port),
                vec![
                    metadata_exchange_http_filter(false),
                    stats_http_filter(),
                    router_filter(),
                ],
                http_connection_manager::ForwardClientCertDetails::AppendForward,
            )],
        ));
    }
    filter_chains.push(chain(
        VIRTUAL_INBOUND,
        Some(FilterChainMatch {
            transport_protocol: "raw_buffer".to_string(),
            ..Default::default()
        }),
        vec![
            stats_network_filter(),
            tcp_proxy_filter(INBOUND_PASSTHROUGH_CLUSTER),
        ],
    ));
    let listener = Listener {
        name: VIRTUAL_INBOUND.to_string(),
        address: socket_address(any_address(), INBOUND_CAPTURE_PORT),
        use_original_dst: bool_value(true),
        traffic_direction: TrafficDirection::Inbound as i32,
        listener_filters: vec![
            listener_filter("envoy.filters.listener.original_dst", pack(&OriginalDst {})),
            disabled_for_ports(tls_inspector(), &[(capture, capture + 2)]),
            disabled_for_ports(http_inspector(), &[(capture, capture + 1)]),
        ],
        listener_filters_timeout: seconds(0),
        continue_on_listener_filters_timeout: true,
        filter_chains,
        ..Default::default()
    };
    named(VIRTUAL_INBOUND, &listener)
}

/// The chain that takes what no other chain matches: to PassthroughCluster.
fn passthrough_filter_chain() -> FilterChain {
    chain(
        "PassthroughFilterChain",
        None,
        vec![
            stats_network_filter(),
            tcp_proxy_filter(PASSTHROUGH_CLUSTER),
        ],
    )
}

/// An outbound HTTP (or auto-detected) service port: `0.0.0.0_<port>`, not bound (reached by
/// hand-off from 15001); plaintext HTTP/1.1 and h2c go through HCM with the route
/// configuration named "<port>" over ADS; anything else through PassthroughFilterChain.
pub fn http_listener(port: u16) -> (String, Any) {
    let name = format!("0.0.0.0_{port}");
    let rds = http_connection_manager::RouteSpecifier::Rds(Rds {
        config_source: Some(ads_config_source()),
        route_config_name: port.to_string(),
    });
    let http_chain = chain(
        &name,
        Some(FilterChainMatch {
            transport_protocol: "raw_buffer".to_string(),
            application_protocols: vec!["http/1.1".to_string(), "h2c".to_string()],
            ..Default::default()
        }),
        vec![hcm(
            format!("outbound_0.0.0.0_{port}"),
            rds,
            vec![
                metadata_exchange_http_filter(true),
                http_filter("envoy.filters.http.fault", pack(&HttpFault::default())),
                http_filter("envoy.filters.http.cors", pack(&Cors {})),
                stats_http_filter(),
                router_filter(),
            ],
            http_connection_manager::ForwardClientCertDetails::Sanitize,
        )],
    );
    let listener = Listener {
        name: name.clone(),
        address: socket_address(any_address(), port),
        bind_to_port: bool_value(false),
        traffic_direction: TrafficDirection::Outbound as i32,
        listener_filters: vec![tls_inspector(), http_inspector()],
        filter_chains: vec![http_chain],
        default_filter_chain: Some(passthrough_filter_chain()),
        ..Default::default()
    };
    named(name, &listener)
}

/// An outbound TCP service: `<vip>_<port>`, not bound, istio.stats + tcp_proxy to `cluster`.
pub fn tcp_listener(vip: impl Into<IpAddr>, port: u16, cluster: &str) -> (String, Any) {
    let vip = vip.into();
    let name = format!("{vip}_{port}");
    let listener = Listener {
        name: name.clone(),
        address: socket_address(vip, port),
        bind_to_port: bool_value(false),
        traffic_direction: TrafficDirection::Outbound as i32,
        filter_chains: vec![chain(
            "",
            None,
            vec![stats_network_filter(), tcp_proxy_filter(cluster)],
        )],
        ..Default::default()
    };
    named(name, &listener)
}
