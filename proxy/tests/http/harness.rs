#![allow(dead_code)] // Shared by two test binaries; each uses part of it.

//! A proxy in this process, configured from static-config YAML, in front of test servers on
//! loopback; and clients that speak HTTP/1.1 or h2c to it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use skiff_proxy::access_log::{AccessLog, Format};
use skiff_proxy::http::record::AccessLogs;
use skiff_proxy::listener::{ConnectionInfo, ConnectionStats, OriginalDst, Proxy, Telemetry};
use skiff_proxy::metrics::RequestOutcome;
use skiff_proxy::snapshot::{Direction, Snapshot};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

/// The destination every test connection claims, as iptables would report a service VIP.
pub const VIP: &str = "10.96.0.7:80";

/// Bounds every wait, so a bug fails the test instead of hanging it.
pub const PATIENCE: Duration = Duration::from_secs(10);

struct FixedDst(SocketAddr);

impl OriginalDst for FixedDst {
    fn lookup(&self, _: &TcpStream) -> Option<SocketAddr> {
        Some(self.0)
    }
}

/// One finished request as the proxy reported it.
#[derive(Debug, Clone)]
pub struct Reported {
    pub direction: Direction,
    pub cluster: String,
    pub outcome: RequestOutcome,
}

#[derive(Default)]
pub struct Recorder {
    pub requests: Mutex<Vec<Reported>>,
    changed: Notify,
}

impl Recorder {
    /// Waits until `n` requests have been reported and returns them.
    pub async fn wait_for(&self, n: usize) -> Vec<Reported> {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let changed = self.changed.notified();
                {
                    let seen = self.requests.lock().unwrap();
                    if seen.len() >= n {
                        return seen.clone();
                    }
                }
                changed.await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{n} requests were not reported: {:?}",
                self.requests.lock().unwrap()
            )
        })
    }
}

struct NoStats;

impl ConnectionStats for NoStats {
    fn to_upstream(&self, _: u64) {}
    fn to_downstream(&self, _: u64) {}
    fn closed(&self, _: skiff_proxy::tcp::End) {}
}

struct RecordingTelemetry(Arc<Recorder>);

impl Telemetry for RecordingTelemetry {
    fn connection(&self, _: &ConnectionInfo) -> Box<dyn ConnectionStats> {
        Box::new(NoStats)
    }
    fn error(&self, _: &'static str) {}
    fn request(&self, direction: Direction, cluster: &str, outcome: RequestOutcome) {
        self.0.requests.lock().unwrap().push(Reported {
            direction,
            cluster: cluster.to_owned(),
            outcome,
        });
        self.0.changed.notify_waiters();
    }
}

pub struct TestProxy {
    pub addr: SocketAddr,
    pub recorder: Arc<Recorder>,
    /// What the access log wrote, when the configuration turns it on.
    pub log: Arc<Mutex<Vec<u8>>>,
    access_logs: Arc<AccessLogs>,
    current: Arc<Mutex<Arc<Snapshot>>>,
    port: u16,
    _stop: watch::Sender<bool>,
}

/// Starts a proxy whose one listener serves `http` (the YAML of an `http:` block, indented
/// as the value of the key) and knows `clusters` (a YAML list). `{name}` placeholders in
/// both are replaced by the addresses in `addrs`.
pub async fn proxy(http: &str, clusters: &str, addrs: &[(&str, SocketAddr)]) -> TestProxy {
    proxy_with(http, clusters, addrs, |_| {}).await
}

/// [`proxy`], with a last change to the loaded snapshot (for states the static config
/// refuses but a control plane can produce, such as a route to a cluster not yet sent).
pub async fn proxy_with(
    http: &str,
    clusters: &str,
    addrs: &[(&str, SocketAddr)],
    edit: impl FnOnce(&mut Snapshot),
) -> TestProxy {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let yaml = config_yaml(port, http, clusters, addrs);
    let mut snapshot = skiff_proxy::static_config::parse(&yaml, "test")
        .unwrap_or_else(|e| panic!("test config does not load: {e}\n{yaml}"));
    edit(&mut snapshot);
    let current = Arc::new(Mutex::new(Arc::new(snapshot)));
    let snapshots = current.clone();
    let recorder = Arc::new(Recorder::default());
    let mut proxy = Proxy::new(
        move || snapshots.lock().unwrap().clone(),
        FixedDst(VIP.parse().unwrap()),
        Arc::new(RecordingTelemetry(recorder.clone())),
    );
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    proxy.access_logs = Arc::new(AccessLogs::new(move |format| {
        let writer = Box::new(SharedBuf(sink.clone()));
        AccessLog::new(format, writer, 1024, Default::default()).ok()
    }));
    let access_logs = proxy.access_logs.clone();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(Arc::new(proxy).serve(socket, port, stopped));
    TestProxy {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        recorder,
        log,
        access_logs,
        current,
        port,
        _stop: stop,
    }
}

impl TestProxy {
    /// Replaces the configuration, as a reload or an xDS push does.
    pub fn reconfigure(&self, http: &str, clusters: &str, addrs: &[(&str, SocketAddr)]) {
        let yaml = config_yaml(self.port, http, clusters, addrs);
        let snapshot = skiff_proxy::static_config::parse(&yaml, "test")
            .unwrap_or_else(|e| panic!("test config does not load: {e}\n{yaml}"));
        *self.current.lock().unwrap() = Arc::new(snapshot);
    }

