//! Accepting redirected connections and dispatching them: original destination, hand-off
//! to the listener for that destination, protocol detection, filter-chain choice, cluster,
//! upstream connection, forwarding.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use crate::detect::{self, Protocol, Sniff};
use crate::http::pool::Pools;
use crate::http::record::{AccessLogs, Sink};
use crate::http::{forward, server};
use crate::metrics::RequestOutcome;
use crate::snapshot::{
    ConnectionFacts, Direction, FilterChain, Handler, Listener, RouteSource, Snapshot, Transport,
};
use crate::tcp::{self, End};

/// Where a redirected connection was going. Behind a trait so in-process tests can say it
/// without iptables.
pub trait OriginalDst: Send + Sync {
    fn lookup(&self, stream: &TcpStream) -> Option<SocketAddr>;
}

/// The kernel's answer (`SO_ORIGINAL_DST`); a connection that was not redirected has no NAT
/// entry and reports its own local address, which the loop guard then refuses.
pub struct KernelOriginalDst;

impl OriginalDst for KernelOriginalDst {
    fn lookup(&self, stream: &TcpStream) -> Option<SocketAddr> {
        let local = stream.local_addr().ok()?;
        crate::orig_dst::original_dst(stream, local).ok()
    }
}

/// What the data path reports, implemented by the metrics module.
pub trait Telemetry: Send + Sync {
    /// A connection was handed to a cluster; the returned value learns its bytes and end.
    fn connection(&self, info: &ConnectionInfo) -> Box<dyn ConnectionStats>;
    /// A connection was closed without being forwarded (or its upstream failed).
    fn error(&self, reason: &'static str);
    /// An HTTP request ended (answered, failed or abandoned). `cluster` is empty when no
    /// cluster was chosen (no route).
    fn request(&self, direction: Direction, cluster: &str, outcome: RequestOutcome);
}

pub trait ConnectionStats: Send + Sync {
    /// Bytes from the client forwarded upstream (the request direction).
    fn to_upstream(&self, bytes: u64);
    /// Bytes from upstream forwarded to the client (the response direction).
    fn to_downstream(&self, bytes: u64);
    fn closed(&self, end: End);
}

/// What is known about a forwarded connection, for metric labels and logs.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub direction: Direction,
    pub listener: String,
    pub cluster: String,
    pub source: SocketAddr,
    pub original_dst: SocketAddr,
    pub upstream: SocketAddr,
}

/// Counts open connections so shutdown can wait for them.
#[derive(Default)]
pub struct Tracker {
    active: AtomicUsize,
    idle: Notify,
}

impl Tracker {
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// Waits until no connection is open.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.active() == 0 {
                return;
            }
            notified.await;
        }
    }

    fn enter(self: &Arc<Self>) -> TrackGuard {
        self.active.fetch_add(1, Ordering::AcqRel);
        TrackGuard(self.clone())
    }
}

struct TrackGuard(Arc<Tracker>);

impl Drop for TrackGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The data path's shared parts.
pub struct Proxy {
    pub snapshot: forward::Snapshots,
    pub original_dst: Box<dyn OriginalDst>,
    pub telemetry: Arc<dyn Telemetry>,
    pub tracker: Arc<Tracker>,
    /// Upstream HTTP connections, kept across configuration changes.
    pub pools: Arc<Pools>,
    pub access_logs: Arc<AccessLogs>,
}

impl Proxy {
    /// A data path with its own connection tracker and upstream pools, and no access log
    /// (set `access_logs` to enable one).
    pub fn new(
        snapshot: impl Fn() -> Arc<Snapshot> + Send + Sync + 'static,
        original_dst: impl OriginalDst + 'static,
        telemetry: Arc<dyn Telemetry>,
    ) -> Proxy {
        Proxy {
            snapshot: Arc::new(snapshot),
            original_dst: Box::new(original_dst),
            telemetry,
            tracker: Arc::new(Tracker::default()),
            pools: Pools::new(),
            access_logs: Arc::new(AccessLogs::new(|_| None)),
        }
    }

