//! Readers for the scalar values of the static config (addresses, durations, ports, names).
//!
//! Each value is checked inside yaml_serde's visit of that value, so that a bad value is
//! reported with its own path and line (`listeners[1].address at line 7 column 14`); a check
//! made after the visit would be reported at the enclosing mapping instead.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::access_log::Format;
use crate::snapshot::Cidr;

/// The longest duration accepted: a year. Longer values are almost certainly a unit mistake,
/// and keeping them small keeps every `Instant + duration` in the data path far from
/// overflowing.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// A visitor for a scalar that may be written as text or as a number; `text` and `number`
/// turn it into the value or explain what to write instead. Other YAML types (lists, maps,
/// booleans, floats) are refused with serde's "invalid type" message naming `expecting`.
struct Scalar<T> {
    expecting: &'static str,
    text: fn(&str) -> Result<T, String>,
    number: fn(i128) -> Result<T, String>,
}

impl<T> Visitor<'_> for Scalar<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.text)(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        (self.number)(i128::from(v)).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        (self.number)(i128::from(v)).map_err(E::custom)
    }
}

/// Declares `Deserialize` for a newtype read through [`Scalar`].
macro_rules! scalar {
    ($ty:ident, $expecting:literal, text: $text:expr, number: $number:expr $(,)?) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(Scalar {
                    expecting: $expecting,
                    text: |s| $text(s).map($ty),
                    number: |n| $number(n).map($ty),
                })
            }
        }
    };
}

/// A name or a reference to one: any non-empty text without surrounding spaces. A number
/// is taken as its digits, so `name: 9080` means the name "9080".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Name(pub String);

scalar!(Name, "a name", text: name, number: |n: i128| Ok::<_, String>(n.to_string()));

fn name(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("is empty; write a name".to_owned());
    }
    if text.trim() != text {
        return Err(format!(
            "{text:?} starts or ends with white space; write {:?}",
            text.trim()
        ));
    }
    Ok(text.to_owned())
}

/// A listener's `IP:port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ListenAddr(pub SocketAddr);

scalar!(ListenAddr, "an IP:port address such as 0.0.0.0:15001",
    text: |s: &str| socket_addr(s).and_then(|a| if a.port() == 0 {
        Err(format!("{s:?} has port 0, which would bind a random port; write the port to listen on"))
    } else {
        Ok(a)
    }),
    number: address_number,
);

/// An upstream endpoint's `IP:port`: a real address to connect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct EndpointAddr(pub SocketAddr);

scalar!(EndpointAddr, "an IP:port address such as 10.1.2.3:9080",
    text: endpoint_addr,
    number: address_number,
);

fn endpoint_addr(text: &str) -> Result<SocketAddr, String> {
    let address = socket_addr(text)?;
    if address.port() == 0 {
        return Err(format!(
            "{text:?} has port 0; write the port the endpoint serves on"
        ));
    }
    if address.ip().is_unspecified() {
        return Err(format!(
            "{text:?} is the unspecified address, not one to connect to; write the endpoint's \
             own IP (127.0.0.1 for the local app)"
        ));
    }
    Ok(address)
}

fn address_number(n: i128) -> Result<SocketAddr, String> {
    Err(format!(
        "{n} is a number, not an address; write IP:port, e.g. 127.0.0.1:{n}"
    ))
}

/// Parses `IP:port`, explaining the usual mistakes (no port, IPv6 without brackets, a host
/// name, which a static config cannot resolve).
pub(super) fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(address);
    }
    match text.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => Err(format!(
            "{text:?} has no port; write IP:port, e.g. {ip}:8080"
        )),
        Ok(IpAddr::V6(ip)) => Err(format!(
            "{text:?} has no port (or an IPv6 address without brackets); write \"[{ip}]:8080\""
        )),
        Err(_) => Err(format!(
            "{text:?} is not an IP:port address; write e.g. 10.0.0.1:8080 or \"[fd00::1]:8080\" \
             (host names are not resolved)"
        )),
    }
}

/// A source address for upstream connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct BindIp(pub IpAddr);

