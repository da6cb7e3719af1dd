//! The four paths every scenario runs through, each on its own pod pair (two network
//! namespaces joined by a veth, the client in the "pod", the app in the "peer"):
//!
//! - direct: client → app on 10.77.0.2, no proxy, no iptables;
//! - skiff pair: client → 10.96.0.x (a service VIP) → skiff-init's real rules → outbound
//!   skiff-proxy → inbound skiff-proxy (captured by the peer's rules) → app on 127.0.0.1;
//! - nginx pair / haproxy pair: client → proxy on 127.0.0.1:9090 → proxy on
//!   10.77.0.2:9091 → app on 127.0.0.1, no iptables.
//!
//! The app (this binary's `app` subcommand) runs in every peer for the whole run; the
//! proxies start afresh for each scenario, so idle and peak memory are per scenario.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use skiff_tests::mesh::{
    Service, client_config, http_client_config, http_server_config, pod_pair, server_config,
    subset_cluster, write_config,
};
use skiff_tests::netns::{Netns, PodPair};

use crate::proc::Daemon;
use crate::proxies;

pub const APP_PORT: u16 = 9080;
pub const SINK_PORT: u16 = 9081;
/// The client-side proxy's listener (127.0.0.1) in the nginx and haproxy pairs.
pub const FRONT_PORT: u16 = 9090;
/// The server-side proxy's listener (10.77.0.2) in the nginx and haproxy pairs.
pub const BACK_PORT: u16 = 9091;
const HTTP_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 7);
const TCP_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 8);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathKind {
    Direct,
    Skiff,
    Nginx,
    Haproxy,
}

impl PathKind {
    /// The order of every round.
    pub const ALL: [PathKind; 4] = [Self::Direct, Self::Skiff, Self::Nginx, Self::Haproxy];

    pub fn key(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Skiff => "skiff",
            Self::Nginx => "nginx",
            Self::Haproxy => "haproxy",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Skiff => "skiff pair",
            Self::Nginx => "nginx pair",
            Self::Haproxy => "haproxy pair",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Self::Direct => "bd",
            Self::Skiff => "bs",
            Self::Nginx => "bn",
            Self::Haproxy => "bh",
        }
    }
}

/// What the proxies carry in a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Http1,
    /// h2c with prior knowledge from the client.
    H2,
    Tcp,
}

/// Which CPU the clients (and the apps) and the proxies are pinned to.
#[derive(Clone, Copy, Debug)]
pub struct Pinning {
    pub client: usize,
    pub proxy: usize,
}

/// The two proxies of a pair while a scenario runs.
pub struct ProxyPair {
    pub daemons: Vec<Daemon>,
    /// How this pair deviates from the scenario's description, if it does.
    pub note: Option<String>,
}

impl ProxyPair {
    pub fn cpu_seconds(&self) -> f64 {
        self.daemons.iter().map(Daemon::cpu_seconds).sum()
    }

    /// A KiB field of /proc/PID/status summed over both proxies.
    pub fn status_kib(&self, field: &str) -> u64 {
        self.daemons.iter().map(|d| d.status_kib(field)).sum()
    }

    /// Fails when a proxy has exited.
    pub fn check(&mut self) -> Result<()> {
        for d in &mut self.daemons {
            if !d.alive() {
                bail!("{} exited: {}", d.name(), d.log_tail());
            }
        }
        Ok(())
    }
}

pub struct Testbed {
    // Dropped first: the apps end before their namespaces go.
    apps: Vec<Daemon>,
    pairs: Vec<(PathKind, PodPair)>,
    pub dir: PathBuf,
    pub pin: Pinning,
}

