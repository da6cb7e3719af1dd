//! Expected values come from spec/injector.md section 3 (what each annotation means and
//! its defaults), from the grammars Istio validates with (Go's `netip.ParsePrefix`,
//! `strconv.ParseUint`, `strconv.ParseBool`, Istio's interface-name rule and log levels),
//! from the Kubernetes quantity grammar, and from the list rules in the module docs.

use std::net::IpAddr;

use serde_json::json;

use super::*;

fn map(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn one(key: &str, value: &str) -> Result<PodOverrides, AnnotationError> {
    parse(&map(&[(key, value)]))
}

/// Each valid case is compared with the whole `PodOverrides`, so a case also checks that
/// an annotation sets only its own field.
fn check_valid(cases: Vec<(&str, &str, PodOverrides)>) {
    for (key, value, expected) in cases {
        match one(key, value) {
            Ok(got) => assert_eq!(got, expected, "{key}={value:?}"),
            Err(e) => panic!("{key}={value:?} should be accepted, got: {e}"),
        }
    }
}

/// Each invalid case names the annotation, quotes the value and contains `fragment`.
fn check_invalid(cases: &[(&str, &str, &str)]) {
    for (key, value, fragment) in cases {
        match one(key, value) {
            Ok(got) => panic!("{key}={value:?} should be refused, got {got:?}"),
            Err(e) => {
                assert_eq!(e.key, *key);
                assert_eq!(e.value, *value);
                let message = e.to_string();
                if value.chars().count() <= SHOWN_VALUE_CHARS {
                    let head = format!("annotation {key}: {value:?} ");
                    assert!(message.starts_with(&head), "{message}");
                }
                assert!(message.contains(fragment), "{key}={value:?}: {message}");
            }
        }
    }
}

fn cidr(addr: &str, prefix: u8) -> Cidr {
    Cidr {
        addr: addr.parse::<IpAddr>().expect("test address"),
        prefix,
    }
}

fn none() -> PodOverrides {
    PodOverrides::default()
}

fn q(text: &str) -> Quantity {
    text.parse().expect("test quantity")
}

#[test]
fn outbound_ip_ranges() {
    use CaptureSet::{All, Nothing, Only};
    let include = |set| PodOverrides {
        include_outbound_ip_ranges: Some(set),
        ..none()
    };
    let exclude = |list| PodOverrides {
        exclude_outbound_ip_ranges: Some(list),
        ..none()
    };
    let inc = key::INCLUDE_OUTBOUND_IP_RANGES;
    let exc = key::EXCLUDE_OUTBOUND_IP_RANGES;
    check_valid(vec![
        (inc, "*", include(All)),
        (inc, "", include(Nothing)),
        (inc, ",", include(Nothing)),
        (inc, "10.0.0.0/8", include(Only(vec![cidr("10.0.0.0", 8)]))),
        (
            inc,
            "192.168.0.0/16,10.0.0.0/8",
            include(Only(vec![cidr("192.168.0.0", 16), cidr("10.0.0.0", 8)])),
        ),
        (
            inc,
            "10.96.0.0/12, fd00:10:96::/112",
            include(Only(vec![cidr("10.96.0.0", 12), cidr("fd00:10:96::", 112)])),
        ),
        (
            inc,
            "10.0.0.0/8,,172.16.0.0/12,",
            include(Only(vec![cidr("10.0.0.0", 8), cidr("172.16.0.0", 12)])),
        ),
        (inc, "0.0.0.0/0", include(Only(vec![cidr("0.0.0.0", 0)]))),
        (inc, "::/0", include(Only(vec![cidr("::", 0)]))),
        (
            inc,
            "2001:db8::1/128",
            include(Only(vec![cidr("2001:db8::1", 128)])),
        ),
        (
            inc,
            "10.1.2.3/32",
            include(Only(vec![cidr("10.1.2.3", 32)])),
        ),
        // netip.ParsePrefix keeps host bits.
        (inc, "10.1.2.3/8", include(Only(vec![cidr("10.1.2.3", 8)]))),
        (
            inc,
            "::ffff:10.0.0.0/104",
            include(Only(vec![cidr("::ffff:10.0.0.0", 104)])),
        ),
        (exc, "", exclude(vec![])),
        (
            exc,
            "169.254.169.254/32",
            exclude(vec![cidr("169.254.169.254", 32)]),
        ),
        (
            exc,
            "fe80::/10,10.0.0.1/32",
            exclude(vec![cidr("fe80::", 10), cidr("10.0.0.1", 32)]),
        ),
    ]);
    check_invalid(&[
        (
            inc,
            "10.0.0.0",
            "is not \"*\" or a CIDR list: \"10.0.0.0\" is not a CIDR (write address/prefix",
        ),
        (
            inc,
            "10.0.0.0/33",
            "the prefix length \"33\" must be a number from 0 to 32 for IPv4",
        ),
        (
            inc,
            "fd00::/129",
            "the prefix length \"129\" must be a number from 0 to 128 for IPv6",
        ),
        (
            inc,
            "10.0.0.256/8",
            "\"10.0.0.256\" is not an IPv4 or IPv6 address",
        ),
        (
            inc,
            "010.0.0.0/8",
            "\"010.0.0.0\" is not an IPv4 or IPv6 address",
        ),
        (inc, "10.0.0/8", "\"10.0.0\" is not an IPv4 or IPv6 address"),
        (
            inc,
            "fe80::1%eth0/64",
            "\"fe80::1%eth0\" is not an IPv4 or IPv6 address",
        ),
        (inc, "10.0.0.0/+8", "the prefix length \"+8\""),
        (inc, "10.0.0.0/08", "the prefix length \"08\""),
        (inc, "10.0.0.0/-1", "the prefix length \"-1\""),
        (inc, "10.0.0.0/", "the prefix length \"\""),
        (
            inc,
            "10.0.0.0/8/8",
            "\"10.0.0.0/8\" is not an IPv4 or IPv6 address",
        ),
        (
            inc,
            "*,10.0.0.0/8",
            "is not \"*\" or a CIDR list: \"*\" is not a CIDR",
        ),
        (inc, " * ", "\"*\" is not a CIDR"),
        (inc, "10.0.0.0/8,bogus", "\"bogus\" is not a CIDR"),
        (exc, "*", "is not a CIDR list: \"*\" is not a CIDR"),
        // Like Go's ParsePrefix, the prefix length follows the last '/'.
        (
            exc,
            "10.0.0.0/8 192.168.0.0/16",
            "\"10.0.0.0/8 192.168.0.0\" is not an IPv4 or IPv6 address",
        ),
    ]);
}

#[test]
fn port_lists() {
    use CaptureSet::{All, Nothing, Only};
    let include_in = |set| PodOverrides {
        include_inbound_ports: Some(set),
        ..none()
    };
    let exclude_in = |list| PodOverrides {
        exclude_inbound_ports: Some(list),
        ..none()
    };
    let include_out = |list| PodOverrides {
        include_outbound_ports: Some(list),
        ..none()
    };
    let exclude_out = |list| PodOverrides {
        exclude_outbound_ports: Some(list),
        ..none()
    };
    let b = key::INCLUDE_INBOUND_PORTS;
    let d = key::EXCLUDE_INBOUND_PORTS;
    let q = key::INCLUDE_OUTBOUND_PORTS;
    let o = key::EXCLUDE_OUTBOUND_PORTS;
    check_valid(vec![
        (b, "*", include_in(All)),
        (b, "", include_in(Nothing)),
        (b, "9080", include_in(Only(vec![9080]))),
        (b, "8080,80", include_in(Only(vec![8080, 80]))),
        (b, " 80 , 443 ", include_in(Only(vec![80, 443]))),
        (d, "", exclude_in(vec![])),
        (d, "1,65535", exclude_in(vec![1, 65535])),
        (d, "80,,443,", exclude_in(vec![80, 443])),
        (d, "080", exclude_in(vec![80])),
        (d, "3306,3306", exclude_in(vec![3306, 3306])),
        (q, "", include_out(vec![])),
        (q, "443,80", include_out(vec![443, 80])),
        (o, "", exclude_out(vec![])),
        (o, "5432, 6379", exclude_out(vec![5432, 6379])),
    ]);
    check_invalid(&[
        (
            d,
            "80,http",
            "is not a port list: \"http\" is not a port (1-65535)",
        ),
        (d, "0", "\"0\" is not a port (1-65535)"),
        (d, "65536", "\"65536\" is not a port (1-65535)"),
        (d, "-1", "\"-1\" is not a port"),
        (d, "+80", "\"+80\" is not a port"),
        (d, "0x10", "\"0x10\" is not a port"),
        (d, "80 443", "\"80 443\" is not a port"),
        (d, "*", "is not a port list: \"*\" is not a port"),
        (
            b,
            "80,*",
            "is not \"*\" or a port list: \"*\" is not a port (1-65535)",
        ),
        (b, "http", "is not \"*\" or a port list"),
        (q, "1-1024", "is not a port list: \"1-1024\" is not a port"),
        (o, "99999999999999999999", "is not a port list"),
    ]);
    // The exact wording the brief gives as the model message.
    assert_eq!(
        one(d, "80,http").unwrap_err().to_string(),
        "annotation traffic.sidecar.istio.io/excludeInboundPorts: \"80,http\" is not a port \
         list: \"http\" is not a port (1-65535)"
    );
}

#[test]
fn interface_lists() {
    let exclude = |list: &[&str]| PodOverrides {
        exclude_interfaces: Some(list.iter().map(|s| (*s).to_owned()).collect()),
        ..none()
    };
    let c = key::EXCLUDE_INTERFACES;
    check_valid(vec![
        (c, "", exclude(&[])),
        (c, "eth1", exclude(&["eth1"])),
        (c, "net1, eth0", exclude(&["net1", "eth0"])),
        (c, "veth-a.1_b", exclude(&["veth-a.1_b"])),
        (c, "abcdefghijklmno", exclude(&["abcdefghijklmno"])),
        (c, "eth0,,", exclude(&["eth0"])),
    ]);
    let fragment = "is not an interface name (a letter, then letters, digits, '_', '.' or '-'; \
                    at most 15 characters)";
    check_invalid(&[
        (c, "abcdefghijklmnop", fragment),
        (c, "0eth", "\"0eth\" is not an interface name"),
        (c, "eth 0", "\"eth 0\" is not an interface name"),
        (c, "eth+", "\"eth+\" is not an interface name"),
        (c, "eth0,-x", "\"-x\" is not an interface name"),
        (c, "éth0", "\"éth0\" is not an interface name"),
        (
            key::KUBEVIRT_INTERFACES,
            "net/1",
            "is not an interface list",
        ),
        (
            key::REROUTE_VIRTUAL_INTERFACES,
            "net:1",
            "is not an interface list",
        ),
    ]);
}

#[test]
fn reroute_virtual_interfaces_beats_kubevirt_interfaces() {
    let reroute = key::REROUTE_VIRTUAL_INTERFACES;
    let kubevirt = key::KUBEVIRT_INTERFACES;
    let names = |list: &[&str]| Some(list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
    type Case<'a> = (Vec<(&'a str, &'a str)>, Option<Vec<String>>);
    let cases: Vec<Case> = vec![
        (vec![], None),
        (vec![(kubevirt, "net1")], names(&["net1"])),
        (vec![(reroute, "net2,net3")], names(&["net2", "net3"])),
        (
            vec![(kubevirt, "net1"), (reroute, "net2")],
            names(&["net2"]),
        ),
        // Istio's template checks presence: an empty new annotation still wins.
        (vec![(kubevirt, "net1"), (reroute, "")], names(&[])),
        (vec![(kubevirt, ""), (reroute, "net2")], names(&["net2"])),
    ];
    for (pairs, expected) in cases {
        let got = parse(&map(&pairs)).expect("valid");
        assert_eq!(got.reroute_virtual_interfaces, expected, "{pairs:?}");
    }
    // The deprecated annotation is still validated when the new one wins, as in Istio.
    let err = parse(&map(&[(kubevirt, "bad name"), (reroute, "net2")])).unwrap_err();
    assert_eq!(err.key, kubevirt);
}

#[test]
fn interception_mode() {
    let mode = |m| PodOverrides {
        interception_mode: Some(m),
        ..none()
    };
    let k = key::INTERCEPTION_MODE;
    check_valid(vec![
        (k, "REDIRECT", mode(InterceptionMode::Redirect)),
        (k, "TPROXY", mode(InterceptionMode::Tproxy)),
        (k, "NONE", mode(InterceptionMode::None)),
    ]);
    let allowed = "is not an interception mode: use REDIRECT, TPROXY or NONE";
    check_invalid(&[
        (k, "redirect", allowed),
        (k, "", allowed),
        (k, "REDIRECT ", allowed),
        (k, "ISTIO", allowed),
    ]);
    assert_eq!(InterceptionMode::Tproxy.as_str(), "TPROXY");
}

#[test]
fn booleans() {
    let native = |b| PodOverrides {
        native_sidecar: Some(b),
        ..none()
    };
    let cap = |b| PodOverrides {
        cap_net_bind_service: Some(b),
        ..none()
    };
    let rewrite = |b| PodOverrides {
        rewrite_app_http_probers: Some(b),
        ..none()
    };
    let merge = |b| PodOverrides {
        merge_metrics: Some(b),
        ..none()
    };
    let mut valid = vec![
        (key::NATIVE_SIDECAR, "true", native(true)),
        (key::NATIVE_SIDECAR, "false", native(false)),
        (key::CAP_NET_BIND_SERVICE, "true", cap(true)),
        (key::CAP_NET_BIND_SERVICE, "false", cap(false)),
    ];
    // Go's strconv.ParseBool, value by value.
    for t in ["1", "t", "T", "TRUE", "true", "True"] {
        valid.push((key::REWRITE_APP_HTTP_PROBERS, t, rewrite(true)));
        valid.push((key::MERGE_METRICS, t, merge(true)));
    }
    for f in ["0", "f", "F", "FALSE", "false", "False"] {
        valid.push((key::REWRITE_APP_HTTP_PROBERS, f, rewrite(false)));
        valid.push((key::MERGE_METRICS, f, merge(false)));
    }
    check_valid(valid);

    let strict = "is not a boolean: use true or false";
    let go = "is not a boolean: use one of 1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False";
    let mut invalid = vec![];
    for key in [key::NATIVE_SIDECAR, key::CAP_NET_BIND_SERVICE] {
        for value in ["True", "TRUE", "1", "0", "yes", "", " true"] {
            invalid.push((key, value, strict));
        }
    }
    for key in [key::REWRITE_APP_HTTP_PROBERS, key::MERGE_METRICS] {
        for value in ["yes", "no", "on", "off", "tRUE", "", "2", " true", "true "] {
            invalid.push((key, value, go));
        }
    }
    check_invalid(&invalid);
}

#[test]
fn log_levels() {
    let level = |l| PodOverrides {
        log_level: Some(l),
        ..none()
    };
    let components = |list: Vec<(&str, ProxyLogLevel)>| PodOverrides {
        component_log_level: Some(
            list.into_iter()
                .map(|(c, level)| ComponentLogLevel {
                    component: c.to_owned(),
                    level,
                })
                .collect(),
        ),
        ..none()
    };
    let agent = |list: Vec<(&str, AgentLogLevel)>| PodOverrides {
        agent_log_level: Some(
            list.into_iter()
                .map(|(s, level)| ScopedLogLevel {
                    scope: s.to_owned(),
                    level,
                })
                .collect(),
        ),
        ..none()
    };
    use AgentLogLevel as A;
    use ProxyLogLevel as P;
    let l = key::LOG_LEVEL;
    let c = key::COMPONENT_LOG_LEVEL;
    let a = key::AGENT_LOG_LEVEL;
    check_valid(vec![
        (l, "trace", level(P::Trace)),
        (l, "debug", level(P::Debug)),
        (l, "info", level(P::Info)),
        (l, "warning", level(P::Warning)),
        (l, "error", level(P::Error)),
        (l, "critical", level(P::Critical)),
        (l, "off", level(P::Off)),
        (c, "misc:error", components(vec![("misc", P::Error)])),
        (
            c,
            "upstream:debug, ext_authz:trace",
            components(vec![("upstream", P::Debug), ("ext_authz", P::Trace)]),
        ),
        (c, "", components(vec![])),
        (a, "default:info", agent(vec![("default", A::Info)])),
        (a, "debug", agent(vec![("default", A::Debug)])),
        (
            a,
            "default:warn,ads:debug,xdsproxy:none",
            agent(vec![
                ("default", A::Warn),
                ("ads", A::Debug),
                ("xdsproxy", A::None),
            ]),
        ),
        (a, "cache:fatal,", agent(vec![("cache", A::Fatal)])),
    ]);
    let proxy_levels = "use one of trace, debug, info, warning, error, critical, off";
    let agent_levels = "use one of debug, info, warn, error, fatal, none";
    check_invalid(&[
        (l, "warn", proxy_levels),
        (l, "WARNING", proxy_levels),
        (l, "", proxy_levels),
        (l, "info ", proxy_levels),
        (
            c,
            "misc",
            "is not a component log level list: \"misc\" is not component:level",
        ),
        (c, ":error", "\":error\" is not component:level"),
        (c, "misc:warn", "\"warn\" in \"misc:warn\" is not a level"),
        (
            c,
            "misc:error,upstream",
            "\"upstream\" is not component:level",
        ),
        (
            c,
            "misc:error:x",
            "\"error:x\" in \"misc:error:x\" is not a level",
        ),
        (a, "default:warning", agent_levels),
        (a, "default:trace", agent_levels),
        (a, "verbose", agent_levels),
        (a, "", "is not an agent log level list: it is empty"),
        (a, ",", "it is empty"),
        (a, ":info", "\":info\" is not scope:level"),
        (a, "a:b:c", "\"b:c\" in \"a:b:c\" is not a level"),
    ]);
    assert_eq!(
        ComponentLogLevel {
            component: "misc".into(),
            level: P::Error
        }
        .to_string(),
        "misc:error"
    );
    assert_eq!(
        ScopedLogLevel {
            scope: "default".into(),
            level: A::Info
        }
        .to_string(),
        "default:info"
    );
}

#[test]
fn proxy_image_and_type() {
    let image = |i: &str| PodOverrides {
        proxy_image: Some(i.to_owned()),
        ..none()
    };
    let kind = |t| PodOverrides {
        proxy_image_type: Some(t),
        ..none()
    };
    let i = key::PROXY_IMAGE;
    let t = key::PROXY_IMAGE_TYPE;
    check_valid(vec![
        (
            i,
            "docker.io/skiff/proxy:1.0",
            image("docker.io/skiff/proxy:1.0"),
        ),
        (i, "localhost:5000/proxy", image("localhost:5000/proxy")),
        // Without "/" the annotation is not used (spec section 3).
        (i, "proxyv2:1.20", none()),
        (i, "", none()),
        (t, "debug", kind(ImageType::Debug)),
        (t, "distroless", kind(ImageType::Distroless)),
        (t, "default", kind(ImageType::Default)),
    ]);
    check_invalid(&[
        (
            i,
            "docker.io/skiff/proxy :1.0",
            "is not an image reference: it contains whitespace",
        ),
        (i, "docker.io/skiff/proxy\n", "contains whitespace"),
        (
            t,
            "DEBUG",
            "is not an image type: use debug, distroless or default",
        ),
        (t, "", "use debug, distroless or default"),
        (t, "alpine", "use debug, distroless or default"),
    ]);
}

#[test]
fn quantity_grammar() {
    let valid = [
        "0",
        "1",
        "100",
        "100m",
        "0.5",
        "1.",
        ".5",
        "+1",
        "-0",
        "-0.0",
        "1.5Gi",
        "128Mi",
        "1n",
        "1u",
        "1m",
        "1k",
        "1M",
        "1G",
        "1T",
        "1P",
        "1E",
        "1Ki",
        "1Mi",
        "1Gi",
        "1Ti",
        "1Pi",
        "1Ei",
        "1e3",
        "1E3",
        "1e-3",
        "1E+3",
        "1.5e3",
        "1e0",
        "1e309",
        "1e2147483647",
        "1e-2147483648",
        "007",
        "1.G",
    ];
    for text in valid {
        let parsed = text.parse::<Quantity>();
        assert_eq!(parsed.as_ref().map(Quantity::as_str), Ok(text), "{text}");
    }
    let no_digits = QuantityError::NoDigits;
    let suffix = |s: &str| QuantityError::UnknownSuffix {
        suffix: s.to_owned(),
    };
    let exponent = |s: &str| QuantityError::BadExponent {
        exponent: s.to_owned(),
    };
    let invalid = [
        ("", QuantityError::Empty),
        ("-", no_digits.clone()),
        ("+", no_digits.clone()),
        (".", no_digits.clone()),
        ("-.", no_digits.clone()),
        ("m", no_digits.clone()),
        ("Mi", no_digits.clone()),
        (" 1", no_digits.clone()),
        ("--1", no_digits.clone()),
        ("\u{0661}", no_digits),
        ("1K", suffix("K")),
        ("1mi", suffix("mi")),
        ("1MI", suffix("MI")),
        ("1Kib", suffix("Kib")),
        ("1 Mi", suffix(" Mi")),
        ("1 ", suffix(" ")),
        ("1e", suffix("e")),
        ("0x10", suffix("x10")),
        ("1..0", suffix(".0")),
        ("1.2.3", suffix(".3")),
        ("1e3Mi", exponent("3Mi")),
        ("1e1.5", exponent("1.5")),
        ("1e+", exponent("+")),
        ("1e--1", exponent("--1")),
        ("1e2147483648", exponent("2147483648")),
        ("1e-2147483649", exponent("-2147483649")),
    ];
    for (text, expected) in invalid {
        assert_eq!(text.parse::<Quantity>(), Err(expected), "{text:?}");
    }
    for (text, negative) in [
        ("-1", true),
        ("-.5", true),
        ("-0.001", true),
        ("-1e-3", true),
        ("-0", false),
        ("-0.0", false),
        ("-0e5", false),
        ("0", false),
        ("+1", false),
        ("1", false),
    ] {
        assert_eq!(q(text).is_negative(), negative, "{text}");
    }
}

#[test]
fn resources() {
    let k = |cpu: Option<&str>, mem: Option<&str>, cpu_l: Option<&str>, mem_l: Option<&str>| {
        PodOverrides {
            resources: ResourceOverrides {
                cpu_request: cpu.map(q),
                memory_request: mem.map(q),
                cpu_limit: cpu_l.map(q),
                memory_limit: mem_l.map(q),
            },
            ..none()
        }
    };
    check_valid(vec![
        (key::PROXY_CPU, "100m", k(Some("100m"), None, None, None)),
        (
            key::PROXY_MEMORY,
            "128Mi",
            k(None, Some("128Mi"), None, None),
        ),
        (key::PROXY_CPU_LIMIT, "2", k(None, None, Some("2"), None)),
        (
            key::PROXY_MEMORY_LIMIT,
            "1Gi",
            k(None, None, None, Some("1Gi")),
        ),
        (key::PROXY_CPU, "0", k(Some("0"), None, None, None)),
    ]);
    let all = parse(&map(&[
        (key::PROXY_CPU, "100m"),
        (key::PROXY_MEMORY, "128Mi"),
        (key::PROXY_CPU_LIMIT, "2"),
        (key::PROXY_MEMORY_LIMIT, "1Gi"),
    ]))
    .expect("valid");
    assert_eq!(all, k(Some("100m"), Some("128Mi"), Some("2"), Some("1Gi")));
    assert!(all.resources.is_set());
    assert!(!none().resources.is_set());
    assert!(
        one(key::PROXY_MEMORY_LIMIT, "1Gi")
            .unwrap()
            .resources
            .is_set()
    );
    check_invalid(&[
        (
            key::PROXY_CPU,
            "1 core",
            "is not a Kubernetes quantity: \" core\" is not a suffix",
        ),
        (key::PROXY_MEMORY, "128MB", "\"MB\" is not a suffix"),
        (
            key::PROXY_MEMORY,
            "",
            "is not a Kubernetes quantity: it is empty",
        ),
        (
            key::PROXY_CPU_LIMIT,
            "-1",
            "is not a resource amount: it is negative",
        ),
        (key::PROXY_MEMORY_LIMIT, "-1Gi", "it is negative"),
        (
            key::PROXY_CPU,
            "1e1.5",
            "the exponent \"1.5\" is not a whole number",
        ),
    ]);
}

#[test]
fn status_port_and_readiness() {
    let port = |p| PodOverrides {
        status_port: Some(p),
        ..none()
    };
    let delay = |n| PodOverrides {
        readiness_initial_delay_seconds: Some(n),
        ..none()
    };
    let period = |n| PodOverrides {
        readiness_period_seconds: Some(n),
        ..none()
    };
    let threshold = |n| PodOverrides {
        readiness_failure_threshold: Some(n),
        ..none()
    };
    let s = key::STATUS_PORT;
    let (i, p, f) = (
        key::READINESS_INITIAL_DELAY_SECONDS,
        key::READINESS_PERIOD_SECONDS,
        key::READINESS_FAILURE_THRESHOLD,
    );
    check_valid(vec![
        (s, "15020", port(15020)),
        (s, "0", port(0)),
        (s, "65535", port(65535)),
        (s, " 15021 ", port(15021)),
        (i, "0", delay(0)),
        (i, "4294967295", delay(u32::MAX)),
        (p, "15", period(15)),
        (p, "007", period(7)),
        (f, "4", threshold(4)),
    ]);
    let port_msg = "is not a status port: use 1-65535, or 0 for no proxy probes";
    let uint_msg = "is not a whole number from 0 to 4294967295";
    check_invalid(&[
        (s, "65536", port_msg),
        (s, "-1", port_msg),
        (s, "+1", port_msg),
        (s, "", port_msg),
        (s, "http", port_msg),
        (s, "15020,15021", port_msg),
        (i, "4294967296", uint_msg),
        (i, "-1", uint_msg),
        (p, "+1", uint_msg),
        (p, "", uint_msg),
        (f, "1.5", uint_msg),
        (f, " 4", uint_msg),
        (f, "0x10", uint_msg),
    ]);
}

#[test]
fn bootstrap_override() {
    let name = |n: &str| PodOverrides {
        bootstrap_override: Some(n.to_owned()),
        ..none()
    };
    let k = key::BOOTSTRAP_OVERRIDE;
    let long_part = "a".repeat(100);
    let longest = [
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61),
    ]
    .join(".");
    assert_eq!(longest.len(), 253);
    check_valid(vec![
        (k, "my-bootstrap", name("my-bootstrap")),
        (k, "custom.bootstrap.v1", name("custom.bootstrap.v1")),
        (k, "0", name("0")),
        (k, &long_part, name(&long_part)),
        (k, &longest, name(&longest)),
    ]);
    let too_long = format!("{longest}e");
    let allowed = "is not a ConfigMap name: use lowercase letters, digits, '-' and '.', starting \
                   and ending with a letter or digit, at most 253 characters";
    check_invalid(&[
        (k, "", allowed),
        (k, "My-Config", allowed),
        (k, "-config", allowed),
        (k, "config-", allowed),
        (k, "a..b", allowed),
        (k, ".a", allowed),
        (k, "my_config", allowed),
        (k, &too_long, allowed),
    ]);
}

#[test]
fn user_volumes_and_mounts() {
    let volumes = |v: Value| PodOverrides {
        user_volumes: Some(v.as_object().expect("object").clone().into_iter().collect()),
        ..none()
    };
    let mounts = |v: Value| PodOverrides {
        user_volume_mounts: Some(v.as_object().expect("object").clone().into_iter().collect()),
        ..none()
    };
    let v = key::USER_VOLUME;
    let m = key::USER_VOLUME_MOUNT;
    check_valid(vec![
        (
            v,
            r#"{"certs": {"secret": {"secretName": "my-certs"}}}"#,
            volumes(json!({"certs": {"secret": {"secretName": "my-certs"}}})),
        ),
        (
            v,
            r#"{"a": {"emptyDir": {}}, "b-2": {"configMap": {"name": "x"}}}"#,
            volumes(json!({"a": {"emptyDir": {}}, "b-2": {"configMap": {"name": "x"}}})),
        ),
        (v, "{}", volumes(json!({}))),
        (
            m,
            r#"{"certs": {"mountPath": "/etc/certs", "readOnly": true}}"#,
            mounts(json!({"certs": {"mountPath": "/etc/certs", "readOnly": true}})),
        ),
    ]);
    check_invalid(&[
        (v, "", "is not a JSON object of volumes"),
        (v, "{", "is not a JSON object of volumes"),
        (
            v,
            "[]",
            "is not a JSON object of volumes (e.g. {\"name\": {...}}): it is a list",
        ),
        (v, "\"certs\"", "it is a string"),
        (v, "null", "it is null"),
        (v, "42", "it is a number"),
        (
            v,
            r#"{"certs": "my-certs"}"#,
            "the entry \"certs\" is a string, not an object",
        ),
        (
            v,
            r#"{"certs": null}"#,
            "the entry \"certs\" is null, not an object",
        ),
        (v, r#"{"Certs": {}}"#, "\"Certs\" is not a volume name"),
        (v, r#"{"": {}}"#, "\"\" is not a volume name"),
        (m, "[1]", "is not a JSON object of volume mounts"),
        (
            m,
            r#"{"certs": ["/etc/certs"]}"#,
            "the entry \"certs\" is a list, not an object",
        ),
        (m, "{'certs': {}}", "is not a JSON object of volume mounts"),
    ]);
}

#[test]
fn proxy_config() {
    let config = |v: Value| PodOverrides {
        proxy_config: Some(v.as_object().expect("object").clone().into_iter().collect()),
        ..none()
    };
    let k = key::PROXY_CONFIG;
    let hold = json!({"holdApplicationUntilProxyStarts": true});
    check_valid(vec![
        (
            k,
            "holdApplicationUntilProxyStarts: true",
            config(hold.clone()),
        ),
        (
            k,
            r#"{"holdApplicationUntilProxyStarts": true}"#,
            config(hold),
        ),
        (
            k,
            "proxyMetadata:\n  ISTIO_META_DNS_CAPTURE: \"true\"\nconcurrency: 2\n",
            config(json!({"proxyMetadata": {"ISTIO_META_DNS_CAPTURE": "true"}, "concurrency": 2})),
        ),
        (k, "", config(json!({}))),
        (k, "  \n", config(json!({}))),
        (k, "null", config(json!({}))),
        (k, "{}", config(json!({}))),
    ]);
    check_invalid(&[
        (
            k,
            "- concurrency: 2",
            "is not a ProxyConfig: it must be a mapping of ProxyConfig fields",
        ),
        (k, "[]", "not a list"),
        (k, "just words", "not a string"),
        (k, "42", "not a number"),
        (k, "concurrency: [", "is not a ProxyConfig in YAML or JSON"),
        (k, "a: 1\n---\nb: 2", "is not a ProxyConfig in YAML or JSON"),
        (k, "a: *missing", "is not a ProxyConfig in YAML or JSON"),
    ]);
}

#[test]
fn oversized_and_deeply_nested_values_are_refused_early() {
    let limit = MAX_VALUE_BYTES;
    let longest_image = format!("registry.example/{}", "p".repeat(limit - 17));
    assert_eq!(longest_image.len(), limit);
    assert_eq!(
        one(key::PROXY_IMAGE, &longest_image).unwrap().proxy_image,
        Some(longest_image.clone())
    );
    let fragment =
        "is longer than the 256 KiB Kubernetes allows for all of a pod's annotations together";
    for name in [
        key::PROXY_IMAGE,
        key::PROXY_CONFIG,
        key::EXCLUDE_INBOUND_PORTS,
    ] {
        let value = format!("{longest_image}p");
        let err = one(name, &value).unwrap_err();
        assert!(err.to_string().ends_with(fragment), "{err}");
    }
    // Only honoured annotations are checked; the API server judges the others.
    let other = "x".repeat(limit + 1);
    assert_eq!(one("example.com/big", &other), Ok(none()));

    let k = key::PROXY_CONFIG;
    let depth = MAX_PROXY_CONFIG_DEPTH;
    let nested = |n: usize| format!("a: {}{}", "[".repeat(n), "]".repeat(n));
    let mut deepest = json!([]);
    for _ in 1..depth {
        deepest = json!([deepest]);
    }
    check_valid(vec![(k, &nested(depth), {
        let v = json!({ "a": deepest });
        PodOverrides {
            proxy_config: Some(v.as_object().unwrap().clone().into_iter().collect()),
            ..none()
        }
    })]);
    let brackets = "[".repeat(depth + 1);
    let quoted = format!("a: \"{brackets}\"\nb: '{brackets}'\n# {brackets}\n");
    let parsed = one(k, &quoted).unwrap().proxy_config.unwrap();
    assert_eq!(parsed.get("a"), Some(&json!(brackets)));
    assert_eq!(parsed.get("b"), Some(&json!(brackets)));
    let deep = "is not a ProxyConfig: it nests [ and { more than 64 levels deep";
    check_invalid(&[
        (k, &nested(depth + 1), deep),
        (k, &"{".repeat(100_000), deep),
        (k, &"{\"a\":".repeat(depth + 1), deep),
        (k, &format!("a: {}", "[x, ".repeat(depth + 1)), deep),
    ]);
}

#[test]
fn other_annotations_are_ignored() {
    let pod = map(&[
        ("sidecar.istio.io/inject", "maybe"),
        ("sidecar.istio.io/status", "{not json"),
        ("proxy.istio.io/overrides", "{not json"),
        ("inject.istio.io/templates", "!!"),
        ("prometheus.io/port", "http"),
        ("sidecar.istio.io/statsInclusionPrefixes", "x"),
        ("kubectl.kubernetes.io/default-container", ""),
        (
            "traffic.sidecar.istio.io/includeinboundports",
            "not checked: keys are case-sensitive",
        ),
        ("example.com/anything", "\u{0}"),
    ]);
    assert_eq!(parse(&pod), Ok(none()));
    assert_eq!(parse(&Labels::new()), Ok(none()));
}

#[test]
fn several_annotations_together() {
    let pod = map(&[
        (key::INCLUDE_OUTBOUND_IP_RANGES, "10.96.0.0/12"),
        (key::EXCLUDE_INBOUND_PORTS, "9090"),
        (key::INTERCEPTION_MODE, "TPROXY"),
        (key::NATIVE_SIDECAR, "false"),
        (key::STATUS_PORT, "0"),
        (key::LOG_LEVEL, "debug"),
        ("app", "reviews"),
    ]);
    let expected = PodOverrides {
        include_outbound_ip_ranges: Some(CaptureSet::Only(vec![cidr("10.96.0.0", 12)])),
        exclude_inbound_ports: Some(vec![9090]),
        interception_mode: Some(InterceptionMode::Tproxy),
        native_sidecar: Some(false),
        status_port: Some(0),
        log_level: Some(ProxyLogLevel::Debug),
        ..none()
    };
    assert_eq!(parse(&pod), Ok(expected));
}

#[test]
fn the_first_bad_annotation_in_key_order_is_reported() {
    // Byte order of the keys: istio.io/ < prometheus. < proxy. < readiness. < sidecar. <
    // status. < traffic.
    let pod = map(&[
        (key::EXCLUDE_INBOUND_PORTS, "http"),
        (key::STATUS_PORT, "x"),
        (key::LOG_LEVEL, "loud"),
        (key::READINESS_PERIOD_SECONDS, "-1"),
        (key::MERGE_METRICS, "yes"),
        (key::REROUTE_VIRTUAL_INTERFACES, "bad name"),
    ]);
    let order = [
        key::REROUTE_VIRTUAL_INTERFACES,
        key::MERGE_METRICS,
        key::READINESS_PERIOD_SECONDS,
        key::LOG_LEVEL,
        key::STATUS_PORT,
        key::EXCLUDE_INBOUND_PORTS,
    ];
    let mut remaining = pod.clone();
    for expected in order {
        assert_eq!(parse(&remaining).unwrap_err().key, expected);
        remaining.remove(expected);
    }
    assert_eq!(parse(&remaining), Ok(none()));
}

#[test]
fn long_values_are_shortened_in_the_message() {
    let value = format!("{}http", "1,".repeat(500));
    let err = one(key::EXCLUDE_INBOUND_PORTS, &value).unwrap_err();
    assert_eq!(err.value, value);
    let message = err.to_string();
    assert!(message.contains("... (1004 characters)"), "{message}");
    assert!(
        message.ends_with("\"http\" is not a port (1-65535)"),
        "{message}"
    );
    assert!(message.len() < 400, "{message}");
    // Cutting must respect character boundaries.
    let crabs = "🦀".repeat(SHOWN_VALUE_CHARS + 1);
    let message = one(key::LOG_LEVEL, &crabs).unwrap_err().to_string();
    assert!(message.contains(&format!("{:?}...", "🦀".repeat(SHOWN_VALUE_CHARS))));
    assert!(message.contains("(201 characters)"), "{message}");
}

#[test]
fn displays_use_the_istio_iptables_spelling() {
    assert_eq!(CaptureSet::<Cidr>::All.to_string(), "*");
    assert_eq!(CaptureSet::<u16>::Nothing.to_string(), "");
    assert_eq!(CaptureSet::Only(vec![80u16, 443]).to_string(), "80,443");
    assert_eq!(
        CaptureSet::Only(vec![cidr("10.0.0.0", 8), cidr("fd00::", 8)]).to_string(),
        "10.0.0.0/8,fd00::/8"
    );
    assert_eq!(ImageType::Distroless.as_str(), "distroless");
    assert_eq!(
        ProxyLogLevel::from_name("critical"),
        Some(ProxyLogLevel::Critical)
    );
    assert_eq!(AgentLogLevel::from_name("warning"), None);
}

/// The webhook feeds `parse` whatever arrives from the network: every key must give an
/// answer (Ok or an error naming that key) for every odd value, and never panic.
#[test]
fn odd_values_never_panic() {
    let mut odd: Vec<String> = [
        "",
        " ",
        "\t",
        "\n",
        "\r\n",
        "\0",
        "\u{7f}",
        "\u{feff}",
        "\u{202e}",
        "é",
        "日本語",
        "🦀",
        "-1",
        "+1",
        "-0",
        "0",
        "00",
        "1e309",
        "-1e309",
        "1e-309",
        "NaN",
        "inf",
        "-inf",
        "0x10",
        "0b1",
        "0o7",
        "1_000",
        "65535",
        "65536",
        "4294967296",
        "18446744073709551616",
        "99999999999999999999999999999999999999",
        "*",
        "**",
        ",",
        ",,,",
        " , ",
        ":",
        "::",
        ":::",
        "/",
        "//",
        "/0",
        "::/",
        "1.2.3.4/",
        "[::1]/128",
        "{",
        "}",
        "[",
        "]",
        "{}",
        "[]",
        "null",
        "~",
        "true",
        "\"\"",
        "'",
        "\"",
        "\\",
        "%",
        "%YAML 1.2\n---\n",
        "---",
        "...",
        "&a [*a]",
        "a: &a [*a, *a]",
        "*a",
        "!!binary x",
        "!!python/object:os.system x",
        "? [a]\n: b",
        "1: 2",
        "a: 1\na: 2",
        "- - - - -",
        "{a: {b: {c: {d: {}}}}}",
        "a:\tb",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    odd.push("1".repeat(100_000));
    odd.push("9".repeat(5000) + "Mi");
    odd.push("1,".repeat(50_000));
    odd.push("a".repeat(300));
    odd.push("🦀".repeat(300));
    odd.push("[".repeat(100_000));
    odd.push("{".repeat(100_000));
    odd.push("- ".repeat(10_000) + "x");
    odd.push("{\"a\":".repeat(10_000));
    odd.push("a:\n ".repeat(1_000) + "b");
    odd.push(billion_laughs());
    for name in key::ALL {
        for value in &odd {
            if let Err(e) = parse(&map(&[(name, value)])) {
                assert_eq!(e.key, name, "{value:?}");
                assert!(!e.reason.is_empty());
                assert!(!e.to_string().is_empty());
            }
        }
    }
    // All keys at once, with the same odd value, as a single pod.
    for value in &odd {
        let pod: Labels = key::ALL
            .iter()
            .map(|k| ((*k).to_owned(), value.clone()))
            .collect();
        let _ = parse(&pod);
    }
}

/// Nine levels of nine-fold aliases: a billion entries if expanded.
fn billion_laughs() -> String {
    let mut yaml = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in names.windows(2) {
        let (prev, next) = (pair[0], pair[1]);
        let refs = vec![format!("*{prev}"); 9].join(", ");
        yaml.push_str(&format!("{next}: &{next} [{refs}]\n"));
    }
    yaml
}

#[test]
fn every_key_is_handled() {
    // A value no annotation accepts except the free-form or lenient ones: each must be read,
    // not silently skipped.
    let lenient = [key::PROXY_IMAGE, key::PROXY_CONFIG];
    for name in key::ALL {
        let result = one(name, "\u{1}bad value\u{1}");
        if lenient.contains(&name) {
            continue;
        }
        assert!(result.is_err(), "{name} accepted a control character");
    }
    // Keys are unique.
    let mut sorted = key::ALL.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), key::ALL.len());
}