scalar!(BindIp, "an IP address such as 127.0.0.6",
    text: bind_ip,
    number: |n: i128| Err::<IpAddr, _>(format!("{n} is a number, not an IP address; write e.g. 127.0.0.6")),
);

fn bind_ip(text: &str) -> Result<IpAddr, String> {
    let ip = text
        .parse::<IpAddr>()
        .map_err(|_| format!("{text:?} is not an IP address; write e.g. 127.0.0.6 (no port)"))?;
    if ip.is_unspecified() {
        return Err(format!(
            "{text:?} is the unspecified address, which binds nothing; remove upstreamBind \
             to let the kernel choose"
        ));
    }
    Ok(ip)
}

/// A CIDR range (`10.0.0.0/8`; a bare address is a single host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CidrText(pub Cidr);

scalar!(CidrText, "a CIDR range such as 10.0.0.0/8",
    text: |s: &str| s.parse::<Cidr>().map_err(|e| format!("{s:?}: {e}; write e.g. 10.0.0.0/8 or fd00::/8")),
    number: |n: i128| Err::<Cidr, _>(format!("{n} is a number, not a CIDR range; write e.g. 10.0.0.0/8")),
);

/// A positive duration written with units: `100ms`, `2s`, `1.5s`, `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Dur(pub Duration);

scalar!(Dur, "a duration such as 100ms, 2s or 1h",
    text: positive_duration,
    number: |n: i128| Err::<Duration, _>(format!("{n} has no unit; write e.g. {n}s or {n}ms")),
);

fn positive_duration(text: &str) -> Result<Duration, String> {
    let d = duration(text)?;
    if d.is_zero() {
        return Err(format!(
            "{text:?} is zero; a timeout must be longer than 0 (remove the key for the default)"
        ));
    }
    if d > MAX_DURATION {
        return Err(format!("{text:?} is longer than a year (8760h)"));
    }
    Ok(d)
}

/// A request timeout: a duration, where `0s` (or `0`) means none at all, as in Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Timeout(pub Duration);

scalar!(Timeout, "a duration such as 15s, or 0s for none",
    text: |s: &str| duration(s).and_then(|d| if d > MAX_DURATION {
        Err(format!("{s:?} is longer than a year (8760h); write 0s for no timeout"))
    } else {
        Ok(d)
    }),
    number: |n: i128| if n == 0 {
        Ok(Duration::ZERO)
    } else {
        Err(format!("{n} has no unit; write e.g. {n}s or {n}ms"))
    },
);

/// Parses one or more `<number><unit>` parts (units `ms`, `s`, `m`, `h`; the number may have
/// up to nine decimals) and adds them up. Never panics: overflow is an error.
pub(super) fn duration(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| {
        format!(
            "{text:?} is not a duration ({why}); write a number and a unit (ms, s, m, h), e.g. 100ms, 2s, 1h30m"
        )
    };
    if text.is_empty() {
        return Err(bad("empty"));
    }
    let is_number = |c: char| c.is_ascii_digit() || c == '.';
    let mut nanos: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let unit_at = rest
            .find(|c: char| !is_number(c))
            .ok_or_else(|| bad("no unit"))?;
        let (number, after) = rest.split_at(unit_at);
        let next_at = after.find(is_number).unwrap_or(after.len());
        let (unit, next) = after.split_at(next_at);
        let unit_nanos: u128 = match unit {
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad(&format!("unknown unit {unit:?}"))),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty() {
            return Err(bad("a unit without a number"));
        }
        if fraction.contains('.') || fraction.len() > 9 {
            return Err(bad("malformed number"));
        }
        let too_long = || bad("too long");
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_long())?
        };
        let fraction_nanos = if fraction.is_empty() {
            0
        } else {
            // At most nine digits, so both factors are small and the product fits.
            let digits: u128 = fraction.parse().map_err(|_| bad("malformed number"))?;
            let scale = 10u128.pow(u32::try_from(fraction.len()).map_err(|_| too_long())?);
            digits * unit_nanos / scale
        };
        nanos = whole
            .checked_mul(unit_nanos)
            .and_then(|n| n.checked_add(fraction_nanos))
            .and_then(|n| n.checked_add(nanos))
            .ok_or_else(too_long)?;
        rest = next;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| bad("too long"))?;
    // The remainder is below 10^9, so it fits in u32.
    let sub = u32::try_from(nanos % 1_000_000_000).map_err(|_| bad("too long"))?;
    Ok(Duration::new(secs, sub))
}

