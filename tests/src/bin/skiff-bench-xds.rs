//! Benchmark (not a test): how long a real `skiff-proxy` takes to apply a big xDS push —
//! 1,000 EDS clusters, 10,000 endpoints, 100 listeners and 100 route configurations holding
//! 1,000 routes — and its resident memory before and after, against a small push of the
//! same four types measured on the same proxy in the same run.
//!
//! One network namespace holds the proxy (uid 1337, `--xds-address`, delta or state of the
//! world) and the test ADS server's listener on 127.0.0.1:15010. A push is `set` of CDS,
//! EDS, LDS and RDS in istiod's order; it counts as applied when the proxy's ACKs of the
//! new version of all four types are in (the proxy publishes a push before it ACKs it), the
//! time of the last such ACK seen within a short quiet period after. The proxy's own
//! `skiff_xds_apply_seconds` (receipt of a response → its snapshot in force) is read from
//! its Prometheus endpoint around every push. Needs root.
//! Usage: skiff-bench-xds [ROUNDS] [delta|sotw]   (3 delta)

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::{Route, VirtualHost, route};
use envoy_types::pb::google::protobuf::{Any, Duration as ProtoDuration, UInt32Value};
use skiff_tests::bench::median;
use skiff_tests::bench::status_kib;
use skiff_tests::mesh::{Process, start_xds_proxy};
use skiff_tests::netns::Netns;
use skiff_tests::xds_resources::{
    eds_cluster, endpoints, http_listener, pack, passthrough_clusters, route_config, route_to,
    static_inbound_cluster, unpack, vhost, virtual_inbound, virtual_outbound,
};
use skiff_tests::xds_server::{XdsServer, type_url};

const XDS: &str = "http://127.0.0.1:15010";
const SERVICES: usize = 1_000;
const ENDPOINTS_PER_SERVICE: usize = 10;
/// Route configurations of the big push: one per port 10000..10099, istiod's shape (one
/// RouteConfiguration per outbound HTTP port, named by the port, with one virtual host per
/// service on it), each referenced by its own `0.0.0.0_<port>` listener.
const ROUTE_PORTS: usize = 100;
const FIRST_ROUTE_PORT: u16 = 10_000;
const SERVICES_PER_PORT: usize = SERVICES / ROUTE_PORTS;
const REVIEWS: &str = "outbound|9080||reviews.default.svc.cluster.local";
const RATINGS: &str = "outbound|9080||ratings.default.svc.cluster.local";
/// How long a push may take before the run gives up.
const PATIENCE: Duration = Duration::from_secs(60);
/// After the four ACKs: how long no further request must come for the push to be done (a
/// state-of-the-world proxy can ACK the new EDS/RDS version twice when the server answers
/// the old subscription first; the later ACK counts).
const QUIET: Duration = Duration::from_millis(300);
const TYPES: [(&str, &str); 4] = [
    (type_url::CLUSTER, "CDS"),
    (type_url::ENDPOINT, "EDS"),
    (type_url::LISTENER, "LDS"),
    (type_url::ROUTE, "RDS"),
];

/// One configuration, by type, in the order it is pushed.
struct Config {
    clusters: Vec<(String, Any)>,
    endpoints: Vec<(String, Any)>,
    listeners: Vec<(String, Any)>,
    routes: Vec<(String, Any)>,
}

fn service_cluster(i: usize) -> String {
    format!("outbound|9080||svc-{i}.bench.svc.cluster.local")
}

/// The two variants differ in every cluster (connect timeout), endpoint set (weights),
/// HTTP listener (buffer limit) and route (timeout) the push carries, so a push from one to
/// the other changes every resource (delta sends only what changed).
fn varied_cluster(name: &str, variant: u32) -> (String, Any) {
    let (name, any) = eds_cluster(name);
    let mut cluster: Cluster = unpack(&any).expect("a cluster");
    cluster.connect_timeout = Some(ProtoDuration {
        seconds: 10 + i64::from(variant),
        nanos: 0,
    });
    (name, pack(&cluster))
}

