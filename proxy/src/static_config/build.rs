//! From the parsed file to a [`Snapshot`]: the checks that involve more than one value
//! (references, duplicates, reachability, chains that could never be chosen) and the
//! defaults that depend on other keys. Every refusal names the field by its path in the
//! file, in the file's own spelling, and says what to write instead. Listeners and their
//! chains are here; clusters and HTTP route tables have their own modules.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use super::clusters::{choice, cluster_ref, clusters};
use super::model::{ChainSpec, Document, ListenerSpec, MatchSpec, TcpSpec, TransportSpec};
use super::routes::http;
use super::{INBOUND_CAPTURE_PORT, OUTBOUND_CAPTURE_PORT, RESERVED_PORTS};
use crate::snapshot::{
    ChainMatch, Cluster, ClusterChoice, DEFAULT_DETECTION_TIMEOUT, DEFAULT_TCP_IDLE_TIMEOUT,
    Detection, Direction, FilterChain, Handler, Listener, RouteSource, Snapshot, TcpProxy,
};

/// A value that is well-formed on its own but unusable with the rest of the file.
#[derive(Debug)]
pub(super) struct Invalid {
    /// The path of the offending key, e.g. `listeners[2].chains[0].tcp.cluster`.
    pub field: String,
    pub reason: String,
}

pub(super) fn invalid<T>(
    field: impl Into<String>,
    reason: impl Into<String>,
) -> Result<T, Invalid> {
    Err(Invalid {
        field: field.into(),
        reason: reason.into(),
    })
}

/// The snapshot and what [`Snapshot`] has no field for yet (see [`super::Parsed`]).
pub(super) struct Built {
    pub snapshot: Snapshot,
    pub detection_skip_ports: HashMap<String, Vec<u16>>,
}

pub(super) fn build(doc: Document, version: String) -> Result<Built, Invalid> {
    let access_log = doc.access_log.map(|a| a.encoding);
    let clusters = clusters(doc.clusters)?;
    let heads = heads(&doc.listeners)?;
    let mut listeners = Vec::with_capacity(heads.len());
    let mut detection_skip_ports = HashMap::new();
    for (i, (spec, head)) in doc.listeners.into_iter().zip(heads).enumerate() {
        let (listener, skip_ports) = listener(i, spec, head, &clusters)?;
        if !skip_ports.is_empty() {
            detection_skip_ports.insert(listener.name.clone(), skip_ports);
        }
        listeners.push(Arc::new(listener));
    }
    // Inline tables are also known by name, so that requests on connections accepted
    // before a reload find the reloaded table (the HTTP layer looks tables up per request).
    let routes = listeners
        .iter()
        .flat_map(|l| l.filter_chains.iter().chain(&l.default_chain))
        .filter_map(|chain| match &chain.handler {
            Handler::Http(http) => match &http.route_config {
                RouteSource::Inline(table) => Some((table.name.clone(), table.clone())),
                RouteSource::Rds(_) => None,
            },
            Handler::Tcp(_) => None,
        })
        .collect();
    Ok(Built {
        snapshot: Snapshot {
            version,
            listeners,
            clusters,
            routes,
            access_log,
        },
        detection_skip_ports,
    })
}

/// What the listeners' checks against each other need to know of each listener.
struct Head {
    name: String,
    address: SocketAddr,
    bind: bool,
    use_original_dst: bool,
    direction: Direction,
}

