//! Keeps the `caBundle` of the injector's MutatingWebhookConfiguration equal to the CA that
//! signed the webhook's serving certificate (spec/injector.md, section 5, "caBundle").
//!
//! The chart installs the configuration with an empty `caBundle`, because only the running
//! injector knows its CA (see [`crate::selfsigned`]). Until the bundle is filled in, the API
//! server cannot verify the webhook and, with `failurePolicy: Fail`, refuses every pod the
//! webhook selects; so [`CaBundlePatcher`] fills it in at start, puts it back whenever
//! someone else changes it (a `helm upgrade` re-applies the chart's empty value), and tells
//! the webhook's `/ready` whether the bundle is in place.
//!
//! Like Istio's webhook certificate patcher, it only touches webhooks whose name ends with
//! [`ISTIO_WEBHOOK_SUFFIX`] (`sidecar-injector.istio.io`): a configuration may carry other
//! webhooks, pointing elsewhere with their own CAs, and those must not be rewritten.
//!
//! How it stays correct without clobbering anyone:
//! - [`bundle_patch`] is a JSON Patch guarded by `test` operations on the resource version,
//!   on each webhook's name and on each old bundle, so if the object changed after it was
//!   read, the API server rejects the whole patch (422) and the patcher reads it again.
//! - It re-checks on every watch event for the object and at least every `resync`, and
//!   retries failures forever with capped exponential backoff and jitter, like Istio (which
//!   retries at 100 ms five times, then every minute). A missing configuration is not an
//!   error: the chart may create it after the Deployment.
//! - A bundle that keeps being overwritten is re-patched with a growing delay and a warning.
//!   The usual cause is injector replicas with different CAs: they would otherwise rewrite
//!   each other's bundle as fast as the watch delivers events. Replicas share one CA
//!   through a Secret ([`crate::certstore`]), so this happens only while they disagree:
//!   during a rollout from a version without that Secret, after the Secret was renewed and
//!   until the older replicas restart, or when they are given different `--cert-secret`s.
//!
//! [`bundle_patch`] is pure; [`CaBundlePatcher::run`] is the only code here that talks to
//! the API server.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher as _, Hasher as _};
use std::pin::{Pin, pin};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation, TestOperation};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use serde_json::Value;
use thiserror::Error;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

#[cfg(test)]
mod tests;

/// Webhooks whose name ends with this are ours to patch; others are left alone (Istio's rule).
pub const ISTIO_WEBHOOK_SUFFIX: &str = "sidecar-injector.istio.io";
/// Recorded as the field manager of our patches, so `managedFields` say who wrote the bundle.
pub const FIELD_MANAGER: &str = "skiff-injector";
/// How many overwrites in a row, without a quiet `resync` period between them, before the
/// patcher warns that something keeps fighting over the bundle.
const FIGHT_WARNING_AFTER: u32 = 3;
/// Longest accepted `resync` and `backoff_max`: a day is already far beyond any sensible
/// value, and the bound keeps every deadline the loop computes representable.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// Whether the webhook called `name` is one whose `caBundle` we keep (see the module docs).
pub fn is_managed(name: &str) -> bool {
    name.ends_with(ISTIO_WEBHOOK_SUFFIX)
}

