//! Expected values come from the format's documentation ([`reference`]), from what istiod
//! sends a sidecar (spec/proxy.md section 1: built-in clusters, LEAST_REQUEST, 10 s connect
//! timeout, 1 h idle timeout, 127.0.0.6) and from the Snapshot defaults in snapshot.rs.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::*;
use crate::access_log::Format;
use crate::snapshot::{
    BLACKHOLE_CLUSTER, ChainMatch, Cidr, Cluster, ClusterChoice, Detection, Direction, Discovery,
    FilterChain, Handler, HttpManager, INBOUND_PASSTHROUGH_CLUSTER, LbPolicy, Listener,
    PASSTHROUGH_CLUSTER, RetryBudget, RouteSource, RouteTable, TcpProxy, Transport,
    UpstreamProtocol,
};

/// An outbound capture listener, so that hand-off listeners in a case are reachable.
macro_rules! capture {
    () => {
        "listeners:\n  - {name: out, address: 0.0.0.0:15001, useOriginalDst: true, defaultCluster: PassthroughCluster}\n"
    };
}

fn ok(text: &str) -> Parsed {
    match parse_full(text, "test") {
        Ok(parsed) => parsed,
        Err(e) => panic!("{text}\nshould parse, got: {e}"),
    }
}

fn fail(text: &str) -> StaticConfigError {
    match parse_full(text, "test") {
        Ok(parsed) => panic!("{text}\nshould be refused, got {:?}", parsed.snapshot),
        Err(e) => e,
    }
}

fn listener<'a>(s: &'a Snapshot, name: &str) -> &'a Listener {
    match s.listeners.iter().find(|l| l.name == name) {
        Some(l) => l,
        None => panic!("no listener {name:?}"),
    }
}

fn cluster<'a>(s: &'a Snapshot, name: &str) -> &'a Cluster {
    match s.cluster(name) {
        Some(c) => c,
        None => panic!("no cluster {name:?}"),
    }
}

fn tcp_of(chain: &FilterChain) -> &TcpProxy {
    match &chain.handler {
        Handler::Tcp(t) => t,
        Handler::Http(h) => panic!("chain {} is http: {h:?}", chain.name),
    }
}

fn http_of(chain: &FilterChain) -> &HttpManager {
    match &chain.handler {
        Handler::Http(h) => h,
        Handler::Tcp(t) => panic!("chain {} is tcp: {t:?}", chain.name),
    }
}

fn table(h: &HttpManager) -> &RouteTable {
    match &h.route_config {
        RouteSource::Inline(t) => t,
        RouteSource::Rds(name) => panic!("expected an inline table, got RDS {name}"),
    }
}

fn single(name: &str) -> ClusterChoice {
    ClusterChoice::Single(name.to_owned())
}

fn same_choice(a: &ClusterChoice, b: &ClusterChoice) -> bool {
    match (a, b) {
        (ClusterChoice::Single(a), ClusterChoice::Single(b)) => a == b,
        (ClusterChoice::Weighted(a), ClusterChoice::Weighted(b)) => a == b,
        _ => false,
    }
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("test address")
}

fn cidr(text: &str) -> Cidr {
    text.parse().expect("test CIDR")
}

#[test]
fn the_example_parses_into_a_sidecar() {
    let p = ok(example());
    let s = &p.snapshot;
    assert_eq!(s.version, "test");
    let names: Vec<&str> = s.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["virtualOutbound", "reviews", "virtualInbound"]);

    let out = listener(s, "virtualOutbound");
    assert!(out.bind_to_port && out.use_original_dst);
    assert_eq!(out.direction, Direction::Outbound);
    assert!(!out.detection.enabled, "no chain needs detection");
    assert!(out.filter_chains.is_empty());
    let default = out.default_chain.as_ref().expect("default chain");
    assert_eq!(default.name, "default");
    assert_eq!(default.matcher, ChainMatch::default());
    assert!(same_choice(
        &tcp_of(default).cluster,
        &single(PASSTHROUGH_CLUSTER)
    ));

    let reviews = listener(s, "reviews");
    assert!(!reviews.bind_to_port && !reviews.use_original_dst);
    assert_eq!(reviews.address, addr("10.96.0.7:9080"));
    let tcp = tcp_of(reviews.default_chain.as_ref().expect("default chain"));
    assert_eq!(tcp.idle_timeout, Duration::from_secs(3600));
    assert_eq!(
        tcp.stat_prefix,
        "outbound|9080||reviews.default.svc.cluster.local"
    );

    let inbound = listener(s, "virtualInbound");
    assert_eq!(inbound.direction, Direction::Inbound);
    assert!(inbound.bind_to_port && inbound.use_original_dst);
    assert_eq!(
        inbound.detection,
        Detection {
            enabled: true,
            timeout: Duration::from_millis(100)
        }
    );
    let ports: Vec<Option<u16>> = inbound
        .filter_chains
        .iter()
        .map(|c| c.matcher.destination_port)
        .collect();
    assert_eq!(ports, [Some(9080), Some(3306)]);
    assert_eq!(
        p.detection_skip_ports.get("virtualInbound"),
        Some(&vec![3306])
    );
    assert_eq!(p.detection_skip_ports.len(), 1);

    let c = cluster(s, "outbound|9080||reviews.default.svc.cluster.local");
    assert_eq!(c.lb_policy, LbPolicy::LeastRequest);
    assert_eq!(c.connect_timeout, Duration::from_secs(2));
    let endpoints: Vec<(SocketAddr, u32)> =
        c.endpoints.iter().map(|e| (e.address, e.weight)).collect();
    assert_eq!(
        endpoints,
        [(addr("10.77.0.2:9080"), 1), (addr("10.77.0.3:9080"), 2)]
    );
    assert_eq!(s.clusters.len(), 6, "three defined, three built in");
    assert!(s.routes.is_empty());
}

#[test]
fn the_reference_parses_with_every_field() {
    let p = ok(reference());
    let s = &p.snapshot;

    let dns = listener(s, "10.96.0.10_53");
    assert!(!dns.bind_to_port);
    let dns_tcp = tcp_of(dns.default_chain.as_ref().expect("default chain"));
    assert_eq!(dns_tcp.stat_prefix, "kube-dns");
    assert_eq!(dns_tcp.idle_timeout, Duration::from_secs(3600));

    let web = listener(s, "0.0.0.0_9080");
    assert_eq!(web.detection, Detection::default());
    assert_eq!(web.filter_chains.len(), 2);
    let http_chain = &web.filter_chains[0];
    assert_eq!(http_chain.name, "http");
    assert_eq!(
        http_chain.matcher,
        ChainMatch {
            transport_protocol: Some(Transport::RawBuffer),
            application_protocols: vec!["http/1.1".into(), "h2c".into()],
            ..ChainMatch::default()
        }
    );
    let hcm = http_of(http_chain);
    assert_eq!(hcm.stat_prefix, "outbound_9080");
    assert!(!hcm.use_remote_address);
    assert_eq!(hcm.stream_idle_timeout, Duration::from_secs(300));
    let routes = table(hcm);
    assert_eq!(routes.name, "0.0.0.0_9080/http");
    assert_eq!(routes.virtual_hosts.len(), 2);
    let reviews = &routes.virtual_hosts[0];
    assert_eq!(reviews.name, "reviews");
    assert_eq!(
        reviews.domains,
        [
            "reviews",
            "reviews:9080",
            "reviews.default.svc.cluster.local"
        ]
    );
    let route_view: Vec<(&str, &str)> = reviews
        .routes
        .iter()
        .map(|r| (r.name.as_str(), r.prefix().unwrap_or_default()))
        .collect();
    assert_eq!(route_view, [("dev", "/"), ("/v2/", "/v2/"), ("/", "/")]);
    assert_eq!(reviews.routes[0].matcher.headers.len(), 2);
    assert!(reviews.include_request_attempt_count);
    assert!(same_choice(
        reviews.routes[1].cluster().expect("forwards"),
        &ClusterChoice::Weighted(vec![
            (
                "outbound|9080|v2|reviews.default.svc.cluster.local".into(),
                90
            ),
            (
                "outbound|9080|v3|reviews.default.svc.cluster.local".into(),
                10
            ),
        ])
    ));
    let any = &routes.virtual_hosts[1];
    assert_eq!(
        (any.name.as_str(), any.domains.as_slice()),
        ("*", &["*".to_owned()][..])
    );
    assert!(same_choice(
        any.routes[0].cluster().expect("forwards"),
        &single(PASSTHROUGH_CLUSTER)
    ));
    assert!(!any.include_request_attempt_count);

    let tls_chain = &web.filter_chains[1];
    assert_eq!(tls_chain.name, "tls");
    assert_eq!(tls_chain.matcher.transport_protocol, Some(Transport::Tls));
    assert_eq!(
        tls_chain.matcher.server_names,
        ["reviews.default.svc.cluster.local"]
    );

    let inbound = listener(s, "virtualInbound");
    assert!(inbound.bind_to_port && !inbound.use_original_dst);
    assert_eq!(inbound.direction, Direction::Inbound);
    let first = &inbound.filter_chains[0];
    assert_eq!(first.name, "chains[0]");
    assert_eq!(
        first.matcher,
        ChainMatch {
            destination_port: Some(9080),
            prefix_ranges: vec![cidr("10.0.0.0/8"), cidr("fd00::/8")],
            source_prefix_ranges: vec![cidr("10.0.0.0/8"), cidr("fd00::/8")],
            ..ChainMatch::default()
        }
    );
    let shorthand = table(http_of(first));
    assert_eq!(shorthand.name, "virtualInbound/chains[0]");
    assert_eq!(shorthand.virtual_hosts.len(), 1);
    assert_eq!(shorthand.virtual_hosts[0].domains, ["*"]);
    assert_eq!(shorthand.virtual_hosts[0].routes[0].prefix(), Some("/"));
    assert_eq!(http_of(first).stat_prefix, "virtualInbound");
    assert_eq!(
        p.detection_skip_ports.get("virtualInbound"),
        Some(&vec![3306])
    );

    let dns_cluster = cluster(s, "outbound|53||kube-dns.kube-system.svc.cluster.local");
    assert_eq!(dns_cluster.discovery, Discovery::Static);
    assert_eq!(dns_cluster.lb_policy, LbPolicy::LeastRequest);
    assert_eq!(dns_cluster.connect_timeout, Duration::from_secs(10));
    assert_eq!(
        dns_cluster.upstream_bind,
        vec!["10.244.0.9".parse::<IpAddr>().expect("ip")]
    );
    assert_eq!(
        cluster(s, "inbound|3306||").connect_timeout,
        Duration::from_secs(2)
    );
    assert_eq!(dns_cluster.protocol, UpstreamProtocol::Downstream);
    let v1 = cluster(s, "outbound|9080|v1|reviews.default.svc.cluster.local");
    assert_eq!(v1.protocol, UpstreamProtocol::Http2);
    assert_eq!(v1.http_idle_timeout, Duration::from_secs(4));
    assert_eq!(v1.retry_budget, RetryBudget::default());
    assert_eq!(s.access_log, Some(Format::Text));
}

