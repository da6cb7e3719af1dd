//! The router: one request from arrival to response. It picks the virtual host, route and
//! cluster, prepares the upstream request, and runs the attempts — each to an endpoint
//! over a pooled connection, under the per-try and route timeouts, retried by the route's
//! policy within the cluster's retry budget — then hands the response back with its body
//! wrapped for the timers and the request's record.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use tokio::time::Instant;

use super::body::{InFlight, ResponseBody, Timers, full, local_reply};
use super::headers::{self, X_ENVOY_ORIGINAL_PATH, X_ENVOY_UPSTREAM_SERVICE_TIME};
use super::outgoing::{Outgoing, bind_for, choose_endpoint, idempotent, upstream_version};
use super::pool::{Pools, SendError, Sent, Target};
use super::record::{Record, Sink};
use super::replay::{DEFAULT_REPLAY_LIMIT, Replay};
use super::retry::{self, Attempt};
use super::{ProxyBody, upgrade};
use crate::metrics::{RequestProtocol, ResponseFlags};
use crate::route::{self, RequestFacts, Route, RouteAction, RouteTable, VirtualHost, pick_cluster};
use crate::snapshot::{Cluster, Direction, Snapshot};

/// The running configuration, read again for every request.
pub type Snapshots = Arc<dyn Fn() -> Arc<Snapshot> + Send + Sync>;

/// What every request of one downstream connection shares.
pub struct Conn {
    pub pools: Arc<Pools>,
    pub sink: Arc<Sink>,
    /// Each request takes the configuration current when it arrives, as Envoy applies a
    /// new route table to the next request: a keep-alive or HTTP/2 connection that lives
    /// for hours still follows a canary shift.
    pub snapshots: Snapshots,
    /// The chain's route table: looked up by name in each request's snapshot, falling back
    /// to the table the chain carried inline. With neither, every request gets 404 `NR`,
    /// as Envoy answers before RDS arrives.
    pub route_name: String,
    pub inline_table: Option<Arc<RouteTable>>,
    pub direction: Direction,
    /// Envoy's `use_remote_address`.
    pub edge: bool,
    pub stream_idle: Option<Duration>,
    pub peer: SocketAddr,
    pub original_dst: SocketAddr,
}

const NO_HEALTHY_UPSTREAM: &str = "no healthy upstream";
const CONNECT_FAILED: &str =
    "upstream connect error or disconnect/reset before headers. reset reason: connection failure";
const CONNECTION_TERMINATED: &str = "upstream connect error or disconnect/reset before headers. reset reason: connection termination";
const TIMED_OUT: &str = "upstream request timeout";

