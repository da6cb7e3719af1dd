//! The webhook's TLS: a rustls server whose certificate is re-read from disk when the files
//! change, so cert-manager or a Secret update rotates it for the next connection without a
//! restart and without dropping the connections already open.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::files::Stamp;
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate file {path}: {reason} (it must hold PEM CERTIFICATE blocks, leaf first)")]
    Cert { path: PathBuf, reason: String },
    #[error("key file {path}: {reason} (it must hold one PEM private key: PKCS#8, RSA or EC)")]
    Key { path: PathBuf, reason: String },
}

/// Loads a key pair from PEM files.
pub fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_error = |reason: String| TlsError::Cert {
        path: cert.to_path_buf(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_error(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("no certificate found".into()));
    }
    let key_error = |reason: String| TlsError::Key {
        path: key.to_path_buf(),
        reason,
    };
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| key_error(e.to_string()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&private)
        .map_err(|e| key_error(e.to_string()))?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match()
        .map_err(|e| key_error(format!("does not match the certificate: {e}")))?;
    Ok(pair)
}

struct Loaded {
    stamps: [Option<Stamp>; 2],
    pair: Option<Arc<CertifiedKey>>,
}

/// Serves the key pair in two files, re-reading them whenever they change. A pair that
/// fails to load (a half-written rotation, say) is logged and the last good one stays.
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    loaded: Mutex<Loaded>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

impl ReloadingCert {
    /// Starts with whatever the files hold now; missing files are not an error (a Secret
    /// may be mounted late), they only keep the server unready until they appear.
    pub fn new(cert: PathBuf, key: PathBuf, metrics: Arc<Metrics>) -> ReloadingCert {
        let this = ReloadingCert {
            cert,
            key,
            loaded: Mutex::new(Loaded {
                stamps: [None, None],
                pair: None,
            }),
            metrics,
        };
        this.current();
        this
    }

    /// Whether a certificate is loaded and can be served.
    pub fn is_loaded(&self) -> bool {
        self.current().is_some()
    }

    /// The pair to serve now, reloading it first if the files changed.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        let stamps = Stamp::of_all([self.cert.as_path(), self.key.as_path()]);
        // A poisoned lock only means a panic elsewhere mid-update; the data is still whole.
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if loaded.stamps != stamps {
            loaded.stamps = stamps;
            match load_pair(&self.cert, &self.key) {
                Ok(pair) => {
                    if loaded.pair.is_some() {
                        tracing::info!(cert = %self.cert.display(), "serving certificate reloaded");
                    }
                    self.metrics.cert_reloads.inc();
                    loaded.pair = Some(Arc::new(pair));
                }
                Err(err) => {
                    self.metrics.cert_reload_failures.inc();
                    tracing::warn!("keeping the previous certificate: {err}");
                }
            }
        }
        loaded.pair.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

/// TLS 1.2 and 1.3 with ring, HTTP/2 and HTTP/1.1 by ALPN, certificates from `resolver`.
pub fn server_config(resolver: Arc<ReloadingCert>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
