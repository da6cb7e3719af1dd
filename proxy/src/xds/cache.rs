//! The resources received from the control plane, translated, by type and name — and the
//! rules that turn them into a [`Snapshot`]: what to subscribe to next (the route tables
//! the listeners name, the endpoints the clusters load), when the set is complete enough
//! to publish, and the assembly itself. No I/O: the ADS client feeds it decoded resources
//! and sends what it answers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster as ClusterProto;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener as ListenerProto;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;

use super::translate::{
    self, ClusterSource, ClusterTemplate, EndpointSpec, Invalid, TranslatedListener,
};
use super::type_url;
use crate::route::RouteTable;
use crate::snapshot::{Cluster, Listener, Snapshot};

/// One resource of a type as the control plane last sent it.
struct Entry<T> {
    version: String,
    value: T,
}

/// A refused resource: its name and why, for the NACK and /config_dump.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub name: String,
    pub error: Invalid,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.name, self.error)
    }
}

/// One resource of a response: its name, version and payload.
pub struct Incoming {
    pub name: String,
    pub version: String,
    pub resource: Any,
}

/// Translated values, kept so that a push that changes one resource re-translates only it.
enum Translated {
    Listener(Arc<Listener>, TranslatedRefs),
    Route(Arc<RouteTable>),
    Cluster(Box<ClusterTemplate>),
    Endpoints(Vec<EndpointSpec>),
}

/// What a listener needs from other types.
struct TranslatedRefs {
    route_names: Vec<String>,
    inline_routes: Vec<Arc<RouteTable>>,
}

#[derive(Default)]
pub struct Cache {
    listeners: BTreeMap<String, Entry<(Arc<Listener>, TranslatedRefs)>>,
    routes: BTreeMap<String, Entry<Arc<RouteTable>>>,
    clusters: BTreeMap<String, Entry<ClusterTemplate>>,
    endpoints: BTreeMap<String, Entry<Vec<EndpointSpec>>>,
    /// Endpoints resolved for DNS clusters, by cluster name.
    dns: HashMap<String, Vec<EndpointSpec>>,
    /// Built clusters, reused while neither their template nor their endpoints change, so
    /// that balancer positions and in-flight counts survive unrelated pushes.
    built: HashMap<String, Arc<Cluster>>,
    /// The types a full response has been received for (LDS and CDS gate the first
    /// snapshot).
    received: BTreeSet<&'static str>,
}

/// The types in the order Envoy applies them.
pub const TYPES: [&str; 4] = [
    type_url::CLUSTER,
    type_url::ENDPOINT,
    type_url::LISTENER,
    type_url::ROUTE,
];

/// The type URL as one of the four the client handles (a `&'static str` the cache and the
/// status can keep).
pub fn known_type(type_url: &str) -> Option<&'static str> {
    TYPES.iter().copied().find(|t| *t == type_url)
}

/// Why a response of a type the client never asked for is refused.
pub fn unknown_type(type_url: &str) -> String {
    format!("{type_url:?} is not a type Skiff subscribes to")
}

fn decode<M: Message + Default>(resource: &Any, expected: &str) -> Result<M, Invalid> {
    if resource.type_url != expected {
        return Err(Invalid::new(
            "type_url",
            format!("{:?} where {expected:?} was asked for", resource.type_url),
        ));
    }
    M::decode(resource.value.as_slice())
        .map_err(|e| Invalid::new("", format!("cannot be decoded: {e}")))
}

/// Decodes and translates one resource. The error carries the resource's own name when it
/// could be decoded, so that a state-of-the-world NACK (whose resources carry no names
/// outside them) still names it.
fn translate(type_url: &str, resource: &Any) -> Result<(String, Translated), (String, Invalid)> {
    let unnamed = |e: Invalid| (String::new(), e);
    match type_url {
        type_url::LISTENER => {
            let proto: ListenerProto = decode(resource, type_url).map_err(unnamed)?;
            let TranslatedListener {
                listener,
                route_names,
                inline_routes,
                ..
            } = translate::listener(&proto).map_err(|e| (proto.name.clone(), e))?;
            let refs = TranslatedRefs {
                route_names,
                inline_routes,
            };
            Ok((proto.name, Translated::Listener(Arc::new(listener), refs)))
        }
        type_url::ROUTE => {
            let proto: RouteConfiguration = decode(resource, type_url).map_err(unnamed)?;
            let table =
                translate::route_configuration(&proto).map_err(|e| (proto.name.clone(), e))?;
            Ok((proto.name, Translated::Route(Arc::new(table))))
        }
        type_url::CLUSTER => {
            let proto: ClusterProto = decode(resource, type_url).map_err(unnamed)?;
            let template = translate::cluster(&proto).map_err(|e| (proto.name.clone(), e))?;
            Ok((proto.name, Translated::Cluster(Box::new(template))))
        }
        _ => {
            let proto: ClusterLoadAssignment = decode(resource, type_url).map_err(unnamed)?;
            let endpoints =
                translate::load_assignment(&proto).map_err(|e| (proto.cluster_name.clone(), e))?;
            Ok((proto.cluster_name, Translated::Endpoints(endpoints)))
        }
    }
}

