//! The caBundle patcher against the fake Kubernetes API server of `common` (see there for
//! what it serves). Tests wait on the requests the fake reports and on the patcher's
//! readiness, never on sleeps, each wait bounded by [`WAIT`].

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{Harness, NAME, Request, WAIT};
use serde_json::{Value, json};
use skiff_injector::cabundle::{self, CaBundlePatcher, PatcherOptions};
use skiff_injector::selfsigned;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

const NS_HOOK: &str = "rev.namespace.sidecar-injector.istio.io";
const OBJ_HOOK: &str = "rev.object.sidecar-injector.istio.io";
const FOREIGN_HOOK: &str = "validation.example.com";

// ---------------------------------------------------------------------------------------
// The patcher under test
// ---------------------------------------------------------------------------------------

/// A running patcher.
struct Running {
    ready: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    async fn wait_ready(&mut self, want: bool) {
        tokio::time::timeout(WAIT, self.ready.wait_for(|ready| *ready == want))
            .await
            .unwrap_or_else(|_| panic!("ready did not become {want} within {WAIT:?}"))
            .expect("the patcher dropped its ready sender while still supposed to run");
    }

    /// Signals shutdown and waits for `run` to return.
    async fn stop(mut self) {
        let _ = self.stop.take().expect("stopped once").send(());
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("the patcher did not stop on shutdown")
            .expect("the patcher task panicked");
    }
}

impl Harness {
    async fn patcher(&self, ca_pem: &str, options: PatcherOptions) -> Running {
        let client = self.client().await;
        let patcher = CaBundlePatcher::new(client, NAME, ca_pem, options).expect("patcher");
        let ready = patcher.ready();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(patcher.run(async move {
            let _ = stopped.await;
        }));
        Running {
            ready,
            stop: Some(stop),
            task,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

fn ca_pem() -> String {
    let names = selfsigned::service_dns_names("skiff-injector", "istio-system");
    selfsigned::generate(&names, Duration::from_secs(3600))
        .expect("certificates")
        .ca_pem
}

fn b64(text: &str) -> Value {
    Value::String(BASE64.encode(text))
}

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
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
        "sideEffects": "None",
        "failurePolicy": "Fail",
        "reinvocationPolicy": "Never",
        "admissionReviewVersions": ["v1"],
    })
}

fn configuration(webhooks: Vec<Value>) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": NAME, "labels": {"app": "skiff-injector"}},
        "webhooks": webhooks,
    })
}

/// The chart's configuration: two Istio-named webhooks without a bundle, and one webhook
/// of someone else's with its own CA.
fn chart_configuration() -> Value {
    configuration(vec![
        webhook(NS_HOOK, None),
        webhook(OBJ_HOOK, Some("")),
        webhook(FOREIGN_HOOK, Some("their CA")),
    ])
}

/// Quick retries; no periodic re-check, so that only watch events and retries drive the
/// patcher and every PATCH in a test has a cause the test created.
fn fast() -> PatcherOptions {
    PatcherOptions {
        resync: Duration::from_secs(3600),
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(200),
    }
}

fn bundle(object: &Value, index: usize) -> &Value {
    &object["webhooks"][index]["clientConfig"]["caBundle"]
}

