//! `skiff-injector serve`: the admission webhook over HTTPS (HTTP/1.1 and HTTP/2), with
//! health, readiness and metrics beside it, and a graceful stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::admission::{self, Answer, Decision};
use crate::metrics::Metrics;
use crate::store::ConfigStore;
use crate::tls::ReloadingCert;

#[cfg(test)]
mod tests;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<ConfigStore>,
    pub cert: Arc<ReloadingCert>,
    pub metrics: Arc<Metrics>,
    /// With `--self-signed`: whether the webhook configuration's caBundle holds this
    /// injector's CA ([`crate::cabundle::CaBundlePatcher::ready`]). `None` when someone
    /// else (cert-manager) manages the bundle.
    pub ca_bundle_ready: Option<tokio::sync::watch::Receiver<bool>>,
}

/// The routes: `POST /inject` (and `/inject/`), `GET /healthz`, `/ready`, `/metrics`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/inject", post(inject))
        .route("/inject/", post(inject))
        .route("/healthz", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn inject(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let handled = match axum::body::to_bytes(body, admission::MAX_BODY + 1).await {
        // One byte over the limit is enough to answer 400 without reading the rest.
        Ok(bytes) => {
            let loaded = state.store.get();
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            admission::handle(&bytes, content_type, &loaded.config, &loaded.policy)
        }
        Err(err) => admission::Handled {
            answer: Answer::Http {
                status: 400,
                message: format!(
                    "cannot read the body (limit {} bytes): {err}",
                    admission::MAX_BODY
                ),
            },
            decision: Decision::BadRequest("body too large or unreadable".into()),
            pod: String::new(),
        },
    };
    state
        .metrics
        .record(&handled.decision, started.elapsed().as_secs_f64());
    let pod = if handled.pod.is_empty() {
        "-"
    } else {
        handled.pod.as_str()
    };
    match &handled.decision {
        Decision::Injected => tracing::info!(%pod, decision = "injected", "review answered"),
        Decision::Skipped { reason, .. } => {
            tracing::info!(%pod, decision = "skipped", %reason, "review answered")
        }
        Decision::Denied(reason) => {
            tracing::warn!(%pod, decision = "denied", %reason, "review answered")
        }
        Decision::BadRequest(reason) => {
            tracing::warn!(decision = "bad request", %reason, "review answered")
        }
    }
    match handled.answer {
        Answer::Http { status, message } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            (status, format!("{message}\n")).into_response()
        }
        Answer::Review(review) => match serde_json::to_vec(&review) {
            Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
            Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
        },
    }
}

/// Ready once the config and a certificate are loaded and, with `--self-signed`, once the
/// caBundle holds this injector's CA: before that the API server could not talk to this
/// replica anyway.
async fn ready(State(state): State<AppState>) -> Response {
    // `get` reloads a changed config, so readiness follows the file too.
    let _ = state.store.get();
    if !state.cert.is_loaded() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no serving certificate loaded yet\n",
        )
            .into_response();
    }
    if let Some(bundle) = &state.ca_bundle_ready
        && !*bundle.borrow()
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the webhook configuration's caBundle does not hold this injector's CA yet\n",
        )
            .into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Serves `state` over TLS on `addr` until `shutdown` completes; then stops accepting and
