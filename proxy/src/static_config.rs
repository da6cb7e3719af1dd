//! The static configuration file: Skiff's own concise YAML, read into the same [`Snapshot`]
//! that the xDS translation produces, so that the proxy runs without a control plane (tests,
//! demos, simple deployments) with the same data path (spec/proxy.md, section 0, "Static
//! mode").
//!
//! The format is meant to be written by hand: a sidecar fits in a few lines (see
//! [`example`]); [`reference`] shows every key with its default. It borrows Envoy's and
//! istiod's vocabulary (listeners, filter-chain matches, clusters, `PassthroughCluster`,
//! `LEAST_REQUEST`, `raw_buffer`) so that a config dump and a static file read alike, but
//! drops what a hand-written file does not need (typed configs, RDS, EDS).
//!
//! A file is checked as a whole before anything is used, and every refusal names the key's
//! path (`listeners[2].chains[0].tcp.cluster: no cluster named "x"`) and what to write
//! instead; a malformed value also carries its line and column. Keys are camelCase, and a
//! key Skiff does not know is an error rather than silently ignored: a typo must not turn
//! into a default. Reading never panics, whatever the file holds.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{File, Metadata};
use std::io::{self, Read as _};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use thiserror::Error;

use crate::snapshot::Snapshot;

mod build;
mod clusters;
mod de;
#[cfg(test)]
mod http_tests;
mod model;
#[cfg(test)]
mod readme_tests;
mod routes;
#[cfg(test)]
mod tests;

/// skiff-init redirects outbound connections here (DESIGN.md, fixed ports).
const OUTBOUND_CAPTURE_PORT: u16 = 15001;
/// skiff-init redirects inbound connections here.
const INBOUND_CAPTURE_PORT: u16 = 15006;
/// The source addresses of inbound passthrough connections, which skiff-init's rules leave
/// alone (`-o lo -s 127.0.0.6/32 -j RETURN`, and `::6/128` for IPv6).
const INBOUND_PASSTHROUGH_BIND_V4: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
const INBOUND_PASSTHROUGH_BIND_V6: Ipv6Addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6);
/// A bound on what is read, so that a wrong path (a device, a huge log) cannot exhaust
/// memory; a sidecar's static config is a few KiB.
const MAX_FILE_BYTES: u64 = 16 << 20;
/// Ports the proxy binds for its own servers, which a listener must not take.
const RESERVED_PORTS: [(u16, &str); 5] = [
    (15000, "the proxy's admin port"),
    (15020, "the proxy's agent status port"),
    (15021, "the proxy's health port"),
    (15053, "the proxy's DNS capture port"),
    (15090, "the proxy's Prometheus port"),
];

/// Why a static config cannot be used. When a reload fails the proxy keeps its running
/// configuration and logs this message, so it says where the problem is and what to write.
#[derive(Debug, Error)]
pub enum StaticConfigError {
    #[error("cannot read the static config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// No document at all. Refused rather than read as "no listeners", so that a file
    /// caught empty while being rewritten does not tear down every listener.
    #[error(
        "static config {origin} is empty; write at least one listener (the README has an example)"
    )]
    Empty { origin: String },
    /// Not YAML, the wrong shape, an unknown key, or a value the key does not accept.
    /// `message` starts with the key's path when the parser knows it.
    #[error("static config {origin}{}: {message}", place(*line, *column))]
    Yaml {
        origin: String,
        /// 1-based, when the parser knows where the problem is.
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// Values that are well-formed on their own but do not fit together (an unknown cluster,
    /// a duplicate listener, a chain that could never be chosen).
    #[error("static config {origin}: {field}: {reason}")]
    Invalid {
        origin: String,
        /// The key's path, e.g. `listeners[2].chains[0].tcp.cluster`.
        field: String,
        reason: String,
    },
}

fn place(line: Option<usize>, column: Option<usize>) -> String {
    let mut out = String::new();
    if let (Some(line), Some(column)) = (line, column) {
        let _ = write!(out, " at line {line} column {column}");
    }
    out
}

