//! Rule planning: configuration plus host facts in, the ordered rule list per IP family out.
//!
//! The order and spelling follow istio-iptables exactly (spec/init.md section 2), so that
//! `iptables-save` of a Skiff pod reads like an Istio pod's. This module performs no I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::{Config, InboundPorts, InterceptionMode, OutboundRanges, OwnerGroups};

pub const ISTIO_INBOUND: &str = "ISTIO_INBOUND";
pub const ISTIO_REDIRECT: &str = "ISTIO_REDIRECT";
pub const ISTIO_IN_REDIRECT: &str = "ISTIO_IN_REDIRECT";
pub const ISTIO_OUTPUT: &str = "ISTIO_OUTPUT";
pub const ISTIO_OUTPUT_DNS: &str = "ISTIO_OUTPUT_DNS";
pub const ISTIO_DIVERT: &str = "ISTIO_DIVERT";
pub const ISTIO_TPROXY: &str = "ISTIO_TPROXY";
pub const ISTIO_DROP: &str = "ISTIO_DROP";

/// Marks the proxy's outbound-to-own-inbound packets in TPROXY mode.
pub const OUTBOUND_MARK: u32 = 1338;
/// The agent's DNS listener.
pub const DNS_CAPTURE_PORT: u16 = 15053;
/// Source address of the proxy's inbound passthrough connections (never re-captured).
pub const PASSTHROUGH_V4: &str = "127.0.0.6/32";
pub const PASSTHROUGH_V6: &str = "::6/128";
const LOOPBACK_V6: &str = "::1/128";

/// Every chain and target name that iptables itself defines, which must not get a `-N`.
const BUILT_IN: &[&str] = &[
    "INPUT",
    "OUTPUT",
    "FORWARD",
    "PREROUTING",
    "POSTROUTING",
    "ACCEPT",
    "RETURN",
    "DROP",
];

pub fn is_built_in(chain: &str) -> bool {
    BUILT_IN.contains(&chain)
}

/// The netfilter tables, in the alphabetical order restore files list them in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Filter,
    Mangle,
    Nat,
    Raw,
}

impl Table {
    pub const ALL: [Table; 4] = [Table::Filter, Table::Mangle, Table::Nat, Table::Raw];

    pub fn name(self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Mangle => "mangle",
            Table::Nat => "nat",
            Table::Raw => "raw",
        }
    }

    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn iptables(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

/// One rule: `-A chain spec`, or `-I chain position spec` when `position` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub table: Table,
    pub chain: &'static str,
    pub position: Option<u32>,
    pub spec: String,
}

impl Rule {
    /// The rule as an iptables command tail (`-A CHAIN ...` / `-I CHAIN N ...`).
    pub fn command(&self) -> String {
        match self.position {
            Some(n) => format!("-I {} {} {}", self.chain, n, self.spec),
            None => format!("-A {} {}", self.chain, self.spec),
        }
    }

    /// The same rule as a check (`-C CHAIN ...`): position does not matter to a check.
    pub fn check_command(&self) -> String {
        format!("-C {} {}", self.chain, self.spec)
    }

    /// The chain this rule jumps to, when its spec ends in `-j TARGET` with no target options.
    pub fn jump_target(&self) -> Option<&str> {
        let mut words = self.spec.rsplit(' ');
        let target = words.next()?;
        (words.next()? == "-j").then_some(target)
    }
}

/// Facts about the host that the planner needs but must not look up itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    pub ipv6: bool,
    pub dns_v4: Vec<Ipv4Addr>,
    pub dns_v6: Vec<Ipv6Addr>,
}

impl HostFacts {
    pub fn with_dns(ipv6: bool, servers: &[IpAddr]) -> HostFacts {
        let mut facts = HostFacts {
            ipv6,
            ..HostFacts::default()
        };
        for server in servers {
            match server {
                IpAddr::V4(v4) => facts.dns_v4.push(*v4),
                IpAddr::V6(v6) => facts.dns_v6.push(*v6),
            }
        }
        facts
    }
}

/// The policy route that steers TPROXY-marked packets to the local stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TproxyRoute {
    pub mark: u32,
    pub table: u32,
}

/// Everything to program: the rules per family and the routing set-up beside them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub v4: Vec<Rule>,
    /// `None` when IPv6 is off: ip6tables is then left alone entirely.
    pub v6: Option<Vec<Rule>>,
    /// TPROXY's `ip rule`/`ip route` (for v4, and v6 when on).
    pub tproxy_route: Option<TproxyRoute>,
}

