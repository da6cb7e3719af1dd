//! A route's action (forward, with rewrites, timeout and retries; or answer directly), and
//! the header mutations of routes, virtual hosts and tables. See the module above for what
//! is honoured, ignored and refused.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    HeaderValueOption, data_source, header_value_option::HeaderAppendAction,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, HedgePolicy, RetryPolicy as RetryPolicyProto, Route as RouteProto,
    RouteAction as RouteActionProto, WeightedCluster, retry_policy::retry_host_predicate, route,
    route_action::ClusterSpecifier, route_action::HostRewriteSpecifier,
    route_action::InternalRedirectAction,
};

use super::super::listener::proto::{bad_regex, duration, opt_duration, same_type, unsupported};
use super::per_filter_configs;
use crate::route::{
    HeaderMutations, HeaderToAdd, PathMatch, Pattern, RegexRewrite, RetryOn, RetryPolicy,
    RouteAction,
};
use crate::snapshot::ClusterChoice;
use crate::xds::translate::Invalid;

/// What a route does, its timeout and its retry policy.
pub(super) type Action = (RouteAction, Option<Duration>, Option<RetryPolicy>);

const PREVIOUS_HOSTS: &str = "envoy.retry_host_predicates.previous_hosts";
const PREVIOUS_HOSTS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";

/// The action of a route; errors are relative to the route.
pub(super) fn action(r: &RouteProto, path: &PathMatch, max_body: u32) -> Result<Action, Invalid> {
    match &r.action {
        Some(route::Action::Route(a)) => route_action(a, path).map_err(|e| e.at("route")),
        Some(route::Action::DirectResponse(d)) => {
            let action = direct_response(d, max_body).map_err(|e| e.at("direct_response"))?;
            Ok((action, None, None))
        }
        Some(route::Action::Redirect(_)) => Err(unsupported("redirect", "redirect responses")),
        Some(route::Action::FilterAction(_)) => Err(unsupported("filter_action", "filter actions")),
        Some(route::Action::NonForwardingAction(_)) => Err(unsupported(
            "non_forwarding_action",
            "non-forwarding routes",
        )),
        None => Err(Invalid::new(
            "route",
            "is missing, as are direct_response and the other actions; write one",
        )),
    }
}

