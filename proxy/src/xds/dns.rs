//! Resolution of STRICT_DNS and LOGICAL_DNS cluster hosts with the system resolver
//! (`getaddrinfo` through [`tokio::net::lookup_host`], so `/etc/hosts`, the Pod's search
//! domains and `ndots` apply as for the app).
//!
//! Every address of every host becomes an endpoint with the host's port, weight, `tlsMode`
//! and locality, in the resolver's order (duplicates of one host dropped). All A and AAAA
//! answers are used: the cluster's `dns_lookup_family` is not honoured. The caller re-resolves
//! every `refresh` and, when a lookup fails, keeps the endpoints it had (Envoy keeps a failing
//! host's last addresses too).

use std::net::SocketAddr;
use std::time::Duration;

use crate::xds::translate::{DnsTarget, EndpointSpec};

/// How long one host's lookup may take before it counts as failed.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a DNS cluster's hosts could not be resolved; names the host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("cannot resolve {host:?}: {reason}")]
    Lookup { host: String, reason: String },
    #[error("resolving {host:?} took more than {timeout:?}")]
    Timeout { host: String, timeout: Duration },
    #[error("{host:?} resolved to no address")]
    NoAddress { host: String },
}

/// The endpoints of the hosts, in order; fails on the first host that does not resolve.
pub async fn resolve(targets: &[DnsTarget]) -> Result<Vec<EndpointSpec>, DnsError> {
    let mut endpoints = Vec::new();
    for target in targets {
        let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
        let addresses = match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
            Err(_) => {
                return Err(DnsError::Timeout {
                    host: target.host.clone(),
                    timeout: LOOKUP_TIMEOUT,
                });
            }
            Ok(Err(e)) => {
                return Err(DnsError::Lookup {
                    host: target.host.clone(),
                    reason: e.to_string(),
                });
            }
            Ok(Ok(addresses)) => addresses,
        };
        let mut seen: Vec<SocketAddr> = Vec::new();
        for address in addresses {
            if !seen.contains(&address) {
                seen.push(address);
            }
        }
        if seen.is_empty() {
            return Err(DnsError::NoAddress {
                host: target.host.clone(),
            });
        }
        endpoints.extend(seen.into_iter().map(|address| EndpointSpec {
            address,
            weight: target.weight,
            tls_mode_istio: target.tls_mode_istio,
            locality: target.locality.clone(),
        }));
    }
    Ok(endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(host: &str, port: u16) -> DnsTarget {
        DnsTarget {
            host: host.to_owned(),
            port,
            weight: 7,
            tls_mode_istio: true,
            locality: Some("us-east1/b".to_owned()),
        }
    }

    #[tokio::test]
    async fn localhost_resolves_to_loopback_with_the_target_fields() {
        let endpoints = resolve(&[target("localhost", 8443)]).await.unwrap();
        assert!(!endpoints.is_empty());
        for e in &endpoints {
            assert!(e.address.ip().is_loopback(), "{e:?}");
            assert_eq!(e.address.port(), 8443);
            assert_eq!(e.weight, 7);
            assert!(e.tls_mode_istio);
            assert_eq!(e.locality.as_deref(), Some("us-east1/b"));
        }
        let mut unique = endpoints.iter().map(|e| e.address).collect::<Vec<_>>();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), endpoints.len(), "no duplicate addresses");
    }

    #[tokio::test]
    async fn ip_literals_and_several_targets_keep_their_order() {
        let endpoints = resolve(&[target("10.0.0.1", 80), target("::1", 81)])
            .await
            .unwrap();
        let addresses: Vec<SocketAddr> = endpoints.iter().map(|e| e.address).collect();
        assert_eq!(
            addresses,
            vec![
                "10.0.0.1:80".parse::<SocketAddr>().unwrap(),
                "[::1]:81".parse().unwrap()
            ]
        );
    }

    #[tokio::test]
    async fn an_unresolvable_host_is_named() {
        let err = resolve(&[target("localhost", 80), target("nonexistent.invalid", 80)])
            .await
            .unwrap_err();
        match &err {
            DnsError::Lookup { host, .. } | DnsError::NoAddress { host } => {
                assert_eq!(host, "nonexistent.invalid");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("\"nonexistent.invalid\""), "{err}");
    }

    #[tokio::test]
    async fn no_targets_no_endpoints() {
        assert_eq!(resolve(&[]).await.unwrap(), Vec::new());
    }
}
