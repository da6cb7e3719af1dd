//! Listener translation: the listeners istiod sends a sidecar (virtualOutbound, a
//! per-port outbound listener, virtualInbound with TLS and plaintext chains), timeouts and
//! detection, and the exact refusal of what Skiff cannot honour.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, CidrRange, ConfigSource, ExtensionConfigSource, Pipe,
    SocketAddress, TrafficDirection, TransportSocket, address, config_source, socket_address,
    transport_socket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain as FilterChainProto, FilterChainMatch, Listener as ListenerProto,
    ListenerFilter, ListenerFilterChainMatchPredicate, filter, listener_filter,
    listener_filter_chain_match_predicate::{MatchSet, Rule},
};
use envoy_types::pb::envoy::config::route::v3::{
    Route as RouteProto, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route,
    route_action, route_match,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, ScopedRoutes, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy as TcpProto, tcp_proxy,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, common_tls_context,
};
use envoy_types::pb::envoy::r#type::v3::Int32Range;
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration as PbDuration, UInt32Value};
use prost::{Message, Name};

use super::*;
use crate::snapshot::{
    ClusterChoice, DEFAULT_DETECTION_TIMEOUT, DEFAULT_STREAM_IDLE_TIMEOUT,
    DEFAULT_TCP_IDLE_TIMEOUT, Detection, Handler, HttpManager, RouteSource, TcpProxy,
};

#[path = "listener_tests_protos.rs"]
mod protos;
#[path = "listener_tests_refusals.rs"]
mod refusals;

use protos::*;

// ---- what istiod sends ----

#[test]
fn virtual_outbound_listener() {
    let t = listener(&virtual_outbound()).unwrap();
    let l = &t.listener;
    assert_eq!(l.name, "virtualOutbound");
    assert_eq!(l.address, "0.0.0.0:15001".parse().unwrap());
    assert!(l.bind_to_port && l.use_original_dst);
    assert_eq!(l.direction, Direction::Outbound);
    assert!(!l.detection.enabled, "no inspector: no detection");
    assert_eq!(l.filter_chains.len(), 2);
    let blackhole = &l.filter_chains[0];
    assert_eq!(blackhole.name, "virtualOutbound-blackhole");
    assert_eq!(
        blackhole.matcher,
        ChainMatch {
            destination_port: Some(15001),
            ..Default::default()
        }
    );
    assert!(blackhole.tls.is_none());
    let bt = tcp(blackhole);
    assert!(matches!(&bt.cluster, ClusterChoice::Single(c) if c == "BlackHoleCluster"));
    assert_eq!(bt.stat_prefix, "BlackHoleCluster");
    assert_eq!(bt.idle_timeout, DEFAULT_TCP_IDLE_TIMEOUT);
    assert_eq!(l.filter_chains[1].matcher, ChainMatch::default());
    assert!(l.default_chain.is_none());
    assert_eq!(t.clusters, ["BlackHoleCluster", "PassthroughCluster"]);
    assert!(t.route_names.is_empty() && t.inline_routes.is_empty());
}

#[test]
fn per_port_outbound_listener() {
    let t = listener(&outbound_9080()).unwrap();
    let l = &t.listener;
    assert!(!l.bind_to_port && !l.use_original_dst);
    assert_eq!(
        l.detection,
        Detection {
            enabled: true,
            timeout: DEFAULT_DETECTION_TIMEOUT
        }
    );
    assert!(l.detection_skip_ports.is_empty());
    let c = &l.filter_chains[0];
    assert_eq!(
        c.matcher,
        ChainMatch {
            transport_protocol: Some(Transport::RawBuffer),
            application_protocols: strings(&["http/1.1", "h2c"]),
            ..Default::default()
        }
    );
    let h = http_manager(c);
    assert_eq!(h.stat_prefix, "outbound_0.0.0.0_9080");
    assert!(matches!(&h.route_config, RouteSource::Rds(n) if n == "9080"));
    assert!(!h.use_remote_address);
    assert_eq!(h.stream_idle_timeout, Duration::ZERO, "istiod's 0s: none");
    let d = l.default_chain.as_ref().unwrap();
    assert_eq!(d.name, "PassthroughFilterChain");
    assert!(matches!(&tcp(d).cluster, ClusterChoice::Single(c) if c == "PassthroughCluster"));
    assert_eq!(t.route_names, ["9080"]);
    assert_eq!(t.clusters, ["PassthroughCluster"]);
}

