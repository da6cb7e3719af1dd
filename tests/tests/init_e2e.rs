//! skiff-init on a real kernel: the real binary programs a throw-away "pod" namespace, and
//! real connections (with SO_ORIGINAL_DST, as the proxy reads it) show where traffic goes.

use std::net::{SocketAddr, UdpSocket};
use std::process::Output;

use skiff_tests::net::{
    ARRIVAL, accept_within, connect, echo_once, has_pending, listen, recv_within, roundtrip,
};
use skiff_tests::netns::{Netns, PodPair};
use skiff_tests::{binary, can_run_as_root};

use skiff_init::flags::INJECTED_DEFAULT_ARGS as INJECTED;
const PROXY: Option<(u32, u32)> = Some((1337, 1337));

fn skiff_init(ns: &Netns, args: &[String]) -> Output {
    skiff_init_env(ns, args, &[])
}

fn skiff_init_env(ns: &Netns, args: &[String], env: &[(&str, &str)]) -> Output {
    let bin = binary("skiff-init");
    let mut cmd = ns.command(bin.to_str().unwrap());
    cmd.args(args).envs(env.iter().copied());
    cmd.output().expect("run skiff-init")
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "skiff-init failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The injected arguments followed by `extra`.
fn args(extra: &[&str]) -> Vec<String> {
    INJECTED
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

/// `iptables-save` without comments and counters, which change between runs.
fn saved(ns: &Netns, program: &str) -> String {
    let out = ns.command(program).output().expect("iptables-save");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            if l.starts_with(':') {
                l.split(" [").next().unwrap_or(l)
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn sock(ip: impl Into<std::net::IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

#[test]
fn outbound_is_redirected_to_15001_with_the_original_destination() {
    if !can_run_as_root("outbound_is_redirected_to_15001_with_the_original_destination") {
        return;
    }
    let pair = PodPair::new("out").unwrap();
    ok(skiff_init(&pair.pod, &args(&["--ipv6", "false"])));
    let outbound = pair.pod.run(|| listen(sock([0, 0, 0, 0], 15001))).unwrap();
    let peer = sock(PodPair::PEER_V4, 8080);

    let app = pair.pod.run(move || connect(peer));
    assert!(
        app.is_ok(),
        "connect should reach the capture port: {app:?}"
    );
    let (_, original) = accept_within(&outbound, ARRIVAL)
        .unwrap()
        .expect("redirected to 15001");
    assert_eq!(original, peer);
}

#[test]
fn proxy_uid_traffic_is_not_redirected() {
    if !can_run_as_root("proxy_uid_traffic_is_not_redirected") {
        return;
    }
    let pair = PodPair::new("uid").unwrap();
    ok(skiff_init(&pair.pod, &args(&["--ipv6", "false"])));
    let outbound = pair.pod.run(|| listen(sock([0, 0, 0, 0], 15001))).unwrap();
    let server = echo_once(pair.peer.run(|| listen(sock([0, 0, 0, 0], 8080))).unwrap());
    let peer = sock(PodPair::PEER_V4, 8080);

    let echoed = pair
        .pod
        .run_as(PROXY, move || roundtrip(&mut connect(peer)?, b"hello"));
    assert_eq!(echoed.unwrap(), b"hello");
    assert_eq!(
        server.join().unwrap().unwrap(),
        peer,
        "the peer saw the real destination"
    );
    assert!(
        !has_pending(&outbound).unwrap(),
        "uid 1337 must not be captured"
    );
}

#[test]
fn inbound_is_redirected_to_15006_except_excluded_ports_and_loopback() {
    if !can_run_as_root("inbound_is_redirected_to_15006_except_excluded_ports_and_loopback") {
        return;
    }
    let pair = PodPair::new("in").unwrap();
    ok(skiff_init(&pair.pod, &args(&["--ipv6", "false"])));
    let inbound = pair.pod.run(|| listen(sock([0, 0, 0, 0], 15006))).unwrap();
    let outbound = pair.pod.run(|| listen(sock([0, 0, 0, 0], 15001))).unwrap();
    let health = pair.pod.run(|| listen(sock([0, 0, 0, 0], 15021))).unwrap();

    let app_port = sock(PodPair::POD_V4, 9080);
    pair.peer.run(move || connect(app_port)).unwrap();
    let (_, original) = accept_within(&inbound, ARRIVAL)
        .unwrap()
        .expect("redirected to 15006");
    assert_eq!(original, app_port);

    let health_port = sock(PodPair::POD_V4, 15021);
    pair.peer.run(move || connect(health_port)).unwrap();
    assert!(
        accept_within(&health, ARRIVAL).unwrap().is_some(),
        "15021 is reached directly"
    );
    assert!(
        !has_pending(&inbound).unwrap(),
        "15021 must not be captured"
    );

    let local = pair.pod.run(|| listen(sock([127, 0, 0, 1], 7000))).unwrap();
    let server = echo_once(local);
    let echoed = pair
        .pod
        .run(|| roundtrip(&mut connect(sock([127, 0, 0, 1], 7000))?, b"lo"));
    assert_eq!(echoed.unwrap(), b"lo");
    assert_eq!(server.join().unwrap().unwrap(), sock([127, 0, 0, 1], 7000));
    assert!(
        !has_pending(&outbound).unwrap(),
        "127.0.0.1 must not be captured"
    );
}

#[test]
fn excluded_cidr_and_excluded_outbound_port_are_not_redirected() {
    if !can_run_as_root("excluded_cidr_and_excluded_outbound_port_are_not_redirected") {
        return;
    }
    let pair = PodPair::new("excl").unwrap();
    pair.peer
        .ip(&["addr", "add", "10.77.0.3/24", "dev", "eth0"])
        .unwrap();
    ok(skiff_init(
        &pair.pod,
        &args(&["--ipv6", "false", "-x", "10.77.0.3/32", "-o", "5555"]),
    ));
    let outbound = pair.pod.run(|| listen(sock([0, 0, 0, 0], 15001))).unwrap();

    for (target, port) in [([10, 77, 0, 3], 8080), ([10, 77, 0, 2], 5555)] {
        let server = echo_once(
            pair.peer
                .run(move || listen(sock([0, 0, 0, 0], port)))
                .unwrap(),
        );
        let dest = sock(target, port);
        let echoed = pair
            .pod
            .run(move || roundtrip(&mut connect(dest)?, b"direct"));
        assert_eq!(
            echoed.unwrap(),
            b"direct",
            "{dest} should be reached directly"
        );
        assert_eq!(server.join().unwrap().unwrap(), dest);
        assert!(
            !has_pending(&outbound).unwrap(),
            "{dest} must not be captured"
        );
    }

    // The same peer on a port that is not excluded is still captured: the rules are live.
    let captured = sock(PodPair::PEER_V4, 8080);
    pair.pod.run(move || connect(captured)).unwrap();
    assert_eq!(
        accept_within(&outbound, ARRIVAL)
            .unwrap()
            .expect("captured")
            .1,
        captured
    );
}

#[test]
fn ipv6_is_captured_both_ways_when_enabled() {
    if !can_run_as_root("ipv6_is_captured_both_ways_when_enabled") {
        return;
    }
    let pair = PodPair::new("v6").unwrap();
    ok(skiff_init(&pair.pod, &args(&["--ipv6", "true"])));
    let outbound = pair
        .pod
        .run(|| listen("[::]:15001".parse().unwrap()))
        .unwrap();
    let inbound = pair
        .pod
        .run(|| listen("[::]:15006".parse().unwrap()))
        .unwrap();

    let peer = sock(PodPair::PEER_V6, 8080);
    pair.pod.run(move || connect(peer)).unwrap();
    assert_eq!(
        accept_within(&outbound, ARRIVAL)
            .unwrap()
            .expect("v6 outbound")
            .1,
        peer
    );

    let app = sock(PodPair::POD_V6, 9080);
    pair.peer.run(move || connect(app)).unwrap();
    assert_eq!(
        accept_within(&inbound, ARRIVAL)
            .unwrap()
            .expect("v6 inbound")
            .1,
        app
    );

    let lo = pair.pod.ip(&["-6", "addr", "show", "dev", "lo"]).unwrap();
    assert!(
        String::from_utf8_lossy(&lo.stdout).contains("::6/128"),
        "::6 must be on lo"
    );
    assert!(
        saved(&pair.pod, "ip6tables-save").contains("-A ISTIO_OUTPUT -s ::6/128 -o lo -j RETURN")
    );
}

#[test]
fn dns_capture_redirects_udp_and_tcp_port_53_to_15053() {
    if !can_run_as_root("dns_capture_redirects_udp_and_tcp_port_53_to_15053") {
        return;
    }
    let pair = PodPair::new("dns").unwrap();
    let server = PodPair::PEER_V4.to_string();
    ok(skiff_init(
        &pair.pod,
        &args(&[
            "--ipv6",
            "false",
            "--redirect-dns",
            "--dns-servers",
            &server,
        ]),
    ));
    let agent_udp = pair.pod.run(|| UdpSocket::bind("0.0.0.0:15053")).unwrap();
    let agent_tcp = pair.pod.run(|| listen(sock([0, 0, 0, 0], 15053))).unwrap();

    let resolver = sock(PodPair::PEER_V4, 53);
    pair.pod
        .run(move || UdpSocket::bind("0.0.0.0:0")?.send_to(b"query", resolver))
        .unwrap();
    assert_eq!(
        recv_within(&agent_udp, ARRIVAL).unwrap().as_deref(),
        Some(&b"query"[..])
    );

    pair.pod.run(move || connect(resolver)).unwrap();
    assert_eq!(
        accept_within(&agent_tcp, ARRIVAL)
            .unwrap()
            .expect("tcp/53 captured")
            .1,
        resolver
    );
}

#[test]
fn reruns_are_safe_and_cleanup_removes_only_ours() {
    if !can_run_as_root("reruns_are_safe_and_cleanup_removes_only_ours") {
        return;
    }
    for flavor in ["nft", "legacy"] {
        let ns = Netns::new(&format!("rerun-{flavor}")).unwrap();
        let env = [("FORCE_IPTABLES_BINARY", flavor)];
        let save = format!("iptables-{flavor}-save");
        let restore = format!("iptables-{flavor}-restore");
        // A rule that is not ours, which nothing may remove.
        let mut foreign = ns.command(&restore);
        foreign.arg("--noflush").stdin(std::process::Stdio::piped());
        let mut child = foreign.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"*nat\n-A OUTPUT -d 192.0.2.1/32 -j RETURN\nCOMMIT\n")
            .unwrap();
        assert!(child.wait().unwrap().success());

        let base = args(&["--ipv6", "false"]);
        ok(skiff_init_env(&ns, &base, &env));
        let first = saved(&ns, &save);
        assert!(
            first.contains(":ISTIO_OUTPUT"),
            "{flavor}: rules applied:\n{first}"
        );

        ok(skiff_init_env(&ns, &base, &env));
        assert_eq!(
            saved(&ns, &save),
            first,
            "{flavor}: a re-run with the same flags changes nothing"
        );

        let changed = args(&["--ipv6", "false", "-o", "5555"]);
        let refused = skiff_init_env(&ns, &changed, &env);
        assert!(
            !refused.status.success(),
            "{flavor}: different flags must not apply silently"
        );
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("--reconcile"), "{flavor}: {stderr}");
        assert_eq!(
            saved(&ns, &save),
            first,
            "{flavor}: a refusal changes nothing"
        );

        let reconcile = args(&["--ipv6", "false", "-o", "5555", "--reconcile"]);
        ok(skiff_init_env(&ns, &reconcile, &env));
        let reconciled = saved(&ns, &save);
        assert!(
            reconciled.contains("--dport 5555 -j RETURN"),
            "{flavor}:\n{reconciled}"
        );
        ok(skiff_init_env(&ns, &changed, &env));
        assert_eq!(
            saved(&ns, &save),
            reconciled,
            "{flavor}: the reconciled rules are a no-op re-run"
        );

        ok(skiff_init_env(
            &ns,
            &args(&["--ipv6", "false", "--cleanup-only"]),
            &env,
        ));
        let cleaned = saved(&ns, &save);
        assert!(
            !cleaned.contains("ISTIO_"),
            "{flavor}: no Skiff chain or jump left:\n{cleaned}"
        );
        assert!(
            cleaned.contains("-A OUTPUT -d 192.0.2.1/32 -j RETURN"),
            "{flavor}: foreign rule kept"
        );
    }
}

#[test]
fn every_variation_is_accepted_by_the_kernel_and_cleans_up() {
    if !can_run_as_root("every_variation_is_accepted_by_the_kernel_and_cleans_up") {
        return;
    }
    type Env = &'static [(&'static str, &'static str)];
    let variations: &[(&str, &[&str], Env)] = &[
        (
            "tproxy",
            &["-m", "TPROXY", "--ipv6", "true", "-c", "eth9"],
            &[],
        ),
        (
            "tproxy-ports",
            &["-m", "TPROXY", "-b", "8080,9090", "--ipv6", "false"],
            &[],
        ),
        (
            "dns",
            &[
                "--redirect-dns",
                "--dns-servers",
                "10.96.0.10,fd00::a",
                "--ipv6",
                "true",
            ],
            &[],
        ),
        (
            "dns-all",
            &["--redirect-dns", "--capture-all-dns", "--ipv6", "false"],
            &[],
        ),
        ("drop-invalid", &["--drop-invalid", "--ipv6", "false"], &[]),
        (
            "virt",
            &["-k", "eth1,eth2", "-i", "10.0.0.0/8", "--ipv6", "false"],
            &[],
        ),
        (
            "ports",
            &[
                "-q",
                "32000",
                "-o",
                "5555",
                "-x",
                "10.96.0.0/12",
                "--ipv6",
                "false",
            ],
            &[],
        ),
        (
            "groups",
            &["--ipv6", "false"],
            &[("ISTIO_OUTBOUND_OWNER_GROUPS", "1000,2000")],
        ),
        (
            "groups-ex",
            &["--ipv6", "false"],
            &[("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "1000")],
        ),
    ];
    for (name, extra, env) in variations {
        let ns = Netns::new(name).unwrap();
        ok(skiff_init_env(&ns, &args(extra), env));
        ok(skiff_init_env(&ns, &args(extra), env));
        let mut cleanup = args(extra);
        cleanup.push("--cleanup-only".into());
        ok(skiff_init_env(&ns, &cleanup, env));
        for save in ["iptables-save", "ip6tables-save"] {
            let left = saved(&ns, save);
            assert!(
                !left.contains("ISTIO_"),
                "{name}: {save} still has Skiff rules:\n{left}"
            );
        }
        if name.starts_with("tproxy") {
            let rules = ns.ip(&["rule", "show"]).unwrap();
            assert!(
                !String::from_utf8_lossy(&rules.stdout).contains("fwmark 0x539"),
                "{name}: ip rule left"
            );
        }
    }
}

#[test]
fn tproxy_sets_up_policy_routing() {
    if !can_run_as_root("tproxy_sets_up_policy_routing") {
        return;
    }
    let ns = Netns::new("tproute").unwrap();
    ok(skiff_init(&ns, &args(&["-m", "TPROXY", "--ipv6", "false"])));
    let rules = String::from_utf8_lossy(&ns.ip(&["rule", "show"]).unwrap().stdout).into_owned();
    assert!(rules.contains("fwmark 0x539 lookup 133"), "{rules}");
    let routes =
        String::from_utf8_lossy(&ns.ip(&["route", "show", "table", "133"]).unwrap().stdout)
            .into_owned();
    assert!(routes.contains("local default dev lo"), "{routes}");
}

#[test]
fn validation_passes_with_rules_and_fails_with_126_without() {
    if !can_run_as_root("validation_passes_with_rules_and_fails_with_126_without") {
        return;
    }
    let ns = Netns::new("valid").unwrap();
    ok(skiff_init(&ns, &args(&["--ipv6", "false"])));
    ok(skiff_init(
        &ns,
        &args(&["--ipv6", "false", "--run-validation", "--skip-rule-apply"]),
    ));

    let bare = Netns::new("invalid").unwrap();
    let out = skiff_init(
        &bare,
        &args(&[
            "--ipv6",
            "false",
            "--run-validation",
            "--skip-rule-apply",
            "--probe-timeout",
            "1s",
        ]),
    );
    assert_eq!(out.status.code(), Some(126));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("iptables validation failed"), "{stderr}");
}

#[test]
fn network_namespace_flag_programs_that_namespace() {
    if !can_run_as_root("network_namespace_flag_programs_that_namespace") {
        return;
    }
    let ns = Netns::new("nsflag").unwrap();
    let all = args(&["--ipv6", "false", "--network-namespace", &ns.path()]);
    let out = std::process::Command::new(binary("skiff-init"))
        .args(&all)
        .output()
        .unwrap();
    ok(out);
    assert!(saved(&ns, "iptables-save").contains(":ISTIO_OUTPUT"));
}

#[test]
fn bad_input_exits_2_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["-x", "*"], "-x/--istio-service-exclude-cidr"),
        (&["-i", "10.0.0.0/40"], "-i/--istio-service-cidr"),
        (&["-b", "*", "-d", "http"], "-d/--istio-local-exclude-ports"),
        (&["-m", "NONE"], "REDIRECT or TPROXY"),
        (&["--no-such-flag"], "--no-such-flag"),
    ];
    for (args, expected) in cases {
        let out = std::process::Command::new(binary("skiff-init"))
            .args(*args)
            .arg("--dry-run")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn dry_run_prints_the_restore_command_and_its_input() {
    let out = std::process::Command::new(binary("skiff-init"))
        .args(INJECTED)
        .args(["--dry-run", "--ipv6", "false"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&ok(out).stdout).into_owned();
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("iptables-restore --noflush"));
    assert_eq!(lines.next(), Some("* nat"));
    assert_eq!(stdout.lines().last(), Some("COMMIT"));
    assert!(stdout.contains("-A ISTIO_OUTPUT -j ISTIO_REDIRECT\n"));
}
