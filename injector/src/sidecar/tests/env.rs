//! The proxy's and the init container's environment: names and order from spec section 2
//! and Istio's template, values from the config defaults and the pod.

use k8s_openapi::api::core::v1::EnvVarSource;

use super::*;

fn names(c: &Container) -> Vec<String> {
    env_of(c).iter().map(|e| e.name.clone()).collect()
}

fn source(c: &Container, name: &str) -> Option<EnvVarSource> {
    env_of(c)
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value_from.clone())
}

fn field_path(c: &Container, name: &str) -> Option<String> {
    source(c, name)
        .and_then(|s| s.field_ref)
        .map(|f| f.field_path)
}

#[test]
fn default_proxy_env_in_istios_order() {
    let s = inject(&[]);
    let p = &s.proxy;
    assert_eq!(
        names(p),
        strings(&[
            "PILOT_CERT_PROVIDER",
            "CA_ADDR",
            "POD_NAME",
            "POD_NAMESPACE",
            "INSTANCE_IP",
            "SERVICE_ACCOUNT",
            "HOST_IP",
            "ISTIO_CPU_LIMIT",
            "PROXY_CONFIG",
            "ISTIO_META_POD_PORTS",
            "ISTIO_META_APP_CONTAINERS",
            "GOMEMLIMIT",
            "ISTIO_META_CLUSTER_ID",
            "ISTIO_META_NODE_NAME",
            "ISTIO_META_INTERCEPTION_MODE",
            "ISTIO_META_WORKLOAD_NAME",
            "ISTIO_META_OWNER",
            "ISTIO_META_MESH_ID",
            "TRUST_DOMAIN",
        ])
    );
    assert_eq!(
        env_value(p, "PILOT_CERT_PROVIDER").as_deref(),
        Some("istiod")
    );
    assert_eq!(
        env_value(p, "CA_ADDR").as_deref(),
        Some("istiod.istio-system.svc:15012")
    );
    assert_eq!(field_path(p, "POD_NAME").as_deref(), Some("metadata.name"));
    assert_eq!(
        field_path(p, "POD_NAMESPACE").as_deref(),
        Some("metadata.namespace")
    );
    assert_eq!(
        field_path(p, "INSTANCE_IP").as_deref(),
        Some("status.podIP")
    );
    assert_eq!(
        field_path(p, "SERVICE_ACCOUNT").as_deref(),
        Some("spec.serviceAccountName")
    );
    assert_eq!(field_path(p, "HOST_IP").as_deref(), Some("status.hostIP"));
    assert_eq!(
        field_path(p, "ISTIO_META_NODE_NAME").as_deref(),
        Some("spec.nodeName")
    );
    for (name, resource) in [
        ("ISTIO_CPU_LIMIT", "limits.cpu"),
        ("GOMEMLIMIT", "limits.memory"),
    ] {
        let r = source(p, name)
            .and_then(|s| s.resource_field_ref)
            .expect(name);
        assert_eq!(r.resource, resource);
        assert_eq!(r.divisor, Some(K8sQuantity("1".to_owned())));
    }
    assert_eq!(
        env_value(p, "ISTIO_META_APP_CONTAINERS").as_deref(),
        Some("hello")
    );
    assert_eq!(
        env_value(p, "ISTIO_META_CLUSTER_ID").as_deref(),
        Some("Kubernetes")
    );
    assert_eq!(
        env_value(p, "ISTIO_META_INTERCEPTION_MODE").as_deref(),
        Some("REDIRECT")
    );
    assert_eq!(
        env_value(p, "ISTIO_META_WORKLOAD_NAME").as_deref(),
        Some("hello")
    );
    // The spec's example value, for a Deployment `hello` in `default`.
    assert_eq!(
        env_value(p, "ISTIO_META_OWNER").as_deref(),
        Some("kubernetes://apis/apps/v1/namespaces/default/deployments/hello")
    );
    // No mesh id configured: the trust domain, as in Istio.
    assert_eq!(
        env_value(p, "ISTIO_META_MESH_ID").as_deref(),
        Some("cluster.local")
    );
    assert_eq!(
        env_value(p, "TRUST_DOMAIN").as_deref(),
        Some("cluster.local")
    );
}