impl StaticConfigError {
    fn from_yaml(origin: &str, error: &yaml_serde::Error) -> Self {
        let location = error.location();
        let mut message = error.to_string();
        if let Some(at) = &location {
            // The location is shown in front; drop the parser's copy of it at the end.
            let suffix = format!(" at line {} column {}", at.line(), at.column());
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_owned();
            }
        }
        Self::Yaml {
            origin: origin.to_owned(),
            line: location.as_ref().map(|l| l.line()),
            column: location.as_ref().map(|l| l.column()),
            message,
        }
    }
}

/// A parsed file: the snapshot, plus what [`Snapshot`] cannot carry yet.
#[derive(Debug)]
pub struct Parsed {
    pub snapshot: Snapshot,
    /// Per listener name, the original-destination ports whose connections skip protocol
    /// detection (chains written with `detection: false`), sorted. Only listeners that
    /// detect and have such chains are present. The data path needs these before it picks
    /// a chain, so they belong on `Listener`; until it has a field for them, they are here.
    pub detection_skip_ports: HashMap<String, Vec<u16>>,
}

/// Parses and checks a static config. `source` names the text in errors and becomes the
/// snapshot's version.
pub fn parse(text: &str, source: &str) -> Result<Snapshot, StaticConfigError> {
    parse_full(text, source).map(|p| p.snapshot)
}

/// [`parse`], keeping what [`Snapshot`] has no field for yet.
pub fn parse_full(text: &str, source: &str) -> Result<Parsed, StaticConfigError> {
    parse_as(text, source, source.to_owned())
}

fn parse_as(text: &str, origin: &str, version: String) -> Result<Parsed, StaticConfigError> {
    let value: yaml_serde::Value =
        yaml_serde::from_str(text).map_err(|e| StaticConfigError::from_yaml(origin, &e))?;
    if value.is_null() {
        return Err(StaticConfigError::Empty {
            origin: origin.to_owned(),
        });
    }
    // Parsed again from the text rather than from `value`, so that errors keep their line
    // and column.
    let doc: model::Document =
        yaml_serde::from_str(text).map_err(|e| StaticConfigError::from_yaml(origin, &e))?;
    let built = build::build(doc, version).map_err(|e| StaticConfigError::Invalid {
        origin: origin.to_owned(),
        field: e.field,
        reason: e.reason,
    })?;
    Ok(Parsed {
        snapshot: built.snapshot,
        detection_skip_ports: built.detection_skip_ports,
    })
}

/// Reads, parses and checks the file at `path`. The snapshot's version is
/// `file:<path>@<mtime>` (seconds and nanoseconds since the epoch), so the admin endpoint
/// shows which edit is running.
pub fn load(path: impl AsRef<Path>) -> Result<Snapshot, StaticConfigError> {
    load_full(path).map(|p| p.snapshot)
}

/// [`load`], keeping what [`Snapshot`] has no field for yet.
pub fn load_full(path: impl AsRef<Path>) -> Result<Parsed, StaticConfigError> {
    load_with_metadata(path.as_ref()).map(|(parsed, _)| parsed)
}

/// [`load_full`], with the metadata of the file as it was read, so that the config store
/// knows which state of the file its snapshot came from.
pub(crate) fn load_with_metadata(path: &Path) -> Result<(Parsed, Metadata), StaticConfigError> {
    let read = |source| StaticConfigError::Read {
        path: path.to_owned(),
        source,
    };
    // The version and the text come from one open file, so they agree even if the file
    // is replaced meanwhile.
    let file = File::open(path).map_err(read)?;
    let metadata = file.metadata().map_err(read)?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(read(io::Error::new(
            io::ErrorKind::InvalidData,
            "it is larger than 16 MiB, which no static config needs",
        )));
    }
    let parsed = parse_as(
        &text,
        &path.display().to_string(),
        file_version(path, &metadata),
    )?;
    Ok((parsed, metadata))
}

/// The version of a snapshot loaded from `path` with this metadata.
fn file_version(path: &Path, metadata: &Metadata) -> String {
    match metadata
        .modified()
        .ok()
        .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
    {
        Some(t) => format!(
            "file:{}@{}.{:09}",
            path.display(),
            t.as_secs(),
            t.subsec_nanos()
        ),
        None => format!("file:{}", path.display()),
    }
}