fn varied_listener(port: u16, variant: u32) -> (String, Any) {
    let (name, any) = http_listener(port);
    let mut listener: Listener = unpack(&any).expect("a listener");
    listener.per_connection_buffer_limit_bytes = Some(UInt32Value {
        value: (1 << 20) << variant,
    });
    (name, pack(&listener))
}

fn varied_route(cluster: &str, variant: u32) -> Route {
    let mut r = route_to(cluster);
    if let Some(route::Action::Route(action)) = r.action.as_mut() {
        action.timeout = Some(ProtoDuration {
            seconds: 15 * i64::from(variant),
            nanos: 0,
        });
    }
    r
}

/// The virtual host istiod writes for `short`.`namespace` on `port`, with its VIP.
fn service_vhost(
    short: &str,
    namespace: &str,
    vip: Ipv4Addr,
    port: u16,
    cluster: &str,
    variant: u32,
) -> VirtualHost {
    let fqdn = format!("{short}.{namespace}.svc.cluster.local");
    let names = [
        fqdn.clone(),
        format!("{short}.{namespace}"),
        format!("{short}.{namespace}.svc"),
        vip.to_string(),
    ];
    let mut domains: Vec<String> = Vec::new();
    for name in names {
        domains.push(format!("{name}:{port}"));
        domains.push(name);
    }
    let domains: Vec<&str> = domains.iter().map(String::as_str).collect();
    vhost(
        &format!("{fqdn}:{port}"),
        &domains,
        vec![varied_route(cluster, variant)],
    )
}

/// The small Istio-shaped config (two services on 9080 behind one HTTP listener and one
/// route configuration), plus, when `big`, the 1,000 services of the big push.
fn config(variant: u32, big: bool) -> Config {
    let mut clusters = passthrough_clusters();
    clusters.push(static_inbound_cluster(9080));
    clusters.push(varied_cluster(REVIEWS, variant));
    clusters.push(varied_cluster(RATINGS, variant));
    let weight = 1 + variant;
    let mut eps = vec![
        endpoints(REVIEWS, &[("10.0.0.2:9080".parse().unwrap(), weight)]),
        endpoints(RATINGS, &[("10.0.0.3:9080".parse().unwrap(), weight)]),
    ];
    let mut listeners = vec![
        virtual_outbound(),
        virtual_inbound(&[9080]),
        varied_listener(9080, variant),
    ];
    let mut routes = vec![route_config(
        "9080",
        vec![
            service_vhost(
                "reviews",
                "default",
                Ipv4Addr::new(10, 96, 0, 7),
                9080,
                REVIEWS,
                variant,
            ),
            service_vhost(
                "ratings",
                "default",
                Ipv4Addr::new(10, 96, 0, 8),
                9080,
                RATINGS,
                variant,
            ),
        ],
    )];
    if big {
        for i in 0..SERVICES {
            let name = service_cluster(i);
            clusters.push(varied_cluster(&name, variant));
            // 10.<1..10>.<0..99>.<1..10>: every endpoint address distinct.
            let list: Vec<(SocketAddr, u32)> = (0..ENDPOINTS_PER_SERVICE)
                .map(|j| {
                    let ip = Ipv4Addr::new(10, 1 + (i / 100) as u8, (i % 100) as u8, 1 + j as u8);
                    (SocketAddr::from((ip, 9080)), weight)
                })
                .collect();
            eps.push(endpoints(&name, &list));
        }
        for p in 0..ROUTE_PORTS {
            let port = FIRST_ROUTE_PORT + p as u16;
            listeners.push(varied_listener(port, variant));
            let vhosts = (0..SERVICES_PER_PORT)
                .map(|k| {
                    let i = p * SERVICES_PER_PORT + k;
                    let vip = Ipv4Addr::new(10, 97, (i / 200) as u8, (i % 200) as u8 + 1);
                    service_vhost(
                        &format!("svc-{i}"),
                        "bench",
                        vip,
                        port,
                        &service_cluster(i),
                        variant,
                    )
                })
                .collect();
            routes.push(route_config(&port.to_string(), vhosts));
        }
    }
    Config {
        clusters,
        endpoints: eps,
        listeners,
        routes,
    }
}

