//! The xDS protocol per ADS stream: what to answer to each request of either variant
//! (state of the world, delta) and what to push when resources change.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{Inner, Recorded, State, TypeResources, Variant, lock, type_url};

static NONCES: AtomicU64 = AtomicU64::new(1);

fn next_nonce() -> String {
    NONCES.fetch_add(1, Ordering::Relaxed).to_string()
}

/// LDS and CDS are wildcard types: an empty subscription means "everything".
fn wildcard_type(type_url: &str) -> bool {
    type_url == type_url::LISTENER || type_url == type_url::CLUSTER
}

/// The order in which pushes of several types go out: clusters, endpoints, listeners,
/// routes (Envoy's "make before break" order for ADS), then anything else by name.
fn push_order(type_url: &str) -> (u8, &str) {
    let rank = match type_url {
        type_url::CLUSTER => 0,
        type_url::ENDPOINT => 1,
        type_url::LISTENER => 2,
        type_url::ROUTE => 3,
        _ => 4,
    };
    (rank, type_url)
}

pub(super) struct Ads {
    pub(super) inner: Arc<Inner>,
}

type Responses<T> = ReceiverStream<Result<T, Status>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = Responses<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Responses<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let requests = request.into_inner();
        let inner = self.inner.clone();
        self.inner.open_stream(tx.clone(), move |id| {
            let stream = SotwStream {
                id,
                node_id: None,
                types: BTreeMap::new(),
            };
            run_stream(inner, stream, requests, tx)
        })?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let requests = request.into_inner();
        let inner = self.inner.clone();
        self.inner.open_stream(tx.clone(), move |id| {
            let stream = DeltaStream {
                id,
                node_id: None,
                types: BTreeMap::new(),
                nonces: VecDeque::new(),
            };
            run_stream(inner, stream, requests, tx)
        })?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// What a stream of either variant does with a request and with a change of resources.
trait AdsStream: Send + 'static {
    type Req: Send + 'static;
    type Resp: Send + 'static;
    fn on_request(&mut self, inner: &Inner, request: Self::Req) -> Option<Self::Resp>;
    fn on_change(&mut self, inner: &Inner) -> Vec<Self::Resp>;
}

async fn run_stream<S: AdsStream>(
    inner: Arc<Inner>,
    mut stream: S,
    mut requests: Streaming<S::Req>,
    tx: mpsc::Sender<Result<S::Resp, Status>>,
) {
    let mut changes = inner.changes.subscribe();
    loop {
        let responses = tokio::select! {
            request = requests.message() => match request {
                Ok(Some(request)) => stream.on_request(&inner, request).into_iter().collect(),
                // The client went away (or sent garbage): end the stream.
                Ok(None) | Err(_) => return,
            },
            changed = changes.changed() => match changed {
                Ok(()) => stream.on_change(&inner),
                Err(_) => return,
            },
            () = tx.closed() => return,
        };
        for response in responses {
            if tx.send(Ok(response)).await.is_err() {
                return;
            }
        }
    }
}

fn node_id(node: Option<&envoy_types::pb::envoy::config::core::v3::Node>) -> Option<String> {
    node.map(|n| n.id.clone()).filter(|id| !id.is_empty())
}

fn error_of(status: Option<envoy_types::pb::google::rpc::Status>) -> Option<(i32, String)> {
    status.map(|s| (s.code, s.message))
}

/// The types a stream has asked for, in push order.
fn ordered<T>(types: &BTreeMap<String, T>) -> Vec<String> {
    let mut names: Vec<String> = types.keys().cloned().collect();
    names.sort_by(|a, b| push_order(a).cmp(&push_order(b)));
    names
}

struct SotwStream {
    id: usize,
    node_id: Option<String>,
    types: BTreeMap<String, SotwType>,
}

#[derive(Default)]
struct SotwType {
    wildcard: bool,
    names: BTreeSet<String>,
    /// What the last response answered: (type version, wildcard, names).
    sent: Option<(u64, bool, BTreeSet<String>)>,
}