/// A sidecar's static config in a few lines, for the README: outbound capture with a
/// passthrough default and one service, inbound capture with per-port chains.
pub fn example() -> &'static str {
    EXAMPLE
}

/// Every key of the format with its default and meaning, as a config that loads.
pub fn reference() -> &'static str {
    REFERENCE
}

const EXAMPLE: &str = r#"listeners:
  - name: virtualOutbound                 # owns 0.0.0.0:15001, hands off by original destination
    address: 0.0.0.0:15001
    useOriginalDst: true
    defaultCluster: PassthroughCluster    # the catch-all chain (or BlackHoleCluster)
  - name: reviews                         # a per-service listener (bindToPort false)
    address: 10.96.0.7:9080
    tcp: {cluster: "outbound|9080||reviews.default.svc.cluster.local", idleTimeout: 1h}
  - name: virtualInbound
    address: 0.0.0.0:15006
    direction: inbound
    useOriginalDst: true
    detection: {timeout: 100ms}           # or enabled: false (per-port opt-out below)
    chains:
      - {match: {destinationPort: 9080}, tcp: {cluster: "inbound|9080||"}}
      - {match: {destinationPort: 3306}, tcp: {cluster: "inbound|3306||"}, detection: false}
    defaultCluster: InboundPassthroughCluster
clusters:
  - name: "outbound|9080||reviews.default.svc.cluster.local"
    endpoints: [10.77.0.2:9080, {address: 10.77.0.3:9080, weight: 2}]
    lbPolicy: LEAST_REQUEST               # or ROUND_ROBIN, RANDOM
    connectTimeout: 2s
  - {name: "inbound|9080||", endpoints: [127.0.0.1:9080]}
  - {name: "inbound|3306||", endpoints: [127.0.0.1:3306]}
"#;

const REFERENCE: &str = r#"# Skiff static configuration: every key, with its default.
# Keys are camelCase; an unknown key is an error. Durations: 100ms, 2s, 1.5s, 1m, 1h30m.
# Addresses are IP:port; quote IPv6 ones with brackets ("[::]:15001"). Host names are not
# resolved. Quote names that contain '|' or start with '*'.

accessLog:                             # default: none. One line per HTTP request, on stdout
  encoding: TEXT                       # default TEXT (Istio's default format), or JSON; any
                                       # case

