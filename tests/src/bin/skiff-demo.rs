//! The main job: the whole Skiff path on this machine. Injects the example app with
//! `skiff-injector inject`, creates two pod namespaces, applies `skiff-init` with the
//! injected arguments, starts a control plane (the test xDS server, serving what istiod
//! would send) and `skiff-proxy` in each pod as uid 1337 under it, then sends HTTP requests
//! from productpage to the reviews service through both proxies: first with the canary rule
//! (`cookie: group=dev` → v2), then after pushing a 50/50 split mid-run. Prints what
//! happened, and removes everything again. Needs root (network namespaces, iptables).
//!
//!   skiff-demo [REQUESTS]      (default 300)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use skiff_tests::bench::pct;
use skiff_tests::mesh::{app, examples_dir, get, injected_init_args, serve_http, start_xds_proxy};
use skiff_tests::netns::PodPair;
use skiff_tests::xds_mesh::{self, V1, V2};
use skiff_tests::xds_resources::weighted_route;
use skiff_tests::xds_server::type_url;

fn reviews_v1(stream: TcpStream) {
    serve_http(stream, "reviews-v1");
}

fn reviews_v2(stream: TcpStream) {
    serve_http(stream, "reviews-v2");
}

/// Sends `count` requests on one keep-alive connection, every third with the dev cookie;
/// returns (answer body, latency) per request, or the first error.
fn requests(pods: &PodPair, count: usize) -> Result<Vec<(String, bool, Duration)>, String> {
    pods.pod.run(move || {
        let vip: SocketAddr = "10.96.0.7:9080".parse().unwrap();
        let stream =
            TcpStream::connect_timeout(&vip, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream);
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let dev = i % 3 == 0;
            let cookie = if dev {
                "cookie: user=jason; group=dev\r\n"
            } else {
                ""
            };
            let started = Instant::now();
            // One write per request: split writes would meet Nagle's algorithm.
            let request =
                format!("GET /reviews/{i} HTTP/1.1\r\nhost: reviews:9080\r\n{cookie}\r\n");
            writer
                .write_all(request.as_bytes())
                .map_err(|e| e.to_string())?;
            let mut line = String::new();
            reader.read_line(&mut line).map_err(|e| e.to_string())?;
            if !line.starts_with("HTTP/1.1 200") {
                return Err(format!("request {i}: {}", line.trim()));
            }
            let mut length = 0;
            loop {
                line.clear();
                reader.read_line(&mut line).map_err(|e| e.to_string())?;
                let header = line.trim_end();
                if header.is_empty() {
                    break;
                }
                if let Some((k, v)) = header.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body).map_err(|e| e.to_string())?;
            out.push((
                String::from_utf8_lossy(&body).into_owned(),
                dev,
                started.elapsed(),
            ));
        }
        Ok(out)
    })
}

fn report(phase: &str, answers: &[(String, bool, Duration)]) {
    let count = |dev: bool, body: &str| {
        answers
            .iter()
            .filter(|(b, d, _)| *d == dev && b == body)
            .count()
    };
    let mut latencies: Vec<Duration> = answers.iter().map(|(_, _, l)| *l).collect();
    latencies.sort();
    println!("== {phase}: {} requests, all answered 200", answers.len());
    println!(
        "   with cookie group=dev: v1 {}, v2 {};  without: v1 {}, v2 {}",
        count(true, "reviews-v1"),
        count(true, "reviews-v2"),
        count(false, "reviews-v1"),
        count(false, "reviews-v2")
    );
    println!(
        "   latency (keep-alive request through both proxies): p50 {:?}, p90 {:?}, p99 {:?}",
        pct(&latencies, 0.50),
        pct(&latencies, 0.90),
        pct(&latencies, 0.99)
    );
}

fn main() {
    let total: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300)
        .max(2);
    if !skiff_tests::can_run_as_root("skiff-demo") {
        std::process::exit(1);
    }
    let manifest = examples_dir().join("reviews.yaml");
    println!("== skiff-injector inject -f {}", manifest.display());
    println!(
        "istio-init args (from the injected YAML): {}",
        injected_init_args(&manifest, "productpage").join(" ")
    );
    let pods = skiff_tests::mesh::pod_pair("demo", true);
    println!(
        "== pods: productpage {} (netns {}), reviews {} (netns {}); skiff-init applied in both",
        PodPair::POD_V4,
        pods.pod.name(),
        PodPair::PEER_V4,
        pods.peer.name()
    );
    app(&pods.peer, 9080, reviews_v1);
    app(&pods.peer, 9082, reviews_v2);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = xds_mesh::serve(&pods, &rt);
    xds_mesh::configure(&server);
    println!(
        "== control plane at {} in each pod: virtualOutbound, virtualInbound, 0.0.0.0_9080 with RDS 9080, EDS clusters {V1} and {V2}",
        xds_mesh::XDS_ADDRESS
    );
    let client = start_xds_proxy(
        &pods.pod,
        xds_mesh::XDS_ADDRESS,
        "delta",
        "productpage",
        PodPair::POD_V4.into(),
    );
    let server_proxy = start_xds_proxy(
        &pods.peer,
        xds_mesh::XDS_ADDRESS,
        "delta",
        "reviews",
        PodPair::PEER_V4.into(),
    );
    println!("== skiff-proxy ready in both pods (uid 1337), configured over delta xDS");

    let first = requests(&pods, total / 2);
    let mut failed = first.is_err();
    match &first {
        Ok(answers) => report("canary rule (cookie group=dev → v2, else v1)", answers),
        Err(e) => println!("== canary phase failed: {e}"),
    }
    let since = server.requests().len();
    server.set(
        type_url::ROUTE,
        vec![xds_mesh::reviews_routes(vec![weighted_route(&[
            (V1, 50),
            (V2, 50),
        ])])],
    );
    let version = server.version(type_url::ROUTE);
    let applied = rt.block_on(server.wait_for_since(since, Duration::from_secs(10), |r| {
        r.type_url == type_url::ROUTE
            && r.is_ack()
            && r.version_info == version
            && r.node_id
                .as_deref()
                .is_some_and(|n| n.contains("productpage"))
    }));
    println!(
        "== pushed RDS 9080 version {version}: 50/50 between v1 and v2 ({})",
        if applied.is_some() {
            "ACKed by productpage's proxy"
        } else {
            "not ACKed!"
        }
    );
    failed |= applied.is_none();
    let second = requests(&pods, total - total / 2);
    failed |= second.is_err();
    match &second {
        Ok(answers) => report("after the push (50/50 split, same connection)", answers),
        Err(e) => println!("== split phase failed: {e}"),
    }
    for (name, pod) in [("productpage", &pods.pod), ("reviews", &pods.peer)] {
        let (_, text) = get(pod, 15090, "/stats/prometheus");
        println!("== {name}'s proxy counters (:15090/stats/prometheus)");
        for line in text.lines() {
            if (line.starts_with("istio_requests_total")
                || line.starts_with("skiff_xds_acks_total"))
                && !line.starts_with('#')
            {
                println!("  {line}");
            }
        }
    }
    drop(client);
    drop(server_proxy);
    drop(server);
    drop(pods);
    println!("== cleaned up (namespaces and processes removed)");
    if failed {
        std::process::exit(1);
    }
}
