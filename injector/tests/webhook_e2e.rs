//! The real `skiff-injector serve` binary over real TLS, spoken to as the API server would:
//! reviews of pods a controller creates, every bad-input case, HTTP/2, health and metrics,
//! a certificate rotated on disk, a config reloaded, and a graceful stop on SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use skiff_injector::selfsigned::{self, Certificates};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};

/// A running server: killed when dropped, so a failed test leaves no process behind.
struct Server {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn certs(names: &[&str]) -> Certificates {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    selfsigned::generate(&names, Duration::from_secs(3600)).unwrap()
}

fn start(tag: &str, certificates: &Certificates, config: Option<&str>) -> Server {
    let dir = std::env::temp_dir().join(format!("skiff-webhook-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = selfsigned::write(&dir, certificates).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skiff-injector"));
    cmd.args([
        "serve",
        "--address",
        "127.0.0.1",
        "--port",
        "0",
        "--shutdown-grace",
        "5",
    ])
    .arg("--tls-cert")
    .arg(&cert)
    .arg("--tls-key")
    .arg(&key)
    .env("RUST_LOG", "info")
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    if let Some(text) = config {
        let path = dir.join("config.yaml");
        std::fs::write(&path, text).unwrap();
        cmd.arg("--config").arg(path);
    }
    let mut child = cmd.spawn().unwrap();
    // The server logs the address it bound; that line is the readiness signal.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("server exited before listening")
            .unwrap();
        if let Some(rest) = line.split("listening on https://").nth(1) {
            break rest.trim().parse().unwrap();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, addr, dir }
}

fn tls_client(ca_pem: &str, alpn: &[u8]) -> TlsConnector {
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

struct Reply {
    status: u16,
    body: Vec<u8>,
    /// The leaf certificate the server presented.
    server_cert: Vec<u8>,
}

/// One request on a fresh TLS connection (HTTP/1.1, or HTTP/2 when `h2`).
async fn request(
    server: &Server,
    ca_pem: &str,
    h2: bool,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Reply {
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let connector = tls_client(ca_pem, if h2 { b"h2" } else { b"http/1.1" });
    let name = ServerName::try_from("skiff-injector.skiff-system.svc").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let server_cert = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(format!("https://skiff-injector.skiff-system.svc{path}"));
    if let Some(ct) = content_type {
        builder = builder.header("content-type", ct);
    }
    let req = builder.body(Full::new(Bytes::from(body))).unwrap();
    let io = TokioIo::new(tls);
    let response = if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await.unwrap()
    };
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Reply {
        status,
        body,
        server_cert,
    }
}

const NAMES: &[&str] = &["skiff-injector", "skiff-injector.skiff-system.svc"];

/// A pod as a Deployment's ReplicaSet asks the API server to create it.
fn deployment_pod(extra_labels: Value) -> Value {
    let mut labels = json!({"app": "reviews", "version": "v2", "pod-template-hash": "5d8f7b"});
    labels
        .as_object_mut()
        .unwrap()
        .extend(extra_labels.as_object().unwrap().clone());
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "reviews-v2-5d8f7b-",
            "labels": labels,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "reviews-v2-5d8f7b",
                                 "uid": "3f1c", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update"}]
        },
        "spec": {
            "serviceAccountName": "bookinfo-reviews",
            "containers": [{
                "name": "reviews",
                "image": "docker.io/istio/examples-bookinfo-reviews-v2:1.20.2",
                "ports": [{"containerPort": 9080, "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"path": "/health", "port": 9080}}
            }]
        },
        "status": {}
    })
}

fn review(pod: &Value, uid: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "bookinfo",
            "operation": "CREATE",
            "object": pod
        }
    }))
    .unwrap()
}

fn response_of(reply: &Reply) -> Value {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let review: Value = serde_json::from_slice(&reply.body).unwrap();
    review["response"].clone()
}

