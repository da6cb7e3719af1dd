//! Clusters: the built-in ones, those the file defines, and the references to them from
//! listeners and routes (with a "did you mean" for a misspelt name).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::build::{Invalid, invalid};
use super::de::Name;
use super::model::{ClusterSpec, KindSpec, WeightedSpec};
use super::{INBOUND_PASSTHROUGH_BIND_V4, INBOUND_PASSTHROUGH_BIND_V6};
use crate::snapshot::{
    BLACKHOLE_CLUSTER, Cluster, ClusterChoice, DEFAULT_CONNECT_TIMEOUT, Discovery, Endpoint,
    INBOUND_PASSTHROUGH_CLUSTER, LbPolicy, PASSTHROUGH_CLUSTER, RetryBudget,
};

/// The clusters istiod always sends, so that a hand-written file can name them without
/// defining them. A file may redefine any of them.
pub(super) fn builtin_clusters() -> HashMap<String, Arc<Cluster>> {
    let mut inbound = Cluster::new(
        INBOUND_PASSTHROUGH_CLUSTER,
        Discovery::OriginalDst,
        Vec::new(),
    );
    inbound.upstream_bind = vec![
        IpAddr::V4(INBOUND_PASSTHROUGH_BIND_V4),
        IpAddr::V6(INBOUND_PASSTHROUGH_BIND_V6),
    ];
    [
        Cluster::new(PASSTHROUGH_CLUSTER, Discovery::OriginalDst, Vec::new()),
        inbound,
        Cluster::new(BLACKHOLE_CLUSTER, Discovery::BlackHole, Vec::new()),
    ]
    .into_iter()
    .map(|c| (c.name.clone(), Arc::new(c)))
    .collect()
}

pub(super) fn clusters(specs: Vec<ClusterSpec>) -> Result<HashMap<String, Arc<Cluster>>, Invalid> {
    let mut all = builtin_clusters();
    let mut defined: HashMap<String, usize> = HashMap::new();
    for (i, spec) in specs.into_iter().enumerate() {
        let at = format!("clusters[{i}]");
        let name = spec.name.0.clone();
        if let Some(first) = defined.insert(name.clone(), i) {
            return invalid(
                format!("{at}.name"),
                format!(
                    "{name:?} is also the name of clusters[{first}]; cluster names must be unique"
                ),
            );
        }
        all.insert(name, Arc::new(cluster(spec, &at)?));
    }
    Ok(all)
}

fn cluster(spec: ClusterSpec, at: &str) -> Result<Cluster, Invalid> {
    let a_kind = match spec.kind {
        KindSpec::Static => "a STATIC",
        KindSpec::OriginalDst => "an ORIGINAL_DST",
        KindSpec::BlackHole => "a BLACK_HOLE",
    };
    match spec.kind {
        KindSpec::Static if spec.endpoints.is_empty() => {
            return invalid(
                format!("{at}.endpoints"),
                "a STATIC cluster needs at least one endpoint; for a cluster that refuses every \
                 connection write type: BLACK_HOLE",
            );
        }
        KindSpec::OriginalDst | KindSpec::BlackHole if !spec.endpoints.is_empty() => {
            return invalid(
                format!("{at}.endpoints"),
                format!(
                    "{a_kind} cluster takes no endpoints (it uses each connection's original \
                     destination, or refuses it); remove them, or write type: STATIC"
                ),
            );
        }
        _ => {}
    }
    if spec.lb_policy.is_some() && spec.kind != KindSpec::Static {
        return invalid(
            format!("{at}.lbPolicy"),
            format!("{a_kind} cluster has no endpoints to balance over; remove lbPolicy"),
        );
    }
    if spec.kind == KindSpec::BlackHole {
        let connection_keys = [
            ("upstreamBind", spec.upstream_bind.is_some()),
            ("protocol", spec.protocol.is_some()),
            ("httpIdleTimeout", spec.http_idle_timeout.is_some()),
            ("retryBudget", spec.retry_budget.is_some()),
        ];
        if let Some((key, _)) = connection_keys.iter().find(|(_, written)| *written) {
            return invalid(
                format!("{at}.{key}"),
                format!("a BLACK_HOLE cluster makes no connections; remove {key}"),
            );
        }
    }
    if let Some(bind) = spec.upstream_bind
        && let Some((e, endpoint)) = spec
            .endpoints
            .iter()
            .enumerate()
            .find(|(_, e)| e.address.is_ipv4() != bind.0.is_ipv4())
    {
        return invalid(
            format!("{at}.endpoints[{e}]"),
            format!(
                "{} cannot be reached from upstreamBind {}: the address families differ",
                endpoint.address, bind.0
            ),
        );
    }
    let mut endpoints: Vec<Endpoint> = Vec::with_capacity(spec.endpoints.len());
    for (e, ep) in spec.endpoints.iter().enumerate() {
        if let Some(first) = endpoints.iter().position(|o| o.address == ep.address) {
            return invalid(
                format!("{at}.endpoints[{e}]"),
                format!(
                    "{} is also endpoints[{first}]; list it once, with a weight",
                    ep.address
                ),
            );
        }
        let mut endpoint = Endpoint::new(ep.address);
        endpoint.weight = ep.weight;
        endpoints.push(endpoint);
    }
    let mut cluster = Cluster::new(spec.name.0, spec.kind.into(), endpoints);
    cluster.lb_policy = spec.lb_policy.map_or(LbPolicy::LeastRequest, Into::into);
    cluster.connect_timeout = spec
        .connect_timeout
        .map_or(DEFAULT_CONNECT_TIMEOUT, |d| d.0);
    cluster.upstream_bind = spec.upstream_bind.map(|b| b.0).into_iter().collect();
    if let Some(protocol) = spec.protocol {
        cluster.protocol = protocol.into();
    }
    if let Some(idle) = spec.http_idle_timeout {
        cluster.http_idle_timeout = idle.0;
    }
    if let Some(budget) = spec.retry_budget {
        let mut retry_budget = RetryBudget::default();
        if let Some(p) = budget.budget_percent {
            retry_budget.budget_percent = p.0;
        }
        if let Some(n) = budget.min_retry_concurrency {
            retry_budget.min_retry_concurrency = n.0;
        }
        cluster.retry_budget = retry_budget;
    }
    Ok(cluster)
}