impl Plan {
    pub fn families(&self) -> impl Iterator<Item = (Family, &[Rule])> {
        std::iter::once((Family::V4, self.v4.as_slice()))
            .chain(self.v6.as_deref().map(|rules| (Family::V6, rules)))
    }
}

/// Collects rules for both families, as istio-iptables' builder does: a rule added "for both"
/// goes to v6 only when IPv6 is on.
struct Builder {
    v4: Vec<Rule>,
    v6: Vec<Rule>,
    ipv6: bool,
}

impl Builder {
    fn push(
        &mut self,
        family: Family,
        table: Table,
        chain: &'static str,
        position: Option<u32>,
        spec: String,
    ) {
        let rule = Rule {
            table,
            chain,
            position,
            spec,
        };
        match family {
            Family::V4 => self.v4.push(rule),
            Family::V6 if self.ipv6 => self.v6.push(rule),
            Family::V6 => {}
        }
    }

    fn append(&mut self, table: Table, chain: &'static str, spec: impl Into<String>) {
        let spec = spec.into();
        self.push(Family::V4, table, chain, None, spec.clone());
        self.push(Family::V6, table, chain, None, spec);
    }

    fn append_to(
        &mut self,
        family: Family,
        table: Table,
        chain: &'static str,
        spec: impl Into<String>,
    ) {
        self.push(family, table, chain, None, spec.into());
    }

    fn insert_to(
        &mut self,
        family: Family,
        table: Table,
        chain: &'static str,
        position: u32,
        spec: impl Into<String>,
    ) {
        self.push(family, table, chain, Some(position), spec.into());
    }

    fn insert(
        &mut self,
        table: Table,
        chain: &'static str,
        position: u32,
        spec: impl Into<String>,
    ) {
        let spec = spec.into();
        self.push(Family::V4, table, chain, Some(position), spec.clone());
        self.push(Family::V6, table, chain, Some(position), spec);
    }

    /// A rule whose text differs per family (a loopback or passthrough address).
    fn append_versioned(
        &mut self,
        table: Table,
        chain: &'static str,
        spec: impl Fn(Family) -> String,
    ) {
        self.push(Family::V4, table, chain, None, spec(Family::V4));
        self.push(Family::V6, table, chain, None, spec(Family::V6));
    }
}

