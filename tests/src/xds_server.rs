//! A real ADS (Envoy xDS v3 aggregated) server for the end-to-end tests and the demo: proxies
//! connect to it over gRPC, it serves the resources the test [`set`](XdsServer::set), pushes
//! every change, and records every request so a test can wait for an ACK or a NACK.
//!
//! Both variants are served: state of the world (`StreamAggregatedResources`) and delta
//! (`DeltaAggregatedResources`, istiod's default). One server may listen in several pods at
//! once: a socket keeps the network namespace it was created in, so the caller binds a
//! `127.0.0.1` listener inside each pod and hands them all to [`XdsServer::start`].

mod streams;
mod transport;

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use envoy_types::pb::google::protobuf::Any;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinHandle};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use transport::{accept_tcp, accept_unix, bind_unix, close_all, serve};

/// The type URLs of the resources a sidecar asks for.
pub mod type_url {
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
}

/// Which ADS method a request came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// State of the world: `StreamAggregatedResources`.
    Sotw,
    /// Incremental: `DeltaAggregatedResources`.
    Delta,
}

/// One request as the server received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// The ADS stream it came on: 1 for the first stream the server accepted, and so on.
    pub stream: usize,
    pub variant: Variant,
    pub type_url: String,
    /// SotW: the request's `version_info` (on an ACK, the version accepted; on a NACK, the
    /// last version accepted before). Delta requests carry no version, so for them this is
    /// the `system_version_info` of the response that `response_nonce` answers ("" when the
    /// nonce is empty or unknown): an ACK then names the version it accepts in both variants.
    pub version_info: String,
    pub response_nonce: String,
    /// SotW: `resource_names`.
    pub resource_names: Vec<String>,
    /// Delta: `resource_names_subscribe` / `resource_names_unsubscribe`.
    pub subscribe: Vec<String>,
    pub unsubscribe: Vec<String>,
    /// Delta: the versions the client says it already has (on a reconnect).
    pub initial_resource_versions: HashMap<String, String>,
    /// `error_detail` (code, message): set on a NACK.
    pub error: Option<(i32, String)>,
    /// The node id of the stream (sent on its first request; later requests may omit it).
    pub node_id: Option<String>,
}

impl Recorded {
    /// An acknowledgement: it answers a response (nonce set) and reports no error.
    pub fn is_ack(&self) -> bool {
        !self.response_nonce.is_empty() && self.error.is_none()
    }

    /// A rejection: it carries `error_detail`.
    pub fn is_nack(&self) -> bool {
        self.error.is_some()
    }
}

/// The ADS test server. Clones share one server; it shuts down when the last clone is dropped.
#[derive(Clone)]
pub struct XdsServer {
    handle: Arc<Handle>,
}

/// Owned by the [`XdsServer`] clones only (the tasks hold [`Inner`]), so its drop means the
/// test has let the server go.
struct Handle {
    inner: Arc<Inner>,
    accept_tasks: Vec<AbortHandle>,
}

struct Inner {
    state: Mutex<State>,
    /// Bumped on every `set`/`update`: every stream re-checks what it has to send.
    changes: watch::Sender<u64>,
    /// The number of requests recorded, for `wait_for`.
    recorded: watch::Sender<usize>,
    unix_paths: Vec<PathBuf>,
}

#[derive(Default)]
struct State {
    resources: BTreeMap<String, TypeResources>,
    requests: Vec<Recorded>,
    /// Streams opened so far (the last stream's number).
    streams_opened: usize,
    /// The streams open now, so `stop` can end them.
    open: HashMap<usize, OpenStream>,
    /// `Some` while serving.
    epoch: Option<Epoch>,
}

#[derive(Default)]
struct TypeResources {
    version: u64,
    items: BTreeMap<String, Item>,
}

#[derive(Clone)]
struct Item {
    any: Any,
    /// A hash of the content: a resource's version changes exactly when its content does,
    /// and stays the same across server instances (so a delta reconnect can be answered
    /// with only what changed).
    version: String,
}

struct OpenStream {
    task: AbortHandle,
    /// Ends the stream with UNAVAILABLE, as a control plane going away would.
    kill: Box<dyn FnOnce() + Send>,
}

