//! The TLS client of the app probes: `httpGet` probes with `scheme: HTTPS`, and `grpc`
//! probes in TLS mode.
//!
//! It behaves as the kubelet's prober does: the server's certificate is **not verified**.
//! The kubelet sets Go's `InsecureSkipVerify` for HTTPS probes, because a probe asks whether
//! the app answers, not who it is, and apps commonly serve self-signed or cluster-internal
//! certificates that nothing on the node could verify; refusing them would make pods that
//! are healthy without the mesh unready with it. The handshake signatures are still checked
//! (the server must hold the key of the certificate it sends), so what follows is a proper
//! TLS session with whoever answered.
//!
//! SNI carries the probe's `host` when it is a name, as Go's client sends it; an IP address
//! (the pod's, by default) is not sent, since SNI carries only names. ALPN offers the one
//! protocol the probe speaks: `http/1.1`, or `h2` for HTTP/2 and gRPC probes.
//!
//! The client configurations are built once, on the first TLS probe, and shared; rustls'
//! ring provider is passed to them directly, so no process-wide provider has to be
//! installed.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use hyper::Request;
use hyper::body::{Body, Bytes};
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::admin::http::{self, FetchError, Fetched, Overflow, Protocol};

/// How a probe reaches the app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport<'a> {
    /// Plain TCP.
    Tcp,
    /// TLS over TCP, the certificate unverified; `host` is the probe's `host` (for SNI).
    Tls { host: Option<&'a str> },
}

/// Why TLS to the app failed.
#[derive(Debug, Error)]
pub(crate) enum TlsError {
    /// Building the client configuration failed (rustls refused the provider); every TLS
    /// probe fails the same way, so the reason is kept and repeated.
    #[error("cannot set up the TLS client: {0}")]
    Config(rustls::Error),
    #[error("TLS handshake with {address} failed: {source}{hint}", hint = handshake_hint(.source))]
    Handshake {
        address: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("the TLS handshake with {address} did not complete within {timeout:?}")]
    Timeout {
        address: SocketAddr,
        timeout: Duration,
    },
}

/// Why a probe's request got no response.
#[derive(Debug, Error)]
pub(crate) enum ProbeFetchError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// [`http::fetch`] over `transport`: connecting to `address` (from `source`), the TLS
/// handshake (if any) and the exchange, all within `timeout`.
pub(crate) async fn fetch<B>(
    (address, source): (SocketAddr, Option<IpAddr>),
    transport: Transport<'_>,
    protocol: Protocol,
    request: Request<B>,
    limit: usize,
    overflow: Overflow,
    timeout: Duration,
) -> Result<Fetched, ProbeFetchError>
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Transport::Tls { host } = transport else {
        let fetched =
            http::fetch(address, source, protocol, request, limit, overflow, timeout).await?;
        return Ok(fetched);
    };
    // Which step the timeout interrupted: a server that accepts connections but never
    // completes the handshake is worth naming (a TLS port that is not ready, or not TLS).
    let mut handshaking = false;
    let attempt = async {
        let stream = http::connect(address, source).await?;
        handshaking = true;
        let stream = handshake(stream, address, host, protocol).await?;
        handshaking = false;
        Ok(http::exchange(stream, protocol, request, limit, overflow).await?)
    };
    let result = tokio::time::timeout(timeout, attempt).await;
    result.unwrap_or_else(|_| {
        Err(if handshaking {
            TlsError::Timeout { address, timeout }.into()
        } else {
            FetchError::Timeout(timeout).into()
        })
    })
}

/// The TLS handshake on `stream`, offering `protocol` in ALPN. The caller bounds the time.
async fn handshake(
    stream: TcpStream,
    address: SocketAddr,
    host: Option<&str>,
    protocol: Protocol,
) -> Result<TlsStream<TcpStream>, TlsError> {
    let clients = CLIENTS.as_ref().map_err(|e| TlsError::Config(e.clone()))?;
    let config = match protocol {
        Protocol::Http1 => &clients.http1,
        Protocol::Http2 => &clients.h2,
    };
    TlsConnector::from(config.clone())
        .connect(server_name(host, address), stream)
        .await
        .map_err(|source| TlsError::Handshake { address, source })
}

/// What the handshake tells the server it is talking to: the probe's `host` when it is a
/// name (SNI), else the address (which rustls does not send). A trailing dot is dropped, as
/// Go does for SNI. A host rustls would refuse as a name goes unnamed too: the certificate
/// is not checked against it anyway, and most servers answer without SNI.
pub(crate) fn server_name(host: Option<&str>, address: SocketAddr) -> ServerName<'static> {
    let name = host
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .filter(|h| h.parse::<IpAddr>().is_err())
        .map(|h| h.strip_suffix('.').unwrap_or(h));
    match name.map(|n| ServerName::try_from(n.to_owned())) {
        Some(Ok(name)) => name,
        Some(Err(e)) => {
            tracing::debug!(host = ?host, error = %e, "the probe host is not a DNS name; sending no SNI");
            ServerName::from(address.ip())
        }
        None => ServerName::from(address.ip()),
    }
}

/// A hint where rustls' own message leaves the likely cause unsaid.
fn handshake_hint(error: &io::Error) -> &'static str {
    let tls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls_error {
        Some(rustls::Error::InvalidMessage(_)) => {
            " (the answer was not TLS: the port may serve plain HTTP)"
        }
        _ if error.kind() == io::ErrorKind::UnexpectedEof => {
            " (the server closed the connection during the handshake)"
        }
        _ => "",
    }
}

/// The client configurations, one per ALPN protocol.
struct Clients {
    http1: Arc<ClientConfig>,
    h2: Arc<ClientConfig>,
}

/// Built on the first TLS probe; a pod without one never builds it.
static CLIENTS: LazyLock<Result<Clients, rustls::Error>> = LazyLock::new(clients);

fn clients() -> Result<Clients, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyCertificate {
        provider: provider.clone(),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // Each probe is a fresh handshake, as the kubelet's (Go keeps no session cache unless
    // given one): a probe tests what a new client would meet.
    config.resumption = Resumption::disabled();
    let offering = |alpn: &[u8]| {
        let mut config = config.clone();
        config.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(config)
    };
    Ok(Clients {
        http1: offering(b"http/1.1"),
        h2: offering(b"h2"),
    })
}

/// Accepts whatever certificate the server presents, as the kubelet does for HTTPS probes
/// (see the module documentation), while still checking the handshake signatures with the
/// provider's algorithms.
#[derive(Debug)]
struct AnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