/// Plans the rules for `cfg` on a host described by `host`.
pub fn plan(cfg: &Config, host: &HostFacts) -> Plan {
    use Table::{Mangle, Nat};
    let mut b = Builder {
        v4: Vec::new(),
        v6: Vec::new(),
        ipv6: host.ipv6,
    };
    let tproxy = cfg.mode == InterceptionMode::Tproxy;
    let lo_v4 = cfg.loopback_v4();
    let localhost = |f: Family| match f {
        Family::V4 => lo_v4.clone(),
        Family::V6 => LOOPBACK_V6.to_string(),
    };
    let tunnel = cfg.inbound_tunnel_port;

    // DNS capture needs servers to capture, unless every :53 is captured.
    let redirect_dns = cfg.redirect_dns
        && (cfg.capture_all_dns || !host.dns_v4.is_empty() || !host.dns_v6.is_empty());
    let (includes_v4, includes_v6) = split_ranges(&cfg.outbound_ranges);
    let loopback_included = [&includes_v4, &includes_v6]
        .into_iter()
        .flatten()
        .flatten()
        .any(|c| c.addr.is_loopback());

    for nic in &cfg.exclude_interfaces {
        b.append(Nat, "PREROUTING", format!("-i {nic} -j RETURN"));
        b.append(Nat, "OUTPUT", format!("-o {nic} -j RETURN"));
    }
    if tproxy {
        for nic in &cfg.exclude_interfaces {
            b.append(Mangle, "PREROUTING", format!("-i {nic} -j RETURN"));
            b.append(Mangle, "OUTPUT", format!("-o {nic} -j RETURN"));
        }
    }
    for nic in &cfg.kube_virt_interfaces {
        b.insert(Nat, "PREROUTING", 1, format!("-i {nic} -j RETURN"));
    }
    if cfg.drop_invalid {
        b.append(
            Mangle,
            "PREROUTING",
            format!("-m conntrack --ctstate INVALID -j {ISTIO_DROP}"),
        );
        b.append(Mangle, ISTIO_DROP, "-j DROP");
    }

    b.append(
        Nat,
        ISTIO_INBOUND,
        format!("-p tcp --dport {tunnel} -j RETURN"),
    );
    b.append(
        Nat,
        ISTIO_REDIRECT,
        format!("-p tcp -j REDIRECT --to-ports {}", cfg.proxy_port),
    );
    b.append(
        Nat,
        ISTIO_IN_REDIRECT,
        format!("-p tcp -j REDIRECT --to-ports {}", cfg.inbound_capture_port),
    );

    plan_inbound(cfg, &mut b, &localhost);

    b.append(Nat, "OUTPUT", format!("-j {ISTIO_OUTPUT}"));
    for port in &cfg.outbound_exclude_ports {
        b.append(
            Nat,
            ISTIO_OUTPUT,
            format!("-p tcp --dport {port} -j RETURN"),
        );
        b.append(
            Nat,
            ISTIO_OUTPUT,
            format!("-p udp --dport {port} -j RETURN"),
        );
    }
    b.append_versioned(Nat, ISTIO_OUTPUT, |f| {
        let source = if f == Family::V4 {
            PASSTHROUGH_V4
        } else {
            PASSTHROUGH_V6
        };
        format!("-o lo -s {source} -j RETURN")
    });

    for (owner, ids) in [("uid", &cfg.proxy_uids), ("gid", &cfg.proxy_gids)] {
        for id in ids {
            // The proxy calling its own pod (by pod IP or a VIP that leads back here) goes to
            // the inbound listener, so app → own service works through both listeners.
            // Only the uid rule leaves port 53 alone for DNS capture, as istio-iptables does.
            let ports = if redirect_dns && owner == "uid" {
                format!("-m multiport ! --dports 53,{tunnel}")
            } else {
                format!("! --dport {tunnel}")
            };
            b.append_versioned(Nat, ISTIO_OUTPUT, |f| {
                format!(
                    "-o lo ! -d {} -p tcp {ports} -m owner --{owner}-owner {id} -j {ISTIO_IN_REDIRECT}",
                    localhost(f)
                )
            });
            // Other users talking over lo stay local, unless loopback was asked to be captured.
            if !loopback_included {
                let not_dns = if redirect_dns {
                    "-p tcp ! --dport 53 "
                } else {
                    ""
                };
                b.append(
                    Nat,
                    ISTIO_OUTPUT,
                    format!("-o lo {not_dns}-m owner ! --{owner}-owner {id} -j RETURN"),
                );
            }
            // Loop guard: the proxy's own traffic, any protocol, is never captured.
            b.append(
                Nat,
                ISTIO_OUTPUT,
                format!("-m owner --{owner}-owner {id} -j RETURN"),
            );
        }
    }

    match &cfg.owner_groups {
        OwnerGroups::AllExcept(groups) => {
            for group in groups {
                b.append(
                    Nat,
                    ISTIO_OUTPUT,
                    format!("-m owner --gid-owner {group} -j RETURN"),
                );
            }
        }
        OwnerGroups::Only(groups) => {
            let none_of: String = groups
                .iter()
                .map(|g| format!("-m owner ! --gid-owner {g} "))
                .collect();
            b.append(Nat, ISTIO_OUTPUT, format!("{none_of}-j RETURN"));
        }
    }

    if redirect_dns {
        plan_dns(cfg, host, &mut b);
    }

    b.append_versioned(Nat, ISTIO_OUTPUT, |f| {
        format!("-d {} -j RETURN", localhost(f))
    });
    for cidr in &cfg.exclude_ranges {
        let family = if cidr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        };
        b.append_to(family, Nat, ISTIO_OUTPUT, format!("-d {cidr} -j RETURN"));
    }
    for port in &cfg.outbound_ports {
        b.append(
            Nat,
            ISTIO_OUTPUT,
            format!("-p tcp --dport {port} -j {ISTIO_REDIRECT}"),
        );
    }
    for (family, includes) in [(Family::V4, includes_v4), (Family::V6, includes_v6)] {
        match includes {
            None => {
                b.append_to(family, Nat, ISTIO_OUTPUT, format!("-j {ISTIO_REDIRECT}"));
                for nic in &cfg.kube_virt_interfaces {
                    b.insert_to(
                        family,
                        Nat,
                        "PREROUTING",
                        1,
                        format!("-i {nic} -j {ISTIO_REDIRECT}"),
                    );
                }
            }
            Some(cidrs) => {
                for cidr in cidrs {
                    for nic in &cfg.kube_virt_interfaces {
                        b.insert_to(
                            family,
                            Nat,
                            "PREROUTING",
                            1,
                            format!("-i {nic} -d {cidr} -j {ISTIO_REDIRECT}"),
                        );
                    }
                    b.append_to(
                        family,
                        Nat,
                        ISTIO_OUTPUT,
                        format!("-d {cidr} -j {ISTIO_REDIRECT}"),
                    );
                }
            }
        }
    }

    if tproxy {
        plan_tproxy_marks(cfg, &mut b, &localhost);
    }

    Plan {
        v4: b.v4,
        v6: host.ipv6.then_some(b.v6),
        tproxy_route: tproxy.then_some(TproxyRoute {
            mark: cfg.tproxy_mark,
            table: cfg.tproxy_route_table,
        }),
    }
}

