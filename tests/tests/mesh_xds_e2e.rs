//! Both proxies of the mesh configured by a control plane: the test xDS server serves an
//! Istio-shaped configuration (virtualOutbound, virtualInbound, the per-port `0.0.0.0_9080`
//! listener with HCM + RDS, EDS clusters `outbound|9080|v1|reviews...`) over real gRPC to the
//! real `skiff-proxy` processes in two network namespaces with skiff-init's rules, and real
//! traffic flows while it pushes changes, removes endpoints, sends invalid resources and
//! restarts. Every test runs in both ADS variants, delta and state of the world.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use skiff_tests::can_run_as_root;
use skiff_tests::mesh::{self, Process, app, get, start_xds_proxy};
use skiff_tests::netns::PodPair;
use skiff_tests::xds_mesh::{self, V1, V2, peer};
use skiff_tests::xds_resources::{endpoints, http_listener, route_config, route_to, vhost};
use skiff_tests::xds_server::{XdsServer, type_url};

const PATIENCE: Duration = Duration::from_secs(15);

struct Mesh {
    pair: PodPair,
    rt: tokio::runtime::Runtime,
    server: XdsServer,
    client_proxy: Option<Process>,
    server_proxy: Option<Process>,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.client_proxy.take();
        self.server_proxy.take();
    }
}

fn reviews_v1(stream: TcpStream) {
    mesh::serve_http(stream, "reviews-v1");
}

fn reviews_v2(stream: TcpStream) {
    mesh::serve_http(stream, "reviews-v2");
}

fn reviews_v1b(stream: TcpStream) {
    mesh::serve_http(stream, "reviews-v1b");
}

fn mesh(tag: &str, protocol: &str) -> Mesh {
    let pair = mesh::pod_pair(tag, true);
    app(&pair.peer, 9080, reviews_v1);
    app(&pair.peer, 9082, reviews_v2);
    app(&pair.peer, 9083, reviews_v1b);
    // One control plane for both pods: a listening socket keeps the namespace it was bound
    // in, so each pod reaches the server on its own 127.0.0.1:15010.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = xds_mesh::serve(&pair, &rt);
    xds_mesh::configure(&server);
    let xds = xds_mesh::XDS_ADDRESS;
    let client_proxy = Some(start_xds_proxy(
        &pair.pod,
        xds,
        protocol,
        "productpage",
        PodPair::POD_V4.into(),
    ));
    let server_proxy = Some(start_xds_proxy(
        &pair.peer,
        xds,
        protocol,
        "reviews",
        PodPair::PEER_V4.into(),
    ));
    Mesh {
        pair,
        rt,
        server,
        client_proxy,
        server_proxy,
    }
}

/// Waits until pod A's proxy (productpage) has acknowledged the current version of `kind`,
/// among the requests from index `since` on: its ACK follows the new configuration being
/// in force.
fn client_acked(mesh: &Mesh, since: usize, kind: &str) -> bool {
    let version = mesh.server.version(kind);
    mesh.rt
        .block_on(mesh.server.wait_for_since(since, PATIENCE, |r| {
            r.type_url == kind
                && r.is_ack()
                && r.version_info == version
                && r.node_id
                    .as_deref()
                    .is_some_and(|n| n.contains("productpage"))
        }))
        .is_some()
}