    /// The access log's lines so far, once everything queued has been written.
    pub fn log_lines(&self, format: Format) -> Vec<String> {
        if let Some(log) = self.access_logs.get(format) {
            log.flush().expect("the access log writer is running");
        }
        let bytes = self.log.lock().unwrap().clone();
        String::from_utf8(bytes)
            .expect("log lines are UTF-8")
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn config_yaml(port: u16, http: &str, clusters: &str, addrs: &[(&str, SocketAddr)]) -> String {
    let mut yaml = format!(
        "listeners:\n  - name: test\n    address: 0.0.0.0:{port}\n    bindToPort: true\n    http:\n{}\nclusters:\n{}\n",
        indent(http, 6),
        indent(clusters, 2)
    );
    for (name, addr) in addrs {
        yaml = yaml.replace(&format!("{{{name}}}"), &addr.to_string());
    }
    yaml
}

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.trim_matches('\n')
        .lines()
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a test server saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: hyper::Version,
    pub headers: hyper::HeaderMap,
    pub body_len: usize,
}

type Handler = Arc<
    dyn Fn(Seen, usize) -> Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>
        + Send
        + Sync,
>;

/// A test upstream: HTTP/1.1 and h2c on loopback, answering with `handler(request, n)`
/// where `n` counts requests from 0; it records what it saw and how many connections it
/// accepted.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
    pub closed: Arc<Notify>,
    pub closed_count: Arc<AtomicUsize>,
}

impl Upstream {
    pub async fn start<F, Fut>(handler: F) -> Upstream
    where
        F: Fn(Seen, usize) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |seen, n| Box::pin(handler(seen, n)));
        let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(Notify::new());
        let closed_count = Arc::new(AtomicUsize::new(0));
        let count = Arc::new(AtomicUsize::new(0));
        let upstream = Upstream {
            addr,
            seen: seen.clone(),
            connections: connections.clone(),
            closed: closed.clone(),
            closed_count: closed_count.clone(),
        };
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = socket.accept().await else {
                    return;
                };
                connections.fetch_add(1, Ordering::SeqCst);
                let (handler, seen, count) = (handler.clone(), seen.clone(), count.clone());
                let (closed, closed_count) = (closed.clone(), closed_count.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (handler, seen, count) = (handler.clone(), seen.clone(), count.clone());
                        async move {
                            let (parts, body) = request.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let s = Seen {
                                method: parts.method.to_string(),
                                uri: parts.uri.to_string(),
                                version: parts.version,
                                headers: parts.headers,
                                body_len: body.len(),
                            };
                            seen.lock().unwrap().push(s.clone());
                            let n = count.fetch_add(1, Ordering::SeqCst);
                            Ok::<_, Infallible>(handler(s, n).await)
                        }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                    closed_count.fetch_add(1, Ordering::SeqCst);
                    closed.notify_waiters();
                });
            }
        });
        upstream
    }

    /// A server answering 200 with its own name in `x-served-by` and the body `name`.
    pub async fn named(name: &'static str) -> Upstream {
        Upstream::start(move |_, _| async move { text(200, name) }).await
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

pub fn text(status: u16, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("x-served-by", body)
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// A client connection to the proxy.
pub enum Client {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Client {
    pub async fn h1(proxy: SocketAddr) -> Client {
        let stream = TcpStream::connect(proxy).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn.with_upgrades());
        Client::H1(send)
    }

    pub async fn h2(proxy: SocketAddr) -> Client {
        let stream = TcpStream::connect(proxy).await.unwrap();
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        Client::H2(send)
    }

    /// Sends a request with the given authority, path and headers, and reads the whole
    /// response.
    pub async fn get(&mut self, authority: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send("GET", authority, path, headers, Bytes::new())
            .await
    }

    pub async fn send(
        &mut self,
        method: &str,
        authority: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Reply {
        let response = tokio::time::timeout(
            PATIENCE,
            self.request(method, authority, path, headers, body),
        )
        .await
        .expect("no response in time")
        .expect("the request failed");
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(PATIENCE, body.collect())
            .await
            .expect("no body in time")
            .expect("the body failed")
            .to_bytes();
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }

    pub async fn request(
        &mut self,
        method: &str,
        authority: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> hyper::Result<Response<Incoming>> {
        let mut builder = Request::builder().method(method);
        builder = match self {
            Client::H1(_) => builder.uri(path).header("host", authority),
            Client::H2(_) => builder.uri(format!("http://{authority}{path}")),
        };
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let request = builder.body(Full::new(body)).unwrap();
        match self {
            Client::H1(s) => {
                s.ready().await?;
                s.send_request(request).await
            }
            Client::H2(s) => {
                s.ready().await?;
                s.send_request(request).await
            }
        }
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or("<binary>")
    }
}

/// Counts of each value, for statistical checks.
pub fn tally<'a>(values: impl IntoIterator<Item = &'a str>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for v in values {
        *counts.entry(v.to_owned()).or_default() += 1;
    }
    counts
}