/// The proxy's answer to one request. Never fails: every problem is a response.
pub async fn handle(conn: Arc<Conn>, mut request: Request<Incoming>) -> Response<ProxyBody> {
    let protocol = if headers::is_grpc(request.headers()) {
        RequestProtocol::Grpc
    } else {
        RequestProtocol::Http
    };
    let mut record = Record::new(conn.sink.clone(), conn.direction, protocol);
    let authority = authority_of(&request);
    let path = request
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
    headers::ensure_request_id(request.headers_mut());
    if record.logging() {
        let (req, conn) = (&request, &conn);
        record.with_log(|e| {
            let text = |name: &str| {
                req.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            e.method = Some(req.method().to_string());
            e.path = Some(path.clone());
            e.protocol = Some(version_name(req.version()).to_owned());
            e.x_forwarded_for = text("x-forwarded-for");
            e.user_agent = text("user-agent");
            e.request_id = text("x-request-id");
            e.authority = Some(authority.clone()).filter(|a| !a.is_empty());
            e.downstream_local_address = Some(conn.original_dst);
            e.downstream_remote_address = Some(conn.peer);
        });
    }
    let snapshot = (conn.snapshots)();
    let table = snapshot
        .routes
        .get(&conn.route_name)
        .or(conn.inline_table.as_ref());
    // CONNECT only matches routes made for it, which Skiff does not offer (Envoy's rule).
    let chosen = match (table, request.method() == Method::CONNECT) {
        (Some(table), false) => choose(table, &request, &authority, &path),
        _ => None,
    };
    let Some((table, vhost, route)) = chosen else {
        return reply(
            record,
            StatusCode::NOT_FOUND,
            "",
            ResponseFlags::NO_ROUTE_FOUND,
            "route_not_found",
        );
    };
    record.with_log(|e| e.route_name = Some(route.name.clone()).filter(|n| !n.is_empty()));
    let (choice, host_rewrite) = match &route.action {
        RouteAction::DirectResponse { status, body } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            record.response_code = status.as_u16();
            record.details = "direct_response";
            let mut response = Response::new(full(body.clone()));
            *response.status_mut() = status;
            return finish(response, record, Timers::none(), None);
        }
        RouteAction::Cluster {
            cluster,
            host_rewrite,
            ..
        } => (cluster, host_rewrite.as_deref()),
    };
    let cluster_name = pick_cluster(choice, crate::balance::random_u64());
    record.cluster = cluster_name.map(Arc::from);
    let Some(cluster) = cluster_name.and_then(|n| snapshot.cluster(n)) else {
        return reply(
            record,
            StatusCode::SERVICE_UNAVAILABLE,
            "",
            ResponseFlags::NO_CLUSTER_FOUND,
            "cluster_not_found",
        );
    };

    let upgrade = request.version() == Version::HTTP_11 && headers::is_upgrade(request.headers());
    let mut parts_headers = std::mem::take(request.headers_mut());
    headers::strip_hop_by_hop(&mut parts_headers, upgrade);
    headers::set_forwarded(&mut parts_headers, conn.peer.ip(), "http", conn.edge);
    for level in [&route.headers, &vhost.headers, &table.headers] {
        headers::mutate_request(&mut parts_headers, level);
    }
    let upstream_path = match route::rewrite_path(route, &path) {
        Some(rewritten) => {
            if let Ok(original) = HeaderValue::from_str(&path) {
                parts_headers.insert(X_ENVOY_ORIGINAL_PATH, original);
            }
            rewritten
        }
        None => path.clone(),
    };
    let version = if upgrade {
        Version::HTTP_11
    } else {
        upstream_version(cluster.protocol, request.version())
    };
    let upstream_authority = host_rewrite.unwrap_or(&authority);
    let mut outgoing = match Outgoing::new(
        request.method().clone(),
        version,
        upstream_authority,
        &upstream_path,
        parts_headers,
    ) {
        Ok(o) => o,
        Err(err) => {
            tracing::debug!("{err}");
            return reply(
                record,
                StatusCode::BAD_REQUEST,
                "",
                ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR,
                "invalid_authority",
            );
        }
    };
    outgoing.count_attempts = vhost.include_request_attempt_count;

    let in_flight = InFlight::new(cluster.clone());
    if upgrade {
        let on_upgrade = hyper::upgrade::on(&mut request);
        // Boxed: rare, and its state would otherwise enlarge every request's future.
        return Box::pin(upgrade::forward(
            &conn, cluster, outgoing, on_upgrade, record, in_flight,
        ))
        .await;
    }
    let replay = Replay::new(request.into_body(), DEFAULT_REPLAY_LIMIT);
    let attempts = Attempts {
        conn: &conn,
        cluster,
        route,
        policy: route.retry_policy(vhost),
        outgoing: &outgoing,
        replay: &replay,
    };
    let (result, in_flight, deadline) = attempts.run(&mut record, in_flight).await;
    record.request_bytes = replay.received();
    match result {
        Ok((sent, sent_at)) => {
            let timers = Timers {
                deadline,
                idle: conn.stream_idle,
            };
            respond(
                sent,
                sent_at,
                [&route.headers, &vhost.headers, &table.headers],
                record,
                timers,
                in_flight,
            )
        }
        Err(failure) => fail(record, failure),
    }
}

/// The route table entry for a request: virtual host by authority, then the first route
/// that matches.
fn choose<'a>(
    table: &'a Arc<RouteTable>,
    request: &Request<Incoming>,
    authority: &str,
    path: &str,
) -> Option<(&'a RouteTable, &'a VirtualHost, &'a Route)> {
    let vhost = route::select_virtual_host(table, authority)?;
    let facts = RequestFacts {
        method: request.method().as_str(),
        path,
        authority,
        headers: request.headers(),
    };
    let route = route::select_route(vhost, &facts)?;
    Some((table, vhost, route))
}

