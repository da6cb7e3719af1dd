//! HTTP through the whole mesh on a real kernel: pod A's app calls the reviews service VIP,
//! pod A's proxy routes by the request (a cookie sends `group=dev` to v2), pod B's proxy
//! takes the connection from skiff-init's inbound rule and hands it to the app; both
//! proxies count the request in `istio_requests_total` with Istio's labels.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use skiff_tests::bench::status_kib;
use skiff_tests::can_run_as_root;
use skiff_tests::mesh::{
    self, Process, app, get, metric, start_proxy, subset_cluster, write_config,
};
use skiff_tests::netns::PodPair;

const VIP: &str = "10.96.0.7";

struct Mesh {
    pair: PodPair,
    dir: PathBuf,
    client_proxy: Process,
    server_proxy: Process,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The route of the seeds' canary rule: `cookie: group=dev` to v2, everyone else to v1.
fn routes() -> String {
    format!(
        "[{{match: {{prefix: /, headers: [{{name: cookie, regex: \".*group=dev.*\"}}]}}, route: {{cluster: \"{}\"}}}}, {{match: {{prefix: /}}, route: {{cluster: \"{}\", timeout: 0s}}}}]",
        subset_cluster("reviews", 9080, "v2"),
        subset_cluster("reviews", 9080, "v1"),
    )
}

fn mesh(tag: &str) -> Mesh {
    let pair = mesh::pod_pair(tag, true);
    // Pod B runs both versions, on two ports.
    app(&pair.peer, 9080, reviews_v1);
    app(&pair.peer, 9082, reviews_v2);
    let dir = std::env::temp_dir().join(format!("skiff-http-{}-{tag}", std::process::id()));
    let clusters = [
        (
            subset_cluster("reviews", 9080, "v1"),
            "10.77.0.2:9080".to_owned(),
        ),
        (
            subset_cluster("reviews", 9080, "v2"),
            "10.77.0.2:9082".to_owned(),
        ),
    ];
    let client = mesh::http_client_config(VIP, 9080, &routes(), &clusters);
    let client_cfg = write_config(&dir, "client.yaml", &client);
    let server_cfg = write_config(
        &dir,
        "server.yaml",
        &mesh::http_server_config(&[9080, 9082]),
    );
    let client_proxy = start_proxy(&pair.pod, &client_cfg, "productpage");
    let server_proxy = start_proxy(&pair.peer, &server_cfg, "reviews");
    Mesh {
        pair,
        dir,
        client_proxy,
        server_proxy,
    }
}

fn reviews_v1(stream: TcpStream) {
    mesh::serve_http(stream, "reviews-v1");
}

fn reviews_v2(stream: TcpStream) {
    mesh::serve_http(stream, "reviews-v2");
}

/// From pod A's app: one HTTP/1.1 request to the reviews VIP with `headers`, and a body of
/// `body_len` bytes streamed in chunks; returns the status line, headers and body.
fn request(mesh: &Mesh, headers: &'static str, body_len: u64) -> String {
    mesh.pair.pod.run(move || {
        let mut stream = TcpStream::connect_timeout(
            &format!("{VIP}:9080").parse().unwrap(),
            Duration::from_secs(5),
        )
        .expect("connect to the VIP");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let method = if body_len > 0 { "POST" } else { "GET" };
        write!(
            stream,
            "{method} /reviews/1 HTTP/1.1\r\nhost: reviews:9080\r\ncontent-length: {body_len}\r\nconnection: close\r\n{headers}\r\n"
        )
        .unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0u64;
        while sent < body_len {
            let n = (body_len - sent).min(chunk.len() as u64) as usize;
            stream.write_all(&chunk[..n]).expect("upload");
            sent += n as u64;
        }
        let mut reply = String::new();
        stream.read_to_string(&mut reply).expect("response");
        reply
    })
}

fn body(reply: &str) -> &str {
    reply.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// Waits until both proxies' metrics satisfy `done`, polling their endpoints; returns them.
fn scrape_until(mesh: &Mesh, done: impl Fn(&str, &str) -> bool) -> (String, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, a) = get(&mesh.pair.pod, 15090, "/stats/prometheus");
        let (_, b) = get(&mesh.pair.peer, 15090, "/stats/prometheus");
        if done(&a, &b) {
            return (a, b);
        }
        assert!(
            Instant::now() < deadline,
            "metrics never matched:\n{a}\n{b}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn http_is_routed_by_cookie_and_counted_by_both_proxies() {
    if !can_run_as_root("http_is_routed_by_cookie_and_counted_by_both_proxies") {
        return;
    }
    let mesh = mesh("http");
    let plain = request(&mesh, "", 0);
    assert!(plain.starts_with("HTTP/1.1 200"), "{plain}");
    assert_eq!(body(&plain), "reviews-v1");
    let dev = request(&mesh, "cookie: user=jason; group=dev\r\n", 0);
    assert_eq!(body(&dev), "reviews-v2");
    let again = request(&mesh, "cookie: group=prod\r\n", 0);
    assert_eq!(body(&again), "reviews-v1");

    let service = "destination_service=\"reviews.demo.svc.cluster.local\"";
    let (a, b) = scrape_until(&mesh, |a, b| {
        metric(a, "istio_requests_total", "reporter=\"source\"") >= 3
            && metric(b, "istio_requests_total", "reporter=\"destination\"") >= 3
    });
    let source = |extra: &str| {
        a.lines()
            .filter(|l| l.starts_with("istio_requests_total{") && l.contains(extra))
            .filter(|l| {
                l.contains("reporter=\"source\"")
                    && l.contains("source_workload=\"productpage\"")
                    && l.contains("source_workload_namespace=\"demo\"")
                    && l.contains(service)
                    && l.contains("request_protocol=\"http\"")
                    && l.contains("response_code=\"200\"")
                    && l.contains("response_flags=\"-\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    assert_eq!(source(""), 3, "pod A counts its three calls:\n{a}");
    let destination = b
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .filter(|l| {
            l.contains("reporter=\"destination\"")
                && l.contains("destination_workload=\"reviews\"")
                && l.contains("destination_workload_namespace=\"demo\"")
                && l.contains("response_code=\"200\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64;
    assert_eq!(destination, 3, "pod B counts them too:\n{b}");
    assert!(
        metric(&a, "istio_request_duration_milliseconds_count", service) >= 3,
        "{a}"
    );
}

#[test]
fn a_64_mib_upload_streams_through_both_proxies_in_bounded_memory() {
    if !can_run_as_root("a_64_mib_upload_streams_through_both_proxies_in_bounded_memory") {
        return;
    }
    let mesh = mesh("httpbig");
    let len: u64 = 64 << 20;
    let reply = request(&mesh, "", len);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply
            .to_ascii_lowercase()
            .contains(&format!("x-body-bytes: {len}")),
        "the app received the whole body: {reply}"
    );
    for (side, process) in [
        ("client", &mesh.client_proxy),
        ("server", &mesh.server_proxy),
    ] {
        let peak = status_kib(process.pid(), "VmHWM:") / 1024;
        println!("{side} proxy peak RSS after 64 MiB: {peak} MiB");
        assert!(
            peak < 48,
            "the {side} proxy peaked at {peak} MiB streaming 64 MiB"
        );
    }
}
