//! HTTP handlers: an inline route table of virtual hosts (chosen by authority) and routes
//! (tried in order, each matching on path, headers and query parameters), each sending to
//! a cluster or a weighted pick, or answering directly. Regexes are compiled here, so a
//! bad one is refused with its key's path when the file is loaded, never at request time.

use std::collections::HashMap;
use std::sync::Arc;

use hyper::header::{HeaderName, HeaderValue};

use super::build::{Invalid, invalid};
use super::clusters::choice;
use super::model::{
    HeaderToAddSpec, HttpSpec, RetryPolicySpec, RouteActionSpec, RouteMatchSpec, RouteSpec,
    ValueMatchSpec, VirtualHostSpec,
};
use crate::route::{
    HeaderMatcher, HeaderMutations, HeaderToAdd, PathMatch, Pattern, QueryMatcher, RegexRewrite,
    RetryOn, RetryPolicy, RouteAction, RouteMatch, ValueMatch,
};
use crate::snapshot::{
    Cluster, DEFAULT_STREAM_IDLE_TIMEOUT, HttpManager, Route, RouteSource, RouteTable, VirtualHost,
};

pub(super) fn http(
    spec: HttpSpec,
    at: &str,
    listener: &str,
    chain: &str,
    clusters: &HashMap<String, Arc<Cluster>>,
) -> Result<HttpManager, Invalid> {
    let (virtual_hosts, hosts_at) = match (spec.routes, spec.virtual_hosts) {
        (Some(routes), None) => (
            vec![virtual_host(
                VirtualHostSpec::everything(routes),
                at,
                clusters,
            )?],
            None,
        ),
        (None, Some(hosts)) => {
            if hosts.is_empty() {
                return invalid(
                    format!("{at}.virtualHosts"),
                    "is empty; list at least one {domains, routes}, or write routes",
                );
            }
            let mut built = Vec::with_capacity(hosts.len());
            for (k, host) in hosts.into_iter().enumerate() {
                built.push(virtual_host(
                    host,
                    &format!("{at}.virtualHosts[{k}]"),
                    clusters,
                )?);
            }
            (built, Some(format!("{at}.virtualHosts")))
        }
        (None, None) => {
            return invalid(
                at,
                "has no routes; write routes: [{prefix: /, cluster: NAME}], or virtualHosts",
            );
        }
        (Some(_), Some(_)) => {
            return invalid(
                at,
                "has both routes and virtualHosts; routes is short for one virtual host with \
                 domains [\"*\"], so write one of them",
            );
        }
    };
    if let Some(hosts_at) = hosts_at {
        // Envoy refuses a route table in which two virtual hosts claim one domain.
        let mut owners: HashMap<&str, (usize, usize)> = HashMap::new();
        for (k, host) in virtual_hosts.iter().enumerate() {
            for (d, domain) in host.domains.iter().enumerate() {
                if let Some((ok, od)) = owners.insert(domain, (k, d)) {
                    return invalid(
                        format!("{hosts_at}[{k}].domains[{d}]"),
                        format!(
                            "{domain:?} is also virtualHosts[{ok}].domains[{od}]; each domain \
                             belongs to one virtual host"
                        ),
                    );
                }
            }
        }
    }
    let headers = mutations(
        at,
        spec.request_headers_to_add,
        spec.request_headers_to_remove,
        spec.response_headers_to_add,
        spec.response_headers_to_remove,
    )?;
    let mut manager = HttpManager::new(
        spec.stat_prefix
            .map_or_else(|| listener.to_owned(), |p| p.0),
        RouteSource::Inline(Arc::new(RouteTable {
            name: format!("{listener}/{chain}"),
            virtual_hosts,
            headers,
        })),
    );
    manager.use_remote_address = spec.use_remote_address;
    // `0s` is kept as zero, which the snapshot reads as no stream idle timeout.
    manager.stream_idle_timeout = spec
        .stream_idle_timeout
        .map_or(DEFAULT_STREAM_IDLE_TIMEOUT, |t| t.0);
    Ok(manager)
}

