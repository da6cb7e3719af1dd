//! The CA and serving certificate that every replica of `skiff-injector serve --self-signed`
//! shares, kept in a Kubernetes Secret.
//!
//! The API server trusts one CA for the webhook: the `caBundle` of the
//! MutatingWebhookConfiguration. If each replica generated its own CA
//! ([`crate::selfsigned`]), their [`crate::cabundle`] patchers would overwrite each other's
//! bundle and the API server would trust only the replica that wrote last. So the first
//! replica to start generates the set and stores it in a Secret, and the others read it
//! from there.
//!
//! The Secret has type `kubernetes.io/tls` and holds `tls.crt` (the serving certificate),
//! `tls.key` (its key) and `ca.crt` (the CA certificate; the CA's key is never stored, see
//! [`crate::selfsigned`]). [`shared_certificates`]:
//! 1. reads the Secret, and uses it if [`check_usable`] accepts it: the serving certificate
//!    is signed by the CA and allowed to serve TLS, matches the key, names every DNS name
//!    asked for, and both certificates stay valid for at least a third of the serving
//!    certificate's lifetime more (cert-manager's default renewal point);
//! 2. if it does not exist, generates a set and creates the Secret. If another replica
//!    created it first (409 AlreadyExists), it reads theirs;
//! 3. if it exists but is not usable, generates a set and replaces the Secret, sending the
//!    resourceVersion it read: if someone wrote in between, the API server refuses the
//!    write (409 Conflict) and it reads again, usually finding what the other replica wrote.
//!
//! So replicas that start together agree without a lock or a leader: several may generate,
//! only one write wins, and the others adopt the winner's set.
//!
//! Errors that may pass (5xx, 429, a failed connection) are retried a few times with
//! [`crate::cabundle`]'s capped exponential backoff with jitter ([`RetryOptions`]); if they
//! last, the call fails, the injector exits and the kubelet restarts it with its own
//! backoff. A refusal (403 and the other 4xx) is not retried: the error names the RBAC or
//! the fix that is needed.
//!
//! The Secret is read once, at start. A running replica keeps what it started with, so when
//! a replica starting late in the lifetime renews the set, the others only follow when they
//! restart; until then their patchers disagree over the bundle (the patcher warns about it).
//!
//! RBAC: `get` and `update` on the one Secret (both can be limited with `resourceNames`) and
//! `create` on secrets in the namespace (the API server cannot limit a create by name: the
//! name is not part of the request's URL).
//!
//! Everything but [`shared_certificates`] and [`shared_certificates_with`] is pure.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use thiserror::Error;
use tracing::{info, warn};

pub use self::usable::{Unusable, certificates_from_secret, check_usable};
use crate::cabundle::{self, Backoff};
use crate::selfsigned::{self, CertError, Certificates};

mod der;
#[cfg(test)]
mod tests;
mod usable;

/// The Secret's key for the CA certificate (the name cert-manager uses too).
pub const CA_KEY: &str = "ca.crt";
/// The Secret's key for the serving certificate (required by the `kubernetes.io/tls` type).
pub const CERT_KEY: &str = selfsigned::CERT_FILE;
/// The Secret's key for the serving certificate's private key.
pub const KEY_KEY: &str = selfsigned::KEY_FILE;
/// The type of a Secret this module creates.
pub const SECRET_TYPE: &str = "kubernetes.io/tls";
/// The Secret's name when none is given (`serve --cert-secret`).
pub const DEFAULT_SECRET_NAME: &str = "skiff-injector-certs";
/// The label on a Secret this module creates, so that people can tell who made it (it is
/// not part of the Helm release, which does not know about it).
pub const MANAGED_BY_LABEL: (&str, &str) = ("app.kubernetes.io/managed-by", "skiff-injector");

