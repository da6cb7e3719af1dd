//! A cluster's `transport_socket` and `transport_socket_matches`: plaintext, TLS, or
//! istiod's auto-mTLS (see the list of what is honoured in the parent module).

use envoy_types::pb::envoy::config::cluster::v3::Cluster as XdsCluster;
use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use envoy_types::pb::envoy::extensions::transport_sockets::raw_buffer::v3::RawBuffer;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, UpstreamTlsContext, common_tls_context::ValidationContextType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::google::protobuf::value::Kind;
use prost::Name;

use super::{Invalid, PEER_EXCHANGE_ALPN, RAW_BUFFER_SOCKET, TLS_SOCKET, decode, type_name};
use crate::snapshot::{UpstreamTls, UpstreamTransport};

pub(super) fn transport(c: &XdsCluster) -> Result<UpstreamTransport, Invalid> {
    let default = match &c.transport_socket {
        Some(ts) => socket(ts).map_err(|e| e.at("transport_socket"))?,
        None => UpstreamTransport::Plaintext,
    };
    if c.transport_socket_matches.is_empty() {
        return Ok(default);
    }
    if c.transport_socket_matcher.is_some() {
        return Err(Invalid::new(
            "transport_socket_matcher",
            "is not supported with transport_socket_matches",
        ));
    }
    let mut istio: Option<UpstreamTransport> = None;
    let mut fallback: Option<UpstreamTransport> = None;
    for (i, m) in c.transport_socket_matches.iter().enumerate() {
        let at = format!("transport_socket_matches[{i}]");
        let chosen = match &m.transport_socket {
            Some(ts) => socket(ts).map_err(|e| e.at(&format!("{at}.transport_socket")))?,
            None => UpstreamTransport::Plaintext,
        };
        let criteria = m.r#match.as_ref().map(|s| &s.fields);
        let is_istio = match criteria {
            None => false,
            Some(fields) if fields.is_empty() => false,
            Some(fields)
                if fields.len() == 1
                    && fields.get("tlsMode").is_some_and(
                        |v| matches!(&v.kind, Some(Kind::StringValue(s)) if s == "istio"),
                    ) =>
            {
                true
            }
            Some(_) => {
                return Err(Invalid::new(
                    format!("{at}.match"),
                    "Skiff matches only istiod's auto-mTLS entries, {tlsMode: istio} and {}",
                ));
            }
        };
        // The first entry that matches an endpoint wins; entries after a match-all never do.
        if fallback.is_some() {
            continue;
        }
        if !is_istio {
            fallback = Some(chosen);
        } else if istio.is_none() {
            istio = Some(chosen);
        }
    }
    let fallback = fallback.unwrap_or(default);
    match (istio, fallback) {
        (None, other) => Ok(other),
        (Some(UpstreamTransport::Tls(tls)), UpstreamTransport::Plaintext) => {
            Ok(UpstreamTransport::IstioAuto(tls))
        }
        (Some(a), b) if a == b => Ok(a),
        _ => Err(Invalid::new(
            "transport_socket_matches",
            "Skiff's auto-mTLS is TLS for endpoints with tlsMode: istio and plaintext for the \
             others; these entries ask for another combination",
        )),
    }
}

fn socket(ts: &TransportSocket) -> Result<UpstreamTransport, Invalid> {
    let config = ts
        .config_type
        .as_ref()
        .map(|transport_socket::ConfigType::TypedConfig(any)| any);
    let kind = config.map_or(ts.name.as_str(), |any| type_name(&any.type_url));
    let tls_type = UpstreamTlsContext::full_name();
    let raw_type = RawBuffer::full_name();
    if kind == tls_type || kind == TLS_SOCKET || kind == "tls" {
        let context = match config {
            Some(any) => decode::<UpstreamTlsContext>(any).map_err(|e| e.at("typed_config"))?,
            None => UpstreamTlsContext::default(),
        };
        let tls = upstream_tls(&context).map_err(|e| e.at("typed_config"))?;
        Ok(UpstreamTransport::Tls(tls))
    } else if kind == raw_type || kind == RAW_BUFFER_SOCKET || kind == "raw_buffer" {
        Ok(UpstreamTransport::Plaintext)
    } else {
        Err(Invalid::new(
            if config.is_some() {
                "typed_config"
            } else {
                "name"
            },
            format!(
                "transport socket {kind:?} is not supported; Skiff speaks plaintext \
                 ({RAW_BUFFER_SOCKET}) or TLS ({TLS_SOCKET})"
            ),
        ))
    }
}

