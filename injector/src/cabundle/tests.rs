use proptest::prelude::*;
use serde_json::json;

use super::*;

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBours\n-----END CERTIFICATE-----\n";
const OTHER_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBtheirs\n-----END CERTIFICATE-----\n";
const NS_HOOK: &str = "rev.namespace.sidecar-injector.istio.io";
const OBJ_HOOK: &str = "rev.object.sidecar-injector.istio.io";
const FOREIGN_HOOK: &str = "validation.example.com";

fn b64(text: &str) -> Value {
    Value::String(BASE64.encode(text))
}

/// A webhook as the API server returns it; `bundle: None` leaves `caBundle` out.
fn webhook(name: &str, bundle: Option<&str>) -> Value {
    let mut client_config = json!({
        "service": {"name": "skiff-injector", "namespace": "istio-system", "path": "/inject", "port": 443}
    });
    if let Some(bundle) = bundle {
        client_config["caBundle"] = b64(bundle);
    }
    json!({
        "name": name,
        "clientConfig": client_config,
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "failurePolicy": "Fail",
    })
}

fn document(webhooks: Vec<Value>, resource_version: Option<&str>) -> Value {
    let mut doc = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "istio-sidecar-injector"},
        "webhooks": webhooks,
    });
    if let Some(rv) = resource_version {
        doc["metadata"]["resourceVersion"] = json!(rv);
    }
    doc
}

fn parse(doc: &Value) -> MutatingWebhookConfiguration {
    serde_json::from_value(doc.clone()).expect("valid MutatingWebhookConfiguration")
}

fn apply(doc: &Value, patch: &Patch) -> Result<Value, json_patch::PatchError> {
    let mut doc = doc.clone();
    json_patch::patch(&mut doc, patch)?;
    Ok(doc)
}

#[test]
fn managed_means_the_istio_suffix() {
    assert!(is_managed(NS_HOOK));
    assert!(is_managed("sidecar-injector.istio.io"));
    assert!(is_managed("object.sidecar-injector.istio.io"));
    assert!(!is_managed(FOREIGN_HOOK));
    assert!(!is_managed("sidecar-injector.istio.io.example.com"));
    assert!(!is_managed("rev.namespace.sidecar-injector.istio.io "));
}

#[test]
fn nothing_to_do_when_every_managed_bundle_is_ours() {
    let doc = document(
        vec![
            webhook(NS_HOOK, Some(CA)),
            webhook(OBJ_HOOK, Some(CA)),
            webhook(FOREIGN_HOOK, Some(OTHER_CA)),
            webhook("no-bundle.example.com", None),
        ],
        Some("7"),
    );
    assert_eq!(bundle_patch(&parse(&doc), CA), None);
}

#[test]
fn nothing_to_do_without_managed_webhooks() {
    assert_eq!(bundle_patch(&parse(&document(vec![], None)), CA), None);
    let mut no_list = document(vec![], None);
    no_list.as_object_mut().unwrap().remove("webhooks");
    assert_eq!(bundle_patch(&parse(&no_list), CA), None);
    let foreign = document(vec![webhook(FOREIGN_HOOK, None)], Some("1"));
    assert_eq!(bundle_patch(&parse(&foreign), CA), None);
}

#[test]
fn missing_and_different_bundles_are_set_under_guards() {
    let doc = document(
        vec![
            webhook(FOREIGN_HOOK, None),
            webhook(NS_HOOK, None),
            webhook(OBJ_HOOK, Some(OTHER_CA)),
        ],
        Some("42"),
    );
    let patch = bundle_patch(&parse(&doc), CA).expect("a patch");
    assert_eq!(
        serde_json::to_value(&patch).unwrap(),
        json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": "42"},
            {"op": "test", "path": "/webhooks/1/name", "value": NS_HOOK},
            {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": b64(CA)},
            {"op": "test", "path": "/webhooks/2/name", "value": OBJ_HOOK},
            {"op": "test", "path": "/webhooks/2/clientConfig/caBundle", "value": b64(OTHER_CA)},
            {"op": "replace", "path": "/webhooks/2/clientConfig/caBundle", "value": b64(CA)},
        ])
    );

    let patched = apply(&doc, &patch).expect("applies to the object it was made from");
    assert_eq!(bundle_patch(&parse(&patched), CA), None);
    assert_eq!(
        patched["webhooks"][0], doc["webhooks"][0],
        "foreign webhook untouched"
    );
    assert_eq!(patched["webhooks"][1]["clientConfig"]["caBundle"], b64(CA));
    assert_eq!(patched["webhooks"][2]["clientConfig"]["caBundle"], b64(CA));
}

