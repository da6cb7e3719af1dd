use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{
    Address, HealthStatus, Locality, Metadata, Pipe, SocketAddress, address, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::cluster_load_assignment::{
    Policy, policy::DropOverload,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint as XdsEndpoint, LbEndpoint, LedsClusterLocalityConfig,
    LocalityLbEndpoints, lb_endpoint, locality_lb_endpoints,
};
use envoy_types::pb::google::protobuf::{Struct, UInt32Value, Value, value::Kind};

use super::*;

pub(crate) fn socket(host: &str, port: u32) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host.to_owned(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..SocketAddress::default()
        })),
    }
}

pub(crate) fn lb(host: &str, port: u32) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(XdsEndpoint {
            address: Some(socket(host, port)),
            ..XdsEndpoint::default()
        })),
        ..LbEndpoint::default()
    }
}

fn text(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

/// istiod's endpoint metadata: `tlsMode` and `istio.workload`.
pub(crate) fn istio_metadata(tls_mode: &str) -> Metadata {
    let fields = |pairs: &[(&str, &str)]| Struct {
        fields: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), text(v)))
            .collect(),
    };
    Metadata {
        filter_metadata: HashMap::from([
            (
                TRANSPORT_SOCKET_MATCH.to_owned(),
                fields(&[("tlsMode", tls_mode)]),
            ),
            (
                "istio".to_owned(),
                fields(&[("workload", "reviews-v3;default;reviews;v3;Kubernetes")]),
            ),
        ]),
        ..Metadata::default()
    }
}

fn weighted(mut e: LbEndpoint, weight: u32) -> LbEndpoint {
    e.load_balancing_weight = Some(UInt32Value { value: weight });
    e
}

fn with_health(mut e: LbEndpoint, status: HealthStatus) -> LbEndpoint {
    e.health_status = status as i32;
    e
}

pub(crate) fn group(priority: u32, zone: &str, endpoints: Vec<LbEndpoint>) -> LocalityLbEndpoints {
    LocalityLbEndpoints {
        locality: (!zone.is_empty()).then(|| Locality {
            region: "us-east1".to_owned(),
            zone: zone.to_owned(),
            sub_zone: String::new(),
        }),
        lb_endpoints: endpoints,
        load_balancing_weight: Some(UInt32Value { value: 3 }),
        priority,
        ..LocalityLbEndpoints::default()
    }
}

pub(crate) fn cla(groups: Vec<LocalityLbEndpoints>) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: "outbound|9080||reviews.default.svc.cluster.local".to_owned(),
        endpoints: groups,
        policy: Some(Policy {
            overprovisioning_factor: Some(UInt32Value { value: 140 }),
            ..Policy::default()
        }),
        ..ClusterLoadAssignment::default()
    }
}

fn spec(addr: &str, weight: u32, tls: bool, locality: Option<&str>) -> EndpointSpec {
    EndpointSpec {
        address: addr.parse().unwrap(),
        weight,
        tls_mode_istio: tls,
        locality: locality.map(str::to_owned),
    }
}

#[test]
fn istiod_assignment_field_by_field() {
    let mut sidecar = weighted(lb("10.1.0.7", 9080), 2);
    sidecar.metadata = Some(istio_metadata("istio"));
    let mut plain = lb("10.1.0.8", 9080);
    plain.metadata = Some(istio_metadata("disabled"));
    let v6 = with_health(lb("fd00::9", 9080), HealthStatus::Healthy);
    let degraded = with_health(lb("10.1.1.1", 9080), HealthStatus::Degraded);
    let unknown = with_health(lb("10.1.1.2", 9080), HealthStatus::Unknown);
    let input = cla(vec![
        group(0, "us-east1-b", vec![sidecar, plain, v6]),
        group(0, "", vec![degraded, unknown]),
    ]);
    assert_eq!(
        load_assignment(&input).unwrap(),
        vec![
            spec("10.1.0.7:9080", 2, true, Some("us-east1/us-east1-b")),
            spec("10.1.0.8:9080", 1, false, Some("us-east1/us-east1-b")),
            spec("[fd00::9]:9080", 1, false, Some("us-east1/us-east1-b")),
            spec("10.1.1.1:9080", 1, false, None),
            spec("10.1.1.2:9080", 1, false, None),
        ]
    );
}

