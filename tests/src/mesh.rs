//! The whole Skiff path on one machine: pods as network namespaces, programmed by the real
//! `skiff-init` with the arguments `skiff-injector inject` put into an example Deployment,
//! and the real `skiff-proxy` running in each pod as uid 1337. Shared by the end-to-end
//! tests and the demo (`skiff-demo`).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::binary;
use crate::netns::{Netns, PodPair};

/// The proxy's user, as the injector sets it (`runAsUser: 1337`).
pub const PROXY_UID: u32 = 1337;

/// The `istio-init` arguments that `skiff-injector inject` writes for `deployment` in
/// `manifest` (an example file): taken from the injected YAML, never written by hand.
pub fn injected_init_args(manifest: &Path, deployment: &str) -> Vec<String> {
    let out = Command::new(binary("skiff-injector"))
        .args(["inject", "-f"])
        .arg(manifest)
        .output()
        .expect("run skiff-injector inject");
    assert!(
        out.status.success(),
        "inject failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8 output");
    for doc in text.split("\n---\n") {
        let Ok(value) = yaml_serde::from_str::<serde_json::Value>(doc) else {
            continue;
        };
        if value["kind"] != "Deployment" || value["metadata"]["name"] != deployment {
            continue;
        }
        let inits = value["spec"]["template"]["spec"]["initContainers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let init = inits
            .iter()
            .find(|c| c["name"] == "istio-init")
            .expect("istio-init injected");
        return init["args"]
            .as_array()
            .expect("istio-init args")
            .iter()
            .map(|a| a.as_str().unwrap_or_default().to_string())
            .collect();
    }
    panic!("no Deployment {deployment} in {}", manifest.display());
}

/// The workspace's `examples/` directory.
pub fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Runs `skiff-init` in `pod` with `args`; panics with its stderr on failure.
pub fn run_init(pod: &Netns, args: &[String]) {
    let out = pod
        .command(binary("skiff-init").to_str().unwrap())
        .args(args)
        .output()
        .expect("run skiff-init");
    assert!(
        out.status.success(),
        "skiff-init failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A child process killed (and reaped) when dropped, also on panic.
pub struct Process {
    child: Child,
    pub log: mpsc::Receiver<String>,
}

impl Process {
    /// Waits for a log line containing `needle`, up to `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) => {}
                Err(_) => return Err(format!("no log line with {needle:?} within {timeout:?}")),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait for the process")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `skiff-proxy` in `pod` as uid/gid 1337 with the static config `config`, as the
/// injected `istio-proxy` container runs (`proxy sidecar ...`), and waits until it reports
/// ready (listeners bound and config loaded).
pub fn start_proxy(pod: &Netns, config: &Path, workload: &str) -> Process {
    let args = ["--config".to_string(), config.display().to_string()];
    let process = spawn_proxy_as(pod, &args, workload);
    if let Err(err) = process.wait_for_log("skiff-proxy ready", Duration::from_secs(10)) {
        panic!("proxy in {} did not become ready: {err}", pod.name());
    }
    process
}

/// Starts `skiff-proxy proxy sidecar ARGS` in `pod` as uid/gid 1337 without waiting.
pub fn spawn_proxy(pod: &Netns, args: &[String]) -> Process {
    spawn_proxy_as(pod, args, "")
}

/// [`spawn_proxy`] with the pod identity the injector would set for `workload` in the
/// `demo` namespace (it labels the proxy's metrics).
pub fn spawn_proxy_as(pod: &Netns, args: &[String], workload: &str) -> Process {
    spawn_proxy_with(pod, args, workload, &[])
}

/// A proxy in `pod` configured by the control plane at `xds` (e.g. `http://127.0.0.1:15010`)
/// over `protocol` (`delta` or `sotw`), as a pod of `workload` with address `ip`, with the
/// environment the injector gives it; waits until it is ready.
pub fn start_xds_proxy(
    pod: &Netns,
    xds: &str,
    protocol: &str,
    workload: &str,
    ip: std::net::IpAddr,
) -> Process {
    let process = spawn_xds_proxy(pod, xds, protocol, workload, ip);
    if let Err(err) = process.wait_for_log("skiff-proxy ready", Duration::from_secs(15)) {
        panic!("proxy in {} did not become ready: {err}", pod.name());
    }
    process
}

/// [`start_xds_proxy`] without waiting for readiness.
pub fn spawn_xds_proxy(
    pod: &Netns,
    xds: &str,
    protocol: &str,
    workload: &str,
    ip: std::net::IpAddr,
) -> Process {
    let args = [
        format!("--xds-address={xds}"),
        format!("--xds-protocol={protocol}"),
    ];
    spawn_proxy_with(pod, &args, workload, &xds_env(workload, ip))
}

/// The environment the injector gives the proxy container (downward API values).
fn xds_env(workload: &str, ip: std::net::IpAddr) -> [(&'static str, String); 4] {
    [
        ("POD_NAME", format!("{workload}-7d4f8b9c5-x2k4p")),
        ("INSTANCE_IP", ip.to_string()),
        ("SERVICE_ACCOUNT", format!("bookinfo-{workload}")),
        ("ISTIO_META_CLUSTER_ID", "Kubernetes".to_owned()),
    ]
}

fn spawn_proxy_with(
    pod: &Netns,
    args: &[String],
    workload: &str,
    env: &[(&str, String)],
) -> Process {
    let uid = PROXY_UID.to_string();
    let mut cmd = pod.command("setpriv");
    cmd.args([
        format!("--reuid={uid}").as_str(),
        format!("--regid={uid}").as_str(),
        "--clear-groups",
        "--",
    ])
    .arg(binary("skiff-proxy"))
    .args(["proxy", "sidecar"])
    .args(args)
    .env("RUST_LOG", "info")
    .env("ISTIO_META_WORKLOAD_NAME", workload)
    .env("POD_NAMESPACE", "demo")
    .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start skiff-proxy");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Process { child, log: rx }
}

/// Two pods with a default route (so service VIPs are routable before iptables rewrites
/// them), and, when `meshed`, skiff-init applied with the arguments the injector wrote
/// for the example's productpage (the pod) and reviews (the peer) Deployments.
pub fn pod_pair(tag: &str, meshed: bool) -> PodPair {
    let pair = PodPair::new(tag).expect("create the pod namespaces");
    for ns in [&pair.pod, &pair.peer] {
        ns.ip(&["route", "add", "default", "dev", "eth0"])
            .expect("default route");
    }
    if meshed {
        let manifest = examples_dir().join("reviews.yaml");
        run_init(&pair.pod, &injected_init_args(&manifest, "productpage"));
        run_init(&pair.peer, &injected_init_args(&manifest, "reviews"));
    }
    pair
}

/// Writes `text` to a fresh file readable by the proxy user.
pub fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("config dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

/// A service the client pod's proxy knows: its VIP, the `outbound|port||<name>.demo...`
/// cluster, and the pod endpoint behind it.
pub struct Service<'a> {
    pub name: &'a str,
    pub vip: &'a str,
    pub port: u16,
    pub endpoint: &'a str,
}

/// The static config of a client pod's proxy, shaped like istiod's: a virtual outbound
/// listener with passthrough, one hand-off listener per service, a virtual inbound listener.
pub fn client_config(services: &[Service<'_>]) -> String {
    let mut listeners = String::from(
        "listeners:\n  - {name: virtualOutbound, address: \"0.0.0.0:15001\", useOriginalDst: true, defaultCluster: PassthroughCluster}\n",
    );
    let mut clusters = String::from("clusters:\n");
    for s in services {
        let cluster = format!("outbound|{}||{}.demo.svc.cluster.local", s.port, s.name);
        listeners.push_str(&format!(
            "  - {{name: {}, address: \"{}:{}\", tcp: {{cluster: \"{cluster}\"}}}}\n",
            s.name, s.vip, s.port
        ));
        clusters.push_str(&format!(
            "  - {{name: \"{cluster}\", endpoints: [\"{}:{}\"], connectTimeout: 2s}}\n",
            s.endpoint, s.port
        ));
    }
    listeners.push_str("  - {name: virtualInbound, address: \"0.0.0.0:15006\", direction: inbound, useOriginalDst: true, defaultCluster: InboundPassthroughCluster}\n");
    listeners + &clusters
}

/// The static config of a server pod's proxy: inbound `ports` go to the app on localhost
/// as opaque TCP, anything else passes through.
pub fn server_config(ports: &[u16]) -> String {
    inbound_config(ports, |port| {
        format!("tcp: {{cluster: \"inbound|{port}||\"}}")
    })
}

/// [`server_config`] with HTTP on `ports`, as istiod configures inbound HTTP: every
/// request to the app's cluster, without a route timeout.
pub fn http_server_config(ports: &[u16]) -> String {
    inbound_config(ports, |port| {
        format!(
            "http: {{routes: [{{match: {{prefix: /}}, route: {{cluster: \"inbound|{port}||\", timeout: 0s}}}}]}}"
        )
    })
}

fn inbound_config(ports: &[u16], handler: impl Fn(u16) -> String) -> String {
    let mut text = String::from(
        "listeners:\n  - {name: virtualOutbound, address: \"0.0.0.0:15001\", useOriginalDst: true, defaultCluster: PassthroughCluster}\n  - name: virtualInbound\n    address: \"0.0.0.0:15006\"\n    direction: inbound\n    useOriginalDst: true\n    chains:\n",
    );
    for port in ports {
        text.push_str(&format!(
            "      - {{match: {{destinationPort: {port}}}, {}}}\n",
            handler(*port)
        ));
    }
    text.push_str("    defaultCluster: InboundPassthroughCluster\nclusters:\n");
    for port in ports {
        text.push_str(&format!(
            "  - {{name: \"inbound|{port}||\", endpoints: [\"127.0.0.1:{port}\"]}}\n"
        ));
    }
    text
}

/// istiod's name for the cluster of one subset of a demo service.
pub fn subset_cluster(name: &str, port: u16, subset: &str) -> String {
    format!("outbound|{port}|{subset}|{name}.demo.svc.cluster.local")
}

/// The static config of a client pod's proxy for one HTTP service at `vip:port`: its
/// listener routes requests with `routes` (a YAML list of routes naming clusters), and
/// `clusters` pairs each cluster name with its endpoint (`IP:port`).
pub fn http_client_config(
    vip: &str,
    port: u16,
    routes: &str,
    clusters: &[(String, String)],
) -> String {
    let mut text = format!(
        "listeners:\n  - {{name: virtualOutbound, address: \"0.0.0.0:15001\", useOriginalDst: true, defaultCluster: PassthroughCluster}}\n  - name: http_{port}\n    address: \"{vip}:{port}\"\n    http:\n      routes: {routes}\n  - {{name: virtualInbound, address: \"0.0.0.0:15006\", direction: inbound, useOriginalDst: true, defaultCluster: InboundPassthroughCluster}}\nclusters:\n"
    );
    for (name, endpoint) in clusters {
        text.push_str(&format!(
            "  - {{name: \"{name}\", endpoints: [\"{endpoint}\"], connectTimeout: 2s}}\n"
        ));
    }
    text
}

/// Serves `respond` on every connection to `port` in `pod`, in threads, forever (the
/// namespace's removal ends it).
pub fn app(pod: &Netns, port: u16, respond: fn(TcpStream)) {
    // Dual-stack (Linux's default for [::]), so the same app serves IPv4 and IPv6 tests.
    let listener = pod
        .run(move || TcpListener::bind(("::", port)))
        .expect("app listens");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || respond(stream));
        }
    });
}

/// `GET path` on a port of the pod's own proxy (not captured: localhost).
pub fn get(pod: &Netns, port: u16, path: &'static str) -> (u16, String) {
    pod.run(move || {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the proxy");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, text)
    })
}

/// The sum of the samples of metric `name` whose line contains `must_contain`.
pub fn metric(text: &str, name: &str, must_contain: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(must_contain))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// A keep-alive HTTP/1.1 app: reads each request (and its body, counting it) and answers
/// `name` with the body's size in `x-body-bytes`.
pub fn serve_http(stream: TcpStream, name: &str) {
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut writer = write_half;
    let mut reader = BufReader::new(stream);
    loop {
        let mut content_length = 0u64;
        let mut line = String::new();
        // The request line, then headers up to the blank line.
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                content_length = v.trim().parse().unwrap_or(0);
            }
        }
        let read = std::io::copy(
            &mut (&mut reader).take(content_length),
            &mut std::io::sink(),
        )
        .unwrap_or(0);
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-body-bytes: {read}\r\n\r\n{name}",
            name.len()
        );
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}
