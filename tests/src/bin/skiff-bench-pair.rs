//! Benchmark (not a test): one TCP connection through a Skiff proxy pair (client pod →
//! outbound skiff-proxy → inbound skiff-proxy → server pod, with skiff-init's real rules)
//! against the direct path (the same two namespaces without rules or proxies), in the same
//! run, interleaved. Reports bulk throughput of one stream, request/response latency
//! percentiles on one connection, and the proxies' resident memory idle and after load.
//! Needs root.  Usage: skiff-bench-pair [MEGABYTES] [ROUND_TRIPS] [ROUNDS]   (256 20000 3)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use skiff_tests::bench::{median, pct, status_kib};
use skiff_tests::mesh::{
    Service, client_config, pod_pair, server_config, start_proxy, write_config,
};
use skiff_tests::netns::{Netns, PodPair};

const MESSAGE: usize = 64;

/// The server app: the first byte says what to do — `B`: read to EOF and answer the byte
/// count (bulk); `R`: echo fixed-size messages until EOF (round trips).
fn serve(pod: &Netns) {
    let listener = pod
        .run(|| TcpListener::bind("0.0.0.0:9080"))
        .expect("bench server");
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let mut kind = [0u8; 1];
                if s.read_exact(&mut kind).is_err() {
                    return;
                }
                if kind[0] == b'B' {
                    let mut buf = vec![0u8; 256 * 1024];
                    let mut total = 0u64;
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        total += n as u64;
                    }
                    let _ = s.write_all(&total.to_be_bytes());
                } else {
                    let mut buf = [0u8; MESSAGE];
                    while s.read_exact(&mut buf).is_ok() {
                        if s.write_all(&buf).is_err() {
                            break;
                        }
                    }
                }
            });
        }
    });
}

fn bulk(pod: &Netns, to: SocketAddr, megabytes: usize) -> f64 {
    pod.run(move || {
        let mut s = TcpStream::connect(to).expect("connect");
        let chunk = vec![0x5au8; 64 * 1024];
        let started = Instant::now();
        s.write_all(b"B").unwrap();
        for _ in 0..megabytes * 16 {
            s.write_all(&chunk).unwrap();
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut ack = [0u8; 8];
        s.read_exact(&mut ack).unwrap();
        assert_eq!(
            u64::from_be_bytes(ack),
            (megabytes * 1024 * 1024) as u64,
            "every byte arrived"
        );
        (megabytes as f64) / started.elapsed().as_secs_f64()
    })
}

fn round_trips(pod: &Netns, to: SocketAddr, count: usize) -> Vec<Duration> {
    pod.run(move || {
        let mut s = TcpStream::connect(to).expect("connect");
        s.set_nodelay(true).unwrap();
        s.write_all(b"R").unwrap();
        let msg = [7u8; MESSAGE];
        let mut buf = [0u8; MESSAGE];
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let started = Instant::now();
            s.write_all(&msg).unwrap();
            s.read_exact(&mut buf).unwrap();
            out.push(started.elapsed());
        }
        out
    })
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let megabytes = args.first().copied().unwrap_or(256);
    let trips = args.get(1).copied().unwrap_or(20_000);
    let rounds = args.get(2).copied().unwrap_or(3);
    if !skiff_tests::can_run_as_root("skiff-bench-pair") {
        std::process::exit(1);
    }
    let mesh = pod_pair("bmesh", true);
    let direct = pod_pair("bdirect", false);
    serve(&mesh.peer);
    serve(&direct.peer);
    let dir = std::env::temp_dir().join(format!("skiff-bench-{}", std::process::id()));
    let client = start_proxy(
        &mesh.pod,
        &write_config(
            &dir,
            "client.yaml",
            &client_config(&[Service {
                name: "bench",
                vip: "10.96.0.7",
                port: 9080,
                endpoint: "10.77.0.2",
            }]),
        ),
        "productpage",
    );
    let server = start_proxy(
        &mesh.peer,
        &write_config(&dir, "server.yaml", &server_config(&[9080])),
        "reviews",
    );
    let idle_rss = (
        status_kib(client.pid(), "VmRSS:"),
        status_kib(server.pid(), "VmRSS:"),
    );

    let via_mesh: SocketAddr = "10.96.0.7:9080".parse().unwrap();
    let via_direct: SocketAddr = SocketAddr::from((PodPair::PEER_V4, 9080));
    let (mut mesh_tput, mut direct_tput) = (Vec::new(), Vec::new());
    let (mut mesh_lat, mut direct_lat) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        mesh_tput.push(bulk(&mesh.pod, via_mesh, megabytes));
        direct_tput.push(bulk(&direct.pod, via_direct, megabytes));
        mesh_lat.extend(round_trips(&mesh.pod, via_mesh, trips));
        direct_lat.extend(round_trips(&direct.pod, via_direct, trips));
    }
    let loaded_rss = (
        status_kib(client.pid(), "VmRSS:"),
        status_kib(server.pid(), "VmRSS:"),
    );
    mesh_lat.sort();
    direct_lat.sort();
    let (mt, dt) = (median(&mut mesh_tput), median(&mut direct_tput));
    println!(
        "one TCP connection, {rounds} interleaved rounds; bulk {megabytes} MiB per run, {trips} round trips of {MESSAGE} B per run"
    );
    println!("| path | throughput MiB/s (runs) | p50 | p99 |");
    println!("|---|---|---|---|");
    for (name, tput, lat) in [
        ("direct", &direct_tput, &direct_lat),
        ("skiff pair", &mesh_tput, &mesh_lat),
    ] {
        println!(
            "| {name} | {} | {:.1} µs | {:.1} µs |",
            tput.iter()
                .map(|t| format!("{t:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            pct(lat, 0.5).as_secs_f64() * 1e6,
            pct(lat, 0.99).as_secs_f64() * 1e6
        );
    }
    println!(
        "skiff pair / direct: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x",
        mt / dt,
        pct(&mesh_lat, 0.5).as_secs_f64() / pct(&direct_lat, 0.5).as_secs_f64(),
        pct(&mesh_lat, 0.99).as_secs_f64() / pct(&direct_lat, 0.99).as_secs_f64()
    );
    println!(
        "proxy RSS: idle {} KiB / {} KiB (client / server pod), after the runs {} KiB / {} KiB",
        idle_rss.0, idle_rss.1, loaded_rss.0, loaded_rss.1
    );
    drop(client);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
