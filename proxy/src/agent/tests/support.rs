//! Small servers standing in for the application: an HTTP/1 app that records what it was
//! sent, an HTTP/2 server answering gRPC health checks, an HTTPS app with a self-signed
//! certificate serving both, a port that accepts and never answers, and a port nobody
//! listens on.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderValue;
use hyper::{HeaderMap, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ServerConfig;
use rustls::pki_types::PrivateKeyDer;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::admin::ProcessControl;
use crate::admin::http::testing::{Running, within};
use crate::admin::http::{self, Conn};
use crate::agent::grpc::{CHECK_PATH, frame};
use crate::agent::{Agent, AgentConfig, serve_agent};
use crate::health::Readiness;
use crate::metrics::ProxyMetrics;

/// What the app saw of one request.
#[derive(Debug)]
pub(super) struct Seen {
    pub(super) path_and_query: String,
    pub(super) headers: HeaderMap,
    pub(super) peer: SocketAddr,
}

/// The app's answer for a path.
#[derive(Clone)]
pub(super) struct Page {
    pub(super) status: StatusCode,
    pub(super) content_type: Option<&'static str>,
    pub(super) body: &'static str,
}

pub(super) fn page(status: StatusCode, body: &'static str) -> Page {
    Page {
        status,
        content_type: Some("text/plain; charset=utf-8"),
        body,
    }
}

/// An HTTP/1 app answering `pages` by path (404 otherwise), reporting every request.
pub(super) async fn app(
    pages: Vec<(&'static str, Page)>,
) -> (Running, mpsc::UnboundedReceiver<Seen>) {
    let pages: Arc<HashMap<&'static str, Page>> = Arc::new(pages.into_iter().collect());
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let handler = move |request: Request<Incoming>, conn: Conn| {
        let pages = pages.clone();
        let seen_tx = seen_tx.clone();
        async move {
            let _ = seen_tx.send(Seen {
                path_and_query: request
                    .uri()
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default(),
                headers: request.headers().clone(),
                peer: conn.peer(),
            });
            match pages.get(request.uri().path()) {
                Some(page) => {
                    let mut response = http::text(page.status, page.body);
                    match page.content_type {
                        Some(ct) => {
                            response
                                .headers_mut()
                                .insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static(ct));
                        }
                        None => {
                            response.headers_mut().remove(hyper::header::CONTENT_TYPE);
                        }
                    }
                    if page.status.is_redirection() {
                        response.headers_mut().insert(
                            hyper::header::LOCATION,
                            HeaderValue::from_static("/elsewhere"),
                        );
                    }
                    response
                }
                None => http::text(StatusCode::NOT_FOUND, "no such page"),
            }
        }
    };
    let running =
        Running::start(|listener, shutdown| http::serve("test-app", listener, handler, shutdown))
            .await;
    (running, seen)
}

/// The next request the app saw.
pub(super) async fn next_seen(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    within("the app to see a request", seen.recv())
        .await
        .expect("app channel open")
}

/// A gRPC server (h2c) whose Health/Check answers `statuses[service]` as the wire value of
/// ServingStatus, or NOT_FOUND for other services; any other path answers 200 "h2 ok", for
/// HTTP/2 probes. Reports every service name asked for.
pub(super) async fn grpc_server(
    statuses: Vec<(&'static str, u8)>,
) -> (SocketAddr, JoinHandle<()>, mpsc::UnboundedReceiver<String>) {
    let statuses: Arc<HashMap<String, u8>> = Arc::new(
        statuses
            .into_iter()
            .map(|(s, v)| (s.to_owned(), v))
            .collect(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (asked_tx, asked) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let statuses = statuses.clone();
            let asked_tx = asked_tx.clone();
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let statuses = statuses.clone();
                let asked_tx = asked_tx.clone();
                async move { Ok::<_, Infallible>(answer_grpc(request, &statuses, &asked_tx).await) }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, task, asked)
}

async fn answer_grpc(
    request: Request<Incoming>,
    statuses: &HashMap<String, u8>,
    asked: &mpsc::UnboundedSender<String>,
) -> Response<BoxBody<Bytes, Infallible>> {
    if request.uri().path() != CHECK_PATH {
        return Response::new(Full::new(Bytes::from_static(b"h2 ok")).boxed());
    }
    assert_eq!(request.headers()["content-type"], "application/grpc");
    let body = request
        .into_body()
        .collect()
        .await
        .expect("request body")
        .to_bytes();
    let service = decode_service(&body);
    let _ = asked.send(service.clone());
    let grpc = |response: &mut Response<BoxBody<Bytes, Infallible>>| {
        response
            .headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
    };
    match statuses.get(&service) {
        Some(status) => {
            // Proto3 leaves a zero enum out of the message.
            let message: Vec<u8> = if *status == 0 {
                vec![]
            } else {
                vec![0x08, *status]
            };
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            let body = Full::new(Bytes::from(frame(&message)))
                .with_trailers(std::future::ready(Some(Ok(trailers))))
                .boxed();
            let mut response = Response::new(body);
            grpc(&mut response);
            response
        }
        None => {
            // Trailers-only: the status in the headers, no body.
            let mut response = Response::new(Full::new(Bytes::new()).boxed());
            grpc(&mut response);
            response
                .headers_mut()
                .insert("grpc-status", HeaderValue::from_static("5"));
            response
                .headers_mut()
                .insert("grpc-message", HeaderValue::from_static("unknown service"));
            response
        }
    }
}

/// The service of a framed HealthCheckRequest (names here are shorter than 128 bytes).
fn decode_service(body: &[u8]) -> String {
    assert_eq!(body[0], 0, "uncompressed");
    let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let message = &body[5..5 + length];
    if message.is_empty() {
        return String::new();
    }
    assert_eq!(message[0], 0x0a, "field 1, length-delimited");
    let n = usize::from(message[1]);
    String::from_utf8(message[2..2 + n].to_vec()).expect("UTF-8 service")
}

/// What an HTTPS app saw of one TLS handshake.
#[derive(Debug)]
pub(super) struct Handshake {
    /// The name the client sent in SNI.
    pub(super) sni: Option<String>,
    /// The protocol agreed in ALPN.
    pub(super) alpn: Option<Vec<u8>>,
}

/// An HTTPS app on `ip` with a fresh self-signed certificate (nothing could verify it, so a
/// probe that succeeds did not verify it). Over HTTP/1.1, or HTTP/2 when the client offers
/// h2, it answers `pages` by path (404 otherwise) and, on Health/Check, `statuses` as
/// [`grpc_server`] does. Reports every completed handshake.
pub(super) async fn https_app(
    ip: IpAddr,
    pages: Vec<(&'static str, Page)>,
    statuses: Vec<(&'static str, u8)>,
) -> (
    SocketAddr,
    JoinHandle<()>,
    mpsc::UnboundedReceiver<Handshake>,
) {
    let pages: Arc<HashMap<&'static str, Page>> = Arc::new(pages.into_iter().collect());
    let statuses: Arc<HashMap<String, u8>> = Arc::new(
        statuses
            .into_iter()
            .map(|(s, v)| (s.to_owned(), v))
            .collect(),
    );
    let acceptor = tls_acceptor();
    let listener = TcpListener::bind((ip, 0)).await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (handshakes_tx, handshakes) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, pages, statuses) = (acceptor.clone(), pages.clone(), statuses.clone());
            let handshakes_tx = handshakes_tx.clone();
            tokio::spawn(async move {
                // A client that gives up mid-handshake is what some tests do.
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let session = tls.get_ref().1;
                let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
                let h2 = alpn.as_deref() == Some(b"h2".as_slice());
                let _ = handshakes_tx.send(Handshake {
                    sni: session.server_name().map(str::to_owned),
                    alpn,
                });
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let (pages, statuses) = (pages.clone(), statuses.clone());
                    async move {
                        if request.uri().path() == CHECK_PATH {
                            // Nobody reads the services asked for here.
                            let (asked, _) = mpsc::unbounded_channel();
                            return Ok::<_, Infallible>(
                                answer_grpc(request, &statuses, &asked).await,
                            );
                        }
                        let (status, body) = match pages.get(request.uri().path()) {
                            Some(page) => (page.status, page.body),
                            None => (StatusCode::NOT_FOUND, "no such page"),
                        };
                        let mut response = Response::new(Full::new(Bytes::from(body)).boxed());
                        *response.status_mut() = status;
                        Ok(response)
                    }
                });
                let io = TokioIo::new(tls);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                }
            });
        }
    });
    (address, task, handshakes)
}

