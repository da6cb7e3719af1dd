//! `ClusterLoadAssignment` (EDS, and the inline `load_assignment` of STATIC, STRICT_DNS and
//! LOGICAL_DNS clusters) into endpoint lists.
//!
//! - Each `lb_endpoints[j].endpoint.address.socket_address` gives the address: an IP literal
//!   and a `port_value` (EDS and STATIC), or a host name for the DNS clusters.
//! - `load_balancing_weight` defaults to 1; 0 is refused (Envoy's minimum is 1).
//! - `health_status` UNHEALTHY, DRAINING and TIMEOUT drop the endpoint; HEALTHY, UNKNOWN and
//!   DEGRADED keep it.
//! - `metadata.filter_metadata["envoy.transport_socket_match"].tlsMode == "istio"` marks an
//!   endpoint that speaks Istio mTLS (used by the cluster's auto-mTLS).
//! - `locality` becomes `region/zone/sub_zone` (trailing empty parts left out, as Istio writes
//!   it), for `/config_dump`.
//! - **Priorities**: only the lowest `priority` that still has an endpoint after the health
//!   filter is kept. Skiff has no active health checks or outlier detection, so it deems every
//!   kept endpoint healthy, and Envoy sends all traffic to a fully healthy priority. The
//!   consequence: locality failover (istiod's priorities under a DestinationRule with outlier
//!   detection) does not move traffic to the next priority when the local endpoints fail;
//!   only their removal by EDS (readiness) does.
//!
//! Refused (NACK): a weight of 0, a non-IP address outside the DNS clusters, a pipe or
//! internal address, UDP, a named port or port 0, `endpoint_name` / `named_endpoints` and
//! LEDS, `policy.drop_overloads`.
//!
//! Accepted but not honoured:
//! - `policy.overprovisioning_factor` (istiod: 140), `policy.endpoint_stale_after`,
//!   `policy.weighted_priority_health`;
//! - the locality's `load_balancing_weight` (used by Envoy only with locality-weighted
//!   balancing), `proximity` and `metadata`;
//! - the endpoint's `hostname`, `additional_addresses`, `health_check_config`,
//!   `observability_name`;
//! - other endpoint metadata (istiod's `istio.workload`, ...).

use std::net::{IpAddr, SocketAddr};

use envoy_types::pb::envoy::config::core::v3::{
    HealthStatus, Locality, Metadata, address, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, LbEndpoint, lb_endpoint,
};
use envoy_types::pb::google::protobuf::value::Kind;

use super::Invalid;
use crate::snapshot::Endpoint;

/// The `filter_metadata` key of Envoy's transport-socket matching, where istiod writes
/// `tlsMode`.
pub(super) const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";

/// One endpoint of a cluster, before it joins a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSpec {
    pub address: SocketAddr,
    pub weight: u32,
    pub tls_mode_istio: bool,
    pub locality: Option<String>,
}

impl EndpointSpec {
    pub fn to_endpoint(&self) -> Endpoint {
        let mut endpoint = Endpoint::new(self.address);
        endpoint.weight = self.weight;
        endpoint.tls_mode_istio = self.tls_mode_istio;
        endpoint.locality = self.locality.clone();
        endpoint
    }
}

/// The endpoints of an EDS resource or of a STATIC cluster's `load_assignment`: those of the
/// lowest priority that has any, minus the unhealthy ones.
pub fn load_assignment(cla: &ClusterLoadAssignment) -> Result<Vec<EndpointSpec>, Invalid> {
    let kept = kept_endpoints(cla, |host| {
        host.parse::<IpAddr>().map_err(|_| {
            format!(
                "{host:?} is not an IP address; only STRICT_DNS and LOGICAL_DNS clusters take \
                 host names"
            )
        })
    })?;
    Ok(kept
        .into_iter()
        .map(|k| EndpointSpec {
            address: SocketAddr::new(k.host, k.port),
            weight: k.weight,
            tls_mode_istio: k.tls_mode_istio,
            locality: k.locality,
        })
        .collect())
}

/// An endpoint that survived the health and priority filters, its host as `host_of` read it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Kept<H> {
    pub host: H,
    pub port: u16,
    pub weight: u32,
    pub tls_mode_istio: bool,
    pub locality: Option<String>,
}

/// Validates every endpoint of `cla` (whatever its health or priority, so that a mistake is
/// reported even while it is unused) and returns the kept ones, in order.
pub(super) fn kept_endpoints<H>(
    cla: &ClusterLoadAssignment,
    host_of: impl Fn(&str) -> Result<H, String>,
) -> Result<Vec<Kept<H>>, Invalid> {
    if !cla.named_endpoints.is_empty() {
        return Err(Invalid::new(
            "named_endpoints",
            "named endpoints are not supported; list each endpoint with its address",
        ));
    }
    if let Some(policy) = &cla.policy
        && !policy.drop_overloads.is_empty()
    {
        return Err(Invalid::new(
            "policy.drop_overloads",
            "Skiff does not drop a share of the requests; remove drop_overloads",
        ));
    }
    let mut all: Vec<(u32, bool, Kept<H>)> = Vec::new();
    for (i, group) in cla.endpoints.iter().enumerate() {
        let at = format!("endpoints[{i}]");
        if group.lb_config.is_some() {
            return Err(Invalid::new(
                at,
                "LEDS (leds_cluster_locality_config, load_balancer_endpoints) is not supported; \
                 list the endpoints in lb_endpoints",
            ));
        }
        let locality = group.locality.as_ref().and_then(locality_string);
        for (j, lb) in group.lb_endpoints.iter().enumerate() {
            let (healthy, kept) = lb_endpoint(lb, &host_of, locality.clone())
                .map_err(|e| e.at(&format!("{at}.lb_endpoints[{j}]")))?;
            all.push((group.priority, healthy, kept));
        }
    }
    let Some(lowest) = all.iter().filter(|(_, h, _)| *h).map(|(p, _, _)| *p).min() else {
        return Ok(Vec::new());
    };
    Ok(all
        .into_iter()
        .filter(|(p, h, _)| *h && *p == lowest)
        .map(|(_, _, k)| k)
        .collect())
}

