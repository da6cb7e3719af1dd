//! Expected values come from spec/injector.md (section 2 for what injection adds and its
//! defaults, section 3 for the annotations, section 0 for Skiff's choices), from Istio's
//! injection template (manifests/charts/istio-control/istio-discovery/files/
//! injection-template.yaml) and `GetDeployMetaFromPod` for the owner heuristics, and from
//! hand reasoning about each case; none is copied from this module's output.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, PodSpec, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::*;
use crate::annotations::{self, key};

mod args;
mod env;
mod metadata;
mod probes;
mod settings;
mod volumes;

/// Annotations or labels written inline in a test table.
pub(super) type Pairs<'a> = &'a [(&'a str, &'a str)];

pub(super) fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

pub(super) fn overrides(pairs: &[(&str, &str)]) -> PodOverrides {
    annotations::parse(&map(pairs)).expect("valid test annotations")
}

pub(super) fn settings_with(config: &InjectionConfig, pairs: &[(&str, &str)]) -> Settings {
    Settings::resolve(config, &overrides(pairs)).expect("test settings")
}

pub(super) fn settings(pairs: &[(&str, &str)]) -> Settings {
    settings_with(&InjectionConfig::default(), pairs)
}

pub(super) fn owner(kind: &str, api_version: &str, name: &str, controller: bool) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
        controller: Some(controller),
        uid: "0000".to_owned(),
        block_owner_deletion: None,
    }
}

pub(super) fn container(name: &str, ports: &[(i32, &str)]) -> Container {
    Container {
        name: name.to_owned(),
        image: Some(format!("example/{name}:1")),
        ports: (!ports.is_empty()).then(|| {
            ports
                .iter()
                .map(|(port, name)| ContainerPort {
                    container_port: *port,
                    name: Some((*name).to_owned()),
                    protocol: Some("TCP".to_owned()),
                    ..ContainerPort::default()
                })
                .collect()
        }),
        ..Container::default()
    }
}

/// A pod of the Deployment `hello` as the ReplicaSet controller creates it: no name yet,
/// a generateName, the pod-template-hash label and a controlling owner reference.
pub(super) fn hello_pod(annotations: &[(&str, &str)]) -> (ObjectMeta, PodSpec) {
    let meta = ObjectMeta {
        generate_name: Some("hello-5d8f9c7b6d-".to_owned()),
        labels: Some(map(&[
            ("app", "hello"),
            ("pod-template-hash", "5d8f9c7b6d"),
        ])),
        annotations: Some(map(annotations)),
        owner_references: Some(vec![owner(
            "ReplicaSet",
            "apps/v1",
            "hello-5d8f9c7b6d",
            true,
        )]),
        ..ObjectMeta::default()
    };
    let spec = PodSpec {
        containers: vec![container("hello", &[(8080, "http")])],
        ..PodSpec::default()
    };
    (meta, spec)
}

pub(super) fn build_for(
    config: &InjectionConfig,
    meta: &ObjectMeta,
    spec: &PodSpec,
) -> Result<Sidecar, SidecarError> {
    let overrides = annotations::parse(&meta.annotations.clone().unwrap_or_default())
        .expect("valid test annotations");
    build(&SidecarInput {
        metadata: meta,
        spec,
        namespace: "default",
        config,
        overrides: &overrides,
        app_probers: None,
        prometheus_annotations: None,
        owner: None,
    })
}

/// The hello pod with `annotations`, under `config`.
pub(super) fn inject_with(config: &InjectionConfig, annotations: &[(&str, &str)]) -> Sidecar {
    let (meta, spec) = hello_pod(annotations);
    build_for(config, &meta, &spec).expect("injects")
}

pub(super) fn inject(annotations: &[(&str, &str)]) -> Sidecar {
    inject_with(&InjectionConfig::default(), annotations)
}

pub(super) fn inject_err(annotations: &[(&str, &str)]) -> SidecarError {
    let (meta, spec) = hello_pod(annotations);
    build_for(&InjectionConfig::default(), &meta, &spec).expect_err("refused")
}

pub(super) fn env_of(c: &Container) -> &[EnvVar] {
    c.env.as_deref().unwrap_or_default()
}

pub(super) fn env_value(c: &Container, name: &str) -> Option<String> {
    env_of(c)
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.clone())
}