#[test]
fn unhealthy_draining_and_timed_out_endpoints_are_dropped() {
    let input = cla(vec![group(
        0,
        "a",
        vec![
            with_health(lb("10.0.0.1", 80), HealthStatus::Unhealthy),
            with_health(lb("10.0.0.2", 80), HealthStatus::Draining),
            with_health(lb("10.0.0.3", 80), HealthStatus::Timeout),
            with_health(lb("10.0.0.4", 80), HealthStatus::Healthy),
        ],
    )]);
    let kept: Vec<String> = load_assignment(&input)
        .unwrap()
        .iter()
        .map(|e| e.address.to_string())
        .collect();
    assert_eq!(kept, vec!["10.0.0.4:80"]);
}

#[test]
fn only_the_lowest_priority_with_usable_endpoints_is_kept() {
    let addrs = |c: &ClusterLoadAssignment| -> Vec<String> {
        load_assignment(c)
            .unwrap()
            .iter()
            .map(|e| e.address.to_string())
            .collect()
    };
    // Given out of order; priority 0 wins.
    let input = cla(vec![
        group(1, "b", vec![lb("10.0.1.1", 80)]),
        group(0, "a", vec![lb("10.0.0.1", 80)]),
        group(0, "c", vec![lb("10.0.0.2", 80)]),
        group(2, "d", vec![lb("10.0.2.1", 80)]),
    ]);
    assert_eq!(addrs(&input), vec!["10.0.0.1:80", "10.0.0.2:80"]);
    // Priority 0 has only unhealthy endpoints: Envoy fails over to priority 1.
    let failover = cla(vec![
        group(
            0,
            "a",
            vec![with_health(lb("10.0.0.1", 80), HealthStatus::Unhealthy)],
        ),
        group(1, "b", vec![lb("10.0.1.1", 80), lb("10.0.1.2", 80)]),
    ]);
    assert_eq!(addrs(&failover), vec!["10.0.1.1:80", "10.0.1.2:80"]);
    // Nothing usable at all, or nothing at all.
    let none = cla(vec![group(
        0,
        "a",
        vec![with_health(lb("10.0.0.1", 80), HealthStatus::Draining)],
    )]);
    assert_eq!(addrs(&none), Vec::<String>::new());
    assert_eq!(
        addrs(&ClusterLoadAssignment::default()),
        Vec::<String>::new()
    );
}

#[test]
fn locality_strings_follow_istio() {
    let l = |r: &str, z: &str, s: &str| Locality {
        region: r.into(),
        zone: z.into(),
        sub_zone: s.into(),
    };
    assert_eq!(locality_string(&l("r", "z", "s")).as_deref(), Some("r/z/s"));
    assert_eq!(locality_string(&l("r", "z", "")).as_deref(), Some("r/z"));
    assert_eq!(locality_string(&l("r", "", "")).as_deref(), Some("r"));
    assert_eq!(locality_string(&l("", "z", "")).as_deref(), Some("/z"));
    assert_eq!(locality_string(&l("", "", "")), None);
}

#[test]
fn to_endpoint_copies_every_field() {
    let e = spec("10.0.0.1:80", 5, true, Some("r/z")).to_endpoint();
    assert_eq!(e.address, "10.0.0.1:80".parse().unwrap());
    assert_eq!(e.weight, 5);
    assert!(e.tls_mode_istio);
    assert_eq!(e.locality.as_deref(), Some("r/z"));
    assert_eq!(e.active(), 0);
}

fn refused(input: ClusterLoadAssignment) -> Invalid {
    load_assignment(&input).unwrap_err()
}

fn one(e: LbEndpoint) -> ClusterLoadAssignment {
    cla(vec![group(0, "a", vec![lb("10.0.0.1", 80), e])])
}

fn with_address(a: address::Address) -> LbEndpoint {
    LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(XdsEndpoint {
            address: Some(Address { address: Some(a) }),
            ..XdsEndpoint::default()
        })),
        ..LbEndpoint::default()
    }
}

