//! Istio's request metrics: `istio_requests_total`, `istio_request_duration_milliseconds`,
//! `istio_request_bytes` and `istio_response_bytes`, with the labels Istio's stats plugin
//! writes, and Envoy's response flags that one of those labels carries.
//!
//! The label set of a request is the connection's labels ([`TcpLabels`]) plus four values
//! known only when the request ends: protocol, response code, response flags and gRPC status.
//! Building and hashing that set for every request would cost an allocation-free but
//! lock-taking family lookup per metric, so the HTTP layer instead takes one
//! [`RequestMetricsFamily`] per (route or cluster, direction) and calls
//! [`RequestMetricsFamily::record`] per request: the handle keeps a small copy-on-write cache
//! of the series it has seen, keyed by those four small values, read without a lock and
//! without allocating. Only the first request with a new combination takes a mutex and
//! allocates.
//!
//! Buckets: Istio's stats plugin defines these histograms without buckets of its own, so
//! they get Envoy's default histogram buckets (`0.5, 1, 5, … 3600000`, see
//! [`DURATION_BUCKETS`]) for durations *and* byte sizes alike, unless a pod sets the
//! `sidecar.istio.io/statsHistogramBuckets` annotation. Dashboards written against Istio
//! expect exactly those `le` values, so Skiff uses them too.

use std::fmt;
use std::ops::{BitOr, BitOrAssign};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::TcpLabels;

#[cfg(test)]
mod tests;

/// Envoy's default histogram buckets, which Istio's request-duration histogram inherits
/// (milliseconds).
pub const DURATION_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// The buckets of `istio_request_bytes` and `istio_response_bytes`: the same Envoy defaults
/// as [`DURATION_BUCKETS`], read as bytes. (Not powers of ten: Istio configures no byte
/// buckets, and real Istio scrapes show `le="0.5"` … `le="3.6e+06"` for the byte
/// histograms.) A separate constant so the two can diverge if Skiff ever honours
/// `statsHistogramBuckets`.
pub const BYTES_BUCKETS: [f64; 19] = DURATION_BUCKETS;

/// More distinct (protocol, code, flags, gRPC status) combinations than this per handle are
/// still counted, but through the family's own lookup instead of the cache. Bounds the
/// handle's memory when an upstream answers with many odd codes; real routes see a handful.
const CACHE_CAPACITY: usize = 32;

/// Istio's `request_protocol` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestProtocol {
    Http,
    Grpc,
}

impl RequestProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestProtocol::Http => "http",
            RequestProtocol::Grpc => "grpc",
        }
    }
}