pub(super) fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn version_image(name: &str) -> String {
    format!("ghcr.io/skiff-mesh/{name}:{}", env!("CARGO_PKG_VERSION"))
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, K8sQuantity> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), K8sQuantity((*v).to_owned())))
        .collect()
}

#[test]
fn default_init_container() {
    let s = inject(&[]);
    let init = s.init_container.expect("istio-init");
    assert_eq!(init.name, "istio-init");
    assert_eq!(
        init.image.as_deref(),
        Some(version_image("skiff-init").as_str())
    );
    assert_eq!(init.command, Some(strings(&["skiff-init"])));
    assert_eq!(
        init.args,
        Some(strings(
            &[
                skiff_init::flags::INJECTED_DEFAULT_ARGS,
                &["--log_output_level=default:info"]
            ]
            .concat()
        ))
    );
    assert_eq!(init.env, None);
    assert_eq!(init.image_pull_policy, None);
    // Spec section 2: add NET_ADMIN and NET_RAW, drop ALL, root, nothing else.
    assert_eq!(
        init.security_context,
        Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                add: Some(strings(&["NET_ADMIN", "NET_RAW"])),
                drop: Some(strings(&["ALL"])),
            }),
            read_only_root_filesystem: Some(false),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            run_as_user: Some(0),
            ..SecurityContext::default()
        })
    );
    // Same resources as the proxy: requests 100m/128Mi, limits 2/1Gi.
    let expected = ResourceRequirements {
        requests: Some(quantities(&[("cpu", "100m"), ("memory", "128Mi")])),
        limits: Some(quantities(&[("cpu", "2"), ("memory", "1Gi")])),
        claims: None,
    };
    assert_eq!(init.resources, Some(expected.clone()));
    assert_eq!(s.proxy.resources, Some(expected));
}

#[test]
fn default_proxy_is_a_native_sidecar() {
    let s = inject(&[]);
    assert!(s.native);
    assert!(!s.hold_application);
    let p = &s.proxy;
    assert_eq!(p.name, "istio-proxy");
    assert_eq!(
        p.image.as_deref(),
        Some(version_image("skiff-proxy").as_str())
    );
    assert_eq!(p.command, Some(strings(&["skiff-proxy"])));
    assert_eq!(p.restart_policy.as_deref(), Some("Always"));
    assert_eq!(
        p.ports,
        Some(vec![ContainerPort {
            container_port: 15090,
            name: Some("http-envoy-prom".to_owned()),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }])
    );
    let lifecycle = p.lifecycle.clone().expect("preStop");
    assert_eq!(lifecycle.post_start, None);
    let pre_stop = lifecycle
        .pre_stop
        .and_then(|h| h.exec)
        .and_then(|e| e.command);
    assert_eq!(
        pre_stop,
        Some(strings(&[
            "skiff-proxy",
            "request",
            "--debug-port=15020",
            "POST",
            "drain"
        ]))
    );
    let ready = p.readiness_probe.clone().expect("readiness");
    let get = ready.http_get.clone().expect("httpGet");
    assert_eq!(get.path.as_deref(), Some("/healthz/ready"));
    assert_eq!(get.port, IntOrString::Int(15021));
    assert_eq!(ready.initial_delay_seconds, Some(0));
    assert_eq!(ready.period_seconds, Some(15));
    assert_eq!(ready.timeout_seconds, Some(3));
    assert_eq!(ready.failure_threshold, Some(4));
    let startup = p.startup_probe.clone().expect("startup");
    assert_eq!(startup.http_get, ready.http_get);
    assert_eq!(startup.period_seconds, Some(1));
    assert_eq!(startup.failure_threshold, Some(600));
    assert_eq!(
        p.security_context,
        Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                add: None,
                drop: Some(strings(&["ALL"])),
            }),
            read_only_root_filesystem: Some(true),
            run_as_group: Some(1337),
            run_as_non_root: Some(true),
            run_as_user: Some(1337),
            ..SecurityContext::default()
        })
    );
    assert!(s.image_pull_secrets.is_empty());
}