#[test]
fn built_in_clusters_exist_unless_redefined() {
    let s = ok(capture!()).snapshot;
    assert_eq!(s.clusters.len(), 3);
    let pass = cluster(&s, PASSTHROUGH_CLUSTER);
    assert_eq!(pass.discovery, Discovery::OriginalDst);
    assert!(pass.upstream_bind.is_empty());
    let inbound = cluster(&s, INBOUND_PASSTHROUGH_CLUSTER);
    assert_eq!(inbound.discovery, Discovery::OriginalDst);
    assert_eq!(
        inbound.upstream_bind,
        vec![
            IpAddr::from([127, 0, 0, 6]),
            "::6".parse::<IpAddr>().expect("ip")
        ]
    );
    assert_eq!(
        cluster(&s, BLACKHOLE_CLUSTER).discovery,
        Discovery::BlackHole
    );

    let redefined = ok(concat!(
        capture!(),
        "clusters:\n  - {name: PassthroughCluster, type: BLACK_HOLE}\n"
    ))
    .snapshot;
    assert_eq!(
        cluster(&redefined, PASSTHROUGH_CLUSTER).discovery,
        Discovery::BlackHole
    );
    assert_eq!(redefined.clusters.len(), 3);
}

#[test]
fn cluster_fields() {
    struct Case {
        yaml: &'static str,
        discovery: Discovery,
        lb: LbPolicy,
        timeout: Duration,
        bind: Option<&'static str>,
        endpoints: &'static [(&'static str, u32)],
    }
    let cases = [
        Case {
            yaml: "{name: c, endpoints: [10.0.0.1:80]}",
            discovery: Discovery::Static,
            lb: LbPolicy::LeastRequest,
            timeout: Duration::from_secs(10),
            bind: None,
            endpoints: &[("10.0.0.1:80", 1)],
        },
        Case {
            yaml: "{name: c, endpoints: [10.0.0.1:80, {address: 10.0.0.2:80, weight: 5}], lbPolicy: ROUND_ROBIN}",
            discovery: Discovery::Static,
            lb: LbPolicy::RoundRobin,
            timeout: Duration::from_secs(10),
            bind: None,
            endpoints: &[("10.0.0.1:80", 1), ("10.0.0.2:80", 5)],
        },
        Case {
            yaml: "{name: c, endpoints: [\"[fd00::1]:80\"], lbPolicy: RANDOM, connectTimeout: 250ms}",
            discovery: Discovery::Static,
            lb: LbPolicy::Random,
            timeout: Duration::from_millis(250),
            bind: None,
            endpoints: &[("[fd00::1]:80", 1)],
        },
        Case {
            yaml: "{name: c, endpoints: [{address: 10.0.0.1:80}], lbPolicy: LEAST_CONN}",
            discovery: Discovery::Static,
            lb: LbPolicy::LeastRequest,
            timeout: Duration::from_secs(10),
            bind: None,
            endpoints: &[("10.0.0.1:80", 1)],
        },
        Case {
            yaml: "{name: c, type: ORIGINAL_DST, upstreamBind: 127.0.0.6, connectTimeout: 1m}",
            discovery: Discovery::OriginalDst,
            lb: LbPolicy::LeastRequest,
            timeout: Duration::from_secs(60),
            bind: Some("127.0.0.6"),
            endpoints: &[],
        },
        Case {
            yaml: "{name: c, type: ORIGINAL_DST, upstreamBind: \"::6\"}",
            discovery: Discovery::OriginalDst,
            lb: LbPolicy::LeastRequest,
            timeout: Duration::from_secs(10),
            bind: Some("::6"),
            endpoints: &[],
        },
        Case {
            yaml: "{name: c, type: STATIC, endpoints: [127.0.0.1:80], upstreamBind: 127.0.0.6}",
            discovery: Discovery::Static,
            lb: LbPolicy::LeastRequest,
            timeout: Duration::from_secs(10),
            bind: Some("127.0.0.6"),
            endpoints: &[("127.0.0.1:80", 1)],
        },
        Case {
            yaml: "{name: c, type: BLACK_HOLE}",
            discovery: Discovery::BlackHole,
            lb: LbPolicy::LeastRequest,
            timeout: Duration::from_secs(10),
            bind: None,
            endpoints: &[],
        },
    ];
    for case in cases {
        let text = format!("{}clusters:\n  - {}\n", capture!(), case.yaml);
        let s = ok(&text).snapshot;
        let c = cluster(&s, "c");
        assert_eq!(c.discovery, case.discovery, "{}", case.yaml);
        assert_eq!(c.lb_policy, case.lb, "{}", case.yaml);
        assert_eq!(c.connect_timeout, case.timeout, "{}", case.yaml);
        assert_eq!(
            c.upstream_bind,
            case.bind
                .map(|b| b.parse::<IpAddr>().expect("ip"))
                .into_iter()
                .collect::<Vec<_>>(),
            "{}",
            case.yaml
        );
        let endpoints: Vec<(SocketAddr, u32)> =
            c.endpoints.iter().map(|e| (e.address, e.weight)).collect();
        let expected: Vec<(SocketAddr, u32)> =
            case.endpoints.iter().map(|(a, w)| (addr(a), *w)).collect();
        assert_eq!(endpoints, expected, "{}", case.yaml);
    }
}

