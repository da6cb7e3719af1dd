//! The resource builders: what they produce decodes back with the names and fields istiod
//! would send.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{Address, address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::envoy::config::listener::v3::{Filter, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    RouteConfiguration, header_matcher, route, route_action,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use skiff_tests::xds_resources::{self as res, TypedStruct, unpack};
use skiff_tests::xds_server::type_url::{CLUSTER, ENDPOINT, ROUTE};

fn listener(pair: (String, Any)) -> Listener {
    let listener = unpack::<Listener>(&pair.1).expect("a Listener");
    assert_eq!(listener.name, pair.0);
    listener
}

fn typed<M: Message + prost::Name + Default>(filter: &Filter) -> M {
    match &filter.config_type {
        Some(filter::ConfigType::TypedConfig(any)) => unpack::<M>(any).expect("config type"),
        other => panic!("no typed config in {}: {other:?}", filter.name),
    }
}

fn tcp_cluster(filter: &Filter) -> String {
    assert_eq!(filter.name, "envoy.filters.network.tcp_proxy");
    match typed::<TcpProxy>(filter).cluster_specifier {
        Some(tcp_proxy::ClusterSpecifier::Cluster(c)) => c,
        other => panic!("{other:?}"),
    }
}

fn port_of(address: &Option<Address>) -> (String, u32) {
    match address.as_ref().and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(s)) => match s.port_specifier {
            Some(socket_address::PortSpecifier::PortValue(p)) => (s.address.clone(), p),
            _ => panic!("no port"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn virtual_listeners_round_trip() {
    let outbound = listener(res::virtual_outbound());
    assert_eq!(outbound.name, "virtualOutbound");
    assert_eq!(port_of(&outbound.address), ("0.0.0.0".to_string(), 15001));
    assert!(outbound.use_original_dst.unwrap().value);
    assert_eq!(outbound.traffic_direction, 2);
    let names: Vec<&str> = outbound
        .filter_chains
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["virtualOutbound-blackhole", "virtualOutbound-catchall-tcp"]
    );
    let blackhole = &outbound.filter_chains[0];
    let port = blackhole
        .filter_chain_match
        .as_ref()
        .unwrap()
        .destination_port;
    assert_eq!(port.unwrap().value, 15001);
    assert_eq!(tcp_cluster(&blackhole.filters[0]), "BlackHoleCluster");
    let catchall = &outbound.filter_chains[1];
    assert_eq!(
        tcp_cluster(catchall.filters.last().unwrap()),
        "PassthroughCluster"
    );

    let inbound = listener(res::virtual_inbound(&[8080, 9090]));
    assert_eq!(port_of(&inbound.address).1, 15006);
    assert_eq!(inbound.traffic_direction, 1);
    let filters: Vec<&str> = inbound
        .listener_filters
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(
        filters,
        [
            "envoy.filters.listener.original_dst",
            "envoy.filters.listener.tls_inspector",
            "envoy.filters.listener.http_inspector"
        ]
    );
    assert_eq!(inbound.listener_filters_timeout.unwrap().seconds, 0);
    assert!(inbound.continue_on_listener_filters_timeout);
    let per_port = inbound
        .filter_chains
        .iter()
        .find(|c| c.name == "0.0.0.0_8080")
        .expect("a chain for 8080");
    let matcher = per_port.filter_chain_match.as_ref().unwrap();
    assert_eq!(matcher.destination_port.unwrap().value, 8080);
    assert_eq!(matcher.transport_protocol, "raw_buffer");
    let hcm: HttpConnectionManager = typed(&per_port.filters[0]);
    let Some(http_connection_manager::RouteSpecifier::RouteConfig(routes)) = hcm.route_specifier
    else {
        panic!("inline routes expected");
    };
    assert_eq!(routes.name, "inbound|8080||");
    assert_eq!(routes.virtual_hosts[0].name, "inbound|http|8080");
    assert_eq!(routes.virtual_hosts[0].domains, ["*"]);
    let Some(route::Action::Route(action)) = &routes.virtual_hosts[0].routes[0].action else {
        panic!("a route action");
    };
    assert_eq!(
        action.cluster_specifier,
        Some(route_action::ClusterSpecifier::Cluster(
            "inbound|8080||".to_string()
        ))
    );
    assert_eq!(action.timeout.unwrap().seconds, 0);
    let last = inbound.filter_chains.last().unwrap();
    assert_eq!(
        tcp_cluster(last.filters.last().unwrap()),
        "InboundPassthroughCluster"
    );
}

#[test]
fn service_listeners_round_trip() {
    let http = listener(res::http_listener(9080));
    assert_eq!(http.name, "0.0.0.0_9080");
    assert!(!http.bind_to_port.unwrap().value);
    let chain = &http.filter_chains[0];
    let matcher = chain.filter_chain_match.as_ref().unwrap();
    assert_eq!(matcher.transport_protocol, "raw_buffer");
    assert_eq!(matcher.application_protocols, ["http/1.1", "h2c"]);
    let hcm: HttpConnectionManager = typed(&chain.filters[0]);
    let Some(http_connection_manager::RouteSpecifier::Rds(rds)) = &hcm.route_specifier else {
        panic!("RDS expected");
    };
    assert_eq!(rds.route_config_name, "9080");
    let names: Vec<&str> = hcm.http_filters.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "istio.metadata_exchange",
            "envoy.filters.http.fault",
            "envoy.filters.http.cors",
            "istio.stats",
            "envoy.filters.http.router"
        ]
    );
    let Some(http_filter::ConfigType::TypedConfig(exchange)) = &hcm.http_filters[0].config_type
    else {
        panic!("typed config");
    };
    assert_eq!(exchange.type_url, res::TYPED_STRUCT_URL);
    let inner = TypedStruct::decode(exchange.value.as_slice()).unwrap();
    assert_eq!(inner.type_url, res::PEER_METADATA_TYPE);
    let default = http.default_filter_chain.as_ref().unwrap();
    assert_eq!(default.name, "PassthroughFilterChain");
    assert_eq!(
        tcp_cluster(default.filters.last().unwrap()),
        "PassthroughCluster"
    );

    let dns = "outbound|53||kube-dns.kube-system.svc.cluster.local";
    let tcp = listener(res::tcp_listener(Ipv4Addr::new(10, 96, 0, 10), 53, dns));
    assert_eq!(tcp.name, "10.96.0.10_53");
    assert_eq!(port_of(&tcp.address), ("10.96.0.10".to_string(), 53));
    assert_eq!(
        tcp_cluster(tcp.filter_chains[0].filters.last().unwrap()),
        dns
    );
}

