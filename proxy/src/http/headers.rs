//! What the proxy does to headers on the way through: hop-by-hop headers stay on their
//! hop, `x-forwarded-*` and `x-request-id` as Envoy's connection manager sets them, the
//! route's header mutations, and the small facts (gRPC, upgrade) the router asks about.
//! Trace context (`traceparent`, `tracestate`, `b3`, `x-b3-*`) is never touched, so
//! applications can join their spans across the mesh.

use std::net::IpAddr;

use hyper::HeaderMap;
use hyper::header::{self, HeaderName, HeaderValue};

use crate::route::HeaderMutations;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_ENVOY_ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
pub const X_ENVOY_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
pub const X_ENVOY_UPSTREAM_SERVICE_TIME: HeaderName =
    HeaderName::from_static("x-envoy-upstream-service-time");

/// Headers that describe one connection rather than the message (RFC 9110 section 7.6.1),
/// plus `proxy-connection`, which old clients still send.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes the hop-by-hop headers and those the `Connection` header names. `te: trailers`
/// survives, because gRPC over HTTP/2 requires it end to end. For an upgrade (WebSocket)
/// `Connection: upgrade` and `Upgrade` are kept: they are the request.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !(keep_upgrade && name == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    let trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// Whether an HTTP/1.1 request asks to switch protocols (WebSocket): `Connection` lists
/// `upgrade` and an `Upgrade` header names the protocol.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Whether a request or response is gRPC (Istio's `request_protocol="grpc"`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// `x-forwarded-for` and `x-forwarded-proto` as Envoy's `use_remote_address` decides: at
/// the edge (true) the peer's address is appended and the protocol is the connection's;
/// otherwise both are left as the client sent them, and only a missing
/// `x-forwarded-proto` is filled in.
pub fn set_forwarded(headers: &mut HeaderMap, peer: IpAddr, scheme: &str, edge: bool) {
    if edge {
        let appended = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(existing) if !existing.trim().is_empty() => format!("{existing}, {peer}"),
            _ => peer.to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&appended) {
            headers.insert(X_FORWARDED_FOR, value);
        }
        headers.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(scheme_value(scheme)),
        );
    } else if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(scheme_value(scheme)),
        );
    }
}

fn scheme_value(scheme: &str) -> &'static str {
    if scheme == "https" { "https" } else { "http" }
}

/// Keeps the client's `x-request-id` and generates one when there is none, so every hop's
/// logs of a request share an id (Envoy's `generate_request_id`, on by default).
pub fn ensure_request_id(headers: &mut HeaderMap) {
    if !headers.contains_key(&X_REQUEST_ID) {
        headers.insert(
            X_REQUEST_ID,
            request_id(crate::balance::random_u64(), crate::balance::random_u64()),
        );
    }
}

/// A random (version 4) UUID from two random numbers, in its usual spelling, as Envoy
/// writes request ids.
pub fn request_id(high: u64, low: u64) -> HeaderValue {
    let high = (high & !0xf000) | 0x4000; // version 4
    let low = (low & !(0b11 << 62)) | (0b10 << 62); // RFC 4122 variant
    // Written into a stack buffer: one per request, so no formatting machinery.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 36];
    let mut at = 0;
    for (word, nibbles) in [(high, 16), (low, 16)] {
        for i in (0..nibbles).rev() {
            if matches!(at, 8 | 13 | 18 | 23) {
                text[at] = b'-';
                at += 1;
            }
            text[at] = HEX[((word >> (i * 4)) & 0xf) as usize];
            at += 1;
        }
    }
    HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static("-"))
}

/// Applies one level of header mutations to a request's headers: removals, then
/// additions, as Envoy evaluates them. The router calls it for the route, the virtual host
/// and the table in that order, so with `append: false` the least specific level has the
/// last word, as in Envoy (without `most_specific_header_mutations_wins`).
pub fn mutate_request(headers: &mut HeaderMap, m: &HeaderMutations) {
    apply(
        headers,
        &m.request_headers_to_remove,
        &m.request_headers_to_add,
    );
}

/// The same for a response's headers.
pub fn mutate_response(headers: &mut HeaderMap, m: &HeaderMutations) {
    apply(
        headers,
        &m.response_headers_to_remove,
        &m.response_headers_to_add,
    );
}