/// How [`shared_certificates_with`] retries. The defaults suit a cluster; tests shorten them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryOptions {
    /// Tries in all, the first included (at least 1). A write that loses a race counts as
    /// a try too, so that two writers that never agree cannot go on forever.
    pub attempts: u32,
    /// Delay after the first failure; doubles (with jitter) on each further one up to
    /// `backoff_max`. A lost race is followed by a read at once, without a delay.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for RetryOptions {
    /// Eight tries, 100 ms apart at first and at most 5 s: at most about 11 s of waiting,
    /// after which the pod had better restart and let the kubelet's backoff take over.
    fn default() -> Self {
        Self {
            attempts: 8,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

impl RetryOptions {
    fn validate(&self) -> Result<(), CertStoreError> {
        let invalid =
            |field, value: String, fix| CertStoreError::InvalidRetry { field, value, fix };
        if self.attempts == 0 {
            return Err(invalid(
                "attempts",
                self.attempts.to_string(),
                "use at least 1 (the first try counts)",
            ));
        }
        if self.backoff_initial.is_zero() {
            return Err(invalid(
                "backoff_initial",
                format!("{:?}", self.backoff_initial),
                "use a positive duration, e.g. 100ms",
            ));
        }
        if self.backoff_max < self.backoff_initial || self.backoff_max > cabundle::MAX_INTERVAL {
            return Err(invalid(
                "backoff_max",
                format!("{:?}", self.backoff_max),
                "use a duration at least as long as backoff_initial and at most a day",
            ));
        }
        Ok(())
    }
}

/// Why [`shared_certificates`] could not provide certificates.
#[derive(Debug, Error)]
pub enum CertStoreError {
    #[error(
        "shared certificates: namespace {namespace:?} is not a namespace name; pass the \
         injector's namespace with --service-namespace (lower-case letters, digits and '-', \
         at most 63)"
    )]
    InvalidNamespace { namespace: String },
    #[error(
        "shared certificates: Secret name {name:?} is not a Kubernetes object name; pass \
         --cert-secret, e.g. \"{DEFAULT_SECRET_NAME}\" (lower-case letters, digits, '-' and \
         '.', at most 253)"
    )]
    InvalidName { name: String },
    #[error("shared certificates: retry option {field} is {value}; {fix}")]
    InvalidRetry {
        field: &'static str,
        value: String,
        fix: &'static str,
    },
    #[error("shared certificates in Secret {secret}: {source}")]
    Generate {
        secret: SecretRef,
        #[source]
        source: CertError,
    },
    #[error(
        "shared certificates: the API server does not allow the injector to {verb} Secret \
         {secret} (403 Forbidden: {message}); its service account needs a Role in namespace \
         {ns} granting get and update on secrets with resourceNames [{name:?}] and create on \
         secrets, and a RoleBinding to that Role (the chart creates both unless rbac.create \
         is false)",
        ns = .secret.namespace,
        name = .secret.name
    )]
    Forbidden {
        secret: SecretRef,
        verb: Verb,
        message: String,
    },
    #[error(
        "shared certificates: the API server did not accept the injector's credentials when \
         it tried to {verb} Secret {secret} (401 Unauthorized: {message}); check the pod's \
         service account token (automountServiceAccountToken) or the kubeconfig"
    )]
    Unauthorized {
        secret: SecretRef,
        verb: Verb,
        message: String,
    },
    #[error(
        "shared certificates: the API server refused to {verb} Secret {secret} ({code} \
         {reason}: {message}); {fix}"
    )]
    Rejected {
        secret: SecretRef,
        verb: Verb,
        code: u16,
        reason: String,
        message: String,
        fix: String,
    },
    #[error(
        "shared certificates: the API server returned Secret {secret} without \
         metadata.resourceVersion, so it cannot be replaced without risking another \
         replica's write; check what sits between the injector and the API server"
    )]
    NoResourceVersion { secret: SecretRef },
    #[error(
        "shared certificates: gave up on Secret {secret} after {attempts} tries; the last: \
         {last}. Check that the API server is reachable from the injector's pod"
    )]
    GaveUp {
        secret: SecretRef,
        attempts: u32,
        last: String,
    },
}

/// Namespace and name of the Secret, shown as `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The request that failed, as RBAC names its verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Create,
    Update,
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verb::Get => "get",
            Verb::Create => "create",
            Verb::Update => "update",
        })
    }
}

/// [`shared_certificates_with`] with the default [`RetryOptions`].
pub async fn shared_certificates(
    client: kube::Client,
    namespace: &str,
    secret_name: &str,
    dns_names: &[String],
    validity: Duration,
) -> Result<Certificates, CertStoreError> {
    shared_certificates_with(
        client,
        namespace,
        secret_name,
        dns_names,
        validity,
        &RetryOptions::default(),
    )
    .await
}

