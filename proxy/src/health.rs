//! Readiness: whether this proxy should receive traffic, and the health server on 15021
//! that tells the kubelet (`GET /healthz/ready`).
//!
//! The proxy is ready once its configuration is loaded (the first complete xDS set, or the
//! static file) and its listeners are bound, and stops being ready as soon as it starts
//! draining, so that Kubernetes takes the pod out of its Services' endpoints while in-flight
//! connections finish. The state is three atomics, written by whoever learns the fact (the
//! config store, the listener, the drain trigger) and read on every probe.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::admin::http::{self, Conn, Reply};

#[cfg(test)]
mod tests;

/// The readiness path on the health port (and on the agent port, as Istio's agent serves it).
pub const READY_PATH: &str = "/healthz/ready";

/// Why the proxy is not ready; the health server answers 503 with this text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum NotReady {
    #[error("draining: the proxy is shutting down and takes no new traffic")]
    Draining,
    #[error(
        "no configuration loaded yet (waiting for the first complete xDS update or the static config)"
    )]
    ConfigNotLoaded,
    #[error("listeners are not bound yet")]
    ListenersNotBound,
}

impl NotReady {
    /// Envoy's server state name for `/ready` on the admin port.
    pub fn server_state(self) -> &'static str {
        match self {
            NotReady::Draining => "DRAINING",
            NotReady::ConfigNotLoaded | NotReady::ListenersNotBound => "INITIALIZING",
        }
    }
}

/// The shared readiness state. Create one, share it as `Arc<Readiness>`.
#[derive(Debug, Default)]
pub struct Readiness {
    listeners_bound: AtomicBool,
    config_loaded: AtomicBool,
    draining: AtomicBool,
    drain_started: Notify,
    /// What the last probe answered, so that a change is logged once, not on every probe.
    last_reported_ready: AtomicBool,
}

impl Readiness {
    pub fn new() -> Readiness {
        Readiness::default()
    }

    pub fn set_listeners_bound(&self, bound: bool) {
        self.listeners_bound.store(bound, Ordering::Release);
    }

    pub fn set_config_loaded(&self, loaded: bool) {
        self.config_loaded.store(loaded, Ordering::Release);
    }

    /// Marks the proxy as draining, for good. Returns true for the call that started it, so
    /// that the caller runs its drain actions once.
    pub fn start_draining(&self) -> bool {
        let started = !self.draining.swap(true, Ordering::AcqRel);
        if started {
            self.drain_started.notify_waiters();
        }
        started
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Resolves once draining has started (at once if it already has).
    pub async fn drained(&self) {
        loop {
            let notified = self.drain_started.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a start between the check and the await is
            // not missed.
            notified.as_mut().enable();
            if self.is_draining() {
                return;
            }
            notified.await;
        }
    }

    /// `Ok` when ready, else the first reason it is not (draining first: it is final).
    pub fn check(&self) -> Result<(), NotReady> {
        if self.is_draining() {
            Err(NotReady::Draining)
        } else if !self.config_loaded.load(Ordering::Acquire) {
            Err(NotReady::ConfigNotLoaded)
        } else if !self.listeners_bound.load(Ordering::Acquire) {
            Err(NotReady::ListenersNotBound)
        } else {
            Ok(())
        }
    }

    pub fn is_ready(&self) -> bool {
        self.check().is_ok()
    }

    /// The answer to `GET /healthz/ready`: 200 when ready, else 503 with the reason.
    pub(crate) fn probe_response(&self) -> Reply {
        let result = self.check();
        let ready = result.is_ok();
        if self.last_reported_ready.swap(ready, Ordering::AcqRel) != ready {
            match result {
                Ok(()) => tracing::info!("proxy is ready"),
                Err(reason) => tracing::warn!(%reason, "proxy is not ready"),
            }
        }
        match result {
            Ok(()) => http::text(StatusCode::OK, ""),
            Err(reason) => http::text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
        }
    }
}

/// Serves `GET /healthz/ready` on `listener` (the proxy binds 0.0.0.0:15021) until
/// `shutdown` resolves.
pub async fn serve_health(
    listener: TcpListener,
    readiness: Arc<Readiness>,
    shutdown: impl Future<Output = ()>,
) {
    let handler = move |request: Request<Incoming>, _conn: Conn| {
        let readiness = readiness.clone();
        async move { route(&readiness, &request) }
    };
    http::serve("health", listener, handler, shutdown).await;
}

fn route(readiness: &Readiness, request: &Request<Incoming>) -> Reply {
    if request.uri().path() != READY_PATH {
        return http::text(
            StatusCode::NOT_FOUND,
            "not found; the health port serves /healthz/ready\n",
        );
    }
    match *request.method() {
        Method::GET | Method::HEAD => readiness.probe_response(),
        _ => http::method_not_allowed("GET"),
    }
}
