//! TLS towards istiod: its certificate verified against the mesh's root certificate
//! (`/var/run/secrets/istio/root-cert.pem`, from the `istio-ca-root-cert` ConfigMap),
//! HTTP/2 negotiated by ALPN as gRPC needs.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::client::XdsError;

pub fn client_config(root_cert: &Path) -> Result<Arc<rustls::ClientConfig>, XdsError> {
    let pem = std::fs::read(root_cert).map_err(|source| XdsError::RootCert {
        path: root_cert.to_owned(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(XdsError::NoRootCert(root_cert.to_owned()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| XdsError::NoRootCert(root_cert.to_owned()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}