/// `:authority` for HTTP/2 and absolute-form targets, else `Host`.
fn authority_of(request: &Request<Incoming>) -> String {
    if let Some(a) = request.uri().authority() {
        return a.as_str().to_owned();
    }
    request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/1.1",
    }
}

/// Why no upstream response is forwarded.
#[derive(Debug, Clone, Copy)]
pub(super) enum Failure {
    NoHealthyUpstream,
    Connect {
        exhausted: bool,
    },
    Reset {
        stream: bool,
        exhausted: bool,
    },
    PerTryTimeout {
        exhausted: bool,
    },
    RouteTimeout,
    /// The endpoint needs TLS, which Skiff does not originate yet (never sent in plaintext).
    TlsRequired,
    /// The stream idle timeout fired before the response; `request_done` tells whether the
    /// client was still sending (408) or the upstream still thinking (504).
    Idle {
        request_done: bool,
    },
}

impl Failure {
    fn reply(self) -> (StatusCode, &'static str, ResponseFlags, &'static str) {
        let urx = |exhausted: bool| {
            if exhausted {
                ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED
            } else {
                ResponseFlags::NONE
            }
        };
        match self {
            Failure::NoHealthyUpstream => (
                StatusCode::SERVICE_UNAVAILABLE,
                NO_HEALTHY_UPSTREAM,
                ResponseFlags::NO_HEALTHY_UPSTREAM,
                "no_healthy_upstream",
            ),
            Failure::TlsRequired => (
                StatusCode::SERVICE_UNAVAILABLE,
                CONNECT_FAILED,
                ResponseFlags::UPSTREAM_CONNECTION_FAILURE,
                "upstream_tls_not_supported",
            ),
            Failure::Connect { exhausted } => (
                StatusCode::SERVICE_UNAVAILABLE,
                CONNECT_FAILED,
                ResponseFlags::UPSTREAM_CONNECTION_FAILURE | urx(exhausted),
                "upstream_reset_before_response_started{connection_failure}",
            ),
            Failure::Reset { stream, exhausted } => (
                StatusCode::SERVICE_UNAVAILABLE,
                CONNECTION_TERMINATED,
                if stream {
                    ResponseFlags::UPSTREAM_REMOTE_RESET
                } else {
                    ResponseFlags::UPSTREAM_CONNECTION_TERMINATION
                } | urx(exhausted),
                "upstream_reset_before_response_started{connection_termination}",
            ),
            Failure::PerTryTimeout { exhausted } => (
                StatusCode::GATEWAY_TIMEOUT,
                TIMED_OUT,
                ResponseFlags::UPSTREAM_REQUEST_TIMEOUT | urx(exhausted),
                "upstream_per_try_timeout",
            ),
            Failure::RouteTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                TIMED_OUT,
                ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
                "upstream_response_timeout",
            ),
            Failure::Idle { request_done } => (
                if request_done {
                    StatusCode::GATEWAY_TIMEOUT
                } else {
                    StatusCode::REQUEST_TIMEOUT
                },
                "stream timeout",
                ResponseFlags::STREAM_IDLE_TIMEOUT,
                "stream_idle_timeout",
            ),
        }
    }
}

/// One request's attempts.
struct Attempts<'a> {
    conn: &'a Conn,
    cluster: &'a Arc<Cluster>,
    route: &'a Route,
    policy: Option<&'a crate::route::RetryPolicy>,
    outgoing: &'a Outgoing,
    replay: &'a Replay,
}

/// A retry in flight, counted against the cluster's retry budget.
struct RetryInFlight(Arc<Cluster>);

impl RetryInFlight {
    fn start(cluster: &Arc<Cluster>) -> Option<RetryInFlight> {
        let load = &cluster.load;
        let requests = load.requests.load(std::sync::atomic::Ordering::Relaxed);
        let retries = load.retries.load(std::sync::atomic::Ordering::Relaxed);
        if !retry::budget_allows(&cluster.retry_budget, requests, retries) {
            return None;
        }
        load.retries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(RetryInFlight(cluster.clone()))
    }
}