/// One period of serving, from `start`/`resume` to `stop`.
struct Epoch {
    tcp: mpsc::Sender<tokio::net::TcpStream>,
    unix: mpsc::Sender<tokio::net::UnixStream>,
    /// Duplicates of the accepted connections' sockets, to close them for certain on `stop`.
    conns: Vec<OwnedFd>,
    shutdown: Vec<oneshot::Sender<()>>,
    servers: Vec<JoinHandle<()>>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn content_version(any: &Any) -> String {
    let mut hasher = std::hash::DefaultHasher::new();
    any.type_url.hash(&mut hasher);
    any.value.hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

impl XdsServer {
    /// Serves ADS on every listener given (std listeners the caller bound, possibly inside
    /// other network namespaces). Returns once serving. Call it inside a tokio runtime (it
    /// spawns the accept loops and the gRPC servers there).
    pub async fn start(listeners: Vec<TcpListener>) -> XdsServer {
        XdsServer::start_with(listeners, Vec::new()).await
    }

    /// [`XdsServer::start`], also listening on Unix socket paths (created here, mode 0777 so
    /// the proxy's uid 1337 may connect; an existing file at the path is replaced and the
    /// file is removed when the server is dropped).
    pub async fn start_with(listeners: Vec<TcpListener>, unix_paths: Vec<PathBuf>) -> XdsServer {
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            changes: watch::channel(0).0,
            recorded: watch::channel(0).0,
            unix_paths: unix_paths.clone(),
        });
        let mut accept_tasks = Vec::new();
        for listener in listeners {
            listener
                .set_nonblocking(true)
                .expect("set the xDS listener non-blocking");
            let listener =
                tokio::net::TcpListener::from_std(listener).expect("register the xDS listener");
            let inner = inner.clone();
            accept_tasks.push(tokio::spawn(accept_tcp(inner, listener)).abort_handle());
        }
        for path in &unix_paths {
            let listener = bind_unix(path);
            let inner = inner.clone();
            accept_tasks.push(tokio::spawn(accept_unix(inner, listener)).abort_handle());
        }
        let server = XdsServer {
            handle: Arc::new(Handle {
                inner,
                accept_tasks,
            }),
        };
        server.resume().await;
        server
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.handle.inner
    }

    /// Replaces the whole set of resources of `type_url` (name → Any), bumps that type's
    /// version and pushes to every stream: SotW gets the full set for LDS/CDS and the
    /// subscribed names for RDS/EDS; delta gets only what changed, and `removed_resources`
    /// for names that disappeared. A name given twice keeps the last.
    pub fn set(&self, type_url: &str, resources: Vec<(String, Any)>) {
        self.change(type_url, |items| {
            items.clear();
            insert_all(items, resources);
        });
    }

    /// Adds or replaces some resources of a type and removes others, in one push.
    pub fn update(&self, type_url: &str, upsert: Vec<(String, Any)>, remove: &[&str]) {
        self.change(type_url, |items| {
            for name in remove {
                items.remove(*name);
            }
            insert_all(items, upsert);
        });
    }

    fn change(&self, type_url: &str, edit: impl FnOnce(&mut BTreeMap<String, Item>)) {
        {
            let mut state = lock(&self.inner().state);
            let entry = state.resources.entry(type_url.to_string()).or_default();
            edit(&mut entry.items);
            entry.version += 1;
        }
        self.inner()
            .changes
            .send_modify(|generation| *generation += 1);
    }

    /// The current version of a type as sent in responses (`version_info`,
    /// `system_version_info`): "0" before the first `set`, then "1", "2", ...
    pub fn version(&self, type_url: &str) -> String {
        let state = lock(&self.inner().state);
        state
            .resources
            .get(type_url)
            .map_or(0, |t| t.version)
            .to_string()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.inner().state).requests.clone()
    }

    /// Waits (at most `timeout`) until a request matching `pred` has been received, counting
    /// those received before the call; returns the first such request.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&Recorded) -> bool,
    ) -> Option<Recorded> {
        self.wait_for_since(0, timeout, pred).await
    }

    /// [`XdsServer::wait_for`] over the requests from index `since` on (`requests().len()`
    /// taken earlier: only requests received after that point).
    pub async fn wait_for_since(
        &self,
        since: usize,
        timeout: Duration,
        pred: impl Fn(&Recorded) -> bool,
    ) -> Option<Recorded> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = self.inner().recorded.subscribe();
        let mut from = since;
        loop {
            seen.borrow_and_update();
            let fresh: Vec<Recorded> = {
                let state = lock(&self.inner().state);
                let fresh = state.requests.get(from..).unwrap_or_default().to_vec();
                from = from.max(state.requests.len());
                fresh
            };
            if let Some(found) = fresh.into_iter().find(|r| pred(r)) {
                return Some(found);
            }
            match tokio::time::timeout_at(deadline, seen.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// Waits until some stream has ACKed `version` of `type_url` (see
    /// [`Recorded::version_info`]); e.g. `wait_for_ack(t, CLUSTER, &server.version(CLUSTER))`
    /// right after a `set`. (A delta stream is sent nothing, so ACKs nothing, when a `set`
    /// changes nothing it has; SotW streams are always sent the new version.)
    pub async fn wait_for_ack(
        &self,
        timeout: Duration,
        type_url: &str,
        version: &str,
    ) -> Option<Recorded> {
        self.wait_for(timeout, |r| {
            r.type_url == type_url && r.is_ack() && r.version_info == version
        })
        .await
    }

    /// The last ACK or NACK received on `stream` for `type_url`: its `version_info`,
    /// `response_nonce` and `error` (the NACK reason) tell the client's state.
    pub fn ack_state(&self, stream: usize, type_url: &str) -> Option<Recorded> {
        let state = lock(&self.inner().state);
        state
            .requests
            .iter()
            .rev()
            .find(|r| r.stream == stream && r.type_url == type_url && !r.response_nonce.is_empty())
            .cloned()
    }

    /// ADS streams opened so far (both variants).
    pub fn connections(&self) -> usize {
        lock(&self.inner().state).streams_opened
    }

    /// ADS streams open now.
    pub fn open_streams(&self) -> usize {
        lock(&self.inner().state).open.len()
    }

    /// Ends every open stream (with UNAVAILABLE) and closes every connection, so the
    /// proxies see the control plane go away; until [`XdsServer::resume`], connections are
    /// accepted and reset at once. The resources are kept.
    ///
    /// (The listening sockets stay open: one bound in another namespace cannot be re-bound
    /// from here, and Linux releases the port of a listening socket that is shut down.)
    pub async fn stop(&self) {
        let Some(halted) = self.inner().halt() else {
            return;
        };
        let mut servers = halted.servers;
        // Give the streams' trailers a moment to go out; the sockets are closed regardless.
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            for server in servers.iter_mut() {
                let _ = server.await;
            }
        })
        .await;
        close_all(halted.conns);
        for server in servers {
            server.abort();
        }
    }

    /// Serves again after [`XdsServer::stop`] (no-op when serving).
    pub async fn resume(&self) {
        let inner = self.inner().clone();
        let mut state = lock(&inner.state);
        if state.epoch.is_some() {
            return;
        }
        let (tcp_tx, tcp_rx) = mpsc::channel::<tokio::net::TcpStream>(64);
        let (unix_tx, unix_rx) = mpsc::channel::<tokio::net::UnixStream>(64);
        let (tcp_stop, tcp_stopped) = oneshot::channel::<()>();
        let (unix_stop, unix_stopped) = oneshot::channel::<()>();
        let tcp_server = tokio::spawn(serve(
            inner.clone(),
            ReceiverStream::new(tcp_rx).map(Ok::<_, std::io::Error>),
            tcp_stopped,
        ));
        let unix_server = tokio::spawn(serve(
            inner.clone(),
            ReceiverStream::new(unix_rx).map(Ok::<_, std::io::Error>),
            unix_stopped,
        ));
        state.epoch = Some(Epoch {
            tcp: tcp_tx,
            unix: unix_tx,
            conns: Vec::new(),
            shutdown: vec![tcp_stop, unix_stop],
            servers: vec![tcp_server, unix_server],
        });
    }
}

