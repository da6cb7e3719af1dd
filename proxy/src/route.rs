//! Route tables with Envoy's RouteConfiguration semantics (the subset istiod uses), and the
//! pure functions that pick a virtual host, a route, a rewritten path and a weighted
//! cluster for one request.
//!
//! These are plain values and functions with no I/O, so that the static config and the
//! xDS (RDS) translation fill the same shapes, the HTTP layer only reads them, and every
//! matching rule is unit-tested without sockets. Regular expressions use the `regex` crate:
//! linear time in the input and RE2's syntax, like Envoy's `safe_regex`, so a pattern in
//! the config cannot make a request take exponential time. They are compiled once, when
//! the config is loaded, and shown as their pattern in /config_dump.

use std::fmt;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::snapshot::ClusterChoice;

/// Envoy's route timeout when a route sets none.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
/// Envoy's default number of retries when a retry policy does not say.
pub const DEFAULT_NUM_RETRIES: u32 = 1;
/// Envoy's default base interval of the retry back-off; the maximum defaults to ten times it.
pub const DEFAULT_RETRY_BACKOFF_BASE: Duration = Duration::from_millis(25);

/// A compiled regular expression that remembers its source, so that /config_dump shows
/// what was configured rather than the anchored form that is matched.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    regex: regex::Regex,
}

impl Pattern {
    /// A pattern that must match the whole input, as Envoy's `safe_regex` matchers do
    /// (`/v1/.*` does not match `/api/v1/x`).
    pub fn full(source: &str) -> Result<Pattern, regex::Error> {
        let regex = regex::Regex::new(&format!("^(?:{source})$"))?;
        Ok(Pattern {
            source: source.to_owned(),
            regex,
        })
    }

