//! The upstream request: what the router decided to send (method, rewritten path and
//! authority, cleaned headers, HTTP version), rebuilt for every attempt with that
//! attempt's body, and the choice of endpoint for each attempt.

use std::net::{IpAddr, SocketAddr};

use hyper::header::{self, HeaderValue};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{HeaderMap, Method, Request, Uri, Version};

use super::ProxyBody;
use super::headers::X_ENVOY_ATTEMPT_COUNT;
use crate::balance;
use crate::snapshot::{Cluster, Discovery, UpstreamProtocol};

/// How many times a retry that must avoid earlier hosts asks the balancer before it takes
/// the first endpoint not tried yet (istiod's `host_selection_retry_max_attempts`).
const HOST_SELECTION_ATTEMPTS: usize = 5;

#[derive(Debug, thiserror::Error)]
#[error("the request's authority {0:?} is not a valid host[:port]")]
pub struct BadAuthority(pub String);

pub struct Outgoing {
    pub method: Method,
    pub version: Version,
    authority: Authority,
    path: PathAndQuery,
    pub headers: HeaderMap,
    /// Send `x-envoy-attempt-count`.
    pub count_attempts: bool,
}

impl Outgoing {
    pub fn new(
        method: Method,
        version: Version,
        authority: &str,
        path: &str,
        headers: HeaderMap,
    ) -> Result<Outgoing, BadAuthority> {
        let bad = || BadAuthority(authority.to_owned());
        let authority = Authority::try_from(authority).map_err(|_| bad())?;
        // The path was parsed by hyper or produced by a rewrite of one; an unparsable
        // rewrite result is refused the same way.
        let path = PathAndQuery::try_from(path).map_err(|_| bad())?;
        Ok(Outgoing {
            method,
            version,
            authority,
            path,
            headers,
            count_attempts: false,
        })
    }

    /// The request for attempt number `attempt` (1 for the first). HTTP/1.1 carries the
    /// authority in `Host` and an origin-form target; HTTP/2 carries it as `:authority`
    /// (hyper takes it from an absolute URI), with no `Host` beside it.
    pub fn build(&self, body: ProxyBody, attempt: u32) -> Request<ProxyBody> {
        let mut request = Request::new(body);
        *request.method_mut() = self.method.clone();
        *request.version_mut() = self.version;
        let mut headers = self.headers.clone();
        if self.count_attempts {
            headers.insert(X_ENVOY_ATTEMPT_COUNT, HeaderValue::from(attempt));
        }
        let mut uri = Uri::builder();
        if self.version == Version::HTTP_2 {
            headers.remove(header::HOST);
            uri = uri.scheme(Scheme::HTTP).authority(self.authority.clone());
        } else if let Ok(host) = HeaderValue::from_str(self.authority.as_str()) {
            headers.insert(header::HOST, host);
        }
        // Both parts were validated in `new`, so building cannot fail; fall back to "/"
        // rather than panic if it somehow did.
        *request.uri_mut() = uri
            .path_and_query(self.path.clone())
            .build()
            .unwrap_or_else(|_| Uri::from_static("/"));
        *request.headers_mut() = headers;
        request
    }
}

/// The HTTP version to speak to a cluster for a request that arrived as `downstream`.
pub fn upstream_version(protocol: UpstreamProtocol, downstream: Version) -> Version {
    match protocol {
        UpstreamProtocol::Http1 => Version::HTTP_11,
        UpstreamProtocol::Http2 => Version::HTTP_2,
        UpstreamProtocol::Downstream if downstream == Version::HTTP_2 => Version::HTTP_2,
        UpstreamProtocol::Downstream => Version::HTTP_11,
    }
}

/// The endpoint for the next attempt: the original destination for ORIGINAL_DST
/// clusters, the balancer's pick otherwise. With `avoid` (Envoy's `previous_hosts`
/// predicate) endpoints already in `tried` are avoided while another exists. None when the
/// cluster has nothing to send to.
pub fn choose_endpoint(
    cluster: &Cluster,
    original: SocketAddr,
    tried: &[usize],
    avoid: bool,
) -> Option<(SocketAddr, Option<usize>)> {
    match cluster.discovery {
        Discovery::OriginalDst => Some((original, None)),
        Discovery::BlackHole => None,
        Discovery::Static => {
            let n = cluster.endpoints.len();
            if n == 0 {
                return None;
            }
            let mut pick = balance::pick(cluster);
            if avoid && tried.contains(&pick) {
                pick = (0..HOST_SELECTION_ATTEMPTS)
                    .map(|_| balance::pick(cluster))
                    .find(|p| !tried.contains(p))
                    .or_else(|| (0..n).find(|p| !tried.contains(p)))
                    .unwrap_or(pick);
            }
            Some((cluster.endpoints[pick].address, Some(pick)))
        }
    }
}

/// The source address for a connection to `addr`: the cluster's bind address of the same
/// family, if it has one.
pub fn bind_for(cluster: &Cluster, addr: SocketAddr) -> Option<IpAddr> {
    cluster
        .upstream_bind
        .iter()
        .find(|ip| ip.is_ipv4() == addr.is_ipv4())
        .copied()
}

