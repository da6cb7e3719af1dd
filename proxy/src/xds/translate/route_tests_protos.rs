//! Builders of test route tables, shaped like istiod's output (spec section 1).

use super::*;

pub(super) fn secs(s: i64) -> Option<PbDuration> {
    Some(PbDuration {
        seconds: s,
        nanos: 0,
    })
}

pub(super) fn prefix(p: &str) -> Option<RouteMatchProto> {
    Some(RouteMatchProto {
        path_specifier: Some(PathSpecifier::Prefix(p.into())),
        ..Default::default()
    })
}

pub(super) fn to(cluster: &str) -> RouteActionProto {
    RouteActionProto {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.into())),
        ..Default::default()
    }
}

pub(super) fn forward(
    name: &str,
    m: Option<RouteMatchProto>,
    action: RouteActionProto,
) -> RouteProto {
    RouteProto {
        name: name.into(),
        r#match: m,
        action: Some(route::Action::Route(action)),
        ..Default::default()
    }
}

pub(super) fn vhost(name: &str, domains: &[&str], routes: Vec<RouteProto>) -> VirtualHostProto {
    VirtualHostProto {
        name: name.into(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        routes,
        include_request_attempt_count: true,
        ..Default::default()
    }
}

pub(super) fn table(name: &str, hosts: Vec<VirtualHostProto>) -> RouteConfiguration {
    RouteConfiguration {
        name: name.into(),
        virtual_hosts: hosts,
        validate_clusters: Some(BoolValue { value: false }),
        ..Default::default()
    }
}

/// `retry::DefaultPolicy()` of istiod's route/retry package.
pub(super) fn istiod_default_retry() -> RetryPolicyProto {
    RetryPolicyProto {
        retry_on: "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
            .into(),
        num_retries: Some(UInt32Value { value: 2 }),
        retriable_status_codes: vec![503],
        host_selection_retry_max_attempts: 5,
        retry_host_predicate: vec![RetryHostPredicate {
            name: "envoy.retry_host_predicates.previous_hosts".into(),
            config_type: None,
        }],
        ..Default::default()
    }
}

/// Istio's RDS table "9080": a service's virtual host with the default route, and the
/// ALLOW_ANY catch-all.
// `max_grpc_timeout` is deprecated, but istiod still sends it.
#[allow(deprecated)]
pub(super) fn istiod_outbound_9080() -> RouteConfiguration {
    let mut default_route = forward(
        "default",
        prefix("/"),
        RouteActionProto {
            timeout: secs(0),
            max_grpc_timeout: secs(0),
            retry_policy: Some(istiod_default_retry()),
            ..to("outbound|9080||details.default.svc.cluster.local")
        },
    );
    default_route.decorator = Some(Decorator {
        operation: "details.default.svc.cluster.local:9080/*".into(),
        propagate: None,
    });
    let details = vhost(
        "details.default.svc.cluster.local:9080",
        &[
            "details.default.svc.cluster.local",
            "details",
            "details.default.svc",
            "details.default",
            "10.96.12.7",
        ],
        vec![default_route],
    );
    let allow_any = vhost(
        "allow_any",
        &["*"],
        vec![forward(
            "allow_any",
            prefix("/"),
            RouteActionProto {
                timeout: secs(0),
                ..to("PassthroughCluster")
            },
        )],
    );
    RouteConfiguration {
        ignore_port_in_host_matching: true,
        ..table("9080", vec![details, allow_any])
    }
}

pub(super) fn header(name: &str, m: HeaderMatchSpecifier) -> HeaderMatcherProto {
    HeaderMatcherProto {
        name: name.into(),
        header_match_specifier: Some(m),
        ..Default::default()
    }
}

pub(super) fn string(m: MatchPattern, ignore_case: bool) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(m),
        ignore_case,
    }
}

pub(super) fn regex(r: &str) -> RegexMatcher {
    RegexMatcher {
        regex: r.into(),
        engine_type: None,
    }
}

pub(super) fn any(type_url: &str) -> Any {
    Any {
        type_url: type_url.into(),
        value: Vec::new(),
    }
}