fn patched_paths(request: &Request) -> Vec<String> {
    request
        .body
        .as_ref()
        .and_then(Value::as_array)
        .expect("a JSON patch")
        .iter()
        .filter(|op| op["op"] != "test")
        .map(|op| op["path"].as_str().unwrap().to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn fills_empty_bundles_of_istio_webhooks_and_leaves_others_alone() {
    let mut h = Harness::start(Some(chart_configuration())).await;
    let ca = ca_pem();
    let mut patcher = h.patcher(&ca, fast()).await;

    let patch = h
        .next_request("successful PATCH", |r| r.is_patch(StatusCode::OK))
        .await;
    assert_eq!(
        patched_paths(&patch),
        [
            "/webhooks/0/clientConfig/caBundle",
            "/webhooks/1/clientConfig/caBundle"
        ]
    );
    assert_eq!(
        patch.query.get("fieldManager").map(String::as_str),
        Some(cabundle::FIELD_MANAGER)
    );
    patcher.wait_ready(true).await;

    let object = h.object();
    assert_eq!(bundle(&object, 0), &b64(&ca));
    assert_eq!(bundle(&object, 1), &b64(&ca));
    assert_eq!(object["webhooks"][2], chart_configuration()["webhooks"][2]);
    assert_eq!(
        object["metadata"]["labels"],
        json!({"app": "skiff-injector"})
    );
    // Its own patch comes back as a watch event; that must not lead to a second patch.
    h.next_request("watch", Request::is_watch).await;

    patcher.stop().await;
    let patches = h
        .all_requests()
        .iter()
        .filter(|r| r.method == Method::PATCH)
        .count();
    assert_eq!(
        patches,
        1,
        "one patch, then nothing to do:\n{}",
        h.describe_seen()
    );
    h.assert_only_known_requests();
}

#[tokio::test]
async fn a_bundle_already_in_place_is_not_patched() {
    let ca = ca_pem();
    let mut h = Harness::start(Some(configuration(vec![
        webhook(NS_HOOK, Some(&ca)),
        webhook(FOREIGN_HOOK, None),
    ])))
    .await;
    let mut patcher = h.patcher(&ca, fast()).await;
    patcher.wait_ready(true).await;
    // The watch is up (so the initial list and its check are done) before stopping.
    h.next_request("watch", Request::is_watch).await;
    patcher.stop().await;
    assert!(
        h.all_requests().iter().all(|r| r.method != Method::PATCH),
        "{}",
        h.describe_seen()
    );
    h.assert_only_known_requests();
}

#[tokio::test]
async fn an_overwritten_bundle_is_restored() {
    let mut h = Harness::start(Some(chart_configuration())).await;
    let ca = ca_pem();
    let mut patcher = h.patcher(&ca, fast()).await;
    h.next_request("first PATCH", |r| r.is_patch(StatusCode::OK))
        .await;
    patcher.wait_ready(true).await;
    // Make sure the overwrite arrives as a watch event, not only through the initial list.
    h.next_request("watch", Request::is_watch).await;

    // A `helm upgrade` (or anyone) puts another value into one webhook.
    h.modify(|object| {
        object["webhooks"][1]["clientConfig"]["caBundle"] = b64("stale CA");
    });
    let restore = h
        .next_request("restoring PATCH", |r| r.is_patch(StatusCode::OK))
        .await;
    assert_eq!(
        patched_paths(&restore),
        ["/webhooks/1/clientConfig/caBundle"]
    );
    let ops = restore.body.as_ref().unwrap().as_array().unwrap();
    assert!(
        ops.iter().any(|op| op["op"] == "test"
            && op["path"] == "/webhooks/1/clientConfig/caBundle"
            && op["value"] == b64("stale CA")),
        "the patch is guarded by the value it replaces: {ops:?}"
    );
    patcher.wait_ready(true).await;
    let object = h.object();
    assert_eq!(bundle(&object, 0), &b64(&ca));
    assert_eq!(bundle(&object, 1), &b64(&ca));

    patcher.stop().await;
    h.assert_only_known_requests();
}

#[tokio::test]
async fn a_configuration_created_after_start_is_patched() {
    let mut h = Harness::start(None).await;
    let ca = ca_pem();
    let mut patcher = h.patcher(&ca, fast()).await;

    h.next_request("GET answered 404", |r| {
        r.is_get() && r.status == StatusCode::NOT_FOUND
    })
    .await;
    assert!(
        !*patcher.ready.borrow(),
        "not ready without a configuration"
    );

    h.write(chart_configuration());
    h.next_request("PATCH of the new configuration", |r| {
        r.is_patch(StatusCode::OK)
    })
    .await;
    patcher.wait_ready(true).await;
    let object = h.object();
    assert_eq!(bundle(&object, 0), &b64(&ca));
    assert_eq!(bundle(&object, 1), &b64(&ca));

    patcher.stop().await;
    h.assert_only_known_requests();
}

#[tokio::test]
async fn a_deleted_configuration_makes_it_unready_until_recreated() {
    let mut h = Harness::start(Some(chart_configuration())).await;
    let ca = ca_pem();
    let mut patcher = h.patcher(&ca, fast()).await;
    h.next_request("first PATCH", |r| r.is_patch(StatusCode::OK))
        .await;
    patcher.wait_ready(true).await;

    h.delete();
    patcher.wait_ready(false).await;
    h.write(chart_configuration());
    h.next_request("PATCH of the recreated configuration", |r| {
        r.is_patch(StatusCode::OK)
    })
    .await;
    patcher.wait_ready(true).await;
    assert_eq!(bundle(&h.object(), 0), &b64(&ca));

    patcher.stop().await;
    h.assert_only_known_requests();
}

#[tokio::test]
async fn a_concurrent_change_fails_the_patch_instead_of_being_clobbered() {
    let mut h = Harness::start(Some(chart_configuration())).await;
    // Between the patcher's read and its write, someone rotates the other webhook's CA and
    // labels the object.
    h.fake.store.lock().unwrap().before_next_patch = Some(Box::new(|object: &mut Value| {
        object["webhooks"][2]["clientConfig"]["caBundle"] = b64("their new CA");
        object["metadata"]["labels"]["release"] = json!("upgraded");
    }));
    let ca = ca_pem();
    let mut patcher = h.patcher(&ca, fast()).await;

    h.next_request("PATCH refused by a failed test", |r| {
        r.is_patch(StatusCode::UNPROCESSABLE_ENTITY)
    })
    .await;
    h.next_request("PATCH after reading again", |r| r.is_patch(StatusCode::OK))
        .await;
    patcher.wait_ready(true).await;

    let object = h.object();
    assert_eq!(bundle(&object, 0), &b64(&ca));
    assert_eq!(bundle(&object, 1), &b64(&ca));
    assert_eq!(
        bundle(&object, 2),
        &b64("their new CA"),
        "their change survives"
    );
    assert_eq!(object["metadata"]["labels"]["release"], "upgraded");

    patcher.stop().await;
    h.assert_only_known_requests();
}

#[tokio::test]
async fn api_errors_are_retried() {
    let mut h = Harness::start(Some(chart_configuration())).await;
    h.fake.store.lock().unwrap().failing_gets = 3;
    let ca = ca_pem();
    let mut patcher = h.patcher(&ca, fast()).await;

    for attempt in 1..=3 {
        h.next_request(&format!("failed GET #{attempt}"), |r| {
            r.is_get() && r.status == StatusCode::INTERNAL_SERVER_ERROR
        })
        .await;
    }
    assert!(!*patcher.ready.borrow());
    h.next_request("PATCH after the errors", |r| r.is_patch(StatusCode::OK))
        .await;
    patcher.wait_ready(true).await;

    patcher.stop().await;
    h.assert_only_known_requests();
}

#[tokio::test]
async fn shutdown_stops_the_patcher_while_it_waits_to_retry() {
    let mut h = Harness::start(None).await;
    // Backoff of an hour: after the first 404 the patcher has nothing to do for a long
    // time, with a watch open; shutdown must still end it at once.
    let slow = PatcherOptions {
        resync: Duration::from_secs(3600),
        backoff_initial: Duration::from_secs(3600),
        backoff_max: Duration::from_secs(3600),
    };
    let patcher = h.patcher(&ca_pem(), slow).await;
    h.next_request("GET answered 404", |r| {
        r.is_get() && r.status == StatusCode::NOT_FOUND
    })
    .await;
    h.next_request("watch", Request::is_watch).await;

    let mut ready = patcher.ready.clone();
    patcher.stop().await;
    assert!(
        tokio::time::timeout(WAIT, ready.changed())
            .await
            .unwrap()
            .is_err(),
        "after run returns, the ready sender is gone"
    );
    assert!(!*ready.borrow());
    h.assert_only_known_requests();
}

#[tokio::test]
async fn shutdown_stops_a_patcher_that_is_in_place() {
    let mut h = Harness::start(Some(chart_configuration())).await;
    let mut patcher = h.patcher(&ca_pem(), PatcherOptions::default()).await;
    h.next_request("PATCH", |r| r.is_patch(StatusCode::OK))
        .await;
    patcher.wait_ready(true).await;
    let ready = patcher.ready.clone();
    patcher.stop().await;
    assert!(*ready.borrow(), "the last state stays readable");
    h.assert_only_known_requests();
}
