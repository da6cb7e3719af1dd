//! The admin server (Envoy's admin port, 15000, bound to 127.0.0.1 only) and the proxy's
//! Prometheus endpoint (15090).
//!
//! | path | method | what |
//! |---|---|---|
//! | `/config_dump` | GET | the running [`Snapshot`] as JSON |
//! | `/stats` | GET | every sample as `name{labels}: value`; `?format=prometheus` as below |
//! | `/stats/prometheus` | GET | Prometheus text 0.0.4, or OpenMetrics when the `Accept` header prefers it |
//! | `/ready` | GET | `LIVE` (200), else `INITIALIZING` / `DRAINING` (503), as Envoy answers |
//! | `/logging` | GET, POST | shows the log filter; with `?level=<filter>` sets it (400 if invalid) |
//! | `/drain`, `/drain_listeners` | POST | starts draining: readiness fails, the drain callback runs |
//! | `/quitquitquit` | POST | answers, then calls the quit callback (main exits with 0) |
//!
//! Although the listener is bound to loopback, every request is also checked to come from
//! this host: the admin port can change the proxy's state, and a mistaken bind (0.0.0.0 in a
//! test setup) must not open that to the network.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::header::ACCEPT;
use hyper::{Method, Request, StatusCode};
use tokio::net::TcpListener;

use crate::health::Readiness;
use crate::metrics::{Format, ProxyMetrics, openmetrics_to_plain_stats};
use crate::snapshot::Snapshot;

mod client;
pub(crate) mod http;
mod logging;
#[cfg(test)]
mod tests;

pub use client::{RequestError, WaitError, WaitOptions, request, request_to, wait, wait_async};
pub use http::FetchError;
pub use logging::{LogControl, LogError, parse_filter};

use http::{Conn, Reply};

/// Where the admin server reads the running configuration from. A function rather than the
/// config store's type, so that any holder of the snapshot (the store, a test) can serve it.
pub type SnapshotSource = Arc<dyn Fn() -> Arc<Snapshot> + Send + Sync>;

/// A [`SnapshotSource`] reading an `ArcSwap`, the way the config store holds the snapshot.
pub fn snapshot_source(swap: Arc<ArcSwap<Snapshot>>) -> SnapshotSource {
    Arc::new(move || swap.load_full())
}

type Callback = Arc<dyn Fn() + Send + Sync>;

/// The process-level actions the admin and agent ports can trigger, shared by both so that
/// a drain requested on either is the same drain.
#[derive(Clone)]
pub struct ProcessControl {
    readiness: Arc<Readiness>,
    on_drain: Callback,
    on_quit: Callback,
}

impl std::fmt::Debug for ProcessControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessControl")
            .field("readiness", &self.readiness)
            .finish_non_exhaustive()
    }
}

impl ProcessControl {
    /// `on_drain` runs once, when draining starts (stop accepting, start the drain
    /// deadline); `on_quit` runs after the `/quitquitquit` response has been written and
    /// should end the process with status 0 (Kubernetes Jobs use it to stop the sidecar).
    /// Both run on a server task, so they should only signal (a channel, a `Notify`) and
    /// return: a drain that waited for connections here would hold up the `/drain` answer,
    /// and the preStop hook with it.
    pub fn new(
        readiness: Arc<Readiness>,
        on_drain: impl Fn() + Send + Sync + 'static,
        on_quit: impl Fn() + Send + Sync + 'static,
    ) -> ProcessControl {
        ProcessControl {
            readiness,
            on_drain: Arc::new(on_drain),
            on_quit: Arc::new(on_quit),
        }
    }

    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }

    /// Starts draining; returns false when it had already started (the callback then does
    /// not run again).
    pub fn drain(&self) -> bool {
        let started = self.readiness.start_draining();
        if started {
            tracing::info!("draining: readiness now fails");
            (self.on_drain)();
        }
        started
    }

    pub fn quit(&self) {
        tracing::info!("quit requested");
        (self.on_quit)();
    }

    /// The answer to `POST /drain`, shared with the agent port.
    pub(crate) fn drain_response(&self) -> Reply {
        let body = if self.drain() {
            "OK\n"
        } else {
            "OK (already draining)\n"
        };
        http::text(StatusCode::OK, body)
    }

    /// The answer to `POST /quitquitquit`: the quit runs once the response is out.
    pub(crate) fn quit_response(&self, conn: &Conn) -> Reply {
        let control = self.clone();
        conn.after_close(move || control.quit());
        http::close_after(http::text(StatusCode::OK, "OK\n"))
    }
}

/// What the admin server serves.
#[derive(Clone)]
pub struct Admin {
    pub snapshot: SnapshotSource,
    pub metrics: Arc<ProxyMetrics>,
    pub control: ProcessControl,
    /// `None` when the process was started without a reloadable filter: `/logging` then
    /// answers 501.
    pub log: Option<Arc<dyn LogControl>>,
    /// The xDS client's state, when the configuration comes from a control plane: shown in
    /// `/config_dump` under `xds`, and as the reason on `/ready` until the first complete
    /// configuration.
    pub xds: Option<Arc<crate::xds::status::XdsStatus>>,
}

/// Serves the admin endpoints on `listener` (bind it to 127.0.0.1:15000) until `shutdown`.
pub async fn serve_admin(
    listener: TcpListener,
    admin: Arc<Admin>,
    shutdown: impl Future<Output = ()>,
) {
    let handler = move |request: Request<Incoming>, conn: Conn| {
        let admin = admin.clone();
        async move { route(&admin, &request, &conn) }
    };
    http::serve("admin", listener, handler, shutdown).await;
}