/// `-i` split per family: `None` is the wildcard, `Some(empty)` captures nothing.
fn split_ranges(
    ranges: &OutboundRanges,
) -> (
    Option<Vec<crate::config::Cidr>>,
    Option<Vec<crate::config::Cidr>>,
) {
    match ranges {
        OutboundRanges::All => (None, None),
        OutboundRanges::None => (Some(Vec::new()), Some(Vec::new())),
        OutboundRanges::Only(cidrs) => {
            let (v4, v6) = cidrs.iter().partition(|c| c.is_ipv4());
            (Some(v4), Some(v6))
        }
    }
}

fn plan_inbound(cfg: &Config, b: &mut Builder, localhost: &impl Fn(Family) -> String) {
    use Table::{Mangle, Nat};
    if cfg.inbound_ports == InboundPorts::None {
        return;
    }
    let tproxy = cfg.mode == InterceptionMode::Tproxy;
    let mark = cfg.tproxy_mark;
    let table = if tproxy {
        b.append(Mangle, ISTIO_DIVERT, format!("-j MARK --set-mark {mark}"));
        b.append(Mangle, ISTIO_DIVERT, "-j ACCEPT");
        b.append_versioned(Mangle, ISTIO_TPROXY, |f| {
            format!(
                "! -d {} -p tcp -j TPROXY --tproxy-mark {mark}/0xffffffff --on-port {}",
                localhost(f),
                cfg.inbound_capture_port
            )
        });
        Mangle
    } else {
        Nat
    };
    b.append(table, "PREROUTING", format!("-p tcp -j {ISTIO_INBOUND}"));

    match &cfg.inbound_ports {
        InboundPorts::None => {}
        InboundPorts::AllExcept(excluded) => {
            for port in excluded {
                b.append(
                    table,
                    ISTIO_INBOUND,
                    format!("-p tcp --dport {port} -j RETURN"),
                );
            }
            if tproxy {
                b.append(
                    Mangle,
                    ISTIO_INBOUND,
                    format!("-p tcp -m conntrack --ctstate RELATED,ESTABLISHED -j {ISTIO_DIVERT}"),
                );
                b.append(Mangle, ISTIO_INBOUND, format!("-p tcp -j {ISTIO_TPROXY}"));
            } else {
                b.append(Nat, ISTIO_INBOUND, format!("-p tcp -j {ISTIO_IN_REDIRECT}"));
            }
        }
        InboundPorts::Only(ports) => {
            for port in ports {
                if tproxy {
                    b.append(
                        Mangle,
                        ISTIO_INBOUND,
                        format!("-p tcp --dport {port} -m conntrack --ctstate RELATED,ESTABLISHED -j {ISTIO_DIVERT}"),
                    );
                    b.append(
                        Mangle,
                        ISTIO_INBOUND,
                        format!("-p tcp --dport {port} -j {ISTIO_TPROXY}"),
                    );
                } else {
                    b.append(
                        Nat,
                        ISTIO_INBOUND,
                        format!("-p tcp --dport {port} -j {ISTIO_IN_REDIRECT}"),
                    );
                }
            }
        }
    }
}

