//! The gRPC health check a Kubernetes `grpc` probe performs: one unary call of
//! `grpc.health.v1.Health/Check` over HTTP/2, healthy when the answer is `SERVING`. The
//! connection is plaintext (h2c) as the kubelet's, or TLS when the probe's `mode` asks for it
//! (with ALPN `h2` and the certificate unverified, like an HTTPS probe; see
//! [`tls`](super::tls)).
//!
//! The messages are tiny and fixed, so they are written and read by hand instead of pulling
//! a protobuf and gRPC stack into the proxy:
//!
//! - request `HealthCheckRequest { string service = 1; }`: field 1 as a length-delimited
//!   string, left out when empty;
//! - response `HealthCheckResponse { ServingStatus status = 1; }` with `UNKNOWN = 0`,
//!   `SERVING = 1`, `NOT_SERVING = 2`, `SERVICE_UNKNOWN = 3`: field 1 as a varint (absent
//!   means 0);
//! - each message framed as gRPC does: a compressed flag byte (0), a 4-byte big-endian
//!   length, the message; the call's outcome in the `grpc-status` trailer (or header, for a
//!   trailers-only answer).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderValue, TE, USER_AGENT};
use hyper::{HeaderMap, Request, StatusCode};

use super::tls::{self, Transport};
use crate::admin::http::{Overflow, Protocol};

/// The method the kubelet calls.
pub(crate) const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// A health answer is a few bytes; anything much larger is not one.
const MAX_RESPONSE: usize = 64 * 1024;

/// grpc.health.v1.HealthCheckResponse.ServingStatus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServingStatus {
    Unknown,
    Serving,
    NotServing,
    ServiceUnknown,
    /// A value this version of the protocol does not define.
    Other(u64),
}

impl ServingStatus {
    /// The name in grpc/health/v1/health.proto.
    pub(crate) fn name(self) -> String {
        match self {
            ServingStatus::Unknown => "UNKNOWN".to_owned(),
            ServingStatus::Serving => "SERVING".to_owned(),
            ServingStatus::NotServing => "NOT_SERVING".to_owned(),
            ServingStatus::ServiceUnknown => "SERVICE_UNKNOWN".to_owned(),
            ServingStatus::Other(value) => format!("status {value}"),
        }
    }

    fn from_wire(value: u64) -> ServingStatus {
        match value {
            0 => ServingStatus::Unknown,
            1 => ServingStatus::Serving,
            2 => ServingStatus::NotServing,
            3 => ServingStatus::ServiceUnknown,
            other => ServingStatus::Other(other),
        }
    }
}

/// Calls `Check(service)` on `address`, from `source` when given, over `transport`, all
/// within `timeout`. `Err` says why no status could be read (and which gRPC status the
/// server sent).
pub(crate) async fn check(
    (address, source): (SocketAddr, Option<IpAddr>),
    transport: Transport<'_>,
    service: &str,
    user_agent: Option<&HeaderValue>,
    timeout: Duration,
) -> Result<ServingStatus, String> {
    let scheme = match transport {
        Transport::Tcp => "http",
        Transport::Tls { .. } => "https",
    };
    let mut request = Request::post(format!("{scheme}://{address}{CHECK_PATH}"))
        .header(CONTENT_TYPE, "application/grpc")
        .header(TE, "trailers")
        .body(Full::new(Bytes::from(encode_request(service))))
        .map_err(|e| format!("invalid gRPC request: {e}"))?;
    // The kubelet's user agent, as Istio's agent passes it on (servers log it).
    let agent = user_agent
        .cloned()
        .unwrap_or(HeaderValue::from_static("kube-probe"));
    request.headers_mut().insert(USER_AGENT, agent);
    let fetched = tls::fetch(
        (address, source),
        transport,
        Protocol::Http2,
        request,
        MAX_RESPONSE,
        Overflow::Fail,
        timeout,
    )
    .await
    .map_err(|e| format!("gRPC health check of {address} failed: {e}"))?;
    if fetched.status != StatusCode::OK {
        return Err(format!(
            "gRPC health check of {address}: HTTP status {}",
            fetched.status
        ));
    }
    // A trailers-only answer carries grpc-status in the headers.
    let status =
        grpc_status(fetched.trailers.as_ref()).or_else(|| grpc_status(Some(&fetched.headers)));
    match status {
        Some((0, _)) => {}
        Some((code, message)) => {
            return Err(format!(
                "gRPC health check of {address}: status {code} ({}){}",
                code_name(code),
                message.map(|m| format!(": {m}")).unwrap_or_default()
            ));
        }
        None => {
            return Err(format!(
                "gRPC health check of {address}: the answer has no grpc-status"
            ));
        }
    }
    decode_response(&fetched.body).map_err(|e| format!("gRPC health check of {address}: {e}"))
}

