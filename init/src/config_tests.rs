use super::*;

fn flags(args: &[&str]) -> Flags {
    let mut all = vec!["skiff-init"];
    all.extend_from_slice(args);
    Flags::parse_with_env(all, |_| None).expect("flags parse")
}

fn config(args: &[&str]) -> Result<Config, InitError> {
    Config::from_flags(&flags(args), &EnvSettings::default())
}

fn error_text(args: &[&str]) -> String {
    config(args).expect_err("must be rejected").to_string()
}

#[test]
fn injected_defaults() {
    let c = config(crate::flags::INJECTED_DEFAULT_ARGS).unwrap();
    assert_eq!(c.proxy_port, 15001);
    assert_eq!(c.inbound_capture_port, 15006);
    assert_eq!(c.inbound_tunnel_port, 15008);
    assert_eq!(c.proxy_uids, vec!["1337"]);
    assert_eq!(c.proxy_gids, vec!["1337"], "gids default to the uids");
    assert_eq!(c.mode, InterceptionMode::Redirect);
    assert_eq!(c.outbound_ranges, OutboundRanges::All);
    assert!(c.exclude_ranges.is_empty());
    assert_eq!(
        c.inbound_ports,
        InboundPorts::AllExcept(vec![15090, 15021, 15020])
    );
    assert_eq!(c.owner_groups, OwnerGroups::AllExcept(vec![]));
    assert_eq!(c.loopback_cidr.to_string(), "127.0.0.1/32");
    assert_eq!(c.action, Action::Apply);
    assert_eq!(c.probe_timeout, Duration::from_secs(5));
}

#[test]
fn proxy_uid_falls_back_to_envoy_user_then_1337() {
    let c = config(&[]).unwrap();
    assert_eq!(c.proxy_uids, vec!["1337"]);
    let env = EnvSettings {
        envoy_user_uid: Some(101),
        ..EnvSettings::default()
    };
    let c = Config::from_flags(&flags(&[]), &env).unwrap();
    assert_eq!(c.proxy_uids, vec!["101"]);
    assert_eq!(c.proxy_gids, vec!["101"]);
}

#[test]
fn lists_drop_empty_items() {
    let c = config(&["-b", "*", "-d", "6000,7000,", "-x", ",10.0.0.0/8,"]).unwrap();
    assert_eq!(c.inbound_ports, InboundPorts::AllExcept(vec![6000, 7000]));
    assert_eq!(c.exclude_ranges.len(), 1);
    assert_eq!(
        config(&["-b", ""]).unwrap().inbound_ports,
        InboundPorts::None
    );
}

#[test]
fn ipv6_spellings_are_canonicalised() {
    let c = config(&["-x", "::127.0.0.53/128,fd00:0:0::1/64"]).unwrap();
    let shown: Vec<String> = c.exclude_ranges.iter().map(|c| c.to_string()).collect();
    assert_eq!(shown, vec!["::7f00:35/128", "fd00::1/64"]);
}

#[test]
fn bad_values_name_the_flag_and_the_value() {
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["-i", "10.0.0.0/33"],
            "-i/--istio-service-cidr",
            "10.0.0.0/33",
        ),
        (
            &["-i", "10.0.0.1"],
            "-i/--istio-service-cidr",
            "address/prefix",
        ),
        (&["-x", "*"], "-x/--istio-service-exclude-cidr", "omit -i"),
        (&["-b", "80,http"], "-b/--istio-inbound-ports", "1 to 65535"),
        (
            &["-b", "*", "-d", "70000"],
            "-d/--istio-local-exclude-ports",
            "70000",
        ),
        (&["-p", "0"], "-p/--envoy-port", "1 to 65535"),
        (
            &["-m", "NONE"],
            "-m/--istio-inbound-interception-mode",
            "REDIRECT or TPROXY",
        ),
        (
            &["-c", "eth 0"],
            "-c/--istio-exclude-interfaces",
            "interface name",
        ),
        (
            &["--force-iptables-binary", "xtables"],
            "--force-iptables-binary",
            "legacy or nft",
        ),
        (
            &["--probe-timeout", "5 seconds"],
            "--probe-timeout",
            "duration",
        ),
        (&["--ipv6", "maybe"], "--ipv6", "auto, true or false"),
        (
            &["--dns-servers", "10.0.0.10,dns"],
            "--dns-servers",
            "\"dns\"",
        ),
        (&["--cni-mode"], "--cni-mode", "CNI"),
    ];
    for (args, flag, detail) in cases {
        let text = error_text(args);
        assert!(text.contains(flag), "{args:?}: {text}");
        assert!(text.contains(detail), "{args:?}: {text}");
    }
}

#[test]
fn owner_groups_from_environment() {
    let env = EnvSettings {
        owner_groups: Some("java,202".into()),
        ..EnvSettings::default()
    };
    let c = Config::from_flags(&flags(&[]), &env).unwrap();
    assert_eq!(
        c.owner_groups,
        OwnerGroups::Only(vec!["java".into(), "202".into()])
    );

    let env = EnvSettings {
        owner_groups_exclude: Some("888,ftp".into()),
        ..EnvSettings::default()
    };
    let c = Config::from_flags(&flags(&[]), &env).unwrap();
    assert_eq!(
        c.owner_groups,
        OwnerGroups::AllExcept(vec!["888".into(), "ftp".into()])
    );
}

#[test]
fn more_than_64_owner_groups_is_an_error() {
    let groups: Vec<String> = (1..=65).map(|g| g.to_string()).collect();
    let env = EnvSettings {
        owner_groups: Some(groups.join(",")),
        ..EnvSettings::default()
    };
    let err = Config::from_flags(&flags(&[]), &env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ISTIO_OUTBOUND_OWNER_GROUPS"), "{err}");
    assert!(err.contains("got 65"), "{err}");
    let env = EnvSettings {
        owner_groups: Some(groups[..64].join(",")),
        ..EnvSettings::default()
    };
    assert!(
        Config::from_flags(&flags(&[]), &env).is_ok(),
        "64 is allowed"
    );
}

#[test]
fn loopback_cidr_must_be_ipv4_loopback_with_mask_8_to_32() {
    for (value, ok) in [
        ("127.0.0.1/32", true),
        ("127.0.0.0/8", true),
        ("127.0.0.0/7", false),
        ("10.0.0.1/32", false),
        ("::1/128", false),
    ] {
        let env = EnvSettings {
            loopback_cidr: Some(value.into()),
            ..EnvSettings::default()
        };
        assert_eq!(Config::from_flags(&flags(&[]), &env).is_ok(), ok, "{value}");
    }
}

#[test]
fn go_durations() {
    assert_eq!(parse_go_duration("5s"), Ok(Duration::from_secs(5)));
    assert_eq!(parse_go_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
    assert_eq!(parse_go_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert!(parse_go_duration("5").is_err());
    assert!(parse_go_duration("s").is_err());
}

#[test]
fn cleanup_and_skip_select_the_action() {
    assert_eq!(
        config(&["--cleanup-only"]).unwrap().action,
        Action::CleanupOnly
    );
    assert_eq!(
        config(&["--skip-rule-apply"]).unwrap().action,
        Action::Nothing
    );
}
