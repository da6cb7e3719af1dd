//! The caBundle patcher against a fake Kubernetes API server.
//!
//! The fake implements exactly what the patcher uses, for the one cluster-scoped resource:
//! - `GET  .../mutatingwebhookconfigurations/<name>`: the object, or a 404 Status;
//! - `PATCH .../mutatingwebhookconfigurations/<name>` with `application/json-patch+json`:
//!   applied with json-patch, all or nothing; a failed `test` answers 422 like the API
//!   server; other content types 415;
//! - `GET .../mutatingwebhookconfigurations?fieldSelector=metadata.name=<name>`: the list
//!   kube's watcher starts with (items and the list's resourceVersion);
//! - the same with `watch=true&resourceVersion=<rv>`: a stream of JSON lines
//!   (`{"type":"ADDED|MODIFIED|DELETED","object":...}`) replaying every change after `rv`
//!   and then following new ones.
//!
//! Every change bumps the resourceVersion and emits a watch event; every request is sent
//! to the test as a [`Request`], which is what tests wait on (never on sleeps), each wait
//! bounded by [`WAIT`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hyper::body::Frame;
use serde_json::{Value, json};
use skiff_injector::cabundle::{self, CaBundlePatcher, PatcherOptions};
use skiff_injector::selfsigned;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

const COLLECTION: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";
const NAME: &str = "istio-sidecar-injector";
const NS_HOOK: &str = "rev.namespace.sidecar-injector.istio.io";
const OBJ_HOOK: &str = "rev.object.sidecar-injector.istio.io";
const FOREIGN_HOOK: &str = "validation.example.com";
/// Upper bound of every wait: long enough for a loaded CI machine, short enough that a
/// hanging patcher fails the test quickly.
const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// The fake API server
// ---------------------------------------------------------------------------------------

/// One request the fake answered.
#[derive(Debug, Clone)]
struct Request {
    method: Method,
    path: String,
    query: HashMap<String, String>,
    status: StatusCode,
    /// The JSON Patch of a PATCH request.
    body: Option<Value>,
}

impl Request {
    fn is_get(&self) -> bool {
        self.method == Method::GET && self.path == format!("{COLLECTION}/{NAME}")
    }

    fn is_patch(&self, status: StatusCode) -> bool {
        self.method == Method::PATCH && self.status == status
    }

    fn is_watch(&self) -> bool {
        self.path == COLLECTION && self.query.get("watch").map(String::as_str) == Some("true")
    }

    fn known(&self) -> bool {
        self.path == COLLECTION || self.path == format!("{COLLECTION}/{NAME}")
    }
}

/// Something to do to the stored object just before the next PATCH is applied: a writer
/// racing the patcher.
type Racer = Box<dyn FnOnce(&mut Value) + Send>;

struct Store {
    object: Option<Value>,
    version: u64,
    /// Every watch event so far, with the version it created, for replay.
    history: Vec<(u64, Bytes)>,
    watchers: Vec<mpsc::UnboundedSender<Bytes>>,
    /// GETs of the object still to answer with 500.
    failing_gets: u32,
    before_next_patch: Option<Racer>,
}

impl Store {
    fn put(&mut self, mut object: Value) -> Value {
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        let kind = if self.object.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.object = Some(object.clone());
        self.emit(kind, &object);
        object
    }

    fn delete(&mut self) {
        if let Some(mut object) = self.object.take() {
            self.version += 1;
            object["metadata"]["resourceVersion"] = json!(self.version.to_string());
            self.emit("DELETED", &object);
        }
    }

    fn emit(&mut self, kind: &str, object: &Value) {
        let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap();
        line.push(b'\n');
        let line = Bytes::from(line);
        self.history.push((self.version, line.clone()));
        self.watchers
            .retain(|watcher| watcher.send(line.clone()).is_ok());
    }
}

#[derive(Clone)]
struct Fake {
    store: Arc<Mutex<Store>>,
    log: mpsc::UnboundedSender<Request>,
}

impl Fake {
    fn record(&self, method: Method, uri: &Uri, status: StatusCode, body: Option<Value>) {
        let query = Query::<HashMap<String, String>>::try_from_uri(uri)
            .map(|Query(query)| query)
            .unwrap_or_default();
        let _ = self.log.send(Request {
            method,
            path: uri.path().to_owned(),
            query,
            status,
            body,
        });
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

fn selects_our_object(query: &HashMap<String, String>) -> bool {
    query.get("fieldSelector").map(String::as_str) == Some(&format!("metadata.name={NAME}"))
}

async fn get_object(State(fake): State<Fake>, Path(name): Path<String>, uri: Uri) -> Response {
    let response = {
        let mut store = fake.store.lock().unwrap();
        if store.failing_gets > 0 {
            store.failing_gets -= 1;
            status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "etcd is having a bad day",
            )
        } else {
            match store.object.as_ref().filter(|_| name == NAME) {
                Some(object) => axum::Json(object.clone()).into_response(),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("mutatingwebhookconfigurations \"{name}\" not found"),
                ),
            }
        }
    };
    fake.record(Method::GET, &uri, response.status(), None);
    response
}

async fn patch_object(
    State(fake): State<Fake>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let patch: Option<Value> = serde_json::from_slice(&body).ok();
    let response = patch_response(&fake, &name, &headers, &body);
    fake.record(Method::PATCH, &uri, response.status(), patch);
    response
}