#[test]
fn an_empty_bundle_is_replaced() {
    let doc = document(vec![webhook(NS_HOOK, Some(""))], None);
    let patch = bundle_patch(&parse(&doc), CA).expect("a patch");
    assert_eq!(
        serde_json::to_value(&patch).unwrap(),
        json!([
            {"op": "test", "path": "/webhooks/0/name", "value": NS_HOOK},
            {"op": "test", "path": "/webhooks/0/clientConfig/caBundle", "value": ""},
            {"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": b64(CA)},
        ])
    );
}

#[test]
fn a_concurrent_change_makes_the_patch_fail() {
    let doc = document(
        vec![webhook(NS_HOOK, None), webhook(OBJ_HOOK, Some(""))],
        Some("5"),
    );
    let patch = bundle_patch(&parse(&doc), CA).unwrap();

    let mut newer = doc.clone();
    newer["metadata"]["resourceVersion"] = json!("6");
    assert!(apply(&newer, &patch).is_err(), "any newer version");

    // Without a resource version, the name and old-bundle tests still catch these.
    let doc = document(
        vec![webhook(NS_HOOK, Some("")), webhook(OBJ_HOOK, Some(""))],
        None,
    );
    let patch = bundle_patch(&parse(&doc), CA).unwrap();
    let mut rewritten = doc.clone();
    rewritten["webhooks"][1]["clientConfig"]["caBundle"] = b64(OTHER_CA);
    assert!(
        apply(&rewritten, &patch).is_err(),
        "bundle changed meanwhile"
    );
    let mut reordered = doc.clone();
    reordered["webhooks"].as_array_mut().unwrap().reverse();
    assert!(
        apply(&reordered, &patch).is_err(),
        "webhook list changed meanwhile"
    );
}

/// The shapes the property test draws from: names managed or not (including a lookalike),
/// bundles absent, empty, ours or someone else's.
const NAMES: [&str; 4] = [
    NS_HOOK,
    OBJ_HOOK,
    FOREIGN_HOOK,
    "sidecar-injector.istio.io.example.com",
];
const BUNDLES: [Option<&str>; 4] = [None, Some(""), Some(CA), Some(OTHER_CA)];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Applying the patch to the object it was computed from always succeeds, leaves our CA
    /// in every managed webhook, touches nothing else, and leaves nothing more to do.
    #[test]
    fn patch_converges_and_touches_only_managed_bundles(
        hooks in proptest::collection::vec((0..NAMES.len(), 0..BUNDLES.len()), 0..6),
        resource_version in proptest::option::of("[0-9]{1,6}"),
    ) {
        let doc = document(
            hooks.iter().map(|&(n, b)| webhook(NAMES[n], BUNDLES[b])).collect(),
            resource_version.as_deref(),
        );
        let all_ours = hooks
            .iter()
            .all(|&(n, b)| !is_managed(NAMES[n]) || BUNDLES[b] == Some(CA));
        match bundle_patch(&parse(&doc), CA) {
            None => prop_assert!(all_ours),
            Some(patch) => {
                prop_assert!(!all_ours);
                let patched = apply(&doc, &patch).expect("applies");
                prop_assert_eq!(bundle_patch(&parse(&patched), CA), None);
                prop_assert_eq!(&patched["metadata"], &doc["metadata"]);
                for (i, &(n, _)) in hooks.iter().enumerate() {
                    let mut expected = doc["webhooks"][i].clone();
                    if is_managed(NAMES[n]) {
                        expected["clientConfig"]["caBundle"] = b64(CA);
                    }
                    prop_assert_eq!(&patched["webhooks"][i], &expected);
                }
            }
        }
    }
}

#[test]
fn backoff_doubles_with_jitter_up_to_the_cap() {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let ceilings: Vec<u64> = (0..7)
        .map(|_| {
            let ceiling = backoff.ceiling();
            let delay = backoff.next_delay();
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} vs {ceiling:?}"
            );
            u64::try_from(ceiling.as_millis()).unwrap()
        })
        .collect();
    assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000, 1000]);
    backoff.reset();
    assert_eq!(backoff.ceiling(), Duration::from_millis(100));
}