#[test]
fn clusters_and_endpoints_round_trip() {
    let name = "outbound|9080||reviews.default.svc.cluster.local";
    let (key, any) = res::eds_cluster(name);
    assert_eq!(key, name);
    assert_eq!(any.type_url, CLUSTER);
    let eds = unpack::<Cluster>(&any).unwrap();
    assert_eq!(eds.name, name);
    assert_eq!(
        eds.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Eds as i32
        ))
    );
    assert_eq!(eds.lb_policy, cluster::LbPolicy::LeastRequest as i32);
    assert_eq!(eds.connect_timeout.unwrap().seconds, 10);
    assert!(
        eds.typed_extension_protocol_options
            .contains_key("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
    );
    let limits = &eds.circuit_breakers.as_ref().unwrap().thresholds[0];
    assert_eq!(limits.max_requests.unwrap().value, u32::MAX);

    let inbound = unpack::<Cluster>(&res::static_inbound_cluster(8080).1).unwrap();
    assert_eq!(inbound.name, "inbound|8080||");
    let assignment = inbound.load_assignment.unwrap();
    let lb_endpoint::HostIdentifier::Endpoint(endpoint) = assignment.endpoints[0].lb_endpoints[0]
        .host_identifier
        .clone()
        .unwrap()
    else {
        panic!("an endpoint");
    };
    assert_eq!(port_of(&endpoint.address), ("127.0.0.1".to_string(), 8080));

    let specials = res::passthrough_clusters();
    let names: BTreeSet<&str> = specials.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "BlackHoleCluster",
            "InboundPassthroughCluster",
            "PassthroughCluster"
        ])
    );
    let inbound_passthrough = unpack::<Cluster>(&specials[1].1).unwrap();
    assert_eq!(
        inbound_passthrough.cluster_discovery_type,
        Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::OriginalDst as i32
        ))
    );
    let source = inbound_passthrough
        .upstream_bind_config
        .unwrap()
        .source_address
        .unwrap();
    assert_eq!(source.address, "127.0.0.6");

    let a: SocketAddr = "10.77.0.2:9080".parse().unwrap();
    let b: SocketAddr = "10.77.0.3:9080".parse().unwrap();
    let (key, any) = res::endpoints(name, &[(a, 3), (b, 1)]);
    assert_eq!(key, name);
    assert_eq!(any.type_url, ENDPOINT);
    let cla = unpack::<ClusterLoadAssignment>(&any).unwrap();
    assert_eq!(cla.cluster_name, name);
    let got: Vec<(String, u32, u32)> = cla.endpoints[0]
        .lb_endpoints
        .iter()
        .map(|e| {
            let Some(lb_endpoint::HostIdentifier::Endpoint(ep)) = &e.host_identifier else {
                panic!("an endpoint");
            };
            let (ip, port) = port_of(&ep.address);
            (ip, port, e.load_balancing_weight.unwrap().value)
        })
        .collect();
    assert_eq!(
        got,
        [
            ("10.77.0.2".to_string(), 9080, 3),
            ("10.77.0.3".to_string(), 9080, 1)
        ]
    );
}

