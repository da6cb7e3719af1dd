//! RouteConfiguration translation: route tables shaped as istiod sends them (the default
//! outbound route with its retry policy, the inbound default, a VirtualService's routes),
//! matcher and header details, and the exact refusal of what Skiff cannot honour.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    DataSource, HeaderValue, HeaderValueOption, data_source,
    header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::route::v3::{
    Decorator, DirectResponseAction, FilterConfig, HeaderMatcher as HeaderMatcherProto,
    QueryParameterMatcher, RedirectAction, RetryPolicy as RetryPolicyProto, Route as RouteProto,
    RouteAction as RouteActionProto, RouteConfiguration, RouteMatch as RouteMatchProto,
    VirtualHost as VirtualHostProto, WeightedCluster,
    header_matcher::HeaderMatchSpecifier,
    query_parameter_matcher::QueryParameterMatchSpecifier,
    retry_policy::{RetryBackOff, RetryHostPredicate},
    route, route_action,
    route_action::RequestMirrorPolicy,
    route_match::PathSpecifier,
    weighted_cluster::ClusterWeight,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatchAndSubstitute, RegexMatcher, StringMatcher, string_matcher::MatchPattern,
};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration as PbDuration, UInt32Value};

use super::*;
use crate::route::{
    DEFAULT_RETRY_BACKOFF_BASE, HeaderToAdd, RetryOn, RetryPolicy, RouteAction, rewrite_path,
};
use crate::snapshot::ClusterChoice;

#[path = "route_tests_protos.rs"]
mod protos;
#[path = "route_tests_refusals.rs"]
mod refusals;

use protos::*;

// ---- what istiod sends ----

#[test]
fn istiod_outbound_route_table() {
    let t = route_configuration(&istiod_outbound_9080()).unwrap();
    assert_eq!(t.name, "9080");
    assert!(t.headers.is_empty());
    assert_eq!(t.virtual_hosts.len(), 2);
    let details = &t.virtual_hosts[0];
    assert_eq!(details.name, "details.default.svc.cluster.local:9080");
    assert_eq!(details.domains[0], "details.default.svc.cluster.local");
    assert_eq!(details.domains.len(), 5);
    assert!(details.include_request_attempt_count);
    assert!(details.retry_policy.is_none());
    let r = &details.routes[0];
    assert_eq!(r.name, "default");
    assert_eq!(r.prefix(), Some("/"));
    assert!(r.matcher.case_sensitive);
    assert_eq!(r.timeout, Some(Duration::ZERO), "istiod's 0s: no timeout");
    assert_eq!(r.effective_timeout(), None);
    assert!(matches!(
        r.cluster(),
        Some(ClusterChoice::Single(c)) if c == "outbound|9080||details.default.svc.cluster.local"
    ));
    assert_eq!(
        r.retry_policy,
        Some(RetryPolicy {
            retry_on: RetryOn::CONNECT_FAILURE
                | RetryOn::REFUSED_STREAM
                | RetryOn::UNAVAILABLE
                | RetryOn::CANCELLED
                | RetryOn::RETRIABLE_STATUS_CODES,
            num_retries: 2,
            per_try_timeout: None,
            retriable_status_codes: vec![503],
            retry_host_predicate_previous_hosts: true,
            backoff_base: DEFAULT_RETRY_BACKOFF_BASE,
            backoff_max: DEFAULT_RETRY_BACKOFF_BASE * 10,
        })
    );
    let allow_any = &t.virtual_hosts[1];
    assert_eq!(allow_any.domains, ["*"]);
    assert!(matches!(
        allow_any.routes[0].cluster(),
        Some(ClusterChoice::Single(c)) if c == "PassthroughCluster"
    ));
}