/// The pod as `skiff-injector inject` makes it (manual injection of the same pod).
fn injected_by_cli(pod: &Value) -> Value {
    let mut child = Command::new(env!("CARGO_BIN_EXE_skiff-injector"))
        .args(["inject", "-f", "-", "-n", "bookinfo"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        serde_json::to_string(pod).unwrap().as_bytes(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    yaml_serde::from_str(
        String::from_utf8(out.stdout)
            .unwrap()
            .trim_end_matches("---\n"),
    )
    .unwrap()
}

#[tokio::test]
async fn reviews_are_answered_like_manual_injection() {
    let certificates = certs(NAMES);
    let server = start("reviews", &certificates, None);
    let ca = &certificates.ca_pem;

    let pod = deployment_pod(json!({}));
    let reply = request(
        &server,
        ca,
        false,
        "POST",
        "/inject",
        Some("application/json"),
        review(&pod, "uid-1"),
    )
    .await;
    let response = response_of(&reply);
    assert_eq!(response["uid"], "uid-1");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let patch: json_patch::Patch = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(response["patch"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let mut received = pod.clone();
    received["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    let mut patched = received.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    assert_eq!(
        patched,
        injected_by_cli(&received),
        "webhook and inject agree"
    );
    let env = patched["spec"]["initContainers"][1]["env"]
        .as_array()
        .unwrap()
        .clone();
    let owner = env
        .iter()
        .find(|e| e["name"] == "ISTIO_META_OWNER")
        .unwrap();
    assert_eq!(
        owner["value"],
        "kubernetes://apis/apps/v1/namespaces/bookinfo/deployments/reviews-v2"
    );

    // The same over HTTP/2, and on the /inject/ spelling.
    let reply = request(
        &server,
        ca,
        true,
        "POST",
        "/inject/",
        Some("application/json"),
        review(&pod, "uid-2"),
    )
    .await;
    assert_eq!(response_of(&reply)["patchType"], "JSONPatch");

    // Opt-out and hostNetwork: allowed, no patch.
    let opted_out = deployment_pod(json!({"sidecar.istio.io/inject": "false"}));
    let mut host = deployment_pod(json!({}));
    host["spec"]["hostNetwork"] = json!(true);
    for (pod, uid) in [(opted_out, "uid-3"), (host, "uid-4")] {
        let reply = request(
            &server,
            ca,
            false,
            "POST",
            "/inject",
            Some("application/json"),
            review(&pod, uid),
        )
        .await;
        let response = response_of(&reply);
        assert_eq!(response["allowed"], true);
        assert!(response.get("patch").is_none(), "{response}");
    }
}

#[tokio::test]
async fn bad_input_gets_its_answer_and_the_server_keeps_serving() {
    let certificates = certs(NAMES);
    let server = start("bad", &certificates, None);
    let ca = &certificates.ca_pem;
    let json = Some("application/json");
    let pod_review = review(&deployment_pod(json!({})), "uid-ok");

    let empty = request(&server, ca, false, "POST", "/inject", json, Vec::new()).await;
    assert_eq!(empty.status, 400);
    let huge = request(
        &server,
        ca,
        false,
        "POST",
        "/inject",
        json,
        vec![b' '; 6 * 1024 * 1024 + 10],
    )
    .await;
    assert_eq!(huge.status, 400);
    let text = request(
        &server,
        ca,
        false,
        "POST",
        "/inject",
        Some("text/yaml"),
        pod_review.clone(),
    )
    .await;
    assert_eq!(text.status, 415);
    let garbage = request(
        &server,
        ca,
        false,
        "POST",
        "/inject",
        json,
        b"{\"nope\": 1}".to_vec(),
    )
    .await;
    assert_eq!(garbage.status, 400);
    let wrong = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u9","kind":{"group":"","kind":"Pod"},"object":{"spec":{"containers":7}}}}"#;
    let reply = request(&server, ca, false, "POST", "/inject", json, wrong.to_vec()).await;
    let response = response_of(&reply);
    assert_eq!(
        (response["uid"].as_str(), response["allowed"].as_bool()),
        (Some("u9"), Some(false))
    );
    let not_pod = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u10","kind":{"group":"apps","kind":"Deployment"},"object":{}}}"#;
    assert_eq!(
        response_of(
            &request(
                &server,
                ca,
                false,
                "POST",
                "/inject",
                json,
                not_pod.to_vec()
            )
            .await
        )["allowed"],
        true
    );
    let bad_annotation = deployment_pod(json!({}));
    let mut bad_annotation = bad_annotation;
    bad_annotation["metadata"]["annotations"] = json!({"sidecar.istio.io/proxyCPU": "lots"});
    let response = response_of(
        &request(
            &server,
            ca,
            false,
            "POST",
            "/inject",
            json,
            review(&bad_annotation, "u11"),
        )
        .await,
    );
    assert_eq!(response["allowed"], false);
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("sidecar.istio.io/proxyCPU")
    );

    // Still serving, and it counted everything.
    let reply = request(&server, ca, false, "POST", "/inject", json, pod_review).await;
    assert_eq!(response_of(&reply)["allowed"], true);
    let health = request(&server, ca, false, "GET", "/healthz", None, Vec::new()).await;
    assert_eq!(health.status, 200);
    let ready = request(&server, ca, false, "GET", "/ready", None, Vec::new()).await;
    assert_eq!(ready.status, 200);
    let metrics = String::from_utf8(
        request(&server, ca, false, "GET", "/metrics", None, Vec::new())
            .await
            .body,
    )
    .unwrap();
    assert!(
        metrics.contains("sidecar_injection_requests_total 8"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sidecar_injection_success_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sidecar_injection_failure_total{reason=\"bad_request\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sidecar_injection_failure_total{reason=\"denied\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sidecar_injection_skip_total{reason=\"not_pod\"} 1"),
        "{metrics}"
    );
}

fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn rotated_certificates_and_configs_apply_to_the_next_connection() {
    let first = certs(NAMES);
    let server = start("rotate", &first, Some("statusPort: 15020\n"));
    let reply = request(
        &server,
        &first.ca_pem,
        false,
        "GET",
        "/ready",
        None,
        Vec::new(),
    )
    .await;
    let first_leaf = reply.server_cert;

    // A new CA and certificate written over the files, as a Secret update would.
    let second = certs(NAMES);
    replace_file(&server.dir.join("tls.crt"), &second.cert_pem);
    replace_file(&server.dir.join("tls.key"), &second.key_pem);
    let reply = request(
        &server,
        &second.ca_pem,
        false,
        "GET",
        "/ready",
        None,
        Vec::new(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_ne!(
        reply.server_cert, first_leaf,
        "the next connection gets the new certificate"
    );

    // A config change reaches the next review; a broken one keeps the last good config.
    replace_file(&server.dir.join("config.yaml"), "statusPort: 15030\n");
    let ca = &second.ca_pem;
    let pod_review = review(&deployment_pod(json!({})), "uid-c");
    let patch_text = |reply: &Reply| {
        let response = response_of(reply);
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(response["patch"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    let reply = request(
        &server,
        ca,
        false,
        "POST",
        "/inject",
        Some("application/json"),
        pod_review.clone(),
    )
    .await;
    assert!(patch_text(&reply).contains("--debug-port=15030"));
    replace_file(&server.dir.join("config.yaml"), "statusPort: [broken\n");
    let reply = request(
        &server,
        ca,
        false,
        "POST",
        "/inject",
        Some("application/json"),
        pod_review,
    )
    .await;
    assert!(
        patch_text(&reply).contains("--debug-port=15030"),
        "last good config kept"
    );
    let metrics = String::from_utf8(
        request(&server, ca, false, "GET", "/metrics", None, Vec::new())
            .await
            .body,
    )
    .unwrap();
    assert!(
        metrics.contains("skiff_injector_config_reloads_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("skiff_injector_config_reload_failures_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly() {
    let certificates = certs(NAMES);
    let mut server = start("term", &certificates, None);
    let reply = request(
        &server,
        &certificates.ca_pem,
        false,
        "GET",
        "/healthz",
        None,
        Vec::new(),
    )
    .await;
    assert_eq!(reply.status, 200);
    nix_kill(server.child.id());
    let status = tokio::task::spawn_blocking(move || {
        let status = server.child.wait().unwrap();
        drop(server);
        status
    })
    .await
    .unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");
}

fn nix_kill(pid: u32) {
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