fn heads(specs: &[ListenerSpec]) -> Result<Vec<Head>, Invalid> {
    let heads: Vec<Head> = specs
        .iter()
        .map(|s| Head {
            name: s.name.0.clone(),
            address: s.address.0,
            // Capture listeners own their socket; the listeners they hand off to do not.
            bind: s.bind_to_port.unwrap_or(s.use_original_dst),
            use_original_dst: s.use_original_dst,
            direction: s.direction.into(),
        })
        .collect();
    for (i, h) in heads.iter().enumerate() {
        let at = format!("listeners[{i}]");
        let earlier = &heads[..i];
        if let Some(j) = earlier.iter().position(|o| o.name == h.name) {
            return invalid(
                format!("{at}.name"),
                format!(
                    "{:?} is also the name of listeners[{j}]; listener names must be unique",
                    h.name
                ),
            );
        }
        if h.use_original_dst && !h.bind {
            return invalid(
                format!("{at}.useOriginalDst"),
                "needs bindToPort: true: only a listener that owns its socket accepts \
                 connections to hand off",
            );
        }
        let port = h.address.port();
        if h.bind {
            if let Some((_, what)) = RESERVED_PORTS.iter().find(|(p, _)| *p == port) {
                return invalid(
                    format!("{at}.address"),
                    format!("port {port} is {what}; listen on another port"),
                );
            }
            if let Some(j) = earlier
                .iter()
                .position(|o| o.bind && o.address.port() == port)
            {
                return invalid(
                    format!("{at}.address"),
                    format!(
                        "port {port} is already bound by listeners[{j}] ({:?}); one listener \
                         owns each port",
                        heads[j].name
                    ),
                );
            }
            continue;
        }
        if port == OUTBOUND_CAPTURE_PORT || port == INBOUND_CAPTURE_PORT {
            return invalid(
                format!("{at}.address"),
                format!(
                    "port {port} is the proxy's own capture port: a connection whose original \
                     destination is :{port} looped back into the proxy and must not be handed \
                     off (istiod sends it to BlackHoleCluster); use another port"
                ),
            );
        }
        let same_handoffs = |o: &Head| {
            !o.bind
                && (o.address == h.address
                    || (o.address.port() == port
                        && o.address.ip().is_unspecified()
                        && h.address.ip().is_unspecified()))
        };
        if let Some(j) = earlier.iter().position(same_handoffs) {
            return invalid(
                format!("{at}.address"),
                format!(
                    "{} takes the same hand-offs as listeners[{j}] ({:?}) at {}, which comes \
                     first; merge the two",
                    h.address, heads[j].name, heads[j].address
                ),
            );
        }
        if !heads
            .iter()
            .any(|o| o.use_original_dst && o.bind && o.direction == h.direction)
        {
            let direction = match h.direction {
                Direction::Outbound => "outbound",
                Direction::Inbound => "inbound",
            };
            return invalid(
                format!("{at}.bindToPort"),
                format!(
                    "is false (the default without useOriginalDst), but no {direction} listener \
                     with useOriginalDst: true hands connections to this one; set bindToPort: \
                     true to own the socket, or add a capture listener"
                ),
            );
        }
    }
    Ok(heads)
}

/// The first match key that only a detected connection can satisfy, by its file name. An
/// undetected connection counts as `raw_buffer` with no ALPN and no SNI, as in Envoy
/// without a TLS inspector, so `transportProtocol: raw_buffer` needs no detection.
fn needs_detection(m: &MatchSpec) -> Option<&'static str> {
    if m.transport_protocol == Some(TransportSpec::Tls) {
        Some("transportProtocol")
    } else if !m.application_protocols.is_empty() {
        Some("applicationProtocols")
    } else if !m.server_names.is_empty() {
        Some("serverNames")
    } else {
        None
    }
}

/// Whether a chain tells connections apart by what detection finds: it needs detection,
/// or it matches `raw_buffer` to keep TLS out.
fn wants_detection(m: &MatchSpec) -> bool {
    needs_detection(m).is_some() || m.transport_protocol.is_some()
}