/// The CA and serving certificate for `dns_names` that all replicas share through the
/// Secret `namespace/secret_name`: the Secret's if they are usable, else a new set (valid
/// for `validity`) that this call stores there, unless another replica stores one first.
/// See the module documentation.
pub async fn shared_certificates_with(
    client: kube::Client,
    namespace: &str,
    secret_name: &str,
    dns_names: &[String],
    validity: Duration,
    retry: &RetryOptions,
) -> Result<Certificates, CertStoreError> {
    if !is_namespace_name(namespace) {
        return Err(CertStoreError::InvalidNamespace {
            namespace: namespace.to_owned(),
        });
    }
    if !cabundle::is_object_name(secret_name) {
        return Err(CertStoreError::InvalidName {
            name: secret_name.to_owned(),
        });
    }
    retry.validate()?;
    let secret = SecretRef {
        namespace: namespace.to_owned(),
        name: secret_name.to_owned(),
    };
    // A bad name or validity is refused even when the stored set would do.
    selfsigned::check_inputs(dns_names, validity).map_err(|source| CertStoreError::Generate {
        secret: secret.clone(),
        source,
    })?;
    let mut store = Store {
        api: Api::namespaced(client, namespace),
        secret,
        dns_names,
        validity,
        generated: None,
    };
    let mut backoff = Backoff::new(retry.backoff_initial, retry.backoff_max);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (last, delay) = match store.attempt().await? {
            Outcome::Done(certs) => return Ok(certs),
            Outcome::Raced(what) => (what.to_owned(), None),
            Outcome::Transient(error) => (error, Some(backoff.next_delay())),
        };
        if attempt >= retry.attempts {
            return Err(CertStoreError::GaveUp {
                secret: store.secret,
                attempts: attempt,
                last,
            });
        }
        match delay {
            None => info!(secret = %store.secret, what = %last, "reading the Secret again"),
            Some(delay) => {
                warn!(secret = %store.secret, error = %last, retry_in = ?delay,
                    "the shared certificate Secret could not be read or written; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// What one try came to.
#[derive(Debug)]
enum Outcome {
    Done(Certificates),
    /// Someone else wrote first: read again at once.
    Raced(&'static str),
    /// Perhaps temporary: read again after a delay.
    Transient(String),
}

struct Store<'a> {
    api: Api<Secret>,
    secret: SecretRef,
    dns_names: &'a [String],
    validity: Duration,
    /// Generated at most once per call, and reused if a write has to be tried again.
    generated: Option<Certificates>,
}

impl Store<'_> {
    /// Reads the Secret, and uses, creates or replaces it. `Err` is final; `Ok` says
    /// whether to go on.
    async fn attempt(&mut self) -> Result<Outcome, CertStoreError> {
        let name = self.secret.name.clone();
        let existing = match self.api.get_opt(&name).await {
            Ok(Some(existing)) => existing,
            Ok(None) => return self.create().await,
            Err(error) => return self.failed(Verb::Get, error),
        };
        let version = existing.metadata.resource_version.clone();
        let stored = certificates_from_secret(&existing).and_then(|certs| {
            check_usable(&certs, self.dns_names, SystemTime::now()).map(|()| certs)
        });
        let why = match stored {
            Ok(certs) => {
                info!(secret = %self.secret, resource_version = ?version,
                    "using the shared certificates from the Secret");
                return Ok(Outcome::Done(certs));
            }
            Err(why) => why,
        };
        if version.is_none() {
            return Err(CertStoreError::NoResourceVersion {
                secret: self.secret.clone(),
            });
        }
        warn!(secret = %self.secret, reason = %why,
            "the certificates in the Secret are not usable; replacing them");
        let certs = self.generated()?;
        match self
            .api
            .replace(&name, &post_params(), &replacement(existing, &certs))
            .await
        {
            Ok(_) => {
                info!(secret = %self.secret, dns_names = ?self.dns_names,
                    "replaced the Secret with a new CA and serving certificate");
                Ok(Outcome::Done(certs))
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Outcome::Raced(
                "the Secret changed between reading and replacing it (409 Conflict)",
            )),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(Outcome::Raced(
                "the Secret was deleted between reading and replacing it (404 Not Found)",
            )),
            Err(error) => self.failed(Verb::Update, error),
        }
    }

    async fn create(&mut self) -> Result<Outcome, CertStoreError> {
        let certs = self.generated()?;
        match self
            .api
            .create(&post_params(), &new_secret(&self.secret.name, &certs))
            .await
        {
            Ok(_) => {
                info!(secret = %self.secret, dns_names = ?self.dns_names,
                    "created the Secret with a new CA and serving certificate");
                Ok(Outcome::Done(certs))
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Outcome::Raced(
                "another replica created the Secret first (409 AlreadyExists)",
            )),
            Err(error) => self.failed(Verb::Create, error),
        }
    }

    fn generated(&mut self) -> Result<Certificates, CertStoreError> {
        if let Some(certs) = &self.generated {
            return Ok(certs.clone());
        }
        let certs = selfsigned::generate(self.dns_names, self.validity).map_err(|source| {
            CertStoreError::Generate {
                secret: self.secret.clone(),
                source,
            }
        })?;
        self.generated = Some(certs.clone());
        Ok(certs)
    }

    fn failed(&self, verb: Verb, error: kube::Error) -> Result<Outcome, CertStoreError> {
        classify(&self.secret, verb, error)
    }
}

/// Sorts a failed request into final errors and ones worth another try.
fn classify(secret: &SecretRef, verb: Verb, error: kube::Error) -> Result<Outcome, CertStoreError> {
    let status = match error {
        kube::Error::Api(status) => status,
        // Connection, TLS, timeout, a body that is not JSON: the next try may go better.
        other => return Ok(Outcome::Transient(format!("{verb}: {other}"))),
    };
    let secret = secret.clone();
    let message = status.message.clone();
    match status.code {
        403 => Err(CertStoreError::Forbidden {
            secret,
            verb,
            message,
        }),
        401 => Err(CertStoreError::Unauthorized {
            secret,
            verb,
            message,
        }),
        429 | 500..=599 => Ok(Outcome::Transient(format!(
            "{verb} answered {} {}: {}",
            status.code, status.reason, status.message
        ))),
        code => {
            let fix = match (verb, code) {
                (Verb::Update, 422) => format!(
                    "a Secret marked immutable or of another type cannot be rewritten; delete \
                     it (kubectl -n {} delete secret {}) and the injector creates a new one",
                    secret.namespace, secret.name
                ),
                (Verb::Create, 404) => format!(
                    "check that namespace {} exists and is the injector's",
                    secret.namespace
                ),
                _ => "check the Secret and any admission policy for secrets in the namespace"
                    .to_owned(),
            };
            Err(CertStoreError::Rejected {
                secret,
                verb,
                code,
                reason: status.reason.clone(),
                message,
                fix,
            })
        }
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(cabundle::FIELD_MANAGER.to_owned()),
        ..PostParams::default()
    }
}

fn secret_data(certs: &Certificates) -> BTreeMap<String, ByteString> {
    [
        (CA_KEY, &certs.ca_pem),
        (CERT_KEY, &certs.cert_pem),
        (KEY_KEY, &certs.key_pem),
    ]
    .into_iter()
    .map(|(key, pem)| (key.to_owned(), ByteString(pem.as_bytes().to_vec())))
    .collect()
}

/// The Secret to create: type `kubernetes.io/tls`, the three keys, and [`MANAGED_BY_LABEL`].
pub(crate) fn new_secret(name: &str, certs: &Certificates) -> Secret {
    let (label, value) = MANAGED_BY_LABEL;
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(label.to_owned(), value.to_owned())])),
            ..ObjectMeta::default()
        },
        type_: Some(SECRET_TYPE.to_owned()),
        data: Some(secret_data(certs)),
        ..Secret::default()
    }
}

/// `existing` with the three keys set to `certs`. Everything else is kept as read: the
/// metadata, whose resourceVersion makes the API server refuse the write if the Secret
/// changed since; other data keys; and the type, which the API server does not let change.
pub(crate) fn replacement(mut existing: Secret, certs: &Certificates) -> Secret {
    existing
        .data
        .get_or_insert_with(BTreeMap::new)
        .extend(secret_data(certs));
    existing
}

/// A namespace name (an RFC 1123 label): it becomes part of URL paths.
fn is_namespace_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}
