//! Benchmark (not a test) of the admission webhook: reviews per second at full load, and
//! p50/p99 latency at a fixed rate, over TLS with keep-alive — for Skiff's `/inject` and, in
//! the same run, for a trivial axum TLS handler that returns a fixed answer (the baseline:
//! the cost of TLS, HTTP and the client). Runs alternate A B A B to cancel machine drift.
//!
//!   cargo bench -p skiff-injector --bench webhook [-- SECONDS RATE]   (defaults: 3 s, 500/s)
//!
//! The fixed-rate phase is open-loop: each request has an intended start time, and its
//! latency counts from then, so a stalled server cannot hide its queue (no coordinated
//! omission).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use skiff_injector::metrics::Metrics;
use skiff_injector::serve::{self, AppState};
use skiff_injector::store::ConfigStore;
use skiff_injector::tls::ReloadingCert;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};

const CONNECTIONS: usize = 8;

fn review() -> Vec<u8> {
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "reviews-v2-5d8f7b-",
                     "labels": {"app": "reviews", "version": "v2", "pod-template-hash": "5d8f7b"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "reviews-v2-5d8f7b",
                                          "uid": "3f1c", "controller": true}]},
        "spec": {"containers": [{"name": "reviews", "image": "reviews:v2", "ports": [{"containerPort": 9080}],
                                 "readinessProbe": {"httpGet": {"path": "/health", "port": 9080}}}]}
    });
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "bench", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "namespace": "bookinfo", "operation": "CREATE", "object": pod}
    }))
    .unwrap()
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr, ca_pem: &str) -> Sender {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            ServerName::try_from("skiff-injector.bench.svc").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn send(sender: &mut Sender, body: &Bytes) {
    let req = hyper::Request::post("/inject")
        .header("content-type", "application/json")
        .header("host", "skiff-injector.bench.svc")
        .body(Full::new(body.clone()))
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
}

/// Closed loop: every connection sends back to back for `duration`; returns reviews/s.
async fn throughput(addr: SocketAddr, ca: &str, body: &Bytes, duration: Duration) -> f64 {
    let end = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut sender = connect(addr, ca).await;
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < end {
                send(&mut sender, &body).await;
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total as f64 / duration.as_secs_f64()
}

/// Open loop at `rate` per second: returns sorted latencies (from the intended start).
async fn fixed_rate(
    addr: SocketAddr,
    ca: &str,
    body: &Bytes,
    rate: f64,
    duration: Duration,
) -> Vec<Duration> {
    let (pool_tx, pool_rx) = async_pool(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        pool_tx.send(connect(addr, ca).await).await.unwrap();
    }
    let count = (rate * duration.as_secs_f64()) as usize;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(intended.into()).await;
        let (pool_tx, pool_rx, body) = (pool_tx.clone(), pool_rx.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut sender = pool_rx.lock().await.recv().await.unwrap();
            send(&mut sender, &body).await;
            pool_tx.send(sender).await.unwrap();
            intended.elapsed()
        }));
    }
    let mut latencies = Vec::with_capacity(count);
    for t in tasks {
        latencies.push(t.await.unwrap());
    }
    latencies.sort();
    latencies
}

type Pool = (
    tokio::sync::mpsc::Sender<Sender>,
    Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Sender>>>,
);

fn async_pool(size: usize) -> Pool {
    let (tx, rx) = tokio::sync::mpsc::channel(size);
    (tx, Arc::new(tokio::sync::Mutex::new(rx)))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Starts a TLS server for `app` on its own single-threaded runtime (one core's worth).
fn start_server(app: axum::Router, cert: Arc<ReloadingCert>) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let tls = skiff_injector::tls::server_config(cert).unwrap();
            let handle = axum_server::Handle::new();
            let watcher = handle.clone();
            tokio::spawn(async move { tx.send(watcher.listening().await.unwrap()).unwrap() });
            axum_server::bind_rustls(
                "127.0.0.1:0".parse().unwrap(),
                axum_server::tls_rustls::RustlsConfig::from_config(tls),
            )
            .handle(handle)
            .serve(app.into_make_service())
            .await
            .unwrap();
        });
    });
    rx.recv().unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with('-')).collect();
    let seconds: f64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let rate: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(500.0);
    let duration = Duration::from_secs_f64(seconds);

    let dir = std::env::temp_dir().join(format!("skiff-webhook-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let certs = skiff_injector::selfsigned::generate(
        &["skiff-injector.bench.svc".to_string()],
        Duration::from_secs(3600),
    )
    .unwrap();
    let (cert_path, key_path) = skiff_injector::selfsigned::write(&dir, &certs).unwrap();
    let metrics = Arc::new(Metrics::new());
    let cert = Arc::new(ReloadingCert::new(cert_path, key_path, metrics.clone()));
    let state = AppState {
        store: Arc::new(ConfigStore::new(None, metrics.clone()).unwrap()),
        cert: cert.clone(),
        metrics,
        ca_bundle_ready: None,
    };
    let skiff = start_server(serve::router(state), cert.clone());
    // The baseline answers with a fixed review of the same shape, without deciding anything.
    let fixed: &'static str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"bench","allowed":true}}"#;
    let baseline_app = axum::Router::new().route(
        "/inject",
        post(move |_body: Bytes| async move { ([("content-type", "application/json")], fixed) }),
    );
    let baseline = start_server(baseline_app, cert);

    let body = Bytes::from(review());
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut results: Vec<(&str, Vec<f64>, Vec<Duration>)> = vec![
        ("skiff /inject", vec![], vec![]),
        ("baseline", vec![], vec![]),
    ];
    client.block_on(async {
        for _round in 0..2 {
            for (i, addr) in [skiff, baseline].into_iter().enumerate() {
                results[i]
                    .1
                    .push(throughput(addr, &certs.ca_pem, &body, duration).await);
            }
        }
        for _round in 0..2 {
            for (i, addr) in [skiff, baseline].into_iter().enumerate() {
                let mut lat = fixed_rate(addr, &certs.ca_pem, &body, rate, duration).await;
                results[i].2.append(&mut lat);
            }
        }
    });
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "webhook benchmark: {CONNECTIONS} keep-alive TLS connections, server on 1 thread, {seconds} s per run, 2 runs each, interleaved"
    );
    println!("| server | reviews/s (max, per run) | p50 at {rate}/s | p99 at {rate}/s |");
    println!("|---|---|---|---|");
    let mut summary = Vec::new();
    for (name, tput, lat) in &mut results {
        lat.sort();
        let best = tput.iter().cloned().fold(0.0, f64::max);
        let (p50, p99) = (percentile(lat, 0.50), percentile(lat, 0.99));
        println!(
            "| {name} | {} | {:.2} ms | {:.2} ms |",
            tput.iter()
                .map(|t| format!("{t:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
        summary.push((best, p50, p99));
    }
    let (s, b) = (summary[0], summary[1]);
    println!(
        "skiff / baseline: throughput {:.2}x, p50 {:.2}x, p99 {:.2}x",
        s.0 / b.0,
        s.1.as_secs_f64() / b.1.as_secs_f64(),
        s.2.as_secs_f64() / b.2.as_secs_f64()
    );
}
