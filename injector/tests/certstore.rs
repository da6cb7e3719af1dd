//! The shared certificate store against the fake Kubernetes API server of `common` (see
//! there for what it serves): replicas that create, reuse, race for and replace the Secret.
//!
//! Every call is bounded by [`WAIT`]; where two calls must overlap, the fake holds their
//! reads at a barrier until both have arrived, so the race is the same on every run.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::{Harness, WAIT};
use serde_json::{Value, json};
use skiff_injector::certstore::{
    CertStoreError, RetryOptions, Verb, check_usable, shared_certificates_with,
};
use skiff_injector::selfsigned::{self, Certificates};
use tokio::sync::Barrier;

const NS: &str = "skiff-system";
const SECRET: &str = "skiff-injector-certs";
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

fn names() -> Vec<String> {
    selfsigned::service_dns_names("skiff-injector", NS)
}

/// Quick retries, and few, so that giving up is quick too.
fn fast() -> RetryOptions {
    RetryOptions {
        attempts: 4,
        backoff_initial: Duration::from_millis(1),
        backoff_max: Duration::from_millis(20),
    }
}

fn b64(bytes: &str) -> Value {
    Value::String(BASE64.encode(bytes))
}

/// A Secret as another replica (or a person) would have stored it.
fn secret_holding(certs: &Certificates) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": NS},
        "type": "kubernetes.io/tls",
        "data": {
            "ca.crt": b64(&certs.ca_pem),
            "tls.crt": b64(&certs.cert_pem),
            "tls.key": b64(&certs.key_pem),
        },
    })
}

fn decoded(secret: &Value, key: &str) -> String {
    let text = secret["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {secret}"));
    String::from_utf8(BASE64.decode(text).unwrap()).unwrap()
}

fn certificates_in(secret: &Value) -> Certificates {
    Certificates {
        ca_pem: decoded(secret, "ca.crt"),
        cert_pem: decoded(secret, "tls.crt"),
        key_pem: decoded(secret, "tls.key"),
    }
}

fn usable(certs: &Certificates) -> bool {
    check_usable(certs, &names(), SystemTime::now()).is_ok()
}

impl Harness {
    /// One replica's start: `shared_certificates` with its own client.
    async fn replica(&self) -> Result<Certificates, CertStoreError> {
        let client = self.client().await;
        tokio::time::timeout(
            WAIT,
            shared_certificates_with(client, NS, SECRET, &names(), DAY, &fast()),
        )
        .await
        .expect("shared_certificates did not return in time")
    }

    fn stored(&self) -> Value {
        self.secret(NS, SECRET).expect("the Secret exists")
    }

    /// Method and status of every secrets request so far, in order; the call must have
    /// returned.
    fn secret_requests(&mut self) -> Vec<(Method, StatusCode)> {
        self.assert_only_known_requests();
        self.all_requests()
            .iter()
            .filter(|r| r.is_secret())
            .map(|r| (r.method.clone(), r.status))
            .collect()
    }

