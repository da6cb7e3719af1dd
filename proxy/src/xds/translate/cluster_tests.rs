use std::collections::HashMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::cluster::v3::circuit_breakers::{
    Thresholds, thresholds::RetryBudget as XdsRetryBudget,
};
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    CommonLbConfig, CustomClusterType, EdsClusterConfig, LeastRequestLbConfig, OriginalDstLbConfig,
    SlowStartConfig, TransportSocketMatch, common_lb_config,
};
use envoy_types::pb::envoy::config::cluster::v3::{
    Filter, OutlierDetection, load_balancing_policy::Policy as TypedPolicy,
};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ApiConfigSource, ConfigSource, DataSource, ExtraSourceAddress,
    Http1ProtocolOptions, Http2ProtocolOptions, Http3ProtocolOptions,
    HttpProtocolOptions as CommonOptions, Locality, Metadata, TypedExtensionConfig, address,
    data_source,
};
use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as XdsEndpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::CombinedCertificateValidationContext;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, UpstreamTlsContext, common_tls_context::ValidationContextType,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, SdsSecretConfig, SubjectAltNameMatcher, TlsCertificate, TlsParameters,
    subject_alt_name_matcher::SanType, tls_parameters::TlsProtocol,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    AutoHttpConfig, ExplicitHttpConfig, UseDownstreamHttpConfig,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{Struct, UInt32Value, Value, value::Kind};

use super::*;
use crate::snapshot::UpstreamTls;

const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";
const REVIEWS_SAN: &str = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews";
const REVIEWS_SNI: &str = "outbound_.9080_._.reviews.default.svc.cluster.local";

fn any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

fn secs(seconds: i64) -> Option<PbDuration> {
    Some(PbDuration { seconds, nanos: 0 })
}

fn of_type(t: DiscoveryType) -> Option<ClusterDiscoveryType> {
    Some(ClusterDiscoveryType::Type(t as i32))
}

fn ads() -> Option<ConfigSource> {
    Some(ConfigSource {
        config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(
            AggregatedConfigSource {},
        )),
        initial_fetch_timeout: secs(0),
        resource_api_version: 1,
        ..ConfigSource::default()
    })
}

fn sds(name: &str) -> SdsSecretConfig {
    SdsSecretConfig {
        name: name.to_owned(),
        sds_config: ads(),
    }
}

fn exact_matcher(s: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Exact(s.to_owned())),
        ignore_case: false,
    }
}

/// istiod's ISTIO_MUTUAL `UpstreamTlsContext`.
fn istio_tls() -> UpstreamTlsContext {
    #[allow(deprecated)]
    let validation = CertificateValidationContext {
        match_subject_alt_names: vec![exact_matcher(REVIEWS_SAN)],
        ..CertificateValidationContext::default()
    };
    UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_params: Some(TlsParameters {
                tls_minimum_protocol_version: TlsProtocol::TlSv12 as i32,
                tls_maximum_protocol_version: TlsProtocol::TlSv13 as i32,
                ..TlsParameters::default()
            }),
            alpn_protocols: vec!["istio-peer-exchange".into(), "istio".into()],
            tls_certificate_sds_secret_configs: vec![sds("default")],
            validation_context_type: Some(ValidationContextType::CombinedValidationContext(
                CombinedCertificateValidationContext {
                    default_validation_context: Some(validation),
                    validation_context_sds_secret_config: Some(sds("ROOTCA")),
                    ..CombinedCertificateValidationContext::default()
                },
            )),
            ..CommonTlsContext::default()
        }),
        sni: REVIEWS_SNI.to_owned(),
        ..UpstreamTlsContext::default()
    }
}

fn istio_upstream_tls() -> UpstreamTls {
    UpstreamTls {
        sni: Some(REVIEWS_SNI.to_owned()),
        alpn: vec!["istio".into()],
        subject_alt_names: vec![REVIEWS_SAN.to_owned()],
        certificate_secret: Some("default".into()),
        validation_secret: Some("ROOTCA".into()),
    }
}

