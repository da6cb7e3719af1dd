//! `RouteConfiguration` (RDS, and the inline `route_config` of an HTTP connection manager)
//! into a [`RouteTable`]: virtual hosts chosen by authority, routes matched in order, each
//! forwarding to a cluster (or a weighted pick) or answering directly.
//!
//! - **Virtual hosts**: `name`, `domains` (lower-cased; unique across the table, as Envoy
//!   requires), `routes`, `retry_policy`, `include_request_attempt_count`, header
//!   mutations.
//! - **Match**: `prefix`, `path`, `safe_regex` (whole path, RE2 syntax via the `regex`
//!   crate), `path_separated_prefix`; `case_sensitive` (default true); `headers` (`string_match`
//!   exact/prefix/suffix/contains/safe_regex with `ignore_case`, `present_match`, the
//!   legacy `exact_match`/`prefix_match`/`suffix_match`/`contains_match`/`safe_regex_match`,
//!   no specifier = present; `invert_match`; `treat_missing_header_as_empty` when it changes
//!   nothing); `query_parameters` (`string_match`, `present_match`, no specifier = present).
//!   `ignore_case` becomes a `(?i)` regex (Unicode case folding, where Envoy folds ASCII).
//! - **Route action**: `cluster` / `weighted_clusters` (`total_weight`, when given, must be
//!   the sum), `prefix_rewrite`, `regex_rewrite`, `host_rewrite_literal`, `timeout` (absent:
//!   None, Envoy's 15 s; `0s`: none), `retry_policy` (`retry_on`, `num_retries` default 1,
//!   `per_try_timeout` (`0s`: none), `retriable_status_codes`, the `previous_hosts`
//!   predicate, `retry_back_off`). `retry_on: reset-before-request` (istiod's default for
//!   inbound routes) is carried as `connect-failure,refused-stream`, the failures where the
//!   request surely never reached the server; `http3-post-connect-failure` is dropped (no
//!   HTTP/3). `direct_response`: status 200-599 and an inline body.
//! - **Headers to add** (`HeaderValueOption`): `append_action` APPEND_IF_EXISTS_OR_ADD →
//!   append, OVERWRITE_IF_EXISTS_OR_ADD → replace; the legacy `append`; an empty value is
//!   left out unless `keep_empty_value`; `%%` is a literal `%`.
//!
//! Refused (NACK): `redirect`, `filter_action`, `non_forwarding_action`,
//! `request_mirror_policies` (anywhere), `cluster_header`, cluster specifier plugins,
//! `metadata_match`, `auto_host_rewrite`, `host_rewrite_header`, `host_rewrite_path_regex`,
//! `path_rewrite` / `path_rewrite_policy`, `prefix_rewrite` with a regex match or with
//! `regex_rewrite`, internal redirects, hedging, upgrades other than websocket, per-cluster
//! header mutations and host rewrites in `weighted_clusters`, `random_value_specifier`;
//! matches on `connect_matcher`, `path_match_policy`, `runtime_fraction`, `cookies`, `grpc`,
//! `tls_context`, `dynamic_metadata` (JWT claim routing), `filter_state`, `range_match`,
//! custom string matchers, pseudo-headers other than `:authority`/`:method`/`:path`; retry
//! conditions Skiff lacks (`retriable-headers`, `envoy-ratelimited`, ...),
//! `retriable_headers`, `retriable_request_headers`, `retry_options_predicates`,
//! predicates other than `previous_hosts`, `retry_policy_typed_config`; `vhds`,
//! `internal_only_headers`, `most_specific_header_mutations_wins`, `vhost_header`,
//! `ignore_path_parameters_in_path_matching`, `route_specifiers`; virtual host `matcher`,
//! `require_tls`, `include_attempt_count_in_response`, `include_is_timeout_retry_header`;
//! header mutations of pseudo-headers or `host`, `append_action` ADD_IF_ABSENT and
//! OVERWRITE_IF_EXISTS (which Skiff would apply when the header is absent), header values
//! with Envoy's `%COMMAND%` substitutions; direct response bodies from files or the
//! environment, `body_format`, bodies over `max_direct_response_body_size_bytes` (default
//! 4096); regexes that do not compile; a `typed_per_filter_config` of a type Skiff does not
//! ignore (unless wrapped in an optional or disabled `FilterConfig`).
//!
//! Accepted but not honoured:
//! - route: `decorator`, `metadata`, `tracing`, `stat_prefix`, `per_request_buffer_limit_bytes`,
//!   `request_body_buffer_limit`, `typed_per_filter_config` of ignored filters (fault
//!   injection and CORS from a VirtualService are not applied);
//! - route action: `hash_policy` (only consistent-hash balancing reads it, which Skiff
//!   does not do), `max_stream_duration`, `max_grpc_timeout` and `grpc_timeout_offset` (the
//!   `grpc-timeout` header does not shorten the route timeout), `idle_timeout`,
//!   `cluster_not_found_response_code` (Skiff answers 503), `append_x_forwarded_host`,
//!   `priority`, `rate_limits`, `include_vh_rate_limits`, `cors`, `early_data_policy`,
//!   `flush_timeout`, `max_internal_redirects`;
//! - retry policy: `retry_priority` (istiod's `previous_priorities`),
//!   `host_selection_retry_max_attempts`, `per_try_idle_timeout`,
//!   `rate_limited_retry_back_off`, `refresh_cluster_on_retry`;
//! - virtual host: `virtual_clusters`, `rate_limits`, `cors`, `metadata`,
//!   `per_request_buffer_limit_bytes`, `request_body_buffer_limit`, a hedge policy that
//!   does not hedge;
//! - table: `validate_clusters`, `metadata`, `ignore_port_in_host_matching` (Skiff always
//!   also tries the authority without its port); weighted clusters' `runtime_key_prefix`.