#[test]
fn refusals_name_the_field() {
    let at = "endpoints[0].lb_endpoints[1]";
    let sa = format!("{at}.endpoint.address.socket_address");
    let mut udp = SocketAddress {
        address: "10.0.0.2".into(),
        port_specifier: Some(socket_address::PortSpecifier::PortValue(53)),
        ..SocketAddress::default()
    };
    udp.protocol = socket_address::Protocol::Udp as i32;
    let named = SocketAddress {
        address: "10.0.0.2".into(),
        port_specifier: Some(socket_address::PortSpecifier::NamedPort("http".into())),
        ..SocketAddress::default()
    };
    let no_port = SocketAddress {
        address: "10.0.0.2".into(),
        ..SocketAddress::default()
    };
    let mut bad_health = lb("10.0.0.2", 80);
    bad_health.health_status = 42;
    let cases: Vec<(ClusterLoadAssignment, String, &str)> = vec![
        (
            one(weighted(lb("10.0.0.2", 80), 0)),
            format!("{at}.load_balancing_weight"),
            "must be at least 1; remove the endpoint, or mark it UNHEALTHY, to send it nothing",
        ),
        (
            one(lb("reviews.default.svc.cluster.local", 80)),
            format!("{sa}.address"),
            "\"reviews.default.svc.cluster.local\" is not an IP address; only STRICT_DNS and \
             LOGICAL_DNS clusters take host names",
        ),
        (one(lb("", 80)), format!("{sa}.address"), "is empty"),
        (
            one(lb("10.0.0.2", 0)),
            format!("{sa}.port_value"),
            "0 is not a port (1-65535)",
        ),
        (
            one(lb("10.0.0.2", 70000)),
            format!("{sa}.port_value"),
            "70000 is not a port (1-65535)",
        ),
        (
            one(with_address(address::Address::SocketAddress(udp))),
            format!("{sa}.protocol"),
            "UDP endpoints are not supported",
        ),
        (
            one(with_address(address::Address::SocketAddress(named))),
            format!("{sa}.named_port"),
            "named port \"http\" is not supported; give port_value",
        ),
        (
            one(with_address(address::Address::SocketAddress(no_port))),
            format!("{sa}.port_value"),
            "is missing; endpoints need a port",
        ),
        (
            one(with_address(address::Address::Pipe(Pipe {
                path: "/tmp/s".into(),
                mode: 0,
            }))),
            format!("{at}.endpoint.address.pipe"),
            "Unix-socket endpoints are not supported; give an IP address and port",
        ),
        (
            one(LbEndpoint::default()),
            format!("{at}.endpoint"),
            "is missing; give the endpoint's address",
        ),
        (
            one(LbEndpoint {
                host_identifier: Some(
                    lb_endpoint::HostIdentifier::Endpoint(XdsEndpoint::default()),
                ),
                ..LbEndpoint::default()
            }),
            format!("{at}.endpoint.address"),
            "is missing; give a socket_address",
        ),
        (
            one(LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::EndpointName("ep".into())),
                ..LbEndpoint::default()
            }),
            format!("{at}.endpoint_name"),
            "named endpoints are not supported; give the endpoint's address",
        ),
        (
            one(bad_health),
            format!("{at}.health_status"),
            "42 is not a known health status",
        ),
        (
            ClusterLoadAssignment {
                named_endpoints: HashMap::from([("ep".to_owned(), XdsEndpoint::default())]),
                ..ClusterLoadAssignment::default()
            },
            "named_endpoints".to_owned(),
            "named endpoints are not supported; list each endpoint with its address",
        ),
        (
            ClusterLoadAssignment {
                policy: Some(Policy {
                    drop_overloads: vec![DropOverload {
                        category: "throttle".into(),
                        drop_percentage: None,
                    }],
                    ..Policy::default()
                }),
                ..ClusterLoadAssignment::default()
            },
            "policy.drop_overloads".to_owned(),
            "Skiff does not drop a share of the requests; remove drop_overloads",
        ),
        (
            cla(vec![
                group(0, "a", vec![]),
                LocalityLbEndpoints {
                    lb_config: Some(locality_lb_endpoints::LbConfig::LedsClusterLocalityConfig(
                        LedsClusterLocalityConfig::default(),
                    )),
                    ..LocalityLbEndpoints::default()
                },
            ]),
            "endpoints[1]".to_owned(),
            "LEDS (leds_cluster_locality_config, load_balancer_endpoints) is not supported; \
             list the endpoints in lb_endpoints",
        ),
    ];
    for (input, field, reason) in cases {
        assert_eq!(refused(input), Invalid::new(field, reason));
    }
}

#[test]
fn unused_endpoints_are_validated_too() {
    // A mistake in a lower-preference priority is still reported.
    let input = cla(vec![
        group(0, "a", vec![lb("10.0.0.1", 80)]),
        group(1, "b", vec![weighted(lb("10.0.1.1", 80), 0)]),
    ]);
    assert_eq!(
        refused(input).field,
        "endpoints[1].lb_endpoints[0].load_balancing_weight"
    );
}

#[test]
fn dns_hosts_are_kept_as_names() {
    let input = cla(vec![group(
        0,
        "",
        vec![weighted(lb("api.example.com", 443), 4)],
    )]);
    let kept = kept_endpoints(&input, |h| Ok(h.to_owned())).unwrap();
    assert_eq!(
        kept,
        vec![Kept {
            host: "api.example.com".to_owned(),
            port: 443,
            weight: 4,
            tls_mode_istio: false,
            locality: None,
        }]
    );
}
