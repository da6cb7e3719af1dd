use super::*;
use hyper::HeaderMap;

fn facts<'a>(path: &'a str, headers: &'a HeaderMap) -> RequestFacts<'a> {
    RequestFacts {
        method: "GET",
        path,
        authority: "reviews:9080",
        headers,
    }
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(*k, hyper::header::HeaderValue::from_static(v));
    }
    map
}

fn route(name: &str, matcher: RouteMatch) -> Route {
    Route {
        name: name.into(),
        matcher,
        action: RouteAction::to(ClusterChoice::Single(name.into())),
        headers: HeaderMutations::default(),
        timeout: None,
        retry_policy: None,
    }
}

fn regex(p: &str) -> Pattern {
    Pattern::full(p).expect("valid pattern")
}

#[test]
fn path_matches() {
    let prefix = || PathMatch::Prefix("/api".into());
    let cases: Vec<(&str, PathMatch, bool, &str, bool)> = vec![
        ("prefix", prefix(), true, "/api/v1", true),
        (
            "prefix includes the query",
            prefix(),
            true,
            "/api?x=1",
            true,
        ),
        ("prefix is not substring", prefix(), true, "/v1/api", false),
        ("prefix case", prefix(), true, "/API/v1", false),
        ("prefix, insensitive", prefix(), false, "/API/v1", true),
        ("exact", PathMatch::Exact("/a".into()), true, "/a", true),
        (
            "exact ignores query",
            PathMatch::Exact("/a".into()),
            true,
            "/a?q",
            true,
        ),
        (
            "exact is whole",
            PathMatch::Exact("/a".into()),
            true,
            "/ab",
            false,
        ),
        (
            "exact, insensitive",
            PathMatch::Exact("/a".into()),
            false,
            "/A",
            true,
        ),
        (
            "regex full",
            PathMatch::Regex(regex("/v[0-9]+/.*")),
            true,
            "/v12/x",
            true,
        ),
        (
            "regex anchored",
            PathMatch::Regex(regex("/v[0-9]+")),
            true,
            "/v1/x",
            false,
        ),
        (
            "regex no query",
            PathMatch::Regex(regex("/v1")),
            true,
            "/v1?a=b",
            true,
        ),
        (
            "regex ignores flag",
            PathMatch::Regex(regex("/v1")),
            false,
            "/V1",
            false,
        ),
        (
            "regex (?i)",
            PathMatch::Regex(regex("(?i)/v1")),
            true,
            "/V1",
            true,
        ),
        (
            "sep equal",
            PathMatch::PathSeparatedPrefix("/api".into()),
            true,
            "/api",
            true,
        ),
        (
            "sep below",
            PathMatch::PathSeparatedPrefix("/api".into()),
            true,
            "/api/x",
            true,
        ),
        (
            "sep query",
            PathMatch::PathSeparatedPrefix("/api".into()),
            true,
            "/api?x",
            true,
        ),
        (
            "sep not",
            PathMatch::PathSeparatedPrefix("/api".into()),
            true,
            "/apix",
            false,
        ),
        (
            "sep case",
            PathMatch::PathSeparatedPrefix("/api".into()),
            false,
            "/API/x",
            true,
        ),
    ];
    let empty = HeaderMap::new();
    for (what, path, case_sensitive, request, want) in cases {
        let m = RouteMatch {
            case_sensitive,
            ..RouteMatch::path(path)
        };
        assert_eq!(
            m.matches(&facts(request, &empty)),
            want,
            "{what}: {request}"
        );
    }
}

