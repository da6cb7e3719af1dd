//! The exact refusal of what Skiff cannot honour in a route table.

use super::*;

type Mutate = fn(&mut RouteConfiguration);

fn route0(rc: &mut RouteConfiguration) -> &mut RouteProto {
    &mut rc.virtual_hosts[0].routes[0]
}

fn action0(rc: &mut RouteConfiguration) -> &mut RouteActionProto {
    match &mut route0(rc).action {
        Some(route::Action::Route(a)) => a,
        _ => unreachable!(),
    }
}

#[test]
fn refusals() {
    let cases: Vec<(Mutate, &str, &str)> = vec![
        (
            |rc| route0(rc).action = Some(route::Action::Redirect(RedirectAction::default())),
            "virtual_hosts[0].routes[0].redirect",
            "is set, but Skiff does not support redirect responses",
        ),
        (
            |rc| route0(rc).action = None,
            "virtual_hosts[0].routes[0].route",
            "is missing, as are direct_response and the other actions; write one",
        ),
        (
            |rc| action0(rc).request_mirror_policies = vec![RequestMirrorPolicy::default()],
            "virtual_hosts[0].routes[0].route.request_mirror_policies",
            "is set, but Skiff does not support request mirroring",
        ),
        (
            |rc| {
                action0(rc).cluster_specifier = Some(route_action::ClusterSpecifier::ClusterHeader(
                    "x-cluster".into(),
                ))
            },
            "virtual_hosts[0].routes[0].route.cluster_header",
            "is set, but Skiff does not support choosing the cluster by a header",
        ),
        (
            |rc| {
                action0(rc).cluster_specifier = Some(
                    route_action::ClusterSpecifier::ClusterSpecifierPlugin("p".into()),
                )
            },
            "virtual_hosts[0].routes[0].route.cluster_specifier_plugin",
            "is set, but Skiff does not support cluster specifier plugins",
        ),
        (
            |rc| {
                route0(rc).r#match = Some(RouteMatchProto {
                    path_specifier: Some(PathSpecifier::SafeRegex(regex("/a(?=b)"))),
                    ..Default::default()
                })
            },
            "virtual_hosts[0].routes[0].match.safe_regex.regex",
            "\"/a(?=b)\" is not a valid regular expression (look-around, including look-ahead \
             and look-behind, is not supported); the syntax is RE2's, without look-around or \
             back-references",
        ),
        (
            |rc| route0(rc).r#match.as_mut().unwrap().path_specifier = None,
            "virtual_hosts[0].routes[0].match.prefix",
            "is missing, as are path, safe_regex and path_separated_prefix; write one",
        ),
        (
            |rc| {
                route0(rc).r#match.as_mut().unwrap().headers = vec![header(
                    "x-v",
                    HeaderMatchSpecifier::RangeMatch(Default::default()),
                )]
            },
            "virtual_hosts[0].routes[0].match.headers[0].range_match",
            "is set, but Skiff does not support matching header values as ranges",
        ),
        (
            |rc| {
                route0(rc).r#match.as_mut().unwrap().headers =
                    vec![header(":scheme", HeaderMatchSpecifier::PresentMatch(true))]
            },
            "virtual_hosts[0].routes[0].match.headers[0].name",
            "\":scheme\" is not a pseudo-header Skiff matches; it matches :authority, :method \
             and :path",
        ),
        (
            |rc| {
                route0(rc).r#match.as_mut().unwrap().headers = vec![HeaderMatcherProto {
                    treat_missing_header_as_empty: true,
                    ..header(
                        "x-v",
                        HeaderMatchSpecifier::StringMatch(string(
                            MatchPattern::Prefix(String::new()),
                            false,
                        )),
                    )
                }]
            },
            "virtual_hosts[0].routes[0].match.headers[0].treat_missing_header_as_empty",
            "is set, but Skiff does not support treating a missing header as empty with a \
             matcher that accepts the empty value",
        ),
        (
            |rc| route0(rc).r#match.as_mut().unwrap().dynamic_metadata = vec![Default::default()],
            "virtual_hosts[0].routes[0].match.dynamic_metadata",
            "is set, but Skiff does not support matching on dynamic metadata (such as JWT claims)",
        ),
        (
            |rc| {
                let mut w = WeightedCluster {
                    clusters: vec![
                        ClusterWeight {
                            name: "a".into(),
                            weight: Some(UInt32Value { value: 60 }),
                            ..Default::default()
                        },
                        ClusterWeight {
                            name: "b".into(),
                            weight: Some(UInt32Value { value: 30 }),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                };
                #[allow(deprecated)]
                {
                    w.total_weight = Some(UInt32Value { value: 100 });
                }
                action0(rc).cluster_specifier =
                    Some(route_action::ClusterSpecifier::WeightedClusters(w));
            },
            "virtual_hosts[0].routes[0].route.weighted_clusters.total_weight",
            "is 100, but the weights add up to 90; Envoy requires them to match",
        ),
        (
            |rc| {
                let w = WeightedCluster {
                    clusters: vec![ClusterWeight {
                        name: "a".into(),
                        weight: Some(UInt32Value { value: 1 }),
                        request_headers_to_add: vec![hvo(
                            "x",
                            "1",
                            HeaderAppendAction::AppendIfExistsOrAdd,
                        )],
                        ..Default::default()
                    }],
                    ..Default::default()
                };
                action0(rc).cluster_specifier =
                    Some(route_action::ClusterSpecifier::WeightedClusters(w));
            },
            "virtual_hosts[0].routes[0].route.weighted_clusters.clusters[0].request_headers_to_add",
            "is set, but Skiff does not support header mutations per weighted cluster; set them \
             on the route",
        ),
        (
            |rc| {
                route0(rc).typed_per_filter_config = [(
                    "envoy.filters.http.lua".to_owned(),
                    any("type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute"),
                )]
                .into()
            },
            "virtual_hosts[0].routes[0].typed_per_filter_config[\"envoy.filters.http.lua\"]",
            "is a envoy.extensions.filters.http.lua.v3.LuaPerRoute config, which Skiff does not \
             implement; it accepts only the per-route configs of the filters it ignores \
             (IGNORED_TYPES)",
        ),
        (
            |rc| {
                action0(rc).retry_policy.as_mut().unwrap().retry_on = "5xx,retriable-headers".into()
            },
            "virtual_hosts[0].routes[0].route.retry_policy.retry_on",
            "\"retriable-headers\" is not a retry condition Skiff supports; it supports 5xx, \
             gateway-error, reset, connect-failure, refused-stream, retriable-4xx, \
             retriable-status-codes, cancelled, deadline-exceeded, internal, \
             resource-exhausted, unavailable, reset-before-request and \
             http3-post-connect-failure",
        ),
        (
            |rc| {
                action0(rc)
                    .retry_policy
                    .as_mut()
                    .unwrap()
                    .retriable_status_codes = vec![503, 700]
            },
            "virtual_hosts[0].routes[0].route.retry_policy.retriable_status_codes[1]",
            "700 is not an HTTP status; write 100 to 599",
        ),
        (
            |rc| {
                action0(rc)
                    .retry_policy
                    .as_mut()
                    .unwrap()
                    .retry_host_predicate[0]
                    .name = "envoy.retry_host_predicates.omit_canary_hosts".into()
            },
            "virtual_hosts[0].routes[0].route.retry_policy.retry_host_predicate[0]",
            "\"envoy.retry_host_predicates.omit_canary_hosts\" is not supported; the one \
             predicate Skiff has is envoy.retry_host_predicates.previous_hosts",
        ),
        (
            |rc| {
                route0(rc).request_headers_to_add = vec![hvo(
                    "x-peer",
                    "%DOWNSTREAM_REMOTE_ADDRESS%",
                    HeaderAppendAction::AppendIfExistsOrAdd,
                )]
            },
            "virtual_hosts[0].routes[0].request_headers_to_add[0].header.value",
            "\"%DOWNSTREAM_REMOTE_ADDRESS%\" uses Envoy's %COMMAND% substitutions, which Skiff \
             does not support; write %% for a literal %",
        ),
        (
            |rc| rc.virtual_hosts[1].response_headers_to_remove = vec!["Host".into()],
            "virtual_hosts[1].response_headers_to_remove[0]",
            "\"Host\" cannot be set or removed here; use host_rewrite_literal for the host",
        ),
        (
            |rc| rc.virtual_hosts[1].domains = vec!["DETAILS".into()],
            "virtual_hosts[1].domains[0]",
            "\"details\" is also virtual_hosts[0].domains[1]; each domain belongs to one \
             virtual host, as Envoy requires",
        ),
        (
            |rc| rc.virtual_hosts[1].domains.clear(),
            "virtual_hosts[1].domains",
            "is empty, so no request would match; list host names, or \"*\"",
        ),
        (
            |rc| {
                route0(rc).action = Some(route::Action::DirectResponse(DirectResponseAction {
                    status: 200,
                    body: Some(DataSource {
                        specifier: Some(data_source::Specifier::InlineString("x".repeat(4097))),
                        ..Default::default()
                    }),
                    body_format: None,
                }))
            },
            "virtual_hosts[0].routes[0].direct_response.body",
            "is 4097 bytes, more than max_direct_response_body_size_bytes (4096)",
        ),
        (
            |rc| {
                route0(rc).r#match = Some(RouteMatchProto {
                    path_specifier: Some(PathSpecifier::SafeRegex(regex("/v1/.*"))),
                    ..Default::default()
                });
                action0(rc).prefix_rewrite = "/v2/".into();
            },
            "virtual_hosts[0].routes[0].route.prefix_rewrite",
            "cannot follow a safe_regex match, which has no prefix to replace; use regex_rewrite",
        ),
        (
            |rc| {
                action0(rc).host_rewrite_specifier = Some(
                    route_action::HostRewriteSpecifier::AutoHostRewrite(BoolValue { value: true }),
                )
            },
            "virtual_hosts[0].routes[0].route.auto_host_rewrite",
            "is set, but Skiff does not support rewriting the host to the endpoint's",
        ),
        (
            |rc| rc.request_mirror_policies = vec![RequestMirrorPolicy::default()],
            "request_mirror_policies",
            "is set, but Skiff does not support request mirroring",
        ),
    ];
    for (k, (mutate, field, reason)) in cases.into_iter().enumerate() {
        let mut rc = istiod_outbound_9080();
        mutate(&mut rc);
        let err = route_configuration(&rc).expect_err(&format!("case {k} ({field}) is refused"));
        assert_eq!(err, Invalid::new(field, reason), "case {k}");
    }
}

#[test]
fn optional_or_disabled_per_filter_configs_are_accepted() {
    let mut rc = istiod_outbound_9080();
    let wrap = |is_optional, disabled| Any {
        type_url: "type.googleapis.com/envoy.config.route.v3.FilterConfig".into(),
        value: prost::Message::encode_to_vec(&FilterConfig {
            config: Some(any(
                "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute",
            )),
            is_optional,
            disabled,
        }),
    };
    route0(&mut rc).typed_per_filter_config = [
        ("a".to_owned(), wrap(true, false)),
        ("b".to_owned(), wrap(false, true)),
    ]
    .into();
    assert!(route_configuration(&rc).is_ok());
    route0(&mut rc).typed_per_filter_config = [("c".to_owned(), wrap(false, false))].into();
    assert_eq!(
        route_configuration(&rc).unwrap_err().field,
        "virtual_hosts[0].routes[0].typed_per_filter_config[\"c\"]"
    );
}