    /// Accepts on `listener` (the socket of the bound listener on `port`) until `stop`
    /// turns true; connections already accepted carry on.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        port: u16,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stop.wait_for(|s| *s) => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let guard = self.tracker.enter();
                    let proxy = self.clone();
                    let stop = stop.clone();
                    tokio::spawn(async move {
                        proxy.handle(stream, peer, port, stop).await;
                        drop(guard);
                    });
                }
                Err(err) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(port, "accept failed: {err}");
                    self.telemetry.error("accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn handle(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        port: u16,
        stop: watch::Receiver<bool>,
    ) {
        let _ = stream.set_nodelay(true);
        let snapshot = (self.snapshot)();
        let Some(bound) = snapshot.bound_listener(port) else {
            return self.refuse(
                "no_listener",
                peer,
                &format!("no listener configured for port {port}"),
            );
        };
        let original = self
            .original_dst
            .lookup(&stream)
            .or_else(|| stream.local_addr().ok());
        let Some(original) = original else {
            return self.refuse(
                "no_original_dst",
                peer,
                "cannot read the connection's destination",
            );
        };
        // A connection to the capture port itself would be sent back here forever.
        if original.port() == port {
            return self.refuse(
                "loop",
                peer,
                &format!("destination {original} is the proxy's own capture port"),
            );
        }
        let target = if bound.use_original_dst {
            snapshot
                .listener_for(original, bound.direction)
                .map(|l| &**l)
                .unwrap_or(bound)
        } else {
            bound
        };

        let mut first = Vec::new();
        let detect =
            target.detection.enabled && !target.detection_skip_ports.contains(&original.port());
        let protocol = if detect {
            match detect_protocol(&mut stream, &mut first, target.detection.timeout).await {
                Some(p) => p,
                None => {
                    return self.refuse(
                        "client_closed",
                        peer,
                        "client closed before sending anything",
                    );
                }
            }
        } else {
            Protocol::Opaque
        };
        let facts = ConnectionFacts {
            original_dst: Some(original),
            source: Some(peer),
            transport: Some(if matches!(protocol, Protocol::Tls { .. }) {
                Transport::Tls
            } else {
                Transport::RawBuffer
            }),
            application_protocols: protocol.application_protocols(),
            server_name: match &protocol {
                Protocol::Tls { sni, .. } => sni.clone(),
                _ => None,
            },
        };
        // A hand-off listener without a matching chain falls back to the bound listener's
        // catch-all chains, as Istio's per-port listeners fall back to passthrough.
        let chain = choose_chain(target, &facts).or_else(|| choose_chain(bound, &facts));
        let Some(chain) = chain else {
            return self.refuse(
                "no_chain",
                peer,
                &format!("no filter chain of {} matches {original}", target.name),
            );
        };
        if chain.tls.is_some() {
            // Never serve a chain that promises TLS as plaintext (istiod's mTLS chains);
            // Skiff does not terminate TLS yet.
            return self.refuse(
                "tls_unsupported",
                peer,
                &format!(
                    "filter chain {} terminates TLS, which Skiff does not do yet",
                    chain.name
                ),
            );
        }
        let tcp_proxy = match &chain.handler {
            Handler::Tcp(tcp) => tcp,
            Handler::Http(http) => {
                let (route_name, inline_table) = match &http.route_config {
                    RouteSource::Inline(table) => (table.name.clone(), Some(table.clone())),
                    RouteSource::Rds(name) => (name.clone(), None),
                };
                let sink = Arc::new(Sink {
                    telemetry: self.telemetry.clone(),
                    access_log: snapshot.access_log.and_then(|f| self.access_logs.get(f)),
                });
                let conn = Arc::new(forward::Conn {
                    pools: self.pools.clone(),
                    sink,
                    snapshots: self.snapshot.clone(),
                    route_name,
                    inline_table,
                    direction: target.direction,
                    edge: http.use_remote_address,
                    stream_idle: Some(http.stream_idle_timeout).filter(|d| !d.is_zero()),
                    peer,
                    original_dst: original,
                });
                return server::serve(conn, stream, first, stop).await;
            }
        };
        let pick = crate::route::pick_cluster(&tcp_proxy.cluster, crate::balance::random_u64());
        let Some(cluster_name) = pick else {
            return self.refuse(
                "no_route",
                peer,
                &format!("chain {} names no cluster", chain.name),
            );
        };
        let Some(cluster) = snapshot.cluster(cluster_name) else {
            return self.refuse(
                "no_cluster",
                peer,
                &format!("no cluster named {cluster_name}"),
            );
        };
        let upstream = match tcp::connect(cluster, original).await {
            Ok(u) => u,
            Err(err) => return self.refuse(err.reason(), peer, &err.to_string()),
        };
        let info = ConnectionInfo {
            direction: target.direction,
            listener: target.name.clone(),
            cluster: cluster.name.clone(),
            source: peer,
            original_dst: original,
            upstream: upstream.addr,
        };
        let stats = self.telemetry.connection(&info);
        let transfer = tcp::forward(
            stream,
            upstream.stream,
            &first,
            tcp_proxy.idle_timeout,
            |dir, n| match dir {
                tcp::Direction::Upstream => stats.to_upstream(n),
                tcp::Direction::Downstream => stats.to_downstream(n),
            },
        )
        .await;
        stats.closed(transfer.end);
        match transfer.end {
            End::Closed => {}
            End::IdleTimeout => self.telemetry.error("idle_timeout"),
            End::Error => self.telemetry.error("reset"),
        }
        tracing::debug!(?info, sent = transfer.sent, received = transfer.received, end = ?transfer.end, "connection done");
    }

    fn refuse(&self, reason: &'static str, peer: SocketAddr, why: &str) {
        tracing::info!(%peer, reason, "closing connection: {why}");
        self.telemetry.error(reason);
    }
}