fn patch_response(fake: &Fake, name: &str, headers: &HeaderMap, body: &[u8]) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if content_type != Some("application/json-patch+json") {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            &format!("the fake only takes JSON patches, not {content_type:?}"),
        );
    }
    let Ok(patch) = serde_json::from_slice::<json_patch::Patch>(body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "not a JSON patch");
    };
    let mut store = fake.store.lock().unwrap();
    if name != NAME || store.object.is_none() {
        return status(StatusCode::NOT_FOUND, "NotFound", "not found");
    }
    if let Some(racer) = store.before_next_patch.take() {
        let mut object = store.object.clone().unwrap();
        racer(&mut object);
        store.put(object);
    }
    let mut object = store.object.clone().unwrap();
    match json_patch::patch(&mut object, &patch) {
        Ok(()) => axum::Json(store.put(object)).into_response(),
        Err(error) => status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &error.to_string(),
        ),
    }
}

async fn list_or_watch(
    State(fake): State<Fake>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
) -> Response {
    if !selects_our_object(&query) {
        let response = status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "expected a field selector",
        );
        fake.record(Method::GET, &uri, response.status(), None);
        return response;
    }
    let response = if query.get("watch").map(String::as_str) == Some("true") {
        let since: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (sender, receiver) = mpsc::unbounded_channel();
        let mut store = fake.store.lock().unwrap();
        for (version, line) in &store.history {
            if *version > since {
                let _ = sender.send(line.clone());
            }
        }
        store.watchers.push(sender);
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::new(WatchBody(receiver)))
            .unwrap()
    } else {
        let store = fake.store.lock().unwrap();
        axum::Json(json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfigurationList",
            "metadata": {"resourceVersion": store.version.to_string()},
            "items": store.object.iter().cloned().collect::<Vec<_>>(),
        }))
        .into_response()
    };
    fake.record(Method::GET, &uri, response.status(), None);
    response
}

async fn unexpected(State(fake): State<Fake>, method: Method, uri: Uri) -> Response {
    fake.record(method, &uri, StatusCode::NOT_FOUND, None);
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the fake does not serve this",
    )
}

/// A watch response: the JSON lines sent to the channel, for as long as the fake lives.
struct WatchBody(mpsc::UnboundedReceiver<Bytes>);

impl hyper::body::Body for WatchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|line| line.map(|line| Ok(Frame::data(line))))
    }
}

// ---------------------------------------------------------------------------------------
// The harness
// ---------------------------------------------------------------------------------------

struct Harness {
    fake: Fake,
    addr: SocketAddr,
    log: mpsc::UnboundedReceiver<Request>,
    /// Every request received from `log` so far.
    seen: Vec<Request>,
    server: JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

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
    async fn start(object: Option<Value>) -> Self {
        let (log_tx, log) = mpsc::unbounded_channel();
        let mut store = Store {
            object: None,
            version: 100,
            history: Vec::new(),
            watchers: Vec::new(),
            failing_gets: 0,
            before_next_patch: None,
        };
        if let Some(object) = object {
            store.put(object);
        }
        let fake = Fake {
            store: Arc::new(Mutex::new(store)),
            log: log_tx,
        };
        let app = Router::new()
            .route(COLLECTION, get(list_or_watch))
            .route(
                &format!("{COLLECTION}/{{name}}"),
                get(get_object).patch(patch_object),
            )
            .fallback(unexpected)
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            fake,
            addr,
            log,
            seen: Vec::new(),
            server,
        }
    }

    async fn patcher(&self, ca_pem: &str, options: PatcherOptions) -> Running {
        let config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        let client = cabundle::client_for(config).await.expect("kube client");
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

    /// The next request (after those already waited for) that matches `wanted`.
    async fn next_request(&mut self, what: &str, wanted: impl Fn(&Request) -> bool) -> Request {
        let found = tokio::time::timeout(WAIT, async {
            while let Some(request) = self.log.recv().await {
                self.seen.push(request.clone());
                if wanted(&request) {
                    return Some(request);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(request)) => request,
            _ => panic!(
                "no {what} within {WAIT:?}; requests so far:\n{}",
                self.describe_seen()
            ),
        }
    }

    /// Every request so far, including those not waited for. Call after the patcher
    /// stopped, so that the list is complete.
    fn all_requests(&mut self) -> &[Request] {
        while let Ok(request) = self.log.try_recv() {
            self.seen.push(request);
        }
        &self.seen
    }

    fn describe_seen(&self) -> String {
        self.seen
            .iter()
            .map(|r| format!("  {} {} {:?} -> {}", r.method, r.path, r.query, r.status))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn object(&self) -> Value {
        self.fake
            .store
            .lock()
            .unwrap()
            .object
            .clone()
            .expect("object exists")
    }

    /// Stores a new version of the object and emits ADDED or MODIFIED, as the API server
    /// would after someone else's write.
    fn write(&self, object: Value) {
        self.fake.store.lock().unwrap().put(object);
    }

    fn modify(&self, change: impl FnOnce(&mut Value)) {
        let mut object = self.object();
        change(&mut object);
        self.write(object);
    }

    fn delete(&self) {
        self.fake.store.lock().unwrap().delete();
    }

    fn assert_only_known_requests(&mut self) {
        let unknown: Vec<Request> = self
            .all_requests()
            .iter()
            .filter(|r| !r.known())
            .cloned()
            .collect();
        assert!(
            unknown.is_empty(),
            "requests the fake does not serve: {unknown:#?}"
        );
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