#[test]
fn listener_fields_and_defaults() {
    struct Case {
        yaml: &'static str,
        bind: bool,
        original_dst: bool,
        direction: Direction,
        detection: Detection,
        chains: usize,
        default: bool,
    }
    let off = Detection {
        enabled: false,
        ..Detection::default()
    };
    let cases = [
        // bindToPort follows useOriginalDst unless written.
        Case {
            yaml: "{name: l, address: 0.0.0.0:8080, bindToPort: true, tcp: {cluster: c}}",
            bind: true,
            original_dst: false,
            direction: Direction::Outbound,
            detection: off,
            chains: 0,
            default: true,
        },
        Case {
            yaml: "{name: l, address: 10.96.0.1:443, tcp: {cluster: c}}",
            bind: false,
            original_dst: false,
            direction: Direction::Outbound,
            detection: off,
            chains: 0,
            default: true,
        },
        Case {
            yaml: "{name: l, address: \"[::]:15006\", useOriginalDst: true, direction: inbound, defaultCluster: BlackHoleCluster}",
            bind: true,
            original_dst: true,
            direction: Direction::Inbound,
            detection: off,
            chains: 0,
            default: true,
        },
        Case {
            yaml: "{name: l, address: 127.0.0.1:15007, useOriginalDst: true, direction: INBOUND, defaultCluster: c}",
            bind: true,
            original_dst: true,
            direction: Direction::Inbound,
            detection: off,
            chains: 0,
            default: true,
        },
        // Detection: on by default when a chain needs it; an explicit map turns it on.
        Case {
            yaml: "{name: l, address: 0.0.0.0:80, chains: [{match: {applicationProtocols: [h2c]}, tcp: {cluster: c}}], tcp: {cluster: c}}",
            bind: false,
            original_dst: false,
            direction: Direction::Outbound,
            detection: Detection::default(),
            chains: 1,
            default: true,
        },
        Case {
            yaml: "{name: l, address: 0.0.0.0:80, detection: {}, chains: [{match: {destinationPort: 80}, tcp: {cluster: c}}]}",
            bind: false,
            original_dst: false,
            direction: Direction::Outbound,
            detection: Detection::default(),
            chains: 1,
            default: false,
        },
        Case {
            yaml: "{name: l, address: 0.0.0.0:80, detection: true, tcp: {cluster: c}}",
            bind: false,
            original_dst: false,
            direction: Direction::Outbound,
            detection: Detection::default(),
            chains: 0,
            default: true,
        },
        Case {
            yaml: "{name: l, address: 0.0.0.0:80, detection: {timeout: 1.5s}, tcp: {cluster: c}}",
            bind: false,
            original_dst: false,
            direction: Direction::Outbound,
            detection: Detection {
                enabled: true,
                timeout: Duration::from_millis(1500),
            },
            chains: 0,
            default: true,
        },
        Case {
            yaml: "{name: l, address: 0.0.0.0:80, detection: false, tcp: {cluster: c}}",
            bind: false,
            original_dst: false,
            direction: Direction::Outbound,
            detection: off,
            chains: 0,
            default: true,
        },
        Case {
            yaml: "{name: l, address: 0.0.0.0:80, detection: {enabled: false, timeout: 1s}, tcp: {cluster: c}}",
            bind: false,
            original_dst: false,
            direction: Direction::Outbound,
            detection: Detection {
                enabled: false,
                timeout: Duration::from_secs(1),
            },
            chains: 0,
            default: true,
        },
    ];
    for case in cases {
        let text = format!(
            "{}  - {}\nclusters:\n  - {{name: c, endpoints: [127.0.0.1:1]}}\n",
            capture!(),
            case.yaml
        );
        let s = ok(&text).snapshot;
        let l = listener(&s, "l");
        assert_eq!(l.bind_to_port, case.bind, "{}", case.yaml);
        assert_eq!(l.use_original_dst, case.original_dst, "{}", case.yaml);
        assert_eq!(l.direction, case.direction, "{}", case.yaml);
        assert_eq!(l.detection, case.detection, "{}", case.yaml);
        assert_eq!(l.filter_chains.len(), case.chains, "{}", case.yaml);
        assert_eq!(l.default_chain.is_some(), case.default, "{}", case.yaml);
    }
}

#[test]
fn chain_and_handler_fields() {
    let s = ok(concat!(
        capture!(),
        "  - name: l\n",
        "    address: 0.0.0.0:8443\n",
        "    chains:\n",
        "      - name: one\n",
        "        match:\n",
        "          destinationPort: 8443\n",
        "          prefixRanges: [10.0.0.0/8, 192.168.1.1]\n",
        "          sourcePrefixRanges: [\"fd00::/8\"]\n",
        "          transportProtocol: tls\n",
        "          applicationProtocols: [istio, h2]\n",
        "          serverNames: [a.example, b.example]\n",
        "        tcp: {weightedClusters: [{name: a, weight: 3}, {name: b, weight: 1}], idleTimeout: 30s}\n",
        "      - match: {destinationPort: 8443}\n",
        "        tcp: {cluster: a, statPrefix: mine}\n",
        "      - match: {transportProtocol: raw_buffer}\n",
        "        http: {statPrefix: web, routes: [{name: api, prefix: /api/, cluster: b}, {cluster: a}]}\n",
        "clusters:\n",
        "  - {name: a, endpoints: [10.0.0.1:1]}\n",
        "  - {name: b, endpoints: [10.0.0.2:1]}\n",
    ))
    .snapshot;
    let l = listener(&s, "l");
    assert!(l.default_chain.is_none());
    let [one, two, three] = &l.filter_chains[..] else {
        panic!("three chains, got {:?}", l.filter_chains);
    };
    assert_eq!(one.name, "one");
    assert_eq!(
        one.matcher,
        ChainMatch {
            destination_port: Some(8443),
            prefix_ranges: vec![cidr("10.0.0.0/8"), cidr("192.168.1.1/32")],
            source_prefix_ranges: vec![cidr("fd00::/8")],
            transport_protocol: Some(Transport::Tls),
            application_protocols: vec!["istio".into(), "h2".into()],
            server_names: vec!["a.example".into(), "b.example".into()],
        }
    );
    let weighted = tcp_of(one);
    assert!(same_choice(
        &weighted.cluster,
        &ClusterChoice::Weighted(vec![("a".into(), 3), ("b".into(), 1)])
    ));
    assert_eq!(weighted.idle_timeout, Duration::from_secs(30));
    assert_eq!(
        weighted.stat_prefix, "l",
        "a weighted tcp_proxy is named after its listener"
    );
    assert_eq!(two.name, "chains[1]");
    assert_eq!(tcp_of(two).stat_prefix, "mine");
    let hcm = http_of(three);
    assert_eq!(hcm.stat_prefix, "web");
    let routes = &table(hcm).virtual_hosts[0].routes;
    let view: Vec<(&str, &str)> = routes
        .iter()
        .map(|r| (r.name.as_str(), r.prefix().unwrap_or_default()))
        .collect();
    assert_eq!(view, [("api", "/api/"), ("/", "/")]);
    assert!(l.detection.enabled);
}

#[test]
fn raw_buffer_needs_no_detection_but_asks_for_it_by_default() {
    let p = ok(concat!(
        capture!(),
        "  - name: off\n",
        "    address: 0.0.0.0:8080\n",
        "    detection: false\n",
        "    chains:\n",
        "      - {match: {transportProtocol: raw_buffer}, tcp: {cluster: PassthroughCluster}}\n",
        "  - name: on\n",
        "    address: 0.0.0.0:8081\n",
        "    chains:\n",
        "      - {match: {destinationPort: 3306, transportProtocol: raw_buffer}, detection: false, tcp: {cluster: PassthroughCluster}}\n",
    ));
    assert!(!listener(&p.snapshot, "off").detection.enabled);
    assert!(listener(&p.snapshot, "on").detection.enabled);
    assert_eq!(p.detection_skip_ports.get("on"), Some(&vec![3306]));
}

#[test]
fn a_catch_all_chain_may_come_before_specific_ones() {
    // The data path picks the most specific matching chain, not the first.
    let s = ok(concat!(
        capture!(),
        "  - name: b\n",
        "    address: 0.0.0.0:8080\n",
        "    chains:\n",
        "      - {tcp: {cluster: PassthroughCluster}}\n",
        "      - {match: {destinationPort: 8080}, tcp: {cluster: BlackHoleCluster}}\n",
    ))
    .snapshot;
    let b = listener(&s, "b");
    assert_eq!(b.filter_chains.len(), 2);
    assert_eq!(b.filter_chains[0].matcher, ChainMatch::default());
    assert!(b.default_chain.is_none());
}

#[test]
fn listener_level_http_is_the_default_chain() {
    let s = ok(concat!(
        "listeners:\n",
        "  - name: web\n",
        "    address: 127.0.0.1:8080\n",
        "    bindToPort: true\n",
        "    http:\n",
        "      virtualHosts:\n",
        "        - {domains: [\"*.Example.com\", \"api.*\"], routes: [{cluster: c}]}\n",
        "        - {name: rest, routes: [{prefix: /, cluster: c}]}\n",
        "clusters: [{name: c, endpoints: [127.0.0.1:9000]}]\n",
    ))
    .snapshot;
    let web = listener(&s, "web");
    let chain = web.default_chain.as_ref().expect("default chain");
    let t = table(http_of(chain));
    assert_eq!(t.name, "web/default");
    assert_eq!(t.virtual_hosts[0].name, "*.example.com");
    assert_eq!(t.virtual_hosts[0].domains, ["*.example.com", "api.*"]);
    assert_eq!(t.virtual_hosts[1].name, "rest");
    assert_eq!(t.virtual_hosts[1].domains, ["*"]);
}

#[test]
fn names_may_be_numbers() {
    let s = ok("listeners:\n  - {name: 8080, address: 127.0.0.1:8080, bindToPort: true, defaultCluster: 9000}\nclusters:\n  - {name: 9000, endpoints: [127.0.0.1:9000]}\n").snapshot;
    assert_eq!(s.listeners[0].name, "8080");
    assert!(s.cluster("9000").is_some());
}