listeners:
  # A capture listener: owns the socket skiff-init redirects outbound connections to.
  - name: virtualOutbound              # required, unique
    address: 0.0.0.0:15001             # required
    useOriginalDst: true               # default false. true: hand each connection to the
                                       # hand-off listener for its original destination
                                       # (IP:port, else 0.0.0.0:port); when there is none,
                                       # use this listener's own chains. Either way chains
                                       # match on the original destination
    bindToPort: true                   # default: the value of useOriginalDst. false: a
                                       # hand-off target, which owns no socket
    direction: outbound                # outbound (default) or inbound
    defaultCluster: PassthroughCluster # the default chain, for connections no chain matches;
                                       # short for tcp: {cluster: NAME}

  # A hand-off target for one service address.
  - name: 10.96.0.10_53
    address: 10.96.0.10:53
    tcp:                               # the default chain (here: every connection)
      cluster: "outbound|53||kube-dns.kube-system.svc.cluster.local"
                                       # or weightedClusters: [{name, weight}], picked per
                                       # connection in proportion to the weights
      idleTimeout: 1h                  # default 1h: close after this long without traffic
      statPrefix: kube-dns             # default: the cluster's name (the listener's when
                                       # weighted)

  # A hand-off target for every address on port 9080.
  - name: 0.0.0.0_9080
    address: 0.0.0.0:9080
    detection:                         # sniff the first bytes (TLS ClientHello, HTTP request)
                                       # before choosing a chain. `detection: false` is short
                                       # for {enabled: false}
      enabled: true                    # default: true when a chain matches on
                                       # transportProtocol, applicationProtocols or
                                       # serverNames (what only sniffing can tell), else
                                       # false. Undetected connections count as raw_buffer
                                       # with no ALPN and no SNI
      timeout: 100ms                   # default 100ms; then the connection is opaque TCP, so
                                       # server-first protocols work
    chains:                            # the most specific chain that matches wins (Envoy's
                                       # order: destinationPort, longest prefixRanges,
                                       # serverNames, transportProtocol,
                                       # applicationProtocols, longest sourcePrefixRanges);
                                       # of equals, the first listed. No two chains may have
                                       # the same match
      - name: http                     # default "chains[<index>]"
        match:                         # every key written must match; {} matches everything
          transportProtocol: raw_buffer          # raw_buffer or tls
          applicationProtocols: [http/1.1, h2c]  # the detected HTTP version, or TLS ALPN
        http:                          # exactly one of tcp and http
          statPrefix: outbound_9080    # default: the listener's name
          useRemoteAddress: false      # default false: trust the client's x-forwarded-for.
                                       # true at the edge: append the peer's address to it
                                       # and set x-forwarded-proto
          streamIdleTimeout: 5m        # default 5m: end a request with no bytes moving
                                       # either way for this long (408, or a reset once the
                                       # response has started); 0s: never
          virtualHosts:                # chosen by the request's authority
            - name: reviews            # default: its first domain
              domains: [reviews, "reviews:9080", reviews.default.svc.cluster.local]
                                       # default ["*"]; one * at the start or the end is a
                                       # wildcard; a domain belongs to one virtual host
              retryPolicy: {retryOn: connect-failure}  # for routes that set none
              includeRequestAttemptCount: true  # default false: send x-envoy-attempt-count
                                       # upstream (1, then 2 on the first retry...); not in
                                       # the routes short form
              routes:                  # tried in order, the first that matches wins: put
                                       # longer prefixes first
                - name: dev            # default: the path (prefix, path or regex) matched
                  match:               # every key written must match
                    prefix: /          # one of: prefix (default /; on the path with its
                                       # query), path (exact, without the query), regex
                                       # (RE2 syntax, the whole path without the query),
                                       # pathSeparatedPrefix (/api: /api and /api/...)
                    caseSensitive: true          # default true; not for regex (use (?i))
                    headers:           # one of exact, prefix, suffix, contains, regex
                                       # (whole value), present (true/false) each; several
                                       # values are joined with ","; :authority, :method
                                       # and :path work too
                      - {name: cookie, regex: ".*group=dev.*"}
                      - {name: x-canary, present: true, invert: true}  # invert default false
                    queryParameters:   # as headers (first value, undecoded), no invert;
                                       # present: true only
                      - {name: debug, exact: "1"}
                  route:               # or directResponse: {status: 404, body: TEXT}
                    cluster: "outbound|9080|v2|reviews.default.svc.cluster.local"
                                       # or weightedClusters: [{name, weight}], picked per
                                       # request in proportion to the weights
                    prefixRewrite: /   # replaces the matched prefix (or exact path); not
                                       # after a regex match
                                       # or regexRewrite: {pattern: "^/v1/(.*)", substitution:
                                       # "/\\1"}: every match in the path, RE2's \\1 groups
                    hostRewrite: reviews.internal  # the upstream Host / :authority
                    timeout: 15s       # default 15s; 0s: no timeout
                    retryPolicy:       # default: the virtual host's (this replaces it whole)
                      retryOn: "5xx,connect-failure,retriable-status-codes"
                                       # required: 5xx, gateway-error, reset,
                                       # connect-failure, refused-stream, retriable-4xx,
                                       # retriable-status-codes, and gRPC's cancelled,
                                       # deadline-exceeded, internal, resource-exhausted,
                                       # unavailable
                      numRetries: 2    # default 1
                      perTryTimeout: 2s                  # default: the route's timeout
                      retriableStatusCodes: [503]        # with retriable-status-codes only
                      retryHostPredicate: [previous_hosts]  # retry on another endpoint
                      backoff: {baseInterval: 25ms, maxInterval: 250ms}
                                       # the defaults; maxInterval defaults to 10x base
                  requestHeadersToAdd: [{name: x-route, value: dev, append: false}]
                                       # append default true (add a value); false replaces.
                                       # Also requestHeadersToRemove: [NAME],
                                       # responseHeadersToAdd, responseHeadersToRemove; on
                                       # routes, virtual hosts and http (the whole table)
                - prefix: /v2/         # the short form: prefix (default /) and
                  weightedClusters:    # cluster: NAME or weightedClusters
                    - {name: "outbound|9080|v2|reviews.default.svc.cluster.local", weight: 90}
                    - {name: "outbound|9080|v3|reviews.default.svc.cluster.local", weight: 10}
                - {prefix: /, cluster: "outbound|9080|v1|reviews.default.svc.cluster.local"}
            - domains: ["*"]
              routes: [{cluster: PassthroughCluster}]
      - name: tls
        match:
          transportProtocol: tls
          serverNames: [reviews.default.svc.cluster.local]   # the ClientHello's SNI
        tcp: {cluster: "outbound|9080|v1|reviews.default.svc.cluster.local"}
    tcp: {cluster: PassthroughCluster} # the default chain: one of tcp, http, defaultCluster

  # The inbound capture listener. Like Istio's, it hands nothing off: it chooses among
  # its own chains by each connection's original destination.
  - name: virtualInbound
    address: 0.0.0.0:15006
    direction: inbound
    bindToPort: true
    detection: {timeout: 100ms}
    chains:
      - match:
          destinationPort: 9080                        # the original destination's port
          prefixRanges: [10.0.0.0/8, "fd00::/8"]       # the original destination's address
          sourcePrefixRanges: [10.0.0.0/8, "fd00::/8"] # the peer's address
        http:
          routes: [{cluster: "inbound|9080||"}]        # short for one virtual host with
                                                       # domains ["*"]
      - match: {destinationPort: 3306}
        detection: false               # connections to this port skip detection (server-first
                                       # protocols such as MySQL); needs destinationPort
        tcp: {cluster: "inbound|3306||"}
    defaultCluster: InboundPassthroughCluster

