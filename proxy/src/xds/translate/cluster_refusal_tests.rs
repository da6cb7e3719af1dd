//! Each refusal's exact field path and reason.

use super::*;

const HTTP_AT: &str =
    "typed_extension_protocol_options[\"envoy.extensions.upstreams.http.v3.HttpProtocolOptions\"]";

#[test]
#[allow(deprecated)]
fn refusals_name_the_field_and_the_reason() {
    type Edit = Box<dyn Fn(&mut XdsCluster)>;
    let tls_edit = |f: fn(&mut CommonTlsContext)| -> Edit {
        Box::new(move |c: &mut XdsCluster| {
            let mut context = istio_tls();
            f(context.common_tls_context.as_mut().unwrap());
            c.transport_socket_matches.clear();
            c.transport_socket = Some(tls_socket(&context));
        })
    };
    let tls_at = "transport_socket.typed_config.common_tls_context";
    let consistent = |p: &str| {
        format!(
            "{p} (a DestinationRule's consistentHash) is not supported: Skiff would spread the \
             requests that consistent hashing keeps on one endpoint (session affinity); use \
             ROUND_ROBIN, LEAST_REQUEST or RANDOM"
        )
    };
    let cases: Vec<(Edit, String, String)> = vec![
        (
            Box::new(|c| c.name.clear()),
            "name".into(),
            "is empty".into(),
        ),
        (
            Box::new(|c| {
                c.cluster_discovery_type = Some(ClusterDiscoveryType::ClusterType(CustomClusterType {
                    name: "envoy.clusters.aggregate".into(),
                    typed_config: None,
                }))
            }),
            "cluster_type".into(),
            "custom cluster type \"envoy.clusters.aggregate\" is not supported; use type \
             STATIC, STRICT_DNS, LOGICAL_DNS, EDS or ORIGINAL_DST"
                .into(),
        ),
        (
            Box::new(|c| c.cluster_discovery_type = Some(ClusterDiscoveryType::Type(9))),
            "type".into(),
            "9 is not a known discovery type".into(),
        ),
        (
            Box::new(|c| c.lb_policy = XdsLb::RingHash as i32),
            "lb_policy".into(),
            consistent("RING_HASH"),
        ),
        (
            Box::new(|c| c.lb_policy = XdsLb::Maglev as i32),
            "lb_policy".into(),
            consistent("MAGLEV"),
        ),
        (
            Box::new(|c| c.lb_policy = XdsLb::ClusterProvided as i32),
            "lb_policy".into(),
            "CLUSTER_PROVIDED is only meaningful for ORIGINAL_DST clusters".into(),
        ),
        (
            Box::new(|c| c.lb_policy = 4),
            "lb_policy".into(),
            "4 is not a known load-balancing policy".into(),
        ),
        (
            Box::new(|c| c.lb_policy = XdsLb::LoadBalancingPolicyConfig as i32),
            "lb_policy".into(),
            "LOAD_BALANCING_POLICY_CONFIG needs load_balancing_policy".into(),
        ),
        (
            Box::new(|c| c.load_balancing_policy = Some(LoadBalancingPolicy::default())),
            "load_balancing_policy.policies".into(),
            "none is supported; Skiff balances with round_robin, least_request or random".into(),
        ),
        (
            Box::new(|c| c.connect_timeout = secs(-1)),
            "connect_timeout".into(),
            "-1s 0ns is not a valid non-negative duration".into(),
        ),
        (
            Box::new(|c| {
                c.eds_cluster_config.as_mut().unwrap().eds_config = Some(ConfigSource {
                    config_source_specifier: Some(
                        config_source::ConfigSourceSpecifier::ApiConfigSource(
                            ApiConfigSource::default(),
                        ),
                    ),
                    ..ConfigSource::default()
                })
            }),
            "eds_cluster_config.eds_config".into(),
            "Skiff receives endpoints only on the ADS stream; use ads: {}".into(),
        ),
        (
            Box::new(|c| {
                c.cluster_discovery_type = of_type(DiscoveryType::OriginalDst);
                c.lb_config = Some(LbConfig::OriginalDstLbConfig(OriginalDstLbConfig {
                    use_http_header: true,
                    ..OriginalDstLbConfig::default()
                }));
            }),
            "original_dst_lb_config.use_http_header".into(),
            "Skiff connects to the connection's own original destination; choosing it by an \
             HTTP header is not supported"
                .into(),
        ),
        (
            Box::new(|c| {
                c.cluster_discovery_type = of_type(DiscoveryType::Static);
                c.load_assignment = cla("x", vec![lb("reviews", 9080)]);
            }),
            "load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address"
                .into(),
            "\"reviews\" is not an IP address; only STRICT_DNS and LOGICAL_DNS clusters take \
             host names"
                .into(),
        ),
        (
            Box::new(|c| {
                c.cluster_discovery_type = of_type(DiscoveryType::StrictDns);
                c.dns_refresh_rate = secs(0);
            }),
            "dns_refresh_rate".into(),
            "must be at least 1ms".into(),
        ),
        (
            Box::new(|c| {
                c.upstream_bind_config = Some(BindConfig {
                    source_address: Some(socket_address("127.0.0.6", 15000)),
                    ..BindConfig::default()
                })
            }),
            "upstream_bind_config.source_address.port_value".into(),
            "Skiff binds only the source address; the port must be 0 (any)".into(),
        ),
        (
            Box::new(|c| {
                c.upstream_bind_config = Some(BindConfig {
                    source_address: Some(socket_address("localhost", 0)),
                    ..BindConfig::default()
                })
            }),
            "upstream_bind_config.source_address.address".into(),
            "\"localhost\" is not an IP address".into(),
        ),
        (
            Box::new(|c| {
                c.upstream_bind_config = Some(BindConfig {
                    source_address: Some(socket_address("127.0.0.6", 0)),
                    extra_source_addresses: vec![ExtraSourceAddress {
                        address: Some(socket_address("127.0.0.7", 0)),
                        socket_options: None,
                    }],
                    ..BindConfig::default()
                })
            }),
            "upstream_bind_config.extra_source_addresses[0].address.address".into(),
            "127.0.0.7 is a second source address of the family of 127.0.0.6; give at most one \
             per family"
                .into(),
        ),
        (
            Box::new(|c| {
                c.typed_extension_protocol_options = http_options(
                    explicit(ProtocolConfig::Http3ProtocolOptions(Http3ProtocolOptions::default())),
                    None,
                )
            }),
            format!("{HTTP_AT}.explicit_http_config.http3_protocol_options"),
            "HTTP/3 is not supported; use HTTP/1.1 or HTTP/2".into(),
        ),
        (
            Box::new(|c| {
                c.typed_extension_protocol_options = http_options(
                    Some(UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig::default())),
                    None,
                )
            }),
            format!("{HTTP_AT}.explicit_http_config"),
            "names no protocol; give http_protocol_options or http2_protocol_options".into(),
        ),
        (
            Box::new(|c| {
                c.typed_extension_protocol_options =
                    HashMap::from([(HTTP_PROTOCOL_OPTIONS.to_owned(), any(&RawBuffer {}))])
            }),
            HTTP_AT.into(),
            "is a \"type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer\"; \
             expected envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
                .into(),
        ),
        (
            Box::new(|c| {
                c.typed_extension_protocol_options
                    .insert("envoy.extensions.upstreams.http.v3.Other".into(), any(&RawBuffer {}));
            }),
            "typed_extension_protocol_options[\"envoy.extensions.upstreams.http.v3.Other\"]".into(),
            "protocol options \"envoy.extensions.upstreams.http.v3.Other\" are not supported; \
             Skiff reads only envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
                .into(),
        ),
        (
            Box::new(|c| {
                c.circuit_breakers.as_mut().unwrap().thresholds[0].retry_budget =
                    Some(XdsRetryBudget {
                        budget_percent: Some(Percent { value: 150.0 }),
                        ..XdsRetryBudget::default()
                    })
            }),
            "circuit_breakers.thresholds[0].retry_budget.budget_percent".into(),
            "150 is not a percentage (0-100)".into(),
        ),
        (
            Box::new(|c| {
                c.transport_socket = Some(TransportSocket {
                    name: "envoy.transport_sockets.upstream_proxy_protocol".into(),
                    config_type: Some(transport_socket::ConfigType::TypedConfig(Any {
                        type_url: "type.googleapis.com/envoy.extensions.transport_sockets.\
                                   proxy_protocol.v3.ProxyProtocolUpstreamTransport"
                            .into(),
                        value: Vec::new(),
                    })),
                })
            }),
            "transport_socket.typed_config".into(),
            "transport socket \"envoy.extensions.transport_sockets.proxy_protocol.v3.\
             ProxyProtocolUpstreamTransport\" is not supported; Skiff speaks plaintext \
             (envoy.transport_sockets.raw_buffer) or TLS (envoy.transport_sockets.tls)"
                .into(),
        ),
        (
            Box::new(|c| {
                let hbone = TransportSocketMatch {
                    name: "hbone".into(),
                    r#match: criteria(&[("tunnel", "http")]),
                    transport_socket: Some(TransportSocket {
                        name: "envoy.transport_sockets.internal_upstream".into(),
                        config_type: None,
                    }),
                };
                c.transport_socket_matches.insert(0, hbone);
            }),
            "transport_socket_matches[0].transport_socket.name".into(),
            "transport socket \"envoy.transport_sockets.internal_upstream\" is not supported; \
             Skiff speaks plaintext (envoy.transport_sockets.raw_buffer) or TLS \
             (envoy.transport_sockets.tls)"
                .into(),
        ),
        (
            Box::new(|c| {
                c.transport_socket_matches[1].r#match = criteria(&[("tlsMode", "disabled")]);
            }),
            "transport_socket_matches[1].match".into(),
            "Skiff matches only istiod's auto-mTLS entries, {tlsMode: istio} and {}".into(),
        ),
        (
            Box::new(|c| {
                c.transport_socket_matches[0].transport_socket = Some(raw_socket());
                c.transport_socket_matches[1].transport_socket = Some(tls_socket(&istio_tls()));
            }),
            "transport_socket_matches".into(),
            "Skiff's auto-mTLS is TLS for endpoints with tlsMode: istio and plaintext for the \
             others; these entries ask for another combination"
                .into(),
        ),
        (
            tls_edit(|t| t.tls_certificates = vec![TlsCertificate::default()]),
            format!("{tls_at}.tls_certificates"),
            "inline certificates are not supported; name the certificate by SDS \
             (tls_certificate_sds_secret_configs)"
                .into(),
        ),
        (
            tls_edit(|t| t.tls_certificate_sds_secret_configs.push(sds("other"))),
            format!("{tls_at}.tls_certificate_sds_secret_configs"),
            "Skiff presents one client certificate; name one secret".into(),
        ),
        (
            tls_edit(|t| {
                t.validation_context_type = Some(ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        match_subject_alt_names: vec![StringMatcher {
                            match_pattern: Some(MatchPattern::Prefix("spiffe://".into())),
                            ignore_case: false,
                        }],
                        ..CertificateValidationContext::default()
                    },
                ))
            }),
            format!("{tls_at}.validation_context.match_subject_alt_names[0]"),
            "only exact SAN matches are supported (istiod's ISTIO_MUTUAL and subjectAltNames)"
                .into(),
        ),
        (
            tls_edit(|t| {
                t.validation_context_type = Some(ValidationContextType::CombinedValidationContext(
                    CombinedCertificateValidationContext {
                        default_validation_context: Some(CertificateValidationContext {
                            trusted_ca: Some(DataSource {
                                specifier: Some(data_source::Specifier::InlineString("pem".into())),
                                ..DataSource::default()
                            }),
                            ..CertificateValidationContext::default()
                        }),
                        ..CombinedCertificateValidationContext::default()
                    },
                ))
            }),
            format!("{tls_at}.combined_validation_context.default_validation_context.trusted_ca"),
            "an inline CA is not supported; name the CA by SDS (validation_context_sds_secret_config)"
                .into(),
        ),
        (
            Box::new(|c| {
                c.filters.push(Filter {
                    name: "envoy.filters.network.upstream.tap".into(),
                    ..Filter::default()
                })
            }),
            "filters[1]".into(),
            "upstream network filter \"envoy.filters.network.upstream.tap\" is not supported; \
             Skiff accepts only Istio's metadata exchange (ignored)"
                .into(),
        ),
    ];
    for (n, (edit, field, reason)) in cases.into_iter().enumerate() {
        let mut c = reviews();
        edit(&mut c);
        assert_eq!(
            cluster(&c).map(|_| ()),
            Err(Invalid::new(field, reason)),
            "case {n}"
        );
    }
}