#[test]
fn detection_skip_ports_are_sorted_and_only_for_detecting_listeners() {
    let p = ok(concat!(
        capture!(),
        "  - name: in\n",
        "    address: 0.0.0.0:15006\n",
        "    direction: inbound\n",
        "    useOriginalDst: true\n",
        "    detection: true\n",
        "    chains:\n",
        "      - {match: {destinationPort: 5432}, detection: false, tcp: {cluster: PassthroughCluster}}\n",
        "      - {match: {destinationPort: 3306, prefixRanges: [10.0.0.0/8]}, detection: false, tcp: {cluster: PassthroughCluster}}\n",
        "      - {match: {destinationPort: 3306}, detection: false, tcp: {cluster: PassthroughCluster}}\n",
        "      - {match: {destinationPort: 80}, detection: true, tcp: {cluster: PassthroughCluster}}\n",
        "  - name: quiet\n",
        "    address: 0.0.0.0:7000\n",
        "    detection: false\n",
        "    chains:\n",
        "      - {match: {destinationPort: 7000}, detection: false, tcp: {cluster: PassthroughCluster}}\n",
    ));
    assert_eq!(p.detection_skip_ports.get("in"), Some(&vec![3306, 5432]));
    assert_eq!(p.detection_skip_ports.get("quiet"), None);
    assert_eq!(p.detection_skip_ports.len(), 1);
}