#[test]
fn header_matches() {
    let request = headers(&[
        ("cookie", "a=1; group=dev"),
        ("x-multi", "one"),
        ("x-multi", "two"),
        ("end-user", "jason"),
    ]);
    let cases: Vec<(&str, &str, ValueMatch, bool, bool)> = vec![
        (
            "exact",
            "end-user",
            ValueMatch::Exact("jason".into()),
            false,
            true,
        ),
        (
            "exact other",
            "end-user",
            ValueMatch::Exact("json".into()),
            false,
            false,
        ),
        (
            "exact inverted",
            "end-user",
            ValueMatch::Exact("json".into()),
            true,
            true,
        ),
        (
            "exact absent",
            "nope",
            ValueMatch::Exact("x".into()),
            false,
            false,
        ),
        (
            "absent inverted",
            "nope",
            ValueMatch::Exact("x".into()),
            true,
            true,
        ),
        (
            "prefix",
            "end-user",
            ValueMatch::Prefix("ja".into()),
            false,
            true,
        ),
        (
            "suffix",
            "end-user",
            ValueMatch::Suffix("son".into()),
            false,
            true,
        ),
        (
            "contains",
            "cookie",
            ValueMatch::Contains("group=dev".into()),
            false,
            true,
        ),
        (
            "regex",
            "cookie",
            ValueMatch::Regex(regex(".*group=dev.*")),
            false,
            true,
        ),
        (
            "regex whole",
            "cookie",
            ValueMatch::Regex(regex("group=dev")),
            false,
            false,
        ),
        ("present", "cookie", ValueMatch::Present(true), false, true),
        (
            "present absent",
            "nope",
            ValueMatch::Present(true),
            false,
            false,
        ),
        (
            "absent wanted",
            "nope",
            ValueMatch::Present(false),
            false,
            true,
        ),
        (
            "present inverted",
            "cookie",
            ValueMatch::Present(true),
            true,
            false,
        ),
        (
            "joined values",
            "x-multi",
            ValueMatch::Exact("one,two".into()),
            false,
            true,
        ),
        (
            ":method",
            ":method",
            ValueMatch::Exact("GET".into()),
            false,
            true,
        ),
        (
            ":authority",
            ":authority",
            ValueMatch::Prefix("reviews".into()),
            false,
            true,
        ),
        (
            ":path",
            ":path",
            ValueMatch::Prefix("/p".into()),
            false,
            true,
        ),
    ];
    for (what, name, kind, invert, want) in cases {
        let m = RouteMatch {
            headers: vec![HeaderMatcher {
                name: name.into(),
                kind,
                invert,
            }],
            ..RouteMatch::any()
        };
        assert_eq!(m.matches(&facts("/p", &request)), want, "{what}");
    }
}

#[test]
fn query_parameter_matches() {
    let empty = HeaderMap::new();
    let path = "/search?q=rust+lang&flag&page=2&q=second";
    let cases: Vec<(&str, &str, ValueMatch, bool)> = vec![
        (
            "exact first value",
            "q",
            ValueMatch::Exact("rust+lang".into()),
            true,
        ),
        (
            "not the second value",
            "q",
            ValueMatch::Exact("second".into()),
            false,
        ),
        ("prefix", "page", ValueMatch::Prefix("2".into()), true),
        ("suffix", "q", ValueMatch::Suffix("lang".into()), true),
        ("contains", "q", ValueMatch::Contains("+".into()), true),
        ("regex", "page", ValueMatch::Regex(regex("[0-9]+")), true),
        (
            "present without value",
            "flag",
            ValueMatch::Present(true),
            true,
        ),
        (
            "valueless is empty",
            "flag",
            ValueMatch::Exact(String::new()),
            true,
        ),
        ("absent", "nope", ValueMatch::Present(true), false),
        (
            "absent exact",
            "nope",
            ValueMatch::Exact(String::new()),
            false,
        ),
    ];
    for (what, name, kind, want) in cases {
        let m = RouteMatch {
            query_parameters: vec![QueryMatcher {
                name: name.into(),
                kind,
            }],
            ..RouteMatch::any()
        };
        assert_eq!(m.matches(&facts(path, &empty)), want, "{what}");
    }
    let no_query = RouteMatch {
        query_parameters: vec![QueryMatcher {
            name: "q".into(),
            kind: ValueMatch::Present(true),
        }],
        ..RouteMatch::any()
    };
    assert!(!no_query.matches(&facts("/search", &empty)));
}

