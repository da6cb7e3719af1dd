//! The validated configuration: every flag turned into a typed value, every bad value
//! rejected up front with the flag's name, so that planning never has to second-guess input.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::time::Duration;

use crate::error::InitError;
use crate::flags::Flags;

/// Istio's proxy user when `ENVOY_USER` cannot be looked up.
pub const DEFAULT_PROXY_UID: &str = "1337";
/// At most this many owner groups can be combined into one rule (kernel match-count limits).
pub const MAX_OWNER_GROUPS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterceptionMode {
    Redirect,
    Tproxy,
}

/// Which inbound ports are captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundPorts {
    None,
    /// `-b '*'`: everything but these ports.
    AllExcept(Vec<u16>),
    Only(Vec<u16>),
}

/// Which outbound destinations are captured (`-i`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundRanges {
    None,
    All,
    Only(Vec<Cidr>),
}

/// `ISTIO_OUTBOUND_OWNER_GROUPS` / `..._EXCLUDE`: whose outbound traffic is captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerGroups {
    /// Every group except these (empty: every group).
    AllExcept(Vec<String>),
    /// Only these groups.
    Only(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IptablesFlavor {
    Legacy,
    Nft,
}

/// `--ipv6`: whether to program IPv6 as well, or detect it from the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv6Choice {
    Auto,
    On,
    Off,
}

/// What the run should do after planning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Apply,
    CleanupOnly,
    /// `--skip-rule-apply`: program nothing (only validate, if asked).
    Nothing,
}

/// An IP network as written by the user: the address keeps its host bits, as istio-iptables
/// prints it, and IPv6 is printed in its canonical spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s.split_once('/').ok_or_else(|| {
            format!("{s:?} is not a CIDR (write it as address/prefix, e.g. 10.0.0.0/8)")
        })?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} in {s:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("prefix length {prefix:?} in {s:?} must be 0..={max}"))?;
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Everything skiff-init needs to plan and apply, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub proxy_port: u16,
    pub inbound_capture_port: u16,
    pub inbound_tunnel_port: u16,
    pub proxy_uids: Vec<String>,
    pub proxy_gids: Vec<String>,
    pub mode: InterceptionMode,
    pub tproxy_mark: u32,
    pub tproxy_route_table: u32,
    pub inbound_ports: InboundPorts,
    pub exclude_interfaces: Vec<String>,
    pub outbound_ranges: OutboundRanges,
    pub exclude_ranges: Vec<Cidr>,
    pub outbound_ports: Vec<u16>,
    pub outbound_exclude_ports: Vec<u16>,
    pub kube_virt_interfaces: Vec<String>,
    pub owner_groups: OwnerGroups,
    /// `ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR`: what counts as "localhost" for IPv4.
    pub loopback_cidr: Cidr,
    pub redirect_dns: bool,
    pub capture_all_dns: bool,
    pub drop_invalid: bool,
    pub dual_stack: bool,
    pub ipv6: Ipv6Choice,
    /// `--dns-servers`; `None` means read /etc/resolv.conf.
    pub dns_servers: Option<Vec<IpAddr>>,
    pub action: Action,
    pub dry_run: bool,
    pub run_validation: bool,
    pub probe_port: u16,
    pub probe_timeout: Duration,
    pub reconcile: bool,
    pub force_apply: bool,
    pub force_flavor: Option<IptablesFlavor>,
    pub network_namespace: Option<String>,
}

/// The environment-only settings of istio-iptables, read by the caller so that
/// `Config::from_flags` stays a pure function.
#[derive(Debug, Clone, Default)]
pub struct EnvSettings {
    pub loopback_cidr: Option<String>,
    pub owner_groups: Option<String>,
    pub owner_groups_exclude: Option<String>,
    /// The UID of `$ENVOY_USER` (default `istio-proxy`), when that user exists.
    pub envoy_user_uid: Option<u32>,
}