/// One `lb_endpoints` entry: whether it is healthy enough to use, and its fields.
fn lb_endpoint<H>(
    lb: &LbEndpoint,
    host_of: &impl Fn(&str) -> Result<H, String>,
    locality: Option<String>,
) -> Result<(bool, Kept<H>), Invalid> {
    let healthy = match HealthStatus::try_from(lb.health_status) {
        Ok(HealthStatus::Unknown | HealthStatus::Healthy | HealthStatus::Degraded) => true,
        Ok(HealthStatus::Unhealthy | HealthStatus::Draining | HealthStatus::Timeout) => false,
        Err(_) => {
            return Err(Invalid::new(
                "health_status",
                format!("{} is not a known health status", lb.health_status),
            ));
        }
    };
    let weight = lb.load_balancing_weight.as_ref().map_or(1, |w| w.value);
    if weight == 0 {
        return Err(Invalid::new(
            "load_balancing_weight",
            "must be at least 1; remove the endpoint, or mark it UNHEALTHY, to send it nothing",
        ));
    }
    let endpoint = match &lb.host_identifier {
        Some(lb_endpoint::HostIdentifier::Endpoint(e)) => e,
        Some(lb_endpoint::HostIdentifier::EndpointName(_)) => {
            return Err(Invalid::new(
                "endpoint_name",
                "named endpoints are not supported; give the endpoint's address",
            ));
        }
        None => {
            return Err(Invalid::new(
                "endpoint",
                "is missing; give the endpoint's address",
            ));
        }
    };
    let socket = match endpoint.address.as_ref().and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(s)) => s,
        Some(address::Address::Pipe(_)) => {
            return Err(Invalid::new(
                "endpoint.address.pipe",
                "Unix-socket endpoints are not supported; give an IP address and port",
            ));
        }
        Some(address::Address::EnvoyInternalAddress(_)) => {
            return Err(Invalid::new(
                "endpoint.address.envoy_internal_address",
                "Envoy internal listeners are not supported; give an IP address and port",
            ));
        }
        None => {
            return Err(Invalid::new(
                "endpoint.address",
                "is missing; give a socket_address",
            ));
        }
    };
    let at = "endpoint.address.socket_address";
    if socket.protocol == socket_address::Protocol::Udp as i32 {
        return Err(Invalid::new(
            format!("{at}.protocol"),
            "UDP endpoints are not supported",
        ));
    }
    let port = match &socket.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => {
            u16::try_from(*p).ok().filter(|p| *p != 0).ok_or_else(|| {
                Invalid::new(
                    format!("{at}.port_value"),
                    format!("{p} is not a port (1-65535)"),
                )
            })?
        }
        Some(socket_address::PortSpecifier::NamedPort(name)) => {
            return Err(Invalid::new(
                format!("{at}.named_port"),
                format!("named port {name:?} is not supported; give port_value"),
            ));
        }
        None => {
            return Err(Invalid::new(
                format!("{at}.port_value"),
                "is missing; endpoints need a port",
            ));
        }
    };
    if socket.address.is_empty() {
        return Err(Invalid::new(format!("{at}.address"), "is empty"));
    }
    let host =
        host_of(&socket.address).map_err(|reason| Invalid::new(format!("{at}.address"), reason))?;
    Ok((
        healthy,
        Kept {
            host,
            port,
            weight,
            tls_mode_istio: tls_mode_istio(lb.metadata.as_ref()),
            locality,
        },
    ))
}

/// Whether istiod marked the endpoint as having a sidecar (`tlsMode: istio`).
fn tls_mode_istio(metadata: Option<&Metadata>) -> bool {
    metadata
        .and_then(|m| m.filter_metadata.get(TRANSPORT_SOCKET_MATCH))
        .and_then(|s| s.fields.get("tlsMode"))
        .is_some_and(|v| matches!(&v.kind, Some(Kind::StringValue(s)) if s == "istio"))
}

/// `region/zone/sub_zone` as Istio writes a locality: trailing empty parts left out; None when
/// there is no region, zone or sub-zone at all.
pub(super) fn locality_string(l: &Locality) -> Option<String> {
    let mut s = l.region.clone();
    if !l.zone.is_empty() || !l.sub_zone.is_empty() {
        s.push('/');
        s.push_str(&l.zone);
    }
    if !l.sub_zone.is_empty() {
        s.push('/');
        s.push_str(&l.sub_zone);
    }
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
#[path = "endpoint_tests.rs"]
mod tests;