// Reads `internal_redirect_action`, deprecated but still what older istiods send.
#[allow(deprecated)]
fn route_action(a: &RouteActionProto, path: &PathMatch) -> Result<Action, Invalid> {
    let cluster = match &a.cluster_specifier {
        Some(ClusterSpecifier::Cluster(name)) if !name.is_empty() => {
            ClusterChoice::Single(name.clone())
        }
        Some(ClusterSpecifier::Cluster(_)) => {
            return Err(Invalid::new(
                "cluster",
                "is empty; name the cluster to forward to",
            ));
        }
        Some(ClusterSpecifier::WeightedClusters(w)) => {
            weighted(w).map_err(|e| e.at("weighted_clusters"))?
        }
        Some(ClusterSpecifier::ClusterHeader(_)) => {
            return Err(unsupported(
                "cluster_header",
                "choosing the cluster by a header",
            ));
        }
        Some(ClusterSpecifier::ClusterSpecifierPlugin(_)) => {
            return Err(unsupported(
                "cluster_specifier_plugin",
                "cluster specifier plugins",
            ));
        }
        Some(ClusterSpecifier::InlineClusterSpecifierPlugin(_)) => {
            return Err(unsupported(
                "inline_cluster_specifier_plugin",
                "cluster specifier plugins",
            ));
        }
        None => {
            return Err(Invalid::new(
                "cluster",
                "is missing, as is weighted_clusters; name where to forward",
            ));
        }
    };
    if a.metadata_match.is_some() {
        return Err(unsupported(
            "metadata_match",
            "subset load balancing by metadata",
        ));
    }
    if !a.request_mirror_policies.is_empty() {
        return Err(unsupported("request_mirror_policies", "request mirroring"));
    }
    if a.retry_policy_typed_config.is_some() {
        return Err(unsupported(
            "retry_policy_typed_config",
            "retry policy extensions",
        ));
    }
    if a.internal_redirect_policy.is_some()
        || a.internal_redirect_action == InternalRedirectAction::HandleInternalRedirect as i32
    {
        return Err(unsupported(
            "internal_redirect_policy",
            "internal redirects",
        ));
    }
    if a.path_rewrite_policy.is_some() {
        return Err(unsupported("path_rewrite_policy", "URI template rewrites"));
    }
    if !a.path_rewrite.is_empty() {
        return Err(unsupported("path_rewrite", "path rewrite formatters"));
    }
    hedge(a.hedge_policy.as_ref()).map_err(|e| e.at("hedge_policy"))?;
    for (k, u) in a.upgrade_configs.iter().enumerate() {
        let enabled = u.enabled.as_ref().is_none_or(|e| e.value);
        if enabled && !u.upgrade_type.eq_ignore_ascii_case("websocket") {
            return Err(Invalid::new(
                format!("upgrade_configs[{k}].upgrade_type"),
                format!(
                    "{:?} is not supported; Skiff passes websocket upgrades only",
                    u.upgrade_type
                ),
            ));
        }
    }
    let prefix_rewrite = Some(a.prefix_rewrite.clone()).filter(|p| !p.is_empty());
    if let Some(p) = &prefix_rewrite {
        if matches!(path, PathMatch::Regex(_)) {
            return Err(Invalid::new(
                "prefix_rewrite",
                "cannot follow a safe_regex match, which has no prefix to replace; use \
                 regex_rewrite",
            ));
        }
        if p.chars().any(char::is_control) {
            return Err(Invalid::new(
                "prefix_rewrite",
                format!("{p:?} holds a control character"),
            ));
        }
    }
    let regex_rewrite = match &a.regex_rewrite {
        None => None,
        Some(_) if prefix_rewrite.is_some() => {
            return Err(Invalid::new(
                "regex_rewrite",
                "is set next to prefix_rewrite; Envoy takes one of them",
            ));
        }
        Some(r) => {
            let Some(pattern) = &r.pattern else {
                return Err(Invalid::new("regex_rewrite.pattern", "is missing"));
            };
            let compiled = Pattern::search(&pattern.regex)
                .map_err(|e| bad_regex("regex_rewrite.pattern.regex", &pattern.regex, &e))?;
            Some(RegexRewrite::new(compiled, &r.substitution))
        }
    };
    let host_rewrite = match &a.host_rewrite_specifier {
        None => None,
        Some(HostRewriteSpecifier::HostRewriteLiteral(h)) => {
            Some(h.clone()).filter(|h| !h.is_empty())
        }
        Some(HostRewriteSpecifier::AutoHostRewrite(b)) if !b.value => None,
        Some(HostRewriteSpecifier::AutoHostRewrite(_)) => {
            return Err(unsupported(
                "auto_host_rewrite",
                "rewriting the host to the endpoint's",
            ));
        }
        Some(HostRewriteSpecifier::HostRewriteHeader(_)) => {
            return Err(unsupported(
                "host_rewrite_header",
                "host rewrites from a header",
            ));
        }
        Some(HostRewriteSpecifier::HostRewritePathRegex(_)) => {
            return Err(unsupported(
                "host_rewrite_path_regex",
                "host rewrites from the path",
            ));
        }
        Some(HostRewriteSpecifier::HostRewrite(_)) => {
            return Err(unsupported("host_rewrite", "host rewrite formatters"));
        }
    };
    let timeout = opt_duration(a.timeout.as_ref(), "timeout")?;
    let retry = a
        .retry_policy
        .as_ref()
        .map(|p| retry_policy(p).map_err(|e| e.at("retry_policy")))
        .transpose()?;
    let action = RouteAction::Cluster {
        cluster,
        prefix_rewrite,
        regex_rewrite,
        host_rewrite,
    };
    Ok((action, timeout, retry))
}

