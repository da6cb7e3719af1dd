//! The init and proxy command lines. Expected lists are Istio's template order
//! (`-p -z -u -m -i -x -b -d`, then `-q -o -k -c`, then `--log_output_level`) written out by
//! hand.

use super::*;

/// What skiff-init itself calls the default injected arguments: the injector must produce
/// exactly these (the two crates meet in this test).
use skiff_init::flags::INJECTED_DEFAULT_ARGS;

fn args(annotations: &[(&str, &str)]) -> Vec<String> {
    init_args(&settings(annotations))
}

/// The default list with the flag values at `changes` replaced, and `tail` (flags that
/// are only there when set) inserted before `--log_output_level`.
fn expected(changes: &[(&str, &str)], tail: &[&str], log: &str) -> Vec<String> {
    let mut out = strings(INJECTED_DEFAULT_ARGS);
    for (flag, value) in changes {
        let at = out.iter().position(|a| a == flag).expect("known flag");
        out[at + 1] = (*value).to_owned();
    }
    out.extend(strings(tail));
    out.push(format!("--log_output_level={log}"));
    out
}

#[test]
fn default_args_are_skiff_inits_injected_default_args() {
    let mut want = strings(INJECTED_DEFAULT_ARGS);
    want.push("--log_output_level=default:info".to_owned());
    assert_eq!(args(&[]), want);
    // And the spec's line: istio-iptables -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*'
    // -x "" -b '*' -d 15090,15021,15020 --log_output_level=default:info.
    assert_eq!(
        args(&[]).join(" "),
        "-p 15001 -z 15006 -u 1337 -m REDIRECT -i * -x  -b * -d 15090,15021,15020 \
         --log_output_level=default:info"
    );
}