fn upstream_tls(context: &UpstreamTlsContext) -> Result<UpstreamTls, Invalid> {
    let mut tls = UpstreamTls {
        sni: (!context.sni.is_empty()).then(|| context.sni.clone()),
        ..UpstreamTls::default()
    };
    let Some(common) = &context.common_tls_context else {
        return Ok(tls);
    };
    let at = |f: &str| format!("common_tls_context.{f}");
    // Skiff does not speak Istio's TCP metadata exchange, so it must never offer it.
    tls.alpn = common
        .alpn_protocols
        .iter()
        .filter(|p| *p != PEER_EXCHANGE_ALPN)
        .cloned()
        .collect();
    if !common.tls_certificates.is_empty() {
        return Err(Invalid::new(
            at("tls_certificates"),
            "inline certificates are not supported; name the certificate by SDS \
             (tls_certificate_sds_secret_configs)",
        ));
    }
    if common.tls_certificate_provider_instance.is_some() {
        return Err(Invalid::new(
            at("tls_certificate_provider_instance"),
            "certificate providers are not supported; name the certificate by SDS",
        ));
    }
    match common.tls_certificate_sds_secret_configs.as_slice() {
        [] => {}
        [one] => tls.certificate_secret = Some(one.name.clone()),
        _ => {
            return Err(Invalid::new(
                at("tls_certificate_sds_secret_configs"),
                "Skiff presents one client certificate; name one secret",
            ));
        }
    }
    match &common.validation_context_type {
        None => {}
        Some(ValidationContextType::ValidationContext(v)) => {
            validation(v, &mut tls).map_err(|e| e.at(&at("validation_context")))?;
        }
        Some(ValidationContextType::ValidationContextSdsSecretConfig(s)) => {
            tls.validation_secret = Some(s.name.clone());
        }
        Some(ValidationContextType::CombinedValidationContext(combined)) => {
            let cat = at("combined_validation_context");
            if let Some(v) = &combined.default_validation_context {
                validation(v, &mut tls)
                    .map_err(|e| e.at(&format!("{cat}.default_validation_context")))?;
            }
            tls.validation_secret = combined
                .validation_context_sds_secret_config
                .as_ref()
                .map(|s| s.name.clone());
        }
        Some(_) => {
            return Err(Invalid::new(
                at("validation_context_certificate_provider"),
                "certificate providers are not supported; name the CA by SDS",
            ));
        }
    }
    Ok(tls)
}

fn validation(v: &CertificateValidationContext, tls: &mut UpstreamTls) -> Result<(), Invalid> {
    if v.trusted_ca.is_some() {
        return Err(Invalid::new(
            "trusted_ca",
            "an inline CA is not supported; name the CA by SDS (validation_context_sds_secret_config)",
        ));
    }
    #[allow(deprecated)]
    for (i, m) in v.match_subject_alt_names.iter().enumerate() {
        let san = exact(m).map_err(|e| e.at(&format!("match_subject_alt_names[{i}]")))?;
        tls.subject_alt_names.push(san);
    }
    for (i, m) in v.match_typed_subject_alt_names.iter().enumerate() {
        let at = format!("match_typed_subject_alt_names[{i}].matcher");
        let matcher = m
            .matcher
            .as_ref()
            .ok_or_else(|| Invalid::new(&at, "is missing"))?;
        tls.subject_alt_names
            .push(exact(matcher).map_err(|e| e.at(&at))?);
    }
    Ok(())
}

fn exact(m: &StringMatcher) -> Result<String, Invalid> {
    match &m.match_pattern {
        Some(MatchPattern::Exact(s)) => Ok(s.clone()),
        _ => Err(Invalid::new(
            "",
            "only exact SAN matches are supported (istiod's ISTIO_MUTUAL and subjectAltNames)",
        )),
    }
}
