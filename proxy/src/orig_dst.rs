//! Recovering where a redirected connection was going. iptables REDIRECT rewrites the
//! destination to the proxy's capture port; conntrack keeps the original, which the
//! `SO_ORIGINAL_DST` socket option (IPv4) and its `IP6T_SO_ORIGINAL_DST` twin return.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsFd;

use nix::sys::socket::{getsockopt, sockopt};

/// Why the original destination could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OrigDstError {
    #[error("cannot read the socket's local address: {0}")]
    LocalAddr(#[source] std::io::Error),
    #[error(
        "SO_ORIGINAL_DST failed ({0}): the connection was not redirected by iptables \
         (no conntrack entry), or the nf_conntrack module is missing"
    )]
    Sockopt(#[source] nix::Error),
}

/// The destination the peer dialled before an iptables REDIRECT. The socket's own family
/// picks the option: an IPv6 socket needs `IP6T_SO_ORIGINAL_DST`.
///
/// For a connection that was not redirected but is tracked, this is simply its destination.
pub fn original_dst<S: AsFd>(socket: &S, local: SocketAddr) -> Result<SocketAddr, OrigDstError> {
    match local {
        SocketAddr::V4(_) => {
            let sin = getsockopt(socket, sockopt::OriginalDst).map_err(OrigDstError::Sockopt)?;
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Ok(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        SocketAddr::V6(_) => {
            let sin6 =
                getsockopt(socket, sockopt::Ip6tOriginalDst).map_err(OrigDstError::Sockopt)?;
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Ok(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
    }
}

/// [`original_dst`] for a std TCP stream, reading its local address itself.
pub fn original_dst_of(stream: &std::net::TcpStream) -> Result<SocketAddr, OrigDstError> {
    let local = stream.local_addr().map_err(OrigDstError::LocalAddr)?;
    original_dst(stream, local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    /// Without a redirect there is no NAT mapping; the kernel either reports the real
    /// destination (conntrack loaded) or fails (no conntrack): never a different address.
    #[test]
    fn unredirected_connection_is_its_own_destination_or_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).unwrap();
        let (server, _) = listener.accept().unwrap();
        match original_dst_of(&server) {
            Ok(dst) => assert_eq!(dst, addr),
            Err(err) => assert!(err.to_string().contains("SO_ORIGINAL_DST"), "{err}"),
        }
    }
}