impl Cache {
    /// Applies one response: `incoming` resources added or changed, `removed` names gone.
    /// `full` (a state-of-the-world LDS or CDS response) also removes every name of the
    /// type it does not list. All or nothing: when any resource is refused nothing changes,
    /// and the refusals are returned for the NACK.
    pub fn apply(
        &mut self,
        type_url: &str,
        incoming: Vec<Incoming>,
        removed: &[String],
        full: bool,
    ) -> Result<(), Vec<Rejection>> {
        let Some(kind) = known_type(type_url) else {
            return Err(vec![Rejection {
                name: String::new(),
                error: Invalid::new("type_url", unknown_type(type_url)),
            }]);
        };
        let mut translated = Vec::with_capacity(incoming.len());
        let mut rejections = Vec::new();
        for item in incoming {
            match translate(kind, &item.resource) {
                Ok((name, value)) if name == item.name || item.name.is_empty() => {
                    translated.push((name, item.version, value));
                }
                Ok((name, _)) => rejections.push(Rejection {
                    name: item.name.clone(),
                    error: Invalid::new(
                        "name",
                        format!("the resource is named {name:?}, not {:?}", item.name),
                    ),
                }),
                Err((name, error)) => rejections.push(Rejection {
                    name: if name.is_empty() { item.name } else { name },
                    error,
                }),
            }
        }
        if !rejections.is_empty() {
            return Err(rejections);
        }
        if full {
            let keep: BTreeSet<&str> = translated.iter().map(|(n, _, _)| n.as_str()).collect();
            let gone: Vec<String> = self
                .names(kind)
                .into_iter()
                .filter(|n| !keep.contains(n.as_str()))
                .collect();
            self.remove(kind, &gone);
        }
        self.remove(kind, removed);
        let mut services = BTreeSet::new();
        for (name, version, value) in translated {
            if matches!(value, Translated::Endpoints(_)) {
                services.insert(name.clone());
            }
            self.insert(name, version, value);
        }
        self.invalidate_services(&services);
        self.received.insert(kind);
        Ok(())
    }

    fn insert(&mut self, name: String, version: String, value: Translated) {
        match value {
            Translated::Listener(l, refs) => {
                self.listeners.insert(
                    name,
                    Entry {
                        version,
                        value: (l, refs),
                    },
                );
            }
            Translated::Route(t) => {
                self.routes.insert(name, Entry { version, value: t });
            }
            Translated::Cluster(c) => {
                self.built.remove(&name);
                self.dns.remove(&name);
                self.clusters.insert(name, Entry { version, value: *c });
            }
            // Clusters that load these endpoints are invalidated by the caller, once for the
            // whole push.
            Translated::Endpoints(e) => {
                self.endpoints.insert(name, Entry { version, value: e });
            }
        }
    }

    fn remove(&mut self, kind: &str, names: &[String]) {
        for name in names {
            match kind {
                type_url::LISTENER => {
                    self.listeners.remove(name);
                }
                type_url::ROUTE => {
                    self.routes.remove(name);
                }
                type_url::CLUSTER => {
                    self.clusters.remove(name);
                    self.built.remove(name);
                    self.dns.remove(name);
                }
                _ => {
                    self.invalidate_services(&BTreeSet::from([name.clone()]));
                    self.endpoints.remove(name);
                }
            }
        }
    }