#[test]
fn pod_ports_and_app_containers_skip_a_user_istio_proxy() {
    let (meta, mut spec) = hello_pod(&[]);
    spec.containers
        .insert(0, container("istio-proxy", &[(15099, "user-proxy")]));
    spec.containers.push(container(
        "sidecar-b",
        &[(9090, "metrics"), (9091, "admin")],
    ));
    let s = build_for(&InjectionConfig::default(), &meta, &spec).expect("injects");
    assert_eq!(
        env_value(&s.proxy, "ISTIO_META_APP_CONTAINERS").as_deref(),
        Some("hello,sidecar-b")
    );
    let ports: serde_json::Value =
        serde_json::from_str(&env_value(&s.proxy, "ISTIO_META_POD_PORTS").expect("pod ports"))
            .expect("json");
    assert_eq!(
        ports,
        serde_json::json!([
            {"containerPort": 8080, "name": "http", "protocol": "TCP"},
            {"containerPort": 9090, "name": "metrics", "protocol": "TCP"},
            {"containerPort": 9091, "name": "admin", "protocol": "TCP"},
        ])
    );
    // The default-container annotations name the first app container, not the proxy.
    assert_eq!(
        s.annotations
            .get(DEFAULT_CONTAINER_ANNOTATION)
            .map(String::as_str),
        Some("hello")
    );
}

#[test]
fn proxy_config_json() {
    let p = inject(&[]).proxy;
    let parsed: serde_json::Value =
        serde_json::from_str(&env_value(&p, "PROXY_CONFIG").expect("PROXY_CONFIG")).expect("json");
    assert_eq!(
        parsed,
        serde_json::json!({
            "discoveryAddress": "istiod.istio-system.svc:15012",
            "interceptionMode": "REDIRECT",
            "statusPort": 15020,
        })
    );
    // The pod's ProxyConfig is carried over, its metadata merged with the configured one.
    let config = InjectionConfig {
        proxy_metadata: map(&[("A", "from-config"), ("B", "b")]),
        hold_application_until_proxy_starts: true,
        ..InjectionConfig::default()
    };
    let s = inject_with(
        &config,
        &[(
            key::PROXY_CONFIG,
            "concurrency: 2\nproxyMetadata: {A: from-pod}\ndiscoveryAddress: other:15012\n",
        )],
    );
    let parsed: serde_json::Value =
        serde_json::from_str(&env_value(&s.proxy, "PROXY_CONFIG").expect("PROXY_CONFIG"))
            .expect("json");
    assert_eq!(
        parsed,
        serde_json::json!({
            "concurrency": 2,
            "discoveryAddress": "other:15012",
            "holdApplicationUntilProxyStarts": true,
            "interceptionMode": "REDIRECT",
            "proxyMetadata": {"A": "from-pod", "B": "b"},
            "statusPort": 15020,
        })
    );
    assert_eq!(env_value(&s.proxy, "A").as_deref(), Some("from-pod"));
}

