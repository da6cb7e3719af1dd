//! Choosing a virtual host and a route for a request, and what the chosen route does to it:
//! the pure part of the HTTP router (Envoy's semantics), apart from the types in `route`.

use hyper::HeaderMap;

use super::*;
use crate::snapshot::ClusterChoice;

/// What route selection needs to know of a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a str,
    /// The request target as sent: path and query (`/api?x=1`).
    pub path: &'a str,
    /// `Host` / `:authority`.
    pub authority: &'a str,
    pub headers: &'a HeaderMap,
}

impl RequestFacts<'_> {
    /// A header's value, with several values joined by `,` as Envoy matches them, and the
    /// pseudo-headers answered from the request line. None: absent (or not UTF-8).
    fn header(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        use std::borrow::Cow;
        match name {
            ":method" => return Some(Cow::Borrowed(self.method)),
            ":path" => return Some(Cow::Borrowed(self.path)),
            ":authority" | "host" => return Some(Cow::Borrowed(self.authority)),
            _ => {}
        }
        let mut values = self.headers.get_all(name).iter();
        let first = values.next()?.to_str().ok()?;
        let mut joined: Option<String> = None;
        for v in values {
            let s = joined.get_or_insert_with(|| first.to_owned());
            s.push(',');
            s.push_str(v.to_str().ok()?);
        }
        Some(joined.map_or(Cow::Borrowed(first), Cow::Owned))
    }

    /// The path without query string and fragment.
    fn path_only(&self) -> &str {
        let end = self.path.find(['?', '#']).unwrap_or(self.path.len());
        &self.path[..end]
    }

    /// The first value of a query parameter (`""` for `?flag`), undecoded, as Envoy
    /// matches them.
    fn query_parameter(&self, name: &str) -> Option<&str> {
        let query = self.path.split_once('?')?.1;
        let query = query.split('#').next().unwrap_or(query);
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then_some(v)
        })
    }
}

/// Whether `text` starts with `prefix`, ignoring ASCII case when asked.
fn starts_with(text: &str, prefix: &str, case_sensitive: bool) -> bool {
    if case_sensitive {
        text.starts_with(prefix)
    } else {
        text.len() >= prefix.len()
            && text.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    }
}

impl RouteMatch {
    pub fn matches(&self, request: &RequestFacts<'_>) -> bool {
        let cs = self.case_sensitive;
        let path_ok = match &self.path {
            PathMatch::Prefix(p) => starts_with(request.path, p, cs),
            PathMatch::Exact(p) => {
                let path = request.path_only();
                path.len() == p.len() && starts_with(path, p, cs)
            }
            PathMatch::Regex(r) => r.is_match(request.path_only()),
            PathMatch::PathSeparatedPrefix(p) => {
                let path = request.path_only();
                starts_with(path, p, cs)
                    && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
            }
        };
        path_ok
            && self.headers.iter().all(|h| {
                let value = request.header(&h.name);
                h.kind.matches(value.as_deref()) != h.invert
            })
            && self
                .query_parameters
                .iter()
                .all(|q| q.kind.matches(request.query_parameter(&q.name)))
    }
}

