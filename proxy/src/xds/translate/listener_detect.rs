//! Listener filters into Skiff's protocol detection: on when `http_inspector` or
//! `tls_inspector` is there, off on the ports where every inspector is disabled, with a
//! bounded timeout.

use envoy_types::pb::envoy::config::listener::v3::{
    Listener as ListenerProto, ListenerFilterChainMatchPredicate, listener_filter,
    listener_filter_chain_match_predicate::Rule,
};

use super::proto::{duration, same_type, type_name};
use crate::snapshot::{DEFAULT_DETECTION_TIMEOUT, Detection};
use crate::xds::translate::Invalid;

const HTTP_INSPECTOR: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector";
const TLS_INSPECTOR: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector";
const ORIGINAL_DST: &str =
    "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst";

enum Kind {
    Inspector,
    OriginalDst,
}

/// A listener's detection settings and the ports that skip detection.
pub(super) fn detection(l: &ListenerProto) -> Result<(Detection, Vec<u16>), Invalid> {
    // The ports on which every inspector seen so far is disabled; None: no inspector yet.
    let mut skipped: Option<PortSet> = None;
    for (i, f) in l.listener_filters.iter().enumerate() {
        let at = format!("listener_filters[{i}]");
        let kind = match &f.config_type {
            Some(listener_filter::ConfigType::TypedConfig(any)) => {
                if same_type(&any.type_url, HTTP_INSPECTOR)
                    || same_type(&any.type_url, TLS_INSPECTOR)
                {
                    Kind::Inspector
                } else if same_type(&any.type_url, ORIGINAL_DST) {
                    Kind::OriginalDst
                } else {
                    return Err(unknown(
                        format!("{at}.typed_config"),
                        type_name(&any.type_url),
                    ));
                }
            }
            Some(listener_filter::ConfigType::ConfigDiscovery(_)) => {
                return Err(Invalid::new(
                    format!("{at}.config_discovery"),
                    "is set, but Skiff does not support discovering listener filters (ECDS)",
                ));
            }
            None => match f.name.as_str() {
                "envoy.filters.listener.http_inspector"
                | "envoy.filters.listener.tls_inspector" => Kind::Inspector,
                "envoy.filters.listener.original_dst" => Kind::OriginalDst,
                other => return Err(unknown(format!("{at}.name"), other)),
            },
        };
        if let Kind::Inspector = kind {
            let disabled = match &f.filter_disabled {
                None => PortSet::empty(),
                Some(p) => ports(p).map_err(|e| e.at(&format!("{at}.filter_disabled")))?,
            };
            skipped = Some(match skipped {
                None => disabled,
                Some(s) => s.and(&disabled),
            });
        }
    }
    let timeout = match &l.listener_filters_timeout {
        None => DEFAULT_DETECTION_TIMEOUT,
        Some(d) => match duration(d, "listener_filters_timeout")? {
            d if d.is_zero() => DEFAULT_DETECTION_TIMEOUT,
            d => d,
        },
    };
    let (enabled, skip_ports) = match skipped {
        None => (false, Vec::new()),
        Some(s) if s.is_full() => (false, Vec::new()),
        Some(s) => (true, s.ports()),
    };
    Ok((Detection { enabled, timeout }, skip_ports))
}

fn unknown(at: String, what: &str) -> Invalid {
    Invalid::new(
        at,
        format!(
            "{what:?} is not a listener filter Skiff supports; it supports http_inspector and \
             tls_inspector (its protocol detection) and original_dst"
        ),
    )
}

/// The destination ports a `filter_disabled` predicate matches.
fn ports(p: &ListenerFilterChainMatchPredicate) -> Result<PortSet, Invalid> {
    Ok(match &p.rule {
        None => {
            return Err(Invalid::new(
                "",
                "has no rule; write destination_port_range, or_match, and_match, not_match or \
                 any_match",
            ));
        }
        Some(Rule::AnyMatch(true)) => PortSet::full(),
        Some(Rule::AnyMatch(false)) => PortSet::empty(),
        Some(Rule::DestinationPortRange(r)) => PortSet::range(r.start, r.end),
        Some(Rule::NotMatch(inner)) => ports(inner).map_err(|e| e.at("not_match"))?.not(),
        Some(Rule::OrMatch(set)) => {
            let mut all = PortSet::empty();
            for (k, r) in set.rules.iter().enumerate() {
                all = all.or(&ports(r).map_err(|e| e.at(&format!("or_match.rules[{k}]")))?);
            }
            all
        }
        Some(Rule::AndMatch(set)) => {
            let mut all = PortSet::full();
            for (k, r) in set.rules.iter().enumerate() {
                all = all.and(&ports(r).map_err(|e| e.at(&format!("and_match.rules[{k}]")))?);
            }
            all
        }
    })
}

/// A set of TCP ports, one bit each.
#[derive(Clone)]
struct PortSet(Box<[u64; 1024]>);

impl PortSet {
    fn empty() -> PortSet {
        PortSet(Box::new([0; 1024]))
    }

    fn full() -> PortSet {
        PortSet(Box::new([u64::MAX; 1024]))
    }

    /// `[start, end)`, as Envoy's Int32Range; clamped to the port numbers.
    fn range(start: i32, end: i32) -> PortSet {
        let mut set = PortSet::empty();
        let start = start.clamp(0, 65536) as usize;
        let end = end.clamp(0, 65536) as usize;
        for p in start..end {
            set.0[p / 64] |= 1 << (p % 64);
        }
        set
    }

    fn and(&self, other: &PortSet) -> PortSet {
        let mut out = self.clone();
        out.0
            .iter_mut()
            .zip(other.0.iter())
            .for_each(|(a, b)| *a &= b);
        out
    }

    fn or(&self, other: &PortSet) -> PortSet {
        let mut out = self.clone();
        out.0
            .iter_mut()
            .zip(other.0.iter())
            .for_each(|(a, b)| *a |= b);
        out
    }

    fn not(&self) -> PortSet {
        let mut out = self.clone();
        out.0.iter_mut().for_each(|a| *a = !*a);
        out
    }

    fn is_full(&self) -> bool {
        self.0.iter().all(|w| *w == u64::MAX)
    }

    /// The ports in the set, word by word: a listener with inspectors is translated on
    /// every push, and istiod sends hundreds of listeners.
    fn ports(&self) -> Vec<u16> {
        let mut out = Vec::new();
        for (i, &word) in self.0.iter().enumerate() {
            let mut rest = word;
            while rest != 0 {
                let bit = rest.trailing_zeros() as usize;
                out.push((i * 64 + bit) as u16);
                rest &= rest - 1;
            }
        }
        out
    }
}