fn tls_socket(context: &UpstreamTlsContext) -> TransportSocket {
    TransportSocket {
        name: TLS_SOCKET.into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(context))),
    }
}

fn raw_socket() -> TransportSocket {
    TransportSocket {
        name: RAW_BUFFER_SOCKET.into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(any(
            &RawBuffer {},
        ))),
    }
}

fn criteria(pairs: &[(&str, &str)]) -> Option<Struct> {
    Some(Struct {
        fields: pairs
            .iter()
            .map(|(k, v)| {
                let value = Value {
                    kind: Some(Kind::StringValue(v.to_string())),
                };
                (k.to_string(), value)
            })
            .collect(),
    })
}

fn socket_match(name: &str, on: &[(&str, &str)], socket: TransportSocket) -> TransportSocketMatch {
    TransportSocketMatch {
        name: name.into(),
        r#match: criteria(on),
        transport_socket: Some(socket),
    }
}

/// istiod's auto-mTLS pair.
fn auto_mtls() -> Vec<TransportSocketMatch> {
    vec![
        socket_match(
            "tlsMode-istio",
            &[("tlsMode", "istio")],
            tls_socket(&istio_tls()),
        ),
        socket_match("tlsMode-disabled", &[], raw_socket()),
    ]
}

fn http_options(
    protocol: Option<UpstreamProtocolOptions>,
    idle: Option<PbDuration>,
) -> HashMap<String, Any> {
    let options = HttpProtocolOptions {
        common_http_protocol_options: Some(CommonOptions {
            idle_timeout: idle,
            max_requests_per_connection: Some(UInt32Value { value: 100 }),
            ..CommonOptions::default()
        }),
        upstream_protocol_options: protocol,
        ..HttpProtocolOptions::default()
    };
    HashMap::from([(HTTP_PROTOCOL_OPTIONS.to_owned(), any(&options))])
}

fn use_downstream() -> Option<UpstreamProtocolOptions> {
    Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(
        UseDownstreamHttpConfig {
            http_protocol_options: Some(Http1ProtocolOptions::default()),
            http2_protocol_options: Some(Http2ProtocolOptions::default()),
            ..UseDownstreamHttpConfig::default()
        },
    ))
}

fn explicit(config: ProtocolConfig) -> Option<UpstreamProtocolOptions> {
    Some(UpstreamProtocolOptions::ExplicitHttpConfig(
        ExplicitHttpConfig {
            protocol_config: Some(config),
        },
    ))
}

/// istiod's default thresholds: uint32 max and track_remaining.
fn istiod_breakers() -> CircuitBreakers {
    let max = Some(UInt32Value { value: u32::MAX });
    CircuitBreakers {
        thresholds: vec![Thresholds {
            max_connections: max,
            max_pending_requests: max,
            max_requests: max,
            max_retries: max,
            track_remaining: true,
            ..Thresholds::default()
        }],
        ..CircuitBreakers::default()
    }
}

fn socket_address(host: &str, port: u32) -> SocketAddress {
    SocketAddress {
        address: host.into(),
        port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
        ..SocketAddress::default()
    }
}

fn lb(host: &str, port: u32) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(XdsEndpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(socket_address(host, port))),
            }),
            ..XdsEndpoint::default()
        })),
        ..LbEndpoint::default()
    }
}

fn cla(name: &str, endpoints: Vec<LbEndpoint>) -> Option<ClusterLoadAssignment> {
    Some(ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: endpoints,
            ..LocalityLbEndpoints::default()
        }],
        ..ClusterLoadAssignment::default()
    })
}

