//! HTTP handlers: an inline route table of virtual hosts (chosen by authority) and routes
//! (chosen by path prefix), each sending to a cluster or a weighted pick.

use std::collections::HashMap;
use std::sync::Arc;

use super::build::{Invalid, invalid};
use super::clusters::choice;
use super::model::{HttpSpec, RouteSpec, VirtualHostSpec};
use crate::snapshot::{Cluster, HttpManager, Route, RouteSource, RouteTable, VirtualHost};

pub(super) fn http(
    spec: HttpSpec,
    at: &str,
    listener: &str,
    chain: &str,
    clusters: &HashMap<String, Arc<Cluster>>,
) -> Result<HttpManager, Invalid> {
    let (virtual_hosts, hosts_at) = match (spec.routes, spec.virtual_hosts) {
        (Some(routes), None) => {
            let everything = VirtualHostSpec {
                name: None,
                domains: None,
                routes,
            };
            (vec![virtual_host(everything, at, clusters)?], None)
        }
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
    Ok(HttpManager {
        stat_prefix: spec
            .stat_prefix
            .map_or_else(|| listener.to_owned(), |p| p.0),
        route_config: RouteSource::Inline(Arc::new(RouteTable {
            name: format!("{listener}/{chain}"),
            virtual_hosts,
        })),
    })
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
    Ok(VirtualHost {
        name: spec.name.map_or_else(|| domains[0].clone(), |n| n.0),
        domains,
        routes,
    })
}

fn route_entry(
    spec: RouteSpec,
    at: &str,
    earlier: &[Route],
    clusters: &HashMap<String, Arc<Cluster>>,
) -> Result<Route, Invalid> {
    let prefix = spec.prefix.0;
    if let Some((q, first)) = earlier
        .iter()
        .enumerate()
        .find(|(_, e)| prefix.starts_with(&e.prefix))
    {
        return invalid(
            format!("{at}.prefix"),
            format!(
                "{prefix:?} is never reached: routes[{q}] ({:?}) comes first and takes every \
                 path this one would; put longer prefixes first",
                first.prefix
            ),
        );
    }
    Ok(Route {
        name: spec.name.map_or_else(|| prefix.clone(), |n| n.0),
        cluster: choice(spec.cluster, spec.weighted_clusters, at, clusters)?,
        prefix,
    })
}