/// Refusals found while reading a value: they carry the line, the column, and the key's
/// path at the start of the message.
#[test]
fn malformed_values_name_their_path_line_and_column() {
    let cases: &[(&str, usize, &str)] = &[
        // (yaml, line, message start)
        ("listener: []\n", 1, "unknown field `listener`"),
        (
            "listeners:\n  - {name: a, adress: 1.2.3.4:5}\n",
            2,
            "listeners[0]: unknown field `adress`",
        ),
        (
            "listeners:\n  - {address: 1.2.3.4:5}\n",
            2,
            "listeners[0]: missing field `name`",
        ),
        (
            "listeners:\n  - {name: a}\n",
            2,
            "listeners[0]: missing field `address`",
        ),
        (
            "listeners:\n  - {name: \"\", address: 1.2.3.4:5}\n",
            2,
            "listeners[0].name: is empty",
        ),
        (
            "listeners:\n  - {name: \" a\", address: 1.2.3.4:5}\n",
            2,
            "listeners[0].name: \" a\" starts or ends with white space",
        ),
        (
            "listeners:\n  - {name: [a], address: 1.2.3.4:5}\n",
            2,
            "listeners[0].name: invalid type: sequence, expected a name",
        ),
        (
            "listeners:\n  - name: a\n    address: 10.0.0.1\n",
            3,
            "listeners[0].address: \"10.0.0.1\" has no port",
        ),
        (
            "listeners:\n  - name: a\n    address: \"fd00::1\"\n",
            3,
            "listeners[0].address: \"fd00::1\" has no port (or an IPv6 address without brackets)",
        ),
        (
            "listeners:\n  - name: a\n    address: example.com:80\n",
            3,
            "listeners[0].address: \"example.com:80\" is not an IP:port address",
        ),
        (
            "listeners:\n  - name: a\n    address: 0.0.0.0:0\n",
            3,
            "listeners[0].address: \"0.0.0.0:0\" has port 0",
        ),
        (
            "listeners:\n  - name: a\n    address: 8080\n",
            3,
            "listeners[0].address: 8080 is a number, not an address",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, direction: sideways}\n",
            2,
            "listeners[0].direction: unknown variant `sideways`",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, useOriginalDst: yes}\n",
            2,
            "listeners[0].useOriginalDst: invalid type",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, detection: 5}\n",
            2,
            "listeners[0].detection: invalid type: integer `5`",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, detection: {on: true}}\n",
            2,
            "listeners[0].detection: unknown field `on`",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, detection: {timeout: 0s}}\n",
            2,
            "listeners[0].detection.timeout: \"0s\" is zero",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, chains: [{match: {port: 80}}]}\n",
            2,
            "listeners[0].chains[0].match: unknown field `port`",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, chains: [{match: {destinationPort: 0}}]}\n",
            2,
            "listeners[0].chains[0].match.destinationPort: 0 is not a port",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, chains: [{match: {destinationPort: 65536}}]}\n",
            2,
            "listeners[0].chains[0].match.destinationPort: 65536 is not a port",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, chains: [{match: {destinationPort: -1}}]}\n",
            2,
            "listeners[0].chains[0].match.destinationPort: -1 is not a port",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, chains: [{match: {destinationPort: \"80\"}}]}\n",
            2,
            "listeners[0].chains[0].match.destinationPort: \"80\" is text",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, chains: [{match: {prefixRanges: [10.0.0.0/33]}}]}\n",
            2,
            "listeners[0].chains[0].match.prefixRanges[0]: \"10.0.0.0/33\": prefix length",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, chains: [{match: {sourcePrefixRanges: [nonsense]}}]}\n",
            2,
            "listeners[0].chains[0].match.sourcePrefixRanges[0]: \"nonsense\": \"nonsense\" is not an IP address",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, chains: [{match: {prefixRanges: [10]}}]}\n",
            2,
            "listeners[0].chains[0].match.prefixRanges[0]: 10 is a number, not a CIDR range",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, chains: [{match: {transportProtocol: tcp}}]}\n",
            2,
            "listeners[0].chains[0].match.transportProtocol: unknown variant `tcp`, expected `raw_buffer` or `tls`",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, chains: [{match: {serverNames: [\"\"]}}]}\n",
            2,
            "listeners[0].chains[0].match.serverNames[0]: is empty",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, chains: [{detection: maybe}]}\n",
            2,
            "listeners[0].chains[0].detection: invalid type",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, chains: [{mach: {}}]}\n",
            2,
            "listeners[0].chains[0]: unknown field `mach`",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, tcp: {cluster: c, idleTimeout: 2}}\n",
            2,
            "listeners[0].tcp.idleTimeout: 2 has no unit; write e.g. 2s or 2ms",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, tcp: {cluster: c, idleTimeout: 2sec}}\n",
            2,
            "listeners[0].tcp.idleTimeout: \"2sec\" is not a duration (unknown unit \"sec\")",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, tcp: {cluster: c, idleTimeout: 9000h}}\n",
            2,
            "listeners[0].tcp.idleTimeout: \"9000h\" is longer than a year",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, tcp: {cluster: c, idleTimeout: 1.5}}\n",
            2,
            "listeners[0].tcp.idleTimeout: invalid type: floating point `1.5`",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, tcp: {clusters: c}}\n",
            2,
            "listeners[0].tcp: unknown field `clusters`",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, tcp: {weightedClusters: [{name: c, weight: 0}]}}\n",
            2,
            "listeners[0].tcp.weightedClusters[0].weight: is 0; a weight must be 1 or more",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, tcp: {weightedClusters: [{name: c}]}}\n",
            2,
            "listeners[0].tcp.weightedClusters[0]: missing field `weight`",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, tcp: {weightedClusters: [{name: c, weight: 4294967296}]}}\n",
            2,
            "listeners[0].tcp.weightedClusters[0].weight: 4294967296 is not a weight",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, tcp: {weightedClusters: [{name: c, weight: \"1\"}]}}\n",
            2,
            "listeners[0].tcp.weightedClusters[0].weight: \"1\" is text",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, http: {virtualHosts: [{domains: [\"a*b\"], routes: []}]}}\n",
            2,
            "listeners[0].http.virtualHosts[0].domains[0]: \"a*b\": a domain may hold one *",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, http: {virtualHosts: [{domains: [\"*.a.*\"], routes: []}]}}\n",
            2,
            "listeners[0].http.virtualHosts[0].domains[0]: \"*.a.*\"",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, http: {virtualHosts: [{domains: [\"a b\"], routes: []}]}}\n",
            2,
            "listeners[0].http.virtualHosts[0].domains[0]: \"a b\" contains white space",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, http: {virtualHosts: [{domains: [\"\"], routes: []}]}}\n",
            2,
            "listeners[0].http.virtualHosts[0].domains[0]: is empty",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, http: {virtualHosts: [{domains: [a]}]}}\n",
            2,
            "listeners[0].http.virtualHosts[0]: missing field `routes`",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, http: {routes: [{prefix: api, cluster: c}]}}\n",
            2,
            "listeners[0].http.routes[0].prefix: \"api\" is not a path prefix; it must start with /",
        ),
        (
            "listeners:\n  - {name: a, address: 0.0.0.0:1, http: {routes: [{path: /, cluster: c}]}}\n",
            2,
            "listeners[0].http.routes[0]: unknown field `path`",
        ),
        (
            "clusters:\n  - {endpoints: [1.2.3.4:5]}\n",
            2,
            "clusters[0]: missing field `name`",
        ),
        (
            "clusters:\n  - {name: a, lbPolicy: LEAST_BUSY, endpoints: [1.2.3.4:5]}\n",
            2,
            "clusters[0].lbPolicy: unknown variant `LEAST_BUSY`",
        ),
        (
            "clusters:\n  - {name: a, type: EDS}\n",
            2,
            "clusters[0].type: unknown variant `EDS`, expected one of `STATIC`, `ORIGINAL_DST`, `BLACK_HOLE`",
        ),
        (
            "clusters:\n  - {name: a, type: static, endpoints: [1.2.3.4:5]}\n",
            2,
            "clusters[0].type: unknown variant `static`",
        ),
        (
            "clusters:\n  - {name: a, endpoints: 1.2.3.4:5}\n",
            2,
            "clusters[0].endpoints: invalid type: string",
        ),
        (
            "clusters:\n  - {name: a, endpoints: [1.2.3.4:5, {address: 1.2.3.4:6, weight: 0}]}\n",
            2,
            "clusters[0].endpoints[1].weight: is 0",
        ),
        (
            "clusters:\n  - {name: a, endpoints: [{adress: 1.2.3.4:6}]}\n",
            2,
            "clusters[0].endpoints[0]: unknown field `adress`",
        ),
        (
            "clusters:\n  - {name: a, endpoints: [{weight: 2}]}\n",
            2,
            "clusters[0].endpoints[0]: missing field `address`",
        ),
        (
            "clusters:\n  - {name: a, endpoints: [0.0.0.0:80]}\n",
            2,
            "clusters[0].endpoints[0]: \"0.0.0.0:80\" is the unspecified address",
        ),
        (
            "clusters:\n  - {name: a, endpoints: [{address: 10.0.0.1:0}]}\n",
            2,
            "clusters[0].endpoints[0].address: \"10.0.0.1:0\" has port 0",
        ),
        (
            "clusters:\n  - {name: a, endpoints: [80]}\n",
            2,
            "clusters[0].endpoints[0]: invalid type: integer `80`",
        ),
        (
            "clusters:\n  - {name: a, endpoints: [1.2.3.4:5], connectTimeout: 0ms}\n",
            2,
            "clusters[0].connectTimeout: \"0ms\" is zero",
        ),
        (
            "clusters:\n  - {name: a, type: ORIGINAL_DST, upstreamBind: 0.0.0.0}\n",
            2,
            "clusters[0].upstreamBind: \"0.0.0.0\" is the unspecified address",
        ),
        (
            "clusters:\n  - {name: a, type: ORIGINAL_DST, upstreamBind: 127.0.0.6:0}\n",
            2,
            "clusters[0].upstreamBind: \"127.0.0.6:0\" is not an IP address",
        ),
        ("listeners: [\n", 2, "did not find expected node content"),
        (
            "listeners:\n\t- {name: a}\n",
            2,
            "found character that cannot start any token",
        ),
    ];
    for (yaml, line, start) in cases {
        match fail(yaml) {
            StaticConfigError::Yaml {
                origin,
                line: Some(l),
                column: Some(_),
                message,
            } => {
                assert_eq!(origin, "test");
                assert!(
                    message.starts_with(start),
                    "{yaml}\nmessage {message:?}\nshould start with {start:?}"
                );
                assert_eq!(l, *line, "{yaml}\n{message}");
            }
            other => panic!("{yaml}\nexpected a YAML error with a place, got {other:?}"),
        }
    }
}

#[test]
fn yaml_errors_display_the_place_once() {
    let e = fail("listeners:\n  - name: a\n    address: 10.0.0.1\n");
    assert_eq!(
        e.to_string(),
        "static config test at line 3 column 14: listeners[0].address: \"10.0.0.1\" has no \
         port; write IP:port, e.g. 10.0.0.1:8080"
    );
}

#[test]
fn empty_or_multi_document_files_are_refused() {
    for text in ["", "\n", "# only a comment\n", "~\n"] {
        assert!(
            matches!(fail(text), StaticConfigError::Empty { ref origin } if origin == "test"),
            "{text:?}"
        );
    }
    assert!(matches!(
        fail("listeners: []\n---\nclusters: []\n"),
        StaticConfigError::Yaml { .. }
    ));
    assert!(matches!(fail("[]\n"), StaticConfigError::Yaml { .. }));
    // Keys that are present but empty are not an empty file.
    let s = ok("listeners: []\n").snapshot;
    assert!(s.listeners.is_empty());
    assert_eq!(s.clusters.len(), 3);
}

/// Refusals of values that do not fit together: the key's path and the reason.
#[test]
fn inconsistent_files_name_the_field_and_the_fix() {
    let cases: &[(&str, &str, &str, &str)] = &[
        // (case, yaml, field, reason start)
        (
            "duplicate cluster",
            "clusters:\n  - {name: a, endpoints: [1.2.3.4:5]}\n  - {name: a, endpoints: [1.2.3.4:6]}\n",
            "clusters[1].name",
            "\"a\" is also the name of clusters[0]",
        ),
        (
            "static cluster without endpoints",
            "clusters:\n  - {name: a}\n",
            "clusters[0].endpoints",
            "a STATIC cluster needs at least one endpoint",
        ),
        (
            "static cluster with an empty list",
            "clusters:\n  - {name: a, type: STATIC, endpoints: []}\n",
            "clusters[0].endpoints",
            "a STATIC cluster needs at least one endpoint",
        ),
        (
            "original-dst cluster with endpoints",
            "clusters:\n  - {name: a, type: ORIGINAL_DST, endpoints: [1.2.3.4:5]}\n",
            "clusters[0].endpoints",
            "an ORIGINAL_DST cluster takes no endpoints",
        ),
        (
            "black-hole cluster with endpoints",
            "clusters:\n  - {name: a, type: BLACK_HOLE, endpoints: [1.2.3.4:5]}\n",
            "clusters[0].endpoints",
            "a BLACK_HOLE cluster takes no endpoints",
        ),
        (
            "lb policy without endpoints",
            "clusters:\n  - {name: a, type: ORIGINAL_DST, lbPolicy: RANDOM}\n",
            "clusters[0].lbPolicy",
            "an ORIGINAL_DST cluster has no endpoints to balance over",
        ),
        (
            "bind on a black hole",
            "clusters:\n  - {name: a, type: BLACK_HOLE, upstreamBind: 127.0.0.6}\n",
            "clusters[0].upstreamBind",
            "a BLACK_HOLE cluster makes no connections",
        ),
        (
            "bind of the other family",
            "clusters:\n  - {name: a, endpoints: [1.2.3.4:5, \"[fd00::1]:5\"], upstreamBind: 127.0.0.6}\n",
            "clusters[0].endpoints[1]",
            "[fd00::1]:5 cannot be reached from upstreamBind 127.0.0.6",
        ),
        (
            "duplicate endpoint",
            "clusters:\n  - {name: a, endpoints: [1.2.3.4:5, {address: 1.2.3.4:5, weight: 2}]}\n",
            "clusters[0].endpoints[1]",
            "1.2.3.4:5 is also endpoints[0]",
        ),
        (
            "duplicate listener name",
            concat!(
                capture!(),
                "  - {name: out, address: 0.0.0.0:80, defaultCluster: PassthroughCluster}\n"
            ),
            "listeners[1].name",
            "\"out\" is also the name of listeners[0]",
        ),
        (
            "original dst without a socket",
            "listeners:\n  - {name: a, address: 0.0.0.0:15001, useOriginalDst: true, bindToPort: false, defaultCluster: PassthroughCluster}\n",
            "listeners[0].useOriginalDst",
            "needs bindToPort: true",
        ),
        (
            "bound on the health port",
            "listeners:\n  - {name: a, address: 0.0.0.0:15021, bindToPort: true, defaultCluster: PassthroughCluster}\n",
            "listeners[0].address",
            "port 15021 is the proxy's health port",
        ),
        (
            "bound on the admin port",
            "listeners:\n  - {name: a, address: 127.0.0.1:15000, bindToPort: true, defaultCluster: PassthroughCluster}\n",
            "listeners[0].address",
            "port 15000 is the proxy's admin port",
        ),
        (
            "bound on the Prometheus port",
            "listeners:\n  - {name: a, address: 0.0.0.0:15090, useOriginalDst: true, defaultCluster: PassthroughCluster}\n",
            "listeners[0].address",
            "port 15090 is the proxy's Prometheus port",
        ),
        (
            "two sockets on one port",
            concat!(
                capture!(),
                "  - {name: b, address: \"[::]:15001\", useOriginalDst: true, defaultCluster: PassthroughCluster}\n"
            ),
            "listeners[1].address",
            "port 15001 is already bound by listeners[0] (\"out\")",
        ),
        (
            "hand-off target on the outbound capture port",
            concat!(
                capture!(),
                "  - {name: b, address: 10.0.0.1:15001, defaultCluster: PassthroughCluster}\n"
            ),
            "listeners[1].address",
            "port 15001 is the proxy's own capture port",
        ),
        (
            "hand-off target on the inbound capture port",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:15006, defaultCluster: PassthroughCluster}\n"
            ),
            "listeners[1].address",
            "port 15006 is the proxy's own capture port",
        ),
        (
            "two hand-off targets for one address",
            concat!(
                capture!(),
                "  - {name: b, address: 10.0.0.1:80, defaultCluster: PassthroughCluster}\n  - {name: c, address: 10.0.0.1:80, defaultCluster: BlackHoleCluster}\n"
            ),
            "listeners[2].address",
            "10.0.0.1:80 takes the same hand-offs as listeners[1] (\"b\") at 10.0.0.1:80",
        ),
        (
            "two catch-all hand-off targets for one port",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:80, defaultCluster: PassthroughCluster}\n  - {name: c, address: \"[::]:80\", defaultCluster: BlackHoleCluster}\n"
            ),
            "listeners[2].address",
            "[::]:80 takes the same hand-offs as listeners[1] (\"b\") at 0.0.0.0:80",
        ),
        (
            "hand-off target without a capture listener",
            "listeners:\n  - {name: a, address: 0.0.0.0:8080, defaultCluster: PassthroughCluster}\n",
            "listeners[0].bindToPort",
            "is false (the default without useOriginalDst), but no outbound listener",
        ),
        (
            "hand-off target of the other direction",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, direction: inbound, defaultCluster: PassthroughCluster}\n"
            ),
            "listeners[1].bindToPort",
            "is false (the default without useOriginalDst), but no inbound listener",
        ),
        (
            "listener with nothing to do",
            concat!(capture!(), "  - {name: b, address: 0.0.0.0:8080}\n"),
            "listeners[1]",
            "has nothing to send connections to",
        ),
        (
            "listener with two defaults",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, tcp: {cluster: PassthroughCluster}, defaultCluster: PassthroughCluster}\n"
            ),
            "listeners[1]",
            "tcp, http and defaultCluster each set the default chain",
        ),
        (
            "chain without a handler",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, chains: [{match: {destinationPort: 8080}}]}\n"
            ),
            "listeners[1].chains[0]",
            "has neither tcp nor http",
        ),
        (
            "chain with two handlers",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, chains: [{tcp: {cluster: PassthroughCluster}, http: {routes: [{cluster: PassthroughCluster}]}}]}\n"
            ),
            "listeners[1].chains[0]",
            "has both tcp and http",
        ),
        (
            "chain needing the detection the listener turns off",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, detection: false, chains: [{match: {serverNames: [a]}, tcp: {cluster: PassthroughCluster}}]}\n"
            ),
            "listeners[1].chains[0].match.serverNames",
            "needs protocol detection, which this listener's detection turns off",
        ),
        (
            "chain needing detection, turned off by a map",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, detection: {enabled: false}, chains: [{match: {transportProtocol: tls}, tcp: {cluster: PassthroughCluster}}]}\n"
            ),
            "listeners[1].chains[0].match.transportProtocol",
            "needs protocol detection",
        ),
        (
            "per-chain opt-out without a port",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, detection: true, chains: [{detection: false, tcp: {cluster: PassthroughCluster}}]}\n"
            ),
            "listeners[1].chains[0].detection",
            "detection: false skips detection by destination port",
        ),
        (
            "per-chain opt-out of a chain that needs detection",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, chains: [{match: {destinationPort: 8080, applicationProtocols: [h2c]}, detection: false, tcp: {cluster: PassthroughCluster}}]}\n"
            ),
            "listeners[1].chains[0].detection",
            "this chain matches on applicationProtocols, which only detection can tell",
        ),
        (
            "per-chain opt-in on a listener without detection",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, detection: false, chains: [{match: {destinationPort: 8080}, detection: true, tcp: {cluster: PassthroughCluster}}]}\n"
            ),
            "listeners[1].chains[0].detection",
            "one chain cannot turn detection on",
        ),
        (
            "chain needing detection on a port that skips it",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, chains: [{match: {destinationPort: 8080}, detection: false, tcp: {cluster: PassthroughCluster}}, {match: {destinationPort: 8080, transportProtocol: tls}, tcp: {cluster: PassthroughCluster}}]}\n"
            ),
            "listeners[1].chains[1].match.transportProtocol",
            "can never match: connections to port 8080 skip detection (chains[0] has detection: false)",
        ),
        (
            "duplicate chain names",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, chains: [{name: x, match: {destinationPort: 1}, tcp: {cluster: PassthroughCluster}}, {name: x, match: {destinationPort: 2}, tcp: {cluster: PassthroughCluster}}]}\n"
            ),
            "listeners[1].chains[1].name",
            "\"x\" is also the name of chains[0]",
        ),
        (
            "two chains with one match",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, chains: [{match: {destinationPort: 2}, tcp: {cluster: PassthroughCluster}}, {match: {destinationPort: 2}, tcp: {cluster: BlackHoleCluster}}]}\n"
            ),
            "listeners[1].chains[1].match",
            "is the same as chains[0]'s",
        ),
        (
            "tcp without a cluster",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, tcp: {idleTimeout: 1s}}\n"
            ),
            "listeners[1].tcp",
            "names no cluster",
        ),
        (
            "tcp with both kinds of cluster",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, tcp: {cluster: PassthroughCluster, weightedClusters: [{name: BlackHoleCluster, weight: 1}]}}\n"
            ),
            "listeners[1].tcp",
            "has both cluster and weightedClusters",
        ),
        (
            "unknown cluster, misspelt",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, chains: [{tcp: {cluster: PasthroughCluster}}]}\n"
            ),
            "listeners[1].chains[0].tcp.cluster",
            "no cluster named \"PasthroughCluster\"; did you mean \"PassthroughCluster\"?",
        ),
        (
            "unknown cluster, wrong case",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, tcp: {cluster: blackholecluster}}\n"
            ),
            "listeners[1].tcp.cluster",
            "no cluster named \"blackholecluster\"; did you mean \"BlackHoleCluster\"?",
        ),
        (
            "unknown cluster, nothing near",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, tcp: {cluster: \"outbound|80||x\"}}\n"
            ),
            "listeners[1].tcp.cluster",
            "no cluster named \"outbound|80||x\"; define it under clusters, or use one of the built-in PassthroughCluster",
        ),
        (
            "unknown default cluster",
            "listeners:\n  - {name: a, address: 0.0.0.0:15001, useOriginalDst: true, defaultCluster: x}\n",
            "listeners[0].defaultCluster",
            "no cluster named \"x\"",
        ),
        (
            "empty weighted clusters",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, tcp: {weightedClusters: []}}\n"
            ),
            "listeners[1].tcp.weightedClusters",
            "is empty",
        ),
        (
            "unknown weighted cluster",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, tcp: {weightedClusters: [{name: PassthroughCluster, weight: 1}, {name: nope, weight: 1}]}}\n"
            ),
            "listeners[1].tcp.weightedClusters[1].name",
            "no cluster named \"nope\"",
        ),
        (
            "weighted cluster listed twice",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, tcp: {weightedClusters: [{name: PassthroughCluster, weight: 1}, {name: PassthroughCluster, weight: 1}]}}\n"
            ),
            "listeners[1].tcp.weightedClusters[1].name",
            "\"PassthroughCluster\" is also weightedClusters[0]",
        ),
        (
            "weights overflowing",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, tcp: {weightedClusters: [{name: PassthroughCluster, weight: 4294967295}, {name: BlackHoleCluster, weight: 1}]}}\n"
            ),
            "listeners[1].tcp.weightedClusters[1].weight",
            "the weights add up to more than 4294967295",
        ),
        (
            "http without routes",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, http: {statPrefix: x}}\n"
            ),
            "listeners[1].http",
            "has no routes",
        ),
        (
            "http with both forms",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, http: {routes: [{cluster: PassthroughCluster}], virtualHosts: [{routes: [{cluster: PassthroughCluster}]}]}}\n"
            ),
            "listeners[1].http",
            "has both routes and virtualHosts",
        ),
        (
            "no virtual hosts",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, http: {virtualHosts: []}}\n"
            ),
            "listeners[1].http.virtualHosts",
            "is empty",
        ),
        (
            "virtual host without domains",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, http: {virtualHosts: [{domains: [], routes: [{cluster: PassthroughCluster}]}]}}\n"
            ),
            "listeners[1].http.virtualHosts[0].domains",
            "is empty, so no request would match",
        ),
        (
            "domain twice in a virtual host",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, http: {virtualHosts: [{domains: [a, A], routes: [{cluster: PassthroughCluster}]}]}}\n"
            ),
            "listeners[1].http.virtualHosts[0].domains[1]",
            "\"a\" is listed twice",
        ),
        (
            "domain in two virtual hosts",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, http: {virtualHosts: [{domains: [a, b], routes: [{cluster: PassthroughCluster}]}, {routes: [{cluster: PassthroughCluster}]}, {domains: [b], routes: [{cluster: PassthroughCluster}]}]}}\n"
            ),
            "listeners[1].http.virtualHosts[2].domains[0]",
            "\"b\" is also virtualHosts[0].domains[1]",
        ),
        (
            "two catch-all virtual hosts",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, http: {virtualHosts: [{routes: [{cluster: PassthroughCluster}]}, {domains: [\"*\"], routes: [{cluster: PassthroughCluster}]}]}}\n"
            ),
            "listeners[1].http.virtualHosts[1].domains[0]",
            "\"*\" is also virtualHosts[0].domains[0]",
        ),
        (
            "virtual host without routes",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, http: {virtualHosts: [{routes: []}]}}\n"
            ),
            "listeners[1].http.virtualHosts[0].routes",
            "is empty",
        ),
        (
            "empty shorthand routes",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, http: {routes: []}}\n"
            ),
            "listeners[1].http.routes",
            "is empty",
        ),
        (
            "route shadowed by a shorter prefix",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, http: {routes: [{prefix: /api, cluster: PassthroughCluster}, {prefix: /api/v2, cluster: PassthroughCluster}]}}\n"
            ),
            "listeners[1].http.routes[1].prefix",
            "\"/api/v2\" is never reached: routes[0] (\"/api\") comes first",
        ),
        (
            "route shadowed by the default prefix",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, http: {virtualHosts: [{routes: [{cluster: PassthroughCluster}, {prefix: /x, cluster: PassthroughCluster}]}]}}\n"
            ),
            "listeners[1].http.virtualHosts[0].routes[1].prefix",
            "\"/x\" is never reached: routes[0] (\"/\")",
        ),
        (
            "route without a cluster",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, http: {routes: [{prefix: /}]}}\n"
            ),
            "listeners[1].http.routes[0]",
            "names no cluster",
        ),
        (
            "route to an unknown cluster",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, http: {routes: [{cluster: nope}]}}\n"
            ),
            "listeners[1].http.routes[0].cluster",
            "no cluster named \"nope\"",
        ),
        (
            "route with an unknown weighted cluster",
            concat!(
                capture!(),
                "  - {name: b, address: 0.0.0.0:8080, http: {routes: [{weightedClusters: [{name: nope, weight: 1}]}]}}\n"
            ),
            "listeners[1].http.routes[0].weightedClusters[0].name",
            "no cluster named \"nope\"",
        ),
    ];
    for (case, yaml, field, reason) in cases {
        match fail(yaml) {
            StaticConfigError::Invalid {
                origin,
                field: f,
                reason: r,
            } => {
                assert_eq!(origin, "test", "{case}");
                assert_eq!(f, *field, "{case}: {r}");
                assert!(
                    r.starts_with(reason),
                    "{case}: reason {r:?}\nshould start with {reason:?}"
                );
            }
            other => panic!("{case}: expected Invalid, got {other}"),
        }
    }
}

