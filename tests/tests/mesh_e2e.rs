//! The whole mesh path on a real kernel: two pods (network namespaces), each programmed by
//! the real `skiff-init` with the arguments `skiff-injector inject` wrote for the example
//! Deployments, each with the real `skiff-proxy` as uid 1337; apps talk through them.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use skiff_tests::can_run_as_root;
use skiff_tests::mesh::{
    self, Process, Service, app, examples_dir, get, injected_init_args, metric, run_init,
    spawn_proxy, start_proxy, write_config,
};
use skiff_tests::netns::{Netns, PodPair};

const VIP: &str = "10.96.0.7";
const GREETER_VIP: &str = "10.96.0.8";

/// Pod A's proxy (productpage): the reviews and greeter VIPs map to pod B.
fn client_config() -> String {
    mesh::client_config(&[
        Service {
            name: "reviews",
            vip: VIP,
            port: 9080,
            endpoint: "10.77.0.2",
        },
        Service {
            name: "greeter",
            vip: GREETER_VIP,
            port: 9081,
            endpoint: "10.77.0.2",
        },
    ])
}

struct Mesh {
    pair: PodPair,
    dir: PathBuf,
    client_proxy: Option<Process>,
    server_proxy: Option<Process>,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.client_proxy.take();
        self.server_proxy.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Echoes a request back with a prefix, so the client knows it went through the app.
fn echo(mut stream: TcpStream) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        let mut reply = b"reviews:".to_vec();
        reply.extend_from_slice(&buf[..n]);
        if stream.write_all(&reply).is_err() {
            break;
        }
    }
}

/// Speaks first, like MySQL or SMTP, then echoes one line.
fn greeter(mut stream: TcpStream) {
    let _ = stream.write_all(b"220 greeter ready\r\n");
    let mut buf = [0u8; 64];
    if let Ok(n) = stream.read(&mut buf) {
        let _ = stream.write_all(&buf[..n]);
    }
}

fn mesh(tag: &str) -> Mesh {
    let pair = mesh::pod_pair(tag, true);
    app(&pair.peer, 9080, echo);
    app(&pair.peer, 9081, greeter);
    app(&pair.peer, 7070, echo);
    let dir = std::env::temp_dir().join(format!("skiff-mesh-{}-{tag}", std::process::id()));
    let client_cfg = write_config(&dir, "client.yaml", &client_config());
    let server_cfg = write_config(&dir, "server.yaml", &mesh::server_config(&[9080, 9081]));
    let client_proxy = Some(start_proxy(&pair.pod, &client_cfg, "productpage"));
    let server_proxy = Some(start_proxy(&pair.peer, &server_cfg, "reviews"));
    Mesh {
        pair,
        dir,
        client_proxy,
        server_proxy,
    }
}

/// From pod A, as the app: connect to `to`, send `message`, read `expect_len` bytes.
fn call(
    mesh: &Mesh,
    to: &str,
    message: &'static [u8],
    expect_len: usize,
) -> std::io::Result<Vec<u8>> {
    let to: SocketAddr = to.parse().unwrap();
    mesh.pair.pod.run(move || {
        let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        if !message.is_empty() {
            stream.write_all(message)?;
        }
        let mut reply = vec![0u8; expect_len];
        stream.read_exact(&mut reply)?;
        Ok(reply)
    })
}