/// Methods a proxy may resend when a reused connection fails before answering, because
/// sending them twice has the effect of sending them once (RFC 9110 section 9.2.2).
pub fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Endpoint, LbPolicy};
    use http_body_util::{BodyExt, Empty};

    fn empty() -> ProxyBody {
        Empty::new().map_err(|never| match never {}).boxed_unsync()
    }

    fn outgoing(version: Version) -> Outgoing {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("old"));
        headers.insert("x-b3-traceid", HeaderValue::from_static("abc"));
        Outgoing::new(Method::POST, version, "reviews:9080", "/api?q=1", headers).unwrap()
    }

    #[test]
    fn http1_sends_host_and_origin_form() {
        let mut o = outgoing(Version::HTTP_11);
        o.count_attempts = true;
        let r = o.build(empty(), 2);
        assert_eq!(r.uri(), "/api?q=1");
        assert_eq!(r.headers()["host"], "reviews:9080");
        assert_eq!(r.headers()["x-envoy-attempt-count"], "2");
        assert_eq!(r.headers()["x-b3-traceid"], "abc");
        assert_eq!(r.method(), Method::POST);
    }

    #[test]
    fn http2_sends_authority_in_the_uri_without_host() {
        let r = outgoing(Version::HTTP_2).build(empty(), 1);
        assert_eq!(r.uri(), "http://reviews:9080/api?q=1");
        assert!(!r.headers().contains_key("host"));
        assert!(!r.headers().contains_key("x-envoy-attempt-count"));
        assert_eq!(r.version(), Version::HTTP_2);
    }

    #[test]
    fn bad_authorities_are_refused() {
        let h = HeaderMap::new();
        assert!(Outgoing::new(Method::GET, Version::HTTP_11, "a b", "/", h.clone()).is_err());
        assert!(Outgoing::new(Method::GET, Version::HTTP_11, "ok", "/ x", h).is_err());
    }

    #[test]
    fn versions_per_cluster_protocol() {
        use UpstreamProtocol::*;
        assert_eq!(
            upstream_version(Downstream, Version::HTTP_2),
            Version::HTTP_2
        );
        assert_eq!(
            upstream_version(Downstream, Version::HTTP_11),
            Version::HTTP_11
        );
        assert_eq!(
            upstream_version(Downstream, Version::HTTP_10),
            Version::HTTP_11
        );
        assert_eq!(upstream_version(Http2, Version::HTTP_11), Version::HTTP_2);
        assert_eq!(upstream_version(Http1, Version::HTTP_2), Version::HTTP_11);
    }

    #[test]
    fn retries_avoid_tried_endpoints_while_others_exist() {
        let addrs: Vec<SocketAddr> = (1..=3)
            .map(|i| format!("10.0.0.{i}:80").parse().unwrap())
            .collect();
        let mut cluster = Cluster::new(
            "c",
            Discovery::Static,
            addrs.iter().map(|a| Endpoint::new(*a)).collect(),
        );
        cluster.lb_policy = LbPolicy::Random;
        let original: SocketAddr = "10.9.9.9:80".parse().unwrap();
        for _ in 0..200 {
            let (_, i) = choose_endpoint(&cluster, original, &[0, 2], true).unwrap();
            assert_eq!(i, Some(1));
        }
        // Everything tried: any endpoint will do.
        assert!(choose_endpoint(&cluster, original, &[0, 1, 2], true).is_some());
        let mut seen = [false; 3];
        for _ in 0..200 {
            let (_, i) = choose_endpoint(&cluster, original, &[0], false).unwrap();
            seen[i.unwrap()] = true;
        }
        assert!(
            seen[0],
            "without the predicate a tried endpoint may be picked again"
        );

        let passthrough = Cluster::new("p", Discovery::OriginalDst, Vec::new());
        assert_eq!(
            choose_endpoint(&passthrough, original, &[], true),
            Some((original, None))
        );
        let hole = Cluster::new("b", Discovery::BlackHole, Vec::new());
        assert_eq!(choose_endpoint(&hole, original, &[], false), None);
        let empty = Cluster::new("e", Discovery::Static, Vec::new());
        assert_eq!(choose_endpoint(&empty, original, &[], false), None);
    }

    #[test]
    fn bind_address_of_the_destination_family() {
        let mut c = Cluster::new("p", Discovery::OriginalDst, Vec::new());
        c.upstream_bind = vec!["127.0.0.6".parse().unwrap(), "::6".parse().unwrap()];
        let v4: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let v6: SocketAddr = "[fd77::2]:80".parse().unwrap();
        assert_eq!(bind_for(&c, v4), Some("127.0.0.6".parse().unwrap()));
        assert_eq!(bind_for(&c, v6), Some("::6".parse().unwrap()));
        c.upstream_bind.clear();
        assert_eq!(bind_for(&c, v4), None);
    }

    #[test]
    fn idempotent_methods() {
        assert!(idempotent(&Method::GET));
        assert!(idempotent(&Method::PUT));
        assert!(!idempotent(&Method::POST));
        assert!(!idempotent(&Method::PATCH));
    }
}
