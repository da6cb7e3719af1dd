//! Helpers for the in-process HTTP tests of the admin, agent and health servers: servers on
//! 127.0.0.1:0 that stop when asked, and a client whose every wait is bounded.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper::header::HOST;
use hyper::{HeaderMap, Method, Request, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{Overflow, Protocol, fetch};

/// The bound on every wait in these tests.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// `future`, or a test failure naming `what` after [`WAIT`].
pub(crate) async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: no result within {WAIT:?}"),
    }
}

/// A server running on a task, stopped by [`Running::stop`].
pub(crate) struct Running {
    pub(crate) address: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    /// Starts `serve(listener, shutdown)` on 127.0.0.1:0.
    pub(crate) async fn start<S, F>(serve: S) -> Running
    where
        S: FnOnce(TcpListener, std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let address = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = Box::pin(async move {
            let _ = stopped.await;
        });
        let task = tokio::spawn(serve(listener, shutdown));
        Running {
            address,
            stop,
            task,
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.address.port()
    }

    /// Asks the server to stop and waits until it has.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        within("server shutdown", self.task)
            .await
            .expect("server task");
    }
}

/// A response as the tests read it.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn content_type(&self) -> &str {
        self.headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// Sends one request with `headers` and reads the answer, all within [`WAIT`].
pub(crate) async fn call(
    address: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = Request::builder().method(method.clone()).uri(path);
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request = request.header(HOST, address.to_string());
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Empty::<Bytes>::new()).expect("request");
    let fetched = fetch(
        address,
        None,
        Protocol::Http1,
        request,
        64 << 20,
        Overflow::Fail,
        WAIT,
    )
    .await
    .unwrap_or_else(|e| panic!("{method} {path} on {address}: {e}"));
    Answer {
        status: fetched.status,
        headers: fetched.headers,
        body: String::from_utf8_lossy(&fetched.body).into_owned(),
    }
}

pub(crate) async fn get(address: SocketAddr, path: &str) -> Answer {
    call(address, Method::GET, path, &[]).await
}

pub(crate) async fn post(address: SocketAddr, path: &str) -> Answer {
    call(address, Method::POST, path, &[]).await
}