/// `cluster: NAME` or `weightedClusters: [{name, weight}]`, exactly one.
pub(super) fn choice(
    single: Option<Name>,
    weighted: Option<Vec<WeightedSpec>>,
    at: &str,
    clusters: &HashMap<String, Arc<Cluster>>,
) -> Result<ClusterChoice, Invalid> {
    match (single, weighted) {
        (Some(name), None) => Ok(ClusterChoice::Single(cluster_ref(
            name,
            format!("{at}.cluster"),
            clusters,
        )?)),
        (None, Some(entries)) => {
            if entries.is_empty() {
                return invalid(
                    format!("{at}.weightedClusters"),
                    "is empty; list at least one {name, weight}, or write cluster: NAME",
                );
            }
            let mut picks: Vec<(String, u32)> = Vec::with_capacity(entries.len());
            let mut total: u32 = 0;
            for (k, entry) in entries.into_iter().enumerate() {
                let eat = format!("{at}.weightedClusters[{k}]");
                let name = cluster_ref(entry.name, format!("{eat}.name"), clusters)?;
                if let Some(m) = picks.iter().position(|(n, _)| *n == name) {
                    return invalid(
                        format!("{eat}.name"),
                        format!(
                            "{name:?} is also weightedClusters[{m}]; list it once with the sum \
                             of the weights"
                        ),
                    );
                }
                let Some(sum) = total.checked_add(entry.weight.0) else {
                    return invalid(
                        format!("{eat}.weight"),
                        format!(
                            "the weights add up to more than {}; scale them down",
                            u32::MAX
                        ),
                    );
                };
                total = sum;
                picks.push((name, entry.weight.0));
            }
            Ok(ClusterChoice::Weighted(picks))
        }
        (None, None) => invalid(
            at,
            "names no cluster; write cluster: NAME, or weightedClusters: [{name, weight}]",
        ),
        (Some(_), Some(_)) => invalid(at, "has both cluster and weightedClusters; write one"),
    }
}

pub(super) fn cluster_ref(
    name: Name,
    field: String,
    clusters: &HashMap<String, Arc<Cluster>>,
) -> Result<String, Invalid> {
    let name = name.0;
    if clusters.contains_key(&name) {
        return Ok(name);
    }
    let hint = match closest(&name, clusters.keys()) {
        Some(near) => format!("did you mean {near:?}?"),
        None => format!(
            "define it under clusters, or use one of the built-in {PASSTHROUGH_CLUSTER}, \
             {INBOUND_PASSTHROUGH_CLUSTER} and {BLACKHOLE_CLUSTER}"
        ),
    };
    invalid(field, format!("no cluster named {name:?}; {hint}"))
}

/// The defined name nearest to a misspelt one: equal but for case, or at most two edits
/// away. Ties go to the alphabetically first, so the message does not depend on hash order.
fn closest<'a>(wanted: &str, names: impl Iterator<Item = &'a String>) -> Option<&'a str> {
    let lower = wanted.to_lowercase();
    names
        .filter_map(|n| {
            let d = if n.to_lowercase() == lower {
                0
            } else {
                edit_distance(wanted, n)
            };
            (d <= 2).then_some((d, n.as_str()))
        })
        .min()
        .map(|(_, n)| n)
}

/// Levenshtein distance over characters.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}