/// The JSON Patch that sets `webhooks[i].clientConfig.caBundle` to `ca_pem` (base64-encoded,
/// as the API carries bytes) in every managed webhook whose bundle differs, or `None` when
/// every managed webhook already has it (or there is none).
///
/// Every change is guarded so that a concurrent writer makes the patch fail instead of
/// being overwritten: a `test` of `metadata.resourceVersion` (when the object has one), of
/// the webhook's name at that index (the list may have been reordered), and of the old
/// bundle before it is replaced. A missing bundle is set with `add`, which only the
/// resource version can guard.
pub fn bundle_patch(config: &MutatingWebhookConfiguration, ca_pem: &str) -> Option<Patch> {
    let wanted = Value::String(BASE64.encode(ca_pem));
    let mut ops = Vec::new();
    for (i, webhook) in config.webhooks.iter().flatten().enumerate() {
        if !is_managed(&webhook.name) {
            continue;
        }
        let current = webhook.client_config.ca_bundle.as_ref();
        if current.is_some_and(|bundle| bundle.0 == ca_pem.as_bytes()) {
            continue;
        }
        let index = i.to_string();
        ops.push(test(
            ["webhooks", index.as_str(), "name"],
            Value::String(webhook.name.clone()),
        ));
        let path =
            PointerBuf::from_tokens(["webhooks", index.as_str(), "clientConfig", "caBundle"]);
        match current {
            Some(bundle) => {
                ops.push(PatchOperation::Test(TestOperation {
                    path: path.clone(),
                    value: Value::String(BASE64.encode(&bundle.0)),
                }));
                ops.push(PatchOperation::Replace(ReplaceOperation {
                    path,
                    value: wanted.clone(),
                }));
            }
            None => ops.push(PatchOperation::Add(AddOperation {
                path,
                value: wanted.clone(),
            })),
        }
    }
    if ops.is_empty() {
        return None;
    }
    if let Some(version) = config.metadata.resource_version.as_ref() {
        ops.insert(
            0,
            test(
                ["metadata", "resourceVersion"],
                Value::String(version.clone()),
            ),
        );
    }
    Some(Patch(ops))
}

fn test<const N: usize>(tokens: [&str; N], value: Value) -> PatchOperation {
    PatchOperation::Test(TestOperation {
        path: PointerBuf::from_tokens(tokens),
        value,
    })
}

/// What the patcher needs besides the client: problems are reported when it is built, not
/// when the injector is already serving.
#[derive(Debug, Error)]
pub enum CaBundleError {
    #[error(
        "caBundle patcher: webhook configuration name {name:?} is not a Kubernetes object \
         name; pass the MutatingWebhookConfiguration's metadata.name, e.g. \
         \"istio-sidecar-injector\" (lower-case letters, digits, '-' and '.', at most 253)"
    )]
    InvalidName { name: String },
    #[error(
        "caBundle patcher: the CA is not usable ({reason}); pass the CA certificate in PEM \
         form, e.g. selfsigned::Certificates::ca_pem"
    )]
    InvalidCa { reason: String },
    #[error("caBundle patcher: {field} is {value:?}; {fix}")]
    InvalidOption {
        field: &'static str,
        value: Duration,
        fix: &'static str,
    },
    #[error(
        "caBundle patcher: no Kubernetes API credentials found ({source}); run in a Pod with \
         a service account token, or set KUBECONFIG"
    )]
    KubeConfig {
        #[source]
        source: kube::config::InferConfigError,
    },
    #[error("caBundle patcher: could not build the Kubernetes client: {source}")]
    Client {
        #[source]
        source: kube::Error,
    },
}

/// A client for the cluster the process is configured for: the kubeconfig named by
/// `KUBECONFIG` (or `~/.kube/config`) when there is one, else the Pod's service account
/// (in-cluster). Must be called inside a tokio runtime.
pub async fn client_from_environment() -> Result<kube::Client, CaBundleError> {
    let config = kube::Config::infer()
        .await
        .map_err(|source| CaBundleError::KubeConfig { source })?;
    client_for(config).await
}

/// A client for `config` (e.g. built by the caller from a `--kubeconfig` flag, or pointing at
/// a test server). Must be called inside a tokio runtime, which the client spawns a task on.
///
/// kube's rustls connector asks for rustls' process-wide crypto provider and panics if none
/// is installed, so this installs ring's unless the process already chose one.
pub async fn client_for(config: kube::Config) -> Result<kube::Client, CaBundleError> {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: any provider will do.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    kube::Client::try_from(config).map_err(|source| CaBundleError::Client { source })
}

/// Timing of the patcher. The defaults suit a cluster; tests shorten them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatcherOptions {
    /// Longest time between two checks when nothing happens: covers a watch that silently
    /// stopped delivering events.
    pub resync: Duration,
    /// First delay after a failure, a missing configuration or an overwrite; doubles on each
    /// further one (with jitter) up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for PatcherOptions {
    /// Istio's retry timing: 100 ms at first, at most a minute apart.
    fn default() -> Self {
        Self {
            resync: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(60),
        }
    }
}

