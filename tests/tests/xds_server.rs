//! The xDS test server on its own, driven by a tonic ADS client over loopback TCP (no root
//! needed): state-of-the-world and delta fetches, ACK/NACK records, pushes, subscriptions,
//! reconnects, stop/resume, and the resource builders' output.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::google::rpc;
use skiff_tests::xds_resources::{self as res, unpack};
use skiff_tests::xds_server::type_url::{CLUSTER, ENDPOINT, LISTENER, ROUTE};
use skiff_tests::xds_server::{Variant, XdsServer};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// The builders' round trips.
#[path = "xds_server/builders.rs"]
mod builders;

/// Every wait is bounded by this (builds share a slow machine).
const T: Duration = Duration::from_secs(10);
const NODE: &str = "sidecar~10.77.0.1~productpage-v1-1.demo~demo.svc.cluster.local";

async fn start() -> (XdsServer, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().unwrap();
    (XdsServer::start(vec![listener]).await, addr)
}

fn node() -> Option<Node> {
    Some(Node {
        id: NODE.to_string(),
        ..Default::default()
    })
}

async fn connect(
    addr: SocketAddr,
) -> Result<AggregatedDiscoveryServiceClient<tonic::transport::Channel>, String> {
    AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| e.to_string())
}

/// A state-of-the-world ADS stream.
struct Sotw {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl Sotw {
    async fn open(addr: SocketAddr) -> Result<Sotw, String> {
        let mut client = connect(addr).await?;
        let (tx, rx) = mpsc::channel(16);
        let rx = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        Ok(Sotw { tx, rx })
    }

    async fn send(&self, request: DiscoveryRequest) {
        self.tx.send(request).await.expect("stream open");
    }

    /// Subscribes (or re-subscribes) to `type_url` with `names`, answering `nonce`.
    async fn request(&self, type_url: &str, names: &[&str], version: &str, nonce: &str) {
        self.send(DiscoveryRequest {
            node: node(),
            type_url: type_url.to_string(),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            version_info: version.to_string(),
            response_nonce: nonce.to_string(),
            ..Default::default()
        })
        .await;
    }

    async fn ack(&self, response: &DiscoveryResponse, names: &[&str]) {
        self.request(
            &response.type_url,
            names,
            &response.version_info,
            &response.nonce,
        )
        .await;
    }

    async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(T, self.rx.message())
            .await
            .expect("a response in time")
            .expect("no error")
            .expect("stream open")
    }
}

/// A delta ADS stream.
struct Delta {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
}

impl Delta {
    async fn open(addr: SocketAddr) -> Delta {
        let mut client = connect(addr).await.expect("connect");
        let (tx, rx) = mpsc::channel(16);
        let rx = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .expect("delta stream")
            .into_inner();
        Delta { tx, rx }
    }

    async fn send(&self, request: DeltaDiscoveryRequest) {
        self.tx.send(request).await.expect("stream open");
    }

    async fn subscribe(&self, type_url: &str, names: &[&str]) {
        self.send(DeltaDiscoveryRequest {
            node: node(),
            type_url: type_url.to_string(),
            resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        })
        .await;
    }