#[test]
fn classic_layout_and_hold() {
    // Classic without hold: a plain container, no hooks.
    let s = inject(&[(key::NATIVE_SIDECAR, "false")]);
    assert!(!s.native && !s.hold_application);
    assert_eq!(s.proxy.restart_policy, None);
    assert_eq!(s.proxy.lifecycle, None);
    assert!(s.init_container.is_some());

    // Classic with hold from the config: postStart `wait`, proxy first.
    let config = InjectionConfig {
        hold_application_until_proxy_starts: true,
        ..InjectionConfig::default()
    };
    let s = inject_with(&config, &[(key::NATIVE_SIDECAR, "false")]);
    assert!(s.hold_application);
    let lifecycle = s.proxy.lifecycle.clone().expect("postStart");
    assert_eq!(lifecycle.pre_stop, None);
    let post_start = lifecycle
        .post_start
        .and_then(|h| h.exec)
        .and_then(|e| e.command);
    assert_eq!(post_start, Some(strings(&["skiff-proxy", "wait"])));

    // Classic with hold from the pod's ProxyConfig; and the pod can also turn it off.
    let s = inject(&[
        (key::NATIVE_SIDECAR, "false"),
        (key::PROXY_CONFIG, "holdApplicationUntilProxyStarts: true"),
    ]);
    assert!(s.hold_application);
    let s = inject_with(
        &config,
        &[
            (key::NATIVE_SIDECAR, "false"),
            (
                key::PROXY_CONFIG,
                "{\"holdApplicationUntilProxyStarts\": false}",
            ),
        ],
    );
    assert!(!s.hold_application);
    assert_eq!(s.proxy.lifecycle, None);

    // Native ignores hold: the kubelet starts native sidecars first anyway.
    let s = inject_with(&config, &[]);
    assert!(s.native && !s.hold_application);
    assert!(s.proxy.lifecycle.and_then(|l| l.pre_stop).is_some());

    // The config can choose classic, and the annotation native again.
    let classic = InjectionConfig {
        native_sidecar: false,
        ..InjectionConfig::default()
    };
    assert!(!inject_with(&classic, &[]).native);
    assert!(inject_with(&classic, &[(key::NATIVE_SIDECAR, "true")]).native);
}

#[test]
fn interception_mode_none_has_no_init_container() {
    for native in ["true", "false"] {
        let s = inject(&[
            (key::INTERCEPTION_MODE, "NONE"),
            (key::NATIVE_SIDECAR, native),
        ]);
        assert_eq!(s.init_container, None, "native={native}");
        assert_eq!(
            env_value(&s.proxy, "ISTIO_META_INTERCEPTION_MODE").as_deref(),
            Some("NONE")
        );
    }
    // From the pod's ProxyConfig too; the annotation beats it.
    let s = inject(&[(key::PROXY_CONFIG, "interceptionMode: NONE")]);
    assert_eq!(s.init_container, None);
    let s = inject(&[
        (key::PROXY_CONFIG, "interceptionMode: NONE"),
        (key::INTERCEPTION_MODE, "REDIRECT"),
    ]);
    assert!(s.init_container.is_some());
    // And from the config.
    let config = InjectionConfig {
        interception_mode: InterceptionMode::None,
        ..InjectionConfig::default()
    };
    assert_eq!(inject_with(&config, &[]).init_container, None);
}

fn proxy_security(annotations: &[(&str, &str)]) -> SecurityContext {
    inject(annotations)
        .proxy
        .security_context
        .expect("securityContext")
}

#[test]
fn tproxy_and_net_bind_service_run_the_proxy_as_root() {
    // Istio's template: TPROXY adds NET_ADMIN, capNetBindService adds NET_BIND_SERVICE;
    // either runs as uid 0, gid 1337, not non-root; ALL is still dropped.
    let cases: [(Pairs, Option<&[&str]>); 4] = [
        (&[], None),
        (&[(key::INTERCEPTION_MODE, "TPROXY")], Some(&["NET_ADMIN"])),
        (
            &[(key::CAP_NET_BIND_SERVICE, "true")],
            Some(&["NET_BIND_SERVICE"]),
        ),
        (
            &[
                (key::INTERCEPTION_MODE, "TPROXY"),
                (key::CAP_NET_BIND_SERVICE, "true"),
            ],
            Some(&["NET_ADMIN", "NET_BIND_SERVICE"]),
        ),
    ];
    for (annotations, add) in cases {
        let sc = proxy_security(annotations);
        let caps = sc.capabilities.clone().expect("capabilities");
        assert_eq!(caps.add, add.map(strings), "{annotations:?}");
        assert_eq!(caps.drop, Some(strings(&["ALL"])));
        let root = add.is_some();
        assert_eq!(
            sc.run_as_user,
            Some(if root { 0 } else { 1337 }),
            "{annotations:?}"
        );
        assert_eq!(sc.run_as_group, Some(1337));
        assert_eq!(sc.run_as_non_root, Some(!root));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
    }
    // TPROXY keeps `-u 1337` in the init args.
    let init = inject(&[(key::INTERCEPTION_MODE, "TPROXY")])
        .init_container
        .expect("init");
    let args = init.args.expect("args");
    assert_eq!(&args[4..8], &strings(&["-u", "1337", "-m", "TPROXY"]));
}