// Reads `total_weight`, deprecated but still checked by Envoy.
#[allow(deprecated)]
fn weighted(w: &WeightedCluster) -> Result<ClusterChoice, Invalid> {
    if w.random_value_specifier.is_some() {
        return Err(unsupported(
            "random_value_specifier",
            "picking by a header or hash value",
        ));
    }
    if w.clusters.is_empty() {
        return Err(Invalid::new(
            "clusters",
            "is empty; list at least one cluster",
        ));
    }
    let mut picks = Vec::with_capacity(w.clusters.len());
    let mut total: u32 = 0;
    for (k, c) in w.clusters.iter().enumerate() {
        let at = format!("clusters[{k}]");
        if !c.cluster_header.is_empty() {
            return Err(unsupported(
                format!("{at}.cluster_header"),
                "choosing the cluster by a header",
            ));
        }
        if c.name.is_empty() {
            return Err(Invalid::new(format!("{at}.name"), "is empty"));
        }
        if c.metadata_match.is_some() {
            return Err(unsupported(
                format!("{at}.metadata_match"),
                "subset load balancing by metadata",
            ));
        }
        if !c.request_headers_to_add.is_empty()
            || !c.request_headers_to_remove.is_empty()
            || !c.response_headers_to_add.is_empty()
            || !c.response_headers_to_remove.is_empty()
        {
            return Err(unsupported(
                format!("{at}.request_headers_to_add"),
                "header mutations per weighted cluster; set them on the route",
            ));
        }
        if c.host_rewrite_specifier.is_some() {
            return Err(unsupported(
                format!("{at}.host_rewrite_literal"),
                "host rewrites per weighted cluster; set it on the route",
            ));
        }
        per_filter_configs(
            &c.typed_per_filter_config,
            &format!("{at}.typed_per_filter_config"),
        )?;
        let weight = c.weight.as_ref().map_or(0, |w| w.value);
        total = total.checked_add(weight).ok_or_else(|| {
            Invalid::new(
                format!("{at}.weight"),
                format!("the weights add up to more than {}", u32::MAX),
            )
        })?;
        picks.push((c.name.clone(), weight));
    }
    if total == 0 {
        return Err(Invalid::new(
            "clusters",
            "has no positive weight, so no cluster could be picked",
        ));
    }
    if let Some(t) = &w.total_weight
        && t.value != total
    {
        return Err(Invalid::new(
            "total_weight",
            format!(
                "is {}, but the weights add up to {total}; Envoy requires them to match",
                t.value
            ),
        ));
    }
    Ok(ClusterChoice::Weighted(picks))
}

/// Accepts a hedge policy only when it asks for no hedging.
pub(super) fn hedge(h: Option<&HedgePolicy>) -> Result<(), Invalid> {
    let Some(h) = h else { return Ok(()) };
    let hedges = h.hedge_on_per_try_timeout
        || h.initial_requests.as_ref().is_some_and(|n| n.value > 1)
        || h.additional_request_chance
            .as_ref()
            .is_some_and(|p| p.numerator > 0);
    if hedges {
        return Err(unsupported("", "request hedging"));
    }
    Ok(())
}

fn direct_response(d: &DirectResponseAction, max_body: u32) -> Result<RouteAction, Invalid> {
    let status = match u16::try_from(d.status) {
        Ok(s @ 200..=599) => s,
        _ => {
            return Err(Invalid::new(
                "status",
                format!(
                    "{} is not a status Skiff answers with; write 200 to 599",
                    d.status
                ),
            ));
        }
    };
    if d.body_format.is_some() {
        return Err(unsupported("body_format", "formatted bodies"));
    }
    let body = match d.body.as_ref().and_then(|b| b.specifier.as_ref()) {
        None => String::new(),
        Some(data_source::Specifier::InlineString(s)) => s.clone(),
        Some(data_source::Specifier::InlineBytes(b)) => {
            String::from_utf8(b.clone()).map_err(|_| {
                Invalid::new("body.inline_bytes", "is not UTF-8; Skiff sends text bodies")
            })?
        }
        Some(data_source::Specifier::Filename(_)) => {
            return Err(unsupported("body.filename", "bodies read from files"));
        }
        Some(data_source::Specifier::EnvironmentVariable(_)) => {
            return Err(unsupported(
                "body.environment_variable",
                "bodies read from the environment",
            ));
        }
    };
    if body.len() as u64 > u64::from(max_body) {
        return Err(Invalid::new(
            "body",
            format!(
                "is {} bytes, more than max_direct_response_body_size_bytes ({max_body})",
                body.len()
            ),
        ));
    }
    Ok(RouteAction::DirectResponse { status, body })
}

