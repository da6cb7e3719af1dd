use super::*;
use crate::config::{Config, EnvSettings};
use crate::flags::Flags;
use crate::plan::{HostFacts, plan};

fn planned(args: &[&str]) -> Vec<Rule> {
    let mut all = vec!["skiff-init"];
    all.extend_from_slice(args);
    let flags = Flags::parse_with_env(all, |_| None).unwrap();
    let cfg = Config::from_flags(&flags, &EnvSettings::default()).unwrap();
    plan(&cfg, &HostFacts::default()).v4
}

const DEFAULT_ARGS: &[&str] = &[
    "-u",
    "1337",
    "-i",
    "*",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
];

/// iptables-nft 1.8.9's iptables-save after applying the default rules (a real run's output,
/// with the kernel's own spelling: `-m tcp`, reordered matches), plus a foreign filter rule.
fn saved_default() -> String {
    let nat = include_str!("../tests/data/nft-save-default.txt");
    format!(
        "{nat}*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -s 192.0.2.0/24 -j DROP\nCOMMIT\n"
    )
}

#[test]
fn parses_tables_chains_and_rules() {
    let state = parse_save(&saved_default());
    let nat = &state.tables[&Table::Nat];
    assert_eq!(nat.chains.len(), 8);
    assert_eq!(nat.rule_count("ISTIO_INBOUND"), 5);
    assert_eq!(
        nat.rules[0],
        (
            "PREROUTING".to_string(),
            "-p tcp -j ISTIO_INBOUND".to_string()
        )
    );
    assert_eq!(state.tables[&Table::Filter].rules.len(), 1);
}

#[test]
fn clean_when_only_foreign_rules_exist() {
    let foreign = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 192.0.2.0/24 -j DROP\nCOMMIT\n";
    assert_eq!(
        assess(&parse_save(foreign), &planned(DEFAULT_ARGS)),
        Assessment::Clean
    );
    assert_eq!(
        assess(&parse_save(""), &planned(DEFAULT_ARGS)),
        Assessment::Clean
    );
}

#[test]
fn same_flags_have_the_same_shape() {
    assert_eq!(
        assess(&parse_save(&saved_default()), &planned(DEFAULT_ARGS)),
        Assessment::SameShape
    );
}

#[test]
fn other_flags_differ_and_say_how() {
    let state = parse_save(&saved_default());
    let with_excluded_port = [DEFAULT_ARGS, &["-o", "5555"]].concat();
    match assess(&state, &planned(&with_excluded_port)) {
        Assessment::Differs(why) => assert!(
            why.contains("ISTIO_OUTPUT") && why.contains("has 9 rules, 11 planned"),
            "{why}"
        ),
        other => panic!("expected a difference, got {other:?}"),
    }
    let dns = [DEFAULT_ARGS, &["--drop-invalid"]].concat();
    match assess(&state, &planned(&dns)) {
        Assessment::Differs(why) => assert!(why.contains("ISTIO_DROP is missing"), "{why}"),
        other => panic!("expected a difference, got {other:?}"),
    }
}

#[test]
fn stray_chain_and_duplicate_jump_differ() {
    let stray = saved_default().replace(
        ":ISTIO_REDIRECT - [0:0]\n",
        ":ISTIO_REDIRECT - [0:0]\n:ISTIO_OLD - [0:0]\n",
    );
    assert!(matches!(
        assess(&parse_save(&stray), &planned(DEFAULT_ARGS)),
        Assessment::Differs(_)
    ));
    let doubled = saved_default().replace(
        "-A OUTPUT -j ISTIO_OUTPUT\n",
        "-A OUTPUT -j ISTIO_OUTPUT\n-A OUTPUT -j ISTIO_OUTPUT\n",
    );
    match assess(&parse_save(&doubled), &planned(DEFAULT_ARGS)) {
        Assessment::Differs(why) => assert!(why.contains("3 jumps"), "{why}"),
        other => panic!("expected a difference, got {other:?}"),
    }
}

#[test]
fn cleanup_removes_exactly_our_jumps_and_chains() {
    let state = parse_save(&saved_default());
    let expected = "\
* nat
-D OUTPUT -j ISTIO_OUTPUT
-D PREROUTING -p tcp -j ISTIO_INBOUND
-F ISTIO_INBOUND
-F ISTIO_IN_REDIRECT
-F ISTIO_OUTPUT
-F ISTIO_REDIRECT
-X ISTIO_INBOUND
-X ISTIO_IN_REDIRECT
-X ISTIO_OUTPUT
-X ISTIO_REDIRECT
COMMIT
";
    assert_eq!(cleanup_text(&state, &[]), expected);
}

#[test]
fn cleanup_includes_present_plain_rules_of_ours() {
    let rules = planned(&[DEFAULT_ARGS, &["-c", "eth9"]].concat());
    let plain = owned_plain_rules(&rules);
    let specs: Vec<String> = plain.iter().map(|r| r.command()).collect();
    assert_eq!(
        specs,
        vec![
            "-A PREROUTING -i eth9 -j RETURN",
            "-A OUTPUT -o eth9 -j RETURN"
        ]
    );
    let text = cleanup_text(&parse_save(&saved_default()), &plain);
    assert!(
        text.contains("-D PREROUTING -p tcp -j ISTIO_INBOUND\n-D OUTPUT -o eth9 -j RETURN\n-D PREROUTING -i eth9 -j RETURN\n-F ISTIO_INBOUND\n"),
        "{text}"
    );
}

#[test]
fn reconcile_is_cleanup_then_apply_per_table() {
    let rules = planned(DEFAULT_ARGS);
    let text = reconcile_text(&parse_save(&saved_default()), &[], &rules);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "* nat");
    assert_eq!(lines[1], "-D OUTPUT -j ISTIO_OUTPUT");
    let first_new = lines.iter().position(|l| l.starts_with("-N ")).unwrap();
    let last_delete = lines.iter().rposition(|l| l.starts_with("-X ")).unwrap();
    assert!(last_delete < first_new);
    assert_eq!(lines.last(), Some(&"COMMIT"));
    assert_eq!(lines.iter().filter(|l| **l == "COMMIT").count(), 1);
}

#[test]
fn state_after_plan_assesses_as_same_shape() {
    let rules = planned(&[DEFAULT_ARGS, &["--drop-invalid", "-k", "eth1"]].concat());
    assert_eq!(assess(&state_after(&rules), &rules), Assessment::SameShape);
}