#[test]
fn one_resource_annotation_replaces_all_resources() {
    let cases: [(Pairs, Option<ResourceRequirements>); 4] = [
        (
            &[(key::PROXY_CPU, "200m")],
            Some(ResourceRequirements {
                requests: Some(quantities(&[("cpu", "200m")])),
                limits: None,
                claims: None,
            }),
        ),
        (
            &[(key::PROXY_MEMORY_LIMIT, "512Mi")],
            Some(ResourceRequirements {
                requests: None,
                limits: Some(quantities(&[("memory", "512Mi")])),
                claims: None,
            }),
        ),
        (
            &[(key::PROXY_MEMORY, "64Mi"), (key::PROXY_CPU_LIMIT, "1")],
            Some(ResourceRequirements {
                requests: Some(quantities(&[("memory", "64Mi")])),
                limits: Some(quantities(&[("cpu", "1")])),
                claims: None,
            }),
        ),
        (
            &[
                (key::PROXY_CPU, "10m"),
                (key::PROXY_MEMORY, "40Mi"),
                (key::PROXY_CPU_LIMIT, "500m"),
                (key::PROXY_MEMORY_LIMIT, "256Mi"),
            ],
            Some(ResourceRequirements {
                requests: Some(quantities(&[("cpu", "10m"), ("memory", "40Mi")])),
                limits: Some(quantities(&[("cpu", "500m"), ("memory", "256Mi")])),
                claims: None,
            }),
        ),
    ];
    for (annotations, expected) in cases {
        let s = inject(annotations);
        assert_eq!(s.proxy.resources, expected, "{annotations:?}");
        let init = s.init_container.expect("init");
        assert_eq!(init.resources, expected, "init, {annotations:?}");
    }
    // A config without resources sets none.
    let config = InjectionConfig {
        resources: Resources {
            requests: ResourceList::default(),
            limits: ResourceList::default(),
        },
        ..InjectionConfig::default()
    };
    assert_eq!(inject_with(&config, &[]).proxy.resources, None);
}

#[test]
fn odd_pods_never_panic() {
    let config = InjectionConfig::default();
    let empty_meta = ObjectMeta::default();
    let empty_spec = PodSpec::default();
    let s = build_for(&config, &empty_meta, &empty_spec).expect("empty pod");
    assert_eq!(
        env_value(&s.proxy, "ISTIO_META_APP_CONTAINERS").as_deref(),
        Some("")
    );
    assert_eq!(
        env_value(&s.proxy, "ISTIO_META_POD_PORTS").as_deref(),
        Some("[]")
    );
    assert_eq!(env_value(&s.proxy, "ISTIO_META_WORKLOAD_NAME"), None);
    assert_eq!(env_value(&s.proxy, "ISTIO_META_OWNER"), None);

    let odd = ObjectMeta {
        name: Some("é".repeat(40)),
        generate_name: Some("-".to_owned()),
        labels: Some(map(&[("app", ""), ("pod-template-hash", "")])),
        owner_references: Some(vec![
            owner("ReplicaSet", "", "", true),
            owner("Job", "batch/v1", "-12345678", true),
        ]),
        ..ObjectMeta::default()
    };
    let spec = PodSpec {
        containers: vec![container("istio-proxy", &[]), container("", &[(0, "")])],
        ..PodSpec::default()
    };
    let _ = build_for(&config, &odd, &spec);
}
