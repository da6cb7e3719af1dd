//! `Listener` (LDS) into a snapshot [`Listener`]: its address, listener filters (protocol
//! detection), filter chains with their matches and TLS, and each chain's terminal network
//! filter (`tcp_proxy` or `http_connection_manager`).
//!
//! - **Address**: `socket_address` with an IP literal and a `port_value`; `bind_to_port`
//!   (default true), `use_original_dst`, `traffic_direction` (INBOUND → inbound, anything
//!   else → outbound). `additional_addresses` are accepted only as the wildcard of the
//!   other family on the same port (dual stack), which Skiff's hand-off already covers.
//! - **Detection** is on when `http_inspector` or `tls_inspector` is present. Ports on
//!   which every inspector is disabled by its `filter_disabled` become
//!   `detection_skip_ports`. `listener_filters_timeout` absent or `0s` (istiod's "no
//!   timeout") gives Skiff's bounded [`DEFAULT_DETECTION_TIMEOUT`], on purpose: a
//!   server-first protocol must not wait forever; any other value is kept. `original_dst`
//!   is accepted (Skiff reads `SO_ORIGINAL_DST` itself).
//! - **Filter chains**: `destination_port`, `prefix_ranges`, `source_prefix_ranges`,
//!   `transport_protocol` (`raw_buffer`, `tls`), `application_protocols`, `server_names`
//!   (exact names). A `DownstreamTlsContext` transport socket is recorded in
//!   `FilterChain::tls` (such chains are never served as plaintext).
//! - **tcp_proxy**: `cluster` / `weighted_clusters`, `stat_prefix`, `idle_timeout` (absent:
//!   [`DEFAULT_TCP_IDLE_TIMEOUT`]; `0s`, Envoy's "disabled": [`TCP_IDLE_TIMEOUT_DISABLED`]).
//! - **http_connection_manager**: `rds.route_config_name` or an inline `route_config`,
//!   `stat_prefix`, `use_remote_address`, `stream_idle_timeout` (absent:
//!   [`DEFAULT_STREAM_IDLE_TIMEOUT`]; `0s`, what istiod sends: `Duration::ZERO`, none);
//!   HTTP filters must end with the router; `upgrade_configs` of type `websocket`.
//! - Network and HTTP filters whose type is in [`IGNORED_TYPES`] are accepted and skipped;
//!   an unknown HTTP filter marked `is_optional` too. Filters are told apart by their
//!   `typed_config` type URL, by `name` when they have none.
//!
//! Refused (NACK): a pipe or internal address, UDP, a named port; `filter_chain_matcher`,
//! FCDS, `api_listener`, internal listeners; listener filters other than the two inspectors
//! and `original_dst` (e.g. `proxy_protocol`, `original_src`), and ECDS for them; chain
//! matches on `direct_source_prefix_ranges`, `source_type`, `source_ports`, address
//! suffixes, wildcard `server_names`, other transport protocols; two chains with the same
//! match; `use_proxy_proto`; transport sockets other than TLS and raw_buffer; an unknown
//! network filter, a chain without a terminal filter or with filters after it; tcp_proxy
//! `tunneling_config`, `on_demand`, `metadata_match`; HCM `scoped_routes`, RDS from a
//! config source other than ADS, `codec_type: HTTP3`, upgrades other than websocket, HTTP
//! filters after the router, router `upstream_http_filters`; an unknown, non-optional HTTP
//! filter (also through ECDS).
//!
//! Accepted but not honoured:
//! - listener: `continue_on_listener_filters_timeout` (Skiff always goes on, as opaque TCP),
//!   the inspectors' own settings, `transparent`, `freebind`, `socket_options`,
//!   `per_connection_buffer_limit_bytes`, `connection_balance_config`, `reuse_port`,
//!   `tcp_backlog_size`, `drain_type`, `access_log`, `stat_prefix`, `metadata`,
//!   `tcp_keepalive`, `enable_mptcp`; with only `tls_inspector`, plaintext connections
//!   still get `http/1.1`/`h2c` ALPN from Skiff's detection;
//! - filter chain: `metadata`, `transport_socket_connect_timeout`; the TLS context beyond
//!   `require_client_certificate`, ALPN and the SDS secret names (TLS versions, ciphers,
//!   SAN matchers, `require_sni`, session settings);
//! - tcp_proxy: `access_log*`, `max_connect_attempts`, `backoff_options`, `hash_policy`,
//!   `max_downstream_connection_duration` (DestinationRule `maxConnectionDuration`),
//!   `downstream_idle_timeout`/`upstream_idle_timeout`, `upstream_connect_mode`,
//!   `max_early_data_bytes`, `proxy_protocol_tlvs`;
//! - HCM: `codec_type` AUTO/HTTP1/HTTP2 (Skiff detects), `access_log*`, `tracing`,
//!   `request_id_extension`, `normalize_path`, `merge_slashes`,
//!   `path_with_escaped_slashes_action`, `common_http_protocol_options` (idle timeout),
//!   `http_protocol_options` (header case), `http2_protocol_options`, `server_name`,
//!   `forward_client_cert_details`, `set_current_client_cert_details`,
//!   `xff_num_trusted_hops`, `skip_xff_append`, `internal_address_config`,
//!   `append_x_forwarded_port`, `request_timeout`, `request_headers_timeout`,
//!   `drain_timeout`, `delayed_close_timeout`, `max_request_headers_kb`, `strip_*_port`,
//!   `generate_request_id`, `preserve_external_request_id`, `local_reply_config`,
//!   `proxy_100_continue`; the router's `suppress_envoy_headers`, `start_child_span`,
//!   `dynamic_stats`, `upstream_log`; HCMs without a websocket `upgrade_configs` still pass
//!   upgrades.
//! - Every filter in [`IGNORED_TYPES`]. **Not enforced** among them: Istio's authorization
//!   (`rbac`, `ext_authz`, network and HTTP) and request authentication (`jwt_authn`),
//!   fault injection (`fault`, including a VirtualService's per-route faults), CORS,
//!   gRPC-Web translation, stateful sessions; the rest is telemetry and peer metadata.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    Address, CidrRange, TrafficDirection, TransportSocket, address, socket_address,
    transport_socket,
};
use envoy_types::pb::envoy::config::listener::v3::{
    FilterChain as FilterChainProto, FilterChainMatch, Listener as ListenerProto,
    filter_chain_match::ConnectionSourceType,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    DownstreamTlsContext, common_tls_context::ValidationContextType,
};