impl Drop for RetryInFlight {
    fn drop(&mut self) {
        self.0
            .load
            .retries
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

type AttemptsResult = (Result<(Sent, Instant), Failure>, InFlight, Option<Instant>);

impl Attempts<'_> {
    /// Runs attempts until a response to forward or a failure to report. Also returns the
    /// route deadline, when it has started, for the response body.
    async fn run(&self, record: &mut Record, mut in_flight: InFlight) -> AttemptsResult {
        let timeout = self.route.effective_timeout();
        // Envoy's route timeout counts from the end of the request.
        let deadline = OnceLock::new();
        let route_timer = async {
            match timeout {
                None => std::future::pending::<()>().await,
                Some(t) => {
                    self.replay.complete().await;
                    let at = *deadline.get_or_init(|| Instant::now() + t);
                    tokio::time::sleep_until(at).await;
                }
            }
        };
        tokio::pin!(route_timer);
        let idle = idle_watch(self.replay, self.conn.stream_idle);
        tokio::pin!(idle);

        let max_attempts = 1 + self.policy.map_or(0, |p| p.num_retries);
        let avoid_tried = self
            .policy
            .is_some_and(|p| p.retry_host_predicate_previous_hosts);
        let per_try = self.policy.and_then(|p| p.per_try_timeout);
        let mut tried: Vec<usize> = Vec::new();
        let mut attempt = 0u32;
        let mut spare_resend = true;
        let mut _retrying: Option<RetryInFlight> = None;
        let result = loop {
            attempt += 1;
            let Some(body) = self.replay.attempt() else {
                // Only reached after a failure whose body can no longer be replayed.
                break Err(Failure::Reset {
                    stream: false,
                    exhausted: false,
                });
            };
            let Some((addr, index)) =
                choose_endpoint(self.cluster, self.conn.original_dst, &tried, avoid_tried)
            else {
                break Err(Failure::NoHealthyUpstream);
            };
            if self.cluster.needs_tls(index) {
                break Err(Failure::TlsRequired);
            }
            in_flight.at_endpoint(index);
            tried.extend(index);
            let target = Target {
                addr,
                version: self.outgoing.version,
                bind: bind_for(self.cluster, addr),
                connect_timeout: self.cluster.connect_timeout,
                idle_timeout: self.cluster.http_idle_timeout,
            };
            let request = self
                .outgoing
                .build(body.map_err(Into::into).boxed_unsync(), attempt);
            let sent_at = Instant::now();
            // Boxed, so that the pool's state is not copied along with this future's.
            let send = Box::pin(self.conn.pools.send(&target, request));
            let send = async {
                match per_try {
                    Some(t) => tokio::time::timeout(t, send).await.ok(),
                    None => Some(send.await),
                }
            };
            let outcome = tokio::select! {
                outcome = send => outcome,
                _ = &mut route_timer => break Err(Failure::RouteTimeout),
                request_done = &mut idle => break Err(Failure::Idle { request_done }),
            };
            record.upstream(addr, None);
            let last = attempt >= max_attempts;
            let (what, failure) = match &outcome {
                Some(Ok(sent)) => (
                    Attempt::Response {
                        status: sent.response.status().as_u16(),
                        headers: sent.response.headers(),
                    },
                    None,
                ),
                Some(Err(SendError::Connect(err))) => {
                    tracing::debug!(cluster = %self.cluster.name, "{err}");
                    (
                        Attempt::ConnectFailure,
                        Some(Failure::Connect { exhausted: false }),
                    )
                }
                Some(Err(SendError::Reset {
                    refused_stream,
                    reused,
                    source,
                })) => {
                    tracing::debug!(cluster = %self.cluster.name, reused, "upstream reset: {source}");
                    // A pooled connection the server closed just as the request went out:
                    // resend an idempotent request once on a fresh connection, whatever
                    // the policy (what browsers and Go's client do for keep-alive races).
                    if *reused
                        && spare_resend
                        && idempotent(&self.outgoing.method)
                        && self.replay.replayable()
                    {
                        spare_resend = false;
                        attempt -= 1;
                        continue;
                    }
                    (
                        Attempt::Reset {
                            refused_stream: *refused_stream,
                        },
                        Some(Failure::Reset {
                            stream: *refused_stream,
                            exhausted: false,
                        }),
                    )
                }
                None => (
                    Attempt::PerTryTimeout,
                    Some(Failure::PerTryTimeout { exhausted: false }),
                ),
            };
            let retriable = self.policy.is_some_and(|p| retry::retriable(p, what));
            let retry = retriable && !last && self.replay.replayable();
            let budget = if retry {
                RetryInFlight::start(self.cluster)
            } else {
                None
            };
            if budget.is_none() {
                let exhausted = retriable && last;
                break match (outcome, failure) {
                    (Some(Ok(sent)), _) => {
                        if exhausted {
                            record.flags |= ResponseFlags::UPSTREAM_RETRY_LIMIT_EXCEEDED;
                        }
                        if let Some(local) = sent.local {
                            record.upstream(addr, Some(local));
                        }
                        Ok((sent, sent_at))
                    }
                    (_, Some(failure)) => Err(failure.exhausted(exhausted)),
                    (_, None) => Err(Failure::NoHealthyUpstream),
                };
            }
            _retrying = budget;
            drop(outcome);
            if let Some(policy) = self.policy {
                let wait = retry::backoff(policy, attempt, crate::balance::random_u64());
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = &mut route_timer => break Err(Failure::RouteTimeout),
                }
            }
        };
        (result, in_flight, deadline.get().copied())
    }
}