#[test]
fn routes_are_tried_in_order() {
    let vhost = VirtualHost {
        name: "reviews".into(),
        domains: vec!["reviews".into()],
        routes: vec![
            route(
                "v2",
                RouteMatch {
                    headers: vec![HeaderMatcher {
                        name: "cookie".into(),
                        kind: ValueMatch::Regex(regex(".*group=dev.*")),
                        invert: false,
                    }],
                    ..RouteMatch::any()
                },
            ),
            route(
                "exact",
                RouteMatch::path(PathMatch::Exact("/health".into())),
            ),
            route("api", RouteMatch::path(PathMatch::Prefix("/api".into()))),
            route(
                "api-shadowed",
                RouteMatch::path(PathMatch::Prefix("/api/v1".into())),
            ),
        ],
        ..VirtualHost::default()
    };
    let dev = headers(&[("cookie", "user=a; group=dev")]);
    let none = HeaderMap::new();
    let cases: Vec<(&str, &HeaderMap, Option<&str>)> = vec![
        ("/health", &dev, Some("v2")),
        ("/health", &none, Some("exact")),
        ("/api/v1/x", &none, Some("api")),
        ("/other", &none, None),
    ];
    for (path, h, want) in cases {
        let got = select_route(&vhost, &facts(path, h)).map(|r| r.name.as_str());
        assert_eq!(got, want, "{path}");
    }
}

fn table(hosts: &[(&str, &[&str])]) -> RouteTable {
    RouteTable {
        name: "t".into(),
        virtual_hosts: hosts
            .iter()
            .map(|(name, domains)| VirtualHost {
                name: (*name).into(),
                domains: domains.iter().map(|d| (*d).to_owned()).collect(),
                ..VirtualHost::default()
            })
            .collect(),
        headers: HeaderMutations::default(),
    }
}

#[test]
fn virtual_host_precedence() {
    let t = table(&[
        ("any", &["*"]),
        ("prefix-short", &["api.*"]),
        ("prefix-long", &["api.example.*"]),
        ("suffix-short", &["*.com"]),
        ("suffix-long", &["*.example.com"]),
        ("exact", &["api.example.com", "reviews:9080"]),
        ("plain", &["ratings", "[fd00::1]"]),
    ]);
    let cases = [
        ("api.example.com", "exact"),
        ("API.Example.COM", "exact"),
        ("www.example.com", "suffix-long"),
        ("www.other.com", "suffix-short"),
        ("api.example.org", "prefix-long"),
        ("api.other.org", "prefix-short"),
        ("example.com", "suffix-short"),
        (".example.com", "suffix-short"),
        ("elsewhere", "any"),
        ("reviews:9080", "exact"),
        ("reviews", "any"),
        ("ratings:9080", "plain"),
        ("ratings", "plain"),
        ("api.example.com:443", "exact"),
        ("www.example.com:80", "suffix-long"),
        ("[fd00::1]:80", "plain"),
        ("api.", "any"),
    ];
    for (authority, want) in cases {
        let got = select_virtual_host(&t, authority).map(|v| v.name.as_str());
        assert_eq!(got, Some(want), "{authority}");
    }
    let no_star = table(&[("only", &["reviews"])]);
    assert!(select_virtual_host(&no_star, "ratings").is_none());
    assert_eq!(
        strip_port("fd00::1"),
        None,
        "a bare IPv6 address has no port"
    );
}

fn rewriting(path: PathMatch, prefix: Option<&str>, regex: Option<(&str, &str)>) -> Route {
    Route {
        action: RouteAction::Cluster {
            cluster: ClusterChoice::Single("c".into()),
            prefix_rewrite: prefix.map(str::to_owned),
            regex_rewrite: regex
                .map(|(p, s)| RegexRewrite::new(Pattern::search(p).expect("valid"), s)),
            host_rewrite: None,
        },
        ..route("r", RouteMatch::path(path))
    }
}

