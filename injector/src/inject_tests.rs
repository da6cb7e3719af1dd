//! Properties of the core over generated pods: no panic on any annotation value, and for
//! every pod that gets injected: idempotence, exact uninject, and a patch that reproduces
//! the injected pod from the original.

use super::*;
use crate::annotations::key;
use k8s_openapi::api::core::v1::{
    ContainerPort, ExecAction, HTTPGetAction, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;
use serde_json::Value;

fn value_for(key: &'static str) -> impl Strategy<Value = (String, String)> {
    let plausible = prop_oneof![
        Just(String::new()),
        Just("*".to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
        Just("8080,9090".to_string()),
        Just("10.0.0.0/8".to_string()),
        Just("15020".to_string()),
        Just("250m".to_string()),
        Just("TPROXY".to_string()),
        Just("NONE".to_string()),
        Just("{\"a\": [1]}".to_string()),
        "\\PC{0,16}",
    ];
    plausible.prop_map(move |v| (key.to_string(), v))
}

fn annotations() -> impl Strategy<Value = BTreeMap<String, String>> {
    let keys: Vec<&'static str> = key::ALL
        .iter()
        .copied()
        .chain([
            crate::prometheus::SCRAPE,
            crate::prometheus::PORT,
            crate::prometheus::PATH,
            "sidecar.istio.io/inject",
        ])
        .collect();
    proptest::sample::subsequence(keys, 0..3)
        .prop_flat_map(|keys| keys.into_iter().map(value_for).collect::<Vec<_>>())
        .prop_map(|pairs| pairs.into_iter().collect())
}

fn probe() -> impl Strategy<Value = Option<Probe>> {
    prop_oneof![
        Just(None),
        (1..65535i32).prop_map(|port| Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/ready".into()),
                port: IntOrString::Int(port),
                ..HTTPGetAction::default()
            }),
            ..Probe::default()
        })),
        Just(Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("http".into()),
                ..TCPSocketAction::default()
            }),
            ..Probe::default()
        })),
        Just(Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec!["true".into()]),
            }),
            ..Probe::default()
        })),
    ]
}

fn container(name: String) -> impl Strategy<Value = Container> {
    (probe(), probe(), 1..65535i32).prop_map(move |(readiness, liveness, port)| Container {
        name: name.clone(),
        image: Some("busybox".into()),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: port,
            ..ContainerPort::default()
        }]),
        readiness_probe: readiness,
        liveness_probe: liveness,
        ..Container::default()
    })
}

fn template() -> impl Strategy<Value = PodTemplateSpec> {
    let names = proptest::collection::btree_set("[a-z]{1,6}", 1..4);
    (
        names,
        annotations(),
        proptest::option::of("[a-z]{1,8}"),
        proptest::bool::weighted(0.1),
    )
        .prop_flat_map(|(names, annotations, app, host_network)| {
            let containers: Vec<_> = names.into_iter().map(container).collect();
            (containers, Just(annotations), Just(app), Just(host_network))
        })
        .prop_map(
            |(containers, annotations, app, host_network)| PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    name: Some("pod".into()),
                    labels: app.map(|a| BTreeMap::from([("app".to_string(), a)])),
                    annotations: Some(annotations).filter(|a| !a.is_empty()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers,
                    host_network: host_network.then_some(true),
                    ..PodSpec::default()
                }),
            },
        )
}

fn json(template: &PodTemplateSpec) -> Value {
    serde_json::to_value(template).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn generated_pods_inject_cleanly_or_are_refused(original in template()) {
        let config = InjectionConfig::default();
        let policy = PolicyConfig::manual();
        let request = Request { namespace: "default", config: &config, policy: &policy, owner: None };

        let mut injected = original.clone();
        let outcome = inject(&mut injected, &request);
        match outcome {
            Err(_) | Ok(Outcome::Skipped(_)) => prop_assert_eq!(&injected, &original),
            Ok(Outcome::Injected) => {
                let mut again = injected.clone();
                prop_assert_eq!(inject(&mut again, &request).unwrap(), Outcome::Injected);
                prop_assert_eq!(json(&again), json(&injected));

                let mut restored = injected.clone();
                prop_assert!(uninject(&mut restored, &config).unwrap());
                prop_assert_eq!(json(&restored), json(&original));

                let (before, after) = (json(&original), json(&injected));
                let patch = crate::patch::diff(&before, &after);
                prop_assert_eq!(crate::patch::apply(&before, &patch).unwrap(), after);
            }
        }
    }
}

#[test]
fn uninject_leaves_a_pod_without_status_alone() {
    let mut template = PodTemplateSpec::default();
    assert!(!uninject(&mut template, &InjectionConfig::default()).unwrap());
    assert_eq!(template, PodTemplateSpec::default());
}

#[test]
fn a_bad_annotation_is_an_error_that_names_it_and_changes_nothing() {
    let config = InjectionConfig::default();
    let policy = PolicyConfig::manual();
    let request = Request {
        namespace: "default",
        config: &config,
        policy: &policy,
        owner: None,
    };
    let original = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            annotations: Some(BTreeMap::from([(
                "traffic.sidecar.istio.io/excludeInboundPorts".to_string(),
                "80,http".to_string(),
            )])),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec::default()),
    };
    let mut template = original.clone();
    let err = inject(&mut template, &request).unwrap_err().to_string();
    assert!(
        err.contains("traffic.sidecar.istio.io/excludeInboundPorts"),
        "{err}"
    );
    assert_eq!(template, original);
}
