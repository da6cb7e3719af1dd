//! The HTTP data path end to end in one process: real sockets on loopback, a proxy started
//! from static-config YAML, hyper clients (HTTP/1.1 and h2c) and test servers.

mod actions;
mod bodies;
mod harness;
mod logs;
mod retries;
mod routing;
mod streaming;
mod timeouts;
mod tls;