#[test]
fn routes_round_trip() {
    let (key, any) = res::route_config(
        "9080",
        vec![res::vhost(
            "reviews.default.svc.cluster.local:9080",
            &["reviews", "reviews:9080"],
            vec![
                res::cookie_route("^(.*?;)?(user=jason)(;.*)?$", "outbound|9080|v2|reviews"),
                res::weighted_route(&[
                    ("outbound|9080|v1|reviews", 80),
                    ("outbound|9080|v3|reviews", 20),
                ]),
                res::route_to("outbound|9080||reviews"),
            ],
        )],
    );
    assert_eq!(key, "9080");
    assert_eq!(any.type_url, ROUTE);
    let config = unpack::<RouteConfiguration>(&any).unwrap();
    assert_eq!(config.name, "9080");
    let host = &config.virtual_hosts[0];
    assert_eq!(host.domains, ["reviews", "reviews:9080"]);

    let cookie = host.routes[0].r#match.as_ref().unwrap();
    assert_eq!(cookie.headers[0].name, "cookie");
    assert!(matches!(
        cookie.headers[0].header_match_specifier,
        Some(header_matcher::HeaderMatchSpecifier::StringMatch(_))
    ));

    let Some(route::Action::Route(split)) = &host.routes[1].action else {
        panic!("a route action");
    };
    let Some(route_action::ClusterSpecifier::WeightedClusters(weighted)) = &split.cluster_specifier
    else {
        panic!("weighted clusters");
    };
    let weights: Vec<(&str, u32)> = weighted
        .clusters
        .iter()
        .map(|c| (c.name.as_str(), c.weight.unwrap().value))
        .collect();
    assert_eq!(
        weights,
        [
            ("outbound|9080|v1|reviews", 80),
            ("outbound|9080|v3|reviews", 20)
        ]
    );

    let default = &host.routes[2];
    assert_eq!(default.name, "default");
    let Some(route::Action::Route(action)) = &default.action else {
        panic!("a route action");
    };
    assert_eq!(action.timeout.unwrap().seconds, 0);
    let retry = action.retry_policy.as_ref().unwrap();
    assert_eq!(
        retry.retry_on,
        "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    );
    assert_eq!(retry.num_retries.unwrap().value, 2);
    assert_eq!(retry.retriable_status_codes, [503]);
    assert_eq!(retry.host_selection_retry_max_attempts, 5);
    assert_eq!(
        retry.retry_host_predicate[0].name,
        "envoy.retry_host_predicates.previous_hosts"
    );
}