#[test]
fn virtual_inbound_listener() {
    let t = listener(&virtual_inbound()).unwrap();
    let l = &t.listener;
    assert_eq!(l.direction, Direction::Inbound);
    assert!(l.detection.enabled);
    assert_eq!(
        l.detection_skip_ports,
        [15006],
        "80 still has the TLS inspector"
    );
    let chains = &l.filter_chains;
    assert_eq!(chains.len(), 5);
    let istio_tls = DownstreamTls {
        require_client_certificate: true,
        alpn: strings(&["h2", "http/1.1"]),
        certificate_secret: Some("default".into()),
        validation_secret: Some("ROOTCA".into()),
    };
    assert_eq!(chains[1].tls.as_ref(), Some(&istio_tls));
    assert_eq!(
        chains[1].matcher.prefix_ranges,
        ["0.0.0.0/0".parse::<Cidr>().unwrap()]
    );
    assert_eq!(chains[1].matcher.transport_protocol, Some(Transport::Tls));
    assert!(chains[2].tls.is_none());
    assert!(
        matches!(&tcp(&chains[2]).cluster, ClusterChoice::Single(c) if c == "InboundPassthroughCluster")
    );
    assert_eq!(chains[3].name, "0.0.0.0_80");
    assert_eq!(chains[3].matcher.destination_port, Some(80));
    assert_eq!(chains[3].tls.as_ref(), Some(&istio_tls));
    assert!(chains[4].tls.is_none());
    // The one inline table is shared by the three HCMs that carry it.
    assert_eq!(t.inline_routes.len(), 1);
    let table = &t.inline_routes[0];
    assert_eq!(table.name, "inbound|80||");
    assert_eq!(
        table.virtual_hosts[0].routes[0].timeout,
        Some(Duration::ZERO)
    );
    for c in [&chains[1], &chains[3], &chains[4]] {
        match &http_manager(c).route_config {
            RouteSource::Inline(t) => assert!(Arc::ptr_eq(t, table)),
            RouteSource::Rds(n) => panic!("{n}"),
        }
    }
    assert!(t.route_names.is_empty());
    assert_eq!(
        t.clusters,
        [
            "BlackHoleCluster",
            "inbound|80||",
            "InboundPassthroughCluster"
        ]
    );
}

#[test]
fn timeouts() {
    let set_tcp = |d: Option<PbDuration>| {
        let mut l = virtual_outbound();
        l.filter_chains[1].filters[1] = net(
            "envoy.filters.network.tcp_proxy",
            pack(&TcpProto {
                cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(
                    "PassthroughCluster".into(),
                )),
                idle_timeout: d,
                ..Default::default()
            }),
        );
        let t = listener(&l).unwrap();
        assert_eq!(
            tcp(&t.listener.filter_chains[1]).stat_prefix,
            "PassthroughCluster"
        );
        tcp(&t.listener.filter_chains[1]).idle_timeout
    };
    assert_eq!(set_tcp(None), DEFAULT_TCP_IDLE_TIMEOUT);
    assert_eq!(set_tcp(secs(0)), TCP_IDLE_TIMEOUT_DISABLED);
    assert_eq!(set_tcp(secs(30)), Duration::from_secs(30));

    let set_stream = |d: Option<PbDuration>| {
        let mut l = outbound_9080();
        let mut h = HttpConnectionManager {
            route_specifier: Some(rds("9080")),
            http_filters: vec![router()],
            stream_idle_timeout: d,
            ..Default::default()
        };
        h.use_remote_address = Some(BoolValue { value: true });
        l.filter_chains[0].filters = vec![net("hcm", pack(&h))];
        let t = listener(&l).unwrap();
        let m = http_manager(&t.listener.filter_chains[0]);
        assert!(m.use_remote_address);
        assert_eq!(
            m.stat_prefix, "0.0.0.0_9080",
            "defaults to the listener's name"
        );
        m.stream_idle_timeout
    };
    assert_eq!(set_stream(None), DEFAULT_STREAM_IDLE_TIMEOUT);
    assert_eq!(set_stream(secs(0)), Duration::ZERO);
    assert_eq!(set_stream(secs(60)), Duration::from_secs(60));

    let set_detect = |d: Option<PbDuration>| {
        let mut l = outbound_9080();
        l.listener_filters_timeout = d;
        listener(&l).unwrap().listener.detection.timeout
    };
    assert_eq!(set_detect(None), DEFAULT_DETECTION_TIMEOUT);
    assert_eq!(
        set_detect(secs(0)),
        DEFAULT_DETECTION_TIMEOUT,
        "0s is bounded on purpose"
    );
    assert_eq!(set_detect(secs(2)), Duration::from_secs(2));
}