/// The virtual host for a request's authority, by Envoy's precedence: an exact domain,
/// then the longest suffix wildcard (`*.example.com`), then the longest prefix wildcard
/// (`reviews.*`), then `*`. Host names compare without case. Each domain is compared with
/// the authority as sent and, when it carries a port, without it, so `reviews:9080` finds
/// a host listing `reviews:9080` or `reviews` (istiod lists both); within one kind the
/// authority as sent wins. Ties go to the first listed, as Envoy refuses duplicates.
pub fn select_virtual_host<'a>(table: &'a RouteTable, authority: &str) -> Option<&'a VirtualHost> {
    let full = authority.to_ascii_lowercase();
    let hosts: [Option<&str>; 2] = [Some(&full), strip_port(&full)];
    let mut exact: Option<(usize, &VirtualHost)> = None;
    let mut suffix: Option<(usize, &VirtualHost)> = None;
    let mut prefix: Option<(usize, &VirtualHost)> = None;
    let mut any = None;
    // Keeps the candidate with the highest rank; the first found among equals.
    let better = |slot: &mut Option<(usize, &'a VirtualHost)>, rank: usize, vhost| {
        if slot.is_none_or(|(r, _)| rank > r) {
            *slot = Some((rank, vhost));
        }
    };
    for vhost in &table.virtual_hosts {
        for domain in &vhost.domains {
            if domain == "*" {
                any = any.or(Some(vhost));
                continue;
            }
            // The authority as sent ranks above the one without port.
            for (k, host) in hosts.iter().enumerate() {
                let Some(host) = host else { continue };
                let as_sent = usize::from(k == 0);
                // A wildcard stands for at least one character.
                if let Some(rest) = domain.strip_prefix('*') {
                    if host.len() > rest.len() && host.ends_with(rest) {
                        better(&mut suffix, rest.len() * 2 + as_sent, vhost);
                    }
                } else if let Some(rest) = domain.strip_suffix('*') {
                    if host.len() > rest.len() && host.starts_with(rest) {
                        better(&mut prefix, rest.len() * 2 + as_sent, vhost);
                    }
                } else if domain == host {
                    better(&mut exact, as_sent, vhost);
                }
            }
        }
    }
    exact.or(suffix).or(prefix).map(|(_, v)| v).or(any)
}

/// The authority without its `:port`, if it has one (`[::1]:80` → `[::1]`).
pub(super) fn strip_port(authority: &str) -> Option<&str> {
    let (host, port) = authority.rsplit_once(':')?;
    let bracketed_or_plain = host.ends_with(']') || !host.contains(':');
    (bracketed_or_plain && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
        .then_some(host)
}

/// The first route of the virtual host that matches the request.
pub fn select_route<'a>(vhost: &'a VirtualHost, request: &RequestFacts<'_>) -> Option<&'a Route> {
    vhost.routes.iter().find(|r| r.matcher.matches(request))
}

/// The path to send upstream when the route rewrites it (None: send it unchanged). The
/// query string is kept. A prefix rewrite replaces what the route's path match matched:
/// the prefix, or the whole path for an exact match; a regex rewrite replaces every match
/// of its pattern in the path. `original_path` is the request target that matched.
pub fn rewrite_path(route: &Route, original_path: &str) -> Option<String> {
    let RouteAction::Cluster {
        prefix_rewrite,
        regex_rewrite,
        ..
    } = &route.action
    else {
        return None;
    };
    let split = original_path
        .find(['?', '#'])
        .unwrap_or(original_path.len());
    let (path, query) = original_path.split_at(split);
    if let Some(rewrite) = regex_rewrite {
        return Some(format!("{}{query}", rewrite.apply(path)));
    }
    let replacement = prefix_rewrite.as_deref()?;
    let matched = match &route.matcher.path {
        PathMatch::Prefix(p) | PathMatch::PathSeparatedPrefix(p) => p.len(),
        PathMatch::Exact(_) => path.len(),
        // Envoy refuses prefix_rewrite with a regex match; nothing to replace.
        PathMatch::Regex(_) => return None,
    };
    let rest = original_path.get(matched..)?;
    Some(format!("{replacement}{rest}"))
}

/// The cluster of a choice for a uniformly random `random`: a weighted choice picks each
/// entry with probability weight / total. Taking the number as a parameter keeps this pure
/// and testable; the modulo bias of a 64-bit number over weights below 2^32·n is < 2^-31.
pub fn pick_cluster(choice: &ClusterChoice, random: u64) -> Option<&str> {
    match choice {
        ClusterChoice::Single(name) => Some(name),
        ClusterChoice::Weighted(list) => {
            let total: u64 = list.iter().map(|(_, w)| u64::from(*w)).sum();
            if total == 0 {
                return None;
            }
            let mut at = random % total;
            for (name, w) in list {
                let w = u64::from(*w);
                if at < w {
                    return Some(name);
                }
                at -= w;
            }
            None
        }
    }
}
