//! A fake Kubernetes API server for the tests that talk to the API (tests/cabundle.rs,
//! tests/certstore.rs). It implements exactly what the injector uses:
//!
//! The MutatingWebhookConfiguration `NAME` (cluster-scoped), for the caBundle patcher:
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
//! Secrets in any namespace, for the shared certificate store:
//! - `GET /api/v1/namespaces/<ns>/secrets/<name>`: the Secret, or a 404 Status;
//! - `POST /api/v1/namespaces/<ns>/secrets`: creates it (201), or 409 AlreadyExists;
//! - `PUT /api/v1/namespaces/<ns>/secrets/<name>`: replaces it (200) if the body's
//!   `metadata.resourceVersion` is the stored one, else 409 Conflict; 404 if it does not
//!   exist; 422 without a resourceVersion, for a changed `type` or an `immutable` Secret.
//!
//! Both validate what the real API server validates for these objects (`kubernetes.io/tls`
//! needs `tls.crt` and `tls.key`; data values are base64). Every change bumps the one
//! resourceVersion counter; every request is sent to the test as a [`Request`], which is
//! what tests wait on (never on sleeps), each wait bounded by [`WAIT`].

// Each test crate uses only part of the fake.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
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
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::{Barrier, mpsc};
use tokio::task::JoinHandle;

pub const COLLECTION: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";
pub const NAME: &str = "istio-sidecar-injector";
/// Upper bound of every wait: long enough for a loaded CI machine, short enough that a
/// hanging test fails quickly.
pub const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// The fake API server
// ---------------------------------------------------------------------------------------

/// One request the fake answered.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: HashMap<String, String>,
    pub status: StatusCode,
    /// The JSON body of a PATCH (the JSON Patch), POST or PUT request.
    pub body: Option<Value>,
}

impl Request {
    /// A GET of the webhook configuration.
    pub fn is_get(&self) -> bool {
        self.method == Method::GET && self.path == format!("{COLLECTION}/{NAME}")
    }

    pub fn is_patch(&self, status: StatusCode) -> bool {
        self.method == Method::PATCH && self.status == status
    }

    pub fn is_watch(&self) -> bool {
        self.path == COLLECTION && self.query.get("watch").map(String::as_str) == Some("true")
    }

    /// A request for secrets, of any namespace.
    pub fn is_secret(&self) -> bool {
        secret_path(&self.path).is_some()
    }

    pub fn known(&self) -> bool {
        self.path == COLLECTION
            || self.path == format!("{COLLECTION}/{NAME}")
            || (self.is_secret() && [Method::GET, Method::POST, Method::PUT].contains(&self.method))
    }
}

/// `(namespace, name)` of a secrets path; the name is empty for the collection.
fn secret_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("/api/v1/namespaces/")?;
    let (namespace, rest) = rest.split_once('/')?;
    match rest.strip_prefix("secrets")? {
        "" => Some((namespace, "")),
        name => Some((namespace, name.strip_prefix('/')?)),
    }
}

/// Something to do to a stored object just before the next write is applied: a writer
/// racing the client.
pub type Racer = Box<dyn FnOnce(&mut Value) + Send>;

pub struct Store {
    /// The webhook configuration.
    pub object: Option<Value>,
    /// The last resourceVersion handed out, for every object.
    pub version: u64,
    /// Every watch event so far, with the version it created, for replay.
    pub history: Vec<(u64, Bytes)>,
    pub watchers: Vec<mpsc::UnboundedSender<Bytes>>,
    /// GETs of the webhook configuration still to answer with 500.
    pub failing_gets: u32,
    pub before_next_patch: Option<Racer>,
    pub secrets: Secrets,
}

/// The secrets and how their requests misbehave.
#[derive(Default)]
pub struct Secrets {
    /// By `(namespace, name)`.
    pub objects: BTreeMap<(String, String), Value>,
    /// Holds that many of the next GETs until all of them have arrived (a barrier of that
    /// size), so that their readers all see the state from before any of them writes.
    pub gate: Option<(Arc<Barrier>, u32)>,
    /// Applied to the stored Secret just before the next PUT is decided.
    pub before_next_put: Option<Racer>,
    /// Answer every secrets request with 403, as RBAC without the Role does.
    pub forbidden: bool,
    /// Secrets requests still to answer with 500.
    pub failing: u32,
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

    /// Stores a Secret with a new resourceVersion and returns what was stored.
    fn put_secret(&mut self, namespace: &str, name: &str, mut object: Value) -> Value {
        if object.get("type").is_none_or(Value::is_null) {
            object["type"] = json!("Opaque");
        }
        self.version += 1;
        object["metadata"]["name"] = json!(name);
        object["metadata"]["namespace"] = json!(namespace);
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.secrets
            .objects
            .insert((namespace.to_owned(), name.to_owned()), object.clone());
        object
    }

