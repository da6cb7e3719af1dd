//! The typed values of the annotations: what the sidecar builder renders into arguments,
//! each with the spelling istio-iptables, skiff-init and the proxy accept.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// `*`, nothing, or a list: the three meanings of `-i` and `-b`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureSet<T> {
    /// `*`.
    All,
    /// The empty string: capture is off in this direction.
    Nothing,
    /// Never empty.
    Only(Vec<T>),
}

/// The spelling istio-iptables and skiff-init accept: `*`, the empty string, or `a,b`.
impl<T: fmt::Display> fmt::Display for CaptureSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("*"),
            Self::Nothing => Ok(()),
            Self::Only(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{item}")?;
                }
                Ok(())
            }
        }
    }
}

/// An IP network as Go's `netip.ParsePrefix` (which Istio uses) accepts it: host bits are
/// kept as written, zones are refused, and the prefix length has no sign or leading zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let Some((addr, prefix)) = text.rsplit_once('/') else {
            return Err(format!(
                "{text:?} is not a CIDR (write address/prefix, e.g. 10.0.0.0/8 or fd00::/8)"
            ));
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            format!("{text:?} is not a CIDR: {addr:?} is not an IPv4 or IPv6 address")
        })?;
        let (family, max) = if addr.is_ipv4() {
            ("IPv4", 32)
        } else {
            ("IPv6", 128)
        };
        let canonical = prefix == "0" || !prefix.starts_with('0');
        match prefix.parse::<u8>() {
            Ok(bits) if canonical && is_digits(prefix) && bits <= max => {
                Ok(Cidr { addr, prefix: bits })
            }
            _ => Err(format!(
                "{text:?} is not a CIDR: the prefix length {prefix:?} must be a number from 0 to \
                 {max} for {family}"
            )),
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// How the init container redirects traffic (`-m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterceptionMode {
    Redirect,
    Tproxy,
    /// No iptables at all; without native sidecars there is no init container either.
    None,
}

impl InterceptionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redirect => "REDIRECT",
            Self::Tproxy => "TPROXY",
            Self::None => "NONE",
        }
    }
}

/// The proxy image variant: a tag suffix (`-debug`, `-distroless`), or none for `default`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageType {
    Debug,
    Distroless,
    Default,
}

impl ImageType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Distroless => "distroless",
            Self::Default => "default",
        }
    }
}

/// Envoy's log levels, which `--proxyLogLevel` and `--proxyComponentLogLevel` use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyLogLevel {
    Trace,
    Debug,
    Info,
    Warning,
    Error,
    Critical,
    Off,
}

impl ProxyLogLevel {
    pub const ALL: [Self; 7] = [
        Self::Trace,
        Self::Debug,
        Self::Info,
        Self::Warning,
        Self::Error,
        Self::Critical,
        Self::Off,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Error => "error",
            Self::Critical => "critical",
            Self::Off => "off",
        }
    }

    /// Case-sensitive, as Envoy is.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|level| level.as_str() == name)
    }
}

/// Istio's agent log levels (`--log_output_level`); note `warn` and `none`, not Envoy's
/// `warning` and `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentLogLevel {
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
    None,
}

impl AgentLogLevel {
    pub const ALL: [Self; 6] = [
        Self::Debug,
        Self::Info,
        Self::Warn,
        Self::Error,
        Self::Fatal,
        Self::None,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
            Self::Fatal => "fatal",
            Self::None => "none",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|level| level.as_str() == name)
    }
}

/// One `component:level` item of `sidecar.istio.io/componentLogLevel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentLogLevel {
    pub component: String,
    pub level: ProxyLogLevel,
}

impl fmt::Display for ComponentLogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.component, self.level.as_str())
    }
}

/// One `scope:level` item of `sidecar.istio.io/agentLogLevel`. A bare `level` is Istio's
/// shorthand for the `default` scope and is stored as such.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopedLogLevel {
    pub scope: String,
    pub level: AgentLogLevel,
}

impl fmt::Display for ScopedLogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.scope, self.level.as_str())
    }
}

/// Go's `strconv.ParseUint` digits: ASCII only, no sign (Rust's own parser takes `+`).
pub(super) fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}