fn grpc_status(headers: Option<&HeaderMap>) -> Option<(u32, Option<String>)> {
    let headers = headers?;
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .trim()
        .parse::<u32>()
        .ok()?;
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .filter(|m| !m.is_empty())
        .map(str::to_owned);
    Some((code, message))
}

/// The names the kubelet's errors use, for the common codes.
fn code_name(code: u32) -> &'static str {
    match code {
        1 => "CANCELLED",
        2 => "UNKNOWN",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND: the server does not know this service",
        12 => "UNIMPLEMENTED: the server does not implement grpc.health.v1.Health",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        _ => "see the gRPC status codes",
    }
}

/// A framed `HealthCheckRequest`.
pub(crate) fn encode_request(service: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(service.len() + 8);
    if !service.is_empty() {
        message.push(0x0a); // field 1, wire type 2 (length-delimited)
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    frame(&message)
}

/// `message` with gRPC's 5-byte prefix (uncompressed).
pub(crate) fn frame(message: &[u8]) -> Vec<u8> {
    let mut framed = Vec::with_capacity(message.len() + 5);
    framed.push(0);
    // Messages here are a few bytes; a length beyond u32 cannot occur.
    let length = u32::try_from(message.len()).unwrap_or(u32::MAX);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(message);
    framed
}

/// The status of a framed `HealthCheckResponse`.
pub(crate) fn decode_response(body: &[u8]) -> Result<ServingStatus, String> {
    let message = unframe(body)?;
    let mut status = 0;
    let mut rest = message;
    while !rest.is_empty() {
        let (key, after) = read_varint(rest).ok_or("the response message is truncated")?;
        rest = after;
        let (field, wire_type) = (key >> 3, key & 7);
        match wire_type {
            0 => {
                let (value, after) =
                    read_varint(rest).ok_or("the response message is truncated")?;
                rest = after;
                if field == 1 {
                    status = value;
                }
            }
            1 => rest = rest.get(8..).ok_or("the response message is truncated")?,
            2 => {
                let (length, after) =
                    read_varint(rest).ok_or("the response message is truncated")?;
                let length = usize::try_from(length).map_err(|_| "a field is too long")?;
                rest = after
                    .get(length..)
                    .ok_or("the response message is truncated")?;
            }
            5 => rest = rest.get(4..).ok_or("the response message is truncated")?,
            other => {
                return Err(format!(
                    "the response message has the unknown wire type {other}"
                ));
            }
        }
    }
    Ok(ServingStatus::from_wire(status))
}

/// The one message of a unary answer.
fn unframe(body: &[u8]) -> Result<&[u8], String> {
    let Some((header, rest)) = body.split_first_chunk::<5>() else {
        return Err("the answer has no message".to_owned());
    };
    if header[0] != 0 {
        return Err("the answer is compressed, which was not asked for".to_owned());
    }
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let length =
        usize::try_from(length).map_err(|_| "the message length is too large".to_owned())?;
    rest.get(..length).ok_or_else(|| {
        format!(
            "the message is truncated ({} of {length} bytes)",
            rest.len()
        )
    })
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}