/// Envoy's `retry_on` names that Skiff carries as others, or drops.
fn retry_on(text: &str) -> Result<RetryOn, Invalid> {
    let mut on = RetryOn::default();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        on = on
            | match name {
                // The failures where the request surely never reached the server.
                "reset-before-request" => RetryOn::CONNECT_FAILURE | RetryOn::REFUSED_STREAM,
                // Skiff speaks no HTTP/3, so this never applies.
                "http3-post-connect-failure" => RetryOn::default(),
                _ => RetryOn::parse(name).map_err(|unknown| {
                    Invalid::new(
                        "retry_on",
                        format!(
                            "{unknown:?} is not a retry condition Skiff supports; it supports {}, \
                             reset-before-request and http3-post-connect-failure",
                            RetryOn::known()
                        ),
                    )
                })?,
            };
    }
    Ok(on)
}

pub(super) fn retry_policy(p: &RetryPolicyProto) -> Result<RetryPolicy, Invalid> {
    if !p.retriable_headers.is_empty() {
        return Err(unsupported(
            "retriable_headers",
            "retrying on response headers",
        ));
    }
    if !p.retriable_request_headers.is_empty() {
        return Err(unsupported(
            "retriable_request_headers",
            "retrying by request headers",
        ));
    }
    if !p.retry_options_predicates.is_empty() {
        return Err(unsupported(
            "retry_options_predicates",
            "retry options predicates",
        ));
    }
    let mut codes = Vec::with_capacity(p.retriable_status_codes.len());
    for (k, code) in p.retriable_status_codes.iter().enumerate() {
        match u16::try_from(*code) {
            Ok(c @ 100..=599) => codes.push(c),
            _ => {
                return Err(Invalid::new(
                    format!("retriable_status_codes[{k}]"),
                    format!("{code} is not an HTTP status; write 100 to 599"),
                ));
            }
        }
    }
    let mut previous_hosts = false;
    for (k, h) in p.retry_host_predicate.iter().enumerate() {
        let typed_previous = matches!(&h.config_type,
            Some(retry_host_predicate::ConfigType::TypedConfig(any))
                if same_type(&any.type_url, PREVIOUS_HOSTS_TYPE));
        if h.name == PREVIOUS_HOSTS || typed_previous {
            previous_hosts = true;
        } else {
            return Err(Invalid::new(
                format!("retry_host_predicate[{k}]"),
                format!(
                    "{:?} is not supported; the one predicate Skiff has is {PREVIOUS_HOSTS}",
                    h.name
                ),
            ));
        }
    }
    let mut policy = RetryPolicy {
        retry_on: retry_on(&p.retry_on)?,
        // `0s` is Envoy's "no per-try timeout".
        per_try_timeout: opt_duration(p.per_try_timeout.as_ref(), "per_try_timeout")?
            .filter(|d| !d.is_zero()),
        retriable_status_codes: codes,
        retry_host_predicate_previous_hosts: previous_hosts,
        ..RetryPolicy::default()
    };
    if let Some(n) = &p.num_retries {
        policy.num_retries = n.value;
    }
    if let Some(b) = &p.retry_back_off {
        let Some(base) = &b.base_interval else {
            return Err(Invalid::new("retry_back_off.base_interval", "is missing"));
        };
        let base = duration(base, "retry_back_off.base_interval")?;
        if base.is_zero() {
            return Err(Invalid::new(
                "retry_back_off.base_interval",
                "is 0; Envoy requires a positive interval",
            ));
        }
        let max = match &b.max_interval {
            None => base.saturating_mul(10),
            Some(m) => duration(m, "retry_back_off.max_interval")?,
        };
        if max < base {
            return Err(Invalid::new(
                "retry_back_off.max_interval",
                "is shorter than base_interval; Envoy requires at least as long",
            ));
        }
        policy.backoff_base = base;
        policy.backoff_max = max;
    }
    Ok(policy)
}

