//! Expected restore texts, each written out by hand from spec/init.md section 2 (and checked
//! line by line against the rule-by-rule description there), never pasted from our output.

use super::*;
use crate::config::EnvSettings;
use crate::flags::Flags;
use crate::restore::apply_text;

use crate::flags::INJECTED_DEFAULT_ARGS as INJECTED;

fn config_with(args: &[&str], env: EnvSettings) -> Config {
    let mut all = vec!["skiff-init"];
    all.extend_from_slice(args);
    let flags = Flags::parse_with_env(all, |_| None).expect("flags");
    Config::from_flags(&flags, &env).expect("config")
}

fn injected_plus(extra: &[&str]) -> Config {
    let mut args = INJECTED.to_vec();
    args.extend_from_slice(extra);
    config_with(&args, EnvSettings::default())
}

fn v4(cfg: &Config) -> String {
    apply_text(&plan(cfg, &HostFacts::default()).v4)
}

/// Compares line by line so a failure shows the first differing line.
fn assert_text(actual: &str, expected: &str) {
    let a: Vec<&str> = actual.lines().collect();
    let e: Vec<&str> = expected.lines().collect();
    for (i, (x, y)) in a.iter().zip(&e).enumerate() {
        assert_eq!(x, y, "line {} differs\n--- actual:\n{actual}", i + 1);
    }
    assert_eq!(
        a.len(),
        e.len(),
        "line count differs\n--- actual:\n{actual}"
    );
}

const DEFAULT: &str = "\
* nat
-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_IN_REDIRECT
-N ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
";