    /// The 403 or 500 the fake was told to give, if any.
    fn secret_refusal(&mut self, verb: &str, namespace: &str, name: &str) -> Option<Response> {
        if self.secrets.forbidden {
            let what = if name.is_empty() {
                "secrets is forbidden".to_owned()
            } else {
                format!("secrets {name:?} is forbidden")
            };
            return Some(status(
                StatusCode::FORBIDDEN,
                "Forbidden",
                &format!(
                    "{what}: User \"system:serviceaccount:{namespace}:skiff-injector\" cannot \
                     {verb} resource \"secrets\" in API group \"\" in the namespace \
                     \"{namespace}\""
                ),
            ));
        }
        if self.secrets.failing > 0 {
            self.secrets.failing -= 1;
            return Some(status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "etcd is having a bad day",
            ));
        }
        None
    }
}

#[derive(Clone)]
pub struct Fake {
    pub store: Arc<Mutex<Store>>,
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

pub fn status(code: StatusCode, reason: &str, message: &str) -> Response {
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

async fn get_secret(
    State(fake): State<Fake>,
    Path((namespace, name)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    let gate = {
        let mut store = fake.store.lock().unwrap();
        match &mut store.secrets.gate {
            Some((barrier, waiting)) if *waiting > 0 => {
                *waiting -= 1;
                Some(barrier.clone())
            }
            _ => None,
        }
    };
    if let Some(barrier) = gate {
        barrier.wait().await;
    }
    let response = {
        let mut store = fake.store.lock().unwrap();
        match store.secret_refusal("get", &namespace, &name) {
            Some(refusal) => refusal,
            None => match store.secrets.objects.get(&(namespace, name.clone())) {
                Some(object) => axum::Json(object.clone()).into_response(),
                None => status(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    &format!("secrets \"{name}\" not found"),
                ),
            },
        }
    };
    fake.record(Method::GET, &uri, response.status(), None);
    response
}

async fn create_secret(
    State(fake): State<Fake>,
    Path(namespace): Path<String>,
    uri: Uri,
    body: Bytes,
) -> Response {
    let object: Option<Value> = serde_json::from_slice(&body).ok();
    let response = create_response(&fake, &namespace, object.clone());
    fake.record(Method::POST, &uri, response.status(), object);
    response
}

fn create_response(fake: &Fake, namespace: &str, object: Option<Value>) -> Response {
    let Some(mut object) = object else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON");
    };
    let mut store = fake.store.lock().unwrap();
    if let Some(refusal) = store.secret_refusal("create", namespace, "") {
        return refusal;
    }
    let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
        return invalid("metadata.name: Required value: name or generateName is required");
    };
    if object["metadata"]
        .get("namespace")
        .is_some_and(|ns| ns != namespace)
    {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the \
             request",
        );
    }
    if object["metadata"].get("resourceVersion").is_some() {
        return invalid("resourceVersion should not be set on objects to be created");
    }
    if let Err(message) = validate_secret(&mut object) {
        return invalid(&message);
    }
    if store
        .secrets
        .objects
        .contains_key(&(namespace.to_owned(), name.clone()))
    {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("secrets \"{name}\" already exists"),
        );
    }
    let stored = store.put_secret(namespace, &name, object);
    (StatusCode::CREATED, axum::Json(stored)).into_response()
}

async fn replace_secret(
    State(fake): State<Fake>,
    Path((namespace, name)): Path<(String, String)>,
    uri: Uri,
    body: Bytes,
) -> Response {
    let object: Option<Value> = serde_json::from_slice(&body).ok();
    let response = replace_response(&fake, &namespace, &name, object.clone());
    fake.record(Method::PUT, &uri, response.status(), object);
    response
}

