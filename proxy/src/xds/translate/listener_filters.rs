//! A filter chain's network filters into its handler: the terminal `tcp_proxy` or
//! `http_connection_manager` (with its HTTP filters and route table), after any number of
//! ignored filters. See the module above for what is honoured, ignored and refused.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::listener::v3::{Filter, filter};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, http_connection_manager::CodecType,
    http_connection_manager::RouteSpecifier, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy as TcpProxyProto, tcp_proxy::ClusterSpecifier,
};
use envoy_types::pb::google::protobuf::Any;

use super::TCP_IDLE_TIMEOUT_DISABLED;
use super::is_ignored;
use super::proto::{decode, duration, same_type, type_name, unsupported};
use crate::route::RouteTable;
use crate::snapshot::{
    ClusterChoice, DEFAULT_STREAM_IDLE_TIMEOUT, DEFAULT_TCP_IDLE_TIMEOUT, Handler, HttpManager,
    RouteSource, TcpProxy,
};
use crate::xds::translate::{Invalid, route_configuration};

const TCP_PROXY: &str =
    "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const HCM: &str = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";

/// Filter names that stand for an ignored type when a filter has no typed config.
const IGNORED_NAMES: &[&str] = &[
    "istio.stats",
    "istio.metadata_exchange",
    "istio_authn",
    "istio.alpn",
    "envoy.filters.http.fault",
    "envoy.filters.http.cors",
    "envoy.filters.http.grpc_stats",
    "envoy.filters.http.grpc_web",
    "envoy.filters.http.rbac",
    "envoy.filters.network.rbac",
    "envoy.filters.http.ext_authz",
    "envoy.filters.network.ext_authz",
    "envoy.filters.http.jwt_authn",
    "envoy.filters.http.wasm",
    "envoy.filters.network.wasm",
];

/// What the chains of one listener name, collected across them.
#[derive(Default)]
pub(super) struct Refs {
    pub route_names: Vec<String>,
    pub inline: Vec<Inline>,
    pub clusters: Vec<String>,
}

/// An inline route table, kept with its source so that equal tables share one entry.
pub(super) struct Inline {
    pub proto: RouteConfiguration,
    pub table: Arc<RouteTable>,
    /// Where it was first seen, for a refusal.
    pub at: String,
}

impl Refs {
    fn cluster(&mut self, name: &str) {
        if !self.clusters.iter().any(|c| c == name) {
            self.clusters.push(name.to_owned());
        }
    }

    fn choice(&mut self, choice: &ClusterChoice) {
        match choice {
            ClusterChoice::Single(name) => self.cluster(name),
            ClusterChoice::Weighted(list) => list.iter().for_each(|(name, _)| self.cluster(name)),
        }
    }
}

