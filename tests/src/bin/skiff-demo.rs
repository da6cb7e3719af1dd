//! The main job: the whole Skiff path on this machine. Injects the example app with
//! `skiff-injector inject`, creates two pod namespaces, applies `skiff-init` with the
//! injected arguments, starts `skiff-proxy` in each pod as uid 1337 and the apps, sends
//! requests from one pod to the other's service address through both proxies, prints what
//! happened, and removes everything again. Needs root (network namespaces, iptables).
//!
//!   skiff-demo [REQUESTS]      (default 300)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use skiff_tests::mesh::{
    Service, client_config, examples_dir, injected_init_args, run_init, server_config, start_proxy,
    write_config,
};
use skiff_tests::netns::PodPair;

fn main() {
    let requests: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    if !skiff_tests::can_run_as_root("skiff-demo") {
        std::process::exit(1);
    }
    let manifest = examples_dir().join("reviews.yaml");
    println!("== skiff-injector inject -f {}", manifest.display());
    let client_args = injected_init_args(&manifest, "productpage");
    let server_args = injected_init_args(&manifest, "reviews");
    println!(
        "istio-init args (from the injected YAML): {}",
        client_args.join(" ")
    );

    let pods = PodPair::new("demo").expect("create the pod namespaces");
    for ns in [&pods.pod, &pods.peer] {
        ns.ip(&["route", "add", "default", "dev", "eth0"])
            .expect("default route");
    }
    println!(
        "== pods: productpage {} (netns {}), reviews {} (netns {})",
        PodPair::POD_V4,
        pods.pod.name(),
        PodPair::PEER_V4,
        pods.peer.name()
    );
    run_init(&pods.pod, &client_args);
    run_init(&pods.peer, &server_args);
    println!("== skiff-init applied in both pods");

    let listener = pods
        .peer
        .run(|| TcpListener::bind("0.0.0.0:9080"))
        .expect("reviews app");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 256];
                if let Ok(n) = stream.read(&mut buf) {
                    let _ = stream.write_all(&buf[..n]);
                }
            });
        }
    });
    let dir = std::env::temp_dir().join(format!("skiff-demo-{}", std::process::id()));
    let client = start_proxy(
        &pods.pod,
        &write_config(
            &dir,
            "client.yaml",
            &client_config(&[Service {
                name: "reviews",
                vip: "10.96.0.7",
                port: 9080,
                endpoint: "10.77.0.2",
            }]),
        ),
        "productpage",
    );
    let server = start_proxy(
        &pods.peer,
        &write_config(&dir, "server.yaml", &server_config(&[9080])),
        "reviews",
    );
    println!("== skiff-proxy ready in both pods (uid 1337)");

    let vip: SocketAddr = "10.96.0.7:9080".parse().unwrap();
    let (latencies, failures) = pods.pod.run(move || {
        let mut latencies = Vec::with_capacity(requests);
        let mut failures = 0;
        for i in 0..requests {
            let started = Instant::now();
            let ok = (|| -> std::io::Result<bool> {
                let mut s = TcpStream::connect_timeout(&vip, Duration::from_secs(2))?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                let message = format!("request {i}");
                s.write_all(message.as_bytes())?;
                let mut reply = vec![0u8; message.len()];
                s.read_exact(&mut reply)?;
                Ok(reply == message.as_bytes())
            })();
            match ok {
                Ok(true) => latencies.push(started.elapsed()),
                _ => failures += 1,
            }
        }
        (latencies, failures)
    });
    let mut sorted = latencies.clone();
    sorted.sort();
    let pct = |p: f64| {
        sorted
            .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "== {requests} requests from productpage to reviews (10.96.0.7:9080, a VIP that exists nowhere)"
    );
    println!("succeeded: {}, failed: {failures}", latencies.len());
    println!(
        "latency (new connection + round trip through both proxies): p50 {:?}, p90 {:?}, p99 {:?}, max {:?}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        sorted.last().copied().unwrap_or_default()
    );
    for (name, pod) in [("productpage", &pods.pod), ("reviews", &pods.peer)] {
        let text = pod.run(|| {
            let mut s = TcpStream::connect("127.0.0.1:15090").ok()?;
            s.write_all(b"GET /stats/prometheus HTTP/1.0\r\n\r\n")
                .ok()?;
            let mut text = String::new();
            s.read_to_string(&mut text).ok()?;
            Some(text)
        });
        println!("== {name}'s proxy counters (:15090/stats/prometheus)");
        for line in text.unwrap_or_default().lines() {
            if line.starts_with("istio_tcp_") || line.starts_with("skiff_proxy_connection_errors") {
                println!("  {line}");
            }
        }
    }
    drop(client);
    drop(server);
    drop(pods);
    let _ = std::fs::remove_dir_all(&dir);
    println!("== cleaned up (namespaces and processes removed)");
    if failures > 0 {
        std::process::exit(1);
    }
}