#[test]
fn backoff_survives_many_attempts_and_extreme_limits() {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::MAX);
    for _ in 0..200 {
        backoff.next_delay();
    }
    assert!(backoff.ceiling() >= Duration::from_secs(1 << 31));
    let mut backoff = Backoff::new(Duration::from_nanos(1), Duration::from_nanos(1));
    assert!(backoff.next_delay() <= Duration::from_nanos(1));
}

#[test]
fn backoff_jitter_varies() {
    let mut delays = std::collections::BTreeSet::new();
    for _ in 0..32 {
        delays.insert(Backoff::new(Duration::from_secs(10), Duration::from_secs(10)).next_delay());
    }
    assert!(delays.len() > 1, "all 32 delays equal: {delays:?}");
}

#[test]
fn object_names_follow_kubernetes_rules() {
    for good in [
        "istio-sidecar-injector",
        "istio-sidecar-injector-1-22",
        "a.b",
        "0",
    ] {
        assert!(is_object_name(good), "{good}");
    }
    let too_long = "a".repeat(254);
    for bad in [
        "",
        "Istio",
        "a/b",
        "a?watch=true",
        "-a",
        "a-",
        "a..b",
        ".a",
        too_long.as_str(),
    ] {
        assert!(!is_object_name(bad), "{bad}");
    }
}

#[test]
fn the_ca_must_be_certificates_only() {
    assert!(validate_ca(CA).is_ok());
    assert!(validate_ca(&format!("{CA}{OTHER_CA}")).is_ok());
    let generated = crate::selfsigned::generate(&["a.svc".to_owned()], Duration::from_secs(60))
        .expect("certificates");
    assert!(validate_ca(&generated.ca_pem).is_ok());
    for (bad, why) in [
        ("", "no PEM certificate"),
        ("not pem at all", "no PEM certificate"),
        (generated.key_pem.as_str(), "PrivateKey"),
        (
            &format!("{}{}", generated.ca_pem, generated.key_pem),
            "PrivateKey",
        ),
    ] {
        let message = validate_ca(bad).unwrap_err().to_string();
        assert!(message.contains(why), "{bad:?}: {message}");
        assert!(message.contains("ca_pem"), "names the fix: {message}");
    }
}

#[test]
fn options_are_checked() {
    assert!(PatcherOptions::default().validate().is_ok());
    let cases = [
        (
            PatcherOptions {
                resync: Duration::ZERO,
                ..Default::default()
            },
            "resync",
        ),
        (
            PatcherOptions {
                backoff_initial: Duration::ZERO,
                ..Default::default()
            },
            "backoff_initial",
        ),
        (
            PatcherOptions {
                backoff_max: Duration::from_millis(1),
                ..Default::default()
            },
            "backoff_max",
        ),
        (
            PatcherOptions {
                resync: MAX_INTERVAL + Duration::from_secs(1),
                ..Default::default()
            },
            "resync",
        ),
        (
            PatcherOptions {
                backoff_initial: Duration::MAX,
                backoff_max: Duration::MAX,
                ..Default::default()
            },
            "backoff_max",
        ),
    ];
    for (options, field) in cases {
        let message = options.validate().unwrap_err().to_string();
        assert!(
            message.starts_with(&format!("caBundle patcher: {field} is")),
            "{message}"
        );
    }
}

#[tokio::test]
async fn new_refuses_bad_names_and_cas() {
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    let client = client_for(config).await.expect("client");
    let patcher = CaBundlePatcher::new(
        client.clone(),
        "istio-sidecar-injector",
        CA,
        PatcherOptions::default(),
    )
    .expect("valid");
    assert!(
        !*patcher.ready().borrow(),
        "not ready before the first check"
    );
    assert!(matches!(
        CaBundlePatcher::new(client.clone(), "a/b", CA, PatcherOptions::default()),
        Err(CaBundleError::InvalidName { .. })
    ));
    assert!(matches!(
        CaBundlePatcher::new(
            client,
            "istio-sidecar-injector",
            "",
            PatcherOptions::default()
        ),
        Err(CaBundleError::InvalidCa { .. })
    ));
}