#[test]
fn invalid_errors_display_origin_field_and_reason() {
    let e = fail(
        "listeners:\n  - {name: a, address: 0.0.0.0:15001, useOriginalDst: true, defaultCluster: x}\n",
    );
    assert_eq!(
        e.to_string(),
        "static config test: listeners[0].defaultCluster: no cluster named \"x\"; define it \
         under clusters, or use one of the built-in PassthroughCluster, \
         InboundPassthroughCluster and BlackHoleCluster"
    );
}

#[test]
fn durations() {
    let ok: &[(&str, Duration)] = &[
        ("100ms", Duration::from_millis(100)),
        ("2s", Duration::from_secs(2)),
        ("1m", Duration::from_secs(60)),
        ("1h", Duration::from_secs(3600)),
        ("1h30m", Duration::from_secs(5400)),
        ("1m0.5s", Duration::from_millis(60_500)),
        ("1.5s", Duration::from_millis(1500)),
        (".5s", Duration::from_millis(500)),
        ("0.25m", Duration::from_secs(15)),
        ("0.000000001s", Duration::from_nanos(1)),
        ("0s", Duration::ZERO),
        ("2s100ms", Duration::from_millis(2100)),
    ];
    for (text, expected) in ok {
        assert_eq!(de::duration(text), Ok(*expected), "{text}");
    }
    let bad: &[(&str, &str)] = &[
        ("", "empty"),
        ("5", "no unit"),
        ("s", "a unit without a number"),
        ("1x", "unknown unit \"x\""),
        ("1 s", "unknown unit \" s\""),
        ("1S", "unknown unit \"S\""),
        ("1us", "unknown unit \"us\""),
        ("-1s", "unknown unit \"-\""),
        (".s", "a unit without a number"),
        ("1.2.3s", "malformed number"),
        ("1.0000000001s", "malformed number"),
        ("2s5", "no unit"),
        ("99999999999999999999999999999999999999999h", "too long"),
        ("9999999999999999999999h", "too long"),
    ];
    for (text, why) in bad {
        match de::duration(text) {
            Ok(d) => panic!("{text:?} should be refused, got {d:?}"),
            Err(e) => assert!(
                e.contains(&format!("({why})")),
                "{text:?}: {e:?} should say ({why})"
            ),
        }
    }
}