/// The default text with `line` replaced by `with` (several lines allowed, or none).
fn default_with(line: &str, with: &[&str]) -> String {
    let mut out = String::new();
    let mut found = false;
    for l in DEFAULT.lines() {
        if l == line {
            found = true;
            for w in with {
                out.push_str(w);
                out.push('\n');
            }
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    assert!(found, "test bug: {line:?} is not in the default text");
    out
}

#[test]
fn default_injected_arguments() {
    let cfg = injected_plus(&[]);
    let plan = plan(&cfg, &HostFacts::default());
    assert_text(&apply_text(&plan.v4), DEFAULT);
    assert_eq!(plan.v6, None, "IPv6 off: ip6tables untouched");
    assert_eq!(plan.tproxy_route, None);
}

#[test]
fn no_service_cidr_captures_no_outbound() {
    let cfg = config_with(
        &[
            "-p",
            "15001",
            "-z",
            "15006",
            "-u",
            "1337",
            "-m",
            "REDIRECT",
            "-b",
            "*",
            "-d",
            "15090,15021,15020",
        ],
        EnvSettings::default(),
    );
    assert_text(
        &v4(&cfg),
        &default_with("-A ISTIO_OUTPUT -j ISTIO_REDIRECT", &[]),
    );
}

#[test]
fn service_cidr_list() {
    let cfg = config_with(
        &[
            "-u",
            "1337",
            "-i",
            "10.0.0.0/8,172.16.0.0/12",
            "-b",
            "*",
            "-d",
            "15090,15021,15020",
        ],
        EnvSettings::default(),
    );
    let expected = default_with(
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
        &[
            "-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT",
            "-A ISTIO_OUTPUT -d 172.16.0.0/12 -j ISTIO_REDIRECT",
        ],
    );
    assert_text(&v4(&cfg), &expected);
}

#[test]
fn exclude_cidrs_come_after_localhost_and_before_includes() {
    let cfg = injected_plus(&["-x", "10.96.0.0/12,192.168.1.1/32"]);
    let expected = default_with(
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
        &[
            "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
            "-A ISTIO_OUTPUT -d 10.96.0.0/12 -j RETURN",
            "-A ISTIO_OUTPUT -d 192.168.1.1/32 -j RETURN",
        ],
    );
    assert_text(&v4(&cfg), &expected);
}

#[test]
fn loopback_in_service_cidr_drops_the_lo_owner_returns() {
    let cfg = config_with(
        &[
            "-u",
            "1337",
            "-i",
            "127.1.2.3/32",
            "-b",
            "*",
            "-d",
            "15090,15021,15020",
        ],
        EnvSettings::default(),
    );
    let expected = default_with(
        "-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
        &[],
    );
    let expected = expected.replace(
        "-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN\n",
        "",
    );
    let expected = expected.replace(
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
        "-A ISTIO_OUTPUT -d 127.1.2.3/32 -j ISTIO_REDIRECT",
    );
    assert_text(&v4(&cfg), &expected);
}

#[test]
fn no_inbound_ports_means_no_prerouting_jump() {
    let cfg = config_with(&["-u", "1337", "-i", "*"], EnvSettings::default());
    let expected = "\
* nat
-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_IN_REDIRECT
-N ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
";
    assert_text(&v4(&cfg), expected);
}

#[test]
fn inbound_port_list_ignores_local_excludes() {
    let cfg = config_with(
        &["-u", "1337", "-i", "*", "-b", "32000,31000", "-d", "15090"],
        EnvSettings::default(),
    );
    let expected = DEFAULT.replace(
        "\
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
",
        "\
-A ISTIO_INBOUND -p tcp --dport 32000 -j ISTIO_IN_REDIRECT
-A ISTIO_INBOUND -p tcp --dport 31000 -j ISTIO_IN_REDIRECT
",
    );
    assert_ne!(expected, DEFAULT, "test bug: replacement did not apply");
    assert_text(&v4(&cfg), &expected);
}

#[test]
fn outbound_port_excludes_follow_the_output_jump() {
    let cfg = injected_plus(&["-o", "5555,6666"]);
    let expected = default_with(
        "-A OUTPUT -j ISTIO_OUTPUT",
        &[
            "-A OUTPUT -j ISTIO_OUTPUT",
            "-A ISTIO_OUTPUT -p tcp --dport 5555 -j RETURN",
            "-A ISTIO_OUTPUT -p udp --dport 5555 -j RETURN",
            "-A ISTIO_OUTPUT -p tcp --dport 6666 -j RETURN",
            "-A ISTIO_OUTPUT -p udp --dport 6666 -j RETURN",
        ],
    );
    assert_text(&v4(&cfg), &expected);
}

#[test]
fn outbound_port_includes_sit_between_excludes_and_includes() {
    let cfg = injected_plus(&["-q", "32000", "-x", "10.0.0.0/8"]);
    let expected = default_with(
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
        &[
            "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
            "-A ISTIO_OUTPUT -d 10.0.0.0/8 -j RETURN",
            "-A ISTIO_OUTPUT -p tcp --dport 32000 -j ISTIO_REDIRECT",
        ],
    );
    assert_text(&v4(&cfg), &expected);
}

#[test]
fn excluded_interfaces_are_the_first_nat_rules() {
    let cfg = injected_plus(&["-c", "eth9,net1"]);
    let expected = default_with(
        "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN",
        &[
            "-A PREROUTING -i eth9 -j RETURN",
            "-A OUTPUT -o eth9 -j RETURN",
            "-A PREROUTING -i net1 -j RETURN",
            "-A OUTPUT -o net1 -j RETURN",
            "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN",
        ],
    );
    assert_text(&v4(&cfg), &expected);
}

#[test]
fn kube_virt_interfaces_with_wildcard() {
    let cfg = injected_plus(&["-k", "eth1,eth2"]);
    let expected = default_with(
        "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN",
        &[
            "-I PREROUTING 1 -i eth1 -j RETURN",
            "-I PREROUTING 1 -i eth2 -j RETURN",
            "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN",
        ],
    );
    let expected = expected.replace(
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n",
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n-I PREROUTING 1 -i eth1 -j ISTIO_REDIRECT\n-I PREROUTING 1 -i eth2 -j ISTIO_REDIRECT\n",
    );
    assert_text(&v4(&cfg), &expected);
}

#[test]
fn kube_virt_interfaces_with_cidrs() {
    let cfg = config_with(
        &[
            "-u",
            "1337",
            "-i",
            "10.0.0.0/8,11.0.0.0/8",
            "-b",
            "*",
            "-d",
            "15090,15021,15020",
            "-k",
            "eth1",
        ],
        EnvSettings::default(),
    );
    let expected = default_with(
        "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN",
        &[
            "-I PREROUTING 1 -i eth1 -j RETURN",
            "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN",
        ],
    );
    let expected = expected.replace(
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n",
        "\
-I PREROUTING 1 -i eth1 -d 10.0.0.0/8 -j ISTIO_REDIRECT
-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT
-I PREROUTING 1 -i eth1 -d 11.0.0.0/8 -j ISTIO_REDIRECT
-A ISTIO_OUTPUT -d 11.0.0.0/8 -j ISTIO_REDIRECT
",
    );
    assert_text(&v4(&cfg), &expected);
}

#[test]
fn owner_groups_include_is_one_combined_rule() {
    let env = EnvSettings {
        owner_groups: Some("java,202".into()),
        ..EnvSettings::default()
    };
    let cfg = config_with(INJECTED, env);
    let expected = default_with(
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
        &[
            "-A ISTIO_OUTPUT -m owner ! --gid-owner java -m owner ! --gid-owner 202 -j RETURN",
            "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
        ],
    );
    assert_text(&v4(&cfg), &expected);
}

#[test]
fn owner_groups_exclude_is_one_rule_per_group() {
    let env = EnvSettings {
        owner_groups_exclude: Some("888,ftp".into()),
        ..EnvSettings::default()
    };
    let cfg = config_with(INJECTED, env);
    let expected = default_with(
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
        &[
            "-A ISTIO_OUTPUT -m owner --gid-owner 888 -j RETURN",
            "-A ISTIO_OUTPUT -m owner --gid-owner ftp -j RETURN",
            "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
        ],
    );
    assert_text(&v4(&cfg), &expected);
}

#[test]
fn several_proxy_uids_and_gids() {
    let cfg = config_with(
        &["-u", "3,4", "-g", "1,2", "-i", "*"],
        EnvSettings::default(),
    );
    let text = v4(&cfg);
    let owner_rules: Vec<&str> = text.lines().filter(|l| l.contains("-owner")).collect();
    assert_eq!(
        owner_rules,
        vec![
            "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 3 -j ISTIO_IN_REDIRECT",
            "-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 3 -j RETURN",
            "-A ISTIO_OUTPUT -m owner --uid-owner 3 -j RETURN",
            "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 4 -j ISTIO_IN_REDIRECT",
            "-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 4 -j RETURN",
            "-A ISTIO_OUTPUT -m owner --uid-owner 4 -j RETURN",
            "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1 -j ISTIO_IN_REDIRECT",
            "-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1 -j RETURN",
            "-A ISTIO_OUTPUT -m owner --gid-owner 1 -j RETURN",
            "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 2 -j ISTIO_IN_REDIRECT",
            "-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 2 -j RETURN",
            "-A ISTIO_OUTPUT -m owner --gid-owner 2 -j RETURN",
        ]
    );
}

#[test]
fn drop_invalid_adds_a_mangle_table() {
    let cfg = injected_plus(&["--drop-invalid"]);
    let expected = format!(
        "\
* mangle
-N ISTIO_DROP
-A PREROUTING -m conntrack --ctstate INVALID -j ISTIO_DROP
-A ISTIO_DROP -j DROP
COMMIT
{DEFAULT}"
    );
    assert_text(&v4(&cfg), &expected);
}

#[test]
fn loopback_cidr_from_environment() {
    let env = EnvSettings {
        loopback_cidr: Some("127.0.0.0/8".into()),
        ..EnvSettings::default()
    };
    let cfg = config_with(INJECTED, env);
    assert_text(&v4(&cfg), &DEFAULT.replace("127.0.0.1/32", "127.0.0.0/8"));
}

#[test]
fn ipv6_programs_both_families() {
    let cfg = injected_plus(&["-x", "10.0.0.0/8,fd00::/8", "-c", "eth9"]);
    let plan = plan(
        &cfg,
        &HostFacts {
            ipv6: true,
            ..HostFacts::default()
        },
    );
    let with_nic = |text: String| {
        text.replace(
            "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN\n",
            "-A PREROUTING -i eth9 -j RETURN\n-A OUTPUT -o eth9 -j RETURN\n-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN\n",
        )
    };
    let expected_v4 = with_nic(default_with(
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
        &[
            "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
            "-A ISTIO_OUTPUT -d 10.0.0.0/8 -j RETURN",
        ],
    ));
    assert_text(&apply_text(&plan.v4), &expected_v4);

    let expected_v6 = "\
* nat
-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_IN_REDIRECT
-N ISTIO_OUTPUT
-A PREROUTING -i eth9 -j RETURN
-A OUTPUT -o eth9 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s ::6/128 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d ::1/128 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d ::1/128 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d ::1/128 -j RETURN
-A ISTIO_OUTPUT -d fd00::/8 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
";
    assert_text(
        &apply_text(plan.v6.as_deref().expect("v6 planned")),
        expected_v6,
    );
}

#[test]
fn ipv6_cidr_lists_split_per_family() {
    let cfg = config_with(
        &[
            "-u",
            "1337",
            "-i",
            "10.0.0.0/8,fd00::/8",
            "-b",
            "*",
            "-d",
            "15090,15021,15020",
        ],
        EnvSettings::default(),
    );
    let plan = plan(
        &cfg,
        &HostFacts {
            ipv6: true,
            ..HostFacts::default()
        },
    );
    let v4 = apply_text(&plan.v4);
    let v6 = apply_text(plan.v6.as_deref().unwrap());
    assert!(v4.contains("-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT\n"));
    assert!(!v4.contains("fd00::/8"));
    assert!(v6.contains("-A ISTIO_OUTPUT -d fd00::/8 -j ISTIO_REDIRECT\n"));
    assert!(!v6.contains("10.0.0.0/8"));
}

#[test]
fn tproxy_moves_inbound_to_mangle() {
    let cfg = config_with(
        &[
            "-p", "15001", "-z", "15006", "-u", "1337", "-m", "TPROXY", "-i", "*", "-b", "*", "-d",
            "15020",
        ],
        EnvSettings::default(),
    );
    let plan = plan(&cfg, &HostFacts::default());
    let expected = "\
* mangle
-N ISTIO_DIVERT
-N ISTIO_TPROXY
-N ISTIO_INBOUND
-A ISTIO_DIVERT -j MARK --set-mark 1337
-A ISTIO_DIVERT -j ACCEPT
-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --tproxy-mark 1337/0xffffffff --on-port 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT
-A ISTIO_INBOUND -p tcp -j ISTIO_TPROXY
-A PREROUTING -p tcp -m mark --mark 1337 -j CONNMARK --save-mark
-A OUTPUT -p tcp -o lo -m mark --mark 1337 -j RETURN
-A OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --uid-owner 1337 -j MARK --set-mark 1338
-A OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --gid-owner 1337 -j MARK --set-mark 1338
-A OUTPUT -p tcp -m connmark --mark 1337 -j CONNMARK --restore-mark
-I ISTIO_INBOUND 1 -p tcp -m mark --mark 1337 -j RETURN
-I ISTIO_INBOUND 2 -p tcp -s 127.0.0.6/32 -i lo -j RETURN
-I ISTIO_INBOUND 3 -p tcp -i lo -m mark ! --mark 1338 -j RETURN
COMMIT
* nat
-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_IN_REDIRECT
-N ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
";
    assert_text(&apply_text(&plan.v4), expected);
    assert_eq!(
        plan.tproxy_route,
        Some(TproxyRoute {
            mark: 1337,
            table: 133
        })
    );
}

#[test]
fn tproxy_port_list_and_excluded_interfaces() {
    let cfg = config_with(
        &[
            "-u", "1337", "-m", "TPROXY", "-i", "*", "-b", "8080", "-c", "eth9",
        ],
        EnvSettings::default(),
    );
    let plan = plan(
        &cfg,
        &HostFacts {
            ipv6: true,
            ..HostFacts::default()
        },
    );
    let v4 = apply_text(&plan.v4);
    let mangle: Vec<&str> = v4.lines().take_while(|l| *l != "COMMIT").collect();
    assert_eq!(
        mangle,
        vec![
            "* mangle",
            "-N ISTIO_DIVERT",
            "-N ISTIO_TPROXY",
            "-N ISTIO_INBOUND",
            "-A PREROUTING -i eth9 -j RETURN",
            "-A OUTPUT -o eth9 -j RETURN",
            "-A ISTIO_DIVERT -j MARK --set-mark 1337",
            "-A ISTIO_DIVERT -j ACCEPT",
            "-A ISTIO_TPROXY ! -d 127.0.0.1/32 -p tcp -j TPROXY --tproxy-mark 1337/0xffffffff --on-port 15006",
            "-A PREROUTING -p tcp -j ISTIO_INBOUND",
            "-A ISTIO_INBOUND -p tcp --dport 8080 -m conntrack --ctstate RELATED,ESTABLISHED -j ISTIO_DIVERT",
            "-A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_TPROXY",
            "-A PREROUTING -p tcp -m mark --mark 1337 -j CONNMARK --save-mark",
            "-A OUTPUT -p tcp -o lo -m mark --mark 1337 -j RETURN",
            "-A OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --uid-owner 1337 -j MARK --set-mark 1338",
            "-A OUTPUT ! -d 127.0.0.1/32 -p tcp -o lo -m owner --gid-owner 1337 -j MARK --set-mark 1338",
            "-A OUTPUT -p tcp -m connmark --mark 1337 -j CONNMARK --restore-mark",
            "-I ISTIO_INBOUND 1 -p tcp -m mark --mark 1337 -j RETURN",
            "-I ISTIO_INBOUND 2 -p tcp -s 127.0.0.6/32 -i lo -j RETURN",
            "-I ISTIO_INBOUND 3 -p tcp -i lo -m mark ! --mark 1338 -j RETURN",
        ]
    );
    let v6 = apply_text(plan.v6.as_deref().unwrap());
    assert!(v6.contains("-A ISTIO_TPROXY ! -d ::1/128 -p tcp -j TPROXY --tproxy-mark 1337/0xffffffff --on-port 15006\n"));
    assert!(v6.contains("-I ISTIO_INBOUND 2 -p tcp -s ::6/128 -i lo -j RETURN\n"));
    assert!(v6.contains(
        "-A OUTPUT ! -d ::1/128 -p tcp -o lo -m owner --uid-owner 1337 -j MARK --set-mark 1338\n"
    ));
}

#[test]
fn dns_capture_for_resolv_conf_servers() {
    let cfg = injected_plus(&["--redirect-dns"]);
    let host = HostFacts::with_dns(false, &["10.96.0.10".parse().unwrap()]);
    let expected = "\
* nat
-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_IN_REDIRECT
-N ISTIO_OUTPUT
-N ISTIO_OUTPUT_DNS
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp -m multiport ! --dports 53,15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -p tcp ! --dport 53 -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -p tcp ! --dport 53 -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS
-A ISTIO_OUTPUT_DNS -p tcp --dport 53 -d 10.96.0.10/32 -j REDIRECT --to-ports 15053
-A ISTIO_OUTPUT_DNS -p udp --dport 53 -d 10.96.0.10/32 -j REDIRECT --to-port 15053
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
* raw
-N ISTIO_OUTPUT_DNS
-N ISTIO_INBOUND
-A OUTPUT -j ISTIO_OUTPUT_DNS
-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --uid-owner 1337 -j CT --zone 1
-A ISTIO_OUTPUT_DNS -p udp --sport 15053 -m owner --uid-owner 1337 -j CT --zone 2
-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --gid-owner 1337 -j CT --zone 1
-A ISTIO_OUTPUT_DNS -p udp --sport 15053 -m owner --gid-owner 1337 -j CT --zone 2
-A PREROUTING -j ISTIO_INBOUND
-A ISTIO_OUTPUT_DNS -p udp --dport 53 -d 10.96.0.10/32 -j CT --zone 2
-A ISTIO_INBOUND -p udp --sport 53 -s 10.96.0.10/32 -j CT --zone 1
COMMIT
";
    assert_text(&apply_text(&plan(&cfg, &host).v4), expected);
}

#[test]
fn capture_all_dns_drops_the_address_matches() {
    let cfg = injected_plus(&["--redirect-dns", "--capture-all-dns"]);
    let plan = plan(&cfg, &HostFacts::default());
    let text = apply_text(&plan.v4);
    let dns: Vec<&str> = text.lines().filter(|l| l.contains("53")).collect();
    assert_eq!(
        dns,
        vec![
            "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp -m multiport ! --dports 53,15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
            "-A ISTIO_OUTPUT -o lo -p tcp ! --dport 53 -m owner ! --uid-owner 1337 -j RETURN",
            "-A ISTIO_OUTPUT -o lo -p tcp ! --dport 53 -m owner ! --gid-owner 1337 -j RETURN",
            "-A ISTIO_OUTPUT_DNS -p tcp --dport 53 -j REDIRECT --to-ports 15053",
            "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -j REDIRECT --to-port 15053",
            "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --uid-owner 1337 -j CT --zone 1",
            "-A ISTIO_OUTPUT_DNS -p udp --sport 15053 -m owner --uid-owner 1337 -j CT --zone 2",
            "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -m owner --gid-owner 1337 -j CT --zone 1",
            "-A ISTIO_OUTPUT_DNS -p udp --sport 15053 -m owner --gid-owner 1337 -j CT --zone 2",
            "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -j CT --zone 2",
            "-A ISTIO_INBOUND -p udp --sport 53 -j CT --zone 1",
        ]
    );
    assert!(text.contains("-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS\n"));
    assert!(
        text.contains(
            "* raw\n-N ISTIO_OUTPUT_DNS\n-N ISTIO_INBOUND\n-A OUTPUT -j ISTIO_OUTPUT_DNS\n"
        )
    );
}

#[test]
fn dns_servers_split_per_family() {
    let cfg = injected_plus(&["--redirect-dns"]);
    let host = HostFacts::with_dns(
        true,
        &["10.96.0.10".parse().unwrap(), "fd00::a".parse().unwrap()],
    );
    let plan = plan(&cfg, &host);
    let v4 = apply_text(&plan.v4);
    let v6 = apply_text(plan.v6.as_deref().unwrap());
    assert!(v4.contains(
        "-A ISTIO_OUTPUT_DNS -p udp --dport 53 -d 10.96.0.10/32 -j REDIRECT --to-port 15053\n"
    ));
    assert!(!v4.contains("fd00::a"));
    assert!(v6.contains(
        "-A ISTIO_OUTPUT_DNS -p tcp --dport 53 -d fd00::a/128 -j REDIRECT --to-ports 15053\n"
    ));
    assert!(v6.contains("-A ISTIO_INBOUND -p udp --sport 53 -s fd00::a/128 -j CT --zone 1\n"));
    assert!(!v6.contains("10.96.0.10"));
}

#[test]
fn dns_v4_only_servers_leave_v6_nat_without_the_dns_jump() {
    let cfg = injected_plus(&["--redirect-dns"]);
    let host = HostFacts::with_dns(true, &["10.96.0.10".parse().unwrap()]);
    let plan = plan(&cfg, &host);
    let v6 = apply_text(plan.v6.as_deref().unwrap());
    assert!(!v6.contains("-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS"), "{v6}");
    assert!(!v6.contains("-A PREROUTING -j ISTIO_INBOUND"), "{v6}");
    assert!(
        v6.contains("* raw\n-N ISTIO_OUTPUT_DNS\n-A OUTPUT -j ISTIO_OUTPUT_DNS\n"),
        "{v6}"
    );
}

#[test]
fn dns_capture_without_servers_is_disabled() {
    let cfg = injected_plus(&["--redirect-dns"]);
    assert_text(&v4(&cfg), DEFAULT);
}
