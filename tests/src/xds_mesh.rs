//! The demo mesh under the test control plane: one xDS server reachable from both pods,
//! and the Istio-shaped configuration of the reviews service (v1 and v2 in the peer pod,
//! the seeds' canary rule), shared by the end-to-end tests and the demo.

use std::net::SocketAddr;

use crate::netns::PodPair;
use crate::xds_resources::{
    cookie_route, eds_cluster, endpoints, http_listener, passthrough_clusters, route_config,
    route_to, static_inbound_cluster, vhost, virtual_inbound, virtual_outbound,
};
use crate::xds_server::{XdsServer, type_url};

pub const V1: &str = "outbound|9080|v1|reviews.default.svc.cluster.local";
pub const V2: &str = "outbound|9080|v2|reviews.default.svc.cluster.local";
/// Where each pod reaches the control plane.
pub const XDS_ADDRESS: &str = "http://127.0.0.1:15010";

/// An address in the peer pod.
pub fn peer(port: u16) -> SocketAddr {
    SocketAddr::from((PodPair::PEER_V4, port))
}

/// Starts the xDS server on 127.0.0.1:15010 inside both pods (a listening socket keeps the
/// namespace it was bound in), on `rt`.
pub fn serve(pair: &PodPair, rt: &tokio::runtime::Runtime) -> XdsServer {
    let listeners: Vec<std::net::TcpListener> = [&pair.pod, &pair.peer]
        .into_iter()
        .map(|ns| {
            ns.run(|| std::net::TcpListener::bind("127.0.0.1:15010"))
                .expect("xDS listener")
        })
        .collect();
    rt.block_on(XdsServer::start(listeners))
}

/// The route table "9080" with `routes` for the reviews service's names.
pub fn reviews_routes(
    routes: Vec<envoy_types::pb::envoy::config::route::v3::Route>,
) -> (String, envoy_types::pb::google::protobuf::Any) {
    route_config(
        "9080",
        vec![vhost(
            "reviews.default.svc.cluster.local:9080",
            &["reviews", "reviews:9080", "10.96.0.7", "10.96.0.7:9080"],
            routes,
        )],
    )
}

/// The seeds' canary rule: `cookie: group=dev` to v2, everyone else to v1.
pub fn canary_routes() -> (String, envoy_types::pb::google::protobuf::Any) {
    reviews_routes(vec![cookie_route(".*group=dev.*", V2), route_to(V1)])
}

/// What both proxies get (the server serves one configuration to every node): the client
/// pod uses the outbound part, the server pod the inbound part. v1 is the app on the peer's
/// 9080, v2 on 9082; 9083 is there for tests that add an endpoint.
pub fn configure(server: &XdsServer) {
    let mut clusters = vec![
        eds_cluster(V1),
        eds_cluster(V2),
        static_inbound_cluster(9080),
        static_inbound_cluster(9082),
        static_inbound_cluster(9083),
    ];
    clusters.extend(passthrough_clusters());
    server.set(type_url::CLUSTER, clusters);
    server.set(
        type_url::ENDPOINT,
        vec![
            endpoints(V1, &[(peer(9080), 1)]),
            endpoints(V2, &[(peer(9082), 1)]),
        ],
    );
    server.set(
        type_url::LISTENER,
        vec![
            virtual_outbound(),
            virtual_inbound(&[9080, 9082, 9083]),
            http_listener(9080),
        ],
    );
    server.set(type_url::ROUTE, vec![canary_routes()]);
}