/// DNS capture: nat redirects to the agent, and raw-table conntrack zones that keep the
/// proxy↔resolver flows (zone 1) apart from the app↔agent flows (zone 2), which would
/// otherwise clash in UDP conntrack (istio/istio#33469).
fn plan_dns(cfg: &Config, host: &HostFacts, b: &mut Builder) {
    use Table::{Nat, Raw};
    let all = cfg.capture_all_dns;
    b.append(Raw, "OUTPUT", format!("-j {ISTIO_OUTPUT_DNS}"));
    if all || !host.dns_v4.is_empty() {
        b.append_to(
            Family::V4,
            Nat,
            ISTIO_OUTPUT,
            format!("-j {ISTIO_OUTPUT_DNS}"),
        );
    }
    if all || !host.dns_v6.is_empty() {
        b.append_to(
            Family::V6,
            Nat,
            ISTIO_OUTPUT,
            format!("-j {ISTIO_OUTPUT_DNS}"),
        );
    }

    let servers: Vec<(Family, String)> = host
        .dns_v4
        .iter()
        .map(|s| (Family::V4, format!("{s}/32")))
        .chain(host.dns_v6.iter().map(|s| (Family::V6, format!("{s}/128"))))
        .collect();
    // TCP then UDP; note istio-iptables spells the UDP target's option `--to-port`.
    for (proto, to) in [("tcp", "--to-ports"), ("udp", "--to-port")] {
        if all {
            b.append(
                Nat,
                ISTIO_OUTPUT_DNS,
                format!("-p {proto} --dport 53 -j REDIRECT {to} {DNS_CAPTURE_PORT}"),
            );
        } else {
            for (family, server) in &servers {
                b.append_to(
                    *family,
                    Nat,
                    ISTIO_OUTPUT_DNS,
                    format!(
                        "-p {proto} --dport 53 -d {server} -j REDIRECT {to} {DNS_CAPTURE_PORT}"
                    ),
                );
            }
        }
    }

    for (owner, ids) in [("uid", &cfg.proxy_uids), ("gid", &cfg.proxy_gids)] {
        for id in ids {
            b.append(
                Raw,
                ISTIO_OUTPUT_DNS,
                format!("-p udp --dport 53 -m owner --{owner}-owner {id} -j CT --zone 1"),
            );
            b.append(
                Raw,
                ISTIO_OUTPUT_DNS,
                format!(
                    "-p udp --sport {DNS_CAPTURE_PORT} -m owner --{owner}-owner {id} -j CT --zone 2"
                ),
            );
        }
    }

    if all {
        b.append(Raw, "PREROUTING", format!("-j {ISTIO_INBOUND}"));
        b.append(Raw, ISTIO_OUTPUT_DNS, "-p udp --dport 53 -j CT --zone 2");
        b.append(Raw, ISTIO_INBOUND, "-p udp --sport 53 -j CT --zone 1");
        return;
    }
    for family in [Family::V4, Family::V6] {
        let mine: Vec<&String> = servers
            .iter()
            .filter(|(f, _)| *f == family)
            .map(|(_, s)| s)
            .collect();
        if mine.is_empty() {
            continue;
        }
        b.append_to(family, Raw, "PREROUTING", format!("-j {ISTIO_INBOUND}"));
        for server in mine {
            b.append_to(
                family,
                Raw,
                ISTIO_OUTPUT_DNS,
                format!("-p udp --dport 53 -d {server} -j CT --zone 2"),
            );
            b.append_to(
                family,
                Raw,
                ISTIO_INBOUND,
                format!("-p udp --sport 53 -s {server} -j CT --zone 1"),
            );
        }
    }
}

/// TPROXY's mangle rules around the marks: keep the mark on the connection, and keep the
/// proxy's own and the passthrough traffic out of the TPROXY path.
fn plan_tproxy_marks(cfg: &Config, b: &mut Builder, localhost: &impl Fn(Family) -> String) {
    use Table::Mangle;
    let mark = cfg.tproxy_mark;
    b.append(
        Mangle,
        "PREROUTING",
        format!("-p tcp -m mark --mark {mark} -j CONNMARK --save-mark"),
    );
    b.append(
        Mangle,
        "OUTPUT",
        format!("-p tcp -o lo -m mark --mark {mark} -j RETURN"),
    );
    for (owner, ids) in [("uid", &cfg.proxy_uids), ("gid", &cfg.proxy_gids)] {
        for id in ids {
            b.append_versioned(Mangle, "OUTPUT", |f| {
                format!(
                    "! -d {} -p tcp -o lo -m owner --{owner}-owner {id} -j MARK --set-mark {OUTBOUND_MARK}",
                    localhost(f)
                )
            });
        }
    }
    b.append(
        Mangle,
        "OUTPUT",
        format!("-p tcp -m connmark --mark {mark} -j CONNMARK --restore-mark"),
    );
    b.insert(
        Mangle,
        ISTIO_INBOUND,
        1,
        format!("-p tcp -m mark --mark {mark} -j RETURN"),
    );
    b.insert_to(
        Family::V4,
        Mangle,
        ISTIO_INBOUND,
        2,
        format!("-p tcp -s {PASSTHROUGH_V4} -i lo -j RETURN"),
    );
    b.insert_to(
        Family::V6,
        Mangle,
        ISTIO_INBOUND,
        2,
        format!("-p tcp -s {PASSTHROUGH_V6} -i lo -j RETURN"),
    );
    b.insert(
        Mangle,
        ISTIO_INBOUND,
        3,
        format!("-p tcp -i lo -m mark ! --mark {OUTBOUND_MARK} -j RETURN"),
    );
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