/// lets in-flight requests finish for up to `grace`. `on_listening` learns the bound
/// address (useful with port 0).
pub async fn run(
    addr: SocketAddr,
    state: AppState,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_listening: impl FnOnce(SocketAddr) + Send + 'static,
) -> std::io::Result<()> {
    let tls = crate::tls::server_config(state.cert.clone()).map_err(std::io::Error::other)?;
    let handle = axum_server::Handle::new();
    let watcher = handle.clone();
    tokio::spawn(async move {
        if let Some(bound) = watcher.listening().await {
            on_listening(bound);
        }
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing in-flight reviews");
        watcher.graceful_shutdown(Some(grace));
    });
    axum_server::bind_rustls(
        addr,
        axum_server::tls_rustls::RustlsConfig::from_config(tls),
    )
    .handle(handle)
    .serve(router(state).into_make_service())
    .await
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum Tls {
    /// PEM files written by someone else (cert-manager, a Secret), re-read on change.
    Files {
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
    },
    /// A CA and serving certificate for the Service's DNS names, shared by all replicas
    /// through the Secret `namespace/cert_secret` (created or renewed when needed, see
    /// [`crate::certstore`]); the CA goes into the caBundle of `webhook_config`, and is put
    /// back there whenever someone changes it.
    SelfSigned {
        cert_dir: std::path::PathBuf,
        webhook_config: String,
        service: String,
        namespace: String,
        cert_secret: String,
    },
}

/// Everything `skiff-injector serve` needs.
#[derive(Debug, Clone)]
pub struct Options {
    pub addr: SocketAddr,
    pub config: Option<std::path::PathBuf>,
    pub tls: Tls,
    pub grace: Duration,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("self-signed certificates: {0}")]
    Certs(String),
    #[error(transparent)]
    CertStore(#[from] crate::certstore::CertStoreError),
    #[error("Kubernetes client for the caBundle: {0}")]
    Kube(String),
    #[error("serving on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the webhook until SIGTERM or SIGINT.
pub async fn serve(options: Options) -> Result<(), ServeError> {
    let metrics = Arc::new(Metrics::new());
    let store = Arc::new(ConfigStore::new(options.config.clone(), metrics.clone())?);
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let (cert, key, ca_bundle_ready) = match &options.tls {
        Tls::Files { cert, key } => (cert.clone(), key.clone(), None),
        Tls::SelfSigned {
            cert_dir,
            webhook_config,
            service,
            namespace,
            cert_secret,
        } => {
            let (cert, key, ready) = self_signed(
                cert_dir,
                webhook_config,
                service,
                namespace,
                cert_secret,
                shutdown_rx.clone(),
            )
            .await?;
            (cert, key, Some(ready))
        }
    };
    let state = AppState {
        store,
        cert: Arc::new(ReloadingCert::new(cert, key, metrics.clone())),
        metrics,
        ca_bundle_ready,
    };
    let addr = options.addr;
    let shutdown = async move {
        wait_for_signal().await;
        let _ = shutdown_tx.send(true);
    };
    run(addr, state, options.grace, shutdown, |bound| {
        tracing::info!("skiff-injector listening on https://{bound}");
    })
    .await
    .map_err(|source| ServeError::Listen { addr, source })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        // Without signal handlers there is nothing to wait for but the process's end.
        _ => std::future::pending::<()>().await,
    }
}

/// `--self-signed`: the certificates all replicas share for the Service's DNS names
/// (from the Secret `namespace/cert_secret`, made if needed) written to `dir`, and a task
/// that keeps the webhook configuration's caBundle equal to their CA until shutdown.
/// Returns the certificate and key paths and the patcher's readiness.
async fn self_signed(
    dir: &std::path::Path,
    webhook_config: &str,
    service: &str,
    namespace: &str,
    cert_secret: &str,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<
    (
        std::path::PathBuf,
        std::path::PathBuf,
        tokio::sync::watch::Receiver<bool>,
    ),
    ServeError,
> {
    use crate::{cabundle, certstore, selfsigned};
    // Ten years. The set outlives pods now (it is shared through the Secret), and a replica
    // that starts in the last third of that renews it.
    let validity = Duration::from_secs(10 * 365 * 24 * 60 * 60);
    let names = selfsigned::service_dns_names(service, namespace);
    let client = cabundle::client_from_environment()
        .await
        .map_err(|e| ServeError::Kube(e.to_string()))?;
    let certs =
        certstore::shared_certificates(client.clone(), namespace, cert_secret, &names, validity)
            .await?;
    let (cert, key) =
        selfsigned::write(dir, &certs).map_err(|e| ServeError::Certs(e.to_string()))?;
    let patcher = cabundle::CaBundlePatcher::new(
        client,
        webhook_config,
        certs.ca_pem.clone(),
        cabundle::PatcherOptions::default(),
    )
    .map_err(|e| ServeError::Kube(e.to_string()))?;
    tracing::info!(
        ?names,
        webhook_config,
        cert_secret,
        "serving the shared certificate; managing the caBundle"
    );
    let ready = patcher.ready();
    tokio::spawn(patcher.run(async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    }));
    Ok((cert, key, ready))
}