    /// A pattern that matches anywhere in the input, for `regex_rewrite`, which replaces
    /// every match.
    pub fn search(source: &str) -> Result<Pattern, regex::Error> {
        let regex = regex::Regex::new(source)?;
        Ok(Pattern {
            source: source.to_owned(),
            regex,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.source)
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

/// A RouteConfiguration: virtual hosts chosen by the request's authority.
#[derive(Debug, Default, Serialize)]
pub struct RouteTable {
    pub name: String,
    pub virtual_hosts: Vec<VirtualHost>,
    /// Applied to every request of the table, after the virtual host's and the route's.
    #[serde(flatten)]
    pub headers: HeaderMutations,
}

#[derive(Debug, Default, Serialize)]
pub struct VirtualHost {
    pub name: String,
    /// Lower-case; `*`, an exact authority (with or without port), or one `*` at the start
    /// or the end.
    pub domains: Vec<String>,
    /// Tried in order; the first that matches wins.
    pub routes: Vec<Route>,
    /// Used by routes that set none (Envoy: a route's policy replaces the host's whole).
    pub retry_policy: Option<RetryPolicy>,
    /// Envoy's `include_request_attempt_count`: send `x-envoy-attempt-count` upstream
    /// (istiod sets it on every virtual host).
    pub include_request_attempt_count: bool,
    #[serde(flatten)]
    pub headers: HeaderMutations,
}

/// Headers to add and remove on the way up (request) and down (response). Envoy applies
/// the route's, then the virtual host's, then the table's.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderMutations {
    pub request_headers_to_add: Vec<HeaderToAdd>,
    /// Lower-case names.
    pub request_headers_to_remove: Vec<String>,
    pub response_headers_to_add: Vec<HeaderToAdd>,
    pub response_headers_to_remove: Vec<String>,
}

impl HeaderMutations {
    pub fn is_empty(&self) -> bool {
        *self == HeaderMutations::default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderToAdd {
    /// Lower-case, a valid HTTP header name.
    pub name: String,
    pub value: String,
    /// true: add another value (Envoy's APPEND_IF_EXISTS_OR_ADD, its default); false:
    /// replace existing values (OVERWRITE_IF_EXISTS_OR_ADD, what Istio's `set` sends).
    pub append: bool,
}

#[derive(Debug, Serialize)]
pub struct Route {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: RouteMatch,
    pub action: RouteAction,
    #[serde(flatten)]
    pub headers: HeaderMutations,
    /// None: Envoy's default of [`DEFAULT_ROUTE_TIMEOUT`]; `Some(ZERO)`: no timeout (what
    /// istiod sends for "no timeout", and what streaming APIs need).
    #[serde(serialize_with = "optional_ms")]
    pub timeout: Option<Duration>,
    /// None: the virtual host's policy, if any.
    pub retry_policy: Option<RetryPolicy>,
}

impl Route {
    /// The request timeout that applies: None means none at all.
    pub fn effective_timeout(&self) -> Option<Duration> {
        match self.timeout {
            None => Some(DEFAULT_ROUTE_TIMEOUT),
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
        }
    }

    /// The clusters this route sends to, if it forwards at all.
    pub fn cluster(&self) -> Option<&ClusterChoice> {
        match &self.action {
            RouteAction::Cluster { cluster, .. } => Some(cluster),
            RouteAction::DirectResponse { .. } => None,
        }
    }

    /// The path prefix matched, when the route matches by prefix.
    pub fn prefix(&self) -> Option<&str> {
        match &self.matcher.path {
            PathMatch::Prefix(p) => Some(p),
            _ => None,
        }
    }

    /// The retry policy that applies: the route's, else the virtual host's.
    pub fn retry_policy<'a>(&'a self, vhost: &'a VirtualHost) -> Option<&'a RetryPolicy> {
        self.retry_policy.as_ref().or(vhost.retry_policy.as_ref())
    }
}

/// Every part that is set must match.
#[derive(Debug, Serialize)]
pub struct RouteMatch {
    pub path: PathMatch,
    /// For prefix, exact and path-separated-prefix matches (ASCII case); regexes say
    /// their own case with `(?i)`, as in Envoy.
    pub case_sensitive: bool,
    pub headers: Vec<HeaderMatcher>,
    pub query_parameters: Vec<QueryMatcher>,
}

impl RouteMatch {
    /// Matches every request, like Envoy's `prefix: /`.
    pub fn any() -> RouteMatch {
        RouteMatch::path(PathMatch::Prefix("/".to_owned()))
    }

    pub fn path(path: PathMatch) -> RouteMatch {
        RouteMatch {
            path,
            case_sensitive: true,
            headers: Vec::new(),
            query_parameters: Vec::new(),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    /// On the path including its query string, as Envoy does.
    Prefix(String),
    /// On the path without the query string.
    Exact(String),
    /// The whole path without the query string must match.
    Regex(Pattern),
    /// The path without the query is the prefix, or starts with the prefix and then `/`:
    /// `/api` matches `/api` and `/api/x` but not `/apix`. The prefix does not end in `/`.
    PathSeparatedPrefix(String),
}

/// Envoy's HeaderMatcher. Pseudo-headers `:authority`, `:method`, `:path` are matched too.
/// Several values of one header are matched joined with `,`, as Envoy does.
#[derive(Debug, Serialize)]
pub struct HeaderMatcher {
    /// Lower-case.
    pub name: String,
    pub kind: ValueMatch,
    /// Negates the result, including for a missing header (an inverted `exact` matches a
    /// request without the header).
    pub invert: bool,
}

#[derive(Debug, Serialize)]
pub struct QueryMatcher {
    pub name: String,
    /// `Present(false)` is not used: Envoy's query matcher only tests presence.
    pub kind: ValueMatch,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Contains(String),
    /// The whole value must match.
    Regex(Pattern),
    /// true: the header is there (any value); false: it is not.
    Present(bool),
}

impl ValueMatch {
    /// Whether a value (None: absent) matches.
    pub fn matches(&self, value: Option<&str>) -> bool {
        match (self, value) {
            (ValueMatch::Present(want), v) => *want == v.is_some(),
            (_, None) => false,
            (ValueMatch::Exact(e), Some(v)) => v == e,
            (ValueMatch::Prefix(p), Some(v)) => v.starts_with(p.as_str()),
            (ValueMatch::Suffix(s), Some(v)) => v.ends_with(s.as_str()),
            (ValueMatch::Contains(c), Some(v)) => v.contains(c.as_str()),
            (ValueMatch::Regex(r), Some(v)) => r.is_match(v),
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteAction {
    Cluster {
        cluster: ClusterChoice,
        /// Replaces the matched prefix (or the whole matched path for exact matches).
        prefix_rewrite: Option<String>,
        regex_rewrite: Option<RegexRewrite>,
        /// A literal `Host` / `:authority` for the upstream request.
        host_rewrite: Option<String>,
    },
    /// Answer without an upstream (Envoy's `direct_response`).
    DirectResponse { status: u16, body: String },
}

impl RouteAction {
    /// Forward to a cluster without rewrites.
    pub fn to(cluster: ClusterChoice) -> RouteAction {
        RouteAction::Cluster {
            cluster,
            prefix_rewrite: None,
            regex_rewrite: None,
            host_rewrite: None,
        }
    }
}

/// Envoy's `regex_rewrite`: every match in the path (without the query) is replaced.
#[derive(Debug, Serialize)]
pub struct RegexRewrite {
    pub pattern: Pattern,
    /// As configured, in RE2's syntax: `\1` is the first group.
    pub substitution: String,
    /// The same in the `regex` crate's syntax (`${1}`, `$$`).
    #[serde(skip)]
    expansion: String,
}

impl RegexRewrite {
    pub fn new(pattern: Pattern, substitution: &str) -> RegexRewrite {
        RegexRewrite {
            expansion: re2_substitution(substitution),
            substitution: substitution.to_owned(),
            pattern,
        }
    }

    pub fn apply(&self, path: &str) -> String {
        self.pattern
            .regex
            .replace_all(path, self.expansion.as_str())
            .into_owned()
    }
}

/// Translates RE2's substitution syntax (`\1`, `\\`) into the regex crate's (`${1}`, `\`),
/// escaping `$` so that it stays literal as in RE2.
fn re2_substitution(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    chars.next();
                    out.push_str("${");
                    out.push(d);
                    out.push('}');
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

/// Envoy's `retry_on` conditions, as bit flags so a policy is `Copy`-cheap to test.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn(u16);

impl RetryOn {
    pub const FIVE_XX: RetryOn = RetryOn(1);
    pub const GATEWAY_ERROR: RetryOn = RetryOn(1 << 1);
    pub const RESET: RetryOn = RetryOn(1 << 2);
    pub const CONNECT_FAILURE: RetryOn = RetryOn(1 << 3);
    pub const REFUSED_STREAM: RetryOn = RetryOn(1 << 4);
    pub const RETRIABLE_4XX: RetryOn = RetryOn(1 << 5);
    pub const RETRIABLE_STATUS_CODES: RetryOn = RetryOn(1 << 6);
    // gRPC conditions (on `grpc-status`): istiod's default policy names some of them, so
    // the xDS translation must be able to carry them.
    pub const CANCELLED: RetryOn = RetryOn(1 << 7);
    pub const DEADLINE_EXCEEDED: RetryOn = RetryOn(1 << 8);
    pub const INTERNAL: RetryOn = RetryOn(1 << 9);
    pub const RESOURCE_EXHAUSTED: RetryOn = RetryOn(1 << 10);
    pub const UNAVAILABLE: RetryOn = RetryOn(1 << 11);

    const NAMES: [(&'static str, RetryOn); 12] = [
        ("5xx", RetryOn::FIVE_XX),
        ("gateway-error", RetryOn::GATEWAY_ERROR),
        ("reset", RetryOn::RESET),
        ("connect-failure", RetryOn::CONNECT_FAILURE),
        ("refused-stream", RetryOn::REFUSED_STREAM),
        ("retriable-4xx", RetryOn::RETRIABLE_4XX),
        ("retriable-status-codes", RetryOn::RETRIABLE_STATUS_CODES),
        ("cancelled", RetryOn::CANCELLED),
        ("deadline-exceeded", RetryOn::DEADLINE_EXCEEDED),
        ("internal", RetryOn::INTERNAL),
        ("resource-exhausted", RetryOn::RESOURCE_EXHAUSTED),
        ("unavailable", RetryOn::UNAVAILABLE),
    ];

    pub fn contains(self, other: RetryOn) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Every condition Envoy's `retry_on` may name here, comma-separated.
    pub fn known() -> String {
        let names: Vec<&str> = RetryOn::NAMES.iter().map(|(n, _)| *n).collect();
        names.join(", ")
    }

    /// Parses Envoy's comma-separated list (`5xx,connect-failure`); spaces around names
    /// are allowed. An unknown name is returned as the error.
    pub fn parse(text: &str) -> Result<RetryOn, String> {
        let mut on = RetryOn::default();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let (_, flag) = RetryOn::NAMES
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| name.to_owned())?;
            on = on | *flag;
        }
        Ok(on)
    }
}

impl std::ops::BitOr for RetryOn {
    type Output = RetryOn;
    fn bitor(self, other: RetryOn) -> RetryOn {
        RetryOn(self.0 | other.0)
    }
}

impl fmt::Display for RetryOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (name, flag) in RetryOn::NAMES {
            if self.contains(flag) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for RetryOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RetryOn({self})")
    }
}

impl Serialize for RetryOn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RetryPolicy {
    pub retry_on: RetryOn,
    pub num_retries: u32,
    /// None: each try may take what is left of the route timeout.
    #[serde(serialize_with = "optional_ms")]
    pub per_try_timeout: Option<Duration>,
    /// For `retriable-status-codes`.
    pub retriable_status_codes: Vec<u16>,
    /// Envoy's `previous_hosts` predicate: a retry goes to an endpoint not tried yet.
    pub retry_host_predicate_previous_hosts: bool,
    #[serde(serialize_with = "ms")]
    pub backoff_base: Duration,
    #[serde(serialize_with = "ms")]
    pub backoff_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retry_on: RetryOn::default(),
            num_retries: DEFAULT_NUM_RETRIES,
            per_try_timeout: None,
            retriable_status_codes: Vec::new(),
            retry_host_predicate_previous_hosts: false,
            backoff_base: DEFAULT_RETRY_BACKOFF_BASE,
            backoff_max: DEFAULT_RETRY_BACKOFF_BASE * 10,
        }
    }
}

fn ms<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u128(d.as_millis())
}

fn optional_ms<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_millis()),
        None => s.serialize_none(),
    }
}

mod select;

#[cfg(test)]
use select::strip_port;
pub use select::{RequestFacts, pick_cluster, rewrite_path, select_route, select_virtual_host};

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
