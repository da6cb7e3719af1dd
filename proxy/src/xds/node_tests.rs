use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// A fresh directory for one test's downward-API files.
fn scratch() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "skiff-node-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(
    vars: &[(&str, &str)],
    labels: Option<&str>,
    annotations: Option<&str>,
) -> Result<Node, NodeError> {
    let dir = scratch();
    let (labels_file, annotations_file) = (dir.join("labels"), dir.join("annotations"));
    if let Some(text) = labels {
        std::fs::write(&labels_file, text).unwrap();
    }
    if let Some(text) = annotations {
        std::fs::write(&annotations_file, text).unwrap();
    }
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let names: Vec<String> = map.keys().cloned().collect();
    let env = |name: &str| map.get(name).cloned();
    let result = node_from(&NodeSources {
        env: &env,
        names: &names,
        labels_file: &labels_file,
        annotations_file: &annotations_file,
    });
    std::fs::remove_dir_all(&dir).unwrap();
    result
}

const PROXY_CONFIG: &str = r#"{"discoveryAddress":"istiod.istio-system.svc:15012","concurrency":2,"holdApplicationUntilProxyStarts":true,"proxyMetadata":{"ISTIO_META_DNS_CAPTURE":"true","ISTIO_META_MESH_ID":"from-proxy-config","OTHER":"x"}}"#;
const POD_PORTS: &str = r#"[{"containerPort":9080,"protocol":"TCP"}]"#;

/// What skiff-injector gives the proxy container of a bookinfo reviews Pod.
fn injected() -> Vec<(&'static str, &'static str)> {
    vec![
        ("PILOT_CERT_PROVIDER", "istiod"),
        ("CA_ADDR", "istiod.istio-system.svc:15012"),
        ("POD_NAME", "reviews-v1-5b9c7d-abcde"),
        ("POD_NAMESPACE", "default"),
        ("INSTANCE_IP", "10.1.0.7"),
        ("SERVICE_ACCOUNT", "bookinfo-reviews"),
        ("HOST_IP", "192.168.1.10"),
        ("PROXY_CONFIG", PROXY_CONFIG),
        ("ISTIO_META_POD_PORTS", POD_PORTS),
        ("ISTIO_META_APP_CONTAINERS", "reviews"),
        ("ISTIO_META_CLUSTER_ID", "Kubernetes"),
        ("ISTIO_META_NODE_NAME", "node-1"),
        ("ISTIO_META_INTERCEPTION_MODE", "REDIRECT"),
        ("ISTIO_META_WORKLOAD_NAME", "reviews-v1"),
        (
            "ISTIO_META_OWNER",
            "kubernetes://apis/apps/v1/namespaces/default/deployments/reviews-v1",
        ),
        ("ISTIO_META_MESH_ID", "cluster.local"),
        ("TRUST_DOMAIN", "cluster.local"),
        ("ISTIO_META_ENABLE_HBONE", "true"),
    ]
}

const LABELS: &str = "app=\"reviews\"\nversion=\"v1\"\npod-template-hash=\"5b9c7d\"\n\
                      istio-locality=\"us-east1.us-east1-b\"\n";
const ANNOTATIONS: &str = "kubectl.kubernetes.io/default-container=\"reviews\"\n\
                           sidecar.istio.io/status=\"{\\\"containers\\\":[\\\"istio-proxy\\\"]}\"\n";

fn meta(node: &Node) -> &HashMap<String, Value> {
    &node.metadata.as_ref().unwrap().fields
}

fn text(node: &Node, key: &str) -> Option<String> {
    match meta(node).get(key)?.kind.as_ref()? {
        Kind::StringValue(s) => Some(s.clone()),
        other => panic!("{key} is {other:?}"),
    }
}

fn fields(node: &Node, key: &str) -> HashMap<String, Value> {
    match meta(node).get(key).and_then(|v| v.kind.as_ref()) {
        Some(Kind::StructValue(s)) => s.fields.clone(),
        other => panic!("{key} is {other:?}"),
    }
}