enum Kind<'a> {
    TcpProxy(Option<&'a Any>),
    Http(Option<&'a Any>),
    Ignored,
    /// A description of the filter, and the field that names it.
    Unknown(String, &'static str),
}

fn network_kind(f: &Filter) -> Kind<'_> {
    match &f.config_type {
        Some(filter::ConfigType::TypedConfig(any)) => {
            if same_type(&any.type_url, TCP_PROXY) {
                Kind::TcpProxy(Some(any))
            } else if same_type(&any.type_url, HCM) {
                Kind::Http(Some(any))
            } else if is_ignored(&any.type_url) {
                Kind::Ignored
            } else {
                Kind::Unknown(
                    format!("{} (filter {:?})", type_name(&any.type_url), f.name),
                    "typed_config",
                )
            }
        }
        Some(filter::ConfigType::ConfigDiscovery(ecds)) => discovered(&ecds.type_urls, &f.name),
        None => match f.name.as_str() {
            "envoy.filters.network.tcp_proxy" => Kind::TcpProxy(None),
            "envoy.filters.network.http_connection_manager" => Kind::Http(None),
            name if IGNORED_NAMES.contains(&name) => Kind::Ignored,
            name => Kind::Unknown(format!("{name:?}"), "name"),
        },
    }
}

/// A filter whose config comes from ECDS: ignored when every type it may take is.
fn discovered<'a>(type_urls: &[String], name: &str) -> Kind<'a> {
    if !type_urls.is_empty() && type_urls.iter().all(|t| is_ignored(t)) {
        Kind::Ignored
    } else {
        Kind::Unknown(
            format!("{name:?} discovered over ECDS as one of {type_urls:?}"),
            "config_discovery",
        )
    }
}

/// The handler of a chain: its terminal filter, which must come last. Errors are relative
/// to the chain.
pub(super) fn network_filters(
    filters: &[Filter],
    listener: &str,
    chain: &str,
    chain_at: &str,
    refs: &mut Refs,
) -> Result<Handler, Invalid> {
    let mut handler = None;
    for (k, f) in filters.iter().enumerate() {
        let at = format!("filters[{k}]");
        if handler.is_some() {
            return Err(Invalid::new(
                at,
                "comes after the chain's terminal filter (tcp_proxy or http_connection_manager), \
                 which must be last",
            ));
        }
        let missing = || {
            Invalid::new(
                format!("{at}.typed_config"),
                format!("is missing; filter {:?} needs its configuration", f.name),
            )
        };
        match network_kind(f) {
            Kind::Ignored => {}
            Kind::TcpProxy(any) => {
                let any = any.ok_or_else(missing)?;
                let at = format!("{at}.typed_config");
                let proto: TcpProxyProto = decode(any, TCP_PROXY).map_err(|e| e.at(&at))?;
                let tcp = tcp_proxy(&proto, listener).map_err(|e| e.at(&at))?;
                refs.choice(&tcp.cluster);
                handler = Some(Handler::Tcp(tcp));
            }
            Kind::Http(any) => {
                let any = any.ok_or_else(missing)?;
                let at = format!("{at}.typed_config");
                let proto: HttpConnectionManager = decode(any, HCM).map_err(|e| e.at(&at))?;
                let inline_at = format!("{chain_at}.{at}.route_config");
                let manager = http_manager(&proto, listener, chain, &inline_at, refs)
                    .map_err(|e| e.at(&at))?;
                handler = Some(Handler::Http(manager));
            }
            Kind::Unknown(what, field) => {
                return Err(Invalid::new(
                    format!("{at}.{field}"),
                    format!(
                        "{what} is not a network filter Skiff implements; it runs \
                         envoy.filters.network.tcp_proxy and http_connection_manager, and \
                         skips Istio's telemetry and policy filters (IGNORED_TYPES)"
                    ),
                ));
            }
        }
    }
    handler.ok_or_else(|| {
        Invalid::new(
            "filters",
            "has no terminal filter; end it with envoy.filters.network.tcp_proxy or \
             envoy.filters.network.http_connection_manager",
        )
    })
}

fn tcp_proxy(p: &TcpProxyProto, listener: &str) -> Result<TcpProxy, Invalid> {
    if p.on_demand.is_some() {
        return Err(unsupported("on_demand", "on-demand cluster discovery"));
    }
    if p.metadata_match.is_some() {
        return Err(unsupported(
            "metadata_match",
            "subset load balancing by metadata",
        ));
    }
    if p.tunneling_config.is_some() {
        return Err(unsupported(
            "tunneling_config",
            "tunneling TCP over HTTP CONNECT",
        ));
    }
    let cluster = match &p.cluster_specifier {
        Some(ClusterSpecifier::Cluster(name)) if !name.is_empty() => {
            ClusterChoice::Single(name.clone())
        }
        Some(ClusterSpecifier::Cluster(_)) => {
            return Err(Invalid::new(
                "cluster",
                "is empty; name the cluster to forward to",
            ));
        }
        Some(ClusterSpecifier::WeightedClusters(w)) => {
            let mut picks = Vec::with_capacity(w.clusters.len());
            let mut total: u32 = 0;
            for (k, c) in w.clusters.iter().enumerate() {
                let at = format!("weighted_clusters.clusters[{k}]");
                if c.name.is_empty() {
                    return Err(Invalid::new(format!("{at}.name"), "is empty"));
                }
                if c.metadata_match.is_some() {
                    return Err(unsupported(
                        format!("{at}.metadata_match"),
                        "subset load balancing by metadata",
                    ));
                }
                total = total.checked_add(c.weight).ok_or_else(|| {
                    Invalid::new(
                        format!("{at}.weight"),
                        format!("the weights add up to more than {}", u32::MAX),
                    )
                })?;
                picks.push((c.name.clone(), c.weight));
            }
            if total == 0 {
                return Err(Invalid::new(
                    "weighted_clusters.clusters",
                    "has no positive weight, so no cluster could be picked",
                ));
            }
            ClusterChoice::Weighted(picks)
        }
        None => {
            return Err(Invalid::new(
                "cluster",
                "is missing; write cluster or weighted_clusters",
            ));
        }
    };
    let idle_timeout = match &p.idle_timeout {
        None => DEFAULT_TCP_IDLE_TIMEOUT,
        Some(d) => match duration(d, "idle_timeout")? {
            d if d.is_zero() => TCP_IDLE_TIMEOUT_DISABLED,
            d => d,
        },
    };
    let stat_prefix = if !p.stat_prefix.is_empty() {
        p.stat_prefix.clone()
    } else if let ClusterChoice::Single(name) = &cluster {
        name.clone()
    } else {
        listener.to_owned()
    };
    Ok(TcpProxy {
        stat_prefix,
        cluster,
        idle_timeout,
    })
}

fn http_manager(
    h: &HttpConnectionManager,
    listener: &str,
    chain: &str,
    outer: &str,
    refs: &mut Refs,
) -> Result<HttpManager, Invalid> {
    if h.codec_type == CodecType::Http3 as i32 {
        return Err(unsupported("codec_type", "HTTP/3"));
    }
    http_filters(&h.http_filters)?;
    for (k, u) in h.upgrade_configs.iter().enumerate() {
        let at = format!("upgrade_configs[{k}]");
        if u.enabled.as_ref().is_some_and(|e| !e.value) {
            continue;
        }
        if !u.upgrade_type.eq_ignore_ascii_case("websocket") {
            return Err(Invalid::new(
                format!("{at}.upgrade_type"),
                format!(
                    "{:?} is not supported; Skiff passes websocket upgrades only",
                    u.upgrade_type
                ),
            ));
        }
        if !u.filters.is_empty() {
            return Err(unsupported(
                format!("{at}.filters"),
                "separate filter chains for upgrades",
            ));
        }
    }
    let route_config = match &h.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => {
            if rds.route_config_name.is_empty() {
                return Err(Invalid::new(
                    "rds.route_config_name",
                    "is empty; name the route table",
                ));
            }
            let source = rds
                .config_source
                .as_ref()
                .and_then(|c| c.config_source_specifier.as_ref());
            if !matches!(
                source,
                None | Some(ConfigSourceSpecifier::Ads(_) | ConfigSourceSpecifier::Self_(_))
            ) {
                return Err(Invalid::new(
                    "rds.config_source",
                    "is not ADS; Skiff takes route tables over its one ADS stream",
                ));
            }
            let name = &rds.route_config_name;
            if !refs.route_names.contains(name) {
                refs.route_names.push(name.clone());
            }
            RouteSource::Rds(name.clone())
        }
        Some(RouteSpecifier::RouteConfig(rc)) => {
            RouteSource::Inline(inline(rc, listener, chain, outer, refs)?)
        }
        Some(RouteSpecifier::ScopedRoutes(_)) => {
            return Err(unsupported("scoped_routes", "scoped route tables"));
        }
        None => {
            return Err(Invalid::new(
                "route_config",
                "is missing; write rds or route_config",
            ));
        }
    };
    let stat_prefix = if h.stat_prefix.is_empty() {
        listener.to_owned()
    } else {
        h.stat_prefix.clone()
    };
    let mut manager = HttpManager::new(stat_prefix, route_config);
    manager.use_remote_address = h.use_remote_address.as_ref().is_some_and(|b| b.value);
    manager.stream_idle_timeout = match &h.stream_idle_timeout {
        None => DEFAULT_STREAM_IDLE_TIMEOUT,
        // `0s` stays zero, which the snapshot reads as no stream idle timeout.
        Some(d) => duration(d, "stream_idle_timeout")?,
    };
    Ok(manager)
}