fn insert_all(items: &mut BTreeMap<String, Item>, resources: Vec<(String, Any)>) {
    for (name, any) in resources {
        let version = content_version(&any);
        items.insert(name, Item { any, version });
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        for task in &self.accept_tasks {
            task.abort();
        }
        if let Some(halted) = self.inner.halt() {
            close_all(halted.conns);
            for server in halted.servers {
                server.abort();
            }
        }
        for path in &self.inner.unix_paths {
            let _ = std::fs::remove_file(path);
        }
    }
}

struct Halted {
    conns: Vec<OwnedFd>,
    servers: Vec<JoinHandle<()>>,
}

impl Inner {
    /// Stops serving: ends every open stream and signals the gRPC servers to shut down.
    /// `None` when already stopped. Synchronous, so that `Drop` can use it.
    fn halt(&self) -> Option<Halted> {
        let (epoch, open) = {
            let mut state = lock(&self.state);
            let epoch = state.epoch.take()?;
            (epoch, std::mem::take(&mut state.open))
        };
        // Outside the lock: an aborted task deregisters itself under it.
        for (_, stream) in open {
            (stream.kill)();
            stream.task.abort();
        }
        let Epoch {
            tcp,
            unix,
            conns,
            shutdown,
            servers,
        } = epoch;
        drop((tcp, unix));
        for signal in shutdown {
            let _ = signal.send(());
        }
        Some(Halted { conns, servers })
    }

    fn record(&self, request: Recorded) {
        lock(&self.state).requests.push(request);
        self.recorded.send_modify(|count| *count += 1);
    }

    /// Registers a new ADS stream and spawns its task; refused while stopped.
    fn open_stream<T, F>(
        self: &Arc<Self>,
        responses: mpsc::Sender<Result<T, Status>>,
        task: impl FnOnce(usize) -> F,
    ) -> Result<(), Status>
    where
        T: Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let mut state = lock(&self.state);
        if state.epoch.is_none() {
            return Err(Status::unavailable("xDS test server stopped"));
        }
        state.streams_opened += 1;
        let id = state.streams_opened;
        let run = task(id);
        let inner = self.clone();
        // Spawned under the lock, so the task cannot deregister before it is registered.
        let handle = tokio::spawn(async move {
            let _registration = Registration { inner, id };
            run.await;
        });
        let kill = Box::new(move || {
            let _ = responses.try_send(Err(Status::unavailable("xDS test server stopped")));
        });
        state.open.insert(
            id,
            OpenStream {
                task: handle.abort_handle(),
                kill,
            },
        );
        Ok(())
    }
}

/// Removes a stream from the open set when its task ends, however it ends.
struct Registration {
    inner: Arc<Inner>,
    id: usize,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.inner.state).open.remove(&self.id);
    }
}