/// istiod's `outbound|9080||reviews...`: EDS, auto-mTLS, sniffed protocol, a DestinationRule
/// with outlier detection, and the fields Skiff ignores.
fn reviews() -> XdsCluster {
    XdsCluster {
        name: REVIEWS.into(),
        cluster_discovery_type: of_type(DiscoveryType::Eds),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: ads(),
            service_name: REVIEWS.into(),
        }),
        connect_timeout: secs(10),
        lb_policy: XdsLb::LeastRequest as i32,
        circuit_breakers: Some(istiod_breakers()),
        typed_extension_protocol_options: http_options(use_downstream(), None),
        outlier_detection: Some(OutlierDetection {
            consecutive_5xx: Some(UInt32Value { value: 5 }),
            interval: secs(10),
            base_ejection_time: secs(30),
            enforcing_success_rate: Some(UInt32Value { value: 0 }),
            ..OutlierDetection::default()
        }),
        common_lb_config: Some(CommonLbConfig {
            healthy_panic_threshold: Some(Percent { value: 0.0 }),
            locality_config_specifier: Some(
                common_lb_config::LocalityConfigSpecifier::LocalityWeightedLbConfig(
                    common_lb_config::LocalityWeightedLbConfig {},
                ),
            ),
            ..CommonLbConfig::default()
        }),
        lb_config: Some(LbConfig::LeastRequestLbConfig(LeastRequestLbConfig {
            slow_start_config: Some(SlowStartConfig {
                slow_start_window: secs(30),
                ..SlowStartConfig::default()
            }),
            ..LeastRequestLbConfig::default()
        })),
        transport_socket_matches: auto_mtls(),
        metadata: Some(Metadata::default()),
        filters: vec![Filter {
            name: "istio.metadata_exchange".into(),
            typed_config: Some(Any {
                type_url: "type.googleapis.com/udpa.type.v1.TypedStruct".into(),
                value: Vec::new(),
            }),
            ..Filter::default()
        }],
        alt_stat_name: "outbound|9080||reviews.default.svc.cluster.local;".into(),
        dns_lookup_family: 1,
        ..XdsCluster::default()
    }
}

fn template(name: &str, source: ClusterSource) -> ClusterTemplate {
    ClusterTemplate {
        name: name.into(),
        source,
        lb_policy: LbPolicy::RoundRobin,
        connect_timeout: Duration::from_secs(10),
        upstream_bind: Vec::new(),
        protocol: UpstreamProtocol::Http1,
        http_idle_timeout: DEFAULT_HTTP_IDLE_TIMEOUT,
        retry_budget: RetryBudget::default(),
        transport: UpstreamTransport::Plaintext,
    }
}

fn spec(addr: &str) -> EndpointSpec {
    EndpointSpec {
        address: addr.parse().unwrap(),
        weight: 1,
        tls_mode_istio: false,
        locality: None,
    }
}

#[test]
fn istiod_eds_cluster_with_auto_mtls() {
    assert_eq!(
        cluster(&reviews()).unwrap(),
        ClusterTemplate {
            lb_policy: LbPolicy::LeastRequest,
            protocol: UpstreamProtocol::Downstream,
            transport: UpstreamTransport::IstioAuto(istio_upstream_tls()),
            ..template(
                REVIEWS,
                ClusterSource::Eds {
                    service_name: REVIEWS.into()
                }
            )
        }
    );
    // Without a service name the endpoints are the cluster's own name's.
    let mut c = reviews();
    c.eds_cluster_config = Some(EdsClusterConfig::default());
    assert_eq!(
        cluster(&c).unwrap().source,
        ClusterSource::Eds {
            service_name: REVIEWS.into()
        }
    );
}

#[test]
fn inbound_cluster_bound_to_localhost_is_static() {
    let c = XdsCluster {
        name: "inbound|9080||".into(),
        cluster_discovery_type: of_type(DiscoveryType::Static),
        connect_timeout: secs(10),
        circuit_breakers: Some(istiod_breakers()),
        load_assignment: cla("inbound|9080||", vec![lb("127.0.0.1", 9080)]),
        ..XdsCluster::default()
    };
    assert_eq!(
        cluster(&c).unwrap(),
        template(
            "inbound|9080||",
            ClusterSource::Static {
                endpoints: vec![spec("127.0.0.1:9080")]
            }
        )
    );
}