    async fn ack(&self, response: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: response.type_url.clone(),
            response_nonce: response.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    async fn recv(&mut self) -> DeltaDiscoveryResponse {
        tokio::time::timeout(T, self.rx.message())
            .await
            .expect("a response in time")
            .expect("no error")
            .expect("stream open")
    }
}

fn cluster_names(resources: &[Any]) -> Vec<String> {
    resources
        .iter()
        .map(|any| unpack::<Cluster>(any).expect("a Cluster").name)
        .collect()
}

fn route_names(resources: &[Any]) -> Vec<String> {
    resources
        .iter()
        .map(|any| unpack::<RouteConfiguration>(any).expect("a route").name)
        .collect()
}

fn delta_names(response: &DeltaDiscoveryResponse) -> Vec<String> {
    response.resources.iter().map(|r| r.name.clone()).collect()
}

fn clusters(names: &[&str]) -> Vec<(String, Any)> {
    names.iter().map(|n| res::eds_cluster(n)).collect()
}

/// A cluster whose content differs from `eds_cluster(name)`'s.
fn changed_cluster(name: &str) -> (String, Any) {
    let (name, any) = res::eds_cluster(name);
    let mut cluster = unpack::<Cluster>(&any).unwrap();
    cluster.connect_timeout = Some(envoy_types::pb::google::protobuf::Duration {
        seconds: 3,
        nanos: 0,
    });
    (name, res::pack(&cluster))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn sotw_initial_fetch_ack_and_push() {
    let (server, addr) = start().await;
    server.set(CLUSTER, clusters(&["a", "b"]));
    let mut sotw = Sotw::open(addr).await.unwrap();
    sotw.request(CLUSTER, &[], "", "").await;

    let first = sotw.recv().await;
    assert_eq!(first.type_url, CLUSTER);
    assert_eq!(first.version_info, "1");
    assert_eq!(cluster_names(&first.resources), ["a", "b"]);
    assert!(!first.nonce.is_empty());

    sotw.ack(&first, &[]).await;
    let ack = server
        .wait_for_ack(T, CLUSTER, "1")
        .await
        .expect("ACK recorded");
    assert_eq!(ack.variant, Variant::Sotw);
    assert_eq!(ack.response_nonce, first.nonce);
    assert_eq!(ack.node_id.as_deref(), Some(NODE));
    assert_eq!(ack.stream, 1);
    assert_eq!(server.connections(), 1);

    server.set(CLUSTER, clusters(&["a", "c", "d"]));
    let pushed = sotw.recv().await;
    assert_eq!(pushed.version_info, "2");
    assert_eq!(server.version(CLUSTER), "2");
    assert_eq!(cluster_names(&pushed.resources), ["a", "c", "d"]);
    assert_ne!(pushed.nonce, first.nonce);
    sotw.ack(&pushed, &[]).await;
    assert!(server.wait_for_ack(T, CLUSTER, "2").await.is_some());
    let requests = server.requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert!(requests[0].response_nonce.is_empty() && !requests[0].is_ack());
}

#[tokio::test]
async fn sotw_nack_is_recorded_and_not_resent() {
    let (server, addr) = start().await;
    server.set(CLUSTER, clusters(&["a"]));
    let mut sotw = Sotw::open(addr).await.unwrap();
    sotw.request(CLUSTER, &[], "", "").await;
    let first = sotw.recv().await;

    sotw.send(DiscoveryRequest {
        type_url: CLUSTER.to_string(),
        version_info: String::new(),
        response_nonce: first.nonce.clone(),
        error_detail: Some(rpc::Status {
            code: 3,
            message: "cluster a: bad lb_policy".to_string(),
            details: Vec::new(),
        }),
        ..Default::default()
    })
    .await;
    let nack = server
        .wait_for(T, |r| r.is_nack())
        .await
        .expect("NACK recorded");
    assert_eq!(
        nack.error,
        Some((3, "cluster a: bad lb_policy".to_string()))
    );
    assert_eq!(nack.response_nonce, first.nonce);
    assert_eq!(server.ack_state(nack.stream, CLUSTER), Some(nack.clone()));

    // Requests on a stream are handled in order: had the NACK caused a re-send, it would
    // arrive before the answer to this listener request.
    sotw.request(LISTENER, &[], "", "").await;
    let next = sotw.recv().await;
    assert_eq!(next.type_url, LISTENER);
    assert_eq!(next.version_info, "0");
    assert!(next.resources.is_empty());

    // A new version is pushed as usual after a NACK.
    server.set(CLUSTER, clusters(&["a", "b"]));
    let pushed = sotw.recv().await;
    assert_eq!(pushed.type_url, CLUSTER);
    assert_eq!(cluster_names(&pushed.resources), ["a", "b"]);
}

#[tokio::test]
async fn sotw_rds_subscription_by_name() {
    let (server, addr) = start().await;
    let route = |name: &str, cluster: &str| {
        res::route_config(
            name,
            vec![res::vhost("svc", &["*"], vec![res::route_to(cluster)])],
        )
    };
    server.set(
        ROUTE,
        vec![route("80", "x"), route("9080", "y"), route("8080", "z")],
    );
    let mut sotw = Sotw::open(addr).await.unwrap();
    sotw.request(ROUTE, &["9080"], "", "").await;
    let first = sotw.recv().await;
    assert_eq!(route_names(&first.resources), ["9080"]);

    // A wider subscription (with a name the server does not know) gets the known names.
    sotw.request(
        ROUTE,
        &["9080", "80", "7777"],
        &first.version_info,
        &first.nonce,
    )
    .await;
    let wider = sotw.recv().await;
    assert_eq!(route_names(&wider.resources), ["80", "9080"]);
    sotw.ack(&wider, &["9080", "80", "7777"]).await;
    assert!(server.wait_for_ack(T, ROUTE, "1").await.is_some());

    // A push carries the subscribed names only.
    server.update(ROUTE, vec![route("8080", "changed")], &[]);
    let pushed = sotw.recv().await;
    assert_eq!(pushed.version_info, "2");
    assert_eq!(route_names(&pushed.resources), ["80", "9080"]);
    let recorded = server
        .wait_for(T, |r| r.resource_names.len() == 3)
        .await
        .unwrap();
    assert_eq!(recorded.resource_names, strings(&["9080", "80", "7777"]));
}

#[tokio::test]
async fn delta_subscribe_update_and_remove() {
    let (server, addr) = start().await;
    server.set(CLUSTER, clusters(&["a", "b", "c"]));
    let eds = |name: &str, port: u16| {
        res::endpoints(name, &[(SocketAddr::from(([10, 77, 0, 2], port)), 1)])
    };
    server.set(ENDPOINT, vec![eds("a", 1), eds("b", 2)]);
    let mut delta = Delta::open(addr).await;

    // Wildcard CDS: everything.
    delta.subscribe(CLUSTER, &[]).await;
    let first = delta.recv().await;
    assert_eq!(first.type_url, CLUSTER);
    assert_eq!(first.system_version_info, "1");
    assert_eq!(delta_names(&first), ["a", "b", "c"]);
    assert!(first.removed_resources.is_empty());
    assert!(first.resources.iter().all(|r| !r.version.is_empty()));
    delta.ack(&first).await;
    let ack = server.wait_for_ack(T, CLUSTER, "1").await.expect("ACK");
    assert_eq!(ack.variant, Variant::Delta);
    assert_eq!(ack.node_id.as_deref(), Some(NODE));

    // Only what changed.
    server.update(CLUSTER, vec![changed_cluster("a")], &[]);
    let update = delta.recv().await;
    assert_eq!(update.system_version_info, "2");
    assert_eq!(delta_names(&update), ["a"]);
    assert_ne!(update.resources[0].version, first.resources[0].version);
    delta.ack(&update).await;

    // Content identical to what the client has: nothing to send. The next message is the
    // answer to an explicit EDS subscription, which gets the subscribed name only.
    server.set(
        CLUSTER,
        vec![
            changed_cluster("a"),
            res::eds_cluster("b"),
            res::eds_cluster("c"),
        ],
    );
    delta.subscribe(ENDPOINT, &["b"]).await;
    let endpoints = delta.recv().await;
    assert_eq!(endpoints.type_url, ENDPOINT);
    assert_eq!(delta_names(&endpoints), ["b"]);
    delta.ack(&endpoints).await;

    // Removal.
    server.update(CLUSTER, Vec::new(), &["b"]);
    let removal = delta.recv().await;
    assert_eq!(removal.type_url, CLUSTER);
    assert!(removal.resources.is_empty());
    assert_eq!(removal.removed_resources, ["b"]);

    // A NACK is recorded with the version it rejects, and nothing is re-sent: the next
    // message answers the following subscription.
    delta
        .send(DeltaDiscoveryRequest {
            type_url: CLUSTER.to_string(),
            response_nonce: removal.nonce.clone(),
            error_detail: Some(rpc::Status {
                code: 13,
                message: "no".to_string(),
                details: Vec::new(),
            }),
            ..Default::default()
        })
        .await;
    delta.subscribe(ENDPOINT, &["a"]).await;
    let more = delta.recv().await;
    assert_eq!(more.type_url, ENDPOINT);
    assert_eq!(delta_names(&more), ["a"]);
    let nack = server.wait_for(T, |r| r.is_nack()).await.unwrap();
    assert_eq!(nack.version_info, removal.system_version_info);
    assert_eq!(nack.error, Some((13, "no".to_string())));
}

#[tokio::test]
async fn delta_reconnect_gets_only_what_changed() {
    let (server, addr) = start().await;
    server.set(CLUSTER, clusters(&["a", "b", "c"]));
    let mut first = Delta::open(addr).await;
    first.subscribe(CLUSTER, &[]).await;
    let got = first.recv().await;
    let has: HashMap<String, String> = got
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    assert_eq!(has.len(), 3);
    drop(first);

    server.update(
        CLUSTER,
        vec![changed_cluster("b"), res::eds_cluster("d")],
        &["c"],
    );
    let mut second = Delta::open(addr).await;
    second
        .send(DeltaDiscoveryRequest {
            node: node(),
            type_url: CLUSTER.to_string(),
            initial_resource_versions: has.clone(),
            ..Default::default()
        })
        .await;
    let resync = second.recv().await;
    assert_eq!(delta_names(&resync), ["b", "d"]);
    assert_eq!(resync.removed_resources, ["c"]);

    let recorded = server
        .wait_for(T, |r| {
            r.stream == 2 && !r.initial_resource_versions.is_empty()
        })
        .await
        .unwrap();
    assert_eq!(recorded.initial_resource_versions, has);
    assert_eq!(server.connections(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_reaches_every_stream() {
    fn shareable<S: Send + Sync + Clone + 'static>(_: &S) {}
    let (server, addr) = start().await;
    shareable(&server);
    server.set(CLUSTER, clusters(&["a"]));
    let mut sotw = Sotw::open(addr).await.unwrap();
    sotw.request(CLUSTER, &[], "", "").await;
    sotw.recv().await;
    let mut delta = Delta::open(addr).await;
    delta.subscribe(CLUSTER, &[]).await;
    delta.recv().await;
    assert_eq!(server.connections(), 2);
    let since = server.requests().len();

    server.update(CLUSTER, vec![res::eds_cluster("b")], &[]);
    let full = sotw.recv().await;
    assert_eq!(cluster_names(&full.resources), ["a", "b"]);
    let incremental = delta.recv().await;
    assert_eq!(delta_names(&incremental), ["b"]);
    sotw.ack(&full, &[]).await;
    delta.ack(&incremental).await;
    for stream in [1, 2] {
        let ack = server
            .wait_for_since(since, T, |r| r.stream == stream && r.is_ack())
            .await
            .expect("both streams ACK");
        assert_eq!(ack.version_info, "2");
        assert_eq!(server.ack_state(stream, CLUSTER), Some(ack));
    }
}

/// Opens a SotW stream and fetches CDS, all of it bounded by `T`.
async fn try_fetch(addr: SocketAddr) -> Result<DiscoveryResponse, String> {
    let attempt = async {
        let mut sotw = Sotw::open(addr).await?;
        sotw.request(CLUSTER, &[], "", "").await;
        match sotw.rx.message().await {
            Ok(Some(response)) => Ok(response),
            Ok(None) => Err("stream ended".to_string()),
            Err(status) => Err(status.to_string()),
        }
    };
    tokio::time::timeout(T, attempt)
        .await
        .unwrap_or_else(|_| Err("timed out".to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_streams_and_resume_accepts_again() {
    let (server, addr) = start().await;
    server.set(CLUSTER, clusters(&["a"]));
    let mut sotw = Sotw::open(addr).await.unwrap();
    sotw.request(CLUSTER, &[], "", "").await;
    sotw.recv().await;
    assert_eq!(server.open_streams(), 1);

    server.stop().await;
    let after = tokio::time::timeout(T, sotw.rx.message())
        .await
        .expect("the stream ends in time");
    assert!(
        !matches!(after, Ok(Some(_))),
        "no more responses: {after:?}"
    );
    assert_eq!(server.open_streams(), 0);
    let refused = try_fetch(addr).await;
    assert!(refused.is_err(), "served while stopped: {refused:?}");

    // Resources are kept; a new stream is served again.
    server.resume().await;
    let again = try_fetch(addr).await.expect("served after resume");
    assert_eq!(cluster_names(&again.resources), ["a"]);
    assert_eq!(again.version_info, "1");
    assert_eq!(server.connections(), 2);
}

#[tokio::test]
async fn unix_socket_speaks_http2_and_is_removed_on_drop() {
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let path = std::env::temp_dir().join(format!("skiff-xds-{}.sock", std::process::id()));
    let server = XdsServer::start_with(Vec::new(), vec![path.clone()]).await;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o777, "any uid may connect");

    let mut conn = tokio::net::UnixStream::connect(&path).await.unwrap();
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut header = [0u8; 9];
    tokio::time::timeout(T, conn.read_exact(&mut header))
        .await
        .expect("an answer in time")
        .unwrap();
    assert_eq!(header[3], 4, "the server's first frame is SETTINGS");

    drop(server);
    assert!(!path.exists());
}

#[tokio::test]
async fn wait_for_is_bounded() {
    let (server, _addr) = start().await;
    let started = std::time::Instant::now();
    assert!(
        server
            .wait_for(Duration::from_millis(100), |_| true)
            .await
            .is_none()
    );
    assert!(started.elapsed() < T);
}