#[test]
fn path_rewrites() {
    let p = |s: &str| PathMatch::Prefix(s.into());
    let cases: Vec<(Route, &str, Option<&str>)> = vec![
        (
            rewriting(p("/api/"), Some("/"), None),
            "/api/v1?x=1",
            Some("/v1?x=1"),
        ),
        (
            rewriting(p("/api"), Some("/v2"), None),
            "/api/x",
            Some("/v2/x"),
        ),
        (
            rewriting(PathMatch::Exact("/old".into()), Some("/new"), None),
            "/old?q",
            Some("/new?q"),
        ),
        (
            rewriting(
                PathMatch::PathSeparatedPrefix("/a".into()),
                Some("/b"),
                None,
            ),
            "/a/c",
            Some("/b/c"),
        ),
        (
            rewriting(
                p("/"),
                None,
                Some(("^/service/([^/]+)(/.*)$", "\\2/instance/\\1")),
            ),
            "/service/foo/v1/api?x",
            Some("/v1/api/instance/foo?x"),
        ),
        (
            rewriting(p("/"), None, Some(("one", "two"))),
            "/xxx/one/yyy/one/zzz",
            Some("/xxx/two/yyy/two/zzz"),
        ),
        (
            rewriting(p("/"), None, Some(("a", "$1"))),
            "/a",
            Some("/$1"),
        ),
        (rewriting(p("/"), None, None), "/a", None),
        (
            rewriting(PathMatch::Regex(regex("/.*")), Some("/x"), None),
            "/a",
            None,
        ),
    ];
    for (route, original, want) in cases {
        assert_eq!(
            rewrite_path(&route, original).as_deref(),
            want,
            "{original}"
        );
    }
    let direct = Route {
        action: RouteAction::DirectResponse {
            status: 404,
            body: String::new(),
        },
        ..route("d", RouteMatch::any())
    };
    assert_eq!(rewrite_path(&direct, "/a"), None);
    assert_eq!(re2_substitution("\\\\x\\1$"), "\\x${1}$$");
}

#[test]
fn weighted_pick_is_deterministic_for_given_numbers() {
    let split = ClusterChoice::Weighted(vec![("v1".into(), 99), ("v2".into(), 1)]);
    let cases = [
        (0, "v1"),
        (98, "v1"),
        (99, "v2"),
        (100, "v1"),
        (199, "v2"),
        (u64::MAX, "v1"),
    ];
    for (random, want) in cases {
        assert_eq!(pick_cluster(&split, random), Some(want), "{random}");
    }
    assert_eq!(
        pick_cluster(&ClusterChoice::Single("s".into()), 7),
        Some("s")
    );
    assert_eq!(pick_cluster(&ClusterChoice::Weighted(Vec::new()), 7), None);
}

#[test]
fn one_percent_canary_is_honoured() {
    // 100,000 picks at p = 1%: mean 1,000, standard deviation sqrt(n·p·(1-p)) ≈ 31.5.
    // ±190 is six deviations, so a correct pick fails this less than once in 10^8 runs
    // while a pick off by a fifth (800 or 1,200) fails it.
    let split = ClusterChoice::Weighted(vec![("v1".into(), 99), ("v2".into(), 1)]);
    let n = 100_000;
    let canary = (0..n)
        .filter(|_| pick_cluster(&split, crate::balance::random_u64()) == Some("v2"))
        .count();
    assert!((810..=1190).contains(&canary), "canary got {canary} of {n}");
}

#[test]
fn retry_on_parses_envoy_lists() {
    let on = RetryOn::parse("5xx, connect-failure,retriable-status-codes").expect("known");
    assert!(on.contains(RetryOn::FIVE_XX));
    assert!(on.contains(RetryOn::CONNECT_FAILURE));
    assert!(on.contains(RetryOn::RETRIABLE_STATUS_CODES));
    assert!(!on.contains(RetryOn::RESET));
    assert_eq!(on.to_string(), "5xx,connect-failure,retriable-status-codes");
    assert_eq!(RetryOn::parse("5xx,bogus"), Err("bogus".to_owned()));
    assert!(RetryOn::parse("").expect("empty").is_empty());
    let istio = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
    assert_eq!(
        RetryOn::parse(istio).expect("istio").to_string(),
        "connect-failure,refused-stream,retriable-status-codes,cancelled,unavailable",
        "shown in a fixed order"
    );
}

#[test]
fn timeouts_follow_envoy() {
    let mut r = route("r", RouteMatch::any());
    assert_eq!(r.effective_timeout(), Some(DEFAULT_ROUTE_TIMEOUT));
    r.timeout = Some(Duration::ZERO);
    assert_eq!(r.effective_timeout(), None);
    r.timeout = Some(Duration::from_secs(2));
    assert_eq!(r.effective_timeout(), Some(Duration::from_secs(2)));
}

#[test]
fn patterns_serialize_as_their_source() {
    let r = Route {
        matcher: RouteMatch::path(PathMatch::Regex(regex("/v[0-9]"))),
        ..route("r", RouteMatch::any())
    };
    let json = serde_json::to_value(&r).expect("serializes");
    assert_eq!(json["match"]["path"]["regex"], "/v[0-9]");
}
