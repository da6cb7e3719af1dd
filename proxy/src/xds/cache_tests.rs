use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
};
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::{
    Endpoint as XdsEndpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, filter};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteMatch, VirtualHost, route, route_action, route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use prost::Name;

use super::*;

fn pack<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

fn socket(ip: &str, port: u32) -> Option<Address> {
    Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_owned(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..SocketAddress::default()
        })),
    })
}

fn chain(filter: Filter) -> FilterChain {
    FilterChain {
        filters: vec![filter],
        ..FilterChain::default()
    }
}

fn tcp_listener(name: &str, port: u32, cluster: &str) -> Incoming {
    let proxy = TcpProxy {
        stat_prefix: cluster.to_owned(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.to_owned())),
        ..TcpProxy::default()
    };
    let listener = ListenerProto {
        name: name.to_owned(),
        address: socket("0.0.0.0", port),
        filter_chains: vec![chain(Filter {
            name: "envoy.filters.network.tcp_proxy".into(),
            config_type: Some(filter::ConfigType::TypedConfig(pack(&proxy))),
        })],
        ..ListenerProto::default()
    };
    incoming(name, "1", pack(&listener))
}

fn http_listener(name: &str, port: u32, rds: &str) -> Incoming {
    let router = HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(pack(
            &Router::default(),
        ))),
        ..HttpFilter::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: name.to_owned(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            route_config_name: rds.to_owned(),
            ..Rds::default()
        })),
        http_filters: vec![router],
        ..HttpConnectionManager::default()
    };
    let listener = ListenerProto {
        name: name.to_owned(),
        address: socket("0.0.0.0", port),
        filter_chains: vec![chain(Filter {
            name: "envoy.filters.network.http_connection_manager".into(),
            config_type: Some(filter::ConfigType::TypedConfig(pack(&hcm))),
        })],
        ..ListenerProto::default()
    };
    incoming(name, "1", pack(&listener))
}

fn eds_cluster(name: &str) -> Incoming {
    let cluster = ClusterProto {
        name: name.to_owned(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig::default()),
        ..ClusterProto::default()
    };
    incoming(name, "1", pack(&cluster))
}

fn endpoints(cluster: &str, version: &str, addrs: &[&str]) -> Incoming {
    let lb_endpoints = addrs
        .iter()
        .map(|a| {
            let (ip, port) = a.split_once(':').unwrap();
            LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(XdsEndpoint {
                    address: socket(ip, port.parse().unwrap()),
                    ..XdsEndpoint::default()
                })),
                ..LbEndpoint::default()
            }
        })
        .collect();
    let cla = ClusterLoadAssignment {
        cluster_name: cluster.to_owned(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            ..LocalityLbEndpoints::default()
        }],
        ..ClusterLoadAssignment::default()
    };
    incoming(cluster, version, pack(&cla))
}

fn routes(name: &str, cluster: &str) -> Incoming {
    let config = RouteConfiguration {
        name: name.to_owned(),
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes: vec![Route {
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                    ..RouteMatch::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        cluster.to_owned(),
                    )),
                    ..RouteAction::default()
                })),
                ..Route::default()
            }],
            ..VirtualHost::default()
        }],
        ..RouteConfiguration::default()
    };
    incoming(name, "1", pack(&config))
}

fn incoming(name: &str, version: &str, resource: Any) -> Incoming {
    Incoming {
        name: name.to_owned(),
        version: version.to_owned(),
        resource,
    }
}

fn names(set: Option<BTreeSet<String>>) -> Vec<String> {
    set.unwrap_or_default().into_iter().collect()
}

const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";

#[test]
fn a_configuration_is_complete_once_what_it_references_arrived() {
    let mut cache = Cache::default();
    assert_eq!(
        cache.missing(),
        ["CDS (no response yet)", "LDS (no response yet)"]
    );
    cache
        .apply(type_url::CLUSTER, vec![eds_cluster(REVIEWS)], &[], true)
        .unwrap();
    assert_eq!(names(cache.wanted(type_url::ENDPOINT)), [REVIEWS]);
    cache
        .apply(
            type_url::LISTENER,
            vec![http_listener("0.0.0.0_9080", 9080, "9080")],
            &[],
            true,
        )
        .unwrap();
    assert_eq!(names(cache.wanted(type_url::ROUTE)), ["9080"]);
    assert_eq!(
        cache.missing(),
        ["RDS 9080", format!("EDS {REVIEWS}").as_str()]
    );
    cache
        .apply(type_url::ROUTE, vec![routes("9080", REVIEWS)], &[], false)
        .unwrap();
    cache
        .apply(
            type_url::ENDPOINT,
            vec![endpoints(
                REVIEWS,
                "1",
                &["10.77.0.2:9080", "10.77.0.3:9080"],
            )],
            &[],
            false,
        )
        .unwrap();
    assert!(cache.missing().is_empty());
    let snapshot = cache.assemble("xds-1".into());
    assert_eq!(snapshot.listeners.len(), 1);
    assert_eq!(snapshot.cluster(REVIEWS).unwrap().endpoints.len(), 2);
    assert!(snapshot.routes.contains_key("9080"));
}

