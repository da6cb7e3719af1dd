//! The exact refusal of what Skiff cannot honour in a listener.

use super::*;

type Mutate = fn(&mut ListenerProto);

fn hcm_of(l: &mut ListenerProto) -> HttpConnectionManager {
    match &l.filter_chains[0].filters[0].config_type {
        Some(filter::ConfigType::TypedConfig(a)) => {
            HttpConnectionManager::decode(a.value.as_slice()).unwrap()
        }
        _ => unreachable!(),
    }
}

fn set_hcm(l: &mut ListenerProto, f: fn(&mut HttpConnectionManager)) {
    let mut h = hcm_of(l);
    f(&mut h);
    l.filter_chains[0].filters[0] = net("envoy.filters.network.http_connection_manager", pack(&h));
}

#[test]
fn refusals() {
    let cases: Vec<(Mutate, &str, &str)> = vec![
        (
            |l| {
                l.filter_chains[0].filters.insert(0, net("envoy.filters.network.redis_proxy", opaque("type.googleapis.com/envoy.extensions.filters.network.redis_proxy.v3.RedisProxy")))
            },
            "filter_chains[0].filters[0].typed_config",
            "envoy.extensions.filters.network.redis_proxy.v3.RedisProxy (filter \"envoy.filters.network.redis_proxy\") is not a network filter Skiff implements; it runs envoy.filters.network.tcp_proxy and http_connection_manager, and skips Istio's telemetry and policy filters (IGNORED_TYPES)",
        ),
        (
            |l| l.filter_chains[0].filters.push(stats()),
            "filter_chains[0].filters[1]",
            "comes after the chain's terminal filter (tcp_proxy or http_connection_manager), which must be last",
        ),
        (
            |l| l.default_filter_chain.as_mut().unwrap().filters = vec![stats()],
            "default_filter_chain.filters",
            "has no terminal filter; end it with envoy.filters.network.tcp_proxy or envoy.filters.network.http_connection_manager",
        ),
        (
            |l| {
                set_hcm(l, |h| {
                    h.http_filters.insert(
                        1,
                        http(
                            "envoy.filters.http.lua",
                            opaque("type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"),
                        ),
                    )
                })
            },
            "filter_chains[0].filters[0].typed_config.http_filters[1].typed_config",
            "envoy.extensions.filters.http.lua.v3.Lua (filter \"envoy.filters.http.lua\") is not an HTTP filter Skiff implements, and it is not is_optional; Skiff runs the router and skips Istio's telemetry and policy filters (IGNORED_TYPES)",
        ),
        (
            |l| {
                set_hcm(l, |h| {
                    h.http_filters.pop();
                })
            },
            "filter_chains[0].filters[0].typed_config.http_filters",
            "does not end with envoy.filters.http.router; Skiff routes every request, so the router must be the last HTTP filter",
        ),
        (
            |l| {
                set_hcm(l, |h| {
                    h.http_filters.push(http(
                        "istio.stats",
                        opaque("type.googleapis.com/stats.PluginConfig"),
                    ))
                })
            },
            "filter_chains[0].filters[0].typed_config.http_filters[7]",
            "comes after envoy.filters.http.router, which must be the last HTTP filter",
        ),
        (
            |l| {
                set_hcm(l, |h| {
                    h.route_specifier = Some(http_connection_manager::RouteSpecifier::ScopedRoutes(
                        ScopedRoutes::default(),
                    ))
                })
            },
            "filter_chains[0].filters[0].typed_config.scoped_routes",
            "is set, but Skiff does not support scoped route tables",
        ),
        (
            |l| set_hcm(l, |h| h.upgrade_configs[0].upgrade_type = "CONNECT".into()),
            "filter_chains[0].filters[0].typed_config.upgrade_configs[0].upgrade_type",
            "\"CONNECT\" is not supported; Skiff passes websocket upgrades only",
        ),
        (
            |l| set_hcm(l, |h| h.route_specifier = Some(inbound_80_routes())),
            "",
            "",
        ),
        (
            |l| {
                l.filter_chains[0]
                    .filter_chain_match
                    .as_mut()
                    .unwrap()
                    .transport_protocol = "quic".into()
            },
            "filter_chains[0].filter_chain_match.transport_protocol",
            "\"quic\" is not supported; Skiff detects \"raw_buffer\" and \"tls\"",
        ),
        (
            |l| {
                l.filter_chains[0]
                    .filter_chain_match
                    .as_mut()
                    .unwrap()
                    .server_names = strings(&["*.example.com"])
            },
            "filter_chains[0].filter_chain_match.server_names[0]",
            "\"*.example.com\" is a wildcard; Skiff matches server names exactly",
        ),
        (
            |l| {
                l.filter_chains[0]
                    .filter_chain_match
                    .as_mut()
                    .unwrap()
                    .prefix_ranges = vec![CidrRange {
                    address_prefix: "10.0.0.0".into(),
                    prefix_len: Some(UInt32Value { value: 33 }),
                }]
            },
            "filter_chains[0].filter_chain_match.prefix_ranges[0].prefix_len",
            "33 is longer than an address of that family (32 bits)",
        ),
        (
            |l| {
                let c = l.filter_chains[0].clone();
                l.filter_chains.push(c);
            },
            "filter_chains[1].filter_chain_match",
            "is the same as filter_chains[0]'s, so this chain could never be chosen; Envoy refuses such listeners too",
        ),
        (
            |l| {
                l.address = Some(Address {
                    address: Some(address::Address::Pipe(Pipe::default())),
                })
            },
            "address.pipe",
            "is set, but Skiff does not support Unix socket listeners",
        ),
        (
            |l| l.address = sock("localhost", 9080),
            "address.socket_address.address",
            "\"localhost\" is not an IP address; listeners take an IPv4 or IPv6 literal",
        ),
        (
            |l| {
                l.listener_filters.push(listener_filter("envoy.filters.listener.proxy_protocol", opaque("type.googleapis.com/envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol"), None))
            },
            "listener_filters[2].typed_config",
            "\"envoy.extensions.filters.listener.proxy_protocol.v3.ProxyProtocol\" is not a listener filter Skiff supports; it supports http_inspector and tls_inspector (its protocol detection) and original_dst",
        ),
        (
            |l| {
                l.default_filter_chain.as_mut().unwrap().filters[1] = net(
                    "tcp",
                    pack(&TcpProto {
                        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(
                            "PassthroughCluster".into(),
                        )),
                        tunneling_config: Some(Default::default()),
                        ..Default::default()
                    }),
                )
            },
            "default_filter_chain.filters[1].typed_config.tunneling_config",
            "is set, but Skiff does not support tunneling TCP over HTTP CONNECT",
        ),
        (
            |l| {
                l.default_filter_chain.as_mut().unwrap().transport_socket = Some(TransportSocket {
                    name: "envoy.transport_sockets.alts".into(),
                    config_type: Some(transport_socket::ConfigType::TypedConfig(opaque(
                        "type.googleapis.com/envoy.extensions.transport_sockets.alts.v3.Alts",
                    ))),
                })
            },
            "default_filter_chain.transport_socket.typed_config",
            "\"type.googleapis.com/envoy.extensions.transport_sockets.alts.v3.Alts\" is not a transport socket Skiff supports; it supports DownstreamTlsContext and RawBuffer",
        ),
        (
            |l| {
                l.additional_addresses = vec![
                    envoy_types::pb::envoy::config::listener::v3::AdditionalAddress {
                        address: sock("10.0.0.1", 9080),
                        ..Default::default()
                    },
                ]
            },
            "additional_addresses[0].address",
            "10.0.0.1:9080 is not the wildcard of the other address family on port 9080; Skiff takes one address per listener, plus only that",
        ),
        (
            |l| {
                set_hcm(l, |h| {
                    let last = h.http_filters.len() - 1;
                    h.http_filters[last] = http(
                        "envoy.filters.http.router",
                        pack(&Router {
                            upstream_http_filters: vec![router()],
                            ..Default::default()
                        }),
                    );
                })
            },
            "filter_chains[0].filters[0].typed_config.http_filters[6].typed_config.upstream_http_filters",
            "is set, but Skiff does not support upstream HTTP filters",
        ),
        (
            |l| {
                set_hcm(l, |h| {
                    h.codec_type = http_connection_manager::CodecType::Http3 as i32
                })
            },
            "filter_chains[0].filters[0].typed_config.codec_type",
            "is set, but Skiff does not support HTTP/3",
        ),
        (
            |l| {
                set_hcm(l, |h| {
                    h.route_specifier = Some(http_connection_manager::RouteSpecifier::Rds(Rds {
                        route_config_name: "9080".into(),
                        config_source: Some(ConfigSource {
                            config_source_specifier: Some(
                                config_source::ConfigSourceSpecifier::ApiConfigSource(
                                    Default::default(),
                                ),
                            ),
                            ..Default::default()
                        }),
                    }))
                })
            },
            "filter_chains[0].filters[0].typed_config.rds.config_source",
            "is not ADS; Skiff takes route tables over its one ADS stream",
        ),
        (
            |l| {
                set_hcm(l, |h| {
                    h.http_filters.insert(0, HttpFilter {
                    name: "wasm-lua".into(),
                    config_type: Some(http_filter::ConfigType::ConfigDiscovery(
                        ExtensionConfigSource {
                            type_urls: vec!["type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua".into()],
                            ..Default::default()
                        },
                    )),
                    ..Default::default()
                })
                })
            },
            "filter_chains[0].filters[0].typed_config.http_filters[0].config_discovery",
            "\"wasm-lua\" discovered over ECDS as one of [\"type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua\"] is not an HTTP filter Skiff implements, and it is not is_optional; Skiff runs the router and skips Istio's telemetry and policy filters (IGNORED_TYPES)",
        ),
        (
            |l| {
                l.default_filter_chain.as_mut().unwrap().filters[1] = net(
                    "tcp",
                    pack(&TcpProto {
                        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::WeightedClusters(
                            tcp_proxy::WeightedCluster {
                                clusters: vec![tcp_proxy::weighted_cluster::ClusterWeight {
                                    name: "a".into(),
                                    weight: 0,
                                    metadata_match: None,
                                }],
                            },
                        )),
                        ..Default::default()
                    }),
                )
            },
            "default_filter_chain.filters[1].typed_config.weighted_clusters.clusters",
            "has no positive weight, so no cluster could be picked",
        ),
        (
            |l| {
                l.default_filter_chain.as_mut().unwrap().filters[1] = net(
                    "tcp",
                    pack(&TcpProto {
                        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster("x".into())),
                        idle_timeout: Some(PbDuration {
                            seconds: -1,
                            nanos: 0,
                        }),
                        ..Default::default()
                    }),
                )
            },
            "default_filter_chain.filters[1].typed_config.idle_timeout",
            "-1s 0ns is not a valid duration; it must be from 0 to 10000 years",
        ),
        (
            |l| l.name.clear(),
            "name",
            "is empty; every listener needs a name",
        ),
        (
            |l| {
                l.filter_chains.clear();
                l.default_filter_chain = None;
            },
            "filter_chains",
            "is empty and there is no default_filter_chain, so every connection would be closed; add a chain",
        ),
    ];
    for (k, (mutate, field, reason)) in cases.into_iter().enumerate() {
        let mut l = outbound_9080();
        mutate(&mut l);
        let result = listener(&l);
        if field.is_empty() {
            assert!(result.is_ok(), "case {k}: {result:?}");
            continue;
        }
        let err = result.expect_err(&format!("case {k} ({field}) is refused"));
        assert_eq!(err, Invalid::new(field, reason), "case {k}");
    }
}