fn virtual_host(
    spec: VirtualHostSpec,
    at: &str,
    clusters: &HashMap<String, Arc<Cluster>>,
) -> Result<VirtualHost, Invalid> {
    let domains: Vec<String> = match spec.domains {
        None => vec!["*".to_owned()],
        Some(d) if d.is_empty() => {
            return invalid(
                format!("{at}.domains"),
                "is empty, so no request would match; remove it to match every authority, or \
                 list host names",
            );
        }
        Some(d) => d.into_iter().map(|d| d.0).collect(),
    };
    if let Some(d) = (1..domains.len()).find(|d| domains[..*d].contains(&domains[*d])) {
        return invalid(
            format!("{at}.domains[{d}]"),
            format!("{:?} is listed twice; list it once", domains[d]),
        );
    }
    if spec.routes.is_empty() {
        return invalid(
            format!("{at}.routes"),
            "is empty; add at least {prefix: /, cluster: NAME}",
        );
    }
    let mut routes: Vec<Route> = Vec::with_capacity(spec.routes.len());
    for (r, route) in spec.routes.into_iter().enumerate() {
        routes.push(route_entry(
            route,
            &format!("{at}.routes[{r}]"),
            &routes,
            clusters,
        )?);
    }
    let retry_policy = spec
        .retry_policy
        .map(|p| retry_policy(p, &format!("{at}.retryPolicy")))
        .transpose()?;
    let headers = mutations(
        at,
        spec.request_headers_to_add,
        spec.request_headers_to_remove,
        spec.response_headers_to_add,
        spec.response_headers_to_remove,
    )?;
    Ok(VirtualHost {
        name: spec.name.map_or_else(|| domains[0].clone(), |n| n.0),
        domains,
        routes,
        retry_policy,
        include_request_attempt_count: spec.include_request_attempt_count,
        headers,
    })
}

fn route_entry(
    spec: RouteSpec,
    at: &str,
    earlier: &[Route],
    clusters: &HashMap<String, Arc<Cluster>>,
) -> Result<Route, Invalid> {
    let short_action = spec.cluster.is_some() || spec.weighted_clusters.is_some();
    let (matcher, path_key) = match (spec.prefix, spec.matcher) {
        (Some(_), Some(_)) => {
            return invalid(
                format!("{at}.prefix"),
                "is written next to match; move it into match (match: {prefix: ...})",
            );
        }
        (Some(prefix), None) => (
            RouteMatch::path(PathMatch::Prefix(prefix.0)),
            format!("{at}.prefix"),
        ),
        (None, None) => (RouteMatch::any(), format!("{at}.prefix")),
        (None, Some(m)) => route_match(m, &format!("{at}.match"))?,
    };
    shadowed(&matcher, earlier, &path_key)?;
    let (action, timeout, retry_policy) = match (short_action, spec.route, spec.direct_response) {
        (true, None, None) => (
            RouteAction::to(choice(spec.cluster, spec.weighted_clusters, at, clusters)?),
            None,
            None,
        ),
        (false, Some(route), None) => {
            route_action(route, &format!("{at}.route"), &matcher.path, clusters)?
        }
        (false, None, Some(direct)) => {
            let status_at = format!("{at}.directResponse.status");
            if !(200..=599).contains(&direct.status) {
                return invalid(
                    status_at,
                    format!(
                        "{} is not a status Envoy sends directly; write 200 to 599",
                        direct.status
                    ),
                );
            }
            let action = RouteAction::DirectResponse {
                status: direct.status,
                body: direct.body.unwrap_or_default(),
            };
            (action, None, None)
        }
        (false, None, None) => {
            return invalid(
                at,
                "names no cluster; write cluster: NAME, or weightedClusters: [{name, weight}] \
                 (or route: {cluster: NAME}, or directResponse: {status: 404})",
            );
        }
        _ => {
            return invalid(
                at,
                "has more than one action; write one of cluster/weightedClusters, route, and \
                 directResponse",
            );
        }
    };
    let headers = mutations(
        at,
        spec.request_headers_to_add,
        spec.request_headers_to_remove,
        spec.response_headers_to_add,
        spec.response_headers_to_remove,
    )?;
    Ok(Route {
        name: spec.name.map_or_else(|| path_text(&matcher.path), |n| n.0),
        matcher,
        action,
        headers,
        timeout,
        retry_policy,
    })
}

fn path_text(path: &PathMatch) -> String {
    match path {
        PathMatch::Prefix(p) | PathMatch::Exact(p) | PathMatch::PathSeparatedPrefix(p) => p.clone(),
        PathMatch::Regex(r) => r.as_str().to_owned(),
    }
}

