//! Small conversions shared by the listener and route translations: protobuf durations,
//! `Any` payloads checked against their type, and type URLs compared by type name.

use std::time::Duration;

use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
use prost::Message;

use super::Invalid;

/// The fully qualified type name of a type URL: what follows its last `/`
/// (`type.googleapis.com/envoy.x.Y` → `envoy.x.Y`). The prefix is arbitrary by protobuf's
/// rules, so types are always compared by this name.
pub(crate) fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

/// Whether two type URLs name the same type.
pub(crate) fn same_type(a: &str, b: &str) -> bool {
    type_name(a) == type_name(b)
}

/// Decodes an `Any` that must hold `expected` (a type URL).
pub(crate) fn decode<M: Message + Default>(any: &Any, expected: &str) -> Result<M, Invalid> {
    if !same_type(&any.type_url, expected) {
        return Err(Invalid::new(
            "",
            format!(
                "holds {:?}; Skiff expects {:?} here",
                any.type_url,
                type_name(expected)
            ),
        ));
    }
    M::decode(any.value.as_slice()).map_err(|e| {
        Invalid::new(
            "",
            format!("cannot be decoded as {}: {e}", type_name(expected)),
        )
    })
}

/// protobuf's bound on a `Duration`: ten thousand years.
const MAX_DURATION_SECONDS: i64 = 315_576_000_000;

/// A protobuf duration as a std one. Negative, malformed or out-of-range durations (beyond
/// protobuf's ten thousand years, where instant arithmetic could overflow) are refused.
pub(crate) fn duration(d: &PbDuration, at: &str) -> Result<Duration, Invalid> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 || d.seconds > MAX_DURATION_SECONDS
    {
        return Err(Invalid::new(
            at,
            format!(
                "{}s {}ns is not a valid duration; it must be from 0 to 10000 years",
                d.seconds, d.nanos
            ),
        ));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// An optional protobuf duration.
pub(crate) fn opt_duration(d: Option<&PbDuration>, at: &str) -> Result<Option<Duration>, Invalid> {
    d.map(|d| duration(d, at)).transpose()
}

/// A TCP port number from a protobuf `uint32`.
pub(crate) fn port(value: u32, at: &str) -> Result<u16, Invalid> {
    u16::try_from(value).map_err(|_| {
        Invalid::new(
            at,
            format!("{value} is not a TCP port; ports are 0 to 65535"),
        )
    })
}

/// Refuses a field that is set but that Skiff cannot honour.
pub(crate) fn unsupported(at: impl Into<String>, what: &str) -> Invalid {
    Invalid::new(at, format!("is set, but Skiff does not support {what}"))
}

/// The `regex` crate's error as one line (it explains over several lines: a heading, the
/// pattern with a caret under the mistake, then `error: why`), for a refusal that names the
/// pattern.
pub(crate) fn bad_regex(at: impl Into<String>, pattern: &str, error: &regex::Error) -> Invalid {
    let text = error.to_string();
    let why = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .or_else(|| text.lines().next())
        .unwrap_or_default();
    Invalid::new(
        at,
        format!(
            "{pattern:?} is not a valid regular expression ({why}); the syntax is RE2's, \
             without look-around or back-references"
        ),
    )
}