fn apply(headers: &mut HeaderMap, remove: &[String], add: &[crate::route::HeaderToAdd]) {
    for name in remove {
        headers.remove(name.as_str());
    }
    for h in add {
        // Names and values were checked when the config was loaded; skip rather than fail
        // if one slipped through.
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_str(&h.value),
        ) else {
            continue;
        };
        if h.append {
            headers.append(name, value);
        } else {
            headers.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::HeaderToAdd;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn hop_by_hop_headers_stay_on_their_hop() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "gzip, trailers"),
            ("upgrade", "websocket"),
            ("traceparent", "00-abc-def-01"),
            ("x-b3-traceid", "abc"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h, false);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["accept", "te", "traceparent", "x-b3-traceid"]);
        assert_eq!(h["te"], "trailers");
    }

    #[test]
    fn upgrade_requests_keep_their_upgrade() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["sec-websocket-key"], "k");
        assert!(!is_upgrade(&map(&[("upgrade", "websocket")])));
        assert!(!is_upgrade(&map(&[("connection", "upgrade")])));
        assert!(is_upgrade(&map(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "h2c")
        ])));
    }

    #[test]
    fn forwarded_headers_at_the_edge_and_behind_it() {
        let peer: IpAddr = "10.77.0.1".parse().unwrap();
        let mut h = map(&[("x-forwarded-for", "192.0.2.9")]);
        set_forwarded(&mut h, peer, "http", true);
        assert_eq!(h["x-forwarded-for"], "192.0.2.9, 10.77.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");

        let mut h = HeaderMap::new();
        set_forwarded(&mut h, "fd77::1".parse().unwrap(), "https", true);
        assert_eq!(h["x-forwarded-for"], "fd77::1");
        assert_eq!(h["x-forwarded-proto"], "https");

        let mut h = map(&[
            ("x-forwarded-for", "192.0.2.9"),
            ("x-forwarded-proto", "https"),
        ]);
        set_forwarded(&mut h, peer, "http", false);
        assert_eq!(h["x-forwarded-for"], "192.0.2.9", "trusted as sent");
        assert_eq!(h["x-forwarded-proto"], "https");
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, peer, "http", false);
        assert!(!h.contains_key("x-forwarded-for"));
        assert_eq!(h["x-forwarded-proto"], "http");
    }

    #[test]
    fn request_ids_are_v4_uuids_and_kept_when_sent() {
        let id = request_id(u64::MAX, u64::MAX);
        assert_eq!(id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let id = request_id(0, 0);
        assert_eq!(id, "00000000-0000-4000-8000-000000000000");

        let mut h = map(&[("x-request-id", "mine")]);
        ensure_request_id(&mut h);
        assert_eq!(h["x-request-id"], "mine");
        let mut a = HeaderMap::new();
        let mut b = HeaderMap::new();
        ensure_request_id(&mut a);
        ensure_request_id(&mut b);
        assert_eq!(a["x-request-id"].len(), 36);
        assert_ne!(a["x-request-id"], b["x-request-id"]);
    }

    #[test]
    fn mutations_remove_then_add_or_overwrite() {
        let m = HeaderMutations {
            request_headers_to_add: vec![
                HeaderToAdd {
                    name: "x-env".into(),
                    value: "canary".into(),
                    append: false,
                },
                HeaderToAdd {
                    name: "x-tag".into(),
                    value: "b".into(),
                    append: true,
                },
            ],
            request_headers_to_remove: vec!["x-drop".into(), "x-tag".into()],
            response_headers_to_add: vec![HeaderToAdd {
                name: "x-served-by".into(),
                value: "skiff".into(),
                append: true,
            }],
            response_headers_to_remove: vec!["server".into()],
        };
        let mut h = map(&[("x-env", "prod"), ("x-drop", "1"), ("x-tag", "a")]);
        mutate_request(&mut h, &m);
        assert_eq!(h["x-env"], "canary");
        assert!(!h.contains_key("x-drop"));
        let tags: Vec<_> = h.get_all("x-tag").iter().collect();
        assert_eq!(tags, ["b"], "removed first, then added");

        let mut r = map(&[("server", "nginx"), ("x-served-by", "app")]);
        mutate_response(&mut r, &m);
        assert!(!r.contains_key("server"));
        let served: Vec<_> = r.get_all("x-served-by").iter().collect();
        assert_eq!(served, ["app", "skiff"]);
    }

    #[test]
    fn grpc_is_recognised_by_content_type() {
        assert!(is_grpc(&map(&[("content-type", "application/grpc")])));
        assert!(is_grpc(&map(&[("content-type", "application/grpc+proto")])));
        assert!(!is_grpc(&map(&[("content-type", "application/json")])));
        assert!(!is_grpc(&HeaderMap::new()));
    }
}