/// An inline route table: translated once per name. An unnamed one is named after its
/// listener and chain, as the static config names its tables.
fn inline(
    rc: &RouteConfiguration,
    listener: &str,
    chain: &str,
    outer: &str,
    refs: &mut Refs,
) -> Result<Arc<RouteTable>, Invalid> {
    let mut proto = rc.clone();
    if proto.name.is_empty() {
        proto.name = format!("{listener}/{chain}");
    }
    if let Some(seen) = refs.inline.iter().find(|i| i.proto.name == proto.name) {
        if seen.proto == proto {
            return Ok(seen.table.clone());
        }
        return Err(Invalid::new(
            "route_config.name",
            format!(
                "{:?} is also the name of a different inline route_config, at {}; tables are \
                 looked up by name, so give each its own",
                proto.name, seen.at
            ),
        ));
    }
    let table = Arc::new(route_configuration(&proto).map_err(|e| e.at("route_config"))?);
    for host in &table.virtual_hosts {
        for route in &host.routes {
            if let Some(choice) = route.cluster() {
                refs.choice(choice);
            }
        }
    }
    refs.inline.push(Inline {
        proto,
        table: table.clone(),
        at: outer.to_owned(),
    });
    Ok(table)
}

enum HttpKind<'a> {
    Router(Option<&'a Any>),
    Ignored,
    Unknown(String, &'static str),
}

fn http_kind(f: &HttpFilter) -> HttpKind<'_> {
    match &f.config_type {
        Some(http_filter::ConfigType::TypedConfig(any)) => {
            if same_type(&any.type_url, ROUTER) {
                HttpKind::Router(Some(any))
            } else if is_ignored(&any.type_url) {
                HttpKind::Ignored
            } else {
                HttpKind::Unknown(
                    format!("{} (filter {:?})", type_name(&any.type_url), f.name),
                    "typed_config",
                )
            }
        }
        Some(http_filter::ConfigType::ConfigDiscovery(ecds)) => {
            match discovered(&ecds.type_urls, &f.name) {
                Kind::Unknown(what, field) => HttpKind::Unknown(what, field),
                _ => HttpKind::Ignored,
            }
        }
        None => match f.name.as_str() {
            "envoy.filters.http.router" => HttpKind::Router(None),
            name if IGNORED_NAMES.contains(&name) => HttpKind::Ignored,
            name => HttpKind::Unknown(format!("{name:?}"), "name"),
        },
    }
}

