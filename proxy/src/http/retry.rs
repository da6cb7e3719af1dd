//! Envoy's retry decisions as pure functions: whether an attempt's result is retriable
//! under a policy, how long to back off before the next try, and whether the cluster's
//! retry budget allows one more retry in flight. The router owns the loop and the I/O.

use std::time::Duration;

use hyper::HeaderMap;

use crate::route::{RetryOn, RetryPolicy};
use crate::snapshot::RetryBudget;

/// What one attempt came to, as far as retrying cares.
#[derive(Debug, Clone, Copy)]
pub enum Attempt<'a> {
    /// Response headers arrived.
    Response { status: u16, headers: &'a HeaderMap },
    /// No connection could be made to the endpoint.
    ConnectFailure,
    /// The connection or stream ended before the response head. `refused_stream`: an
    /// HTTP/2 REFUSED_STREAM, which promises the server did not process the request.
    Reset { refused_stream: bool },
    /// The per-try timeout fired before the response head.
    PerTryTimeout,
}

/// The gRPC status codes `retry_on` can name, and the condition of each.
const GRPC_CONDITIONS: [(u32, RetryOn); 5] = [
    (1, RetryOn::CANCELLED),
    (4, RetryOn::DEADLINE_EXCEEDED),
    (8, RetryOn::RESOURCE_EXHAUSTED),
    (13, RetryOn::INTERNAL),
    (14, RetryOn::UNAVAILABLE),
];

/// Whether `policy` retries after `attempt`, following Envoy's router: `5xx` covers any
/// 5xx response and every failure to get one (connect failure, reset, per-try timeout);
/// `gateway-error` the same with only 502, 503 and 504; `reset` and `connect-failure`
/// their failure alone (a connect failure is a kind of reset); `refused-stream` an HTTP/2
/// REFUSED_STREAM; `retriable-4xx` a 409; `retriable-status-codes` the listed codes; the
/// gRPC conditions a `grpc-status` in the response headers (a trailers-only response).
/// A per-try timeout counts as a 504 response, as Envoy treats it.
pub fn retriable(policy: &RetryPolicy, attempt: Attempt<'_>) -> bool {
    let on = policy.retry_on;
    let any_5xx = on.contains(RetryOn::FIVE_XX) || on.contains(RetryOn::GATEWAY_ERROR);
    match attempt {
        Attempt::ConnectFailure => {
            any_5xx || on.contains(RetryOn::CONNECT_FAILURE) || on.contains(RetryOn::RESET)
        }
        Attempt::Reset { refused_stream } => {
            any_5xx
                || on.contains(RetryOn::RESET)
                || (refused_stream && on.contains(RetryOn::REFUSED_STREAM))
        }
        Attempt::PerTryTimeout => status_retriable(policy, 504),
        Attempt::Response { status, headers } => {
            status_retriable(policy, status) || grpc_retriable(on, headers)
        }
    }
}

fn status_retriable(policy: &RetryPolicy, status: u16) -> bool {
    let on = policy.retry_on;
    (on.contains(RetryOn::FIVE_XX) && (500..600).contains(&status))
        || (on.contains(RetryOn::GATEWAY_ERROR) && matches!(status, 502..=504))
        || (on.contains(RetryOn::RETRIABLE_4XX) && status == 409)
        || (on.contains(RetryOn::RETRIABLE_STATUS_CODES)
            && policy.retriable_status_codes.contains(&status))
}

fn grpc_retriable(on: RetryOn, headers: &HeaderMap) -> bool {
    let Some(status) = grpc_status(headers) else {
        return false;
    };
    GRPC_CONDITIONS
        .iter()
        .any(|(code, condition)| *code == status && on.contains(*condition))
}

/// The `grpc-status` of a header or trailer block, if it has a valid one.
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The wait before retry number `retry` (1 for the first retry): Envoy's fully jittered
/// exponential back-off, uniform in `[0, min(base·2^(retry-1), max))`, so that clients
/// that failed together do not retry together. `random` is a uniformly random number,
/// passed in to keep this pure.
pub fn backoff(policy: &RetryPolicy, retry: u32, random: u64) -> Duration {
    let base = policy.backoff_base.as_millis().max(1) as u64;
    let max = (policy.backoff_max.as_millis() as u64).max(base);
    let doublings = retry.saturating_sub(1).min(32);
    let ceiling = base.saturating_mul(1u64 << doublings).min(max);
    Duration::from_millis(random % ceiling)
}