#[test]
fn a_service_call_goes_through_both_proxies_and_is_counted() {
    if !can_run_as_root("a_service_call_goes_through_both_proxies_and_is_counted") {
        return;
    }
    let mesh = mesh("svc");
    let reply = call(&mesh, &format!("{VIP}:9080"), b"hello", 13).expect("through the mesh");
    assert_eq!(reply, b"reviews:hello");

    // The connection closes when the thread's stream drops; wait for both proxies to count
    // it closed (a signal from the proxies' own metrics, polled briefly).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, a) = get(&mesh.pair.pod, 15090, "/stats/prometheus");
        let (_, b) = get(&mesh.pair.peer, 15090, "/stats/prometheus");
        let service = "destination_service=\"reviews.demo.svc.cluster.local\"";
        let a_closed = metric(
            &a,
            "istio_tcp_connections_closed_total",
            "reporter=\"source\"",
        );
        let b_closed = metric(
            &b,
            "istio_tcp_connections_closed_total",
            "reporter=\"destination\"",
        );
        if a_closed >= 1 && b_closed >= 1 {
            assert_eq!(
                metric(&a, "istio_tcp_connections_opened_total", service),
                1,
                "{a}"
            );
            assert_eq!(
                metric(&a, "istio_tcp_received_bytes_total", service),
                5,
                "request bytes: {a}"
            );
            assert_eq!(
                metric(&a, "istio_tcp_sent_bytes_total", service),
                13,
                "response bytes: {a}"
            );
            assert_eq!(
                metric(
                    &b,
                    "istio_tcp_connections_opened_total",
                    "reporter=\"destination\""
                ),
                1,
                "{b}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "closes not counted:\n{a}\n{b}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn server_first_protocols_and_passthrough_work() {
    if !can_run_as_root("server_first_protocols_and_passthrough_work") {
        return;
    }
    let mesh = mesh("srvfirst");
    let greeting =
        call(&mesh, &format!("{GREETER_VIP}:9081"), b"", 19).expect("greeting through the mesh");
    assert_eq!(greeting, b"220 greeter ready\r\n");
    // An address the config does not know: passthrough out of A, inbound passthrough into B.
    let reply = call(&mesh, "10.77.0.2:7070", b"direct", 14).expect("passthrough");
    assert_eq!(reply, b"reviews:direct");
}

#[test]
fn a_restarted_proxy_serves_again() {
    if !can_run_as_root("a_restarted_proxy_serves_again") {
        return;
    }
    let mut mesh = mesh("restart");
    assert_eq!(
        call(&mesh, &format!("{VIP}:9080"), b"one", 11).unwrap(),
        b"reviews:one"
    );
    let status = mesh.server_proxy.take().unwrap().terminate();
    assert!(status.success(), "SIGTERM exits 0: {status}");
    assert!(
        call(&mesh, &format!("{VIP}:9080"), b"two", 11).is_err(),
        "no proxy, no path"
    );
    let server_cfg = mesh.dir.join("server.yaml");
    mesh.server_proxy = Some(start_proxy(&mesh.pair.peer, &server_cfg, "reviews"));
    assert_eq!(
        call(&mesh, &format!("{VIP}:9080"), b"three", 13).unwrap(),
        b"reviews:three"
    );
}

#[test]
fn readiness_waits_for_configuration() {
    if !can_run_as_root("readiness_waits_for_configuration") {
        return;
    }
    let mesh = mesh("ready");
    let (status, _) = get(&mesh.pair.pod, 15021, "/healthz/ready");
    assert_eq!(status, 200, "ready with its config loaded");

    // A proxy whose control plane cannot be reached listens but is not ready, and says why.
    let lone = Netns::new("noconfig").unwrap();
    let xds = "http://127.0.0.1:15011";
    let waiting = mesh::spawn_xds_proxy(&lone, xds, "delta", "lone", PodPair::POD_V4.into());
    waiting
        .wait_for_log("skiff-proxy listening", Duration::from_secs(10))
        .unwrap();
    waiting
        .wait_for_log("serving the last configuration", Duration::from_secs(10))
        .expect("the failed connection is logged");
    let (status, body) = get(&lone, 15021, "/healthz/ready");
    assert_eq!(status, 503, "{body}");
    assert!(body.to_lowercase().contains("config"), "says why: {body}");
    let (status, body) = get(&lone, 15000, "/ready");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("waiting for the control plane at http://127.0.0.1:15011"),
        "{body}"
    );
    drop(waiting);

    // Without the pod identity the injector provides, the proxy cannot ask for
    // configuration: it stops at once, naming the variable.
    let anonymous = spawn_proxy(&lone, &[format!("--xds-address={xds}")]);
    anonymous
        .wait_for_log("POD_NAME", Duration::from_secs(10))
        .expect("the missing variable is named");

    // A configuration that cannot be read is refused at start, naming the file.
    let missing = mesh.dir.join("does-not-exist.yaml");
    let failed = spawn_proxy(&lone, &["--config".into(), missing.display().to_string()]);
    let line = failed.wait_for_log("does-not-exist.yaml", Duration::from_secs(10));
    assert!(line.is_ok(), "the error names the file");
}

/// Replaces a file atomically, as a ConfigMap update does.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn sighup_reloads_the_config_and_a_bad_one_is_refused() {
    if !can_run_as_root("sighup_reloads_the_config_and_a_bad_one_is_refused") {
        return;
    }
    let mesh = mesh("reload");
    assert_eq!(
        call(&mesh, &format!("{VIP}:9080"), b"a", 9).unwrap(),
        b"reviews:a"
    );
    let client = mesh.client_proxy.as_ref().unwrap();
    let path = mesh.dir.join("client.yaml");
    let hup = || {
        let status = std::process::Command::new("kill")
            .args(["-HUP", &client.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };

    replace(&path, "listeners: [{name: broken, address: nowhere}]\n");
    hup();
    client
        .wait_for_log("keeping the running configuration", Duration::from_secs(10))
        .expect("a bad file is refused");
    assert_eq!(
        call(&mesh, &format!("{VIP}:9080"), b"b", 9).unwrap(),
        b"reviews:b",
        "old config still serves"
    );

    // The service now points at the greeter's port: new connections see the new config.
    replace(
        &path,
        &client_config().replace("\"10.77.0.2:9080\"", "\"10.77.0.2:9081\""),
    );
    hup();
    client
        .wait_for_log("static config reloaded", Duration::from_secs(10))
        .expect("reloaded");
    let greeting = call(&mesh, &format!("{VIP}:9080"), b"", 19).unwrap();
    assert_eq!(greeting, b"220 greeter ready\r\n");
}

/// IPv6 through both proxies: the proxies' [::] listeners, IP6T_SO_ORIGINAL_DST, and the
/// ::6 source of inbound passthrough. The injected arguments leave IPv6 to auto-detection,
/// which picks IPv4 first in these pods (as in Istio without DUAL_STACK), so IPv6 is
/// switched on with skiff-init's own `--ipv6 true` on top of them.
#[test]
fn ipv6_goes_through_both_proxies() {
    if !can_run_as_root("ipv6_goes_through_both_proxies") {
        return;
    }
    let pair = PodPair::new("v6mesh").expect("pods");
    for ns in [&pair.pod, &pair.peer] {
        ns.ip(&["-6", "route", "add", "default", "dev", "eth0"])
            .expect("default route");
    }
    let manifest = examples_dir().join("reviews.yaml");
    for (pod, deployment) in [(&pair.pod, "productpage"), (&pair.peer, "reviews")] {
        let mut args = injected_init_args(&manifest, deployment);
        args.extend(["--ipv6".to_string(), "true".to_string()]);
        run_init(pod, &args);
    }
    app(&pair.peer, 9080, echo);
    app(&pair.peer, 7070, echo);
    let client = r#"listeners:
  - {name: virtualOutbound, address: "[::]:15001", useOriginalDst: true, defaultCluster: PassthroughCluster}
  - {name: reviews, address: "[fd96::7]:9080", tcp: {cluster: "outbound|9080||reviews.demo.svc.cluster.local"}}
clusters:
  - {name: "outbound|9080||reviews.demo.svc.cluster.local", endpoints: ["[fd77::2]:9080"], connectTimeout: 2s}
"#;
    let server = r#"listeners:
  - name: virtualInbound
    address: "[::]:15006"
    direction: inbound
    useOriginalDst: true
    chains: [{match: {destinationPort: 9080}, tcp: {cluster: "inbound|9080||"}}]
    defaultCluster: InboundPassthroughCluster
clusters:
  - {name: "inbound|9080||", endpoints: ["[::1]:9080"]}
"#;
    let dir = std::env::temp_dir().join(format!("skiff-mesh-{}-v6", std::process::id()));
    let _client = start_proxy(
        &pair.pod,
        &write_config(&dir, "client.yaml", client),
        "productpage",
    );
    let _server = start_proxy(
        &pair.peer,
        &write_config(&dir, "server.yaml", server),
        "reviews",
    );
    let mesh = Mesh {
        pair,
        dir,
        client_proxy: None,
        server_proxy: None,
    };
    assert_eq!(
        call(&mesh, "[fd96::7]:9080", b"v6", 10).unwrap(),
        b"reviews:v6"
    );
    // An address the config does not know: passthrough, and inbound passthrough from ::6.
    assert_eq!(
        call(&mesh, "[fd77::2]:7070", b"pt", 10).unwrap(),
        b"reviews:pt"
    );
}