/// A TLS server configuration with a new self-signed certificate for `localhost`, offering
/// h2 and http/1.1 in ALPN.
fn tls_acceptor() -> TlsAcceptor {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("self-signed certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![certified.cert.der().clone()],
            PrivateKeyDer::from(certified.signing_key),
        )
        .expect("certificate and key");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

/// A port that accepts connections (the kernel completes the handshake) and never answers.
pub(super) async fn silent_port() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    (listener, port)
}

/// A port that refuses connections: bound but not listening, and held (keep the socket)
/// so that no other test process can take the port meanwhile.
pub(super) async fn closed_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.1:0".parse().unwrap()).expect("bind");
    let port = socket.local_addr().expect("address").port();
    (socket, port)
}

/// Callbacks of the agent's process control, observed by the test.
pub(super) struct Calls {
    pub(super) drains: mpsc::UnboundedReceiver<()>,
    pub(super) quits: mpsc::UnboundedReceiver<()>,
}

/// The agent with `config`, a ready proxy and fresh metrics, on 127.0.0.1:0.
pub(super) async fn agent(config: AgentConfig) -> (Running, Arc<Agent>, Calls) {
    let readiness = Arc::new(Readiness::new());
    readiness.set_config_loaded(true);
    readiness.set_listeners_bound(true);
    let (drain_tx, drains) = mpsc::unbounded_channel();
    let (quit_tx, quits) = mpsc::unbounded_channel();
    let control = ProcessControl::new(
        readiness,
        move || {
            let _ = drain_tx.send(());
        },
        move || {
            let _ = quit_tx.send(());
        },
    );
    let agent = Arc::new(Agent {
        config,
        metrics: Arc::new(ProxyMetrics::new()),
        control,
    });
    let served = agent.clone();
    let running =
        Running::start(|listener, shutdown| serve_agent(listener, served, shutdown)).await;
    (running, agent, Calls { drains, quits })
}
