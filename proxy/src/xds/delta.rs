//! Incremental (delta) ADS, istiod's default: each response carries only what changed and
//! what was removed; the client subscribes to route tables and endpoints by name as the
//! listeners and clusters it holds name them, and resumes after a reconnect by telling the
//! server the versions it already has.

use std::collections::HashMap;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use super::cache::{Incoming, known_type, unknown_type};
use super::client::{Core, XdsError, XdsOptions, authenticate};
use super::session::{Subscriptions, drive, nack_status, rejection_message};
use super::type_url;

type Client = envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient<tonic::transport::Channel>;

pub(super) async fn session(
    mut client: Client,
    options: &XdsOptions,
    core: &mut Core,
) -> Result<(), XdsError> {
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(64);
    let mut node = Some(options.node.clone());
    let mut subscriptions = Subscriptions::default();
    // Clusters, then listeners (wildcard), then what they already reference.
    for kind in [type_url::CLUSTER, type_url::LISTENER] {
        let request = DeltaDiscoveryRequest {
            node: node.take(),
            type_url: kind.to_owned(),
            initial_resource_versions: core.cache.versions(kind).into_iter().collect(),
            ..DeltaDiscoveryRequest::default()
        };
        tx.send(request).await.map_err(|_| XdsError::Closed)?;
    }
    for kind in [type_url::ENDPOINT, type_url::ROUTE] {
        if let Some(request) = subscription(core, &mut subscriptions, kind, true) {
            tx.send(request).await.map_err(|_| XdsError::Closed)?;
        }
    }
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    authenticate(options, &mut request);
    let responses = client
        .delta_aggregated_resources(request)
        .await?
        .into_inner();
    drive(responses, &tx, core, |core, response| {
        handle(core, &mut subscriptions, response)
    })
    .await
}

/// Applies one response; returns the requests to send: the ACK or NACK, then any change
/// of subscriptions it caused.
fn handle(
    core: &mut Core,
    subscriptions: &mut Subscriptions,
    response: DeltaDiscoveryResponse,
) -> Vec<DeltaDiscoveryRequest> {
    let received = Instant::now();
    let mut out = Vec::new();
    let Some(kind) = known_type(&response.type_url) else {
        out.push(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce,
            error_detail: Some(nack_status(unknown_type(&response.type_url))),
            ..DeltaDiscoveryRequest::default()
        });
        return out;
    };
    let incoming = response
        .resources
        .into_iter()
        .filter_map(|r| {
            r.resource.map(|resource| Incoming {
                name: r.name,
                version: r.version,
                resource,
            })
        })
        .collect();
    let version = Some(response.system_version_info.as_str()).filter(|v| !v.is_empty());
    match core
        .cache
        .apply(kind, incoming, &response.removed_resources, false)
    {
        Ok(()) => {
            core.status.answered(
                kind,
                &response.nonce,
                version,
                None,
                core.cache.versions(kind),
            );
            out.push(DeltaDiscoveryRequest {
                type_url: kind.to_owned(),
                response_nonce: response.nonce,
                ..DeltaDiscoveryRequest::default()
            });
        }
        Err(rejections) => {
            let message = rejection_message(&rejections);
            tracing::warn!(type_url = kind, "xDS: refusing a push: {message}");
            core.status.answered(
                kind,
                &response.nonce,
                None,
                Some(message.clone()),
                Default::default(),
            );
            out.push(DeltaDiscoveryRequest {
                type_url: kind.to_owned(),
                response_nonce: response.nonce,
                error_detail: Some(nack_status(message)),
                ..DeltaDiscoveryRequest::default()
            });
            return out;
        }
    }
    for dependent in [type_url::ENDPOINT, type_url::ROUTE] {
        out.extend(subscription(core, subscriptions, dependent, false));
    }
    core.after_push(received);
    out
}

/// The request that brings the subscription of `kind` in line with what the cache
/// references, if it changed. On a new stream (`initial`) it also tells the versions held.
fn subscription(
    core: &Core,
    subscriptions: &mut Subscriptions,
    kind: &'static str,
    initial: bool,
) -> Option<DeltaDiscoveryRequest> {
    let wanted = core.cache.wanted(kind).unwrap_or_default();
    let (subscribe, unsubscribe) = subscriptions.update(kind, &wanted)?;
    let held = core.cache.versions(kind);
    let initial_resource_versions: HashMap<String, String> = if initial {
        held.into_iter()
            .filter(|(name, _)| wanted.contains(name))
            .collect()
    } else {
        HashMap::new()
    };
    Some(DeltaDiscoveryRequest {
        type_url: kind.to_owned(),
        resource_names_subscribe: subscribe,
        resource_names_unsubscribe: unsubscribe,
        initial_resource_versions,
        ..DeltaDiscoveryRequest::default()
    })
}