use super::Invalid;
use crate::route::RouteTable;
use crate::snapshot::{
    ChainMatch, Cidr, Direction, DownstreamTls, FilterChain, Listener, Transport,
};
#[cfg(doc)]
use crate::snapshot::{
    DEFAULT_DETECTION_TIMEOUT, DEFAULT_STREAM_IDLE_TIMEOUT, DEFAULT_TCP_IDLE_TIMEOUT,
};

#[path = "listener_detect.rs"]
mod detect;
#[path = "listener_filters.rs"]
mod filters;
#[path = "listener_proto.rs"]
pub(super) mod proto;

use proto::{decode, port, same_type, unsupported};

/// A listener and what it refers to by name.
#[derive(Debug)]
pub struct TranslatedListener {
    pub listener: Listener,
    /// RDS names the listener's HCMs reference (for the client's RDS subscription),
    /// deduplicated, in order.
    pub route_names: Vec<String>,
    /// Inline `route_config`s of its HCMs, to be registered by name in Snapshot::routes
    /// (HttpManager uses RouteSource::Inline for them). One per name: chains whose inline
    /// tables are equal share one.
    pub inline_routes: Vec<Arc<RouteTable>>,
    /// Clusters named by its tcp_proxy filters and inline routes (the snapshot assembler
    /// checks they exist), deduplicated, in order.
    pub clusters: Vec<String>,
}

/// What a tcp_proxy `idle_timeout: 0s` (Envoy: no idle timeout) becomes: a hundred years,
/// so that the data path's timer arithmetic stays finite.
pub const TCP_IDLE_TIMEOUT_DISABLED: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// Typed-config type URLs accepted and ignored wherever a filter (network, HTTP) or a
/// per-route filter config may appear: Istio's telemetry, peer metadata and policy
/// filters, which do not change where traffic goes. Compared by type name (what follows
/// the last `/`).
pub const IGNORED_TYPES: &[&str] = &[
    // Istio's own filters.
    "type.googleapis.com/stats.PluginConfig", // istio.stats
    "type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange",
    "type.googleapis.com/io.istio.http.peer_metadata.Config", // istio.metadata_exchange (HTTP)
    "type.googleapis.com/io.istio.network.authn.Config",      // istio_authn
    "type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig", // istio.alpn
    // Istio's filters in their untyped wrappers (istio_authn, metadata exchange, ...).
    "type.googleapis.com/udpa.type.v1.TypedStruct",
    "type.googleapis.com/xds.type.v3.TypedStruct",
    // Wasm plugins (Istio's own extensions run as null-VM Wasm, WasmPlugin resources).
    "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
    "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm",
    // Telemetry.
    "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
    // Policy istiod adds for routes to use (not enforced by Skiff).
    "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault",
    "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors",
    "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy",
    "type.googleapis.com/envoy.extensions.filters.http.grpc_web.v3.GrpcWeb",
    "type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSession",
    "type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSessionPerRoute",
    // Authorization and authentication (not enforced by Skiff).
    "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC",
    "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
    "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
    "type.googleapis.com/envoy.extensions.filters.network.ext_authz.v3.ExtAuthz",
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig",
];

