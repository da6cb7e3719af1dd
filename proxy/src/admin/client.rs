//! The client side of two CLI subcommands, which the injector puts into the proxy
//! container's lifecycle hooks:
//!
//! - `skiff-proxy request --debug-port=15020 POST drain` (native sidecars' preStop): one
//!   request to a local proxy port, like Istio's `pilot-agent request`. See [`request`].
//! - `skiff-proxy wait` (postStart with `holdApplicationUntilProxyStarts`): returns once the
//!   proxy is ready, so the kubelet starts the app containers only then, like
//!   `pilot-agent wait`. See [`wait`].
//!
//! Both exist as blocking functions for the CLI, which has no runtime yet when it runs them
//! (each builds a private current-thread runtime on its own thread, so calling them from
//! inside a runtime cannot panic either), and as async functions for callers that have one.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header::{HOST, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use thiserror::Error;

use super::REQUEST_TIMEOUT;
use super::http::{self, FetchError, Overflow, Protocol};
use crate::health::READY_PATH;

/// The largest answer [`request`] prints (a config dump is the largest there is).
const MAX_ANSWER: usize = 64 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum RequestError {
    #[error("{0:?} is not an HTTP method")]
    Method(String),
    #[error("request to {url} failed: {source}")]
    Fetch {
        url: String,
        #[source]
        source: FetchError,
    },
    #[error("request to {url} answered {status}: {body}")]
    Status {
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("could not start the client: {0}")]
    Runtime(String),
}

/// Sends `method` to `http://127.0.0.1:<port>/<path>` and returns the body of a 2xx answer.
/// `path` may omit the leading `/` (`drain`, as `pilot-agent request` takes it). Blocking;
/// see the module documentation.
pub fn request(port: u16, method: &str, path: &str) -> Result<String, RequestError> {
    let (method, path) = (method.to_owned(), path.to_owned());
    on_private_runtime(move || async move {
        let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        request_to(address, &method, &path, REQUEST_TIMEOUT).await
    })
    .unwrap_or_else(|e| Err(RequestError::Runtime(e)))
}

/// The async form of [`request`], to any address.
pub async fn request_to(
    address: SocketAddr,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<String, RequestError> {
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| RequestError::Method(method.to_owned()))?;
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    let url = format!("http://{address}{path}");
    let fetched = get(address, method, &path, MAX_ANSWER, timeout)
        .await
        .map_err(|source| RequestError::Fetch {
            url: url.clone(),
            source,
        })?;
    let body = String::from_utf8_lossy(&fetched.body).into_owned();
    if fetched.status.is_success() {
        Ok(body)
    } else {
        Err(RequestError::Status {
            url,
            status: fetched.status,
            body: body.trim_end().to_owned(),
        })
    }
}

async fn get(
    address: SocketAddr,
    method: Method,
    path: &str,
    limit: usize,
    timeout: Duration,
) -> Result<http::Fetched, FetchError> {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, address.to_string())
        .header(
            USER_AGENT,
            concat!("skiff-proxy/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| FetchError::Request(e.to_string()))?;
    http::fetch(
        address,
        None,
        Protocol::Http1,
        request,
        limit,
        Overflow::Truncate,
        timeout,
    )
    .await
}

/// How [`wait`] polls. The defaults are `pilot-agent wait`'s.
#[derive(Debug, Clone)]
pub struct WaitOptions {
    /// Where `/healthz/ready` is served: the health port 15021 (or the agent's 15020).
    pub address: SocketAddr,
    /// Give up after this long.
    pub timeout: Duration,
    /// Time between attempts.
    pub period: Duration,
    /// Limit of one attempt.
    pub request_timeout: Duration,
}

impl Default for WaitOptions {
    fn default() -> Self {
        WaitOptions {
            address: SocketAddr::from((Ipv4Addr::LOCALHOST, 15021)),
            timeout: Duration::from_secs(60),
            period: Duration::from_millis(500),
            request_timeout: Duration::from_millis(500),
        }
    }
}

#[derive(Debug, Error)]
pub enum WaitError {
    #[error("the proxy was not ready after {waited:?} ({attempts} attempts); last answer: {last}")]
    Timeout {
        waited: Duration,
        attempts: u32,
        last: String,
    },
    #[error("could not start the client: {0}")]
    Runtime(String),
}

/// Polls `GET /healthz/ready` until it answers 200, or fails after `options.timeout`.
/// Blocking; see the module documentation.
pub fn wait(options: &WaitOptions) -> Result<(), WaitError> {
    let options = options.clone();
    on_private_runtime(move || async move { wait_async(&options).await })
        .unwrap_or_else(|e| Err(WaitError::Runtime(e)))
}

/// The async form of [`wait`].
pub async fn wait_async(options: &WaitOptions) -> Result<(), WaitError> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + options.timeout;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let attempt = options
            .request_timeout
            .min(remaining)
            .max(Duration::from_millis(1));
        let last = match get(options.address, Method::GET, READY_PATH, 4096, attempt).await {
            Ok(fetched) if fetched.status == StatusCode::OK => {
                tracing::info!(after = ?started.elapsed(), attempts, "proxy is ready");
                return Ok(());
            }
            Ok(fetched) => {
                let body = String::from_utf8_lossy(&fetched.body);
                format!("{} {}", fetched.status, body.trim_end())
            }
            Err(e) => e.to_string(),
        };
        let next = tokio::time::Instant::now() + options.period;
        if next >= deadline {
            return Err(WaitError::Timeout {
                waited: started.elapsed(),
                attempts,
                last,
            });
        }
        tokio::time::sleep_until(next).await;
    }
}

/// Runs `task` to completion on a current-thread runtime in a thread of its own, so that a
/// blocking caller needs no runtime and a caller inside one does not trip tokio's
/// nested-runtime check.
fn on_private_runtime<F, Fut, T>(task: F) -> Result<T, String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let thread = std::thread::Builder::new()
        .name("skiff-client".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            Ok(runtime.block_on(task()))
        })
        .map_err(|e| e.to_string())?;
    thread
        .join()
        .map_err(|_| "the client thread panicked".to_owned())?
}