#[test]
fn addresses() {
    let cases: &[(&str, Result<&str, &str>)] = &[
        ("10.0.0.1:80", Ok("10.0.0.1:80")),
        ("[::]:15001", Ok("[::]:15001")),
        ("[fd00::1]:8080", Ok("[fd00::1]:8080")),
        ("10.0.0.1", Err("has no port")),
        ("::1", Err("without brackets")),
        ("localhost:80", Err("host names are not resolved")),
        ("10.0.0.1:99999", Err("is not an IP:port address")),
        ("", Err("is not an IP:port address")),
    ];
    for (text, expected) in cases {
        match (de::socket_addr(text), expected) {
            (Ok(a), Ok(e)) => assert_eq!(a, addr(e), "{text}"),
            (Err(m), Err(e)) => assert!(m.contains(e), "{text}: {m}"),
            (got, _) => panic!("{text:?}: got {got:?}, expected {expected:?}"),
        }
    }
}

#[test]
fn edit_distances() {
    let cases = [
        ("", "", 0),
        ("a", "", 1),
        ("", "ab", 2),
        ("kitten", "sitting", 3),
        ("PassthroughCluster", "PasthroughCluster", 1),
        ("inbound|9080||", "inbound|9081||", 1),
        ("ab", "ba", 2),
        ("é", "e", 1),
    ];
    for (a, b, d) in cases {
        assert_eq!(clusters::edit_distance(a, b), d, "{a:?} {b:?}");
        assert_eq!(clusters::edit_distance(b, a), d, "{b:?} {a:?}");
    }
}