impl EncodeLabelValue for RequestProtocol {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Envoy's response flags, a set of reasons why a request did not simply succeed (`UH`: no
/// healthy upstream, `UT`: timeout, …). A bitset rather than a `Vec` so that it is `Copy`,
/// hashes cheaply as part of a cache key and never allocates.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ResponseFlags(u32);

macro_rules! response_flags {
    ($($(#[doc = $doc:literal])* $name:ident = $bit:literal, $short:literal;)*) => {
        impl ResponseFlags {
            $(
                $(#[doc = $doc])*
                pub const $name: ResponseFlags = ResponseFlags(1 << $bit);
            )*
        }

        /// Every flag with its short name, in the order Envoy prints them.
        const FLAG_NAMES: &[(ResponseFlags, &str)] = &[$((ResponseFlags::$name, $short)),*];
    };
}

// Envoy's order (`ResponseFlagUtils::ALL_RESPONSE_STRINGS_FLAGS`), which is also the order
// `%RESPONSE_FLAGS%` and the `response_flags` label list them in.
response_flags! {
    /// LH: the local health check of the upstream failed.
    FAILED_LOCAL_HEALTH_CHECK = 0, "LH";
    /// UH: no healthy upstream endpoint.
    NO_HEALTHY_UPSTREAM = 1, "UH";
    /// UT: the upstream request timed out.
    UPSTREAM_REQUEST_TIMEOUT = 2, "UT";
    /// LR: the proxy reset the stream itself.
    LOCAL_RESET = 3, "LR";
    /// UR: the upstream reset the stream.
    UPSTREAM_REMOTE_RESET = 4, "UR";
    /// UF: connecting to the upstream failed.
    UPSTREAM_CONNECTION_FAILURE = 5, "UF";
    /// UC: the upstream connection ended mid-request.
    UPSTREAM_CONNECTION_TERMINATION = 6, "UC";
    /// UO: upstream overflow (circuit breaking).
    UPSTREAM_OVERFLOW = 7, "UO";
    /// NR: no route matched (or no filter chain matched a connection).
    NO_ROUTE_FOUND = 8, "NR";
    /// DI: the request was delayed by fault injection.
    DELAY_INJECTED = 9, "DI";
    /// FI: the request was aborted by fault injection.
    FAULT_INJECTED = 10, "FI";
    /// RL: rate limited.
    RATE_LIMITED = 11, "RL";
    /// UAEX: denied by the external authorization service.
    UNAUTHORIZED_EXTERNAL_SERVICE = 12, "UAEX";
    /// RLSE: the rate limit service failed.
    RATELIMIT_SERVICE_ERROR = 13, "RLSE";
    /// DC: the downstream connection ended mid-request.
    DOWNSTREAM_CONNECTION_TERMINATION = 14, "DC";
    /// URX: retries or connect attempts were exhausted.
    UPSTREAM_RETRY_LIMIT_EXCEEDED = 15, "URX";
    /// SI: the stream idle timeout fired.
    STREAM_IDLE_TIMEOUT = 16, "SI";
    /// IH: invalid `x-envoy-*` request headers.
    INVALID_ENVOY_REQUEST_HEADERS = 17, "IH";
    /// DPE: the downstream request had an HTTP protocol error.
    DOWNSTREAM_PROTOCOL_ERROR = 18, "DPE";
    /// UMSDR: the upstream request reached its maximum stream duration.
    UPSTREAM_MAX_STREAM_DURATION_REACHED = 19, "UMSDR";
    /// RFCF: answered from the cache filter.
    RESPONSE_FROM_CACHE_FILTER = 20, "RFCF";
    /// NFCF: a filter's configuration was missing.
    NO_FILTER_CONFIG_FOUND = 21, "NFCF";
    /// DT: the request exceeded its maximum duration.
    DURATION_TIMEOUT = 22, "DT";
    /// UPE: the upstream response had an HTTP protocol error.
    UPSTREAM_PROTOCOL_ERROR = 23, "UPE";
    /// NC: the route's cluster does not exist.
    NO_CLUSTER_FOUND = 24, "NC";
    /// OM: terminated by the overload manager.
    OVERLOAD_MANAGER = 25, "OM";
    /// DF: DNS resolution of the upstream failed.
    DNS_RESOLUTION_FAILED = 26, "DF";
    /// DO: dropped by the drop-overload policy.
    DROP_OVERLOAD = 27, "DO";
    /// DR: the downstream reset the stream.
    DOWNSTREAM_REMOTE_RESET = 28, "DR";
    /// UDO: dropped unconditionally by the drop-overload policy.
    UNCONDITIONAL_DROP_OVERLOAD = 29, "UDO";
}

/// A response-flags string that names a flag Envoy does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown response flag {0:?}")]
pub struct UnknownResponseFlag(pub String);

impl ResponseFlags {
    /// No flag: a plain response, printed `-`.
    pub const NONE: ResponseFlags = ResponseFlags(0);

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub const fn contains(self, other: ResponseFlags) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn union(self, other: ResponseFlags) -> ResponseFlags {
        ResponseFlags(self.0 | other.0)
    }

    pub fn insert(&mut self, other: ResponseFlags) {
        self.0 |= other.0;
    }

    /// The short names of the flags set, in Envoy's order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        FLAG_NAMES
            .iter()
            .filter(move |(flag, _)| self.contains(*flag))
            .map(|(_, name)| *name)
    }
}

impl BitOr for ResponseFlags {
    type Output = ResponseFlags;

    fn bitor(self, rhs: ResponseFlags) -> ResponseFlags {
        self.union(rhs)
    }
}

impl BitOrAssign for ResponseFlags {
    fn bitor_assign(&mut self, rhs: ResponseFlags) {
        self.insert(rhs);
    }
}

/// As Envoy prints `%RESPONSE_FLAGS%`: `-` when empty, else the short names joined by commas.
impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        for (i, name) in self.names().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

impl fmt::Debug for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResponseFlags({self})")
    }
}

/// Parses what [`Display`](fmt::Display) prints (`-`, `UH`, `UF,URX`), in any order.
impl FromStr for ResponseFlags {
    type Err = UnknownResponseFlag;