/// Refuses a route that an earlier one hides: an earlier route that matches on a
/// case-sensitive prefix alone takes every path that starts with it.
fn shadowed(matcher: &RouteMatch, earlier: &[Route], path_key: &str) -> Result<(), Invalid> {
    let later = match &matcher.path {
        PathMatch::Prefix(p) | PathMatch::Exact(p) | PathMatch::PathSeparatedPrefix(p)
            if matcher.case_sensitive =>
        {
            p
        }
        _ => return Ok(()),
    };
    let hidden_by = earlier.iter().enumerate().find(|(_, e)| {
        e.matcher.case_sensitive
            && e.matcher.headers.is_empty()
            && e.matcher.query_parameters.is_empty()
            && e.prefix().is_some_and(|p| later.starts_with(p))
    });
    if let Some((q, first)) = hidden_by {
        return invalid(
            path_key,
            format!(
                "{later:?} is never reached: routes[{q}] ({:?}) comes first and takes every \
                 path this one would; put longer prefixes first",
                first.prefix().unwrap_or_default()
            ),
        );
    }
    Ok(())
}

fn route_match(spec: RouteMatchSpec, at: &str) -> Result<(RouteMatch, String), Invalid> {
    let mut paths = Vec::new();
    if let Some(p) = spec.prefix {
        paths.push(("prefix", PathMatch::Prefix(p.0)));
    }
    if let Some(p) = spec.path {
        paths.push(("path", PathMatch::Exact(p.0)));
    }
    if let Some(r) = spec.regex {
        let pattern = Pattern::full(&r).or_else(|e| bad_regex(format!("{at}.regex"), &r, &e))?;
        paths.push(("regex", PathMatch::Regex(pattern)));
    }
    if let Some(p) = spec.path_separated_prefix {
        let p = p.0;
        if p.ends_with('/') || p.contains(['?', '#']) {
            return invalid(
                format!("{at}.pathSeparatedPrefix"),
                format!(
                    "{p:?} must not end in / or hold ? or #; write e.g. \"{}\" (it matches \
                     that path and everything below it)",
                    p.trim_end_matches('/')
                ),
            );
        }
        paths.push(("pathSeparatedPrefix", PathMatch::PathSeparatedPrefix(p)));
    }
    if paths.len() > 1 {
        return invalid(
            at,
            "has more than one of prefix, path, regex and pathSeparatedPrefix; write one",
        );
    }
    let (key, path) = paths
        .pop()
        .unwrap_or(("prefix", PathMatch::Prefix("/".to_owned())));
    let mut headers = Vec::with_capacity(spec.headers.len());
    for (h, m) in spec.headers.into_iter().enumerate() {
        let hat = format!("{at}.headers[{h}]");
        let invert = m.invert.unwrap_or(false);
        let name = match_header_name(&m.name.0, &format!("{hat}.name"))?;
        let kind = value_match(m, &hat)?;
        headers.push(HeaderMatcher { name, kind, invert });
    }
    let mut query_parameters = Vec::with_capacity(spec.query_parameters.len());
    for (q, m) in spec.query_parameters.into_iter().enumerate() {
        let qat = format!("{at}.queryParameters[{q}]");
        if m.invert.is_some() {
            return invalid(
                format!("{qat}.invert"),
                "is for headers only; Envoy cannot invert a query parameter match",
            );
        }
        if m.present == Some(false) {
            return invalid(
                format!("{qat}.present"),
                "false is not supported (Envoy's query matcher only tests presence); write \
                 present: true, or match on the value",
            );
        }
        let name = m.name.0.clone();
        let kind = value_match(m, &qat)?;
        query_parameters.push(QueryMatcher { name, kind });
    }
    let matcher = RouteMatch {
        path,
        case_sensitive: spec.case_sensitive.unwrap_or(true),
        headers,
        query_parameters,
    };
    Ok((matcher, format!("{at}.{key}")))
}