#[test]
fn load_reads_the_file_and_names_it() {
    let dir = std::env::temp_dir().join(format!("skiff-static-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("proxy.yaml");
    std::fs::write(&path, example()).expect("write");
    let s = load(&path).expect("the example loads");
    let prefix = format!("file:{}@", path.display());
    let stamp = s
        .version
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("version {:?} should start with {prefix:?}", s.version));
    let (secs, nanos) = stamp.split_once('.').expect("seconds.nanoseconds");
    assert!(secs.parse::<u64>().expect("seconds") > 1_600_000_000);
    assert_eq!(nanos.len(), 9);

    std::fs::write(&path, "listeners:\n  - {name: a}\n").expect("write");
    let e = load(&path).expect_err("missing address");
    assert!(
        e.to_string()
            .starts_with(&format!("static config {} at line 2", path.display())),
        "{e}"
    );

    let missing = dir.join("missing.yaml");
    match load(&missing) {
        Err(StaticConfigError::Read { path: p, source }) => {
            assert_eq!(p, missing);
            assert_eq!(source.kind(), io::ErrorKind::NotFound);
        }
        other => panic!("expected a read error, got {other:?}"),
    }
    std::fs::write(&path, [0xff, 0xfe, b'\n']).expect("write");
    assert!(matches!(load(&path), Err(StaticConfigError::Read { .. })));
    match load("/dev/zero") {
        Err(StaticConfigError::Read { source, .. }) => {
            assert!(
                source.to_string().contains("larger than 16 MiB"),
                "{source}"
            );
        }
        other => panic!("expected a read error, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn parse_sets_the_version_to_the_source() {
    assert_eq!(
        parse(capture!(), "inline:abc").expect("parses").version,
        "inline:abc"
    );
}

#[test]
fn cluster_http_settings_and_defaults() {
    let default_budget = RetryBudget {
        budget_percent: 20.0,
        min_retry_concurrency: 3,
    };
    let budget = |budget_percent: f64, min_retry_concurrency: u32| RetryBudget {
        budget_percent,
        min_retry_concurrency,
    };
    let four = Duration::from_secs(4);
    let cases: &[(&str, UpstreamProtocol, Duration, RetryBudget)] = &[
        (
            "{name: c, endpoints: [10.0.0.1:80]}",
            UpstreamProtocol::Downstream,
            four,
            default_budget,
        ),
        (
            "{name: c, endpoints: [10.0.0.1:80], protocol: DOWNSTREAM}",
            UpstreamProtocol::Downstream,
            four,
            default_budget,
        ),
        (
            "{name: c, endpoints: [10.0.0.1:80], protocol: HTTP1, httpIdleTimeout: 30s}",
            UpstreamProtocol::Http1,
            Duration::from_secs(30),
            default_budget,
        ),
        (
            "{name: c, endpoints: [10.0.0.1:80], protocol: HTTP2, httpIdleTimeout: 1.5s}",
            UpstreamProtocol::Http2,
            Duration::from_millis(1500),
            default_budget,
        ),
        (
            "{name: c, type: ORIGINAL_DST, protocol: HTTP1, retryBudget: {}}",
            UpstreamProtocol::Http1,
            four,
            default_budget,
        ),
        (
            "{name: c, endpoints: [10.0.0.1:80], retryBudget: {budgetPercent: 50}}",
            UpstreamProtocol::Downstream,
            four,
            budget(50.0, 3),
        ),
        (
            "{name: c, endpoints: [10.0.0.1:80], retryBudget: {minRetryConcurrency: 0}}",
            UpstreamProtocol::Downstream,
            four,
            budget(20.0, 0),
        ),
        (
            "{name: c, endpoints: [10.0.0.1:80], retryBudget: {budgetPercent: 12.5, minRetryConcurrency: 10}}",
            UpstreamProtocol::Downstream,
            four,
            budget(12.5, 10),
        ),
        (
            "{name: c, endpoints: [10.0.0.1:80], retryBudget: {budgetPercent: 0, minRetryConcurrency: 4294967295}}",
            UpstreamProtocol::Downstream,
            four,
            budget(0.0, u32::MAX),
        ),
        (
            "{name: c, endpoints: [10.0.0.1:80], retryBudget: {budgetPercent: 100.0}}",
            UpstreamProtocol::Downstream,
            four,
            budget(100.0, 3),
        ),
        (
            "{name: c, type: BLACK_HOLE}",
            UpstreamProtocol::Downstream,
            four,
            default_budget,
        ),
    ];
    for (yaml, protocol, idle, retry_budget) in cases {
        let s = ok(&format!("{}clusters:\n  - {yaml}\n", capture!())).snapshot;
        let c = cluster(&s, "c");
        assert_eq!(c.protocol, *protocol, "{yaml}");
        assert_eq!(c.http_idle_timeout, *idle, "{yaml}");
        assert_eq!(c.retry_budget, *retry_budget, "{yaml}");
    }
    let s = ok(capture!()).snapshot;
    for name in [
        PASSTHROUGH_CLUSTER,
        INBOUND_PASSTHROUGH_CLUSTER,
        BLACKHOLE_CLUSTER,
    ] {
        let c = cluster(&s, name);
        assert_eq!(
            (c.protocol, c.http_idle_timeout, c.retry_budget),
            (UpstreamProtocol::Downstream, four, default_budget),
            "{name}"
        );
    }
}

/// The whole message of each refusal of the cluster's HTTP settings, as the proxy logs it.
#[test]
fn cluster_http_settings_refusals() {
    let cases: &[(&str, &str)] = &[
        (
            "protocol: HTTP3",
            "static config test at line 2 column 49: clusters[0].protocol: unknown variant \
             `HTTP3`, expected one of `DOWNSTREAM`, `HTTP1`, `HTTP2`",
        ),
        (
            "protocol: http2",
            "static config test at line 2 column 49: clusters[0].protocol: unknown variant \
             `http2`, expected one of `DOWNSTREAM`, `HTTP1`, `HTTP2`",
        ),
        (
            "httpIdleTimeout: 0s",
            "static config test at line 2 column 56: clusters[0].httpIdleTimeout: \"0s\" is \
             zero; a timeout must be longer than 0 (remove the key for the default)",
        ),
        (
            "httpIdleTimeout: 4",
            "static config test at line 2 column 56: clusters[0].httpIdleTimeout: 4 has no \
             unit; write e.g. 4s or 4ms",
        ),
        (
            "retryBudget: {budgetPercent: 150}",
            "static config test at line 2 column 68: clusters[0].retryBudget.budgetPercent: \
             150 is outside 0 to 100; write a percentage, e.g. 20",
        ),
        (
            "retryBudget: {budgetPercent: -1}",
            "static config test at line 2 column 68: clusters[0].retryBudget.budgetPercent: \
             -1 is outside 0 to 100; write a percentage, e.g. 20",
        ),
        (
            "retryBudget: {budgetPercent: 100.5}",
            "static config test at line 2 column 68: clusters[0].retryBudget.budgetPercent: \
             100.5 is outside 0 to 100; write a percentage, e.g. 20",
        ),
        (
            "retryBudget: {budgetPercent: -0.5}",
            "static config test at line 2 column 68: clusters[0].retryBudget.budgetPercent: \
             -0.5 is outside 0 to 100; write a percentage, e.g. 20",
        ),
        (
            "retryBudget: {budgetPercent: .nan}",
            "static config test at line 2 column 68: clusters[0].retryBudget.budgetPercent: \
             NaN is not a finite number; write a percentage from 0 to 100, e.g. 20",
        ),
        (
            "retryBudget: {budgetPercent: .inf}",
            "static config test at line 2 column 68: clusters[0].retryBudget.budgetPercent: \
             inf is not a finite number; write a percentage from 0 to 100, e.g. 20",
        ),
        (
            "retryBudget: {budgetPercent: 20%}",
            "static config test at line 2 column 68: clusters[0].retryBudget.budgetPercent: \
             \"20%\" is text; write the percentage as a number from 0 to 100, e.g. 20",
        ),
        (
            "retryBudget: {minRetryConcurrency: -1}",
            "static config test at line 2 column 74: \
             clusters[0].retryBudget.minRetryConcurrency: -1 is not a count; write a whole \
             number from 0 to 4294967295",
        ),
        (
            "retryBudget: {minRetryConcurrency: \"3\"}",
            "static config test at line 2 column 74: \
             clusters[0].retryBudget.minRetryConcurrency: \"3\" is text; write a whole number \
             such as 3",
        ),
        (
            "retryBudget: {minRetryConcurrency: 1.5}",
            "static config test at line 2 column 74: \
             clusters[0].retryBudget.minRetryConcurrency: invalid type: floating point `1.5`, \
             expected a whole number of 0 or more",
        ),
        (
            "retryBudget: {budget: 20}",
            "static config test at line 2 column 53: clusters[0].retryBudget: unknown field \
             `budget`, expected `budgetPercent` or `minRetryConcurrency`",
        ),
    ];
    for (keys, expected) in cases {
        let yaml = format!("clusters:\n  - {{name: a, endpoints: [1.2.3.4:5], {keys}}}\n");
        assert_eq!(fail(&yaml).to_string(), *expected, "{yaml}");
    }
    for key in [
        "protocol: HTTP1",
        "httpIdleTimeout: 1s",
        "retryBudget: {}",
        "upstreamBind: 127.0.0.6",
    ] {
        let name = key.split(':').next().unwrap_or_default();
        let yaml = format!("clusters:\n  - {{name: a, type: BLACK_HOLE, {key}}}\n");
        assert_eq!(
            fail(&yaml).to_string(),
            format!(
                "static config test: clusters[0].{name}: a BLACK_HOLE cluster makes no \
                 connections; remove {name}"
            ),
            "{yaml}"
        );
    }
}

#[test]
fn access_log_encoding() {
    assert_eq!(ok(capture!()).snapshot.access_log, None, "off by default");
    let cases = [
        ("{}", Format::Text),
        ("{encoding: TEXT}", Format::Text),
        ("{encoding: text}", Format::Text),
        ("{encoding: JSON}", Format::Json),
        ("{encoding: Json}", Format::Json),
        ("{encoding: \"json\"}", Format::Json),
    ];
    for (value, format) in cases {
        let yaml = format!("{}accessLog: {value}\n", capture!());
        assert_eq!(ok(&yaml).snapshot.access_log, Some(format), "{value}");
    }
    let refusals = [
        (
            "{encoding: XML}",
            "static config test at line 3 column 23: accessLog.encoding: \"XML\" is not an \
             access log encoding; write TEXT or JSON",
        ),
        (
            "{encoding: 1}",
            "static config test at line 3 column 23: accessLog.encoding: 1 is not an access \
             log encoding; write TEXT or JSON",
        ),
        (
            "{encoding: [JSON]}",
            "static config test at line 3 column 23: accessLog.encoding: invalid type: \
             sequence, expected TEXT or JSON",
        ),
        (
            "{format: JSON}",
            "static config test at line 3 column 13: accessLog: unknown field `format`, \
             expected `encoding`",
        ),
        (
            "",
            "static config test at line 3 column 11: accessLog: is empty; write accessLog: {} \
             to log every HTTP request in TEXT, or remove the key for no access log",
        ),
        (
            "~",
            "static config test at line 3 column 12: accessLog: is empty; write accessLog: {} \
             to log every HTTP request in TEXT, or remove the key for no access log",
        ),
        (
            "JSON",
            "static config test at line 3 column 12: accessLog: \"JSON\" is text, not a map; \
             write accessLog: {encoding: JSON}",
        ),
        (
            "on",
            "static config test at line 3 column 12: accessLog: \"on\" is text, not a map; \
             write accessLog: {encoding: TEXT} or accessLog: {encoding: JSON}",
        ),
        (
            "true",
            "static config test at line 3 column 12: accessLog: is true, not a map; write \
             accessLog: {} for TEXT, or accessLog: {encoding: JSON}",
        ),
        (
            "false",
            "static config test at line 3 column 12: accessLog: is false, not a map; remove \
             the key for no access log",
        ),
    ];
    for (value, expected) in refusals {
        let yaml = format!("{}accessLog: {value}\n", capture!());
        assert_eq!(fail(&yaml).to_string(), expected, "{value:?}");
    }
}