/// One HTTP/1.1 request from pod A's app to the reviews VIP; the body of the answer, or
/// the error.
fn call(mesh: &Mesh, cookie: Option<&'static str>) -> Result<String, String> {
    mesh.pair.pod.run(move || {
        let to: SocketAddr = "10.96.0.7:9080".parse().unwrap();
        let mut stream =
            TcpStream::connect_timeout(&to, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let cookie = cookie
            .map(|c| format!("cookie: {c}\r\n"))
            .unwrap_or_default();
        // One write: split writes would wait on Nagle's algorithm.
        let request = format!(
            "GET /reviews/1 HTTP/1.1\r\nhost: reviews:9080\r\nconnection: close\r\n{cookie}\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut reply = String::new();
        stream
            .read_to_string(&mut reply)
            .map_err(|e| e.to_string())?;
        if !reply.starts_with("HTTP/1.1 200") {
            return Err(reply);
        }
        Ok(reply
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default())
    })
}

/// Sends requests on one keep-alive connection until `stop`, returning every answer's body
/// or error.
fn traffic(
    mesh: &Mesh,
    stop: Arc<AtomicBool>,
    answers: std::sync::mpsc::Sender<Result<String, String>>,
) -> std::thread::JoinHandle<Vec<Result<String, String>>> {
    mesh.pair.pod.spawn(move || {
        let mut out = Vec::new();
        let to: SocketAddr = "10.96.0.7:9080".parse().unwrap();
        let Ok(stream) = TcpStream::connect_timeout(&to, Duration::from_secs(5)) else {
            return vec![Err("connect".to_owned())];
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        while !stop.load(Ordering::SeqCst) {
            let answer = keep_alive_get(&mut writer, &mut reader);
            let _ = answers.send(answer.clone());
            out.push(answer);
        }
        out
    })
}

fn keep_alive_get(
    writer: &mut TcpStream,
    reader: &mut BufReader<TcpStream>,
) -> Result<String, String> {
    writer
        .write_all(b"GET /reviews/1 HTTP/1.1\r\nhost: reviews:9080\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut status = String::new();
    reader.read_line(&mut status).map_err(|e| e.to_string())?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).map_err(|e| e.to_string())?;
    if !status.starts_with("HTTP/1.1 200") {
        return Err(status);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn served_by_cookie_routes(protocol: &str, tag: &str) {
    let mesh = mesh(tag, protocol);
    assert_eq!(call(&mesh, None).unwrap(), "reviews-v1");
    assert_eq!(
        call(&mesh, Some("user=jason; group=dev")).unwrap(),
        "reviews-v2"
    );
    // Every type was acknowledged, and the node identified itself as Istio expects.
    for t in [
        type_url::CLUSTER,
        type_url::ENDPOINT,
        type_url::LISTENER,
        type_url::ROUTE,
    ] {
        let version = mesh.server.version(t);
        assert!(
            mesh.rt
                .block_on(mesh.server.wait_for_ack(PATIENCE, t, &version))
                .is_some(),
            "{t} version {version} was not acknowledged"
        );
    }
    let ids: Vec<String> = mesh
        .server
        .requests()
        .into_iter()
        .filter_map(|r| r.node_id)
        .collect();
    assert!(
        ids.iter()
            .any(|id| id
                == "sidecar~10.77.0.1~productpage-7d4f8b9c5-x2k4p.demo~demo.svc.cluster.local"),
        "{ids:?}"
    );
    let (_, dump) = get(&mesh.pair.pod, 15000, "/config_dump");
    assert!(dump.contains("\"xds\""), "{dump}");
    assert!(dump.contains(V1), "{dump}");
}

fn a_route_change_mid_traffic_fails_nothing(protocol: &str, tag: &str) {
    let mesh = mesh(tag, protocol);
    let stop = Arc::new(AtomicBool::new(false));
    let (answers_tx, answers) = std::sync::mpsc::channel();
    let load = traffic(&mesh, stop.clone(), answers_tx);
    // Traffic is flowing on v1 before the change.
    for _ in 0..3 {
        let first = answers.recv_timeout(PATIENCE).expect("traffic flows");
        assert_eq!(first.as_deref(), Ok("reviews-v1"));
    }
    // Everything to v2 now.
    let since = mesh.server.requests().len();
    mesh.server.set(
        type_url::ROUTE,
        vec![route_config(
            "9080",
            vec![vhost(
                "reviews.default.svc.cluster.local:9080",
                &["reviews", "reviews:9080"],
                vec![route_to(V2)],
            )],
        )],
    );
    assert!(
        client_acked(&mesh, since, type_url::ROUTE),
        "the route change was not acknowledged"
    );
    // The open connection moves to v2 on its next requests.
    let moved = (0..1000).find_map(|_| {
        let answer = answers.recv_timeout(PATIENCE).expect("traffic flows");
        (answer.as_deref() == Ok("reviews-v2")).then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    let failures: Vec<String> = load
        .join()
        .unwrap()
        .into_iter()
        .filter_map(Result::err)
        .collect();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert!(moved.is_some(), "the open connection followed the change");
    assert_eq!(call(&mesh, None).unwrap(), "reviews-v2");
}

fn an_endpoint_removed_by_eds_gets_no_new_requests(protocol: &str, tag: &str) {
    let mesh = mesh(tag, protocol);
    let since = mesh.server.requests().len();
    mesh.server.update(
        type_url::ENDPOINT,
        vec![endpoints(V1, &[(peer(9080), 1), (peer(9083), 1)])],
        &[],
    );
    assert!(client_acked(&mesh, since, type_url::ENDPOINT));
    let both: Vec<String> = (0..40).map(|_| call(&mesh, None).unwrap()).collect();
    assert!(both.iter().any(|b| b == "reviews-v1b"), "{both:?}");
    assert!(both.iter().any(|b| b == "reviews-v1"), "{both:?}");
    let since = mesh.server.requests().len();
    mesh.server.update(
        type_url::ENDPOINT,
        vec![endpoints(V1, &[(peer(9080), 1)])],
        &[],
    );
    assert!(client_acked(&mesh, since, type_url::ENDPOINT));
    let after: Vec<String> = (0..40).map(|_| call(&mesh, None).unwrap()).collect();
    assert!(after.iter().all(|b| b == "reviews-v1"), "{after:?}");
}

fn an_invalid_resource_is_nacked_and_the_old_config_serves(protocol: &str, tag: &str) {
    let mesh = mesh(tag, protocol);
    // A listener whose address is not an IP address.
    let (_, mut broken) = http_listener(9081);
    let mut listener: envoy_types::pb::envoy::config::listener::v3::Listener =
        skiff_tests::xds_resources::unpack(&broken).unwrap();
    listener.name = "broken_9081".to_owned();
    if let Some(envoy_types::pb::envoy::config::core::v3::address::Address::SocketAddress(s)) =
        listener.address.as_mut().and_then(|a| a.address.as_mut())
    {
        s.address = "not-an-address".to_owned();
    }
    broken = skiff_tests::xds_resources::pack(&listener);
    mesh.server.update(
        type_url::LISTENER,
        vec![("broken_9081".to_owned(), broken)],
        &[],
    );
    let nack = mesh
        .rt
        .block_on(mesh.server.wait_for(PATIENCE, |r| {
            r.type_url == type_url::LISTENER && r.is_nack()
        }))
        .expect("the invalid listener was NACKed");
    let (_, reason) = nack.error.unwrap();
    assert!(reason.contains("broken_9081"), "{reason}");
    assert!(reason.contains("address"), "{reason}");
    assert_eq!(
        call(&mesh, None).unwrap(),
        "reviews-v1",
        "the old config serves"
    );
    let (_, dump) = get(&mesh.pair.pod, 15000, "/config_dump");
    assert!(dump.contains("NACK"), "{dump}");
    assert!(dump.contains("broken_9081"), "{dump}");
}

fn a_restarted_server_is_reconnected_without_dropping_connections(protocol: &str, tag: &str) {
    let mesh = mesh(tag, protocol);
    let stop = Arc::new(AtomicBool::new(false));
    let (answers_tx, answers) = std::sync::mpsc::channel();
    let load = traffic(&mesh, stop.clone(), answers_tx);
    answers
        .recv_timeout(PATIENCE)
        .expect("traffic flows")
        .unwrap();
    let streams = mesh.server.connections();
    mesh.rt.block_on(mesh.server.stop());
    assert_eq!(
        call(&mesh, None).unwrap(),
        "reviews-v1",
        "serving while disconnected"
    );
    mesh.rt.block_on(mesh.server.resume());
    let reconnected = mesh
        .rt
        .block_on(mesh.server.wait_for(PATIENCE, |r| {
            r.stream > streams
                && r.type_url == type_url::CLUSTER
                && r.node_id
                    .as_deref()
                    .is_some_and(|n| n.contains("productpage"))
        }))
        .expect("the client's proxy reconnected");
    if protocol == "delta" {
        assert!(
            !reconnected.initial_resource_versions.is_empty(),
            "delta resumes with the versions it holds"
        );
    } else {
        assert!(
            !reconnected.version_info.is_empty(),
            "SotW resumes from its version"
        );
    }
    // A change after the reconnect takes effect.
    let since = mesh.server.requests().len();
    mesh.server.update(
        type_url::ENDPOINT,
        vec![endpoints(V1, &[(peer(9083), 1)])],
        &[],
    );
    assert!(client_acked(&mesh, since, type_url::ENDPOINT));
    stop.store(true, Ordering::SeqCst);
    let failures: Vec<String> = load
        .join()
        .unwrap()
        .into_iter()
        .filter_map(Result::err)
        .collect();
    assert!(
        failures.is_empty(),
        "the open connection survived: {failures:?}"
    );
    assert_eq!(call(&mesh, None).unwrap(), "reviews-v1b");
}

macro_rules! both_variants {
    ($($name:ident: $tag:literal,)*) => {
        mod delta {
            $(
                #[test]
                fn $name() {
                    if !super::can_run_as_root(stringify!($name)) {
                        return;
                    }
                    super::$name("delta", concat!($tag, "d"));
                }
            )*
        }
        mod sotw {
            $(
                #[test]
                fn $name() {
                    if !super::can_run_as_root(stringify!($name)) {
                        return;
                    }
                    super::$name("sotw", concat!($tag, "s"));
                }
            )*
        }
    };
}

both_variants! {
    served_by_cookie_routes: "xa",
    a_route_change_mid_traffic_fails_nothing: "xb",
    an_endpoint_removed_by_eds_gets_no_new_requests: "xc",
    an_invalid_resource_is_nacked_and_the_old_config_serves: "xe",
    a_restarted_server_is_reconnected_without_dropping_connections: "xf",
}
