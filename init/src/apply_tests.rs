use std::cell::RefCell;

use super::*;
use crate::config::EnvSettings;
use crate::exec::Output;
use crate::flags::Flags;
use crate::plan::{HostFacts, plan};

fn config(args: &[&str]) -> Config {
    let mut all = vec!["skiff-init"];
    all.extend_from_slice(args);
    let flags = Flags::parse_with_env(all, |_| None).unwrap();
    Config::from_flags(&flags, &EnvSettings::default()).unwrap()
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

/// A host with only iptables-nft (legacy absent), a given `iptables-save` output, and
/// answers for `-C` checks; it records every command it is asked to run.
struct FakeHost {
    saved: String,
    checks_pass: bool,
    log: RefCell<Vec<Cmd>>,
}

impl FakeHost {
    fn new(saved: &str, checks_pass: bool) -> FakeHost {
        FakeHost {
            saved: saved.to_string(),
            checks_pass,
            log: RefCell::new(Vec::new()),
        }
    }

    fn restores(&self) -> Vec<String> {
        self.log
            .borrow()
            .iter()
            .filter(|c| c.program.ends_with("-restore"))
            .filter_map(|c| c.stdin.clone())
            // Neither the -C checks nor the detection probe change anything.
            .filter(|input| !input.contains("\n-C ") && !input.contains("-p 255"))
            .collect()
    }
}

impl Runner for FakeHost {
    fn run(&self, cmd: &Cmd) -> Result<Output, InitError> {
        self.log.borrow_mut().push(cmd.clone());
        let ok = |stdout: &str| {
            Ok(Output {
                code: 0,
                stdout: stdout.to_string(),
                stderr: String::new(),
            })
        };
        let fail = |stderr: &str| {
            Ok(Output {
                code: 1,
                stdout: String::new(),
                stderr: stderr.to_string(),
            })
        };
        if cmd.program.contains("legacy") {
            return Err(InitError::Spawn {
                command: cmd.to_string(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let is_check = cmd.args.iter().any(|a| a == "-C")
            || cmd.stdin.as_deref().is_some_and(|s| s.contains("\n-C "));
        match cmd.program.as_str() {
            _ if cmd.args.iter().any(|a| a == "--version") => {
                ok("iptables-save v1.8.9 (nf_tables)\n")
            }
            p if p.ends_with("-save") => ok(&self.saved),
            _ if is_check && !self.checks_pass => {
                fail("Bad rule (does a matching rule exist in that chain?)")
            }
            _ => ok(""),
        }
    }
}

const SAVED_DEFAULT: &str = include_str!("../tests/data/nft-save-default.txt");

#[test]
fn clean_host_gets_the_planned_rules_in_one_restore() {
    let cfg = config(DEFAULT_ARGS);
    let plan = plan(&cfg, &HostFacts::default());
    let host = FakeHost::new("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n", true);
    let outcomes = run(&cfg, &plan, &host).unwrap();
    assert_eq!(outcomes, vec![(Family::V4, Outcome::Applied)]);
    assert_eq!(host.restores(), vec![apply_text(&plan.v4)]);
    let restore = host
        .log
        .borrow()
        .iter()
        .find(|c| c.stdin.is_some())
        .unwrap()
        .to_string();
    assert_eq!(restore, "iptables-nft-restore --noflush");
}

#[test]
fn same_rules_already_there_change_nothing() {
    let cfg = config(DEFAULT_ARGS);
    let plan = plan(&cfg, &HostFacts::default());
    let host = FakeHost::new(SAVED_DEFAULT, true);
    assert_eq!(
        run(&cfg, &plan, &host).unwrap(),
        vec![(Family::V4, Outcome::AlreadyInPlace)]
    );
    assert!(host.restores().is_empty(), "no change on a re-run");
}

#[test]
fn same_shape_but_failing_check_is_drift() {
    let cfg = config(DEFAULT_ARGS);
    let plan = plan(&cfg, &HostFacts::default());
    let host = FakeHost::new(SAVED_DEFAULT, false);
    let err = run(&cfg, &plan, &host).unwrap_err().to_string();
    assert!(err.contains("--reconcile"), "{err}");
    assert!(err.contains("not present"), "{err}");
}

#[test]
fn different_flags_are_refused_without_reconcile() {
    let cfg = config(&[DEFAULT_ARGS, &["-o", "5555"]].concat());
    let plan = plan(&cfg, &HostFacts::default());
    let host = FakeHost::new(SAVED_DEFAULT, true);
    let err = run(&cfg, &plan, &host).unwrap_err();
    assert!(matches!(err, InitError::Drift { .. }), "{err}");
    assert!(host.restores().is_empty(), "a refusal changes nothing");
}

#[test]
fn reconcile_replaces_in_one_restore() {
    let cfg = config(&[DEFAULT_ARGS, &["-o", "5555", "--reconcile"]].concat());
    let plan = plan(&cfg, &HostFacts::default());
    let host = FakeHost::new(SAVED_DEFAULT, true);
    assert_eq!(
        run(&cfg, &plan, &host).unwrap(),
        vec![(Family::V4, Outcome::Reconciled)]
    );
    let restores = host.restores();
    assert_eq!(restores.len(), 1);
    assert!(
        restores[0].starts_with("* nat\n-D OUTPUT -j ISTIO_OUTPUT\n"),
        "{}",
        restores[0]
    );
    assert!(restores[0].contains("-A ISTIO_OUTPUT -p udp --dport 5555 -j RETURN\n"));
}

#[test]
fn cleanup_only_removes_what_is_there() {
    let cfg = config(&[DEFAULT_ARGS, &["--cleanup-only"]].concat());
    let plan = plan(&cfg, &HostFacts::default());
    let host = FakeHost::new(SAVED_DEFAULT, true);
    assert_eq!(
        run(&cfg, &plan, &host).unwrap(),
        vec![(Family::V4, Outcome::CleanedUp)]
    );
    let restores = host.restores();
    assert!(restores[0].contains("-X ISTIO_OUTPUT\n"), "{}", restores[0]);
    assert!(!restores[0].contains("-A "), "cleanup adds nothing");

    let host = FakeHost::new("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n", true);
    assert_eq!(
        run(&cfg, &plan, &host).unwrap(),
        vec![(Family::V4, Outcome::NothingToClean)]
    );
}

#[test]
fn no_iptables_at_all_explains_what_to_check() {
    struct Nothing;
    impl Runner for Nothing {
        fn run(&self, cmd: &Cmd) -> Result<Output, InitError> {
            Err(InitError::Spawn {
                command: cmd.to_string(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })
        }
    }
    let cfg = config(DEFAULT_ARGS);
    let err = run(&cfg, &plan(&cfg, &HostFacts::default()), &Nothing)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no usable iptables"), "{err}");
    assert!(err.contains("NET_ADMIN"), "{err}");
}

#[test]
fn dry_run_lists_restores_then_ip_commands() {
    let cfg = config(&[
        "-u",
        "1337",
        "-m",
        "TPROXY",
        "-i",
        "*",
        "-b",
        "*",
        "--force-iptables-binary",
        "legacy",
    ]);
    let plan = plan(
        &cfg,
        &HostFacts {
            ipv6: true,
            ..HostFacts::default()
        },
    );
    let shown: Vec<String> = dry_run_commands(&cfg, &plan)
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        shown,
        vec![
            "iptables-legacy-restore --noflush",
            "ip6tables-legacy-restore --noflush",
            "ip -6 addr add ::6/128 dev lo",
            "ip -4 rule add fwmark 1337 lookup 133",
            "ip -4 route add local 0.0.0.0/0 dev lo table 133",
            "ip -6 rule add fwmark 1337 lookup 133",
            "ip -6 route add local ::/0 dev lo table 133",
        ]
    );
}