use std::collections::HashMap;

use envoy_types::pb::envoy::config::route::v3::{
    FilterConfig, HeaderMatcher as HeaderMatcherProto, QueryParameterMatcher, Route as RouteProto,
    RouteConfiguration, RouteMatch as RouteMatchProto, VirtualHost as VirtualHostProto,
    header_matcher::HeaderMatchSpecifier, query_parameter_matcher::QueryParameterMatchSpecifier,
    route_match::PathSpecifier, virtual_host::TlsRequirementType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::google::protobuf::Any;

use super::Invalid;
use super::listener::is_ignored;
use super::listener::proto::{bad_regex, decode, same_type, type_name, unsupported};
use crate::route::{
    HeaderMatcher, PathMatch, Pattern, QueryMatcher, Route, RouteMatch, RouteTable, ValueMatch,
    VirtualHost,
};

#[path = "route_action.rs"]
mod action;

/// Envoy's default `max_direct_response_body_size_bytes`.
const DEFAULT_MAX_DIRECT_BODY: u32 = 4096;

const FILTER_CONFIG: &str = "type.googleapis.com/envoy.config.route.v3.FilterConfig";

/// Translates one RDS resource (or an inline `route_config`).
pub fn route_configuration(r: &RouteConfiguration) -> Result<RouteTable, Invalid> {
    if r.vhds.is_some() {
        return Err(unsupported("vhds", "virtual host discovery (VHDS)"));
    }
    if !r.internal_only_headers.is_empty() {
        return Err(unsupported(
            "internal_only_headers",
            "internal-only headers",
        ));
    }
    if r.most_specific_header_mutations_wins {
        return Err(unsupported(
            "most_specific_header_mutations_wins",
            "this order of header mutations (Skiff applies route, then virtual host, then \
             table, as Envoy does by default)",
        ));
    }
    if !r.cluster_specifier_plugins.is_empty() {
        return Err(unsupported(
            "cluster_specifier_plugins",
            "cluster specifier plugins",
        ));
    }
    if !r.request_mirror_policies.is_empty() {
        return Err(unsupported("request_mirror_policies", "request mirroring"));
    }
    if !r.vhost_header.is_empty() {
        return Err(unsupported(
            "vhost_header",
            "choosing virtual hosts by a header other than the authority",
        ));
    }
    if r.ignore_path_parameters_in_path_matching {
        return Err(unsupported(
            "ignore_path_parameters_in_path_matching",
            "ignoring path parameters",
        ));
    }
    if !r.route_specifiers.is_empty() {
        return Err(unsupported(
            "route_specifiers",
            "route specifier extensions",
        ));
    }
    per_filter_configs(&r.typed_per_filter_config, "typed_per_filter_config")?;
    let max_body = r
        .max_direct_response_body_size_bytes
        .as_ref()
        .map_or(DEFAULT_MAX_DIRECT_BODY, |m| m.value);
    let mut virtual_hosts: Vec<VirtualHost> = Vec::with_capacity(r.virtual_hosts.len());
    for (k, v) in r.virtual_hosts.iter().enumerate() {
        let at = format!("virtual_hosts[{k}]");
        let host = virtual_host(v, max_body).map_err(|e| e.at(&at))?;
        for (d, domain) in host.domains.iter().enumerate() {
            let owner = virtual_hosts
                .iter()
                .enumerate()
                .find_map(|(o, h)| h.domains.iter().position(|x| x == domain).map(|p| (o, p)));
            if let Some((o, p)) = owner {
                return Err(Invalid::new(
                    format!("{at}.domains[{d}]"),
                    format!(
                        "{domain:?} is also virtual_hosts[{o}].domains[{p}]; each domain \
                         belongs to one virtual host, as Envoy requires"
                    ),
                ));
            }
        }
        virtual_hosts.push(host);
    }
    let headers = action::mutations(
        &r.request_headers_to_add,
        &r.request_headers_to_remove,
        &r.response_headers_to_add,
        &r.response_headers_to_remove,
    )?;
    Ok(RouteTable {
        name: r.name.clone(),
        virtual_hosts,
        headers,
    })
}

fn virtual_host(v: &VirtualHostProto, max_body: u32) -> Result<VirtualHost, Invalid> {
    if v.matcher.is_some() {
        return Err(unsupported("matcher", "the matcher tree; use routes"));
    }
    if v.require_tls != TlsRequirementType::None as i32 {
        return Err(unsupported("require_tls", "requiring TLS from clients"));
    }
    if v.retry_policy_typed_config.is_some() {
        return Err(unsupported(
            "retry_policy_typed_config",
            "retry policy extensions",
        ));
    }
    if v.include_attempt_count_in_response {
        return Err(unsupported(
            "include_attempt_count_in_response",
            "the attempt count in responses",
        ));
    }
    if v.include_is_timeout_retry_header {
        return Err(unsupported(
            "include_is_timeout_retry_header",
            "the x-envoy-is-timeout-retry header",
        ));
    }
    if !v.request_mirror_policies.is_empty() {
        return Err(unsupported("request_mirror_policies", "request mirroring"));
    }
    if !v.route_specifiers.is_empty() {
        return Err(unsupported(
            "route_specifiers",
            "route specifier extensions",
        ));
    }
    action::hedge(v.hedge_policy.as_ref()).map_err(|e| e.at("hedge_policy"))?;
    per_filter_configs(&v.typed_per_filter_config, "typed_per_filter_config")?;
    if v.domains.is_empty() {
        return Err(Invalid::new(
            "domains",
            "is empty, so no request would match; list host names, or \"*\"",
        ));
    }
    let mut domains: Vec<String> = Vec::with_capacity(v.domains.len());
    for (d, domain) in v.domains.iter().enumerate() {
        let domain = domain.to_ascii_lowercase();
        if domains.contains(&domain) {
            return Err(Invalid::new(
                format!("domains[{d}]"),
                format!("{domain:?} is listed twice; Envoy requires each domain once"),
            ));
        }
        domains.push(domain);
    }
    let mut routes = Vec::with_capacity(v.routes.len());
    for (k, r) in v.routes.iter().enumerate() {
        routes.push(route(r, max_body).map_err(|e| e.at(&format!("routes[{k}]")))?);
    }
    let retry_policy = v
        .retry_policy
        .as_ref()
        .map(|p| action::retry_policy(p).map_err(|e| e.at("retry_policy")))
        .transpose()?;
    let headers = action::mutations(
        &v.request_headers_to_add,
        &v.request_headers_to_remove,
        &v.response_headers_to_add,
        &v.response_headers_to_remove,
    )?;
    Ok(VirtualHost {
        name: if v.name.is_empty() {
            domains[0].clone()
        } else {
            v.name.clone()
        },
        domains,
        routes,
        retry_policy,
        include_request_attempt_count: v.include_request_attempt_count,
        headers,
    })
}

fn route(r: &RouteProto, max_body: u32) -> Result<Route, Invalid> {
    let Some(m) = &r.r#match else {
        return Err(Invalid::new(
            "match",
            "is missing; write e.g. match: {prefix: \"/\"}",
        ));
    };
    let matcher = route_match(m).map_err(|e| e.at("match"))?;
    if !r.route_specifiers.is_empty() {
        return Err(unsupported(
            "route_specifiers",
            "route specifier extensions",
        ));
    }
    per_filter_configs(&r.typed_per_filter_config, "typed_per_filter_config")?;
    let (action, timeout, retry_policy) = action::action(r, &matcher.path, max_body)?;
    let headers = action::mutations(
        &r.request_headers_to_add,
        &r.request_headers_to_remove,
        &r.response_headers_to_add,
        &r.response_headers_to_remove,
    )?;
    Ok(Route {
        name: r.name.clone(),
        matcher,
        action,
        headers,
        timeout,
        retry_policy,
    })
}