/// Whether a typed config is one Skiff accepts and ignores.
pub(super) fn is_ignored(type_url: &str) -> bool {
    IGNORED_TYPES.iter().any(|t| same_type(t, type_url))
}

const DOWNSTREAM_TLS: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const RAW_BUFFER: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";

/// Translates one LDS resource.
pub fn listener(l: &ListenerProto) -> Result<TranslatedListener, Invalid> {
    if l.name.is_empty() {
        return Err(Invalid::new(
            "name",
            "is empty; every listener needs a name",
        ));
    }
    let address = socket_address(l.address.as_ref()).map_err(|e| e.at("address"))?;
    for (k, extra) in l.additional_addresses.iter().enumerate() {
        let at = format!("additional_addresses[{k}].address");
        let other = socket_address(extra.address.as_ref()).map_err(|e| e.at(&at))?;
        if !(address.ip().is_unspecified()
            && other.ip().is_unspecified()
            && other.port() == address.port())
        {
            return Err(Invalid::new(
                at,
                format!(
                    "{other} is not the wildcard of the other address family on port {}; \
                     Skiff takes one address per listener, plus only that",
                    address.port()
                ),
            ));
        }
    }
    if l.filter_chain_matcher.is_some() {
        return Err(unsupported(
            "filter_chain_matcher",
            "the matcher tree; use filter_chains with filter_chain_match",
        ));
    }
    if l.fcds_config.is_some() {
        return Err(unsupported("fcds_config", "filter chain discovery (FCDS)"));
    }
    if l.api_listener.is_some() {
        return Err(unsupported("api_listener", "API listeners"));
    }
    if l.listener_specifier.is_some() {
        return Err(unsupported("internal_listener", "internal listeners"));
    }
    let direction = match TrafficDirection::try_from(l.traffic_direction) {
        Ok(TrafficDirection::Inbound) => Direction::Inbound,
        _ => Direction::Outbound,
    };
    let (detection, detection_skip_ports) = detect::detection(l)?;

    let mut refs = filters::Refs::default();
    let mut filter_chains: Vec<FilterChain> = Vec::with_capacity(l.filter_chains.len());
    for (i, fc) in l.filter_chains.iter().enumerate() {
        let at = format!("filter_chains[{i}]");
        let name = if fc.name.is_empty() {
            at.clone()
        } else {
            fc.name.clone()
        };
        let chain = filter_chain(fc, name, &l.name, &at, &mut refs).map_err(|e| e.at(&at))?;
        if let Some(k) = filter_chains
            .iter()
            .position(|c| c.matcher == chain.matcher)
        {
            return Err(Invalid::new(
                format!("{at}.filter_chain_match"),
                format!(
                    "is the same as filter_chains[{k}]'s, so this chain could never be \
                     chosen; Envoy refuses such listeners too"
                ),
            ));
        }
        filter_chains.push(chain);
    }
    let default_chain = match &l.default_filter_chain {
        None => None,
        Some(fc) => {
            let name = if fc.name.is_empty() {
                "default_filter_chain".to_owned()
            } else {
                fc.name.clone()
            };
            let mut chain = filter_chain(fc, name, &l.name, "default_filter_chain", &mut refs)
                .map_err(|e| e.at("default_filter_chain"))?;
            // Envoy ignores the default chain's match; so does Skiff.
            chain.matcher = ChainMatch::default();
            Some(chain)
        }
    };
    if filter_chains.is_empty() && default_chain.is_none() {
        return Err(Invalid::new(
            "filter_chains",
            "is empty and there is no default_filter_chain, so every connection would be \
             closed; add a chain",
        ));
    }
    let listener = Listener {
        name: l.name.clone(),
        address,
        bind_to_port: l.bind_to_port.as_ref().is_none_or(|b| b.value),
        use_original_dst: l.use_original_dst.as_ref().is_some_and(|b| b.value),
        direction,
        detection,
        detection_skip_ports,
        filter_chains,
        default_chain,
    };
    Ok(TranslatedListener {
        listener,
        route_names: refs.route_names,
        inline_routes: refs.inline.into_iter().map(|i| i.table).collect(),
        clusters: refs.clusters,
    })
}