/// Serves `GET /stats/prometheus` alone (the proxy's 15090, Envoy's `prometheus_stats`
/// listener, which is not captured) until `shutdown`.
pub async fn serve_prometheus(
    listener: TcpListener,
    metrics: Arc<ProxyMetrics>,
    shutdown: impl Future<Output = ()>,
) {
    let handler = move |request: Request<Incoming>, _conn: Conn| {
        let metrics = metrics.clone();
        async move {
            match (request.method(), request.uri().path()) {
                (&Method::GET | &Method::HEAD, "/stats/prometheus") => {
                    prometheus_response(&metrics, &request)
                }
                (_, "/stats/prometheus") => http::method_not_allowed("GET"),
                _ => http::text(
                    StatusCode::NOT_FOUND,
                    "not found; this port serves /stats/prometheus\n",
                ),
            }
        }
    };
    http::serve("prometheus", listener, handler, shutdown).await;
}

const HELP: &str = "\
skiff-proxy admin
  GET  /config_dump        the running configuration (JSON)
  GET  /stats              metrics as name{labels}: value (?format=prometheus)
  GET  /stats/prometheus   metrics in Prometheus or OpenMetrics text
  GET  /ready              LIVE when ready
  GET  /logging            the log filter; POST /logging?level=<filter> changes it
  POST /drain              start draining (also /drain_listeners)
  POST /quitquitquit       exit now
";

fn route(admin: &Admin, request: &Request<Incoming>, conn: &Conn) -> Reply {
    if !http::is_local_peer(conn.peer()) {
        return http::forbidden_remote();
    }
    let method = request.method();
    let read = matches!(*method, Method::GET | Method::HEAD);
    let post = *method == Method::POST;
    let query = request.uri().query();
    match request.uri().path() {
        "/" | "/help" if read => http::text(StatusCode::OK, HELP),
        "/config_dump" if read => config_dump(admin),
        "/stats" if read => stats(admin, request),
        "/stats/prometheus" if read => prometheus_response(&admin.metrics, request),
        "/ready" if read => match admin.control.readiness().check() {
            Ok(()) => http::text(StatusCode::OK, "LIVE\n"),
            Err(reason) => {
                let why = admin.xds.as_ref().and_then(|x| x.not_ready_reason());
                let mut body = format!("{}\n", reason.server_state());
                if let Some(why) = why {
                    body.push_str(&why);
                    body.push('\n');
                }
                http::text(StatusCode::SERVICE_UNAVAILABLE, body)
            }
        },
        "/logging" if read || post => logging(admin, http::query_param(query, "level")),
        "/drain" | "/drain_listeners" if post => admin.control.drain_response(),
        "/quitquitquit" if post => admin.control.quit_response(conn),
        "/" | "/help" | "/config_dump" | "/stats" | "/stats/prometheus" | "/ready" => {
            http::method_not_allowed("GET")
        }
        "/logging" => http::method_not_allowed("GET, POST"),
        "/drain" | "/drain_listeners" | "/quitquitquit" => http::method_not_allowed("POST"),
        _ => http::text(StatusCode::NOT_FOUND, format!("not found\n\n{HELP}")),
    }
}

fn config_dump(admin: &Admin) -> Reply {
    let snapshot = (admin.snapshot)();
    let mut dump = match serde_json::to_value(&*snapshot) {
        Ok(v) => v,
        Err(e) => {
            return http::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the configuration could not be written as JSON: {e}\n"),
            );
        }
    };
    if let (Some(xds), Some(map)) = (&admin.xds, dump.as_object_mut())
        && let Ok(view) = serde_json::to_value(xds.view())
    {
        map.insert("xds".to_owned(), view);
    }
    match serde_json::to_vec_pretty(&dump) {
        Ok(mut json) => {
            json.push(b'\n');
            http::response(StatusCode::OK, "application/json", json)
        }
        Err(e) => http::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the configuration could not be written as JSON: {e}\n"),
        ),
    }
}

fn stats(admin: &Admin, request: &Request<Incoming>) -> Reply {
    match http::query_param(request.uri().query(), "format").as_deref() {
        None | Some("text") => {
            let open = admin.metrics.encode_as(Format::OpenMetrics);
            http::text(StatusCode::OK, openmetrics_to_plain_stats(&open))
        }
        Some("prometheus") => prometheus_response(&admin.metrics, request),
        Some(other) => http::text(
            StatusCode::BAD_REQUEST,
            format!("unknown stats format {other:?}: use text or prometheus\n"),
        ),
    }
}

pub(crate) fn prometheus_response<B>(metrics: &ProxyMetrics, request: &Request<B>) -> Reply {
    let accept = request.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    http::response(
        StatusCode::OK,
        format.content_type(),
        metrics.encode_as(format),
    )
}

fn logging(admin: &Admin, level: Option<String>) -> Reply {
    let Some(log) = &admin.log else {
        return http::text(
            StatusCode::NOT_IMPLEMENTED,
            "this process was started without a reloadable log filter\n",
        );
    };
    if let Some(level) = level {
        if let Err(e) = log.set(&level) {
            let status = match e {
                LogError::Reload(_) => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            return http::text(status, format!("{e}\n"));
        }
        tracing::info!(filter = %level, "log filter changed");
    }
    match log.current() {
        Ok(current) => http::text(StatusCode::OK, format!("active log filter: {current}\n")),
        Err(e) => http::text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// How long [`request`] waits for an answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