fn route_match(m: &RouteMatchProto) -> Result<RouteMatch, Invalid> {
    if m.runtime_fraction.is_some() {
        return Err(unsupported(
            "runtime_fraction",
            "matching a runtime fraction",
        ));
    }
    if !m.cookies.is_empty() {
        return Err(unsupported("cookies", "matching on cookies"));
    }
    if m.grpc.is_some() {
        return Err(unsupported("grpc", "matching gRPC requests only"));
    }
    if m.tls_context.is_some() {
        return Err(unsupported("tls_context", "matching on the TLS context"));
    }
    if !m.dynamic_metadata.is_empty() {
        return Err(unsupported(
            "dynamic_metadata",
            "matching on dynamic metadata (such as JWT claims)",
        ));
    }
    if !m.filter_state.is_empty() {
        return Err(unsupported("filter_state", "matching on filter state"));
    }
    let path = match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) => PathMatch::Prefix(p.clone()),
        Some(PathSpecifier::Path(p)) => PathMatch::Exact(p.clone()),
        Some(PathSpecifier::SafeRegex(r)) => PathMatch::Regex(
            Pattern::full(&r.regex).map_err(|e| bad_regex("safe_regex.regex", &r.regex, &e))?,
        ),
        Some(PathSpecifier::PathSeparatedPrefix(p)) => {
            if !p.starts_with('/') || p.ends_with('/') || p.contains(['?', '#']) {
                return Err(Invalid::new(
                    "path_separated_prefix",
                    format!(
                        "{p:?} must start with /, not end in /, and hold no ? or #, as Envoy \
                         requires"
                    ),
                ));
            }
            PathMatch::PathSeparatedPrefix(p.clone())
        }
        Some(PathSpecifier::ConnectMatcher(_)) => {
            return Err(unsupported("connect_matcher", "CONNECT routes"));
        }
        Some(PathSpecifier::PathMatchPolicy(_)) => {
            return Err(unsupported("path_match_policy", "URI template matching"));
        }
        None => {
            return Err(Invalid::new(
                "prefix",
                "is missing, as are path, safe_regex and path_separated_prefix; write one",
            ));
        }
    };
    let mut headers = Vec::with_capacity(m.headers.len());
    for (k, h) in m.headers.iter().enumerate() {
        headers.push(header_matcher(h).map_err(|e| e.at(&format!("headers[{k}]")))?);
    }
    let mut query_parameters = Vec::with_capacity(m.query_parameters.len());
    for (k, q) in m.query_parameters.iter().enumerate() {
        query_parameters
            .push(query_matcher(q).map_err(|e| e.at(&format!("query_parameters[{k}]")))?);
    }
    Ok(RouteMatch {
        path,
        case_sensitive: m.case_sensitive.as_ref().is_none_or(|b| b.value),
        headers,
        query_parameters,
    })
}