impl Failure {
    fn exhausted(self, exhausted: bool) -> Failure {
        match self {
            Failure::Connect { .. } => Failure::Connect { exhausted },
            Failure::Reset { stream, .. } => Failure::Reset { stream, exhausted },
            Failure::PerTryTimeout { .. } => Failure::PerTryTimeout { exhausted },
            other => other,
        }
    }
}

/// Resolves when the client has sent nothing for `period` while the proxy still waits for
/// a response head, with whether the client's body had ended. Checked once a period, so it
/// fires between one and two periods after the last byte: coarse, but free of per-byte work.
async fn idle_watch(replay: &Replay, period: Option<Duration>) -> bool {
    let Some(period) = period else {
        return std::future::pending().await;
    };
    let mut seen = replay.received();
    loop {
        tokio::time::sleep(period).await;
        let now = replay.received();
        if now == seen {
            return replay.is_complete();
        }
        seen = now;
    }
}

/// The upstream's response, passed on: hop-by-hop headers dropped, the route's response
/// header mutations applied, `x-envoy-upstream-service-time` added.
fn respond(
    sent: Sent,
    sent_at: Instant,
    levels: [&crate::route::HeaderMutations; 3],
    mut record: Record,
    timers: Timers,
    in_flight: InFlight,
) -> Response<ProxyBody> {
    let (mut parts, body) = sent.response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, false);
    for level in levels {
        headers::mutate_response(&mut parts.headers, level);
    }
    let service_ms = sent_at.elapsed().as_millis() as u64;
    parts
        .headers
        .insert(X_ENVOY_UPSTREAM_SERVICE_TIME, HeaderValue::from(service_ms));
    record.response_code = parts.status.as_u16();
    record.grpc_status = retry::grpc_status(&parts.headers);
    record.details = "via_upstream";
    record.with_log(|e| e.upstream_service_time = Some(service_ms.to_string()));
    let body = body.map_err(Into::into).boxed_unsync();
    finish(
        Response::from_parts(parts, body),
        record,
        timers,
        Some(in_flight),
    )
}

fn finish(
    response: Response<ProxyBody>,
    record: Record,
    timers: Timers,
    in_flight: Option<InFlight>,
) -> Response<ProxyBody> {
    let (parts, body) = response.into_parts();
    let body = ResponseBody::new(body, record, timers, in_flight);
    Response::from_parts(parts, body.boxed_unsync())
}

/// A response the proxy makes itself, recorded with its flags.
pub(super) fn reply(
    mut record: Record,
    status: StatusCode,
    text: &'static str,
    flags: ResponseFlags,
    details: &'static str,
) -> Response<ProxyBody> {
    record.response_code = status.as_u16();
    record.flags |= flags;
    record.details = details;
    let (parts, bytes) = local_reply(status, text).into_parts();
    finish(
        Response::from_parts(parts, full(bytes)),
        record,
        Timers::none(),
        None,
    )
}

/// The local reply for a failure to get an upstream response.
pub(super) fn fail(record: Record, failure: Failure) -> Response<ProxyBody> {
    let (status, text, flags, details) = failure.reply();
    reply(record, status, text, flags, details)
}