/// Whether one more retry may start when `requests` requests and `retries` retries are in
/// flight to the cluster (the request asking is among `requests`; its retry is not yet
/// among `retries`).
pub fn budget_allows(budget: &RetryBudget, requests: u64, retries: u64) -> bool {
    let by_share = (requests as f64 * budget.budget_percent / 100.0) as u64;
    retries < by_share.max(u64::from(budget.min_retry_concurrency))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn policy(on: &str) -> RetryPolicy {
        RetryPolicy {
            retry_on: RetryOn::parse(on).unwrap(),
            num_retries: 2,
            retriable_status_codes: vec![503, 429],
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn conditions_follow_envoy() {
        let empty = HeaderMap::new();
        let response = |s| Attempt::Response {
            status: s,
            headers: &empty,
        };
        let reset = Attempt::Reset {
            refused_stream: false,
        };
        let refused = Attempt::Reset {
            refused_stream: true,
        };
        use Attempt::{ConnectFailure, PerTryTimeout};
        // (retry_on, attempt, retried?)
        let table: Vec<(&str, Attempt<'_>, bool)> = vec![
            ("5xx", response(500), true),
            ("5xx", response(503), true),
            ("5xx", response(404), false),
            ("5xx", response(200), false),
            ("5xx", ConnectFailure, true),
            ("5xx", reset, true),
            ("5xx", refused, true),
            ("5xx", PerTryTimeout, true),
            ("gateway-error", response(500), false),
            ("gateway-error", response(502), true),
            ("gateway-error", response(503), true),
            ("gateway-error", response(504), true),
            ("gateway-error", ConnectFailure, true),
            ("gateway-error", PerTryTimeout, true),
            ("connect-failure", ConnectFailure, true),
            ("connect-failure", reset, false),
            ("connect-failure", response(503), false),
            ("connect-failure", PerTryTimeout, false),
            ("reset", reset, true),
            ("reset", refused, true),
            ("reset", ConnectFailure, true),
            ("reset", response(503), false),
            ("refused-stream", refused, true),
            ("refused-stream", reset, false),
            ("refused-stream", ConnectFailure, false),
            ("retriable-4xx", response(409), true),
            ("retriable-4xx", response(400), false),
            ("retriable-status-codes", response(503), true),
            ("retriable-status-codes", response(429), true),
            ("retriable-status-codes", response(500), false),
            ("retriable-status-codes", PerTryTimeout, false),
            ("", response(503), false),
            ("", ConnectFailure, false),
        ];
        for (on, attempt, want) in table {
            assert_eq!(
                retriable(&policy(on), attempt),
                want,
                "retry_on {on:?} after {attempt:?}"
            );
        }
    }

    #[test]
    fn grpc_conditions_read_grpc_status() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("14"));
        let unavailable = Attempt::Response {
            status: 200,
            headers: &headers,
        };
        assert!(retriable(&policy("unavailable"), unavailable));
        assert!(!retriable(&policy("cancelled,internal"), unavailable));
        headers.insert("grpc-status", HeaderValue::from_static("1"));
        let cancelled = Attempt::Response {
            status: 200,
            headers: &headers,
        };
        assert!(retriable(&policy("cancelled"), cancelled));
        headers.insert("grpc-status", HeaderValue::from_static("x"));
        let garbage = Attempt::Response {
            status: 200,
            headers: &headers,
        };
        assert!(!retriable(&policy("cancelled,unavailable"), garbage));
        assert_eq!(grpc_status(&headers), None);
    }

    #[test]
    fn backoff_is_jittered_below_a_doubling_ceiling() {
        let p = RetryPolicy {
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            ..RetryPolicy::default()
        };
        // The ceiling doubles per retry up to the maximum; u64::MAX - 1 probes the top.
        for (retry, ceiling) in [(1, 25u64), (2, 50), (3, 100), (4, 200), (5, 250), (40, 250)] {
            assert_eq!(backoff(&p, retry, 0), Duration::ZERO);
            let top = backoff(&p, retry, ceiling - 1);
            assert_eq!(top, Duration::from_millis(ceiling - 1));
            assert!(backoff(&p, retry, u64::MAX) < Duration::from_millis(ceiling));
        }
    }

    #[test]
    fn budget_is_a_share_of_requests_with_a_floor() {
        let budget = RetryBudget::default(); // 20 %, at least 3
        assert!(budget_allows(&budget, 1, 0));
        assert!(budget_allows(&budget, 1, 2));
        assert!(!budget_allows(&budget, 1, 3), "the floor is 3 retries");
        assert!(budget_allows(&budget, 100, 19));
        assert!(!budget_allows(&budget, 100, 20), "20 % of 100 in flight");
        let none = RetryBudget {
            budget_percent: 0.0,
            min_retry_concurrency: 0,
        };
        assert!(!budget_allows(&none, 1000, 0));
    }
}