#[test]
fn inline_tables_with_one_name_must_agree() {
    let mut l = virtual_inbound();
    let mut different = match inbound_80_routes() {
        http_connection_manager::RouteSpecifier::RouteConfig(rc) => rc,
        _ => unreachable!(),
    };
    different.virtual_hosts[0].domains = strings(&["example"]);
    l.filter_chains[4].filters[1] = hcm(
        "inbound_0.0.0.0_80",
        http_connection_manager::RouteSpecifier::RouteConfig(different),
    );
    assert_eq!(
        listener(&l).unwrap_err(),
        Invalid::new(
            "filter_chains[4].filters[1].typed_config.route_config.name",
            "\"inbound|80||\" is also the name of a different inline route_config, at \
             filter_chains[1].filters[2].typed_config.route_config; tables are looked up by \
             name, so give each its own"
        )
    );
    // An error inside an inline table names its full path.
    let mut l = virtual_inbound();
    let mut bad = match inbound_80_routes() {
        http_connection_manager::RouteSpecifier::RouteConfig(rc) => rc,
        _ => unreachable!(),
    };
    bad.virtual_hosts[0].routes[0].action = None;
    l.filter_chains[1].filters[2] = hcm(
        "x",
        http_connection_manager::RouteSpecifier::RouteConfig(bad),
    );
    assert_eq!(
        listener(&l).unwrap_err().field,
        "filter_chains[1].filters[2].typed_config.route_config.virtual_hosts[0].routes[0].route"
    );
}
