//! Benchmark (not a test): small HTTP/1.1 requests through a Skiff proxy pair (client pod →
//! outbound skiff-proxy routing by its route table → inbound skiff-proxy → server app, with
//! skiff-init's real rules) against the same requests sent directly between two namespaces
//! without rules or proxies, in the same run, interleaved. Closed loop: each of CONNECTIONS
//! keep-alive connections sends its next request when the previous answer is in.
//! Reports requests/s and latency percentiles, and the ratios pair / direct. Needs root.
//! Usage: skiff-bench-http [REQUESTS_PER_ROUND] [CONNECTIONS] [ROUNDS]   (20000 4 3)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use skiff_tests::bench::{median, pct};
use skiff_tests::mesh::{
    app, http_client_config, http_server_config, pod_pair, serve_http, start_proxy, subset_cluster,
    write_config,
};
use skiff_tests::netns::{Netns, PodPair};

fn reviews(stream: TcpStream) {
    serve_http(stream, "reviews-v1 says hello");
}

/// `per_connection` GETs on each of `connections` keep-alive connections at once; returns
/// every request's latency and the wall time of the whole batch.
fn load(
    pod: &Netns,
    to: SocketAddr,
    connections: usize,
    per_connection: usize,
) -> (Vec<Duration>, Duration) {
    pod.run(move || {
        let started = Instant::now();
        let workers: Vec<_> = (0..connections)
            .map(|_| std::thread::spawn(move || one_connection(to, per_connection)))
            .collect();
        let mut all = Vec::with_capacity(connections * per_connection);
        for w in workers {
            all.extend(w.join().expect("client thread"));
        }
        (all, started.elapsed())
    })
}

fn one_connection(to: SocketAddr, count: usize) -> Vec<Duration> {
    let stream = TcpStream::connect(to).expect("connect");
    stream.set_nodelay(true).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut out = Vec::with_capacity(count);
    let mut line = String::new();
    let mut body = Vec::new();
    for _ in 0..count {
        let started = Instant::now();
        writer
            .write_all(
                b"GET /reviews/1 HTTP/1.1\r\nhost: reviews:9080\r\nuser-agent: skiff-bench\r\n\r\n",
            )
            .unwrap();
        let mut length = 0usize;
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(
            line.starts_with("HTTP/1.1 200"),
            "unexpected answer {line:?}"
        );
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap();
            }
        }
        body.resize(length, 0);
        reader.read_exact(&mut body).unwrap();
        out.push(started.elapsed());
    }
    out
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let requests = args.first().copied().unwrap_or(20_000);
    let connections = args.get(1).copied().unwrap_or(4).max(1);
    let rounds = args.get(2).copied().unwrap_or(3).max(1);
    if !skiff_tests::can_run_as_root("skiff-bench-http") {
        std::process::exit(1);
    }
    let mesh = pod_pair("hmesh", true);
    let direct = pod_pair("hdirect", false);
    app(&mesh.peer, 9080, reviews);
    app(&direct.peer, 9080, reviews);
    let dir = std::env::temp_dir().join(format!("skiff-bench-http-{}", std::process::id()));
    let cluster = subset_cluster("reviews", 9080, "v1");
    let routes = format!("[{{prefix: /, cluster: \"{cluster}\"}}]");
    let client_cfg = http_client_config(
        "10.96.0.7",
        9080,
        &routes,
        &[(cluster.clone(), "10.77.0.2:9080".to_owned())],
    );
    let _client = start_proxy(
        &mesh.pod,
        &write_config(&dir, "client.yaml", &client_cfg),
        "productpage",
    );
    let _server = start_proxy(
        &mesh.peer,
        &write_config(&dir, "server.yaml", &http_server_config(&[9080])),
        "reviews",
    );

    let via_mesh: SocketAddr = "10.96.0.7:9080".parse().unwrap();
    let via_direct = SocketAddr::from((PodPair::PEER_V4, 9080));
    let per_connection = requests / connections;
    // One short warm-up of each path (connection pools, page cache), not counted.
    load(&mesh.pod, via_mesh, connections, 200);
    load(&direct.pod, via_direct, connections, 200);
    let (mut mesh_lat, mut direct_lat) = (Vec::new(), Vec::new());
    let (mut mesh_rps, mut direct_rps) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (lat, took) = load(&mesh.pod, via_mesh, connections, per_connection);
        mesh_rps.push(lat.len() as f64 / took.as_secs_f64());
        mesh_lat.extend(lat);
        let (lat, took) = load(&direct.pod, via_direct, connections, per_connection);
        direct_rps.push(lat.len() as f64 / took.as_secs_f64());
        direct_lat.extend(lat);
    }
    mesh_lat.sort();
    direct_lat.sort();
    let (mr, dr) = (median(&mut mesh_rps), median(&mut direct_rps));
    println!(
        "small HTTP/1.1 GETs (~90 B request, 21 B body), {connections} keep-alive connections, closed loop, {} requests per round, {rounds} interleaved rounds",
        per_connection * connections
    );
    println!("| path | requests/s (median round) | p50 | p99 |");
    println!("|---|---|---|---|");
    for (name, rps, lat) in [("direct", dr, &direct_lat), ("skiff pair", mr, &mesh_lat)] {
        println!(
            "| {name} | {rps:.0} | {:.1} µs | {:.1} µs |",
            pct(lat, 0.5).as_secs_f64() * 1e6,
            pct(lat, 0.99).as_secs_f64() * 1e6
        );
    }
    println!(
        "skiff pair / direct: requests/s {:.2}x, p50 {:.2}x, p99 {:.2}x",
        mr / dr,
        pct(&mesh_lat, 0.5).as_secs_f64() / pct(&direct_lat, 0.5).as_secs_f64(),
        pct(&mesh_lat, 0.99).as_secs_f64() / pct(&direct_lat, 0.99).as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