#[test]
fn istiod_inbound_default_route() {
    // BuildDefaultHTTPInboundRoute: no timeout, max_stream_duration 0s, and the inbound
    // retry policy "reset-before-request".
    let route = forward(
        "default",
        prefix("/"),
        RouteActionProto {
            timeout: secs(0),
            max_stream_duration: Some(route_action::MaxStreamDuration {
                max_stream_duration: secs(0),
                grpc_timeout_header_max: secs(0),
                grpc_timeout_header_offset: None,
            }),
            retry_policy: Some(RetryPolicyProto {
                retry_on: "reset-before-request".into(),
                num_retries: Some(UInt32Value { value: 2 }),
                ..Default::default()
            }),
            ..to("inbound|80||")
        },
    );
    let t = route_configuration(&table(
        "inbound|80||",
        vec![vhost("inbound|http|8000", &["*"], vec![route])],
    ))
    .unwrap();
    let r = &t.virtual_hosts[0].routes[0];
    let p = r.retry_policy.as_ref().unwrap();
    assert_eq!(
        p.retry_on,
        RetryOn::CONNECT_FAILURE | RetryOn::REFUSED_STREAM
    );
    assert_eq!(p.num_retries, 2);
    assert!(!p.retry_host_predicate_previous_hosts);
    assert_eq!(r.timeout, Some(Duration::ZERO));
}

#[test]
fn virtual_service_routes() {
    let t = route_configuration(&virtual_service_table()).unwrap();
    let host = &t.virtual_hosts[0];
    assert_eq!(
        host.domains,
        ["reviews.default.svc.cluster.local", "reviews"]
    );

    let jason = &host.routes[0];
    assert!(!jason.matcher.case_sensitive);
    assert_eq!(jason.matcher.headers.len(), 1);
    assert_eq!(jason.matcher.headers[0].name, "end-user");
    assert!(matches!(&jason.matcher.headers[0].kind, ValueMatch::Exact(v) if v == "jason"));
    assert!(!jason.matcher.headers[0].invert);
    assert_eq!(jason.matcher.query_parameters[0].name, "debug");
    assert!(matches!(
        jason.matcher.query_parameters[0].kind,
        ValueMatch::Present(true)
    ));
    assert_eq!(jason.timeout, Some(Duration::from_secs(5)));
    let RouteAction::Cluster {
        cluster,
        prefix_rewrite,
        regex_rewrite,
        host_rewrite,
    } = &jason.action
    else {
        panic!("not forwarded: {:?}", jason.action);
    };
    assert!(matches!(cluster, ClusterChoice::Single(c) if c.contains("|v2|")));
    assert_eq!(prefix_rewrite.as_deref(), Some("/v2/reviews/"));
    assert!(regex_rewrite.is_none());
    assert_eq!(host_rewrite.as_deref(), Some("reviews.internal"));
    let retry = jason.retry_policy.as_ref().unwrap();
    assert_eq!(retry.retry_on, RetryOn::FIVE_XX | RetryOn::RESET);
    assert_eq!(retry.num_retries, 3);
    assert_eq!(retry.per_try_timeout, Some(Duration::from_secs(2)));
    assert_eq!(retry.backoff_base, Duration::from_millis(50));
    assert_eq!(retry.backoff_max, Duration::from_millis(500));
    assert_eq!(
        jason.headers.request_headers_to_add,
        [HeaderToAdd {
            name: "x-canary".into(),
            value: "100%".into(),
            append: false,
        }]
    );
    assert_eq!(jason.headers.response_headers_to_remove, ["x-debug"]);

    let split = &host.routes[1];
    assert!(matches!(
        split.cluster(),
        Some(ClusterChoice::Weighted(w)) if w.iter().map(|(_, w)| *w).collect::<Vec<_>>() == [75, 25]
    ));
    assert_eq!(split.timeout, None, "absent: Envoy's default 15 s");

    let api = &host.routes[2];
    assert!(matches!(&api.matcher.path, PathMatch::Regex(p) if p.as_str() == "/api/v[0-9]+/.*"));
    assert_eq!(
        rewrite_path(api, "/api/v2/users?x=1").as_deref(),
        Some("/v2/users?x=1")
    );

    let gone = &host.routes[3];
    assert!(matches!(&gone.matcher.path, PathMatch::PathSeparatedPrefix(p) if p == "/old"));
    assert!(matches!(
        &gone.action,
        RouteAction::DirectResponse { status: 410, body } if body == "gone"
    ));
}