    /// Forgets built clusters that load endpoints from one of the EDS `services`: one pass
    /// over the clusters for a whole push, not one per endpoint resource.
    fn invalidate_services(&mut self, services: &BTreeSet<String>) {
        if services.is_empty() {
            return;
        }
        let stale: Vec<String> = self
            .clusters
            .iter()
            .filter(|(_, e)| {
                matches!(&e.value.source, ClusterSource::Eds { service_name } if services.contains(service_name))
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in stale {
            self.built.remove(&name);
        }
    }

    /// The names of a type held now, with their versions (delta's
    /// `initial_resource_versions` on reconnect, /config_dump).
    pub fn versions(&self, type_url: &str) -> BTreeMap<String, String> {
        fn of<T>(m: &BTreeMap<String, Entry<T>>) -> BTreeMap<String, String> {
            m.iter()
                .map(|(n, e)| (n.clone(), e.version.clone()))
                .collect()
        }
        match type_url {
            type_url::LISTENER => of(&self.listeners),
            type_url::ROUTE => of(&self.routes),
            type_url::CLUSTER => of(&self.clusters),
            type_url::ENDPOINT => of(&self.endpoints),
            _ => BTreeMap::new(),
        }
    }

    fn names(&self, type_url: &str) -> Vec<String> {
        self.versions(type_url).into_keys().collect()
    }

    /// The names of a type the configuration needs: for RDS the route tables the listeners
    /// name, for EDS the services of the EDS clusters. None for the wildcard types.
    pub fn wanted(&self, type_url: &str) -> Option<BTreeSet<String>> {
        match type_url {
            type_url::ROUTE => Some(
                self.listeners
                    .values()
                    .flat_map(|e| e.value.1.route_names.iter().cloned())
                    .collect(),
            ),
            type_url::ENDPOINT => Some(
                self.clusters
                    .values()
                    .filter_map(|e| match &e.value.source {
                        ClusterSource::Eds { service_name } => Some(service_name.clone()),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => None,
        }
    }

    /// Drops route tables and endpoints nothing refers to any more (after an
    /// unsubscription the server sends no removal for them).
    pub fn forget_unwanted(&mut self) {
        for kind in [type_url::ROUTE, type_url::ENDPOINT] {
            let wanted = self.wanted(kind).unwrap_or_default();
            let gone: Vec<String> = self
                .names(kind)
                .into_iter()
                .filter(|n| !wanted.contains(n))
                .collect();
            self.remove(kind, &gone);
        }
    }

    /// What the configuration still waits for before it is complete: LDS and CDS at all,
    /// then every referenced route table, EDS service and DNS resolution. Empty: complete.
    pub fn missing(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for (kind, label) in [(type_url::CLUSTER, "CDS"), (type_url::LISTENER, "LDS")] {
            if !self.received.contains(kind) {
                missing.push(format!("{label} (no response yet)"));
            }
        }
        for name in self.wanted(type_url::ROUTE).unwrap_or_default() {
            if !self.routes.contains_key(&name) {
                missing.push(format!("RDS {name}"));
            }
        }
        for name in self.wanted(type_url::ENDPOINT).unwrap_or_default() {
            if !self.endpoints.contains_key(&name) {
                missing.push(format!("EDS {name}"));
            }
        }
        for (name, e) in &self.clusters {
            if matches!(e.value.source, ClusterSource::Dns { .. }) && !self.dns.contains_key(name) {
                missing.push(format!("DNS for cluster {name}"));
            }
        }
        missing
    }

    /// The DNS clusters and their targets, for the resolver task.
    pub fn dns_clusters(&self) -> Vec<(String, Vec<translate::DnsTarget>, std::time::Duration)> {
        self.clusters
            .iter()
            .filter_map(|(name, e)| match &e.value.source {
                ClusterSource::Dns { targets, refresh } => {
                    Some((name.clone(), targets.clone(), *refresh))
                }
                _ => None,
            })
            .collect()
    }

    /// Records the resolved endpoints of a DNS cluster; false when nothing changed.
    pub fn set_dns(&mut self, cluster: &str, endpoints: Vec<EndpointSpec>) -> bool {
        if !self.clusters.contains_key(cluster) || self.dns.get(cluster) == Some(&endpoints) {
            return false;
        }
        self.built.remove(cluster);
        self.dns.insert(cluster.to_owned(), endpoints);
        true
    }

    /// The snapshot of everything held. Endpoints not delivered yet count as none.
    pub fn assemble(&mut self, version: String) -> Snapshot {
        let mut clusters = HashMap::with_capacity(self.clusters.len());
        for (name, entry) in &self.clusters {
            let built = match self.built.get(name) {
                Some(c) => c.clone(),
                None => {
                    let endpoints: &[EndpointSpec] = match &entry.value.source {
                        ClusterSource::Eds { service_name } => self
                            .endpoints
                            .get(service_name)
                            .map_or(&[][..], |e| e.value.as_slice()),
                        ClusterSource::Static { endpoints } => endpoints,
                        ClusterSource::Dns { .. } => {
                            self.dns.get(name).map_or(&[][..], Vec::as_slice)
                        }
                        ClusterSource::OriginalDst | ClusterSource::BlackHole => &[],
                    };
                    let c = Arc::new(entry.value.build(endpoints));
                    self.built.insert(name.clone(), c.clone());
                    c
                }
            };
            clusters.insert(name.clone(), built);
        }
        let mut routes: HashMap<String, Arc<RouteTable>> = self
            .routes
            .iter()
            .map(|(n, e)| (n.clone(), e.value.clone()))
            .collect();
        for entry in self.listeners.values() {
            for table in &entry.value.1.inline_routes {
                routes
                    .entry(table.name.clone())
                    .or_insert_with(|| table.clone());
            }
        }
        Snapshot {
            version,
            listeners: self.listeners.values().map(|e| e.value.0.clone()).collect(),
            clusters,
            routes,
            access_log: None,
        }
    }
}

/// The counts of a push, for logs and metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    pub listeners: usize,
    pub routes: usize,
    pub clusters: usize,
    pub endpoints: usize,
}

impl Cache {
    pub fn counts(&self) -> Counts {
        Counts {
            listeners: self.listeners.len(),
            routes: self.routes.len(),
            clusters: self.clusters.len(),
            endpoints: self.endpoints.values().map(|e| e.value.len()).sum(),
        }
    }
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;
