//! The sockets side of the xDS test server: accept loops that hand connections to the
//! serving epoch (or reset them while stopped), and the gRPC server over those connections.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use tokio::sync::oneshot;

use super::streams::Ads;
use super::{Inner, lock};

pub(super) fn close_all(conns: Vec<OwnedFd>) {
    for fd in conns {
        let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
    }
}

pub(super) fn bind_unix(path: &Path) -> tokio::net::UnixListener {
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path)
        .unwrap_or_else(|err| panic!("bind the xDS socket {}: {err}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))
        .unwrap_or_else(|err| panic!("chmod the xDS socket {}: {err}", path.display()));
    listener
        .set_nonblocking(true)
        .expect("set the xDS socket non-blocking");
    tokio::net::UnixListener::from_std(listener).expect("register the xDS socket")
}

/// Accepts for as long as the server lives; hands connections to the serving epoch, or
/// resets them at once while stopped.
pub(super) async fn accept_tcp(inner: Arc<Inner>, listener: tokio::net::TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors or the like: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let serving = {
            let mut state = lock(&inner.state);
            state.epoch.as_mut().map(|epoch| {
                if let Ok(fd) = stream.as_fd().try_clone_to_owned() {
                    epoch.conns.push(fd);
                }
                epoch.tcp.clone()
            })
        };
        match serving {
            Some(tx) => {
                let _ = tx.send(stream).await;
            }
            None => {
                let _ = stream.set_zero_linger();
            }
        }
    }
}

pub(super) async fn accept_unix(inner: Arc<Inner>, listener: tokio::net::UnixListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let serving = {
            let mut state = lock(&inner.state);
            state.epoch.as_mut().map(|epoch| {
                if let Ok(fd) = stream.as_fd().try_clone_to_owned() {
                    epoch.conns.push(fd);
                }
                epoch.unix.clone()
            })
        };
        if let Some(tx) = serving {
            let _ = tx.send(stream).await;
        }
    }
}

/// One gRPC server over the connections handed to it, until `stopped` fires.
pub(super) async fn serve<IO>(
    inner: Arc<Inner>,
    incoming: impl tokio_stream::Stream<Item = Result<IO, std::io::Error>> + Send + 'static,
    stopped: oneshot::Receiver<()>,
) where
    IO: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
{
    let service = AggregatedDiscoveryServiceServer::new(Ads { inner })
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(usize::MAX);
    let _ = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stopped.await;
        })
        .await;
}