    /// The body of the only PUT so far.
    fn put_body(&mut self) -> Value {
        let puts: Vec<_> = self
            .all_requests()
            .iter()
            .filter(|r| r.is_secret() && r.method == Method::PUT)
            .collect();
        assert_eq!(puts.len(), 1, "{puts:#?}");
        puts[0].body.clone().expect("a JSON body")
    }
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn the_first_replica_creates_the_secret() {
    let mut h = Harness::start(None).await;
    let certs = h.replica().await.expect("certificates");

    assert_eq!(
        h.secret_requests(),
        [
            (Method::GET, StatusCode::NOT_FOUND),
            (Method::POST, StatusCode::CREATED)
        ]
    );
    let request = &h.all_requests()[1];
    assert_eq!(request.path, format!("/api/v1/namespaces/{NS}/secrets"));
    assert_eq!(
        request.query.get("fieldManager").map(String::as_str),
        Some("skiff-injector")
    );
    let stored = h.stored();
    assert_eq!(stored["type"], "kubernetes.io/tls");
    assert_eq!(
        stored["metadata"]["labels"],
        json!({"app.kubernetes.io/managed-by": "skiff-injector"})
    );
    assert_eq!(certificates_in(&stored), certs);
    assert!(usable(&certs));
}

#[tokio::test]
async fn the_next_replica_reuses_the_secret_without_writing() {
    let mut h = Harness::start(None).await;
    let first = h.replica().await.expect("first replica");
    let stored = h.stored();
    let writes_before = h.secret_requests().len();

    let second = h.replica().await.expect("second replica");
    assert_eq!(second.ca_pem, first.ca_pem);
    assert_eq!(second, first, "the same serving certificate and key too");
    assert_eq!(
        h.secret_requests()[writes_before..],
        [(Method::GET, StatusCode::OK)],
        "one read, no write"
    );
    assert_eq!(h.stored(), stored, "the Secret is untouched");
}

#[tokio::test]
async fn replicas_starting_together_share_the_one_certificate_that_was_created() {
    let mut h = Harness::start(None).await;
    // Both reads are answered only once both have arrived: both find no Secret, both
    // generate, both try to create it.
    h.fake.store.lock().unwrap().secrets.gate = Some((Arc::new(Barrier::new(2)), 2));

    let (a, b) = tokio::join!(h.replica(), h.replica());
    let (a, b) = (a.expect("replica a"), b.expect("replica b"));
    assert_eq!(a, b, "both serve the same CA, certificate and key");
    assert_eq!(certificates_in(&h.stored()), a);

    let mut requests = h.secret_requests();
    requests.sort_by_key(|(method, status)| (method.to_string(), status.as_u16()));
    assert_eq!(
        requests,
        [
            // The loser reads again and adopts the winner's.
            (Method::GET, StatusCode::OK),
            (Method::GET, StatusCode::NOT_FOUND),
            (Method::GET, StatusCode::NOT_FOUND),
            (Method::POST, StatusCode::CREATED),
            (Method::POST, StatusCode::CONFLICT),
        ],
        "exactly one create wins, and nothing is replaced:\n{}",
        h.describe_seen()
    );
}

#[tokio::test]
async fn a_garbage_secret_is_replaced_keeping_its_type_and_other_contents() {
    let mut h = Harness::start(None).await;
    let before = h.put_secret(
        NS,
        SECRET,
        json!({
            "metadata": {"labels": {"team": "platform"}},
            "type": "Opaque",
            "data": {"ca.crt": b64("garbage"), "notes": b64("kept")},
        }),
    );

    let certs = h.replica().await.expect("certificates");
    assert!(usable(&certs));
    assert_eq!(
        h.secret_requests(),
        [(Method::GET, StatusCode::OK), (Method::PUT, StatusCode::OK)]
    );
    assert_eq!(
        h.put_body()["metadata"]["resourceVersion"],
        before["metadata"]["resourceVersion"],
        "the write is conditional on the version that was read"
    );
    let stored = h.stored();
    assert_eq!(certificates_in(&stored), certs);
    assert_eq!(stored["type"], "Opaque", "a Secret's type cannot change");
    assert_eq!(decoded(&stored, "notes"), "kept");
    assert_eq!(stored["metadata"]["labels"], json!({"team": "platform"}));
}

#[tokio::test]
async fn an_expiring_secret_is_replaced() {
    let mut h = Harness::start(None).await;
    // Valid for one more second of a lifetime of an hour and a second: far inside the last
    // third (and expired by the time anyone looks again).
    let old = selfsigned::generate(&names(), Duration::from_secs(1)).unwrap();
    h.put_secret(NS, SECRET, secret_holding(&old));

    let certs = h.replica().await.expect("certificates");
    assert_ne!(certs.ca_pem, old.ca_pem);
    assert!(usable(&certs));
    assert_eq!(
        h.secret_requests(),
        [(Method::GET, StatusCode::OK), (Method::PUT, StatusCode::OK)]
    );
    assert_eq!(certificates_in(&h.stored()), certs);
}

#[tokio::test]
async fn a_secret_for_other_dns_names_is_replaced() {
    let mut h = Harness::start(None).await;
    let other =
        selfsigned::generate(&selfsigned::service_dns_names("another-injector", NS), DAY).unwrap();
    assert!(!usable(&other));
    h.put_secret(NS, SECRET, secret_holding(&other));

    let certs = h.replica().await.expect("certificates");
    assert_ne!(certs.ca_pem, other.ca_pem);
    assert!(usable(&certs));
    assert_eq!(
        h.secret_requests(),
        [(Method::GET, StatusCode::OK), (Method::PUT, StatusCode::OK)]
    );
    assert_eq!(certificates_in(&h.stored()), certs);
}

#[tokio::test]
async fn a_replace_that_loses_the_race_adopts_the_winners_certificates() {
    let mut h = Harness::start(None).await;
    h.put_secret(
        NS,
        SECRET,
        json!({"type": "kubernetes.io/tls", "data": {"tls.crt": b64("x"), "tls.key": b64("y")}}),
    );
    // Between this replica's read and its write, another replica replaces the Secret.
    let theirs = selfsigned::generate(&names(), DAY).unwrap();
    let written = secret_holding(&theirs);
    h.fake.store.lock().unwrap().secrets.before_next_put = Some(Box::new(move |secret| {
        secret["data"] = written["data"].clone();
    }));

    let certs = h.replica().await.expect("certificates");
    assert_eq!(certs, theirs);
    assert_eq!(
        h.secret_requests(),
        [
            (Method::GET, StatusCode::OK),
            (Method::PUT, StatusCode::CONFLICT),
            (Method::GET, StatusCode::OK),
        ]
    );
    assert_eq!(certificates_in(&h.stored()), theirs, "theirs stays");
}

#[tokio::test]
async fn forbidden_names_the_rbac_the_injector_needs() {
    let mut h = Harness::start(None).await;
    h.fake.store.lock().unwrap().secrets.forbidden = true;

    let err = h.replica().await.unwrap_err();
    assert!(
        matches!(
            &err,
            CertStoreError::Forbidden {
                verb: Verb::Get,
                ..
            }
        ),
        "{err:?}"
    );
    let message = err.to_string();
    for needle in [
        "to get Secret skiff-system/skiff-injector-certs",
        "403 Forbidden",
        "cannot get resource \"secrets\"",
        "Role in namespace skiff-system",
        "get and update on secrets with resourceNames [\"skiff-injector-certs\"]",
        "create on secrets",
        "RoleBinding",
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
    assert_eq!(
        h.secret_requests(),
        [(Method::GET, StatusCode::FORBIDDEN)],
        "a refusal is not retried"
    );
}

#[tokio::test]
async fn server_errors_are_retried() {
    let mut h = Harness::start(None).await;
    h.fake.store.lock().unwrap().secrets.failing = 2;

    let certs = h.replica().await.expect("certificates after two failures");
    assert!(usable(&certs));
    assert_eq!(
        h.secret_requests(),
        [
            (Method::GET, StatusCode::INTERNAL_SERVER_ERROR),
            (Method::GET, StatusCode::INTERNAL_SERVER_ERROR),
            (Method::GET, StatusCode::NOT_FOUND),
            (Method::POST, StatusCode::CREATED),
        ]
    );
}

#[tokio::test]
async fn lasting_server_errors_end_in_an_error_after_the_last_try() {
    let mut h = Harness::start(None).await;
    h.fake.store.lock().unwrap().secrets.failing = 100;

    let err = h.replica().await.unwrap_err();
    assert!(
        matches!(&err, CertStoreError::GaveUp { attempts: 4, .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("Secret skiff-system/skiff-injector-certs after 4 tries")
            && message.contains("500"),
        "{message}"
    );
    assert_eq!(
        h.secret_requests(),
        vec![(Method::GET, StatusCode::INTERNAL_SERVER_ERROR); 4]
    );
}

#[tokio::test]
async fn an_immutable_secret_is_reported_with_the_fix() {
    let mut h = Harness::start(None).await;
    h.put_secret(
        NS,
        SECRET,
        json!({"type": "Opaque", "immutable": true, "data": {"ca.crt": b64("garbage")}}),
    );

    let err = h.replica().await.unwrap_err();
    assert!(
        matches!(
            &err,
            CertStoreError::Rejected {
                verb: Verb::Update,
                code: 422,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("kubectl -n skiff-system delete secret skiff-injector-certs"),
        "{err}"
    );
    assert_eq!(
        h.secret_requests(),
        [
            (Method::GET, StatusCode::OK),
            (Method::PUT, StatusCode::UNPROCESSABLE_ENTITY)
        ]
    );
}