#[test]
fn passthrough_is_original_dst() {
    let c = XdsCluster {
        name: PASSTHROUGH.into(),
        cluster_discovery_type: of_type(DiscoveryType::OriginalDst),
        lb_policy: XdsLb::ClusterProvided as i32,
        connect_timeout: secs(10),
        circuit_breakers: Some(istiod_breakers()),
        typed_extension_protocol_options: http_options(use_downstream(), None),
        lb_config: Some(LbConfig::OriginalDstLbConfig(OriginalDstLbConfig {
            upstream_port_override: Some(UInt32Value { value: 8080 }),
            ..OriginalDstLbConfig::default()
        })),
        ..XdsCluster::default()
    };
    assert_eq!(
        cluster(&c).unwrap(),
        ClusterTemplate {
            lb_policy: LbPolicy::LeastRequest,
            protocol: UpstreamProtocol::Downstream,
            ..template(PASSTHROUGH, ClusterSource::OriginalDst)
        }
    );
}

const PASSTHROUGH: &str = "PassthroughCluster";

#[test]
#[allow(deprecated)]
fn inbound_passthrough_binds_127_0_0_6_and_6() {
    let bind_v4 = socket_address("127.0.0.6", 0);
    let new_style = BindConfig {
        source_address: Some(bind_v4.clone()),
        extra_source_addresses: vec![ExtraSourceAddress {
            address: Some(socket_address("::6", 0)),
            socket_options: None,
        }],
        ..BindConfig::default()
    };
    let old_style = BindConfig {
        source_address: Some(bind_v4),
        additional_source_addresses: vec![socket_address("::6", 0)],
        ..BindConfig::default()
    };
    let v4_only = BindConfig {
        source_address: Some(socket_address("127.0.0.6", 0)),
        ..BindConfig::default()
    };
    let both: Vec<IpAddr> = vec!["127.0.0.6".parse().unwrap(), "::6".parse().unwrap()];
    for (name, bind, expected) in [
        ("InboundPassthroughCluster", new_style, both.clone()),
        ("InboundPassthroughClusterIpv6", old_style, both),
        (
            "InboundPassthroughClusterIpv4",
            v4_only,
            vec!["127.0.0.6".parse().unwrap()],
        ),
    ] {
        let c = XdsCluster {
            name: name.into(),
            cluster_discovery_type: of_type(DiscoveryType::OriginalDst),
            lb_policy: XdsLb::ClusterProvided as i32,
            connect_timeout: secs(10),
            upstream_bind_config: Some(bind),
            typed_extension_protocol_options: http_options(use_downstream(), None),
            ..XdsCluster::default()
        };
        let t = cluster(&c).unwrap();
        assert_eq!(t.source, ClusterSource::OriginalDst, "{name}");
        assert_eq!(t.upstream_bind, expected, "{name}");
    }
}

#[test]
fn blackhole_is_static_without_endpoints() {
    let c = XdsCluster {
        name: BLACKHOLE_CLUSTER.into(),
        cluster_discovery_type: of_type(DiscoveryType::Static),
        connect_timeout: secs(10),
        ..XdsCluster::default()
    };
    assert_eq!(cluster(&c).unwrap().source, ClusterSource::BlackHole);
    // Another empty STATIC cluster is just empty.
    let mut other = c.clone();
    other.name = "inbound|7070||".into();
    other.load_assignment = cla("inbound|7070||", vec![]);
    assert_eq!(
        cluster(&other).unwrap().source,
        ClusterSource::Static { endpoints: vec![] }
    );
}