impl PatcherOptions {
    fn validate(&self) -> Result<(), CaBundleError> {
        if self.resync.is_zero() || self.resync > MAX_INTERVAL {
            return Err(CaBundleError::InvalidOption {
                field: "resync",
                value: self.resync,
                fix: "use a positive duration of at most a day, e.g. 60s",
            });
        }
        if self.backoff_initial.is_zero() {
            return Err(CaBundleError::InvalidOption {
                field: "backoff_initial",
                value: self.backoff_initial,
                fix: "use a positive duration, e.g. 100ms",
            });
        }
        if self.backoff_max < self.backoff_initial || self.backoff_max > MAX_INTERVAL {
            return Err(CaBundleError::InvalidOption {
                field: "backoff_max",
                value: self.backoff_max,
                fix: "use a duration at least as long as backoff_initial and at most a day",
            });
        }
        Ok(())
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.backoff_initial, self.backoff_max)
    }
}

/// Keeps the `caBundle` of one MutatingWebhookConfiguration equal to a CA; see the module
/// documentation. Build it with [`CaBundlePatcher::new`], take [`CaBundlePatcher::ready`]
/// for the readiness endpoint, then spawn [`CaBundlePatcher::run`].
pub struct CaBundlePatcher {
    client: kube::Client,
    name: String,
    ca_pem: String,
    options: PatcherOptions,
    ready: watch::Sender<bool>,
}

impl std::fmt::Debug for CaBundlePatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaBundlePatcher")
            .field("name", &self.name)
            .field("options", &self.options)
            .field("ready", &*self.ready.borrow())
            .finish_non_exhaustive()
    }
}

impl CaBundlePatcher {
    /// A patcher writing `ca_pem` into the configuration called `name`. Checks that `name`
    /// is an object name and that `ca_pem` holds certificates and nothing else: a private
    /// key pasted by mistake would be published to everyone who can read webhook
    /// configurations.
    pub fn new(
        client: kube::Client,
        name: impl Into<String>,
        ca_pem: impl Into<String>,
        options: PatcherOptions,
    ) -> Result<Self, CaBundleError> {
        let name = name.into();
        let ca_pem = ca_pem.into();
        if !is_object_name(&name) {
            return Err(CaBundleError::InvalidName { name });
        }
        validate_ca(&ca_pem)?;
        options.validate()?;
        Ok(Self {
            client,
            name,
            ca_pem,
            options,
            ready: watch::Sender::new(false),
        })
    }