#[test]
fn detection_skip_ports() {
    let with = |filters: Vec<ListenerFilter>| {
        let mut l = outbound_9080();
        l.listener_filters = filters;
        let l = listener(&l).unwrap().listener;
        (l.detection.enabled, l.detection_skip_ports)
    };
    let range = |s, e| Some(port_range(s, e));
    assert_eq!(with(vec![]), (false, vec![]));
    assert_eq!(
        with(vec![inspector("http", range(3306, 3307))]),
        (true, vec![3306])
    );
    assert_eq!(
        with(vec![
            inspector("tls", range(3306, 3308)),
            inspector("http", range(3307, 3310))
        ]),
        (true, vec![3307]),
        "only where every inspector is off"
    );
    let everywhere = Some(ListenerFilterChainMatchPredicate {
        rule: Some(Rule::AnyMatch(true)),
    });
    assert_eq!(with(vec![inspector("http", everywhere)]), (false, vec![]));
    let not_80 = Some(ListenerFilterChainMatchPredicate {
        rule: Some(Rule::NotMatch(Box::new(port_range(80, 81)))),
    });
    let (on, skip) = with(vec![inspector("http", not_80)]);
    assert!(on && skip.len() == 65535 && !skip.contains(&80));
}

#[test]
fn ignored_and_optional_filters_are_accepted() {
    let mut l = outbound_9080();
    let mut h = HttpConnectionManager::decode(match &l.filter_chains[0].filters[0].config_type {
        Some(filter::ConfigType::TypedConfig(a)) => a.value.as_slice(),
        _ => unreachable!(),
    })
    .unwrap();
    let mut lua = http(
        "envoy.filters.http.lua",
        opaque("type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"),
    );
    lua.is_optional = true;
    h.http_filters.insert(0, lua);
    h.http_filters.insert(
        0,
        HttpFilter {
            name: "envoy.filters.http.rbac".into(),
            ..Default::default()
        },
    );
    h.http_filters.insert(
        0,
        http(
            "wasm",
            opaque("type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"),
        ),
    );
    l.filter_chains[0].filters = vec![net("hcm", pack(&h))];
    assert!(listener(&l).is_ok());
    for ignored in IGNORED_TYPES {
        assert!(is_ignored(
            &ignored.replace("type.googleapis.com/", "example.com/x/")
        ));
    }
    assert!(!is_ignored(
        "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
    ));
}

#[test]
fn weighted_tcp_ipv6_and_discovered_filters() {
    let mut l = outbound_9080();
    l.address = sock("::", 3306);
    l.additional_addresses = vec![
        envoy_types::pb::envoy::config::listener::v3::AdditionalAddress {
            address: sock("0.0.0.0", 3306),
            ..Default::default()
        },
    ];
    let wasm_stats = Filter {
        name: "my-wasm".into(),
        config_type: Some(filter::ConfigType::ConfigDiscovery(ExtensionConfigSource {
            type_urls: vec![
                "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm".into(),
            ],
            ..Default::default()
        })),
    };
    let weights = |list: &[(&str, u32)]| tcp_proxy::WeightedCluster {
        clusters: list
            .iter()
            .map(|(n, w)| tcp_proxy::weighted_cluster::ClusterWeight {
                name: n.to_string(),
                weight: *w,
                metadata_match: None,
            })
            .collect(),
    };
    l.filter_chains[0].filter_chain_match = matching(|m| {
        m.server_names = strings(&["DB.Example.com"]);
        m.source_prefix_ranges = vec![CidrRange {
            address_prefix: "fd00::".into(),
            prefix_len: Some(UInt32Value { value: 8 }),
        }];
    });
    l.filter_chains[0].filters = vec![
        wasm_stats,
        net(
            "envoy.filters.network.tcp_proxy",
            pack(&TcpProto {
                cluster_specifier: Some(tcp_proxy::ClusterSpecifier::WeightedClusters(weights(&[
                    ("outbound|3306|v1|db", 90),
                    ("outbound|3306|v2|db", 10),
                ]))),
                ..Default::default()
            }),
        ),
    ];
    let t = listener(&l).unwrap();
    let c = &t.listener.filter_chains[0];
    assert_eq!(t.listener.address, "[::]:3306".parse().unwrap());
    assert_eq!(c.matcher.server_names, ["db.example.com"]);
    assert_eq!(
        c.matcher.source_prefix_ranges,
        ["fd00::/8".parse::<Cidr>().unwrap()]
    );
    let tcp = tcp(c);
    assert_eq!(
        tcp.stat_prefix, "0.0.0.0_9080",
        "a weighted proxy is named after its listener"
    );
    assert!(matches!(
        &tcp.cluster,
        ClusterChoice::Weighted(w) if *w == [("outbound|3306|v1|db".to_owned(), 90), ("outbound|3306|v2|db".to_owned(), 10)]
    ));
    assert_eq!(
        t.clusters,
        [
            "outbound|3306|v1|db",
            "outbound|3306|v2|db",
            "PassthroughCluster"
        ]
    );
}