fn listener(
    i: usize,
    spec: ListenerSpec,
    head: Head,
    clusters: &HashMap<String, Arc<Cluster>>,
) -> Result<(Listener, Vec<u16>), Invalid> {
    let at = format!("listeners[{i}]");
    let defaults = [
        spec.tcp.is_some(),
        spec.http.is_some(),
        spec.default_cluster.is_some(),
    ];
    match defaults.iter().filter(|d| **d).count() {
        0 if spec.chains.is_empty() => {
            return invalid(
                at,
                "has nothing to send connections to; add chains, or one of tcp, http and \
                 defaultCluster for every connection",
            );
        }
        0 | 1 => {}
        _ => {
            return invalid(
                at,
                "tcp, http and defaultCluster each set the default chain; write only one",
            );
        }
    }
    // Sniffing costs a wait for server-first protocols, so by default a listener sniffs
    // only when one of its chains matches on something only sniffing can tell.
    let detection = Detection {
        enabled: match spec.detection {
            Some(d) => d.enabled.unwrap_or(true),
            None => spec.chains.iter().any(|c| wants_detection(&c.matcher)),
        },
        timeout: spec
            .detection
            .and_then(|d| d.timeout)
            .unwrap_or(DEFAULT_DETECTION_TIMEOUT),
    };
    let (filter_chains, skip_ports) = chains(&at, spec.chains, &head, detection, clusters)?;
    let default_chain = if let Some(tcp_spec) = spec.tcp {
        Some(Handler::Tcp(tcp(
            tcp_spec,
            &format!("{at}.tcp"),
            &head.name,
            clusters,
        )?))
    } else if let Some(http_spec) = spec.http {
        Some(Handler::Http(http(
            http_spec,
            &format!("{at}.http"),
            &head.name,
            DEFAULT_CHAIN,
            clusters,
        )?))
    } else if let Some(name) = spec.default_cluster {
        let cluster = cluster_ref(name, format!("{at}.defaultCluster"), clusters)?;
        Some(Handler::Tcp(TcpProxy {
            stat_prefix: cluster.clone(),
            cluster: ClusterChoice::Single(cluster),
            idle_timeout: DEFAULT_TCP_IDLE_TIMEOUT,
        }))
    } else {
        None
    }
    .map(|handler| FilterChain {
        name: DEFAULT_CHAIN.to_owned(),
        matcher: ChainMatch::default(),
        handler,
        tls: None,
    });
    let listener = Listener {
        name: head.name,
        address: head.address,
        bind_to_port: head.bind,
        use_original_dst: head.use_original_dst,
        direction: head.direction,
        detection,
        detection_skip_ports: skip_ports.clone(),
        filter_chains,
        default_chain,
    };
    Ok((listener, skip_ports))
}

/// The name of a listener's default chain (Istio calls the virtual listeners' one
/// `PassthroughFilterChain`; "default" reads better in a file that names its clusters).
const DEFAULT_CHAIN: &str = "default";

