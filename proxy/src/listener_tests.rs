use std::collections::HashMap;
use std::sync::Mutex;

use tokio::io::AsyncWriteExt;

use super::*;
use crate::snapshot::{
    BLACKHOLE_CLUSTER, ChainMatch, Cluster, ClusterChoice, Detection, Discovery, Endpoint,
    FilterChain, PASSTHROUGH_CLUSTER, TcpProxy,
};

/// Original destinations by client port, as the kernel would report them.
struct FakeOriginalDst(Mutex<HashMap<u16, SocketAddr>>);

impl OriginalDst for FakeOriginalDst {
    fn lookup(&self, stream: &TcpStream) -> Option<SocketAddr> {
        let port = stream.peer_addr().ok()?.port();
        self.0.lock().unwrap().get(&port).copied()
    }
}

#[derive(Default)]
struct Recorder {
    errors: Mutex<Vec<&'static str>>,
    closed: Mutex<Vec<(String, End)>>,
    closed_signal: Notify,
}

struct Stats(Arc<Recorder>, String);

impl ConnectionStats for Stats {
    fn to_upstream(&self, _: u64) {}
    fn to_downstream(&self, _: u64) {}
    fn closed(&self, end: End) {
        self.0.closed.lock().unwrap().push((self.1.clone(), end));
        self.0.closed_signal.notify_waiters();
    }
}

struct Telemetry(Arc<Recorder>);

impl super::Telemetry for Telemetry {
    fn connection(&self, info: &ConnectionInfo) -> Box<dyn ConnectionStats> {
        Box::new(Stats(self.0.clone(), info.cluster.clone()))
    }
    fn error(&self, reason: &'static str) {
        self.0.errors.lock().unwrap().push(reason);
        self.0.closed_signal.notify_waiters();
    }
    fn request(&self, _: Direction, _: &str, _: RequestOutcome) {}
}

fn tcp_chain(name: &str, cluster: &str, matcher: ChainMatch) -> FilterChain {
    FilterChain {
        name: name.into(),
        matcher,
        handler: Handler::Tcp(TcpProxy {
            stat_prefix: name.into(),
            cluster: ClusterChoice::Single(cluster.into()),
            idle_timeout: Duration::from_secs(60),
        }),
        tls: None,
    }
}

struct Harness {
    port: u16,
    origins: Arc<FakeOriginalDst>,
    recorder: Arc<Recorder>,
    stop: watch::Sender<bool>,
}

/// A proxy on 127.0.0.1:<port> with a virtual outbound listener (catch-all `catch_all`), a
/// service listener for 10.96.0.7:9080 → `service_endpoint`.
async fn harness(service_endpoint: SocketAddr, catch_all: &str) -> Harness {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    let mut snapshot = Snapshot::default();
    snapshot.listeners.push(Arc::new(Listener {
        name: "virtualOutbound".into(),
        address: SocketAddr::from(([0, 0, 0, 0], port)),
        bind_to_port: true,
        use_original_dst: true,
        direction: Direction::Outbound,
        detection: Detection {
            enabled: true,
            timeout: Duration::from_millis(200),
        },
        detection_skip_ports: Vec::new(),
        filter_chains: vec![],
        default_chain: Some(tcp_chain("catch-all", catch_all, ChainMatch::default())),
    }));
    snapshot.listeners.push(Arc::new(Listener {
        name: "10.96.0.7_9080".into(),
        address: "10.96.0.7:9080".parse().unwrap(),
        bind_to_port: false,
        use_original_dst: false,
        direction: Direction::Outbound,
        detection: Detection {
            enabled: true,
            timeout: Duration::from_millis(200),
        },
        detection_skip_ports: Vec::new(),
        filter_chains: vec![tcp_chain(
            "reviews",
            "outbound|9080||reviews",
            ChainMatch::default(),
        )],
        default_chain: None,
    }));
    for cluster in [
        Cluster::new(
            "outbound|9080||reviews",
            Discovery::Static,
            vec![Endpoint::new(service_endpoint)],
        ),
        Cluster::new(PASSTHROUGH_CLUSTER, Discovery::OriginalDst, vec![]),
        Cluster::new(BLACKHOLE_CLUSTER, Discovery::BlackHole, vec![]),
    ] {
        snapshot
            .clusters
            .insert(cluster.name.clone(), Arc::new(cluster));
    }
    let snapshot = Arc::new(snapshot);
    let origins = Arc::new(FakeOriginalDst(Mutex::new(HashMap::new())));
    let recorder = Arc::new(Recorder::default());
    let proxy = Arc::new(Proxy {
        snapshot: Arc::new(move || snapshot.clone()),
        original_dst: Box::new(SharedOrigins(origins.clone())),
        telemetry: Arc::new(Telemetry(recorder.clone())),
        tracker: Arc::new(Tracker::default()),
        pools: Pools::new(),
        access_logs: Arc::new(AccessLogs::new(|_| None)),
    });
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(proxy.serve(socket, port, stopped));
    Harness {
        port,
        origins,
        recorder,
        stop,
    }
}

struct SharedOrigins(Arc<FakeOriginalDst>);

impl OriginalDst for SharedOrigins {
    fn lookup(&self, stream: &TcpStream) -> Option<SocketAddr> {
        self.0.lookup(stream)
    }
}

impl Harness {
    /// Connects "as if redirected" from a client socket whose original destination is `to`.
    async fn connect(&self, to: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let client_port = socket.local_addr().unwrap().port();
        self.origins.0.lock().unwrap().insert(client_port, to);
        socket
            .connect(SocketAddr::from(([127, 0, 0, 1], self.port)))
            .await
            .unwrap()
    }

