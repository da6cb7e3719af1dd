use std::path::PathBuf;

use tokio::sync::watch;

use super::*;
use crate::selfsigned;

/// A fresh directory for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("skiff-serve-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A state with a loaded serving certificate and the built-in config.
fn state(dir: &TempDir, ca_bundle_ready: Option<watch::Receiver<bool>>) -> AppState {
    let names = selfsigned::service_dns_names("skiff-injector", "skiff-system");
    let certs = selfsigned::generate(&names, Duration::from_secs(3600)).unwrap();
    let (cert, key) = selfsigned::write(&dir.0, &certs).unwrap();
    let metrics = Arc::new(Metrics::new());
    AppState {
        store: Arc::new(ConfigStore::new(None, metrics.clone()).unwrap()),
        cert: Arc::new(ReloadingCert::new(cert, key, metrics.clone())),
        metrics,
        ca_bundle_ready,
    }
}

async fn ready_status(state: &AppState) -> StatusCode {
    ready(State(state.clone())).await.status()
}

#[tokio::test]
async fn ready_without_a_ca_bundle_to_wait_for() {
    let dir = TempDir::new("files");
    assert_eq!(ready_status(&state(&dir, None)).await, StatusCode::OK);
}

#[tokio::test]
async fn ready_follows_the_ca_bundle_in_self_signed_mode() {
    let dir = TempDir::new("self-signed");
    let (bundle, receiver) = watch::channel(false);
    let state = state(&dir, Some(receiver));
    assert_eq!(
        ready_status(&state).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "the API server does not trust this replica yet"
    );
    bundle.send_replace(true);
    assert_eq!(ready_status(&state).await, StatusCode::OK);
    bundle.send_replace(false);
    assert_eq!(ready_status(&state).await, StatusCode::SERVICE_UNAVAILABLE);
    // A patcher that stopped leaves its last value.
    bundle.send_replace(true);
    drop(bundle);
    assert_eq!(ready_status(&state).await, StatusCode::OK);
}

#[tokio::test]
async fn no_certificate_means_unready_whatever_the_bundle() {
    let dir = TempDir::new("no-cert");
    let metrics = Arc::new(Metrics::new());
    let (_bundle, receiver) = watch::channel(true);
    let state = AppState {
        store: Arc::new(ConfigStore::new(None, metrics.clone()).unwrap()),
        cert: Arc::new(ReloadingCert::new(
            dir.0.join("missing.crt"),
            dir.0.join("missing.key"),
            metrics.clone(),
        )),
        metrics,
        ca_bundle_ready: Some(receiver),
    };
    assert_eq!(ready_status(&state).await, StatusCode::SERVICE_UNAVAILABLE);
}