impl SotwStream {
    /// A response when what the client should have differs from what it was last sent.
    fn respond(&mut self, state: &State, type_url: &str) -> Option<DiscoveryResponse> {
        let wanted = self.types.get_mut(type_url)?;
        let current = state.resources.get(type_url);
        let version = current.map_or(0, |r| r.version);
        let answer = (version, wanted.wildcard, wanted.names.clone());
        if wanted.sent.as_ref() == Some(&answer) {
            return None;
        }
        let resources = match current {
            None => Vec::new(),
            Some(r) if wanted.wildcard => r.items.values().map(|i| i.any.clone()).collect(),
            Some(r) => wanted
                .names
                .iter()
                .filter_map(|name| r.items.get(name))
                .map(|i| i.any.clone())
                .collect(),
        };
        wanted.sent = Some(answer);
        Some(DiscoveryResponse {
            version_info: version.to_string(),
            resources,
            type_url: type_url.to_string(),
            nonce: next_nonce(),
            ..Default::default()
        })
    }
}

impl AdsStream for SotwStream {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;

    fn on_request(
        &mut self,
        inner: &Inner,
        request: DiscoveryRequest,
    ) -> Option<DiscoveryResponse> {
        if let Some(id) = node_id(request.node.as_ref()) {
            self.node_id = Some(id);
        }
        let DiscoveryRequest {
            version_info,
            resource_names,
            type_url,
            response_nonce,
            error_detail,
            ..
        } = request;
        inner.record(Recorded {
            stream: self.id,
            variant: Variant::Sotw,
            type_url: type_url.clone(),
            version_info,
            response_nonce,
            resource_names: resource_names.clone(),
            subscribe: Vec::new(),
            unsubscribe: Vec::new(),
            initial_resource_versions: HashMap::new(),
            error: error_of(error_detail),
            node_id: self.node_id.clone(),
        });
        if type_url.is_empty() {
            return None;
        }
        let wanted = self.types.entry(type_url.clone()).or_default();
        wanted.wildcard = resource_names.iter().any(|n| n == "*")
            || (resource_names.is_empty() && wildcard_type(&type_url));
        wanted.names = resource_names.into_iter().filter(|n| n != "*").collect();
        // A first request, a changed subscription or a change not yet sent is answered;
        // an ACK or a NACK of the current state is not (no re-send on NACK).
        let state = lock(&inner.state);
        self.respond(&state, &type_url)
    }

    fn on_change(&mut self, inner: &Inner) -> Vec<DiscoveryResponse> {
        let state = lock(&inner.state);
        ordered(&self.types)
            .iter()
            .filter_map(|type_url| self.respond(&state, type_url))
            .collect()
    }
}

struct DeltaStream {
    id: usize,
    node_id: Option<String>,
    types: BTreeMap<String, DeltaType>,
    /// The last responses' (nonce, system_version_info), to name the version an ACK accepts.
    nonces: VecDeque<(String, String)>,
}

#[derive(Default)]
struct DeltaType {
    wildcard: bool,
    subscribed: BTreeSet<String>,
    /// What the client has, as far as the server knows: name → version.
    has: HashMap<String, String>,
}

impl DeltaType {
    fn in_scope(wildcard: bool, subscribed: &BTreeSet<String>, name: &str) -> bool {
        wildcard || subscribed.contains(name)
    }

    /// What the client lacks: resources in scope whose version it does not have, and names
    /// it has that no longer exist.
    fn diff(&mut self, current: Option<&TypeResources>) -> (Vec<Resource>, Vec<String>) {
        let DeltaType {
            wildcard,
            subscribed,
            has,
        } = self;
        // Out of scope (unsubscribed, or reported on reconnect without a subscription):
        // the client drops those itself.
        has.retain(|name, _| Self::in_scope(*wildcard, subscribed, name));
        let mut removed: Vec<String> = has
            .keys()
            .filter(|name| current.is_none_or(|c| !c.items.contains_key(*name)))
            .cloned()
            .collect();
        removed.sort();
        for name in &removed {
            has.remove(name);
        }
        let mut resources = Vec::new();
        for (name, item) in current.map(|c| c.items.iter()).into_iter().flatten() {
            if !Self::in_scope(*wildcard, subscribed, name) || has.get(name) == Some(&item.version)
            {
                continue;
            }
            has.insert(name.clone(), item.version.clone());
            resources.push(Resource {
                name: name.clone(),
                version: item.version.clone(),
                resource: Some(item.any.clone()),
                ..Default::default()
            });
        }
        (resources, removed)
    }
}