clusters:
  - name: "outbound|53||kube-dns.kube-system.svc.cluster.local"   # required, unique
    type: STATIC                       # STATIC (default): the endpoints below.
                                       # ORIGINAL_DST: each connection's original destination.
                                       # BLACK_HOLE: refuse every connection
    endpoints:                         # required for STATIC, refused for the others
      - 10.244.0.5:53                  # weight 1
      - {address: 10.244.0.6:53, weight: 2}
    lbPolicy: LEAST_REQUEST            # default LEAST_REQUEST (Istio's LEAST_CONN is the
                                       # same); ROUND_ROBIN, RANDOM. STATIC clusters only
    connectTimeout: 10s                # default 10s
    upstreamBind: 10.244.0.9           # default none: the source address of upstream
                                       # connections (not for BLACK_HOLE)
  - name: "outbound|9080|v1|reviews.default.svc.cluster.local"
    endpoints: [10.244.1.2:9080]
    protocol: HTTP2                    # default DOWNSTREAM: requests from HTTP chains go to
                                       # the endpoints in the client's HTTP version; HTTP1;
                                       # HTTP2 (h2c, prior knowledge). This key and the two
                                       # below are not for BLACK_HOLE
    httpIdleTimeout: 4s                # default 4s: close pooled HTTP connections unused this
                                       # long (under the apps' usual 5s keep-alive)
    retryBudget:                       # retries in flight may be at most budgetPercent of the
                                       # requests in flight, but always minRetryConcurrency
      budgetPercent: 20                # default 20; from 0 to 100, fractions allowed
      minRetryConcurrency: 3           # default 3
  - {name: "outbound|9080|v2|reviews.default.svc.cluster.local", endpoints: [10.244.1.3:9080]}
  - {name: "outbound|9080|v3|reviews.default.svc.cluster.local", endpoints: [10.244.1.4:9080]}
  - {name: "inbound|9080||", endpoints: [127.0.0.1:9080]}
  - {name: "inbound|3306||", endpoints: [127.0.0.1:3306], connectTimeout: 2s}
  # Built in, unless a cluster of the same name is defined:
  #   PassthroughCluster         type: ORIGINAL_DST
  #   InboundPassthroughCluster  type: ORIGINAL_DST, upstreamBind: 127.0.0.6
  #   BlackHoleCluster           type: BLACK_HOLE
"#;