    fn from_str(s: &str) -> Result<ResponseFlags, UnknownResponseFlag> {
        let s = s.trim();
        if s == "-" || s.is_empty() {
            return Ok(ResponseFlags::NONE);
        }
        s.split(',').try_fold(ResponseFlags::NONE, |flags, name| {
            let name = name.trim();
            FLAG_NAMES
                .iter()
                .find(|(_, short)| *short == name)
                .map(|(flag, _)| flags | *flag)
                .ok_or_else(|| UnknownResponseFlag(name.to_owned()))
        })
    }
}

impl EncodeLabelValue for ResponseFlags {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        use std::fmt::Write;
        write!(encoder, "{self}")
    }
}

/// The labels of Istio's request metrics: the connection's labels plus what the request's
/// outcome decides.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    #[prometheus(flatten)]
    base: TcpLabels,
    request_protocol: RequestProtocol,
    response_code: u16,
    response_flags: ResponseFlags,
    /// Empty for non-gRPC requests, as Istio writes it.
    grpc_response_status: Option<u32>,
}

type HistogramFamily = Family<RequestLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn bytes_histogram() -> Histogram {
    Histogram::new(BYTES_BUCKETS)
}

/// The four families, registered once in [`super::ProxyMetrics`].
#[derive(Debug, Clone)]
pub(crate) struct RequestFamilies {
    total: Family<RequestLabels, Counter>,
    duration: HistogramFamily,
    request_bytes: HistogramFamily,
    response_bytes: HistogramFamily,
}

impl RequestFamilies {
    pub(crate) fn new() -> RequestFamilies {
        RequestFamilies {
            total: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            request_bytes: Family::new_with_constructor(bytes_histogram),
            response_bytes: Family::new_with_constructor(bytes_histogram),
        }
    }

    pub(crate) fn register(&self, registry: &mut Registry) {
        // prometheus-client appends `_total` to counters, giving Istio's exact name.
        registry.register(
            "istio_requests",
            "Total number of requests",
            self.total.clone(),
        );
        registry.register(
            "istio_request_duration_milliseconds",
            "Duration of requests in milliseconds",
            self.duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Size of request bodies in bytes",
            self.request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Size of response bodies in bytes",
            self.response_bytes.clone(),
        );
    }

    fn series(&self, labels: &RequestLabels) -> RequestSeries {
        RequestSeries {
            total: self.total.get_or_create_owned(labels),
            duration: self.duration.get_or_create_owned(labels),
            request_bytes: self.request_bytes.get_or_create_owned(labels),
            response_bytes: self.response_bytes.get_or_create_owned(labels),
        }
    }
}

/// How one request ended: what [`RequestMetricsFamily::record`] needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestOutcome {
    pub protocol: RequestProtocol,
    /// The status sent downstream; 0 when none was (Envoy's convention for a reset stream).
    pub response_code: u16,
    pub flags: ResponseFlags,
    /// `grpc-status` of a gRPC response (trailer or trailers-only header).
    pub grpc_status: Option<u32>,
    pub duration: Duration,
    /// Body bytes received from downstream.
    pub request_bytes: u64,
    /// Body bytes sent downstream.
    pub response_bytes: u64,
}