#[test]
fn a_refused_resource_changes_nothing_and_is_named() {
    let mut cache = Cache::default();
    cache
        .apply(
            type_url::LISTENER,
            vec![tcp_listener("a", 80, "c")],
            &[],
            true,
        )
        .unwrap();
    let broken = ListenerProto {
        name: "broken".into(),
        address: socket("not-an-ip", 81),
        ..ListenerProto::default()
    };
    let err = cache
        .apply(
            type_url::LISTENER,
            vec![
                tcp_listener("b", 82, "c"),
                incoming("broken", "2", pack(&broken)),
            ],
            &[],
            true,
        )
        .unwrap_err();
    assert_eq!(err.len(), 1);
    assert_eq!(err[0].name, "broken");
    assert!(
        err[0].to_string().starts_with("broken: address"),
        "{}",
        err[0]
    );
    assert_eq!(
        cache
            .versions(type_url::LISTENER)
            .keys()
            .collect::<Vec<_>>(),
        ["a"],
        "all or nothing: b was not added either"
    );
    // A resource of the wrong type is refused too.
    let err = cache
        .apply(
            type_url::CLUSTER,
            vec![tcp_listener("x", 1, "c")],
            &[],
            false,
        )
        .unwrap_err();
    assert!(err[0].error.reason.contains("where"), "{}", err[0]);
}

#[test]
fn state_of_the_world_and_delta_removals() {
    let mut cache = Cache::default();
    cache
        .apply(
            type_url::LISTENER,
            vec![tcp_listener("a", 80, "c"), tcp_listener("b", 81, "c")],
            &[],
            true,
        )
        .unwrap();
    // A full (SotW) response without `a` removes it.
    cache
        .apply(
            type_url::LISTENER,
            vec![tcp_listener("b", 81, "c")],
            &[],
            true,
        )
        .unwrap();
    assert_eq!(cache.versions(type_url::LISTENER).len(), 1);
    // Delta: removed names go, others stay.
    cache
        .apply(
            type_url::LISTENER,
            vec![tcp_listener("c", 82, "c")],
            &["b".to_owned()],
            false,
        )
        .unwrap();
    assert_eq!(
        cache
            .versions(type_url::LISTENER)
            .keys()
            .collect::<Vec<_>>(),
        ["c"]
    );
}

#[test]
fn unreferenced_routes_and_endpoints_are_forgotten() {
    let mut cache = Cache::default();
    cache
        .apply(
            type_url::LISTENER,
            vec![http_listener("l", 9080, "9080")],
            &[],
            true,
        )
        .unwrap();
    cache
        .apply(type_url::ROUTE, vec![routes("9080", REVIEWS)], &[], false)
        .unwrap();
    cache
        .apply(type_url::LISTENER, vec![], &["l".to_owned()], false)
        .unwrap();
    cache.forget_unwanted();
    assert!(cache.versions(type_url::ROUTE).is_empty());
}

#[test]
fn clusters_are_rebuilt_only_when_they_or_their_endpoints_change() {
    let mut cache = Cache::default();
    cache
        .apply(
            type_url::CLUSTER,
            vec![eds_cluster(REVIEWS), eds_cluster("other")],
            &[],
            true,
        )
        .unwrap();
    cache
        .apply(
            type_url::ENDPOINT,
            vec![
                endpoints(REVIEWS, "1", &["10.77.0.2:9080"]),
                endpoints("other", "1", &["10.77.0.9:80"]),
            ],
            &[],
            false,
        )
        .unwrap();
    let first = cache.assemble("1".into());
    cache
        .apply(
            type_url::ENDPOINT,
            vec![endpoints(REVIEWS, "2", &["10.77.0.3:9080"])],
            &[],
            false,
        )
        .unwrap();
    let second = cache.assemble("2".into());
    assert!(Arc::ptr_eq(
        first.cluster("other").unwrap(),
        second.cluster("other").unwrap()
    ));
    assert!(!Arc::ptr_eq(
        first.cluster(REVIEWS).unwrap(),
        second.cluster(REVIEWS).unwrap()
    ));
    assert_eq!(
        second.cluster(REVIEWS).unwrap().endpoints[0].address,
        "10.77.0.3:9080".parse().unwrap()
    );
    assert_eq!(cache.counts().endpoints, 2);
}
