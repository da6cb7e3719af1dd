//! Protocol, idle timeout, retry budget, load-balancing policy and transport variants.

use super::*;

#[test]
#[allow(deprecated)]
fn upstream_protocols() {
    let with = |f: &dyn Fn(&mut XdsCluster)| {
        let mut c = XdsCluster {
            name: "c".into(),
            cluster_discovery_type: of_type(DiscoveryType::Eds),
            ..XdsCluster::default()
        };
        f(&mut c);
        cluster(&c).unwrap().protocol
    };
    use UpstreamProtocol::*;
    assert_eq!(with(&|_| {}), Http1, "Envoy's default");
    assert_eq!(
        with(&|c| c.typed_extension_protocol_options = http_options(None, secs(30))),
        Http1
    );
    assert_eq!(
        with(&|c| {
            c.typed_extension_protocol_options = http_options(
                explicit(ProtocolConfig::Http2ProtocolOptions(
                    Http2ProtocolOptions::default(),
                )),
                None,
            )
        }),
        Http2
    );
    assert_eq!(
        with(&|c| {
            c.typed_extension_protocol_options = http_options(
                explicit(ProtocolConfig::HttpProtocolOptions(
                    Http1ProtocolOptions::default(),
                )),
                None,
            )
        }),
        Http1
    );
    assert_eq!(
        with(&|c| c.typed_extension_protocol_options = http_options(use_downstream(), None)),
        Downstream
    );
    assert_eq!(
        with(&|c| {
            c.typed_extension_protocol_options = http_options(
                Some(UpstreamProtocolOptions::AutoConfig(
                    AutoHttpConfig::default(),
                )),
                None,
            )
        }),
        Downstream
    );
    assert_eq!(
        with(&|c| c.http2_protocol_options = Some(Http2ProtocolOptions::default())),
        Http2,
        "legacy field"
    );
    assert_eq!(
        with(&|c| {
            c.http2_protocol_options = Some(Http2ProtocolOptions::default());
            c.protocol_selection = ClusterProtocolSelection::UseDownstreamProtocol as i32;
        }),
        Downstream
    );
    assert_eq!(
        with(&|c| {
            c.http2_protocol_options = Some(Http2ProtocolOptions::default());
            c.typed_extension_protocol_options = http_options(use_downstream(), None);
        }),
        Downstream,
        "the typed options win"
    );
    assert_eq!(
        with(&|c| {
            c.typed_extension_protocol_options.insert(
                TCP_PROTOCOL_OPTIONS.into(),
                Any {
                    type_url: format!("type.googleapis.com/{TCP_PROTOCOL_OPTIONS}"),
                    value: Vec::new(),
                },
            );
        }),
        Http1,
        "TCP options are ignored"
    );
}

#[test]
#[allow(deprecated)]
fn http_idle_timeouts() {
    let with = |f: &dyn Fn(&mut XdsCluster)| {
        let mut c = reviews();
        f(&mut c);
        cluster(&c).unwrap().http_idle_timeout
    };
    assert_eq!(with(&|_| {}), DEFAULT_HTTP_IDLE_TIMEOUT);
    assert_eq!(
        with(&|c| c.typed_extension_protocol_options = http_options(use_downstream(), secs(30))),
        Duration::from_secs(30)
    );
    let legacy = |c: &mut XdsCluster| {
        c.common_http_protocol_options = Some(CommonOptions {
            idle_timeout: secs(20),
            ..CommonOptions::default()
        })
    };
    assert_eq!(with(&legacy), Duration::from_secs(20));
    assert_eq!(
        with(&|c| {
            legacy(c);
            c.typed_extension_protocol_options = http_options(use_downstream(), secs(7));
        }),
        Duration::from_secs(7)
    );
    assert_eq!(
        with(&|c| c.typed_extension_protocol_options = http_options(use_downstream(), secs(0))),
        Duration::MAX,
        "0s disables the idle timeout"
    );
}

#[test]
fn retry_budgets() {
    let with = |budget: Option<XdsRetryBudget>, priority: RoutingPriority| {
        let mut c = reviews();
        let mut breakers = istiod_breakers();
        breakers.thresholds[0].retry_budget = budget;
        breakers.thresholds[0].priority = priority as i32;
        c.circuit_breakers = Some(breakers);
        cluster(&c).unwrap().retry_budget
    };
    let set = XdsRetryBudget {
        budget_percent: Some(Percent { value: 25.0 }),
        min_retry_concurrency: Some(UInt32Value { value: 5 }),
        budget_interval: secs(1),
    };
    assert_eq!(
        with(Some(set), RoutingPriority::Default),
        RetryBudget {
            budget_percent: 25.0,
            min_retry_concurrency: 5
        }
    );
    assert_eq!(
        with(Some(XdsRetryBudget::default()), RoutingPriority::Default),
        RetryBudget::default()
    );
    assert_eq!(
        with(Some(set), RoutingPriority::High),
        RetryBudget::default(),
        "only the DEFAULT priority's budget counts"
    );
    assert_eq!(with(None, RoutingPriority::Default), RetryBudget::default());
}