/// A TCP port, 1 to 65535, written as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Port(pub u16);

scalar!(Port, "a port number from 1 to 65535",
    text: |s: &str| Err::<u16, _>(format!("{s:?} is text; write the port as a number from 1 to 65535")),
    number: |n: i128| u16::try_from(n)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{n} is not a port; write a number from 1 to 65535")),
);

/// A load-balancing weight: at least 1, so that every listed entry can be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Weight(pub u32);

scalar!(Weight, "a weight of 1 or more",
    text: |s: &str| Err::<u32, _>(format!("{s:?} is text; write the weight as a whole number of 1 or more")),
    number: |n: i128| match u32::try_from(n) {
        Ok(0) => Err("is 0; a weight must be 1 or more (remove the entry to send it nothing)".to_owned()),
        Ok(w) => Ok(w),
        Err(_) => Err(format!("{n} is not a weight; write a whole number from 1 to {}", u32::MAX)),
    },
);

/// A count such as `minRetryConcurrency`: a whole number from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Count(pub u32);

scalar!(Count, "a whole number of 0 or more",
    text: |s: &str| Err::<u32, _>(format!("{s:?} is text; write a whole number such as 3")),
    number: |n: i128| u32::try_from(n)
        .map_err(|_| format!("{n} is not a count; write a whole number from 0 to {}", u32::MAX)),
);