fn value_match(m: ValueMatchSpec, at: &str) -> Result<ValueMatch, Invalid> {
    let mut kinds = Vec::new();
    if let Some(v) = m.exact {
        kinds.push(ValueMatch::Exact(v));
    }
    if let Some(v) = m.prefix {
        kinds.push(ValueMatch::Prefix(v));
    }
    if let Some(v) = m.suffix {
        kinds.push(ValueMatch::Suffix(v));
    }
    if let Some(v) = m.contains {
        kinds.push(ValueMatch::Contains(v));
    }
    if let Some(r) = m.regex {
        let pattern = Pattern::full(&r).or_else(|e| bad_regex(format!("{at}.regex"), &r, &e))?;
        kinds.push(ValueMatch::Regex(pattern));
    }
    if let Some(p) = m.present {
        kinds.push(ValueMatch::Present(p));
    }
    match (kinds.pop(), kinds.is_empty()) {
        (Some(kind), true) => Ok(kind),
        (Some(_), false) => invalid(
            at,
            "has more than one of exact, prefix, suffix, contains, regex and present; write one",
        ),
        (None, _) => invalid(
            at,
            "says nothing to match; write one of exact, prefix, suffix, contains, regex, or \
             present: true",
        ),
    }
}

fn bad_regex<T>(field: String, pattern: &str, error: &regex::Error) -> Result<T, Invalid> {
    // The regex crate explains over several lines, with a caret under the mistake.
    let text = error.to_string();
    let why: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('^'))
        .collect::<Vec<_>>();
    invalid(
        field,
        format!(
            "{pattern:?} is not a valid regular expression ({}); the syntax is RE2's, without \
             look-around or back-references",
            why.join(": ")
        ),
    )
}

/// A header name to match on: a valid lower-case HTTP name, or a pseudo-header the
/// request line answers.
fn match_header_name(name: &str, at: &str) -> Result<String, Invalid> {
    let lower = name.to_ascii_lowercase();
    if matches!(lower.as_str(), ":authority" | ":method" | ":path") {
        return Ok(lower);
    }
    header_name(name, at)
}

/// A header name to add or remove: a valid HTTP name that is not a pseudo-header or
/// `host`, which Envoy does not let routes change this way.
fn header_name(name: &str, at: &str) -> Result<String, Invalid> {
    if name.starts_with(':') || name.eq_ignore_ascii_case("host") {
        return invalid(
            at,
            format!("{name:?} cannot be set or removed here; use route.hostRewrite for the host"),
        );
    }
    match HeaderName::from_bytes(name.as_bytes()) {
        Ok(n) => Ok(n.as_str().to_owned()),
        Err(_) => invalid(
            at,
            format!("{name:?} is not a valid HTTP header name; use letters, digits and -"),
        ),
    }
}

fn mutations(
    at: &str,
    request_add: Vec<HeaderToAddSpec>,
    request_remove: Vec<super::de::Name>,
    response_add: Vec<HeaderToAddSpec>,
    response_remove: Vec<super::de::Name>,
) -> Result<HeaderMutations, Invalid> {
    let adds = |list: Vec<HeaderToAddSpec>, key: &str| -> Result<Vec<HeaderToAdd>, Invalid> {
        let mut out = Vec::with_capacity(list.len());
        for (k, h) in list.into_iter().enumerate() {
            let hat = format!("{at}.{key}[{k}]");
            let name = header_name(&h.name.0, &format!("{hat}.name"))?;
            if HeaderValue::from_str(&h.value).is_err() {
                return invalid(
                    format!("{hat}.value"),
                    "holds a character a header value cannot (a line break or control \
                     character); remove it",
                );
            }
            out.push(HeaderToAdd {
                name,
                value: h.value,
                append: h.append.unwrap_or(true),
            });
        }
        Ok(out)
    };
    let removes = |list: Vec<super::de::Name>, key: &str| -> Result<Vec<String>, Invalid> {
        let mut out = Vec::with_capacity(list.len());
        for (k, n) in list.into_iter().enumerate() {
            out.push(header_name(&n.0, &format!("{at}.{key}[{k}]"))?);
        }
        Ok(out)
    };
    Ok(HeaderMutations {
        request_headers_to_add: adds(request_add, "requestHeadersToAdd")?,
        request_headers_to_remove: removes(request_remove, "requestHeadersToRemove")?,
        response_headers_to_add: adds(response_add, "responseHeadersToAdd")?,
        response_headers_to_remove: removes(response_remove, "responseHeadersToRemove")?,
    })
}

type Action = (
    RouteAction,
    Option<std::time::Duration>,
    Option<RetryPolicy>,
);