/// The cache key: the parts of the label set a request decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub protocol: RequestProtocol,
    pub response_code: u16,
    pub flags: ResponseFlags,
    pub grpc_status: Option<u32>,
}

/// The four metrics of one full label set. Clones share the underlying series.
#[derive(Debug, Clone)]
pub struct RequestSeries {
    total: Counter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

impl RequestSeries {
    fn record(&self, outcome: &RequestOutcome) {
        // The counter is one atomic add; each histogram takes prometheus-client's own
        // per-series lock for a few nanoseconds (it has no lock-free histogram).
        self.total.inc();
        // Fractional milliseconds: Envoy truncates to whole ones, which puts every sub-ms
        // request in the 0.5 bucket; the buckets are the same either way.
        self.duration
            .observe(outcome.duration.as_secs_f64() * 1000.0);
        // u64 → f64 loses precision only above 2^53 bytes, far beyond any bucket.
        self.request_bytes.observe(outcome.request_bytes as f64);
        self.response_bytes.observe(outcome.response_bytes as f64);
    }
}

/// The request metrics of one (route or cluster, direction): clone it into every request
/// task. Recording looks the outcome up in a lock-free cache of the series seen so far.
#[derive(Debug, Clone)]
pub struct RequestMetricsFamily {
    inner: Arc<FamilyInner>,
}

#[derive(Debug)]
struct FamilyInner {
    families: RequestFamilies,
    base: TcpLabels,
    /// Copy-on-write: readers `load` without locking; a new combination replaces the vector.
    cache: ArcSwap<Vec<(SeriesKey, Arc<RequestSeries>)>>,
    /// Serialises inserts so that two first requests with the same outcome do not both copy
    /// the vector and lose one insert.
    insert: Mutex<()>,
}

impl RequestMetricsFamily {
    pub(crate) fn new(families: RequestFamilies, base: TcpLabels) -> RequestMetricsFamily {
        RequestMetricsFamily {
            inner: Arc::new(FamilyInner {
                families,
                base,
                cache: ArcSwap::from_pointee(Vec::new()),
                insert: Mutex::new(()),
            }),
        }
    }

    /// Counts one finished request.
    pub fn record(&self, outcome: RequestOutcome) {
        let key = SeriesKey {
            protocol: outcome.protocol,
            response_code: outcome.response_code,
            flags: outcome.flags,
            grpc_status: outcome.grpc_status,
        };
        {
            let cache = self.inner.cache.load();
            if let Some((_, series)) = cache.iter().find(|(k, _)| *k == key) {
                series.record(&outcome);
                return;
            }
        }
        self.series(key).record(&outcome);
    }

    /// The series of one outcome, from the cache or created (and cached while there is room).
    pub fn series(&self, key: SeriesKey) -> Arc<RequestSeries> {
        if let Some((_, series)) = self.inner.cache.load().iter().find(|(k, _)| *k == key) {
            return series.clone();
        }
        // A poisoned lock guards no data, only the order of inserts.
        let _guard = self
            .inner
            .insert
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.inner.cache.load_full();
        if let Some((_, series)) = current.iter().find(|(k, _)| *k == key) {
            return series.clone();
        }
        let labels = RequestLabels {
            base: self.inner.base.clone(),
            request_protocol: key.protocol,
            response_code: key.response_code,
            response_flags: key.flags,
            grpc_response_status: key.grpc_status,
        };
        let series = Arc::new(self.inner.families.series(&labels));
        if current.len() < CACHE_CAPACITY {
            let mut next = Vec::with_capacity(current.len() + 1);
            next.extend(current.iter().cloned());
            next.push((key, series.clone()));
            self.inner.cache.store(Arc::new(next));
        }
        series
    }

    /// How many combinations the cache holds (for tests).
    pub fn cached(&self) -> usize {
        self.inner.cache.load().len()
    }
}
