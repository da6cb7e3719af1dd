//! State-of-the-world ADS: every response carries the whole set of its type (listeners and
//! clusters) or of the names asked for (route tables and endpoints); an ACK repeats the
//! version accepted, a NACK the previous one with the reason.

use std::collections::HashMap;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use super::cache::{Incoming, known_type, unknown_type};
use super::client::{Core, XdsError, XdsOptions, authenticate};
use super::session::{Subscriptions, drive, nack_status, rejection_message};
use super::type_url;

type Client = envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient<tonic::transport::Channel>;

/// Per type: the version last accepted and the nonce last received.
#[derive(Default)]
struct Versions {
    accepted: HashMap<&'static str, String>,
    nonce: HashMap<&'static str, String>,
}

pub(super) async fn session(
    mut client: Client,
    options: &XdsOptions,
    core: &mut Core,
) -> Result<(), XdsError> {
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(64);
    let mut versions = Versions::default();
    // A new stream starts over: the server learns what we hold from the versions sent.
    for kind in [type_url::CLUSTER, type_url::LISTENER] {
        versions.accepted.insert(
            kind,
            core.status
                .view()
                .types
                .get(kind)
                .map(|t| t.version.clone())
                .unwrap_or_default(),
        );
    }
    let mut subscriptions = Subscriptions::default();
    let mut node = Some(options.node.clone());
    for kind in [type_url::CLUSTER, type_url::LISTENER] {
        let request = DiscoveryRequest {
            node: node.take(),
            type_url: kind.to_owned(),
            version_info: versions.accepted.get(kind).cloned().unwrap_or_default(),
            ..DiscoveryRequest::default()
        };
        tx.send(request).await.map_err(|_| XdsError::Closed)?;
    }
    for kind in [type_url::ENDPOINT, type_url::ROUTE] {
        if let Some(request) = subscription(core, &mut subscriptions, &versions, kind) {
            tx.send(request).await.map_err(|_| XdsError::Closed)?;
        }
    }
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    authenticate(options, &mut request);
    let responses = client
        .stream_aggregated_resources(request)
        .await?
        .into_inner();
    drive(responses, &tx, core, |core, response| {
        handle(core, &mut subscriptions, &mut versions, response)
    })
    .await
}

fn handle(
    core: &mut Core,
    subscriptions: &mut Subscriptions,
    versions: &mut Versions,
    response: DiscoveryResponse,
) -> Vec<DiscoveryRequest> {
    let received = Instant::now();
    let mut out = Vec::new();
    let Some(kind) = known_type(&response.type_url) else {
        out.push(DiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce,
            error_detail: Some(nack_status(unknown_type(&response.type_url))),
            ..DiscoveryRequest::default()
        });
        return out;
    };
    versions.nonce.insert(kind, response.nonce.clone());
    let incoming = response
        .resources
        .into_iter()
        .map(|resource| Incoming {
            name: String::new(),
            version: response.version_info.clone(),
            resource,
        })
        .collect();
    // Listeners and clusters come whole: what is not listed is gone.
    let full = matches!(kind, type_url::LISTENER | type_url::CLUSTER);
    let answer = match core.cache.apply(kind, incoming, &[], full) {
        Ok(()) => {
            versions
                .accepted
                .insert(kind, response.version_info.clone());
            core.status.answered(
                kind,
                &response.nonce,
                Some(&response.version_info),
                None,
                core.cache.versions(kind),
            );
            None
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
            Some(message)
        }
    };
    let nacked = answer.is_some();
    out.push(DiscoveryRequest {
        type_url: kind.to_owned(),
        version_info: versions.accepted.get(kind).cloned().unwrap_or_default(),
        response_nonce: response.nonce,
        resource_names: subscriptions.names(kind),
        error_detail: answer.map(nack_status),
        ..DiscoveryRequest::default()
    });
    if nacked {
        return out;
    }
    for dependent in [type_url::ENDPOINT, type_url::ROUTE] {
        out.extend(subscription(core, subscriptions, versions, dependent));
    }
    core.after_push(received);
    out
}

/// A request naming the resources of `kind` the cache references, when that set changed.
fn subscription(
    core: &Core,
    subscriptions: &mut Subscriptions,
    versions: &Versions,
    kind: &'static str,
) -> Option<DiscoveryRequest> {
    let wanted = core.cache.wanted(kind).unwrap_or_default();
    subscriptions.update(kind, &wanted)?;
    Some(DiscoveryRequest {
        type_url: kind.to_owned(),
        version_info: versions.accepted.get(kind).cloned().unwrap_or_default(),
        response_nonce: versions.nonce.get(kind).cloned().unwrap_or_default(),
        resource_names: wanted.into_iter().collect(),
        ..DiscoveryRequest::default()
    })
}