fn s(v: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(v.to_owned())),
    }
}

#[test]
fn injected_pod_gives_istios_node() {
    let node = run(&injected(), Some(LABELS), Some(ANNOTATIONS)).unwrap();
    assert_eq!(
        node.id,
        "sidecar~10.1.0.7~reviews-v1-5b9c7d-abcde.default~default.svc.cluster.local"
    );
    assert_eq!(node.cluster, "reviews.default");
    assert_eq!(node.user_agent_name, "skiff");
    assert_eq!(
        node.user_agent_version_type,
        Some(UserAgentVersionType::UserAgentVersion(
            env!("CARGO_PKG_VERSION").to_owned()
        ))
    );
    assert_eq!(
        node.locality,
        Some(Locality {
            region: "us-east1".into(),
            zone: "us-east1-b".into(),
            sub_zone: String::new(),
        })
    );
    let strings = [
        ("NAMESPACE", "default"),
        ("NAME", "reviews-v1-5b9c7d-abcde"),
        ("INSTANCE_IPS", "10.1.0.7"),
        ("SERVICE_ACCOUNT", "bookinfo-reviews"),
        ("CLUSTER_ID", "Kubernetes"),
        ("MESH_ID", "cluster.local"),
        ("WORKLOAD_NAME", "reviews-v1"),
        (
            "OWNER",
            "kubernetes://apis/apps/v1/namespaces/default/deployments/reviews-v1",
        ),
        ("INTERCEPTION_MODE", "REDIRECT"),
        ("POD_PORTS", POD_PORTS),
        ("NODE_NAME", "node-1"),
        ("APP_CONTAINERS", "reviews"),
        ("ISTIO_VERSION", DEFAULT_ISTIO_VERSION),
        ("DNS_CAPTURE", "true"),
    ];
    for (key, value) in strings {
        assert_eq!(text(&node, key).as_deref(), Some(value), "{key}");
    }
    assert_eq!(
        meta(&node)["ENVOY_STATUS_PORT"].kind,
        Some(Kind::NumberValue(15021.0))
    );
    assert_eq!(
        meta(&node)["ENVOY_PROMETHEUS_PORT"].kind,
        Some(Kind::NumberValue(15090.0))
    );
    assert_eq!(
        fields(&node, "LABELS"),
        HashMap::from([
            ("app".to_owned(), s("reviews")),
            ("version".to_owned(), s("v1")),
            ("istio-locality".to_owned(), s("us-east1/us-east1-b")),
        ])
    );
    assert_eq!(
        fields(&node, "ANNOTATIONS"),
        HashMap::from([
            (
                "kubectl.kubernetes.io/default-container".to_owned(),
                s("reviews")
            ),
            (
                "sidecar.istio.io/status".to_owned(),
                s(r#"{"containers":["istio-proxy"]}"#)
            ),
        ])
    );
    let proxy_config = fields(&node, "PROXY_CONFIG");
    assert_eq!(
        proxy_config["discoveryAddress"],
        s("istiod.istio-system.svc:15012")
    );
    assert_eq!(
        proxy_config["concurrency"].kind,
        Some(Kind::NumberValue(2.0))
    );
    assert_eq!(
        proxy_config["holdApplicationUntilProxyStarts"].kind,
        Some(Kind::BoolValue(true))
    );
    let mut keys: Vec<&str> = meta(&node).keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        vec![
            "ANNOTATIONS",
            "APP_CONTAINERS",
            "CLUSTER_ID",
            "DNS_CAPTURE",
            "ENVOY_PROMETHEUS_PORT",
            "ENVOY_STATUS_PORT",
            "INSTANCE_IPS",
            "INTERCEPTION_MODE",
            "ISTIO_VERSION",
            "LABELS",
            "MESH_ID",
            "NAME",
            "NAMESPACE",
            "NODE_NAME",
            "OWNER",
            "POD_PORTS",
            "PROXY_CONFIG",
            "SERVICE_ACCOUNT",
            "WORKLOAD_NAME",
        ]
    );
}

