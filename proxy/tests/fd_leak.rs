//! 10,000 connections through the data path, some forwarded and some refused, must leave
//! the process with the file descriptors it had before. Its own test binary, so no other
//! test opens descriptors meanwhile.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skiff_proxy::listener::{
    ConnectionInfo, ConnectionStats, OriginalDst, Proxy, Telemetry, Tracker,
};
use skiff_proxy::snapshot::{
    ChainMatch, Cluster, ClusterChoice, Detection, Direction, Discovery, FilterChain, Handler,
    Listener, PASSTHROUGH_CLUSTER, Snapshot, TcpProxy,
};
use skiff_proxy::tcp::End;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

struct Origins(Mutex<HashMap<u16, SocketAddr>>);

impl OriginalDst for Origins {
    fn lookup(&self, stream: &TcpStream) -> Option<SocketAddr> {
        let port = stream.peer_addr().ok()?.port();
        self.0.lock().unwrap().remove(&port)
    }
}

struct Quiet;
struct NoStats;

impl ConnectionStats for NoStats {
    fn to_upstream(&self, _: u64) {}
    fn to_downstream(&self, _: u64) {}
    fn closed(&self, _: End) {}
}

impl Telemetry for Quiet {
    fn connection(&self, _: &ConnectionInfo) -> Box<dyn ConnectionStats> {
        Box::new(NoStats)
    }
    fn error(&self, _: &'static str) {}
    fn request(&self, _: Direction, _: &str, _: skiff_proxy::metrics::RequestOutcome) {}
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connections_leak_no_descriptor() {
    // The echo app every forwarded connection reaches.
    let app = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = app.local_addr().unwrap();
    // Open app-side connections, so the count is taken when the app has closed its side too.
    let app_open = Arc::new((
        std::sync::atomic::AtomicUsize::new(0),
        tokio::sync::Notify::new(),
    ));
    let counter = app_open.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = app.accept().await {
            counter.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let counter = counter.clone();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                drop(s);
                counter.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                counter.1.notify_waiters();
            });
        }
    });
    let app_idle = || {
        let app_open = app_open.clone();
        async move {
            loop {
                let notified = app_open.1.notified();
                if app_open.0.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        }
    };
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
            timeout: Duration::from_millis(50),
        },
        detection_skip_ports: Vec::new(),
        filter_chains: Vec::new(),
        default_chain: Some(FilterChain {
            name: "catch-all".into(),
            matcher: ChainMatch::default(),
            handler: Handler::Tcp(TcpProxy {
                stat_prefix: "passthrough".into(),
                cluster: ClusterChoice::Single(PASSTHROUGH_CLUSTER.into()),
                idle_timeout: Duration::from_secs(60),
            }),
            tls: None,
        }),
    }));
    let passthrough = Cluster::new(PASSTHROUGH_CLUSTER, Discovery::OriginalDst, vec![]);
    snapshot
        .clusters
        .insert(passthrough.name.clone(), Arc::new(passthrough));
    let snapshot = Arc::new(snapshot);
    let origins = Arc::new(Origins(Mutex::new(HashMap::new())));
    let tracker = Arc::new(Tracker::default());
    let lookup = origins.clone();
    struct Shared(Arc<Origins>);
    impl OriginalDst for Shared {
        fn lookup(&self, stream: &TcpStream) -> Option<SocketAddr> {
            self.0.lookup(stream)
        }
    }
    let mut proxy = Proxy::new(move || snapshot.clone(), Shared(lookup), Arc::new(Quiet));
    proxy.tracker = tracker.clone();
    let proxy = Arc::new(proxy);
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(proxy.serve(socket, port, stopped));

    let one = |i: usize| {
        let origins = origins.clone();
        async move {
            let s = TcpSocket::new_v4().unwrap();
            s.bind("127.0.0.1:0".parse().unwrap()).unwrap();
            // Every third connection targets the capture port itself (refused by the loop
            // guard); the others are forwarded to the app and echoed.
            let refused = i.is_multiple_of(3);
            let to = if refused {
                SocketAddr::from(([127, 0, 0, 1], port))
            } else {
                app_addr
            };
            origins
                .0
                .lock()
                .unwrap()
                .insert(s.local_addr().unwrap().port(), to);
            let mut stream = s
                .connect(SocketAddr::from(([127, 0, 0, 1], port)))
                .await
                .unwrap();
            if refused {
                let mut buf = Vec::new();
                let _ = stream.read_to_end(&mut buf).await;
            } else {
                stream.write_all(b"ping").await.unwrap();
                let mut buf = [0u8; 4];
                stream.read_exact(&mut buf).await.unwrap();
                assert_eq!(&buf, b"ping");
            }
        }
    };
    // Warm up the runtime's own descriptors before counting.
    one(1).await;
    tracker.wait_idle().await;
    app_idle().await;
    let before = open_fds();

    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..10_000 {
        tasks.spawn(one(i));
        if tasks.len() >= 64 {
            tasks.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(30), async {
        tracker.wait_idle().await;
        app_idle().await;
    })
    .await
    .expect("all connections end");
    let after = open_fds();
    assert_eq!(
        after, before,
        "descriptors before and after 10,000 connections"
    );
}