    /// `true` while the last look at the configuration found our CA in every managed
    /// webhook. It turns `false` when the configuration is missing or a bundle differs, and
    /// keeps its value through API errors: an API server hiccup says nothing about the
    /// bundle, and an unready webhook would block pod creation for nothing. When `run`
    /// returns, the sender is dropped and the last value stays readable.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Runs until `shutdown` completes; never returns early and never panics on what the
    /// API server sends. Every failure is logged and retried.
    pub async fn run(self, shutdown: impl Future) {
        let api: Api<MutatingWebhookConfiguration> = Api::all(self.client.clone());
        let selector = format!("metadata.name={}", self.name);
        let mut events = pin!(watcher(
            api.clone(),
            watcher::Config::default().fields(&selector)
        ));
        let mut shutdown = pin!(shutdown);
        let mut state = State::new(&self.options);
        let mut watch_backoff = self.options.backoff();
        // The watcher restarts itself on the next poll after an error; polling it again only
        // after a backoff keeps a broken API server from being hammered.
        let mut watch_paused_until: Option<Instant> = None;
        let mut next_check = Instant::now();
        info!(name = %self.name, "caBundle patcher started");
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                () = tokio::time::sleep_until(next_check) => {
                    tokio::select! {
                        biased;
                        _ = &mut shutdown => break,
                        at = self.check(&api, &mut state) => next_check = at,
                    }
                }
                () = sleep_until_some(watch_paused_until) => watch_paused_until = None,
                event = next_item(events.as_mut()), if watch_paused_until.is_none() => {
                    match event {
                        Some(Ok(event)) => {
                            if is_change(&event) {
                                watch_backoff.reset();
                                next_check = next_check.min(Instant::now());
                            }
                        }
                        Some(Err(error)) => {
                            let delay = watch_backoff.next_delay();
                            warn!(name = %self.name, %error, retry_in = ?delay,
                                "watching the webhook configuration failed; \
                                 periodic checks continue meanwhile");
                            watch_paused_until = Some(Instant::now() + delay);
                        }
                        None => {
                            // The watcher's stream does not end; if it ever did, the periodic
                            // checks would still keep the bundle right, only later.
                            warn!(name = %self.name, "the watch ended; relying on periodic checks");
                            watch_paused_until = Some(Instant::now() + self.options.resync);
                            events.set(watcher(
                                api.clone(),
                                watcher::Config::default().fields(&selector),
                            ));
                        }
                    }
                }
            }
        }
        info!(name = %self.name, "caBundle patcher stopped");
    }

    /// Reads the configuration, patches it if needed, and returns when to look again.
    async fn check(&self, api: &Api<MutatingWebhookConfiguration>, state: &mut State) -> Instant {
        let name = self.name.as_str();
        let config = match api.get_opt(name).await {
            Ok(Some(config)) => config,
            Ok(None) => {
                self.set_ready(false);
                let delay = state.errors.next_delay();
                warn!(%name, retry_in = ?delay,
                    "MutatingWebhookConfiguration not found; retrying (the chart may \
                     create it after the injector starts)");
                return Instant::now() + delay;
            }
            Err(error) => {
                let delay = state.errors.next_delay();
                warn!(%name, %error, retry_in = ?delay,
                    "could not read the MutatingWebhookConfiguration; retrying");
                return Instant::now() + delay;
            }
        };
        let Some(patch) = bundle_patch(&config, &self.ca_pem) else {
            if !config
                .webhooks
                .iter()
                .flatten()
                .any(|w| is_managed(&w.name))
            {
                warn!(%name,
                    "no webhook in the configuration is named *{ISTIO_WEBHOOK_SUFFIX}, so \
                     no caBundle is set; rename the webhooks if the API server should \
                     trust this injector");
            }
            return self.in_place(state, false);
        };

        let now = Instant::now();
        if *self.ready.borrow() {
            // It was in place and someone else changed it.
            state.overwrites = state.overwrites.saturating_add(1);
            state.last_overwrite = Some(now);
            let delay = state.overwrite_backoff.next_delay();
            state.patch_not_before = now + delay;
            if state.overwrites >= FIGHT_WARNING_AFTER {
                warn!(%name, overwrites = state.overwrites, restore_in = ?delay,
                    "the caBundle keeps being overwritten; skiff-injector replicas with \
                     different CAs undo each other (a rollout, a renewed --cert-secret that \
                     older replicas have not read yet, or replicas given different \
                     --cert-secret names): restart the replicas that serve an old CA");
            } else {
                info!(%name, restore_in = ?delay,
                    "the caBundle was changed by someone else; restoring it");
            }
        }
        self.set_ready(false);
        if now < state.patch_not_before {
            return state.patch_not_before;
        }

        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        match api
            .patch(name, &params, &kube::api::Patch::Json::<()>(patch))
            .await
        {
            Ok(updated) if bundle_patch(&updated, &self.ca_pem).is_none() => {
                self.in_place(state, true)
            }
            Ok(_) => {
                let delay = state.errors.next_delay();
                warn!(%name, retry_in = ?delay,
                    "the API server accepted the caBundle patch but returned a different \
                     bundle (a mutating admission policy on webhook configurations?); retrying");
                Instant::now() + delay
            }
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 422 => {
                let delay = state.errors.next_delay();
                info!(%name, code = status.code, message = %status.message, retry_in = ?delay,
                    "the configuration changed while it was being patched; reading it again");
                Instant::now() + delay
            }
            Err(error) => {
                let delay = state.errors.next_delay();
                warn!(%name, %error, retry_in = ?delay, "could not patch the caBundle; retrying");
                Instant::now() + delay
            }
        }
    }

    /// The bundle is in place: ready, failures forgotten, next look after `resync`.
    fn in_place(&self, state: &mut State, patched: bool) -> Instant {
        let now = Instant::now();
        state.errors.reset();
        let quiet = state
            .last_overwrite
            .is_none_or(|at| now.saturating_duration_since(at) >= self.options.resync);
        if quiet {
            state.overwrites = 0;
            state.overwrite_backoff.reset();
        }
        if patched {
            info!(name = %self.name, "caBundle set");
        } else if !*self.ready.borrow() {
            info!(name = %self.name, "caBundle already in place");
        } else {
            debug!(name = %self.name, "caBundle in place");
        }
        self.set_ready(true);
        now + self.options.resync
    }

    fn set_ready(&self, ready: bool) {
        self.ready
            .send_if_modified(|current| std::mem::replace(current, ready) != ready);
    }
}