fn replace_response(fake: &Fake, namespace: &str, name: &str, object: Option<Value>) -> Response {
    let Some(mut object) = object else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "not JSON");
    };
    let mut store = fake.store.lock().unwrap();
    if let Some(refusal) = store.secret_refusal("update", namespace, name) {
        return refusal;
    }
    if object["metadata"]["name"] != name {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the name of the object does not match the name on the URL",
        );
    }
    let key = (namespace.to_owned(), name.to_owned());
    if let Some(racer) = store.secrets.before_next_put.take()
        && let Some(mut current) = store.secrets.objects.get(&key).cloned()
    {
        racer(&mut current);
        store.put_secret(namespace, name, current);
    }
    let Some(current) = store.secrets.objects.get(&key).cloned() else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("secrets \"{name}\" not found"),
        );
    };
    let Some(version) = object["metadata"]["resourceVersion"].as_str() else {
        return invalid(
            "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
        );
    };
    if version != current["metadata"]["resourceVersion"] {
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            &format!(
                "Operation cannot be fulfilled on secrets \"{name}\": the object has been \
                 modified; please apply your changes to the latest version and try again"
            ),
        );
    }
    if current["immutable"] == json!(true) {
        return invalid("data: Forbidden: field is immutable when `immutable` is set");
    }
    if let Err(message) = validate_secret(&mut object) {
        return invalid(&message);
    }
    if object["type"] != current["type"] {
        return invalid(&format!(
            "type: Invalid value: {}: field is immutable",
            object["type"]
        ));
    }
    let stored = store.put_secret(namespace, name, object);
    axum::Json(stored).into_response()
}

fn invalid(message: &str) -> Response {
    status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
}

/// The API server's validation of a Secret that matters here; defaults `type` to Opaque.
fn validate_secret(object: &mut Value) -> Result<(), String> {
    if object.get("type").is_none_or(Value::is_null) {
        object["type"] = json!("Opaque");
    }
    let empty = serde_json::Map::new();
    let data = object["data"].as_object().unwrap_or(&empty);
    for (key, value) in data {
        let decodes = value
            .as_str()
            .is_some_and(|text| BASE64.decode(text).is_ok());
        if !decodes {
            return Err(format!("data[{key}]: Invalid value: not base64"));
        }
    }
    if object["type"] == "kubernetes.io/tls" {
        for key in ["tls.crt", "tls.key"] {
            if !data.contains_key(key) {
                return Err(format!("data[{key}]: Required value"));
            }
        }
    }
    Ok(())
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

pub struct Harness {
    pub fake: Fake,
    pub addr: SocketAddr,
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

impl Harness {
    /// A running fake with `object` as the webhook configuration, and no secrets.
    pub async fn start(object: Option<Value>) -> Self {
        let (log_tx, log) = mpsc::unbounded_channel();
        let mut store = Store {
            object: None,
            version: 100,
            history: Vec::new(),
            watchers: Vec::new(),
            failing_gets: 0,
            before_next_patch: None,
            secrets: Secrets::default(),
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
            .route(
                "/api/v1/namespaces/{namespace}/secrets",
                post(create_secret),
            )
            .route(
                "/api/v1/namespaces/{namespace}/secrets/{name}",
                get(get_secret).put(replace_secret),
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

    /// A new client of the fake (each has its own connections, like another replica).
    pub async fn client(&self) -> kube::Client {
        let config = kube::Config::new(format!("http://{}", self.addr).parse().unwrap());
        skiff_injector::cabundle::client_for(config)
            .await
            .expect("kube client")
    }

    /// The next request (after those already waited for) that matches `wanted`.
    pub async fn next_request(&mut self, what: &str, wanted: impl Fn(&Request) -> bool) -> Request {
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

    /// Every request so far, including those not waited for. Call when the client is done
    /// (stopped, or its call returned), so that the list is complete.
    pub fn all_requests(&mut self) -> &[Request] {
        while let Ok(request) = self.log.try_recv() {
            self.seen.push(request);
        }
        &self.seen
    }

    pub fn describe_seen(&self) -> String {
        self.seen
            .iter()
            .map(|r| format!("  {} {} {:?} -> {}", r.method, r.path, r.query, r.status))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The webhook configuration.
    pub fn object(&self) -> Value {
        self.fake
            .store
            .lock()
            .unwrap()
            .object
            .clone()
            .expect("object exists")
    }

    /// Stores a new version of the webhook configuration and emits ADDED or MODIFIED, as
    /// the API server would after someone else's write.
    pub fn write(&self, object: Value) {
        self.fake.store.lock().unwrap().put(object);
    }

    pub fn modify(&self, change: impl FnOnce(&mut Value)) {
        let mut object = self.object();
        change(&mut object);
        self.write(object);
    }

    pub fn delete(&self) {
        self.fake.store.lock().unwrap().delete();
    }

    /// The stored Secret, if any.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<Value> {
        self.fake
            .store
            .lock()
            .unwrap()
            .secrets
            .objects
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Stores a Secret as someone else would, with a new resourceVersion; returns it.
    pub fn put_secret(&self, namespace: &str, name: &str, object: Value) -> Value {
        self.fake
            .store
            .lock()
            .unwrap()
            .put_secret(namespace, name, object)
    }

    pub fn assert_only_known_requests(&mut self) {
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