// Reads the deprecated `*_match` fields, which older control planes send.
#[allow(deprecated)]
fn header_matcher(h: &HeaderMatcherProto) -> Result<HeaderMatcher, Invalid> {
    let name = match_header_name(&h.name).map_err(|e| e.at("name"))?;
    let full = |r: &str, key: &str| Pattern::full(r).map_err(|e| bad_regex(key, r, &e));
    let kind = match &h.header_match_specifier {
        None => ValueMatch::Present(true),
        Some(HeaderMatchSpecifier::ExactMatch(v)) => ValueMatch::Exact(v.clone()),
        Some(HeaderMatchSpecifier::PrefixMatch(v)) => ValueMatch::Prefix(v.clone()),
        Some(HeaderMatchSpecifier::SuffixMatch(v)) => ValueMatch::Suffix(v.clone()),
        Some(HeaderMatchSpecifier::ContainsMatch(v)) => ValueMatch::Contains(v.clone()),
        Some(HeaderMatchSpecifier::SafeRegexMatch(r)) => {
            ValueMatch::Regex(full(&r.regex, "safe_regex_match.regex")?)
        }
        Some(HeaderMatchSpecifier::PresentMatch(p)) => ValueMatch::Present(*p),
        Some(HeaderMatchSpecifier::StringMatch(s)) => {
            string_match(s).map_err(|e| e.at("string_match"))?
        }
        Some(HeaderMatchSpecifier::RangeMatch(_)) => {
            return Err(unsupported(
                "range_match",
                "matching header values as ranges",
            ));
        }
    };
    // A missing header counts as "" for this flag. Skiff tests a missing header as absent,
    // which comes to the same unless the matcher accepts "".
    if h.treat_missing_header_as_empty
        && (matches!(kind, ValueMatch::Present(_)) || kind.matches(Some("")))
    {
        return Err(unsupported(
            "treat_missing_header_as_empty",
            "treating a missing header as empty with a matcher that accepts the empty value",
        ));
    }
    Ok(HeaderMatcher {
        name,
        kind,
        invert: h.invert_match,
    })
}