impl DeltaStream {
    fn respond(
        &mut self,
        state: &State,
        type_url: &str,
        even_if_empty: bool,
    ) -> Option<DeltaDiscoveryResponse> {
        let wanted = self.types.get_mut(type_url)?;
        let current = state.resources.get(type_url);
        let (resources, removed_resources) = wanted.diff(current);
        if resources.is_empty() && removed_resources.is_empty() && !even_if_empty {
            return None;
        }
        let version = current.map_or(0, |r| r.version).to_string();
        let nonce = next_nonce();
        self.nonces.push_back((nonce.clone(), version.clone()));
        if self.nonces.len() > 64 {
            self.nonces.pop_front();
        }
        Some(DeltaDiscoveryResponse {
            system_version_info: version,
            resources,
            type_url: type_url.to_string(),
            removed_resources,
            nonce,
            ..Default::default()
        })
    }
}

impl AdsStream for DeltaStream {
    type Req = DeltaDiscoveryRequest;
    type Resp = DeltaDiscoveryResponse;

    fn on_request(
        &mut self,
        inner: &Inner,
        request: DeltaDiscoveryRequest,
    ) -> Option<DeltaDiscoveryResponse> {
        if let Some(id) = node_id(request.node.as_ref()) {
            self.node_id = Some(id);
        }
        let DeltaDiscoveryRequest {
            type_url,
            resource_names_subscribe: subscribe,
            resource_names_unsubscribe: unsubscribe,
            initial_resource_versions,
            response_nonce,
            error_detail,
            ..
        } = request;
        let version_info = self
            .nonces
            .iter()
            .find(|(nonce, _)| !response_nonce.is_empty() && *nonce == response_nonce)
            .map(|(_, version)| version.clone())
            .unwrap_or_default();
        inner.record(Recorded {
            stream: self.id,
            variant: Variant::Delta,
            type_url: type_url.clone(),
            version_info,
            response_nonce,
            resource_names: Vec::new(),
            subscribe: subscribe.clone(),
            unsubscribe: unsubscribe.clone(),
            initial_resource_versions: initial_resource_versions.clone(),
            error: error_of(error_detail),
            node_id: self.node_id.clone(),
        });
        if type_url.is_empty() {
            return None;
        }
        let first = !self.types.contains_key(&type_url);
        let wanted = self.types.entry(type_url.clone()).or_default();
        if first {
            wanted.wildcard = subscribe.is_empty() && wildcard_type(&type_url);
            wanted.has = initial_resource_versions;
        }
        for name in unsubscribe {
            if name == "*" {
                wanted.wildcard = false;
            } else {
                wanted.subscribed.remove(&name);
            }
        }
        for name in subscribe {
            if name == "*" {
                wanted.wildcard = true;
            } else {
                wanted.subscribed.insert(name);
            }
        }
        // The first request of a type is always answered (an empty answer tells the client
        // there is nothing); later ones only when the client lacks something (a new
        // subscription, or a change it has not been sent). ACKs and NACKs change nothing,
        // so nothing is re-sent on a NACK.
        let state = lock(&inner.state);
        self.respond(&state, &type_url, first)
    }

    fn on_change(&mut self, inner: &Inner) -> Vec<DeltaDiscoveryResponse> {
        let state = lock(&inner.state);
        ordered(&self.types)
            .iter()
            .filter_map(|type_url| self.respond(&state, type_url, false))
            .collect()
    }
}