/// The four header lists of a route, virtual host or table.
pub(super) fn mutations(
    request_add: &[HeaderValueOption],
    request_remove: &[String],
    response_add: &[HeaderValueOption],
    response_remove: &[String],
) -> Result<HeaderMutations, Invalid> {
    let adds = |list: &[HeaderValueOption], key: &str| -> Result<Vec<HeaderToAdd>, Invalid> {
        let mut out = Vec::with_capacity(list.len());
        for (k, h) in list.iter().enumerate() {
            if let Some(h) = header_to_add(h).map_err(|e| e.at(&format!("{key}[{k}]")))? {
                out.push(h);
            }
        }
        Ok(out)
    };
    let removes = |list: &[String], key: &str| -> Result<Vec<String>, Invalid> {
        list.iter()
            .enumerate()
            .map(|(k, n)| header_name(n).map_err(|e| e.at(&format!("{key}[{k}]"))))
            .collect()
    };
    Ok(HeaderMutations {
        request_headers_to_add: adds(request_add, "request_headers_to_add")?,
        request_headers_to_remove: removes(request_remove, "request_headers_to_remove")?,
        response_headers_to_add: adds(response_add, "response_headers_to_add")?,
        response_headers_to_remove: removes(response_remove, "response_headers_to_remove")?,
    })
}

/// One header to add; None when Envoy would leave it out (an empty value).
// Reads the deprecated `append`, which older control planes send.
#[allow(deprecated)]
fn header_to_add(h: &HeaderValueOption) -> Result<Option<HeaderToAdd>, Invalid> {
    let Some(header) = &h.header else {
        return Err(Invalid::new("header", "is missing"));
    };
    let name = header_name(&header.key).map_err(|e| e.at("header.key"))?;
    let (raw, field) = if header.value.is_empty() && !header.raw_value.is_empty() {
        let text = String::from_utf8(header.raw_value.clone())
            .map_err(|_| Invalid::new("header.raw_value", "is not UTF-8"))?;
        (text, "header.raw_value")
    } else {
        (header.value.clone(), "header.value")
    };
    let value = literal(&raw).map_err(|e| e.at(field))?;
    if hyper::header::HeaderValue::from_str(&value).is_err() {
        return Err(Invalid::new(
            field,
            "holds a character a header value cannot (a line break or control character)",
        ));
    }
    let append = match HeaderAppendAction::try_from(h.append_action) {
        Ok(HeaderAppendAction::AppendIfExistsOrAdd) => match &h.append {
            // The deprecated field, when the new one is left at its default.
            Some(b) => b.value,
            None => true,
        },
        Ok(HeaderAppendAction::OverwriteIfExistsOrAdd) => false,
        Ok(HeaderAppendAction::AddIfAbsent) => {
            return Err(unsupported(
                "append_action",
                "ADD_IF_ABSENT (Skiff appends or replaces)",
            ));
        }
        Ok(HeaderAppendAction::OverwriteIfExists) => {
            return Err(unsupported(
                "append_action",
                "OVERWRITE_IF_EXISTS (Skiff would also add an absent header)",
            ));
        }
        Err(_) => {
            return Err(Invalid::new(
                "append_action",
                format!("{} is not a known append action", h.append_action),
            ));
        }
    };
    if value.is_empty() && !h.keep_empty_value {
        return Ok(None);
    }
    Ok(Some(HeaderToAdd {
        name,
        value,
        append,
    }))
}

/// A header value as sent: `%%` is a literal `%`; any other `%` starts one of Envoy's
/// substitutions (`%DOWNSTREAM_REMOTE_ADDRESS%`), which Skiff does not have.
fn literal(value: &str) -> Result<String, Invalid> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        if rest[i..].starts_with("%%") {
            out.push('%');
            rest = &rest[i + 2..];
        } else {
            return Err(Invalid::new(
                "",
                format!(
                    "{value:?} uses Envoy's %COMMAND% substitutions, which Skiff does not \
                     support; write %% for a literal %"
                ),
            ));
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A header name to add or remove: a valid HTTP name (lower-cased) that is not a
/// pseudo-header or `host`, which Envoy does not let routes change this way.
fn header_name(name: &str) -> Result<String, Invalid> {
    if name.starts_with(':') || name.eq_ignore_ascii_case("host") {
        return Err(Invalid::new(
            "",
            format!(
                "{name:?} cannot be set or removed here; use host_rewrite_literal for the host"
            ),
        ));
    }
    match hyper::header::HeaderName::from_bytes(name.as_bytes()) {
        Ok(n) => Ok(n.as_str().to_owned()),
        Err(_) => Err(Invalid::new(
            "",
            format!("{name:?} is not a valid HTTP header name"),
        )),
    }
}