/// An `Address` that must be a TCP socket address with an IP literal and a port.
fn socket_address(a: Option<&Address>) -> Result<SocketAddr, Invalid> {
    let sa = match a.and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(sa)) => sa,
        Some(address::Address::Pipe(_)) => {
            return Err(unsupported("pipe", "Unix socket listeners"));
        }
        Some(address::Address::EnvoyInternalAddress(_)) => {
            return Err(unsupported("envoy_internal_address", "internal addresses"));
        }
        None => {
            return Err(Invalid::new(
                "",
                "is missing; write socket_address with an IP address and port_value",
            ));
        }
    };
    let at = "socket_address";
    if sa.protocol == socket_address::Protocol::Udp as i32 {
        return Err(Invalid::new(
            format!("{at}.protocol"),
            "is UDP; Skiff listens on TCP only",
        ));
    }
    if !sa.resolver_name.is_empty() {
        return Err(unsupported(
            format!("{at}.resolver_name"),
            "custom resolvers; write an IP address",
        ));
    }
    if !sa.network_namespace_filepath.is_empty() {
        return Err(unsupported(
            format!("{at}.network_namespace_filepath"),
            "listening in another network namespace",
        ));
    }
    let ip: IpAddr = sa.address.parse().map_err(|_| {
        Invalid::new(
            format!("{at}.address"),
            format!(
                "{:?} is not an IP address; listeners take an IPv4 or IPv6 literal",
                sa.address
            ),
        )
    })?;
    let port = match &sa.port_specifier {
        Some(socket_address::PortSpecifier::PortValue(p)) => port(*p, &format!("{at}.port_value"))?,
        Some(socket_address::PortSpecifier::NamedPort(_)) => {
            return Err(unsupported(
                format!("{at}.named_port"),
                "named ports; write port_value",
            ));
        }
        None => {
            return Err(Invalid::new(
                format!("{at}.port_value"),
                "is missing; a listener needs a port",
            ));
        }
    };
    Ok(SocketAddr::new(ip, port))
}

/// One filter chain; errors are relative to the chain.
// Reads the deprecated `use_proxy_proto` to refuse it.
#[allow(deprecated)]
fn filter_chain(
    fc: &FilterChainProto,
    name: String,
    listener: &str,
    at: &str,
    refs: &mut filters::Refs,
) -> Result<FilterChain, Invalid> {
    let matcher =
        chain_match(fc.filter_chain_match.as_ref()).map_err(|e| e.at("filter_chain_match"))?;
    if fc.use_proxy_proto.as_ref().is_some_and(|b| b.value) {
        return Err(unsupported(
            "use_proxy_proto",
            "the PROXY protocol on downstream connections",
        ));
    }
    let tls =
        transport_socket(fc.transport_socket.as_ref()).map_err(|e| e.at("transport_socket"))?;
    let handler = filters::network_filters(&fc.filters, listener, &name, at, refs)?;
    Ok(FilterChain {
        name,
        matcher,
        handler,
        tls,
    })
}

