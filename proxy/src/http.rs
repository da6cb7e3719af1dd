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

/// The most an HTTP/1.1 connection buffers, each way: a request or response head must fit
/// (Envoy's default header limit is 60 KiB), and a body streams through in pieces of at
/// most this size. hyper's default, 408 KiB, let 64 connections uploading 64 KiB bodies
/// hold 36 MiB per proxy.
pub(crate) const H1_MAX_BUFFER: usize = 64 * 1024;
