//! Configuration from a control plane over Envoy's xDS v3: the ADS client (delta and
//! state-of-the-world), the cache of resources it received, and their translation into the
//! [`Snapshot`](crate::snapshot::Snapshot) the data path reads.

pub mod cache;
pub mod client;
mod delta;
pub mod dns;
pub mod node;
mod session;
mod sotw;
pub mod status;
mod tls;
pub mod translate;

/// The resource types a sidecar subscribes to, in Envoy's order of application: clusters
/// before the endpoints they load and before the listeners that use them; listeners before
/// the route tables they name.
pub mod type_url {
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
}

#[cfg(test)]
mod tests {
    /// The README promises the full list of typed configs Skiff accepts without honouring.
    #[test]
    fn readme_lists_every_ignored_type() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));
        for t in super::translate::IGNORED_TYPES {
            assert!(
                readme.contains(&format!("`{t}`")),
                "README.md does not list the ignored type {t}"
            );
        }
    }
}
