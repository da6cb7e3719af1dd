//! The HTTP route keys of the static config: every match and action, and their refusals.

use std::time::Duration;

use super::{StaticConfigError, parse};
use crate::route::{PathMatch, RetryOn, RouteAction, ValueMatch};
use crate::snapshot::{ClusterChoice, Handler, HttpManager, RouteSource, RouteTable, Snapshot};

const FULL: &str = r#"
listeners:
  - name: web
    address: 0.0.0.0:9080
    bindToPort: true
    http:
      requestHeadersToAdd: [{name: x-table, value: "1"}]
      virtualHosts:
        - domains: [reviews, "reviews:9080"]
          retryPolicy: {retryOn: "5xx,connect-failure", numRetries: 3}
          responseHeadersToRemove: [server]
          routes:
            - name: dev
              match:
                prefix: /
                headers:
                  - {name: cookie, regex: ".*group=dev.*"}
                  - {name: x-canary, present: true, invert: true}
                queryParameters: [{name: debug, exact: "1"}]
              route:
                cluster: v2
                timeout: 0s
                retryPolicy:
                  retryOn: connect-failure,retriable-status-codes
                  numRetries: 2
                  perTryTimeout: 2s
                  retriableStatusCodes: [503]
                  retryHostPredicate: [previous_hosts]
                  backoff: {baseInterval: 50ms}
              requestHeadersToAdd: [{name: X-Route, value: dev, append: false}]
            - match: {path: /health, caseSensitive: false}
              directResponse: {status: 200, body: ok}
            - match: {pathSeparatedPrefix: /api}
              route:
                weightedClusters: [{name: v1, weight: 99}, {name: v2, weight: 1}]
                prefixRewrite: /v1/api
                hostRewrite: reviews.internal
                timeout: 3s
            - match: {regex: "/service/[^/]+/.*"}
              route: {cluster: v1, regexRewrite: {pattern: "^/service/([^/]+)", substitution: "/\\1"}}
            - {prefix: /, cluster: v1}
clusters:
  - {name: v1, endpoints: [10.0.0.1:9080]}
  - {name: v2, endpoints: [10.0.0.2:9080]}
"#;

fn only_table(s: &Snapshot) -> &RouteTable {
    let Handler::Http(h) = &s.listeners[0]
        .default_chain
        .as_ref()
        .expect("default chain")
        .handler
    else {
        panic!("not http")
    };
    let RouteSource::Inline(t) = &h.route_config else {
        panic!("not inline")
    };
    t
}