    async fn wait_for_end(&self, what: impl Fn(&Recorder) -> bool) {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let notified = self.recorder.closed_signal.notified();
                if what(&self.recorder) {
                    return;
                }
                notified.await;
            }
        })
        .await
        .expect("the connection should have ended");
    }
}

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

async fn roundtrip(stream: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    stream.write_all(message).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

#[tokio::test]
async fn a_service_address_is_handed_to_its_listener_and_cluster() {
    let echo = echo_server().await;
    let h = harness(echo, PASSTHROUGH_CLUSTER).await;
    let mut client = h.connect("10.96.0.7:9080".parse().unwrap()).await;
    assert_eq!(
        roundtrip(&mut client, b"GET / HTTP/1.1\r\n\r\n").await,
        b"GET / HTTP/1.1\r\n\r\n"
    );
    h.wait_for_end(|r| !r.closed.lock().unwrap().is_empty())
        .await;
    assert_eq!(
        h.recorder.closed.lock().unwrap()[0],
        ("outbound|9080||reviews".into(), End::Closed)
    );
}

#[tokio::test]
async fn unknown_destinations_pass_through_to_the_original_address() {
    let echo = echo_server().await;
    let h = harness("127.0.0.1:1".parse().unwrap(), PASSTHROUGH_CLUSTER).await;
    let mut client = h.connect(echo).await;
    assert_eq!(
        roundtrip(&mut client, b"opaque bytes").await,
        b"opaque bytes"
    );
}

#[tokio::test]
async fn server_first_protocols_work_after_the_detection_timeout() {
    let greeter = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = greeter.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = greeter.accept().await.unwrap();
        s.write_all(b"220 mysql-ish greeting\r\n").await.unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
    });
    let h = harness(addr, PASSTHROUGH_CLUSTER).await;
    let mut client = h.connect("10.96.0.7:9080".parse().unwrap()).await;
    let mut greeting = [0u8; 24];
    tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut greeting))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&greeting, b"220 mysql-ish greeting\r\n");
}

#[tokio::test]
async fn the_capture_port_itself_is_refused() {
    let h = harness("127.0.0.1:1".parse().unwrap(), PASSTHROUGH_CLUSTER).await;
    let mut client = h.connect(SocketAddr::from(([10, 0, 0, 1], h.port))).await;
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(n.is_err() || buf.is_empty(), "closed without data");
    h.wait_for_end(|r| r.errors.lock().unwrap().contains(&"loop"))
        .await;
}

#[tokio::test]
async fn blackhole_and_unreachable_upstreams_close_with_a_reason() {
    let h = harness("127.0.0.1:1".parse().unwrap(), BLACKHOLE_CLUSTER).await;
    let mut client = h.connect("192.0.2.1:80".parse().unwrap()).await;
    client.write_all(b"x").await.unwrap();
    h.wait_for_end(|r| r.errors.lock().unwrap().contains(&"blackhole"))
        .await;

    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let h = harness(closed, PASSTHROUGH_CLUSTER).await;
    let mut client = h.connect("10.96.0.7:9080".parse().unwrap()).await;
    client.write_all(b"x").await.unwrap();
    h.wait_for_end(|r| r.errors.lock().unwrap().contains(&"connect_refused"))
        .await;
    let _ = h.stop.send(true);
}

#[test]
fn the_most_specific_chain_wins() {
    let port_chain = tcp_chain(
        "port",
        "a",
        ChainMatch {
            destination_port: Some(80),
            ..ChainMatch::default()
        },
    );
    let tls_chain = tcp_chain(
        "tls",
        "b",
        ChainMatch {
            transport_protocol: Some(Transport::Tls),
            ..ChainMatch::default()
        },
    );
    let wide = tcp_chain(
        "wide",
        "c",
        ChainMatch {
            prefix_ranges: vec!["10.0.0.0/8".parse().unwrap()],
            ..ChainMatch::default()
        },
    );
    let narrow = tcp_chain(
        "narrow",
        "d",
        ChainMatch {
            prefix_ranges: vec!["10.1.0.0/16".parse().unwrap()],
            ..ChainMatch::default()
        },
    );
    let listener = Listener {
        name: "l".into(),
        address: "0.0.0.0:15006".parse().unwrap(),
        bind_to_port: true,
        use_original_dst: true,
        direction: Direction::Inbound,
        detection: Detection::default(),
        detection_skip_ports: Vec::new(),
        filter_chains: vec![tls_chain, wide, narrow, port_chain],
        default_chain: Some(tcp_chain("default", "e", ChainMatch::default())),
    };
    let facts = |dst: &str, transport| ConnectionFacts {
        original_dst: Some(dst.parse().unwrap()),
        transport: Some(transport),
        ..ConnectionFacts::default()
    };
    let chosen = |dst, t| {
        choose_chain(&listener, &facts(dst, t))
            .map(|c| c.name.clone())
            .unwrap()
    };
    assert_eq!(
        chosen("10.1.2.3:80", Transport::Tls),
        "port",
        "a destination port beats everything after it"
    );
    assert_eq!(
        chosen("10.1.2.3:81", Transport::RawBuffer),
        "narrow",
        "the longest prefix wins"
    );
    assert_eq!(chosen("10.2.2.3:81", Transport::RawBuffer), "wide");
    assert_eq!(chosen("192.0.2.1:81", Transport::Tls), "tls");
    assert_eq!(chosen("192.0.2.1:81", Transport::RawBuffer), "default");
}