impl Testbed {
    /// Creates the four pod pairs (skiff-init's rules in the skiff pair only) and starts
    /// the app in each peer.
    pub fn new(dir: &Path, pin: Pinning) -> Result<Testbed> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let mut bed = Testbed {
            apps: Vec::new(),
            pairs: Vec::new(),
            dir: dir.to_owned(),
            pin,
        };
        let me = std::env::current_exe().context("current_exe")?;
        for kind in PathKind::ALL {
            let pair = pod_pair(kind.tag(), kind == PathKind::Skiff);
            for ns in [&pair.pod, &pair.peer] {
                // Connection churn (the `conn` scenario) must not run out of ports.
                let out = ns
                    .command("sysctl")
                    .args([
                        "-q",
                        "-w",
                        "net.ipv4.tcp_tw_reuse=1",
                        "net.ipv4.ip_local_port_range=16000 65000",
                    ])
                    .output()
                    .context("run sysctl")?;
                if !out.status.success() {
                    bail!("sysctl: {}", String::from_utf8_lossy(&out.stderr));
                }
            }
            let mut cmd = pair.peer.command("taskset");
            cmd.args(["-c", &pin.client.to_string()])
                .arg(&me)
                .args(["app", "--http-port", &APP_PORT.to_string()])
                .args(["--sink-port", &SINK_PORT.to_string()]);
            let mut app = Daemon::spawn(&format!("app in {}", kind.label()), cmd)?;
            for port in [APP_PORT, SINK_PORT] {
                let to = SocketAddr::from(([127, 0, 0, 1], port));
                if !wait_port(&pair.peer, to, Duration::from_secs(10)) {
                    app.alive();
                    bail!("the app did not listen on {to}: {}", app.log_tail());
                }
            }
            bed.apps.push(app);
            bed.pairs.push((kind, pair));
        }
        Ok(bed)
    }

    pub fn pair(&self, kind: PathKind) -> &PodPair {
        &self
            .pairs
            .iter()
            .find(|(k, _)| *k == kind)
            .expect("every path has a pair")
            .1
    }

    /// Where the client in `kind`'s pod connects.
    pub fn target(kind: PathKind, mode: Mode) -> SocketAddr {
        let (direct_port, vip) = match mode {
            Mode::Http1 | Mode::H2 => (APP_PORT, HTTP_VIP),
            Mode::Tcp => (SINK_PORT, TCP_VIP),
        };
        match kind {
            PathKind::Direct => SocketAddr::from((PodPair::PEER_V4, direct_port)),
            PathKind::Skiff => SocketAddr::V4(SocketAddrV4::new(vip, direct_port)),
            PathKind::Nginx | PathKind::Haproxy => SocketAddr::from(([127, 0, 0, 1], FRONT_PORT)),
        }
    }

    /// Starts `kind`'s proxy pair for `mode` (nothing for the direct path).
    pub fn start(&self, kind: PathKind, mode: Mode) -> Result<Option<ProxyPair>> {
        let pair = self.pair(kind);
        let dir = self.dir.join(kind.key());
        std::fs::create_dir_all(&dir)?;
        let cpu = self.pin.proxy;
        Ok(match kind {
            PathKind::Direct => None,
            PathKind::Skiff => Some(start_skiff(pair, mode, &dir, cpu)?),
            PathKind::Nginx => Some(proxies::start_nginx(pair, mode, &dir, cpu)?),
            PathKind::Haproxy => Some(proxies::start_haproxy(pair, mode, &dir, cpu)?),
        })
    }
}

/// Whether `to` accepts a connection made from inside `ns` within `timeout`.
pub fn wait_port(ns: &Netns, to: SocketAddr, timeout: Duration) -> bool {
    ns.run(move || {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if std::net::TcpStream::connect_timeout(&to, Duration::from_millis(200)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    })
}

fn start_skiff(pair: &PodPair, mode: Mode, dir: &Path, cpu: usize) -> Result<ProxyPair> {
    let peer = PodPair::PEER_V4.to_string();
    let (client, server) = match mode {
        Mode::Http1 | Mode::H2 => {
            let cluster = subset_cluster("reviews", APP_PORT, "v1");
            let routes = format!("[{{prefix: /, cluster: \"{cluster}\"}}]");
            (
                http_client_config(
                    &HTTP_VIP.to_string(),
                    APP_PORT,
                    &routes,
                    &[(cluster.clone(), format!("{peer}:{APP_PORT}"))],
                ),
                http_server_config(&[APP_PORT]),
            )
        }
        Mode::Tcp => (
            client_config(&[Service {
                name: "bulk",
                vip: &TCP_VIP.to_string(),
                port: SINK_PORT,
                endpoint: &peer,
            }]),
            server_config(&[SINK_PORT]),
        ),
    };
    let mut daemons = vec![
        spawn_skiff(
            &pair.pod,
            &write_config(dir, "client.yaml", &client),
            "productpage",
            cpu,
        )?,
        spawn_skiff(
            &pair.peer,
            &write_config(dir, "server.yaml", &server),
            "reviews",
            cpu,
        )?,
    ];
    for d in &mut daemons {
        d.wait_for_log("skiff-proxy ready", Duration::from_secs(15))?;
    }
    Ok(ProxyPair {
        daemons,
        note: None,
    })
}

/// `skiff-proxy proxy sidecar --config CONFIG` in `pod` as uid/gid 1337 (as the injected
/// container runs it, like `mesh::spawn_proxy_with`), one worker thread, pinned to `cpu`;
/// only warnings logged, and the readiness line.
fn spawn_skiff(pod: &Netns, config: &Path, workload: &str, cpu: usize) -> Result<Daemon> {
    let uid = skiff_tests::mesh::PROXY_UID.to_string();
    let mut cmd = pod.command("taskset");
    cmd.args(["-c", &cpu.to_string(), "setpriv"])
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .args(["--clear-groups", "--"])
        .arg(skiff_tests::binary("skiff-proxy"))
        .args(["proxy", "sidecar", "--config"])
        .arg(config)
        .env("SKIFF_CONCURRENCY", "1")
        .env("RUST_LOG", "warn,skiff_proxy::run=info")
        .env("ISTIO_META_WORKLOAD_NAME", workload)
        .env("POD_NAMESPACE", "demo");
    Daemon::spawn(&format!("skiff-proxy in {}", pod.name()), cmd)
}
