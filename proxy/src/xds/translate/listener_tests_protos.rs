//! Builders of test listeners, shaped like istiod's output (spec section 1).

use super::*;

pub(super) fn pack<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

/// A config of a type Skiff never decodes (Istio's own protos).
pub(super) fn opaque(type_url: &str) -> Any {
    Any {
        type_url: type_url.into(),
        value: vec![0x0a, 0x01, b'x'],
    }
}

/// An Istio filter wrapped in a `udpa.type.v1.TypedStruct`.
pub(super) fn typed_struct(inner: &str) -> Any {
    #[derive(Clone, PartialEq, Message)]
    struct TypedStruct {
        #[prost(string, tag = "1")]
        type_url: String,
    }
    Any {
        type_url: "type.googleapis.com/udpa.type.v1.TypedStruct".into(),
        value: TypedStruct {
            type_url: inner.into(),
        }
        .encode_to_vec(),
    }
}

pub(super) fn secs(s: i64) -> Option<PbDuration> {
    Some(PbDuration {
        seconds: s,
        nanos: 0,
    })
}

pub(super) fn sock(ip: &str, port: u32) -> Option<Address> {
    Some(Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    })
}

pub(super) fn net(name: &str, any: Any) -> Filter {
    Filter {
        name: name.into(),
        config_type: Some(filter::ConfigType::TypedConfig(any)),
    }
}

pub(super) fn tcp_proxy(cluster: &str) -> Filter {
    net(
        "envoy.filters.network.tcp_proxy",
        pack(&TcpProto {
            stat_prefix: cluster.into(),
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.into())),
            ..Default::default()
        }),
    )
}

pub(super) fn stats() -> Filter {
    net(
        "istio.stats",
        opaque("type.googleapis.com/stats.PluginConfig"),
    )
}

pub(super) fn http(name: &str, any: Any) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(any)),
        ..Default::default()
    }
}

pub(super) fn router() -> HttpFilter {
    http("envoy.filters.http.router", pack(&Router::default()))
}

/// Istio's outbound HTTP filters, router last.
pub(super) fn outbound_http_filters() -> Vec<HttpFilter> {
    let t = |s: &str| format!("type.googleapis.com/{s}");
    vec![
        http(
            "istio.metadata_exchange",
            typed_struct(&t("io.istio.http.peer_metadata.Config")),
        ),
        http(
            "envoy.filters.http.grpc_stats",
            opaque(&t(
                "envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
            )),
        ),
        http(
            "istio.alpn",
            opaque(&t(
                "istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig",
            )),
        ),
        http(
            "envoy.filters.http.fault",
            opaque(&t("envoy.extensions.filters.http.fault.v3.HTTPFault")),
        ),
        http(
            "envoy.filters.http.cors",
            opaque(&t("envoy.extensions.filters.http.cors.v3.Cors")),
        ),
        http("istio.stats", opaque(&t("stats.PluginConfig"))),
        router(),
    ]
}