/// A percentage from 0 to 100, fractions allowed: `20`, `12.5`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Percent(pub f64);

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Percent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a percentage from 0 to 100")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Percent, E> {
                if !v.is_finite() {
                    return Err(E::custom(format!(
                        "{v} is not a finite number; write a percentage from 0 to 100, e.g. 20"
                    )));
                }
                if !(0.0..=100.0).contains(&v) {
                    return Err(percent_range(v));
                }
                Ok(Percent(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Percent, E> {
                match u8::try_from(v) {
                    Ok(p) if p <= 100 => Ok(Percent(f64::from(p))),
                    _ => Err(percent_range(v)),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Percent, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(percent_range(v)),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Percent, E> {
                Err(E::custom(format!(
                    "{v:?} is text; write the percentage as a number from 0 to 100, e.g. 20"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

fn percent_range<E: de::Error>(v: impl fmt::Display) -> E {
    E::custom(format!(
        "{v} is outside 0 to 100; write a percentage, e.g. 20"
    ))
}

/// An access log encoding, `TEXT` or `JSON` in any case (as Istio's
/// `meshConfig.accessLogEncoding` is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Encoding(pub Format);

scalar!(Encoding, "TEXT or JSON",
    text: |s: &str| s.parse::<Format>()
        .map_err(|_| format!("{s:?} is not an access log encoding; write TEXT or JSON")),
    number: |n: i128| Err::<Format, _>(format!("{n} is not an access log encoding; write TEXT or JSON")),
);

/// Reads a key that may be left out but, once written, must hold a value: `null` (or
/// nothing after the colon) reaches the value's own reader instead of becoming `None`.
pub(super) fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// The top-level `accessLog`: `{}` (Istio's text format) or `{encoding: TEXT | JSON}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct AccessLogSpec {
    pub encoding: Format,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessLogMap {
    #[serde(default)]
    encoding: Option<Encoding>,
}

impl<'de> Deserialize<'de> for AccessLogSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AccessLogSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("{} or {encoding: TEXT | JSON}")
            }
            fn visit_unit<E: de::Error>(self) -> Result<AccessLogSpec, E> {
                Err(E::custom(
                    "is empty; write accessLog: {} to log every HTTP request in TEXT, or remove \
                     the key for no access log",
                ))
            }
            fn visit_none<E: de::Error>(self) -> Result<AccessLogSpec, E> {
                self.visit_unit()
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AccessLogSpec, E> {
                Err(E::custom(match v.parse::<Format>() {
                    Ok(_) => {
                        format!("{v:?} is text, not a map; write accessLog: {{encoding: {v}}}")
                    }
                    Err(_) => format!(
                        "{v:?} is text, not a map; write accessLog: {{encoding: TEXT}} or \
                         accessLog: {{encoding: JSON}}"
                    ),
                }))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<AccessLogSpec, E> {
                Err(E::custom(if v {
                    "is true, not a map; write accessLog: {} for TEXT, or accessLog: {encoding: JSON}"
                } else {
                    "is false, not a map; remove the key for no access log"
                }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<AccessLogSpec, A::Error> {
                let m = AccessLogMap::deserialize(MapAccessDeserializer::new(map))?;
                Ok(AccessLogSpec {
                    encoding: m.encoding.map_or(Format::Text, |e| e.0),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A virtual host domain: `*`, an exact authority (`reviews`, `reviews:9080`), or one
/// wildcard at the start or the end (`*.example.com`, `reviews.*`), as Envoy accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Domain(pub String);

scalar!(Domain, "a domain such as reviews.default.svc.cluster.local or *",
    text: domain,
    number: |n: i128| Err::<String, _>(format!("{n} is a number; quote the domain: \"{n}\"")),
);

fn domain(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("is empty; write a host name, host:port, or *".to_owned());
    }
    if text.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(format!(
            "{text:?} contains white space or '/'; write a host name or host:port"
        ));
    }
    let stars = text.matches('*').count();
    let at_an_end = text.starts_with('*') || text.ends_with('*');
    if stars > 1 || (stars == 1 && !at_an_end) {
        return Err(format!(
            "{text:?}: a domain may hold one * at its start or end (*.example.com, example.*) \
             or be * alone"
        ));
    }
    Ok(text.to_ascii_lowercase())
}

/// A route's path prefix, which must start with `/` as request paths do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Prefix(pub String);

impl Default for Prefix {
    fn default() -> Self {
        Prefix("/".to_owned())
    }
}

scalar!(Prefix, "a path prefix such as /api/",
    text: |s: &str| if s.starts_with('/') && !s.chars().any(char::is_whitespace) {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not a path prefix; it must start with / and hold no spaces, e.g. \"/{}\"", s.trim_start_matches('/')))
    },
    number: |n: i128| Err::<String, _>(format!("{n} is not a path prefix; write e.g. \"/{n}\"")),
);

/// An endpoint: `10.1.2.3:9080`, or `{address: 10.1.2.3:9080, weight: 2}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EndpointSpec {
    pub address: SocketAddr,
    pub weight: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointMap {
    address: EndpointAddr,
    #[serde(default)]
    weight: Option<Weight>,
}

impl<'de> Deserialize<'de> for EndpointSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = EndpointSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IP:port address, or {address: IP:port, weight: N}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EndpointSpec, E> {
                let address = endpoint_addr(v).map_err(E::custom)?;
                Ok(EndpointSpec { address, weight: 1 })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<EndpointSpec, A::Error> {
                let m = EndpointMap::deserialize(MapAccessDeserializer::new(map))?;
                Ok(EndpointSpec {
                    address: m.address.0,
                    weight: m.weight.map_or(1, |w| w.0),
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A listener's `detection`: `false`, `true`, or `{enabled, timeout}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct DetectionSpec {
    pub enabled: Option<bool>,
    pub timeout: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DetectionMap {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    timeout: Option<Dur>,
}

impl<'de> Deserialize<'de> for DetectionSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DetectionSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false, or {enabled: BOOL, timeout: DURATION}")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<DetectionSpec, E> {
                Ok(DetectionSpec {
                    enabled: Some(v),
                    timeout: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<DetectionSpec, A::Error> {
                let m = DetectionMap::deserialize(MapAccessDeserializer::new(map))?;
                Ok(DetectionSpec {
                    enabled: m.enabled,
                    timeout: m.timeout.map(|t| t.0),
                })
            }
        }
        d.deserialize_any(V)
    }
}