#[test]
fn each_traffic_annotation_reaches_its_flag() {
    let cases: Vec<(Pairs, Vec<String>)> = vec![
        (
            &[(key::INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/8,172.16.0.0/12")],
            expected(&[("-i", "10.0.0.0/8,172.16.0.0/12")], &[], "default:info"),
        ),
        (
            &[(key::INCLUDE_OUTBOUND_IP_RANGES, "")],
            expected(&[("-i", "")], &[], "default:info"),
        ),
        (
            &[(
                key::EXCLUDE_OUTBOUND_IP_RANGES,
                "169.254.169.254/32, fd00::/8",
            )],
            expected(
                &[("-x", "169.254.169.254/32,fd00::/8")],
                &[],
                "default:info",
            ),
        ),
        (
            &[(key::INCLUDE_INBOUND_PORTS, "8080, 9090")],
            expected(&[("-b", "8080,9090")], &[], "default:info"),
        ),
        (
            &[(key::INCLUDE_INBOUND_PORTS, "")],
            expected(&[("-b", "")], &[], "default:info"),
        ),
        // excludeInboundPorts goes between 15021 and the status port.
        (
            &[(key::EXCLUDE_INBOUND_PORTS, "8443,9443")],
            expected(
                &[("-d", "15090,15021,8443,9443,15020")],
                &[],
                "default:info",
            ),
        ),
        // The status port is not repeated when the list already has it.
        (
            &[(key::EXCLUDE_INBOUND_PORTS, "15020,8443")],
            expected(&[("-d", "15090,15021,15020,8443")], &[], "default:info"),
        ),
        (
            &[(key::STATUS_PORT, "0")],
            expected(&[("-d", "15090,15021")], &[], "default:info"),
        ),
        (
            &[(key::STATUS_PORT, "15030")],
            expected(&[("-d", "15090,15021,15030")], &[], "default:info"),
        ),
        (
            &[
                (key::STATUS_PORT, "0"),
                (key::EXCLUDE_INBOUND_PORTS, "7777"),
            ],
            expected(&[("-d", "15090,15021,7777")], &[], "default:info"),
        ),
        (
            &[(key::INCLUDE_OUTBOUND_PORTS, "3306,5432")],
            expected(&[], &["-q", "3306,5432"], "default:info"),
        ),
        // A present but empty annotation still passes the flag, as Istio's template does.
        (
            &[(key::INCLUDE_OUTBOUND_PORTS, "")],
            expected(&[], &["-q", ""], "default:info"),
        ),
        (
            &[(key::EXCLUDE_OUTBOUND_PORTS, "25")],
            expected(&[], &["-o", "25"], "default:info"),
        ),
        (
            &[(key::REROUTE_VIRTUAL_INTERFACES, "net1,net2")],
            expected(&[], &["-k", "net1,net2"], "default:info"),
        ),
        (
            &[(key::KUBEVIRT_INTERFACES, "eth1")],
            expected(&[], &["-k", "eth1"], "default:info"),
        ),
        // The current annotation beats the deprecated one.
        (
            &[
                (key::KUBEVIRT_INTERFACES, "eth1"),
                (key::REROUTE_VIRTUAL_INTERFACES, "net1"),
            ],
            expected(&[], &["-k", "net1"], "default:info"),
        ),
        (
            &[(key::EXCLUDE_INTERFACES, "eth2")],
            expected(&[], &["-c", "eth2"], "default:info"),
        ),
        (
            &[(key::INTERCEPTION_MODE, "TPROXY")],
            expected(&[("-m", "TPROXY")], &[], "default:info"),
        ),
        (
            &[(key::AGENT_LOG_LEVEL, "debug")],
            expected(&[], &[], "default:debug"),
        ),
        (
            &[(key::AGENT_LOG_LEVEL, "default:warn,ambient:debug")],
            expected(&[], &[], "default:warn,ambient:debug"),
        ),
    ];
    for (annotations, want) in cases {
        assert_eq!(args(annotations), want, "{annotations:?}");
    }
}

#[test]
fn optional_flags_keep_istios_order() {
    // Annotations are given in an order different from the flags' order on purpose.
    let got = args(&[
        (key::EXCLUDE_INTERFACES, "eth9"),
        (key::REROUTE_VIRTUAL_INTERFACES, "veth0"),
        (key::EXCLUDE_OUTBOUND_PORTS, "25,465"),
        (key::INCLUDE_OUTBOUND_PORTS, "3306"),
        (key::EXCLUDE_INBOUND_PORTS, "8443"),
        (key::INCLUDE_INBOUND_PORTS, "8080"),
        (key::EXCLUDE_OUTBOUND_IP_RANGES, "10.1.0.0/16"),
        (key::INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/8"),
    ]);
    assert_eq!(
        got,
        strings(&[
            "-p",
            "15001",
            "-z",
            "15006",
            "-u",
            "1337",
            "-m",
            "REDIRECT",
            "-i",
            "10.0.0.0/8",
            "-x",
            "10.1.0.0/16",
            "-b",
            "8080",
            "-d",
            "15090,15021,8443,15020",
            "-q",
            "3306",
            "-o",
            "25,465",
            "-k",
            "veth0",
            "-c",
            "eth9",
            "--log_output_level=default:info",
        ])
    );
}

#[test]
fn configured_traffic_defaults_and_annotations() {
    let config = InjectionConfig::from_yaml(
        "traffic:\n  includeOutboundIPRanges: 10.96.0.0/12\n  excludeInboundPorts: \"9000\"\n  \
         includeOutboundPorts: \"443\"\n  excludeOutboundPorts: \"\"\nagentLogLevel: \
         \"default:warn\"\nlogAsJson: true\n",
    )
    .expect("config");
    assert_eq!(
        init_args(&settings_with(&config, &[])),
        strings(&[
            "-p",
            "15001",
            "-z",
            "15006",
            "-u",
            "1337",
            "-m",
            "REDIRECT",
            "-i",
            "10.96.0.0/12",
            "-x",
            "",
            "-b",
            "*",
            "-d",
            "15090,15021,9000,15020",
            "-q",
            "443",
            "--log_output_level=default:warn",
            "--log_as_json",
        ])
    );
    // An annotation replaces the configured value; it is not merged with it.
    let got = init_args(&settings_with(
        &config,
        &[
            (key::EXCLUDE_INBOUND_PORTS, "7000"),
            (key::INCLUDE_OUTBOUND_PORTS, "8443"),
        ],
    ));
    assert_eq!(got[15], "15090,15021,7000,15020");
    assert_eq!(&got[16..18], &strings(&["-q", "8443"]));
}

#[test]
fn proxy_args_have_istios_shape() {
    let config = InjectionConfig::default();
    assert_eq!(
        proxy_args(&config, &settings(&[])),
        strings(&[
            "proxy",
            "sidecar",
            "--domain",
            "$(POD_NAMESPACE).svc.cluster.local",
            "--proxyLogLevel=warning",
            "--proxyComponentLogLevel=misc:error",
            "--log_output_level=default:info",
        ])
    );
    let s = settings(&[
        (key::LOG_LEVEL, "debug"),
        (key::COMPONENT_LOG_LEVEL, "upstream:trace,http:debug"),
        (key::AGENT_LOG_LEVEL, "xds:debug"),
    ]);
    assert_eq!(
        proxy_args(&config, &s)[4..],
        strings(&[
            "--proxyLogLevel=debug",
            "--proxyComponentLogLevel=upstream:trace,http:debug",
            "--log_output_level=xds:debug",
        ])
    );
    // An empty componentLogLevel clears the default.
    let s = settings(&[(key::COMPONENT_LOG_LEVEL, "")]);
    assert_eq!(proxy_args(&config, &s)[5], "--proxyComponentLogLevel=");
    let config = InjectionConfig {
        cluster_domain: "corp.example".to_owned(),
        log_as_json: true,
        ..InjectionConfig::default()
    };
    let got = proxy_args(&config, &settings_with(&config, &[]));
    assert_eq!(got[3], "$(POD_NAMESPACE).svc.corp.example");
    assert_eq!(got.last().map(String::as_str), Some("--log_as_json"));
    // The built container carries them.
    let s = inject(&[(key::LOG_LEVEL, "error")]);
    assert_eq!(
        s.proxy.args.expect("args")[4],
        "--proxyLogLevel=error".to_owned()
    );
}
