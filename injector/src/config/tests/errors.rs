//! Refused configs: every message names the key (with its path), the value and the fix,
//! and the file and line when there is one.

use super::*;

#[test]
fn unknown_keys_are_named_with_their_place() {
    let cases = [
        ("proxyImag: x/y:1\n", "proxyImag", 1),
        ("logLevel: info\nfooBar: 1\n", "fooBar", 2),
        (
            "traffic:\n  excludeInboundPort: \"80\"\n",
            "excludeInboundPort",
            2,
        ),
        ("resources:\n  requests:\n    gpu: 1\n", "gpu", 3),
        ("startupProbe:\n  period: 1\n", "period", 2),
        (
            "neverInjectSelector:\n  - matchLabel: {a: b}\n",
            "matchLabel",
            2,
        ),
        // Istio's own value names are not Skiff's; they must not be silently ignored.
        (
            "includeOutboundIPRanges: \"*\"\n",
            "includeOutboundIPRanges",
            1,
        ),
    ];
    for (text, key, line) in cases {
        let e = fail(text);
        let message = e.to_string();
        assert!(
            message.contains(&format!("unknown field `{key}`")),
            "{text:?}: {message}"
        );
        match e {
            ConfigError::Yaml { line: got, .. } => assert_eq!(got, Some(line), "{message}"),
            other => panic!("{text:?}: expected a YAML error, got {other:?}"),
        }
        assert!(
            message.starts_with(&format!("injection config at line {line} column ")),
            "{message}"
        );
    }
}