pub(super) fn hcm(stat_prefix: &str, routes: http_connection_manager::RouteSpecifier) -> Filter {
    net(
        "envoy.filters.network.http_connection_manager",
        pack(&HttpConnectionManager {
            stat_prefix: stat_prefix.into(),
            route_specifier: Some(routes),
            http_filters: outbound_http_filters(),
            use_remote_address: Some(BoolValue { value: false }),
            stream_idle_timeout: secs(0),
            upgrade_configs: vec![http_connection_manager::UpgradeConfig {
                upgrade_type: "websocket".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
    )
}

pub(super) fn rds(name: &str) -> http_connection_manager::RouteSpecifier {
    http_connection_manager::RouteSpecifier::Rds(Rds {
        route_config_name: name.into(),
        config_source: Some(ConfigSource {
            config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
                AggregatedConfigSource {},
            )),
            initial_fetch_timeout: secs(0),
            ..Default::default()
        }),
    })
}

/// istiod's inline inbound table `inbound|80||`.
pub(super) fn inbound_80_routes() -> http_connection_manager::RouteSpecifier {
    http_connection_manager::RouteSpecifier::RouteConfig(RouteConfiguration {
        name: "inbound|80||".into(),
        virtual_hosts: vec![VirtualHost {
            name: "inbound|http|8000".into(),
            domains: vec!["*".into()],
            routes: vec![RouteProto {
                name: "default".into(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(
                        "inbound|80||".into(),
                    )),
                    timeout: secs(0),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    })
}

pub(super) fn matching(f: impl FnOnce(&mut FilterChainMatch)) -> Option<FilterChainMatch> {
    let mut m = FilterChainMatch::default();
    f(&mut m);
    Some(m)
}

pub(super) fn chain(
    name: &str,
    m: Option<FilterChainMatch>,
    filters: Vec<Filter>,
) -> FilterChainProto {
    FilterChainProto {
        name: name.into(),
        filter_chain_match: m,
        filters,
        ..Default::default()
    }
}

pub(super) fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

pub(super) fn listener_filter(
    name: &str,
    any: Any,
    disabled: Option<ListenerFilterChainMatchPredicate>,
) -> ListenerFilter {
    ListenerFilter {
        name: name.into(),
        filter_disabled: disabled,
        config_type: Some(listener_filter::ConfigType::TypedConfig(any)),
    }
}

pub(super) fn inspector(
    kind: &str,
    disabled: Option<ListenerFilterChainMatchPredicate>,
) -> ListenerFilter {
    let (name, type_url) = match kind {
        "tls" => (
            "envoy.filters.listener.tls_inspector",
            "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector",
        ),
        _ => (
            "envoy.filters.listener.http_inspector",
            "envoy.extensions.filters.listener.http_inspector.v3.HttpInspector",
        ),
    };
    listener_filter(
        name,
        opaque(&format!("type.googleapis.com/{type_url}")),
        disabled,
    )
}

pub(super) fn port_range(start: i32, end: i32) -> ListenerFilterChainMatchPredicate {
    ListenerFilterChainMatchPredicate {
        rule: Some(Rule::DestinationPortRange(Int32Range { start, end })),
    }
}

pub(super) fn or(
    rules: Vec<ListenerFilterChainMatchPredicate>,
) -> ListenerFilterChainMatchPredicate {
    ListenerFilterChainMatchPredicate {
        rule: Some(Rule::OrMatch(MatchSet { rules })),
    }
}

pub(super) fn virtual_outbound() -> ListenerProto {
    ListenerProto {
        name: "virtualOutbound".into(),
        address: sock("0.0.0.0", 15001),
        use_original_dst: Some(BoolValue { value: true }),
        traffic_direction: TrafficDirection::Outbound as i32,
        filter_chains: vec![
            chain(
                "virtualOutbound-blackhole",
                matching(|m| m.destination_port = Some(UInt32Value { value: 15001 })),
                vec![stats(), tcp_proxy("BlackHoleCluster")],
            ),
            chain(
                "virtualOutbound-catchall-tcp",
                None,
                vec![stats(), tcp_proxy("PassthroughCluster")],
            ),
        ],
        ..Default::default()
    }
}

pub(super) fn outbound_9080() -> ListenerProto {
    ListenerProto {
        name: "0.0.0.0_9080".into(),
        address: sock("0.0.0.0", 9080),
        bind_to_port: Some(BoolValue { value: false }),
        traffic_direction: TrafficDirection::Outbound as i32,
        listener_filters: vec![inspector("tls", None), inspector("http", None)],
        listener_filters_timeout: secs(0),
        continue_on_listener_filters_timeout: true,
        filter_chains: vec![chain(
            "0.0.0.0_9080",
            matching(|m| {
                m.transport_protocol = "raw_buffer".into();
                m.application_protocols = strings(&["http/1.1", "h2c"]);
            }),
            vec![hcm("outbound_0.0.0.0_9080", rds("9080"))],
        )],
        default_filter_chain: Some(chain(
            "PassthroughFilterChain",
            None,
            vec![stats(), tcp_proxy("PassthroughCluster")],
        )),
        ..Default::default()
    }
}

pub(super) fn istio_tls() -> Option<TransportSocket> {
    let ctx = DownstreamTlsContext {
        require_client_certificate: Some(BoolValue { value: true }),
        common_tls_context: Some(CommonTlsContext {
            alpn_protocols: strings(&["h2", "http/1.1"]),
            tls_certificate_sds_secret_configs: vec![SdsSecretConfig {
                name: "default".into(),
                ..Default::default()
            }],
            validation_context_type: Some(
                common_tls_context::ValidationContextType::CombinedValidationContext(
                    common_tls_context::CombinedCertificateValidationContext {
                        validation_context_sds_secret_config: Some(SdsSecretConfig {
                            name: "ROOTCA".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    Some(TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack(&ctx))),
    })
}

pub(super) fn virtual_inbound() -> ListenerProto {
    let authn = || {
        net(
            "istio_authn",
            typed_struct("type.googleapis.com/io.istio.network.authn.Config"),
        )
    };
    let mx = || {
        net(
            "istio.metadata_exchange",
            opaque("type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange"),
        )
    };
    let rbac = || {
        net(
            "envoy.filters.network.rbac",
            opaque("type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"),
        )
    };
    let all = || {
        vec![CidrRange {
            address_prefix: "0.0.0.0".into(),
            prefix_len: Some(UInt32Value { value: 0 }),
        }]
    };
    let tls_chain = |mut c: FilterChainProto| {
        c.transport_socket = istio_tls();
        c
    };
    let port80 = |transport: &str, alpn: &[&str]| {
        let (transport, alpn) = (transport.to_owned(), strings(alpn));
        matching(move |m| {
            m.destination_port = Some(UInt32Value { value: 80 });
            m.transport_protocol = transport;
            m.application_protocols = alpn;
        })
    };
    ListenerProto {
        name: "virtualInbound".into(),
        address: sock("0.0.0.0", 15006),
        use_original_dst: Some(BoolValue { value: true }),
        traffic_direction: TrafficDirection::Inbound as i32,
        listener_filters: vec![
            listener_filter(
                "envoy.filters.listener.original_dst",
                opaque(
                    "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst",
                ),
                None,
            ),
            inspector("tls", Some(port_range(15006, 15007))),
            inspector(
                "http",
                Some(or(vec![port_range(80, 81), port_range(15006, 15007)])),
            ),
        ],
        listener_filters_timeout: secs(0),
        continue_on_listener_filters_timeout: true,
        filter_chains: vec![
            chain(
                "virtualInbound-blackhole",
                matching(|m| m.destination_port = Some(UInt32Value { value: 15006 })),
                vec![mx(), stats(), tcp_proxy("BlackHoleCluster")],
            ),
            tls_chain(chain(
                "virtualInbound-catchall-http",
                matching(|m| {
                    m.prefix_ranges = all();
                    m.transport_protocol = "tls".into();
                    m.application_protocols =
                        strings(&["istio-http/1.0", "istio-http/1.1", "istio-h2"]);
                }),
                vec![
                    authn(),
                    mx(),
                    hcm("inbound_0.0.0.0_15006", inbound_80_routes()),
                ],
            )),
            chain(
                "virtualInbound",
                matching(|m| {
                    m.prefix_ranges = all();
                    m.transport_protocol = "raw_buffer".into();
                }),
                vec![
                    authn(),
                    mx(),
                    rbac(),
                    stats(),
                    tcp_proxy("InboundPassthroughCluster"),
                ],
            ),
            tls_chain(chain(
                "0.0.0.0_80",
                port80(
                    "tls",
                    &[
                        "istio",
                        "istio-peer-exchange",
                        "istio-http/1.0",
                        "istio-http/1.1",
                        "istio-h2",
                    ],
                ),
                vec![
                    authn(),
                    mx(),
                    hcm("inbound_0.0.0.0_80", inbound_80_routes()),
                ],
            )),
            chain(
                "0.0.0.0_80",
                port80("raw_buffer", &[]),
                vec![authn(), hcm("inbound_0.0.0.0_80", inbound_80_routes())],
            ),
        ],
        ..Default::default()
    }
}

pub(super) fn tcp(chain: &FilterChain) -> &TcpProxy {
    match &chain.handler {
        Handler::Tcp(t) => t,
        Handler::Http(_) => panic!("chain {} is HTTP", chain.name),
    }
}

pub(super) fn http_manager(chain: &FilterChain) -> &HttpManager {
    match &chain.handler {
        Handler::Http(h) => h,
        Handler::Tcp(_) => panic!("chain {} is TCP", chain.name),
    }
}
