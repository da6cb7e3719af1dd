//! Reading the host facts the planner needs: whether the pod has IPv6, and its DNS servers.
//! The parsing is pure; only the two `detect_*`/`read_*` functions touch the system.

use std::net::IpAddr;

use crate::config::{Config, Ipv6Choice};
use crate::plan::HostFacts;

/// Decides IPv6 the way istio-iptables does: the first address that is neither loopback nor
/// link-local decides, unless dual-stack, where any such IPv6 address turns IPv6 on.
/// Addresses come in the kernel's dump order (all IPv4 before IPv6).
pub fn ipv6_from_addresses(addrs: &[IpAddr], dual_stack: bool) -> Option<bool> {
    let mut found = None;
    for addr in addrs {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(*addr),
            v4 => *v4,
        };
        let link_local = match addr {
            IpAddr::V4(v4) => v4.is_link_local(),
            IpAddr::V6(v6) => v6.is_unicast_link_local() || (v6.segments()[0] & 0xff0f) == 0xff02,
        };
        if addr.is_loopback() || link_local {
            continue;
        }
        let is_v6 = addr.is_ipv6();
        found = Some(is_v6);
        if !dual_stack || is_v6 {
            break;
        }
    }
    found
}

/// The nameservers of a resolv.conf, split into what can be captured; zone-scoped
/// (`fe80::1%eth0`) and malformed entries are skipped, as the resolver itself would.
pub fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then(|| words.next())?
        })
        .filter_map(|server| server.parse().ok())
        .collect()
}

/// The interface addresses of the current network namespace.
pub fn interface_addresses() -> std::io::Result<Vec<IpAddr>> {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for ifaddr in nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)? {
        let Some(address) = ifaddr.address else {
            continue;
        };
        if let Some(sin) = address.as_sockaddr_in() {
            v4.push(IpAddr::V4(sin.ip()));
        } else if let Some(sin6) = address.as_sockaddr_in6() {
            v6.push(IpAddr::V6(sin6.ip()));
        }
    }
    v4.extend(v6);
    Ok(v4)
}

/// Gathers the host facts for `cfg`, honouring `--ipv6` and `--dns-servers` when given.
pub fn gather(cfg: &Config) -> HostFacts {
    let ipv6 = match cfg.ipv6 {
        Ipv6Choice::On => true,
        Ipv6Choice::Off => false,
        Ipv6Choice::Auto => match interface_addresses() {
            Ok(addrs) => ipv6_from_addresses(&addrs, cfg.dual_stack).unwrap_or_else(|| {
                tracing::warn!("no non-loopback address found; programming IPv4 only");
                false
            }),
            Err(err) => {
                tracing::warn!("cannot list interface addresses ({err}); programming IPv4 only");
                false
            }
        },
    };
    let servers = if !cfg.redirect_dns || cfg.capture_all_dns {
        Vec::new()
    } else if let Some(servers) = &cfg.dns_servers {
        servers.clone()
    } else {
        match std::fs::read_to_string("/etc/resolv.conf") {
            Ok(text) => nameservers(&text),
            Err(err) => {
                tracing::warn!("cannot read /etc/resolv.conf ({err}); no DNS server to capture");
                Vec::new()
            }
        }
    };
    if cfg.redirect_dns && !cfg.capture_all_dns && servers.is_empty() {
        tracing::warn!(
            "DNS capture is on but no DNS server is known and --capture-all-dns is off: DNS capture disabled"
        );
    }
    HostFacts::with_dns(ipv6, &servers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn first_usable_address_decides() {
        assert_eq!(
            ipv6_from_addresses(&addrs(&["127.0.0.1", "10.1.0.5", "fd00::5"]), false),
            Some(false)
        );
        assert_eq!(
            ipv6_from_addresses(&addrs(&["127.0.0.1", "::1", "fe80::1", "fd00::5"]), false),
            Some(true)
        );
        assert_eq!(
            ipv6_from_addresses(&addrs(&["169.254.1.1", "fd00::5"]), false),
            Some(true)
        );
        assert_eq!(
            ipv6_from_addresses(&addrs(&["127.0.0.1", "::1"]), false),
            None
        );
    }

    #[test]
    fn dual_stack_looks_for_any_ipv6() {
        assert_eq!(
            ipv6_from_addresses(&addrs(&["10.1.0.5", "fd00::5"]), true),
            Some(true)
        );
        assert_eq!(
            ipv6_from_addresses(&addrs(&["10.1.0.5", "10.2.0.5"]), true),
            Some(false)
        );
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        assert_eq!(
            ipv6_from_addresses(&addrs(&["::ffff:10.1.0.5"]), false),
            Some(false)
        );
    }

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# generated\nsearch default.svc.cluster.local svc.cluster.local\n\
                    nameserver 10.96.0.10\nnameserver fd00::a\nnameserver fe80::1%eth0\n\
                    options ndots:5\nnameserver bogus\n";
        assert_eq!(nameservers(text), addrs(&["10.96.0.10", "fd00::a"]));
    }
}