fn without(drop: &str) -> Vec<(&'static str, &'static str)> {
    injected().into_iter().filter(|(k, _)| *k != drop).collect()
}

fn with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut vars: Vec<_> = injected()
        .into_iter()
        .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
        .collect();
    vars.extend_from_slice(extra);
    vars
}

#[test]
fn minimal_environment_gets_the_defaults() {
    let vars = [
        ("POD_NAME", "p"),
        ("POD_NAMESPACE", "ns"),
        ("INSTANCE_IP", "10.0.0.1"),
    ];
    let node = run(&vars, None, None).unwrap();
    assert_eq!(node.id, "sidecar~10.0.0.1~p.ns~ns.svc.cluster.local");
    assert_eq!(node.cluster, "istio-proxy.ns");
    assert_eq!(node.locality, None);
    assert_eq!(text(&node, "CLUSTER_ID").as_deref(), Some("Kubernetes"));
    assert_eq!(
        text(&node, "INTERCEPTION_MODE").as_deref(),
        Some("REDIRECT")
    );
    for absent in ["SERVICE_ACCOUNT", "LABELS", "ANNOTATIONS", "PROXY_CONFIG"] {
        assert!(!meta(&node).contains_key(absent), "{absent}");
    }
}

#[test]
fn missing_and_invalid_variables_are_named() {
    for var in ["POD_NAME", "POD_NAMESPACE", "INSTANCE_IP"] {
        let err = run(&without(var), None, None).unwrap_err();
        assert!(
            matches!(&err, NodeError::Missing { var: v, .. } if *v == var),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("environment variable {var} is not set; set it"))
        );
        // An empty value counts as missing.
        let err = run(&with(&[(var, "")]), None, None).unwrap_err();
        assert!(matches!(&err, NodeError::Missing { var: v, .. } if *v == var));
    }
    let err = run(&with(&[("INSTANCE_IP", "pod-ip")]), None, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "environment variable INSTANCE_IP is invalid: \"pod-ip\" is not an IP address; set it \
         to the Pod's IP (fieldRef status.podIP), or several separated by commas"
    );
    for bad in ["{not json", "[1,2]"] {
        let err = run(&with(&[("PROXY_CONFIG", bad)]), None, None).unwrap_err();
        assert!(
            matches!(
                err,
                NodeError::Invalid {
                    var: "PROXY_CONFIG",
                    ..
                }
            ),
            "{err:?}"
        );
    }
    let err = run(
        &with(&[("ISTIO_METAJSON_LABELS", r#"{"a":1}"#)]),
        None,
        None,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        NodeError::Invalid {
            var: "ISTIO_METAJSON_LABELS",
            ..
        }
    ));
}

#[test]
fn several_instance_ips() {
    let node = run(
        &with(&[("INSTANCE_IP", "10.1.0.7, fd00::7,10.1.0.7")]),
        None,
        None,
    )
    .unwrap();
    assert!(node.id.starts_with("sidecar~10.1.0.7~"));
    assert_eq!(
        text(&node, "INSTANCE_IPS").as_deref(),
        Some("10.1.0.7,fd00::7")
    );
}

#[test]
fn service_cluster_follows_istio() {
    let cluster = |extra: &[(&'static str, &'static str)], labels: Option<&str>| {
        run(&with(extra), labels, None).unwrap().cluster
    };
    assert_eq!(cluster(&[], Some(LABELS)), "reviews.default", "app label");
    assert_eq!(cluster(&[], None), "reviews-v1.default", "workload name");
    assert_eq!(
        cluster(
            &[("PROXY_CONFIG", r#"{"serviceCluster":"custom"}"#)],
            Some(LABELS)
        ),
        "custom"
    );
    assert_eq!(
        cluster(
            &[("PROXY_CONFIG", r#"{"serviceCluster":"istio-proxy"}"#)],
            Some(LABELS)
        ),
        "reviews.default"
    );
    let canonical = "service.istio.io/canonical-name=\"reviews-canon\"\napp=\"reviews\"\n";
    assert_eq!(
        cluster(
            &[(
                "PROXY_CONFIG",
                r#"{"tracingServiceName":"CANONICAL_NAME_AND_NAMESPACE"}"#
            )],
            Some(canonical)
        ),
        "reviews-canon.default"
    );
    assert_eq!(
        cluster(
            &[(
                "PROXY_CONFIG",
                r#"{"tracingServiceName":"CANONICAL_NAME_ONLY"}"#
            )],
            Some(canonical)
        ),
        "reviews-canon"
    );
}

#[test]
fn version_and_domain_overrides() {
    let node = run(&with(&[("ISTIO_VERSION", "1.22.3")]), None, None).unwrap();
    assert_eq!(text(&node, "ISTIO_VERSION").as_deref(), Some("1.22.3"));
    let node = run(
        &with(&[
            ("ISTIO_VERSION", "1.22.3"),
            ("ISTIO_META_ISTIO_VERSION", "1.23.0"),
        ]),
        None,
        None,
    )
    .unwrap();
    assert_eq!(text(&node, "ISTIO_VERSION").as_deref(), Some("1.23.0"));
    let node = run(
        &with(&[("ISTIO_META_DNS_DOMAIN", "default.svc.corp.example")]),
        None,
        None,
    )
    .unwrap();
    assert_eq!(
        node.id,
        "sidecar~10.1.0.7~reviews-v1-5b9c7d-abcde.default~default.svc.corp.example"
    );
    // The typed keys come from their own variables, not from ISTIO_META_ look-alikes.
    let node = run(&with(&[("ISTIO_META_NAMESPACE", "spoofed")]), None, None).unwrap();
    assert_eq!(text(&node, "NAMESPACE").as_deref(), Some("default"));
}

#[test]
fn labels_and_annotations_from_json_and_files() {
    let vars = with(&[
        ("ISTIO_METAJSON_LABELS", r#"{"app":"from-json","team":"a"}"#),
        ("ISTIO_METAJSON_ANNOTATIONS", r#"{"note":"x"}"#),
    ]);
    let node = run(&vars, Some("app=\"from-file\"\n"), None).unwrap();
    assert_eq!(
        fields(&node, "LABELS"),
        HashMap::from([
            ("app".to_owned(), s("from-file")),
            ("team".to_owned(), s("a")),
        ])
    );
    assert_eq!(
        fields(&node, "ANNOTATIONS"),
        HashMap::from([("note".to_owned(), s("x"))])
    );
    let err = run(&injected(), Some("app=reviews\n"), None).unwrap_err();
    match err {
        NodeError::File { path, reason } => {
            assert!(path.ends_with("labels"), "{path:?}");
            assert_eq!(reason, "line 1: reviews is not a double-quoted string");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unquote_reads_go_quoting() {
    assert_eq!(unquote(r#""plain""#).unwrap(), "plain");
    assert_eq!(unquote(r#""""#).unwrap(), "");
    assert_eq!(
        unquote(r#""a\"b\\c\n\t\x41\101\u00e9\U0001F600""#).unwrap(),
        "a\"b\\c\n\tAAé😀"
    );
    assert_eq!(unquote("\"ünïcode\"").unwrap(), "ünïcode");
    for bad in [
        r#"noquotes"#,
        r#"""#,
        r#""a"b""#,
        r#""\q""#,
        r#""\x4""#,
        r#""\""#,
        r#""\xff""#,
    ] {
        assert!(unquote(bad).is_err(), "{bad}");
    }
}

#[test]
fn node_reads_the_process_environment_names() {
    // Values come from the closure; names the process has but the closure lacks are skipped.
    let env = |name: &str| match name {
        "POD_NAME" => Some("p".to_owned()),
        "POD_NAMESPACE" => Some("ns".to_owned()),
        "INSTANCE_IP" => Some("10.0.0.1".to_owned()),
        _ => None,
    };
    let node = node(&env).unwrap();
    assert_eq!(node.id, "sidecar~10.0.0.1~p.ns~ns.svc.cluster.local");
}