#[test]
#[allow(deprecated)]
fn dns_service_entry_clusters() {
    let mut endpoint = lb("api.example.com", 443);
    endpoint.load_balancing_weight = Some(UInt32Value { value: 3 });
    let c = XdsCluster {
        name: "outbound|443||api.example.com".into(),
        cluster_discovery_type: of_type(DiscoveryType::StrictDns),
        connect_timeout: secs(10),
        lb_policy: XdsLb::LeastRequest as i32,
        dns_refresh_rate: secs(60),
        respect_dns_ttl: true,
        dns_lookup_family: 1,
        load_assignment: Some(ClusterLoadAssignment {
            endpoints: vec![LocalityLbEndpoints {
                locality: Some(Locality {
                    region: "us-east1".into(),
                    ..Locality::default()
                }),
                lb_endpoints: vec![endpoint, lb("10.9.9.9", 443)],
                ..LocalityLbEndpoints::default()
            }],
            ..ClusterLoadAssignment::default()
        }),
        ..XdsCluster::default()
    };
    let target = |host: &str, weight: u32| DnsTarget {
        host: host.into(),
        port: 443,
        weight,
        tls_mode_istio: false,
        locality: Some("us-east1".into()),
    };
    assert_eq!(
        cluster(&c).unwrap(),
        ClusterTemplate {
            lb_policy: LbPolicy::LeastRequest,
            ..template(
                "outbound|443||api.example.com",
                ClusterSource::Dns {
                    targets: vec![target("api.example.com", 3), target("10.9.9.9", 1)],
                    refresh: Duration::from_secs(60),
                }
            )
        }
    );
    let logical = XdsCluster {
        cluster_discovery_type: of_type(DiscoveryType::LogicalDns),
        dns_refresh_rate: None,
        ..c
    };
    match cluster(&logical).unwrap().source {
        ClusterSource::Dns { targets, refresh } => {
            assert_eq!(targets.len(), 2);
            assert_eq!(refresh, DEFAULT_DNS_REFRESH);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn build_makes_the_snapshot_cluster() {
    let mut eds = cluster(&reviews()).unwrap();
    eds.upstream_bind = vec!["127.0.0.6".parse().unwrap()];
    eds.retry_budget = RetryBudget {
        budget_percent: 50.0,
        min_retry_concurrency: 1,
    };
    let mut sidecar = spec("10.1.0.7:9080");
    sidecar.tls_mode_istio = true;
    sidecar.weight = 3;
    let built = eds.build(&[sidecar, spec("10.1.0.8:9080")]);
    assert_eq!(built.name, REVIEWS);
    assert_eq!(built.discovery, Discovery::Static);
    assert_eq!(built.lb_policy, LbPolicy::LeastRequest);
    assert_eq!(built.connect_timeout, Duration::from_secs(10));
    assert_eq!(built.upstream_bind, eds.upstream_bind);
    assert_eq!(built.protocol, UpstreamProtocol::Downstream);
    assert_eq!(built.http_idle_timeout, DEFAULT_HTTP_IDLE_TIMEOUT);
    assert_eq!(built.retry_budget, eds.retry_budget);
    assert_eq!(
        built.transport,
        UpstreamTransport::IstioAuto(istio_upstream_tls())
    );
    let endpoints: Vec<(String, u32, bool)> = built
        .endpoints
        .iter()
        .map(|e| (e.address.to_string(), e.weight, e.tls_mode_istio))
        .collect();
    assert_eq!(
        endpoints,
        vec![
            ("10.1.0.7:9080".into(), 3, true),
            ("10.1.0.8:9080".into(), 1, false)
        ]
    );
    assert!(built.needs_tls(Some(0)));
    assert!(!built.needs_tls(Some(1)));

    let static_cluster = template(
        "inbound|9080||",
        ClusterSource::Static {
            endpoints: vec![spec("127.0.0.1:9080")],
        },
    );
    let built = static_cluster.build(&[spec("10.0.0.1:1")]);
    assert_eq!(built.endpoints.len(), 1);
    assert_eq!(
        built.endpoints[0].address,
        "127.0.0.1:9080".parse().unwrap()
    );
    assert_eq!(built.protocol, UpstreamProtocol::Http1);

    let dns = template(
        "dns",
        ClusterSource::Dns {
            targets: vec![],
            refresh: DEFAULT_DNS_REFRESH,
        },
    );
    assert_eq!(dns.build(&[spec("10.0.0.1:1")]).endpoints.len(), 1);
    for (source, discovery) in [
        (ClusterSource::OriginalDst, Discovery::OriginalDst),
        (ClusterSource::BlackHole, Discovery::BlackHole),
    ] {
        let built = template("x", source).build(&[spec("10.0.0.1:1")]);
        assert_eq!(built.discovery, discovery);
        assert!(built.endpoints.is_empty());
    }
}

#[path = "cluster_option_tests.rs"]
mod options;
#[path = "cluster_refusal_tests.rs"]
mod refusals;