fn query_matcher(q: &QueryParameterMatcher) -> Result<QueryMatcher, Invalid> {
    let kind = match &q.query_parameter_match_specifier {
        Some(QueryParameterMatchSpecifier::StringMatch(s)) => {
            string_match(s).map_err(|e| e.at("string_match"))?
        }
        // Envoy tests presence whether present_match says true or false.
        Some(QueryParameterMatchSpecifier::PresentMatch(_)) | None => ValueMatch::Present(true),
    };
    Ok(QueryMatcher {
        name: q.name.clone(),
        kind,
    })
}

/// A `StringMatcher`; `ignore_case` becomes a case-insensitive whole-value regex.
fn string_match(s: &StringMatcher) -> Result<ValueMatch, Invalid> {
    let folded = |before: &str, text: &str, after: &str| {
        let source = format!("(?is){before}{}{after}", regex::escape(text));
        Pattern::full(&source)
            .map(ValueMatch::Regex)
            .map_err(|e| bad_regex("ignore_case", &source, &e))
    };
    let ic = s.ignore_case;
    match &s.match_pattern {
        Some(MatchPattern::Exact(v)) if ic => folded("", v, ""),
        Some(MatchPattern::Prefix(v)) if ic => folded("", v, ".*"),
        Some(MatchPattern::Suffix(v)) if ic => folded(".*", v, ""),
        Some(MatchPattern::Contains(v)) if ic => folded(".*", v, ".*"),
        Some(MatchPattern::Exact(v)) => Ok(ValueMatch::Exact(v.clone())),
        Some(MatchPattern::Prefix(v)) => Ok(ValueMatch::Prefix(v.clone())),
        Some(MatchPattern::Suffix(v)) => Ok(ValueMatch::Suffix(v.clone())),
        Some(MatchPattern::Contains(v)) => Ok(ValueMatch::Contains(v.clone())),
        // Envoy ignores ignore_case for regexes, which say their own case with (?i).
        Some(MatchPattern::SafeRegex(r)) => Pattern::full(&r.regex)
            .map(ValueMatch::Regex)
            .map_err(|e| bad_regex("safe_regex.regex", &r.regex, &e)),
        Some(MatchPattern::Custom(_)) => Err(unsupported("custom", "custom string matchers")),
        None => Err(Invalid::new(
            "",
            "says nothing to match; write exact, prefix, suffix, contains or safe_regex",
        )),
    }
}

/// A header name to match on: a valid HTTP name (lower-cased), or a pseudo-header that
/// Skiff answers from the request line.
fn match_header_name(name: &str) -> Result<String, Invalid> {
    let lower = name.to_ascii_lowercase();
    if lower.starts_with(':') {
        return match lower.as_str() {
            ":authority" | ":method" | ":path" => Ok(lower),
            _ => Err(Invalid::new(
                "",
                format!(
                    "{name:?} is not a pseudo-header Skiff matches; it matches :authority, :method and :path"
                ),
            )),
        };
    }
    match hyper::header::HeaderName::from_bytes(name.as_bytes()) {
        Ok(n) => Ok(n.as_str().to_owned()),
        Err(_) => Err(Invalid::new(
            "",
            format!("{name:?} is not a valid HTTP header name"),
        )),
    }
}

/// Per-filter configs on a table, virtual host, route or weighted cluster: each must be
/// of a type Skiff ignores, or wrapped in a `FilterConfig` that is optional, disabled or
/// holds such a type. Errors name the map key after `field`.
fn per_filter_configs(map: &HashMap<String, Any>, field: &str) -> Result<(), Invalid> {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for key in keys {
        let any = &map[key];
        let at = format!("{field}[{key:?}]");
        let inner = if same_type(&any.type_url, FILTER_CONFIG) {
            let fc: FilterConfig = decode(any, FILTER_CONFIG).map_err(|e| e.at(&at))?;
            if fc.is_optional || fc.disabled {
                continue;
            }
            fc.config.map(|c| c.type_url).unwrap_or_default()
        } else {
            any.type_url.clone()
        };
        if !is_ignored(&inner) {
            return Err(Invalid::new(
                at,
                format!(
                    "is a {} config, which Skiff does not implement; it accepts only the \
                     per-route configs of the filters it ignores (IGNORED_TYPES)",
                    type_name(&inner)
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