#[test]
fn header_matchers() {
    use HeaderMatchSpecifier as H;
    use MatchPattern as P;
    #[allow(deprecated)]
    let cases: Vec<(HeaderMatchSpecifier, &[&str], &[&str])> = vec![
        // (matcher, values it matches, values it does not; "" stands for absent)
        (H::ExactMatch("a".into()), &["a"], &["A", ""]),
        (H::PrefixMatch("ab".into()), &["abc"], &["xab", ""]),
        (H::SuffixMatch("bc".into()), &["abc"], &["bcx"]),
        (H::ContainsMatch("b".into()), &["abc"], &["ac"]),
        (H::SafeRegexMatch(regex("v[0-9]")), &["v1"], &["v1x", "xv1"]),
        (H::PresentMatch(true), &["x"], &[""]),
        (H::PresentMatch(false), &[""], &["x"]),
        (
            H::StringMatch(string(P::Exact("Jason".into()), true)),
            &["jason", "JASON"],
            &["jasonx", ""],
        ),
        (
            H::StringMatch(string(P::Prefix("A.b".into()), true)),
            &["a.bc"],
            &["axbc"],
        ),
        (
            H::StringMatch(string(P::Suffix("Z".into()), true)),
            &["xz"],
            &["zx"],
        ),
        (
            H::StringMatch(string(P::Contains("mid".into()), true)),
            &["aMIDb"],
            &["mi"],
        ),
        (
            H::StringMatch(string(P::SafeRegex(regex("(?i)ab")), false)),
            &["AB"],
            &["abc"],
        ),
    ];
    for (spec, yes, no) in cases {
        let m = header_matcher(&header("x-h", spec.clone())).unwrap();
        fn value<'a>(v: &&'a str) -> Option<&'a str> {
            (!v.is_empty()).then_some(*v)
        }
        for v in yes {
            assert!(m.kind.matches(value(v)), "{spec:?} should match {v:?}");
        }
        for v in no {
            assert!(!m.kind.matches(value(v)), "{spec:?} should not match {v:?}");
        }
    }
    // No specifier: present. Inverted, with a missing header treated as empty, which
    // changes nothing for a matcher that refuses "".
    let bare = header_matcher(&HeaderMatcherProto {
        name: ":Authority".into(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(bare.name, ":authority");
    assert!(matches!(bare.kind, ValueMatch::Present(true)));
    let without = header_matcher(&HeaderMatcherProto {
        invert_match: true,
        treat_missing_header_as_empty: true,
        ..header("x-h", H::StringMatch(string(P::Exact("a".into()), false)))
    })
    .unwrap();
    assert!(without.invert);
}

#[test]
fn headers_to_add() {
    use HeaderAppendAction as A;
    let t = |o: HeaderValueOption| {
        let mut rc = istiod_outbound_9080();
        rc.request_headers_to_add = vec![o];
        route_configuration(&rc).map(|t| t.headers.request_headers_to_add)
    };
    let h = |value: &str, append| {
        vec![HeaderToAdd {
            name: "x-a".into(),
            value: value.into(),
            append,
        }]
    };
    assert_eq!(
        t(hvo("X-A", "1", A::AppendIfExistsOrAdd)).unwrap(),
        h("1", true)
    );
    assert_eq!(
        t(hvo("x-a", "1", A::OverwriteIfExistsOrAdd)).unwrap(),
        h("1", false)
    );
    #[allow(deprecated)]
    let legacy = HeaderValueOption {
        append: Some(BoolValue { value: false }),
        ..hvo("x-a", "1", A::AppendIfExistsOrAdd)
    };
    assert_eq!(t(legacy).unwrap(), h("1", false));
    assert_eq!(t(hvo("x-a", "", A::AppendIfExistsOrAdd)).unwrap(), []);
    let keep = HeaderValueOption {
        keep_empty_value: true,
        ..hvo("x-a", "", A::AppendIfExistsOrAdd)
    };
    assert_eq!(t(keep).unwrap(), h("", true));
    assert_eq!(
        t(hvo("x-a", "1", A::OverwriteIfExists)).unwrap_err(),
        Invalid::new(
            "request_headers_to_add[0].append_action",
            "is set, but Skiff does not support OVERWRITE_IF_EXISTS (Skiff would also add an \
             absent header)"
        )
    );
}