#[test]
fn configured_identity_values() {
    let config = InjectionConfig {
        ca_address: Some("ca.example:443".to_owned()),
        cluster_id: "east".to_owned(),
        mesh_id: "mesh1".to_owned(),
        trust_domain: "example.org".to_owned(),
        network: "net-a".to_owned(),
        ..InjectionConfig::default()
    };
    let s = inject_with(&config, &[]);
    let p = &s.proxy;
    assert_eq!(env_value(p, "CA_ADDR").as_deref(), Some("ca.example:443"));
    assert_eq!(
        env_value(p, "ISTIO_META_CLUSTER_ID").as_deref(),
        Some("east")
    );
    assert_eq!(env_value(p, "ISTIO_META_MESH_ID").as_deref(), Some("mesh1"));
    assert_eq!(env_value(p, "TRUST_DOMAIN").as_deref(), Some("example.org"));
    assert_eq!(env_value(p, "ISTIO_META_NETWORK").as_deref(), Some("net-a"));
    // ISTIO_META_NETWORK comes right after the interception mode.
    let order = names(p);
    let mode = order
        .iter()
        .position(|n| n == "ISTIO_META_INTERCEPTION_MODE");
    let network = order.iter().position(|n| n == "ISTIO_META_NETWORK");
    assert_eq!(network, mode.map(|m| m + 1));
    assert_eq!(
        s.labels.get(NETWORK_LABEL).map(String::as_str),
        Some("net-a")
    );

    // No trust domain and no mesh id: neither variable.
    let config = InjectionConfig {
        trust_domain: String::new(),
        ..InjectionConfig::default()
    };
    let p = inject_with(&config, &[]).proxy;
    assert_eq!(env_value(&p, "TRUST_DOMAIN"), None);
    assert_eq!(env_value(&p, "ISTIO_META_MESH_ID"), None);
    assert_eq!(env_value(&p, "ISTIO_META_NETWORK"), None);
}

#[test]
fn the_pods_network_label_wins() {
    let config = InjectionConfig {
        network: "net-a".to_owned(),
        ..InjectionConfig::default()
    };
    let (mut meta, spec) = hello_pod(&[]);
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(NETWORK_LABEL.to_owned(), "net-b".to_owned());
    let s = build_for(&config, &meta, &spec).expect("injects");
    assert_eq!(
        env_value(&s.proxy, "ISTIO_META_NETWORK").as_deref(),
        Some("net-b")
    );
    // The pod already has the label: nothing to add.
    assert_eq!(s.labels.get(NETWORK_LABEL), None);
}

#[test]
fn workload_name_label_overrides_the_derived_name() {
    let (mut meta, spec) = hello_pod(&[]);
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(WORKLOAD_NAME_LABEL.to_owned(), "frontend".to_owned());
    let s = build_for(&InjectionConfig::default(), &meta, &spec).expect("injects");
    assert_eq!(
        env_value(&s.proxy, "ISTIO_META_WORKLOAD_NAME").as_deref(),
        Some("frontend")
    );
    // The owner and the canonical name still come from the Deployment.
    assert_eq!(
        env_value(&s.proxy, "ISTIO_META_OWNER").as_deref(),
        Some("kubernetes://apis/apps/v1/namespaces/default/deployments/hello")
    );
    assert_eq!(
        s.labels.get(CANONICAL_NAME_LABEL).map(String::as_str),
        Some("hello")
    );
}

#[test]
fn proxy_env_and_metadata() {
    let config = InjectionConfig {
        proxy_metadata: map(&[("ISTIO_META_DNS_AUTO_ALLOCATE", "true")]),
        proxy_env: map(&[("SKIFF_WORKER_THREADS", "4"), ("CA_ADDR", "override:15012")]),
        ..InjectionConfig::default()
    };
    let s = inject_with(&config, &[]);
    let p = &s.proxy;
    let order = names(p);
    // Metadata, then proxyEnv, after the injector's own variables; an entry with an
    // injected name replaces the value in place rather than adding a duplicate.
    assert_eq!(
        &order[order.len() - 2..],
        &strings(&["ISTIO_META_DNS_AUTO_ALLOCATE", "SKIFF_WORKER_THREADS"])
    );
    assert_eq!(order.iter().filter(|n| *n == "CA_ADDR").count(), 1);
    assert_eq!(order[1], "CA_ADDR");
    assert_eq!(env_value(p, "CA_ADDR").as_deref(), Some("override:15012"));
    assert_eq!(env_value(p, "SKIFF_WORKER_THREADS").as_deref(), Some("4"));
    // The init container gets the metadata only, not proxyEnv.
    let init = s.init_container.expect("init");
    assert_eq!(
        init.env,
        Some(vec![EnvVar {
            name: "ISTIO_META_DNS_AUTO_ALLOCATE".to_owned(),
            value: Some("true".to_owned()),
            value_from: None,
        }])
    );
}