#[test]
fn bad_values_name_the_key_the_value_and_the_fix() {
    let cases = [
        ("policy: maybe", "policy", "\"enabled\""),
        ("revision: \"Bad Rev\"", "revision", "not a label value"),
        ("proxyImage: \"\"", "proxyImage", "is empty"),
        ("initImage: \"a b\"", "initImage", "whitespace"),
        (
            "imagePullPolicy: Sometimes",
            "imagePullPolicy",
            "IfNotPresent",
        ),
        (
            "imagePullSecrets: [Bad_Name]",
            "imagePullSecrets[0]",
            "Secret name",
        ),
        ("logLevel: verbose", "logLevel", "is not a proxy log level"),
        (
            "componentLogLevel: misc",
            "componentLogLevel",
            "component:level",
        ),
        (
            "agentLogLevel: \"default:loud\"",
            "agentLogLevel",
            "is not a level",
        ),
        (
            "discoveryAddress: istiod",
            "discoveryAddress",
            "port is missing",
        ),
        ("caAddress: \"ca:0\"", "caAddress", "1 to 65535"),
        (
            "clusterDomain: Cluster.Local",
            "clusterDomain",
            "DNS domain",
        ),
        ("clusterId: \"\"", "clusterId", "is empty"),
        ("network: \"-net\"", "network", "label value"),
        (
            "interceptionMode: redirect",
            "interceptionMode",
            "REDIRECT, TPROXY or NONE",
        ),
        ("statusPort: 70000", "statusPort", "is not a status port"),
        (
            "statusPort: 15021",
            "statusPort",
            "ports the sidecar itself uses",
        ),
        (
            "readinessPeriodSeconds: 0",
            "readinessPeriodSeconds",
            "from 1",
        ),
        (
            "readinessInitialDelaySeconds: -1",
            "readinessInitialDelaySeconds",
            "from 0",
        ),
        (
            "readinessFailureThreshold: 3000000000",
            "readinessFailureThreshold",
            "2147483647",
        ),
        (
            "startupProbe: {failureThreshold: 0}",
            "startupProbe.failureThreshold",
            "from 1",
        ),
        (
            "resources: {limits: {cpu: 2x}}",
            "resources.limits.cpu",
            "not a Kubernetes quantity",
        ),
        (
            "resources: {requests: {memory: -1Gi}}",
            "resources.requests.memory",
            "negative",
        ),
        (
            "traffic: {includeOutboundIPRanges: \"10.0.0.0/33\"}",
            "traffic.includeOutboundIPRanges",
            "prefix length",
        ),
        (
            "traffic: {excludeOutboundIPRanges: \"*\"}",
            "traffic.excludeOutboundIPRanges",
            "CIDR",
        ),
        (
            "traffic: {includeInboundPorts: \"80,*\"}",
            "traffic.includeInboundPorts",
            "not a port",
        ),
        (
            "traffic: {excludeInboundPorts: http}",
            "traffic.excludeInboundPorts",
            "not a port",
        ),
        (
            "traffic: {includeOutboundPorts: 0}",
            "traffic.includeOutboundPorts",
            "not a port",
        ),
        (
            "traffic: {excludeOutboundPorts: [[1]]}",
            "traffic.excludeOutboundPorts[0]",
            "a string or a number",
        ),
        (
            "proxyEnv: {\"1BAD\": x}",
            "proxyEnv",
            "environment variable name",
        ),
        (
            "proxyMetadata: {\"A=B\": x}",
            "proxyMetadata",
            "environment variable name",
        ),
        (
            "neverInjectSelector: [{matchExpressions: [{key: a, operator: Like}]}]",
            "neverInjectSelector[0].matchExpressions[0].operator",
            "unknown operator",
        ),
        ("nativeSidecar: yes please", "nativeSidecar", "invalid type"),
    ];
    let mut wrong = Vec::new();
    for (text, key, fragment) in cases {
        let message = fail(text).to_string();
        if !message.contains(&format!("{key}: ")) || !message.contains(fragment) {
            wrong.push(format!("{text:?} (want {key:?}, {fragment:?}): {message}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn values_are_located_at_their_own_line() {
    // The error points at the value, not at the mapping that holds it.
    let e = fail("logLevel: info\ntraffic:\n  excludeInboundPorts: http\n");
    match &e {
        ConfigError::Yaml { line, column, .. } => {
            assert_eq!((*line, *column), (Some(3), Some(24)), "{e}");
        }
        other => panic!("expected a YAML error, got {other:?}"),
    }
    assert_eq!(
        e.to_string(),
        "injection config at line 3 column 24: traffic.excludeInboundPorts: \"http\" is not a \
         port list: \"http\" is not a port (1-65535)"
    );
}

#[test]
fn invalid_selectors_are_refused_with_their_place_in_the_list() {
    let e = fail(
        "alwaysInjectSelector:\n  - matchLabels: {a: b}\n  - matchExpressions: [{key: x, \
         operator: In}]\n",
    );
    match &e {
        ConfigError::Invalid { field, reason, .. } => {
            assert_eq!(field, "alwaysInjectSelector[1].matchExpressions[0].values");
            assert!(reason.contains("needs at least one value"), "{reason}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    let e = fail("neverInjectSelector: [{matchLabels: {\"bad key!\": x}}]");
    assert!(
        e.to_string().contains("neverInjectSelector[0].matchLabels"),
        "{e}"
    );
}

#[test]
fn not_a_mapping_is_refused() {
    for text in ["[1, 2]", "just text", "42"] {
        assert!(matches!(fail(text), ConfigError::Yaml { .. }), "{text:?}");
    }
    let e = fail("logLevel: [unclosed");
    assert!(
        matches!(e, ConfigError::Yaml { line: Some(_), .. }),
        "{e:?}"
    );
}

#[test]
fn load_names_the_file() {
    let dir = std::env::temp_dir().join(format!("skiff-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let good = dir.join("good.yaml");
    std::fs::write(&good, "statusPort: 15030\n").expect("write");
    assert_eq!(
        InjectionConfig::load(&good).expect("loads").status_port,
        15030
    );

    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "logLevel: info\nbogus: true\n").expect("write");
    let message = InjectionConfig::load(&bad)
        .expect_err("refused")
        .to_string();
    let head = format!("injection config {} at line 2 column 1: ", bad.display());
    assert!(message.starts_with(&head), "{message}");
    assert!(message.contains("unknown field `bogus`"), "{message}");

    let selector = dir.join("selector.yaml");
    std::fs::write(
        &selector,
        "neverInjectSelector: [{matchExpressions: [{key: a, operator: Exists, values: [x]}]}]\n",
    )
    .expect("write");
    let message = InjectionConfig::load(&selector)
        .expect_err("refused")
        .to_string();
    assert!(
        message.starts_with(&format!("injection config {}: ", selector.display())),
        "{message}"
    );
    assert!(message.contains("takes no values"), "{message}");

    let missing = dir.join("missing.yaml");
    let e = InjectionConfig::load(&missing).expect_err("missing");
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(
        e.to_string().contains(&missing.display().to_string()),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn odd_input_never_panics() {
    let inputs = [
        "\u{0}",
        "a: &x [*x]",
        "traffic: {includeOutboundIPRanges: *}",
        "resources: {requests: {cpu: {a: 1}}}",
        "statusPort: -1",
        "proxyEnv: [1, 2]",
        "- - - -",
        "{{{{{{{{{{{{",
        "neverInjectSelector: {a: b}",
        "policy: [enabled]",
        "traffic: [1]",
    ];
    for text in inputs {
        assert!(InjectionConfig::from_yaml(text).is_err(), "{text:?}");
    }
}