/// Dropped in field order: the proxy is killed first, the namespace removed last (also
/// when a failed push panics).
struct Bench {
    proxy: Process,
    server: XdsServer,
    rt: tokio::runtime::Runtime,
    ns: Netns,
}

/// One push as measured from outside and by the proxy itself.
struct Push {
    /// First `set` → the last ACK of the new versions.
    applied: Duration,
    /// The four `set`s alone (the test server hashing the resources).
    sets: Duration,
    /// `skiff_xds_apply_seconds`: sum and count added by this push.
    proxy_sum: f64,
    proxy_count: u64,
    rss_kib: u64,
    /// Per type: the last ACK of its new version, after the first `set`.
    acks: Vec<(&'static str, Duration)>,
}

impl Bench {
    fn push(&self, config: Config) -> Push {
        let (sum_before, count_before) = self.apply_histogram();
        let since = self.server.requests().len();
        let started = Instant::now();
        self.server.set(type_url::CLUSTER, config.clusters);
        self.server.set(type_url::ENDPOINT, config.endpoints);
        self.server.set(type_url::LISTENER, config.listeners);
        self.server.set(type_url::ROUTE, config.routes);
        let sets = started.elapsed();
        let versions: Vec<(&str, &'static str, String)> = TYPES
            .iter()
            .map(|(t, label)| (*t, *label, self.server.version(t)))
            .collect();
        let last_ack = self.rt.block_on(async {
            let mut next = since;
            let mut acked: BTreeMap<&str, Instant> = BTreeMap::new();
            let mut last = None;
            loop {
                let left = if acked.len() == versions.len() {
                    QUIET
                } else {
                    PATIENCE.saturating_sub(started.elapsed())
                };
                let Some(request) = self.server.wait_for_since(next, left, |_| true).await else {
                    break;
                };
                let at = Instant::now();
                next += 1;
                if let Some((code, reason)) = &request.error {
                    panic!(
                        "the proxy NACKed {} (code {code}): {reason}",
                        request.type_url
                    );
                }
                if let Some((t, _, _)) = versions.iter().find(|(t, _, v)| {
                    request.is_ack() && request.type_url == *t && request.version_info == *v
                }) {
                    acked.insert(t, at);
                    last = Some(at);
                }
            }
            if acked.len() < versions.len() {
                panic!(
                    "the proxy did not ACK the push within {PATIENCE:?}: no ACK of {}",
                    versions
                        .iter()
                        .filter(|(t, _, _)| !acked.contains_key(t))
                        .map(|(_, label, v)| format!("{label} version {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            let acks: Vec<(&'static str, Duration)> = versions
                .iter()
                .map(|(t, label, _)| (*label, acked[t] - started))
                .collect();
            (last.expect("an ACK was seen"), acks)
        });
        let (last_ack, acks) = last_ack;
        let rss_kib = status_kib(self.proxy.pid(), "VmRSS:");
        let (sum_after, count_after) = self.apply_histogram();
        self.report_warnings();
        Push {
            applied: last_ack - started,
            sets,
            proxy_sum: sum_after - sum_before,
            proxy_count: count_after - count_before,
            rss_kib,
            acks,
        }
    }

    /// `skiff_xds_apply_seconds` sum and count from the proxy's Prometheus endpoint.
    fn apply_histogram(&self) -> (f64, u64) {
        let text = self.ns.run(|| {
            let mut s = TcpStream::connect("127.0.0.1:15090").expect("connect to 15090");
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"GET /stats/prometheus HTTP/1.0\r\nHost: localhost\r\n\r\n")
                .unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).expect("read the metrics");
            text
        });
        let sample = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no {name} in the proxy's metrics"))
        };
        (
            sample("skiff_xds_apply_seconds_sum"),
            sample("skiff_xds_apply_seconds_count") as u64,
        )
    }

    /// Prints the proxy's warnings and errors logged since the last call.
    fn report_warnings(&self) {
        while let Ok(line) = self.proxy.log.try_recv() {
            if line.contains("WARN") || line.contains("ERROR") {
                eprintln!("proxy: {line}");
            }
        }
    }

    /// The number of resources of each type the proxy holds, from /config_dump.
    fn held(&self) -> Vec<(&'static str, usize)> {
        let body = self.ns.run(|| {
            let mut s = TcpStream::connect("127.0.0.1:15000").expect("connect to 15000");
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(b"GET /config_dump HTTP/1.0\r\nHost: localhost\r\n\r\n")
                .unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).expect("read the config dump");
            text.split_once("\r\n\r\n")
                .map(|(_, b)| b.to_owned())
                .unwrap_or_default()
        });
        let dump: serde_json::Value = serde_json::from_str(&body).expect("config dump JSON");
        TYPES
            .iter()
            .map(|(t, label)| {
                let n = dump["xds"]["types"][*t]["resources"]
                    .as_object()
                    .map_or(0, |m| m.len());
                (*label, n)
            })
            .collect()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn list(values: &[f64]) -> String {
    values
        .iter()
        .map(|v| format!("{v:.1}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    let mut rounds = 3usize;
    let mut protocol = "delta".to_owned();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "delta" | "sotw" => protocol = arg,
            n => match n.parse::<usize>() {
                Ok(n) => rounds = n.max(1),
                Err(_) => {
                    eprintln!("usage: skiff-bench-xds [ROUNDS] [delta|sotw]");
                    std::process::exit(2);
                }
            },
        }
    }
    if !skiff_tests::can_run_as_root("skiff-bench-xds") {
        std::process::exit(1);
    }
    let ns = Netns::new("bxds").expect("create the namespace");
    let listener = ns
        .run(|| std::net::TcpListener::bind("127.0.0.1:15010"))
        .expect("xDS listener");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = rt.block_on(XdsServer::start(vec![listener]));
    let small = config(0, false);
    server.set(type_url::CLUSTER, small.clusters);
    server.set(type_url::ENDPOINT, small.endpoints);
    server.set(type_url::LISTENER, small.listeners);
    server.set(type_url::ROUTE, small.routes);
    let proxy = start_xds_proxy(
        &ns,
        XDS,
        &protocol,
        "bench",
        Ipv4Addr::new(10, 44, 0, 1).into(),
    );
    let bench = Bench {
        proxy,
        server,
        rt,
        ns,
    };
    // Ready means published; the ACKs follow at once. Let them and the first scrape settle.
    std::thread::sleep(Duration::from_millis(500));
    bench.apply_histogram();
    let idle_kib = status_kib(bench.proxy.pid(), "VmRSS:");

    // The baseline: the same four types, small, each push changing every resource.
    let mut variant = 0;
    let mut small_pushes = Vec::new();
    for _ in 0..rounds {
        variant ^= 1;
        small_pushes.push(bench.push(config(variant, false)));
    }
    let small_rss = small_pushes.last().map_or(0, |p| p.rss_kib);

    // Push 1 adds the 1,000 services; pushes 2.. change every resource of them.
    variant ^= 1;
    let first = bench.push(config(variant, true));
    let held = bench.held();
    let mut big_pushes = Vec::new();
    for _ in 0..rounds {
        variant ^= 1;
        big_pushes.push(bench.push(config(variant, true)));
    }
    let peak_kib = status_kib(bench.proxy.pid(), "VmHWM:");

    let mut small_ms: Vec<f64> = small_pushes.iter().map(|p| ms(p.applied)).collect();
    let mut big_ms: Vec<f64> = big_pushes.iter().map(|p| ms(p.applied)).collect();
    let (small_runs, big_runs) = (list(&small_ms), list(&big_ms));
    let (small_med, big_med) = (median(&mut small_ms), median(&mut big_ms));
    let proxy_ms = |pushes: &[Push]| {
        let mut v: Vec<f64> = pushes.iter().map(|p| p.proxy_sum * 1e3).collect();
        median(&mut v)
    };
    let proxy_publishes = |pushes: &[Push]| {
        let mut v: Vec<f64> = pushes.iter().map(|p| p.proxy_count as f64).collect();
        median(&mut v)
    };
    let sets_ms = |pushes: &[Push]| {
        let mut v: Vec<f64> = pushes.iter().map(|p| ms(p.sets)).collect();
        median(&mut v)
    };

    println!(
        "xDS push apply time, one skiff-proxy over {protocol} ADS, {rounds} rounds; a push sets CDS, EDS, LDS, RDS (istiod's order) and counts as applied at the proxy's last ACK of the four new versions"
    );
    println!(
        "big push = 1,000 EDS clusters + 10,000 endpoints (10 each, distinct addresses) + 100 listeners 0.0.0.0_10000..10099 + 100 RouteConfigurations \"10000\"..\"10099\" × 10 virtual hosts × 1 route = 1,000 routes, on top of the small config; small push = 2 EDS clusters, 2 endpoints, 1 HTTP listener, 1 RouteConfiguration with 2 routes (+ passthrough/inbound clusters and the virtual listeners, unchanged)"
    );
    println!(
        "| push | applied, median | runs | proxy-side apply (skiff_xds_apply_seconds Σ per push) | test server set() | proxy RSS after |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| small, every resource changed (baseline) | {small_med:.1} ms | {small_runs} | {:.2} ms over {:.0} publishes | {:.2} ms | {:.1} MiB |",
        proxy_ms(&small_pushes),
        proxy_publishes(&small_pushes),
        sets_ms(&small_pushes),
        mib(small_rss)
    );
    println!(
        "| big, first (adds everything) | {:.1} ms | {:.1} | {:.2} ms over {} publishes | {:.2} ms | {:.1} MiB |",
        ms(first.applied),
        ms(first.applied),
        first.proxy_sum * 1e3,
        first.proxy_count,
        ms(first.sets),
        mib(first.rss_kib)
    );
    println!(
        "| big, every resource changed | {big_med:.1} ms | {big_runs} | {:.2} ms over {:.0} publishes | {:.2} ms | {} MiB |",
        proxy_ms(&big_pushes),
        proxy_publishes(&big_pushes),
        sets_ms(&big_pushes),
        big_pushes
            .iter()
            .map(|p| format!("{:.1}", mib(p.rss_kib)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "big / small push: applied {:.1}x (changes), {:.1}x (first, adds)",
        big_med / small_med,
        ms(first.applied) / small_med
    );
    let after = |i: usize| big_pushes.get(i).map_or(0, |p| p.rss_kib);
    println!(
        "proxy RSS: idle {:.1} MiB; after big push 1 {:.1} MiB ({:.2}x idle), push 2 {:.1} MiB ({:.2}x), push {} {:.1} MiB ({:.2}x); peak (VmHWM) {:.1} MiB",
        mib(idle_kib),
        mib(first.rss_kib),
        first.rss_kib as f64 / idle_kib as f64,
        mib(after(0)),
        after(0) as f64 / idle_kib as f64,
        rounds + 1,
        mib(after(rounds - 1)),
        after(rounds - 1) as f64 / idle_kib as f64,
        mib(peak_kib)
    );
    // For skiff-bench's report (bench/src/xds_push.rs reads this line).
    println!(
        "skiff-bench-xds rss_kib: idle={idle_kib} first={} replace={} peak={peak_kib}",
        first.rss_kib,
        after(rounds - 1)
    );
    let breakdown = |p: &Push| {
        p.acks
            .iter()
            .map(|(label, d)| format!("{label} {:.1}", ms(*d)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "last ACK of each type after the first set (ms): first big push {}; last big push {}",
        breakdown(&first),
        breakdown(big_pushes.last().expect("one round at least"))
    );
    println!(
        "held after the first big push (/config_dump): {}",
        held.iter()
            .map(|(label, n)| format!("{label} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