#[test]
fn dns_capture() {
    let config = InjectionConfig {
        dns_capture: true,
        ..InjectionConfig::default()
    };
    let s = inject_with(&config, &[]);
    let init = s.init_container.clone().expect("init");
    assert_eq!(
        init.env,
        Some(vec![EnvVar {
            name: "ISTIO_META_DNS_CAPTURE".to_owned(),
            value: Some("true".to_owned()),
            value_from: None,
        }])
    );
    assert_eq!(
        env_value(&s.proxy, "ISTIO_META_DNS_CAPTURE").as_deref(),
        Some("true")
    );
    // The init args do not change: skiff-init reads the variable, like istio-iptables.
    assert_eq!(init.args, inject(&[]).init_container.and_then(|c| c.args));
    // A pod can turn it off through its ProxyConfig, Istio's way.
    let s = inject_with(
        &config,
        &[(
            key::PROXY_CONFIG,
            "proxyMetadata: {ISTIO_META_DNS_CAPTURE: \"false\"}",
        )],
    );
    assert_eq!(
        env_value(&s.proxy, "ISTIO_META_DNS_CAPTURE").as_deref(),
        Some("false")
    );
    // And on, per pod, without the config.
    let s = inject(&[(
        key::PROXY_CONFIG,
        "proxyMetadata: {ISTIO_META_DNS_CAPTURE: \"true\"}",
    )]);
    assert_eq!(
        s.init_container.and_then(|c| c.env).map(|e| e.len()),
        Some(1)
    );
    // Off by default: no environment on the init container.
    assert_eq!(inject(&[]).init_container.and_then(|c| c.env), None);
}

#[test]
fn probers_and_prometheus_annotations_come_last() {
    let (meta, spec) = hello_pod(&[]);
    let config = InjectionConfig {
        proxy_env: map(&[("EXTRA", "1")]),
        ..InjectionConfig::default()
    };
    let overrides = PodOverrides::default();
    let probers = r#"{"/app-health/hello/readyz":{"httpGet":{"path":"/ready","port":8080}}}"#;
    let prometheus = r#"{"scrape":"true","path":"/metrics","port":"9090"}"#;
    let s = build(&SidecarInput {
        metadata: &meta,
        spec: &spec,
        namespace: "default",
        config: &config,
        overrides: &overrides,
        app_probers: Some(probers),
        prometheus_annotations: Some(prometheus),
        owner: None,
    })
    .expect("injects");
    let order = names(&s.proxy);
    assert_eq!(
        &order[order.len() - 3..],
        &strings(&[
            "EXTRA",
            "ISTIO_PROMETHEUS_ANNOTATIONS",
            "ISTIO_KUBE_APP_PROBERS"
        ])
    );
    assert_eq!(
        env_value(&s.proxy, "ISTIO_KUBE_APP_PROBERS").as_deref(),
        Some(probers)
    );
    assert_eq!(
        env_value(&s.proxy, "ISTIO_PROMETHEUS_ANNOTATIONS").as_deref(),
        Some(prometheus)
    );
    // Absent when not given.
    assert_eq!(
        env_value(&inject(&[]).proxy, "ISTIO_KUBE_APP_PROBERS"),
        None
    );
}

#[test]
fn bootstrap_override_env() {
    let s = inject(&[(key::BOOTSTRAP_OVERRIDE, "my-bootstrap")]);
    assert_eq!(
        env_value(&s.proxy, "ISTIO_BOOTSTRAP_OVERRIDE").as_deref(),
        Some("/etc/istio/custom-bootstrap/custom_bootstrap.json")
    );
    let order = names(&s.proxy);
    let owner = order.iter().position(|n| n == "ISTIO_META_OWNER");
    let bootstrap = order.iter().position(|n| n == "ISTIO_BOOTSTRAP_OVERRIDE");
    assert_eq!(bootstrap, owner.map(|o| o + 1));
}
