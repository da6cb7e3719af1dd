//! The HTTP layer (Envoy's HTTP connection manager and router, the subset istiod uses):
//! a detected HTTP/1.1 or h2c connection is served by hyper, and each request is routed
//! through the chain's route table to a cluster, over pooled upstream connections, with
//! timeouts, retries, header handling, request metrics and the access log.

use hyper::body::Bytes;

mod body;
pub mod forward;
pub mod headers;
mod outgoing;
pub mod pool;
pub mod record;
pub mod replay;
pub mod retry;
pub mod server;
mod upgrade;

/// Errors carried inside bodies, where hyper wants a boxed error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every request sent upstream and every response sent downstream: the
/// client's own body (possibly replayed for a retry), an upstream body, or a local reply.
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;