fn route_action(
    spec: RouteActionSpec,
    at: &str,
    path: &PathMatch,
    clusters: &HashMap<String, Arc<Cluster>>,
) -> Result<Action, Invalid> {
    let cluster = choice(spec.cluster, spec.weighted_clusters, at, clusters)?;
    if let Some(rewrite) = &spec.prefix_rewrite {
        if matches!(path, PathMatch::Regex(_)) {
            return invalid(
                format!("{at}.prefixRewrite"),
                "cannot follow a regex match, which has no prefix to replace; use regexRewrite",
            );
        }
        if !rewrite.starts_with('/') || rewrite.chars().any(char::is_whitespace) {
            return invalid(
                format!("{at}.prefixRewrite"),
                format!("{rewrite:?} must start with / and hold no spaces, e.g. \"/v2/\""),
            );
        }
    }
    let regex_rewrite = match spec.regex_rewrite {
        None => None,
        Some(_) if spec.prefix_rewrite.is_some() => {
            return invalid(at, "has both prefixRewrite and regexRewrite; write one");
        }
        Some(r) => {
            let pattern = Pattern::search(&r.pattern)
                .or_else(|e| bad_regex(format!("{at}.regexRewrite.pattern"), &r.pattern, &e))?;
            Some(RegexRewrite::new(pattern, &r.substitution))
        }
    };
    let retry = spec
        .retry_policy
        .map(|p| retry_policy(p, &format!("{at}.retryPolicy")))
        .transpose()?;
    let action = RouteAction::Cluster {
        cluster,
        prefix_rewrite: spec.prefix_rewrite,
        regex_rewrite,
        host_rewrite: spec.host_rewrite.map(|h| h.0),
    };
    Ok((action, spec.timeout.map(|t| t.0), retry))
}

fn retry_policy(spec: RetryPolicySpec, at: &str) -> Result<RetryPolicy, Invalid> {
    let retry_on = RetryOn::parse(&spec.retry_on).or_else(|unknown| {
        invalid(
            format!("{at}.retryOn"),
            format!(
                "{unknown:?} is not a retry condition; write a comma-separated list of: {}",
                RetryOn::known()
            ),
        )
    })?;
    if retry_on.is_empty() {
        return invalid(
            format!("{at}.retryOn"),
            "is empty, so nothing would be retried; write e.g. \"5xx,connect-failure\", or \
             remove retryPolicy",
        );
    }
    for (k, code) in spec.retriable_status_codes.iter().enumerate() {
        if !(100..=599).contains(code) {
            return invalid(
                format!("{at}.retriableStatusCodes[{k}]"),
                format!("{code} is not an HTTP status; write 100 to 599"),
            );
        }
    }
    let wants_codes = retry_on.contains(RetryOn::RETRIABLE_STATUS_CODES);
    match (wants_codes, spec.retriable_status_codes.is_empty()) {
        (true, true) => {
            return invalid(
                format!("{at}.retriableStatusCodes"),
                "is missing, but retryOn names retriable-status-codes; list the codes, e.g. [503]",
            );
        }
        (false, false) => {
            return invalid(
                format!("{at}.retriableStatusCodes"),
                "is ignored unless retryOn names retriable-status-codes; add it to retryOn",
            );
        }
        _ => {}
    }
    let mut previous_hosts = false;
    for (k, p) in spec.retry_host_predicate.iter().enumerate() {
        match p.0.as_str() {
            "previous_hosts" | "envoy.retry_host_predicates.previous_hosts" => {
                previous_hosts = true;
            }
            other => {
                return invalid(
                    format!("{at}.retryHostPredicate[{k}]"),
                    format!("{other:?} is not supported; the one predicate is previous_hosts"),
                );
            }
        }
    }
    let mut policy = RetryPolicy {
        retry_on,
        per_try_timeout: spec.per_try_timeout.map(|t| t.0),
        retriable_status_codes: spec.retriable_status_codes,
        retry_host_predicate_previous_hosts: previous_hosts,
        ..RetryPolicy::default()
    };
    if let Some(n) = spec.num_retries {
        policy.num_retries = n;
    }
    if let Some(b) = spec.backoff {
        policy.backoff_base = b.base_interval.0;
        policy.backoff_max = b.max_interval.map_or(b.base_interval.0 * 10, |m| m.0);
        if policy.backoff_max < policy.backoff_base {
            return invalid(
                format!("{at}.backoff.maxInterval"),
                "is shorter than baseInterval; make it at least as long",
            );
        }
    }
    Ok(policy)
}