/// The HTTP filters: ignored ones, then the router, last.
fn http_filters(filters: &[HttpFilter]) -> Result<(), Invalid> {
    let mut router = false;
    for (k, f) in filters.iter().enumerate() {
        let at = format!("http_filters[{k}]");
        if router {
            return Err(Invalid::new(
                at,
                "comes after envoy.filters.http.router, which must be the last HTTP filter",
            ));
        }
        match http_kind(f) {
            HttpKind::Ignored => {}
            HttpKind::Router(any) => {
                if let Some(any) = any {
                    let at = format!("{at}.typed_config");
                    let r: Router = decode(any, ROUTER).map_err(|e| e.at(&at))?;
                    if !r.upstream_http_filters.is_empty() {
                        return Err(unsupported(
                            format!("{at}.upstream_http_filters"),
                            "upstream HTTP filters",
                        ));
                    }
                }
                router = true;
            }
            HttpKind::Unknown(_, _) if f.is_optional => {}
            HttpKind::Unknown(what, field) => {
                return Err(Invalid::new(
                    format!("{at}.{field}"),
                    format!(
                        "{what} is not an HTTP filter Skiff implements, and it is not \
                         is_optional; Skiff runs the router and skips Istio's telemetry and \
                         policy filters (IGNORED_TYPES)"
                    ),
                ));
            }
        }
    }
    if !router {
        return Err(Invalid::new(
            "http_filters",
            "does not end with envoy.filters.http.router; Skiff routes every request, so the \
             router must be the last HTTP filter",
        ));
    }
    Ok(())
}