fn chains(
    at: &str,
    specs: Vec<ChainSpec>,
    head: &Head,
    detection: Detection,
    clusters: &HashMap<String, Arc<Cluster>>,
) -> Result<(Vec<FilterChain>, Vec<u16>), Invalid> {
    // First the detection rules, which look at every chain's match...
    let mut skip_ports: Vec<u16> = Vec::new();
    for (j, c) in specs.iter().enumerate() {
        let cat = format!("{at}.chains[{j}]");
        let needs = needs_detection(&c.matcher);
        if let Some(key) = needs
            && !detection.enabled
        {
            return invalid(
                format!("{cat}.match.{key}"),
                "needs protocol detection, which this listener's detection turns off; remove \
                 the key, or turn detection on",
            );
        }
        match c.detection {
            Some(false) => {
                let Some(port) = c.matcher.destination_port else {
                    return invalid(
                        format!("{cat}.detection"),
                        "detection: false skips detection by destination port, so this chain's \
                         match needs a destinationPort",
                    );
                };
                if let Some(key) = needs {
                    return invalid(
                        format!("{cat}.detection"),
                        format!(
                            "this chain matches on {key}, which only detection can tell; remove \
                             detection: false or match.{key}"
                        ),
                    );
                }
                if detection.enabled && !skip_ports.contains(&port.0) {
                    skip_ports.push(port.0);
                }
            }
            Some(true) if !detection.enabled => {
                return invalid(
                    format!("{cat}.detection"),
                    "one chain cannot turn detection on when its listener turns it off; remove \
                     it, or turn detection on for the listener",
                );
            }
            _ => {}
        }
    }
    for (j, c) in specs.iter().enumerate() {
        if let (Some(key), Some(port)) = (needs_detection(&c.matcher), c.matcher.destination_port)
            && skip_ports.contains(&port.0)
        {
            let k = specs
                .iter()
                .position(|o| {
                    o.detection == Some(false) && o.matcher.destination_port == Some(port)
                })
                .unwrap_or_default();
            return invalid(
                format!("{at}.chains[{j}].match.{key}"),
                format!(
                    "can never match: connections to port {} skip detection (chains[{k}] has \
                     detection: false); remove that, or this chain",
                    port.0
                ),
            );
        }
    }
    skip_ports.sort_unstable();
    // ...then each chain.
    let mut chains: Vec<FilterChain> = Vec::with_capacity(specs.len());
    for (j, c) in specs.into_iter().enumerate() {
        let cat = format!("{at}.chains[{j}]");
        let name = c.name.map_or_else(|| format!("chains[{j}]"), |n| n.0);
        if let Some(k) = chains.iter().position(|o| o.name == name) {
            return invalid(
                format!("{cat}.name"),
                format!("{name:?} is also the name of chains[{k}]; chain names must be unique"),
            );
        }
        let matcher = chain_match(c.matcher);
        // The data path picks the most specific matching chain, as Envoy does, and the
        // first listed of equals; so only a chain with the very same match as an earlier
        // one can never be chosen (Envoy refuses such listeners too).
        if let Some(k) = chains.iter().position(|o| o.matcher == matcher) {
            return invalid(
                format!("{cat}.match"),
                format!(
                    "is the same as chains[{k}]'s, which comes first, so this chain is never \
                     chosen; merge the two"
                ),
            );
        }
        let handler = match (c.tcp, c.http) {
            (Some(t), None) => Handler::Tcp(tcp(t, &format!("{cat}.tcp"), &head.name, clusters)?),
            (None, Some(h)) => Handler::Http(http(
                h,
                &format!("{cat}.http"),
                &head.name,
                &name,
                clusters,
            )?),
            (None, None) => {
                return invalid(
                    cat,
                    "has neither tcp nor http; write one to say where its connections go",
                );
            }
            (Some(_), Some(_)) => {
                return invalid(cat, "has both tcp and http; write one");
            }
        };
        chains.push(FilterChain {
            name,
            matcher,
            handler,
            tls: None,
        });
    }
    Ok((chains, skip_ports))
}

fn chain_match(m: MatchSpec) -> ChainMatch {
    ChainMatch {
        destination_port: m.destination_port.map(|p| p.0),
        prefix_ranges: m.prefix_ranges.into_iter().map(|c| c.0).collect(),
        source_prefix_ranges: m.source_prefix_ranges.into_iter().map(|c| c.0).collect(),
        transport_protocol: m.transport_protocol.map(Into::into),
        application_protocols: m.application_protocols.into_iter().map(|n| n.0).collect(),
        server_names: m.server_names.into_iter().map(|n| n.0).collect(),
    }
}

fn tcp(
    spec: TcpSpec,
    at: &str,
    listener: &str,
    clusters: &HashMap<String, Arc<Cluster>>,
) -> Result<TcpProxy, Invalid> {
    let cluster = choice(spec.cluster, spec.weighted_clusters, at, clusters)?;
    // Istio names a tcp_proxy's stats after its cluster.
    let stat_prefix = spec.stat_prefix.map_or_else(
        || match &cluster {
            ClusterChoice::Single(name) => name.clone(),
            ClusterChoice::Weighted(_) => listener.to_owned(),
        },
        |p| p.0,
    );
    Ok(TcpProxy {
        stat_prefix,
        cluster,
        idle_timeout: spec.idle_timeout.map_or(DEFAULT_TCP_IDLE_TIMEOUT, |d| d.0),
    })
}