fn chain_match(m: Option<&FilterChainMatch>) -> Result<ChainMatch, Invalid> {
    let Some(m) = m else {
        return Ok(ChainMatch::default());
    };
    if !m.direct_source_prefix_ranges.is_empty() {
        return Err(unsupported(
            "direct_source_prefix_ranges",
            "matching on the direct source; use source_prefix_ranges",
        ));
    }
    if m.source_type != ConnectionSourceType::Any as i32 {
        return Err(unsupported("source_type", "matching on the source type"));
    }
    if !m.source_ports.is_empty() {
        return Err(unsupported("source_ports", "matching on source ports"));
    }
    if !m.address_suffix.is_empty() || m.suffix_len.is_some() {
        return Err(unsupported(
            "address_suffix",
            "matching on address suffixes",
        ));
    }
    let destination_port = match &m.destination_port {
        None => None,
        Some(p) => match port(p.value, "destination_port")? {
            0 => {
                return Err(Invalid::new(
                    "destination_port",
                    "is 0; write a port from 1 to 65535, or leave it out to match every port",
                ));
            }
            p => Some(p),
        },
    };
    let ranges = |list: &[CidrRange], key: &str| -> Result<Vec<Cidr>, Invalid> {
        list.iter()
            .enumerate()
            .map(|(k, r)| cidr(r).map_err(|e| e.at(&format!("{key}[{k}]"))))
            .collect()
    };
    let transport_protocol = match m.transport_protocol.as_str() {
        "" => None,
        "raw_buffer" => Some(Transport::RawBuffer),
        "tls" => Some(Transport::Tls),
        other => {
            return Err(Invalid::new(
                "transport_protocol",
                format!("{other:?} is not supported; Skiff detects \"raw_buffer\" and \"tls\""),
            ));
        }
    };
    let mut server_names = Vec::with_capacity(m.server_names.len());
    for (k, n) in m.server_names.iter().enumerate() {
        if n.contains('*') {
            return Err(Invalid::new(
                format!("server_names[{k}]"),
                format!("{n:?} is a wildcard; Skiff matches server names exactly"),
            ));
        }
        server_names.push(n.to_ascii_lowercase());
    }
    Ok(ChainMatch {
        destination_port,
        prefix_ranges: ranges(&m.prefix_ranges, "prefix_ranges")?,
        source_prefix_ranges: ranges(&m.source_prefix_ranges, "source_prefix_ranges")?,
        transport_protocol,
        application_protocols: m.application_protocols.clone(),
        server_names,
    })
}

fn cidr(r: &CidrRange) -> Result<Cidr, Invalid> {
    let addr: IpAddr = r.address_prefix.parse().map_err(|_| {
        Invalid::new(
            "address_prefix",
            format!("{:?} is not an IP address", r.address_prefix),
        )
    })?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = r.prefix_len.as_ref().map_or(0, |p| p.value);
    if len > max {
        return Err(Invalid::new(
            "prefix_len",
            format!("{len} is longer than an address of that family ({max} bits)"),
        ));
    }
    Ok(Cidr {
        addr,
        prefix: len as u8,
    })
}

/// A chain's transport socket: TLS (recorded) or raw_buffer (nothing).
fn transport_socket(ts: Option<&TransportSocket>) -> Result<Option<DownstreamTls>, Invalid> {
    let Some(ts) = ts else {
        return Ok(None);
    };
    let any = match &ts.config_type {
        Some(transport_socket::ConfigType::TypedConfig(any)) => any,
        None => {
            return match ts.name.as_str() {
                "envoy.transport_sockets.raw_buffer" | "raw_buffer" => Ok(None),
                "envoy.transport_sockets.tls" | "tls" => Err(Invalid::new(
                    "typed_config",
                    "is missing; a TLS transport socket needs its DownstreamTlsContext",
                )),
                other => Err(Invalid::new(
                    "name",
                    format!(
                        "{other:?} is not a transport socket Skiff supports; it supports \
                         envoy.transport_sockets.tls and raw_buffer"
                    ),
                )),
            };
        }
    };
    if same_type(&any.type_url, RAW_BUFFER) {
        return Ok(None);
    }
    if !same_type(&any.type_url, DOWNSTREAM_TLS) {
        return Err(Invalid::new(
            "typed_config",
            format!(
                "{:?} is not a transport socket Skiff supports; it supports \
                 DownstreamTlsContext and RawBuffer",
                any.type_url
            ),
        ));
    }
    let ctx: DownstreamTlsContext =
        decode(any, DOWNSTREAM_TLS).map_err(|e| e.at("typed_config"))?;
    let common = ctx.common_tls_context.unwrap_or_default();
    let validation_secret = match &common.validation_context_type {
        Some(ValidationContextType::ValidationContextSdsSecretConfig(s)) => Some(s.name.clone()),
        Some(ValidationContextType::CombinedValidationContext(c)) => c
            .validation_context_sds_secret_config
            .as_ref()
            .map(|s| s.name.clone()),
        _ => None,
    };
    Ok(Some(DownstreamTls {
        require_client_certificate: ctx.require_client_certificate.is_some_and(|b| b.value),
        alpn: common.alpn_protocols.clone(),
        certificate_secret: common
            .tls_certificate_sds_secret_configs
            .first()
            .map(|s| s.name.clone()),
        validation_secret: validation_secret.filter(|n| !n.is_empty()),
    }))
}

#[cfg(test)]
#[path = "listener_tests.rs"]
mod tests;