impl EnvSettings {
    /// Reads the process environment and the passwd database.
    pub fn from_process() -> EnvSettings {
        let var = |name: &str| std::env::var(name).ok();
        let user = var("ENVOY_USER").unwrap_or_else(|| "istio-proxy".to_string());
        EnvSettings {
            loopback_cidr: var("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR"),
            owner_groups: var("ISTIO_OUTBOUND_OWNER_GROUPS"),
            owner_groups_exclude: var("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE"),
            envoy_user_uid: nix::unistd::User::from_name(&user)
                .ok()
                .flatten()
                .map(|u| u.uid.as_raw()),
        }
    }
}

/// Splits a comma-separated value the way istio-iptables does: empty items are dropped, so
/// `""` is an empty list and `"6000,7000,"` is two items.
pub fn split_list(value: &str) -> Vec<&str> {
    value.split(',').filter(|s| !s.is_empty()).collect()
}

fn bad(flag: &'static str, value: &str, reason: impl Into<String>) -> InitError {
    InitError::InvalidFlag {
        flag,
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn port(flag: &'static str, value: &str) -> Result<u16, InitError> {
    match value.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(bad(flag, value, "a port must be a number from 1 to 65535")),
    }
}

fn ports(flag: &'static str, value: &str) -> Result<Vec<u16>, InitError> {
    split_list(value)
        .into_iter()
        .map(|p| port(flag, p))
        .collect()
}

fn cidrs(flag: &'static str, value: &str) -> Result<Vec<Cidr>, InitError> {
    split_list(value)
        .into_iter()
        .map(|c| c.parse::<Cidr>().map_err(|reason| bad(flag, value, reason)))
        .collect()
}

/// Interface names as the kernel allows them (iptables also accepts a trailing `+` wildcard).
fn interfaces(flag: &'static str, value: &str) -> Result<Vec<String>, InitError> {
    split_list(value)
        .into_iter()
        .map(|name| {
            let ok = name.len() <= 15
                && !name.contains(|c: char| c.is_whitespace() || c == '/' || c == ':' || c == '!');
            if ok {
                Ok(name.to_string())
            } else {
                Err(bad(
                    flag,
                    value,
                    format!("{name:?} is not an interface name (at most 15 characters, no spaces, '/', ':' or '!')"),
                ))
            }
        })
        .collect()
}

/// User and group ids or names, as `-m owner --uid-owner/--gid-owner` accept them.
fn owners(flag: &'static str, value: &str) -> Result<Vec<String>, InitError> {
    split_list(value)
        .into_iter()
        .map(|id| {
            let ok = id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if ok {
                Ok(id.to_string())
            } else {
                Err(bad(
                    flag,
                    value,
                    format!("{id:?} is not a user/group id or name"),
                ))
            }
        })
        .collect()
}

/// Go's `time.ParseDuration` for the forms people write: `5s`, `500ms`, `1m30s`, `1.5s`.
pub fn parse_go_duration(value: &str) -> Result<Duration, String> {
    let err = || format!("{value:?} is not a duration (write e.g. 5s, 500ms or 1m30s)");
    let mut rest = value.trim();
    if rest.is_empty() {
        return Err(err());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let number: f64 = rest[..num_len].parse().map_err(|_| err())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(err()),
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

impl Config {
    /// Validates the flags and the environment-only settings; a pure function.
    pub fn from_flags(flags: &Flags, env: &EnvSettings) -> Result<Config, InitError> {
        if flags.cni_mode {
            return Err(bad(
                "--cni-mode",
                "true",
                "skiff-init runs as the Pod's init container; a CNI node agent is not part of Skiff",
            ));
        }
        if flags.native_nftables {
            return Err(bad(
                "--native-nftables",
                "true",
                "Skiff programs nftables hosts through iptables-nft, which it detects by itself; drop the flag",
            ));
        }

        let mode = match flags.interception_mode.as_str() {
            "" | "REDIRECT" | "redirect" => InterceptionMode::Redirect,
            "TPROXY" | "tproxy" => InterceptionMode::Tproxy,
            other => {
                return Err(bad(
                    "-m/--istio-inbound-interception-mode",
                    other,
                    "the mode must be REDIRECT or TPROXY",
                ));
            }
        };

        let mut proxy_uids = owners("-u/--proxy-uid", &flags.proxy_uid)?;
        if proxy_uids.is_empty() {
            let uid = env
                .envoy_user_uid
                .map(|u| u.to_string())
                .unwrap_or_else(|| DEFAULT_PROXY_UID.to_string());
            proxy_uids.push(uid);
        }
        let mut proxy_gids = owners("-g/--proxy-gid", &flags.proxy_gid)?;
        if proxy_gids.is_empty() {
            proxy_gids = proxy_uids.clone();
        }

        let inbound_ports = match flags.inbound_ports.as_str() {
            "*" => InboundPorts::AllExcept(ports(
                "-d/--istio-local-exclude-ports",
                &flags.inbound_exclude_ports,
            )?),
            list => {
                let only = ports("-b/--istio-inbound-ports", list)?;
                if only.is_empty() {
                    InboundPorts::None
                } else {
                    InboundPorts::Only(only)
                }
            }
        };

        let outbound_ranges = match flags.service_cidr.as_str() {
            "*" => OutboundRanges::All,
            list => {
                let only = cidrs("-i/--istio-service-cidr", list)?;
                if only.is_empty() {
                    OutboundRanges::None
                } else {
                    OutboundRanges::Only(only)
                }
            }
        };

        if flags.service_exclude_cidr == "*" {
            return Err(bad(
                "-x/--istio-service-exclude-cidr",
                "*",
                "excluding every destination is not allowed; to capture nothing outbound, omit -i instead",
            ));
        }
        let exclude_ranges = cidrs(
            "-x/--istio-service-exclude-cidr",
            &flags.service_exclude_cidr,
        )?;

        let owner_groups = parse_owner_groups(env)?;

        let loopback_raw = env
            .loopback_cidr
            .clone()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "127.0.0.1/32".to_string());
        let loopback_cidr = parse_loopback_cidr(&loopback_raw)?;

        let ipv6 = match flags.ipv6.as_str() {
            "auto" => Ipv6Choice::Auto,
            "true" => Ipv6Choice::On,
            "false" => Ipv6Choice::Off,
            other => return Err(bad("--ipv6", other, "use auto, true or false")),
        };

        let dns_servers = match &flags.dns_servers {
            None => None,
            Some(list) => Some(
                split_list(list)
                    .into_iter()
                    .map(|s| {
                        s.parse::<IpAddr>().map_err(|_| {
                            bad("--dns-servers", list, format!("{s:?} is not an IP address"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };

        let force_flavor = match flags.force_iptables_binary.as_str() {
            "" => None,
            "legacy" => Some(IptablesFlavor::Legacy),
            "nft" => Some(IptablesFlavor::Nft),
            other => {
                return Err(bad(
                    "--force-iptables-binary",
                    other,
                    "use legacy or nft (or leave it empty to detect)",
                ));
            }
        };

        let tproxy_mark = flags.tproxy_mark.parse::<u32>().map_err(|_| {
            bad(
                "-t/--istio-inbound-tproxy-mark",
                &flags.tproxy_mark,
                "the mark must be a number",
            )
        })?;
        let tproxy_route_table = flags
            .tproxy_route_table
            .parse::<u32>()
            .ok()
            .filter(|t| *t > 0)
            .ok_or_else(|| {
                bad(
                    "-r/--istio-inbound-tproxy-route-table",
                    &flags.tproxy_route_table,
                    "the routing table must be a number greater than 0",
                )
            })?;

        let action = if flags.cleanup_only {
            Action::CleanupOnly
        } else if flags.skip_rule_apply {
            Action::Nothing
        } else {
            Action::Apply
        };

        Ok(Config {
            proxy_port: port("-p/--envoy-port", &flags.envoy_port)?,
            inbound_capture_port: port("-z/--inbound-capture-port", &flags.inbound_capture_port)?,
            inbound_tunnel_port: port("-e/--inbound-tunnel-port", &flags.inbound_tunnel_port)?,
            proxy_uids,
            proxy_gids,
            mode,
            tproxy_mark,
            tproxy_route_table,
            inbound_ports,
            exclude_interfaces: interfaces(
                "-c/--istio-exclude-interfaces",
                &flags.exclude_interfaces,
            )?,
            outbound_ranges,
            exclude_ranges,
            outbound_ports: ports("-q/--istio-outbound-ports", &flags.outbound_ports)?,
            outbound_exclude_ports: ports(
                "-o/--istio-local-outbound-ports-exclude",
                &flags.outbound_exclude_ports,
            )?,
            kube_virt_interfaces: interfaces(
                "-k/--kube-virt-interfaces",
                &flags.kube_virt_interfaces,
            )?,
            owner_groups,
            loopback_cidr,
            redirect_dns: flags.redirect_dns,
            capture_all_dns: flags.capture_all_dns,
            drop_invalid: flags.drop_invalid,
            dual_stack: flags.dual_stack,
            ipv6,
            dns_servers,
            action,
            dry_run: flags.dry_run,
            run_validation: flags.run_validation,
            probe_port: port("--iptables-probe-port", &flags.iptables_probe_port)?,
            probe_timeout: parse_go_duration(&flags.probe_timeout)
                .map_err(|reason| bad("--probe-timeout", &flags.probe_timeout, reason))?,
            reconcile: flags.reconcile,
            force_apply: flags.force_apply,
            force_flavor,
            network_namespace: Some(flags.network_namespace.clone()).filter(|n| !n.is_empty()),
        })
    }

    /// The IPv4 addresses that count as "this host" in the loopback rules.
    pub fn loopback_v4(&self) -> String {
        self.loopback_cidr.to_string()
    }
}

fn parse_owner_groups(env: &EnvSettings) -> Result<OwnerGroups, InitError> {
    const INCLUDE: &str = "ISTIO_OUTBOUND_OWNER_GROUPS";
    const EXCLUDE: &str = "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE";
    let include = env.owner_groups.as_deref().unwrap_or("*");
    if include == "*" {
        let except = owners(EXCLUDE, env.owner_groups_exclude.as_deref().unwrap_or(""))?;
        return Ok(OwnerGroups::AllExcept(except));
    }
    let only = owners(INCLUDE, include)?;
    if only.len() > MAX_OWNER_GROUPS {
        return Err(bad(
            INCLUDE,
            include,
            format!(
                "at most {MAX_OWNER_GROUPS} groups can be captured (got {}); list the groups to exclude in {EXCLUDE} instead",
                only.len()
            ),
        ));
    }
    Ok(OwnerGroups::Only(only))
}

fn parse_loopback_cidr(value: &str) -> Result<Cidr, InitError> {
    const VAR: &str = "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR";
    let cidr: Cidr = value.parse().map_err(|reason| bad(VAR, value, reason))?;
    match cidr.addr {
        IpAddr::V4(v4) if v4.is_loopback() => {}
        _ => {
            return Err(bad(
                VAR,
                value,
                "it must be an IPv4 loopback (127.0.0.0/8) address",
            ));
        }
    }
    if !(8..=32).contains(&cidr.prefix) {
        return Err(bad(
            VAR,
            value,
            "the prefix length must be between 8 and 32",
        ));
    }
    Ok(cidr)
}

/// The address the loopback CIDR names, for the validation self-test.
pub fn loopback_address(cidr: &Cidr) -> Ipv4Addr {
    match cidr.addr {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(_) => Ipv4Addr::LOCALHOST,
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
