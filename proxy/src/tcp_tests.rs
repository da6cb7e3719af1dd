use super::*;
use crate::snapshot::{Endpoint, LbPolicy};
use crate::splice::tests::socket_pair;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::duplex;
use tokio::net::TcpListener;

fn ignore(_: Direction, _: u64) {}

#[tokio::test]
async fn half_close_lets_the_response_through() {
    let (client, proxy_down) = duplex(1024);
    let (proxy_up, server) = duplex(1024);
    let relay = tokio::spawn(async move {
        forward(
            Buffered(proxy_down),
            Buffered(proxy_up),
            b"hel",
            Duration::from_secs(5),
            ignore,
        )
        .await
    });
    let (mut client_r, mut client_w) = tokio::io::split(client);
    let (mut server_r, mut server_w) = tokio::io::split(server);

    client_w.write_all(b"lo").await.unwrap();
    client_w.shutdown().await.unwrap();
    let mut request = Vec::new();
    server_r.read_to_end(&mut request).await.unwrap();
    assert_eq!(
        request, b"hello",
        "detected bytes first, then the rest, then EOF"
    );

    server_w.write_all(b"world").await.unwrap();
    server_w.shutdown().await.unwrap();
    let mut response = Vec::new();
    client_r.read_to_end(&mut response).await.unwrap();
    assert_eq!(response, b"world");

    let transfer = relay.await.unwrap();
    assert_eq!(
        transfer,
        Transfer {
            sent: 5,
            received: 5,
            end: End::Closed
        }
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_closed_after_the_timeout() {
    let (_client, proxy_down) = duplex(64);
    let (proxy_up, _server) = duplex(64);
    let started = tokio::time::Instant::now();
    let transfer = forward(
        Buffered(proxy_down),
        Buffered(proxy_up),
        b"",
        Duration::from_secs(30),
        ignore,
    )
    .await;
    assert_eq!(transfer.end, End::IdleTimeout);
    assert!(started.elapsed() >= Duration::from_secs(30));
    assert!(started.elapsed() < Duration::from_secs(31));
}

#[tokio::test(start_paused = true)]
async fn activity_postpones_the_idle_timeout() {
    let (mut client, proxy_down) = duplex(64);
    let (proxy_up, mut server) = duplex(64);
    let relay = tokio::spawn(forward(
        Buffered(proxy_down),
        Buffered(proxy_up),
        b"",
        Duration::from_secs(10),
        ignore,
    ));
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(8)).await;
        client.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        server.read_exact(&mut one).await.unwrap();
    }
    let transfer = relay.await.unwrap();
    assert_eq!(transfer.end, End::IdleTimeout);
    assert_eq!(transfer.sent, 3, "bytes before the timeout are counted");
}

fn cluster(addrs: &[SocketAddr]) -> Arc<Cluster> {
    let mut c = Cluster::new(
        "outbound|80||web",
        Discovery::Static,
        addrs.iter().map(|a| Endpoint::new(*a)).collect(),
    );
    c.lb_policy = LbPolicy::RoundRobin;
    c.connect_timeout = Duration::from_secs(2);
    Arc::new(c)
}

/// A loopback address that refuses connections: bound but not listening, and held (keep
/// the socket) so that no other test process can take the port meanwhile.
async fn closed_port() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

#[tokio::test]
async fn an_unreachable_endpoint_is_followed_by_the_next() {
    let live = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (_held, dead) = closed_port().await;
    let c = cluster(&[dead, live.local_addr().unwrap()]);
    for _ in 0..4 {
        let upstream = connect(&c, dead).await.unwrap();
        assert_eq!(upstream.addr, live.local_addr().unwrap());
        assert_eq!(
            c.endpoints[1].active(),
            1,
            "the live endpoint counts the open connection"
        );
        drop(upstream);
        assert_eq!(c.endpoints[1].active(), 0);
        assert_eq!(
            c.endpoints[0].active(),
            0,
            "a failed attempt releases its count"
        );
    }
}

#[tokio::test]
async fn connect_failures_have_reasons() {
    let (_held, dead) = closed_port().await;
    let err = connect(&cluster(&[dead]), dead).await.err().unwrap();
    assert_eq!(err.reason(), "connect_refused");
    let err = connect(&cluster(&[]), dead).await.err().unwrap();
    assert_eq!(err.reason(), "no_endpoint");
    let hole = Arc::new(Cluster::new(
        "BlackHoleCluster",
        Discovery::BlackHole,
        vec![],
    ));
    assert_eq!(
        connect(&hole, dead).await.err().unwrap().reason(),
        "blackhole"
    );
}

#[tokio::test]
async fn original_dst_clusters_dial_the_original_destination() {
    let live = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut c = Cluster::new("PassthroughCluster", Discovery::OriginalDst, vec![]);
    c.upstream_bind = vec!["127.0.0.6".parse().unwrap(), "::6".parse().unwrap()];
    let upstream = connect(&Arc::new(c), live.local_addr().unwrap())
        .await
        .unwrap();
    let (_, peer) = live.accept().await.unwrap();
    assert_eq!(
        peer.ip(),
        "127.0.0.6".parse::<IpAddr>().unwrap(),
        "bound to the passthrough source"
    );
    assert_eq!(upstream.addr, live.local_addr().unwrap());
}

#[tokio::test]
async fn a_bulk_stream_between_sockets_arrives_whole_both_ways() {
    let (mut client, proxy_down) = socket_pair().await;
    let (proxy_up, mut server) = socket_pair().await;
    let counted = Arc::new(AtomicU64::new(0));
    let relay = {
        let counted = counted.clone();
        tokio::spawn(async move {
            forward(
                proxy_down,
                proxy_up,
                b"GO",
                Duration::from_secs(5),
                move |_, n| {
                    counted.fetch_add(n, Ordering::Relaxed);
                },
            )
            .await
        })
    };
    // Several megabytes each way: past the first full buffer the relay splices.
    let up: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
    let down: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
    let (mut client_r, mut client_w) = client.split();
    let (mut server_r, mut server_w) = server.split();
    let send_up = async {
        client_w.write_all(&up).await.unwrap();
        client_w.shutdown().await.unwrap();
    };
    let receive_up = async {
        let mut got = Vec::new();
        server_r.read_to_end(&mut got).await.unwrap();
        got
    };
    let send_down = async {
        server_w.write_all(&down).await.unwrap();
        server_w.shutdown().await.unwrap();
    };
    let receive_down = async {
        let mut got = Vec::new();
        client_r.read_to_end(&mut got).await.unwrap();
        got
    };
    let ((), got_up, (), got_down) = tokio::join!(send_up, receive_up, send_down, receive_down);
    assert!(
        got_up[..2] == *b"GO" && got_up[2..] == up,
        "upstream bytes intact"
    );
    assert!(got_down == down, "downstream bytes intact");
    let transfer = relay.await.unwrap();
    assert_eq!(
        transfer,
        Transfer {
            sent: up.len() as u64 + 2,
            received: down.len() as u64,
            end: End::Closed
        }
    );
    assert_eq!(
        counted.load(Ordering::Relaxed),
        transfer.sent + transfer.received,
        "every byte reported to the metrics"
    );
}