/// Reads the client's first bytes until the protocol is clear, the buffer is full, or
/// `timeout` passes with nothing (more) to read: then it is opaque TCP, which is what lets
/// server-first protocols through. `None` when the client closed without sending.
async fn detect_protocol(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> Option<Protocol> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut chunk = [0u8; 1024];
    loop {
        match detect::sniff(buf) {
            Sniff::Done(p) => return Some(p),
            Sniff::NeedMore => {}
        }
        let room = (detect::MAX_SNIFF - buf.len()).min(chunk.len());
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk[..room])).await {
            Err(_) => return Some(Protocol::Opaque),
            Ok(Ok(0)) => {
                return if buf.is_empty() {
                    None
                } else {
                    Some(Protocol::Opaque)
                };
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(_)) => return None,
        }
    }
}

/// Envoy's filter-chain selection: among the chains that match, the most specific wins —
/// an exact destination port over none, then the longest destination prefix, server name,
/// transport protocol, application protocol, then the longest source prefix.
pub fn choose_chain<'a>(
    listener: &'a Listener,
    facts: &ConnectionFacts,
) -> Option<&'a FilterChain> {
    let score = |chain: &FilterChain| {
        let m = &chain.matcher;
        let longest = |ranges: &[crate::snapshot::Cidr], addr: Option<SocketAddr>| -> i16 {
            match addr {
                Some(a) => ranges
                    .iter()
                    .filter(|r| r.contains(a.ip()))
                    .map(|r| i16::from(r.prefix))
                    .max()
                    .unwrap_or(-1),
                None => -1,
            }
        };
        (
            m.destination_port.is_some(),
            longest(&m.prefix_ranges, facts.original_dst),
            !m.server_names.is_empty(),
            m.transport_protocol.is_some(),
            !m.application_protocols.is_empty(),
            longest(&m.source_prefix_ranges, facts.source),
        )
    };
    let best = listener
        .filter_chains
        .iter()
        .filter(|c| c.matcher.matches(facts))
        // max_by_key keeps the last of equals; reverse so the first listed wins ties.
        .rev()
        .max_by_key(|c| score(c));
    best.or(listener.default_chain.as_ref())
}

#[cfg(test)]
#[path = "listener_tests.rs"]
mod tests;