#[test]
fn transports() {
    let with = |f: &dyn Fn(&mut XdsCluster)| {
        let mut c = reviews();
        c.transport_socket_matches.clear();
        f(&mut c);
        cluster(&c).unwrap().transport
    };
    assert_eq!(with(&|_| {}), UpstreamTransport::Plaintext);
    assert_eq!(
        with(&|c| c.transport_socket = Some(raw_socket())),
        UpstreamTransport::Plaintext
    );
    assert_eq!(
        with(&|c| c.transport_socket = Some(tls_socket(&istio_tls()))),
        UpstreamTransport::Tls(istio_upstream_tls())
    );
    // A DestinationRule's SIMPLE TLS: typed SANs, a validation secret, the legacy name.
    let simple = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            validation_context_type: Some(ValidationContextType::CombinedValidationContext(
                CombinedCertificateValidationContext {
                    default_validation_context: Some(CertificateValidationContext {
                        match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
                            san_type: SanType::Dns as i32,
                            matcher: Some(exact_matcher("api.example.com")),
                            oid: String::new(),
                        }],
                        ..CertificateValidationContext::default()
                    }),
                    validation_context_sds_secret_config: Some(sds("file-root:system")),
                    ..CombinedCertificateValidationContext::default()
                },
            )),
            ..CommonTlsContext::default()
        }),
        sni: "api.example.com".into(),
        ..UpstreamTlsContext::default()
    };
    assert_eq!(
        with(&|c| {
            let mut socket = tls_socket(&simple);
            socket.name = "tls".into();
            c.transport_socket = Some(socket);
        }),
        UpstreamTransport::Tls(UpstreamTls {
            sni: Some("api.example.com".into()),
            subject_alt_names: vec!["api.example.com".into()],
            validation_secret: Some("file-root:system".into()),
            ..UpstreamTls::default()
        })
    );
    assert_eq!(
        with(&|c| {
            c.transport_socket = Some(TransportSocket {
                name: TLS_SOCKET.into(),
                config_type: None,
            })
        }),
        UpstreamTransport::Tls(UpstreamTls::default())
    );
    // Match-all first: the tlsMode entry is never used.
    assert_eq!(
        with(&|c| c.transport_socket_matches = auto_mtls().into_iter().rev().collect()),
        UpstreamTransport::Plaintext
    );
    // Without the match-all entry the cluster's transport_socket is the fallback.
    assert_eq!(
        with(&|c| c.transport_socket_matches.push(auto_mtls().remove(0))),
        UpstreamTransport::IstioAuto(istio_upstream_tls())
    );
    assert_eq!(
        with(&|c| {
            c.transport_socket_matches.push(auto_mtls().remove(0));
            c.transport_socket = Some(tls_socket(&istio_tls()));
        }),
        UpstreamTransport::Tls(istio_upstream_tls()),
        "TLS either way"
    );
}

#[test]
fn typed_load_balancing_policy_takes_the_first_supported() {
    let policy = |type_url: &str| TypedPolicy {
        typed_extension_config: Some(TypedExtensionConfig {
            name: "p".into(),
            typed_config: Some(Any {
                type_url: format!(
                    "type.googleapis.com/envoy.extensions.load_balancing_policies.{type_url}"
                ),
                value: Vec::new(),
            }),
        }),
    };
    let mut c = reviews();
    c.lb_policy = XdsLb::LoadBalancingPolicyConfig as i32;
    c.load_balancing_policy = Some(LoadBalancingPolicy {
        policies: vec![
            policy("client_side_weighted_round_robin.v3.ClientSideWeightedRoundRobin"),
            policy("round_robin.v3.RoundRobin"),
            policy("random.v3.Random"),
        ],
    });
    assert_eq!(cluster(&c).unwrap().lb_policy, LbPolicy::RoundRobin);
    c.load_balancing_policy = Some(LoadBalancingPolicy {
        policies: vec![policy("ring_hash.v3.RingHash"), policy("random.v3.Random")],
    });
    assert_eq!(
        cluster(&c).unwrap_err().field,
        "load_balancing_policy.policies[0]"
    );
}