pub(super) fn hvo(key: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            value: value.into(),
            raw_value: Vec::new(),
        }),
        append_action: action as i32,
        ..Default::default()
    }
}

/// A VirtualService for reviews: jason gets v2 with a rewrite and a timeout, the rest a
/// 75/25 split; a regex route with a regex rewrite; a direct response.
pub(super) fn virtual_service_table() -> RouteConfiguration {
    let mut jason = forward(
        "jason",
        Some(RouteMatchProto {
            path_specifier: Some(PathSpecifier::Prefix("/reviews/".into())),
            case_sensitive: Some(BoolValue { value: false }),
            headers: vec![header(
                "End-User",
                HeaderMatchSpecifier::StringMatch(string(
                    MatchPattern::Exact("jason".into()),
                    false,
                )),
            )],
            query_parameters: vec![QueryParameterMatcher {
                name: "debug".into(),
                query_parameter_match_specifier: Some(QueryParameterMatchSpecifier::PresentMatch(
                    true,
                )),
            }],
            ..Default::default()
        }),
        RouteActionProto {
            prefix_rewrite: "/v2/reviews/".into(),
            host_rewrite_specifier: Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(
                "reviews.internal".into(),
            )),
            timeout: secs(5),
            retry_policy: Some(RetryPolicyProto {
                retry_on: "5xx,reset".into(),
                num_retries: Some(UInt32Value { value: 3 }),
                per_try_timeout: secs(2),
                retry_back_off: Some(RetryBackOff {
                    base_interval: Some(PbDuration {
                        seconds: 0,
                        nanos: 50_000_000,
                    }),
                    max_interval: None,
                }),
                ..Default::default()
            }),
            hash_policy: vec![route_action::HashPolicy::default()],
            max_stream_duration: Some(route_action::MaxStreamDuration::default()),
            ..to("outbound|9080|v2|reviews.default.svc.cluster.local")
        },
    );
    jason.request_headers_to_add = vec![hvo(
        "x-canary",
        "100%%",
        HeaderAppendAction::OverwriteIfExistsOrAdd,
    )];
    jason.response_headers_to_remove = vec!["X-Debug".into()];
    jason.typed_per_filter_config = [
        (
            "envoy.filters.http.fault".to_owned(),
            any("type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"),
        ),
        (
            "envoy.filters.http.cors".to_owned(),
            any("type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"),
        ),
    ]
    .into();
    let weights = |w: &[(&str, u32)]| WeightedCluster {
        clusters: w
            .iter()
            .map(|(n, w)| ClusterWeight {
                name: n.to_string(),
                weight: Some(UInt32Value { value: *w }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let split = forward(
        "split",
        prefix("/reviews"),
        RouteActionProto {
            cluster_specifier: Some(route_action::ClusterSpecifier::WeightedClusters(weights(
                &[
                    ("outbound|9080|v1|reviews.default.svc.cluster.local", 75),
                    ("outbound|9080|v3|reviews.default.svc.cluster.local", 25),
                ],
            ))),
            ..Default::default()
        },
    );
    let rx = forward(
        "api",
        Some(RouteMatchProto {
            path_specifier: Some(PathSpecifier::SafeRegex(regex("/api/v[0-9]+/.*"))),
            ..Default::default()
        }),
        RouteActionProto {
            regex_rewrite: Some(RegexMatchAndSubstitute {
                pattern: Some(regex("^/api/(v[0-9]+)/")),
                substitution: "/\\1/".into(),
            }),
            ..to("outbound|9080||api.default.svc.cluster.local")
        },
    );
    let direct = RouteProto {
        name: "gone".into(),
        r#match: Some(RouteMatchProto {
            path_specifier: Some(PathSpecifier::PathSeparatedPrefix("/old".into())),
            ..Default::default()
        }),
        action: Some(route::Action::DirectResponse(DirectResponseAction {
            status: 410,
            body: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineString("gone".into())),
                ..Default::default()
            }),
            body_format: None,
        })),
        ..Default::default()
    };
    table(
        "9080",
        vec![vhost(
            "reviews.default.svc.cluster.local:9080",
            &["Reviews.Default.svc.cluster.local", "reviews"],
            vec![jason, split, rx, direct],
        )],
    )
}
