//! TLS that Skiff records but does not speak yet is never replaced by plaintext: a chain
//! that terminates TLS closes its connections, a cluster that requires TLS is not dialled.

use std::sync::Arc;

use skiff_proxy::snapshot::{DownstreamTls, UpstreamTls, UpstreamTransport};

use crate::harness::*;

#[tokio::test]
async fn a_cluster_that_requires_tls_is_never_sent_plaintext() {
    let app = Upstream::named("app").await;
    let proxy = proxy_with(
        "routes: [{prefix: /, cluster: app}]",
        "- {name: app, endpoints: [\"{app}\"]}",
        &[("app", app.addr)],
        |s| {
            let cluster = Arc::get_mut(s.clusters.get_mut("app").unwrap()).unwrap();
            cluster.transport = UpstreamTransport::Tls(UpstreamTls {
                sni: Some("outbound_.80_._.app.default.svc.cluster.local".into()),
                ..UpstreamTls::default()
            });
        },
    )
    .await;
    let reply = Client::h1(proxy.addr).await.get("app", "/", &[]).await;
    assert_eq!(reply.status, 503);
    assert_eq!(app.requests(), 0, "nothing reached the app in plaintext");
    let reported = proxy.recorder.wait_for(1).await;
    assert_eq!(reported[0].outcome.flags.to_string(), "UF");
}

#[tokio::test]
async fn a_chain_that_terminates_tls_is_never_served_plaintext() {
    let app = Upstream::named("app").await;
    let proxy = proxy_with(
        "routes: [{prefix: /, cluster: app}]",
        "- {name: app, endpoints: [\"{app}\"]}",
        &[("app", app.addr)],
        |s| {
            let listener = Arc::get_mut(&mut s.listeners[0]).unwrap();
            listener.default_chain.as_mut().unwrap().tls = Some(DownstreamTls {
                require_client_certificate: true,
                ..DownstreamTls::default()
            });
        },
    )
    .await;
    let mut client = Client::h1(proxy.addr).await;
    let answer = client
        .request("GET", "app", "/", &[], Default::default())
        .await;
    assert!(answer.is_err(), "the connection is closed: {answer:?}");
    assert_eq!(app.requests(), 0);
}