#[test]
fn every_match_and_action_is_read() {
    let s = parse(FULL, "test").expect("valid");
    let t = only_table(&s);
    assert_eq!(t.headers.request_headers_to_add[0].name, "x-table");
    let vh = &t.virtual_hosts[0];
    assert_eq!(vh.headers.response_headers_to_remove, ["server"]);
    let host_policy = vh.retry_policy.as_ref().expect("host policy");
    assert_eq!(host_policy.num_retries, 3);
    assert!(host_policy.retry_on.contains(RetryOn::FIVE_XX));

    let dev = &vh.routes[0];
    assert_eq!(dev.name, "dev");
    assert_eq!(dev.matcher.headers.len(), 2);
    assert!(matches!(dev.matcher.headers[0].kind, ValueMatch::Regex(_)));
    assert!(dev.matcher.headers[1].invert);
    assert!(matches!(&dev.matcher.query_parameters[0].kind, ValueMatch::Exact(v) if v == "1"));
    assert_eq!(dev.timeout, Some(Duration::ZERO));
    assert_eq!(dev.effective_timeout(), None);
    let p = dev.retry_policy(vh).expect("route policy");
    assert_eq!(p.num_retries, 2);
    assert_eq!(p.per_try_timeout, Some(Duration::from_secs(2)));
    assert_eq!(p.retriable_status_codes, [503]);
    assert!(p.retry_host_predicate_previous_hosts);
    assert_eq!(p.backoff_base, Duration::from_millis(50));
    assert_eq!(p.backoff_max, Duration::from_millis(500));
    assert_eq!(dev.headers.request_headers_to_add[0].name, "x-route");
    assert!(!dev.headers.request_headers_to_add[0].append);

    let health = &vh.routes[1];
    assert!(matches!(&health.matcher.path, PathMatch::Exact(p) if p == "/health"));
    assert!(!health.matcher.case_sensitive);
    assert!(matches!(
        &health.action,
        RouteAction::DirectResponse { status: 200, body } if body == "ok"
    ));
    assert!(health.retry_policy(vh).is_some(), "inherits the host's");

    let api = &vh.routes[2];
    assert!(matches!(&api.matcher.path, PathMatch::PathSeparatedPrefix(p) if p == "/api"));
    assert!(matches!(api.cluster(), Some(ClusterChoice::Weighted(w)) if w.len() == 2));
    assert_eq!(
        crate::route::rewrite_path(api, "/api/x").as_deref(),
        Some("/v1/api/x")
    );
    let RouteAction::Cluster { host_rewrite, .. } = &api.action else {
        panic!("forwards")
    };
    assert_eq!(host_rewrite.as_deref(), Some("reviews.internal"));
    assert_eq!(api.timeout, Some(Duration::from_secs(3)));

    let svc = &vh.routes[3];
    assert_eq!(
        crate::route::rewrite_path(svc, "/service/foo/bar?x").as_deref(),
        Some("/foo/bar?x")
    );
    let dump = serde_json::to_string(&s).expect("serializes");
    assert!(dump.contains(r#"".*group=dev.*""#), "{dump}");
    assert!(
        dump.contains(r#""retry_on":"5xx,connect-failure""#),
        "{dump}"
    );
}

fn route_yaml(route: &str) -> String {
    format!(
        "listeners:\n  - name: web\n    address: 0.0.0.0:9080\n    bindToPort: true\n    http:\n      routes:\n        - {route}\nclusters:\n  - {{name: v1, endpoints: [10.0.0.1:9080]}}\n"
    )
}

#[test]
fn bad_routes_name_the_field_and_the_fix() {
    let at = "listeners[0].http.routes[0]";
    let cases: &[(&str, &str, &str)] = &[
        (
            "{match: {regex: \"/a(\"}, route: {cluster: v1}}",
            "match.regex",
            "\"/a(\" is not a valid regular expression",
        ),
        (
            "{match: {headers: [{name: c, regex: \"[\"}]}, route: {cluster: v1}}",
            "match.headers[0].regex",
            "\"[\" is not a valid regular expression",
        ),
        (
            "{route: {cluster: v1, regexRewrite: {pattern: \"(\", substitution: x}}}",
            "route.regexRewrite.pattern",
            "\"(\" is not a valid regular expression",
        ),
        (
            "{match: {prefix: /a, path: /b}, route: {cluster: v1}}",
            "match",
            "has more than one of prefix, path",
        ),
        (
            "{match: {pathSeparatedPrefix: /api/}, route: {cluster: v1}}",
            "match.pathSeparatedPrefix",
            "\"/api/\" must not end in /",
        ),
        (
            "{match: {headers: [{name: c}]}, route: {cluster: v1}}",
            "match.headers[0]",
            "says nothing to match",
        ),
        (
            "{match: {headers: [{name: c, exact: a, prefix: b}]}, route: {cluster: v1}}",
            "match.headers[0]",
            "has more than one of exact",
        ),
        (
            "{match: {headers: [{name: \"bad name\", exact: a}]}, route: {cluster: v1}}",
            "match.headers[0].name",
            "\"bad name\" is not a valid HTTP header name",
        ),
        (
            "{match: {queryParameters: [{name: q, present: false}]}, route: {cluster: v1}}",
            "match.queryParameters[0].present",
            "false is not supported",
        ),
        (
            "{match: {queryParameters: [{name: q, exact: a, invert: true}]}, route: {cluster: v1}}",
            "match.queryParameters[0].invert",
            "is for headers only",
        ),
        (
            "{match: {regex: /a}, route: {cluster: v1, prefixRewrite: /b}}",
            "route.prefixRewrite",
            "cannot follow a regex match",
        ),
        (
            "{route: {cluster: v1, prefixRewrite: /b, regexRewrite: {pattern: a, substitution: b}}}",
            "route",
            "has both prefixRewrite and regexRewrite",
        ),
        (
            "{route: {cluster: v1, retryPolicy: {retryOn: \"5xx,sometimes\"}}}",
            "route.retryPolicy.retryOn",
            "\"sometimes\" is not a retry condition",
        ),
        (
            "{route: {cluster: v1, retryPolicy: {retryOn: \"\"}}}",
            "route.retryPolicy.retryOn",
            "is empty",
        ),
        (
            "{route: {cluster: v1, retryPolicy: {retryOn: retriable-status-codes}}}",
            "route.retryPolicy.retriableStatusCodes",
            "is missing",
        ),
        (
            "{route: {cluster: v1, retryPolicy: {retryOn: 5xx, retriableStatusCodes: [503]}}}",
            "route.retryPolicy.retriableStatusCodes",
            "is ignored unless",
        ),
        (
            "{route: {cluster: v1, retryPolicy: {retryOn: retriable-status-codes, retriableStatusCodes: [99]}}}",
            "route.retryPolicy.retriableStatusCodes[0]",
            "99 is not an HTTP status",
        ),
        (
            "{route: {cluster: v1, retryPolicy: {retryOn: 5xx, retryHostPredicate: [canary]}}}",
            "route.retryPolicy.retryHostPredicate[0]",
            "\"canary\" is not supported",
        ),
        (
            "{route: {cluster: v1, retryPolicy: {retryOn: 5xx, backoff: {baseInterval: 1s, maxInterval: 10ms}}}}",
            "route.retryPolicy.backoff.maxInterval",
            "is shorter than baseInterval",
        ),
        (
            "{directResponse: {status: 99}}",
            "directResponse.status",
            "99 is not a status",
        ),
        (
            "{cluster: v1, directResponse: {status: 404}}",
            "",
            "has more than one action",
        ),
        (
            "{prefix: /a, match: {prefix: /a}, route: {cluster: v1}}",
            "prefix",
            "is written next to match",
        ),
        (
            "{cluster: v1, requestHeadersToAdd: [{name: host, value: x}]}",
            "requestHeadersToAdd[0].name",
            "\"host\" cannot be set or removed here",
        ),
        (
            "{cluster: v1, responseHeadersToRemove: [\":status\"]}",
            "responseHeadersToRemove[0]",
            "\":status\" cannot be set or removed here",
        ),
    ];
    for (route, field, reason) in cases {
        let yaml = route_yaml(route);
        let want_field = if field.is_empty() {
            at.to_owned()
        } else {
            format!("{at}.{field}")
        };
        match parse(&yaml, "test") {
            Err(StaticConfigError::Invalid {
                field: f,
                reason: r,
                ..
            }) => {
                assert_eq!(f, want_field, "{route}: {r}");
                assert!(
                    r.starts_with(reason),
                    "{route}: {r:?} should start with {reason:?}"
                );
            }
            other => panic!("{route}: expected Invalid, got {other:?}"),
        }
    }
}

#[test]
fn shadowing_respects_conditions() {
    // A header-conditioned earlier route hides nothing; a plain prefix hides an exact path.
    let ok = route_yaml(
        "{match: {prefix: /, headers: [{name: a, present: true}]}, route: {cluster: v1}}\n        - {prefix: /x, cluster: v1}",
    );
    assert!(parse(&ok, "test").is_ok());
    let hidden = route_yaml(
        "{prefix: /a, cluster: v1}\n        - {match: {path: /a/b}, route: {cluster: v1}}",
    );
    match parse(&hidden, "test") {
        Err(StaticConfigError::Invalid { field, .. }) => {
            assert_eq!(field, "listeners[0].http.routes[1].match.path");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    let zero = route_yaml("{route: {cluster: v1, timeout: 0}}");
    assert!(parse(&zero, "test").is_ok(), "timeout 0 means none");
}

fn manager(s: &Snapshot) -> &HttpManager {
    let chain = s.listeners[0]
        .filter_chains
        .first()
        .or(s.listeners[0].default_chain.as_ref())
        .expect("a chain");
    let Handler::Http(h) = &chain.handler else {
        panic!("not http")
    };
    h
}

fn http_yaml(http: &str) -> String {
    format!(
        "listeners:\n  - name: web\n    address: 0.0.0.0:9080\n    bindToPort: true\n    http: {http}\nclusters:\n  - {{name: v1, endpoints: [10.0.0.1:9080]}}\n"
    )
}

#[test]
fn connection_manager_settings_and_defaults() {
    let five_minutes = Duration::from_secs(300);
    let cases = [
        ("{routes: [{cluster: v1}]}", false, five_minutes),
        (
            "{routes: [{cluster: v1}], useRemoteAddress: true}",
            true,
            five_minutes,
        ),
        (
            "{routes: [{cluster: v1}], useRemoteAddress: false, streamIdleTimeout: 30s}",
            false,
            Duration::from_secs(30),
        ),
        (
            "{virtualHosts: [{routes: [{cluster: v1}]}], streamIdleTimeout: 1h}",
            false,
            Duration::from_secs(3600),
        ),
        (
            "{routes: [{cluster: v1}], streamIdleTimeout: 0s}",
            false,
            Duration::ZERO,
        ),
        (
            "{routes: [{cluster: v1}], streamIdleTimeout: 0}",
            false,
            Duration::ZERO,
        ),
    ];
    for (http, remote, idle) in cases {
        let s = parse(&http_yaml(http), "test").expect("valid");
        let h = manager(&s);
        assert_eq!(h.use_remote_address, remote, "{http}");
        assert_eq!(h.stream_idle_timeout, idle, "{http}");
    }
    // The same keys on a chain's http.
    let chain = "listeners:\n  - name: web\n    address: 0.0.0.0:9080\n    bindToPort: true\n    chains:\n      - {match: {destinationPort: 9080}, http: {routes: [{cluster: v1}], useRemoteAddress: true, streamIdleTimeout: 10s}}\nclusters:\n  - {name: v1, endpoints: [10.0.0.1:9080]}\n";
    let s = parse(chain, "test").expect("valid");
    let h = manager(&s);
    assert!(h.use_remote_address);
    assert_eq!(h.stream_idle_timeout, Duration::from_secs(10));
}

#[test]
fn include_request_attempt_count_is_per_virtual_host() {
    let yaml = http_yaml(
        "{virtualHosts: [{domains: [a], includeRequestAttemptCount: true, routes: [{cluster: v1}]}, {domains: [b], includeRequestAttemptCount: false, routes: [{cluster: v1}]}, {routes: [{cluster: v1}]}]}",
    );
    let s = parse(&yaml, "test").expect("valid");
    let counts: Vec<bool> = only_table(&s)
        .virtual_hosts
        .iter()
        .map(|v| v.include_request_attempt_count)
        .collect();
    assert_eq!(counts, [true, false, false]);
    let s = parse(&http_yaml("{routes: [{cluster: v1}]}"), "test").expect("valid");
    assert!(!only_table(&s).virtual_hosts[0].include_request_attempt_count);
}

/// The whole message of each refusal, as the proxy logs it.
#[test]
fn connection_manager_and_virtual_host_refusals() {
    let cases = [
        (
            "{routes: [{cluster: v1}], streamIdleTimeout: 5}",
            "static config test at line 5 column 56: listeners[0].http.streamIdleTimeout: 5 has \
             no unit; write e.g. 5s or 5ms",
        ),
        (
            "{routes: [{cluster: v1}], streamIdleTimeout: 9000h}",
            "static config test at line 5 column 56: listeners[0].http.streamIdleTimeout: \
             \"9000h\" is longer than a year (8760h); write 0s for no timeout",
        ),
        (
            "{routes: [{cluster: v1}], streamIdleTimeout: -1s}",
            "static config test at line 5 column 56: listeners[0].http.streamIdleTimeout: \
             \"-1s\" is not a duration (unknown unit \"-\"); write a number and a unit (ms, s, \
             m, h), e.g. 100ms, 2s, 1h30m",
        ),
        (
            "{routes: [{cluster: v1}], useRemoteAddress: yes}",
            "static config test at line 5 column 55: listeners[0].http.useRemoteAddress: \
             invalid type: string \"yes\", expected a boolean",
        ),
        (
            "{virtualHosts: [{routes: [{cluster: v1}], includeRequestAttemptCount: 1}]}",
            "static config test at line 5 column 81: \
             listeners[0].http.virtualHosts[0].includeRequestAttemptCount: invalid type: \
             integer `1`, expected a boolean",
        ),
    ];
    for (http, expected) in cases {
        match parse(&http_yaml(http), "test") {
            Err(e) => assert_eq!(e.to_string(), expected, "{http}"),
            Ok(_) => panic!("{http}: should be refused"),
        }
    }
    // The routes short form has no virtual host to set it on.
    match parse(
        &http_yaml("{routes: [{cluster: v1}], includeRequestAttemptCount: true}"),
        "test",
    ) {
        Err(StaticConfigError::Yaml { message, .. }) => assert!(
            message.starts_with(
                "listeners[0].http: unknown field `includeRequestAttemptCount`, expected one of"
            ),
            "{message}"
        ),
        other => panic!("expected an unknown field, got {other:?}"),
    }
}