/// What the patch loop remembers between checks.
struct State {
    /// Delays after failed reads and patches and while the configuration is missing.
    errors: Backoff,
    /// Delays before restoring a bundle someone else overwrote.
    overwrite_backoff: Backoff,
    /// Overwrites since the bundle last stayed in place for a whole `resync` period.
    overwrites: u32,
    last_overwrite: Option<Instant>,
    /// No patch before this instant (set when an overwrite is seen).
    patch_not_before: Instant,
}

impl State {
    fn new(options: &PatcherOptions) -> Self {
        Self {
            errors: options.backoff(),
            overwrite_backoff: options.backoff(),
            overwrites: 0,
            last_overwrite: None,
            patch_not_before: Instant::now(),
        }
    }
}

/// Whether a watch event may mean the bundle changed. `Init` and `InitApply` are followed
/// by `InitDone`, so one check per (re-)list is enough.
fn is_change<K>(event: &watcher::Event<K>) -> bool {
    matches!(
        event,
        watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone
    )
}

/// The next item of a stream. The crate does not depend on `futures`, whose `StreamExt`
/// would offer `next()`; `Stream` is reachable as the supertrait of kube's
/// `WatchStreamExt`, which every stream implements.
async fn next_item<S: WatchStreamExt + ?Sized>(mut stream: Pin<&mut S>) -> Option<S::Item> {
    std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Capped exponential backoff with jitter: the n-th delay is drawn uniformly from
/// `[d/2, d]` where `d = min(max, initial * 2^n)`. Half the delay is random so that
/// replicas restarted together do not retry in lockstep; half is fixed so that the delay
/// still grows.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The ceiling `d` of the next delay, before jitter.
    pub(crate) fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + random_up_to(ceiling - half)
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A uniformly random duration in `[0, max]`. Jitter needs no cryptographic quality; std's
/// per-instance random hasher keys avoid a dependency on a random number crate.
fn random_up_to(max: Duration) -> Duration {
    let max_nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    if max_nanos == 0 {
        return Duration::ZERO;
    }
    let random = RandomState::new().build_hasher().finish();
    Duration::from_nanos(random % max_nanos.saturating_add(1))
}

/// A Kubernetes object name (DNS subdomain, RFC 1123): it becomes part of a URL path, so
/// nothing else may pass.
pub(crate) fn is_object_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn validate_ca(ca_pem: &str) -> Result<(), CaBundleError> {
    use rustls::pki_types::pem::{PemObject as _, SectionKind};

    let invalid = |reason: String| CaBundleError::InvalidCa { reason };
    let mut certificates = 0;
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(ca_pem.as_bytes()) {
        match section.map_err(|e| invalid(format!("bad PEM: {e}")))? {
            // Only the PEM framing is checked; the API server parses the certificates.
            (SectionKind::Certificate, der) if !der.is_empty() => certificates += 1,
            (kind, _) => {
                return Err(invalid(format!(
                    "it contains a {kind:?} PEM section; a CA bundle must hold certificates only, \
                     never a key"
                )));
            }
        }
    }
    if certificates == 0 {
        return Err(invalid("it contains no PEM certificate".to_owned()));
    }
    Ok(())
}
