//! `Upgrade` requests (WebSocket): the handshake goes upstream like any request, over a
//! connection of its own; when the upstream agrees (101), both connections are taken over
//! from HTTP and the bytes are tunnelled both ways until either side closes, as Envoy's
//! `upgrade_configs: websocket` that istiod sets does. Not retried: a handshake that failed
//! is the application's to repeat.

use std::sync::Arc;

use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::ProxyBody;
use super::body::InFlight;
use super::forward::{Conn, Failure, fail};
use super::outgoing::{Outgoing, bind_for, choose_endpoint};
use super::pool::{SendError, Target};
use super::record::Record;
use crate::metrics::ResponseFlags;
use crate::snapshot::{Cluster, DEFAULT_TCP_IDLE_TIMEOUT};
use crate::tcp;

pub(super) async fn forward(
    conn: &Conn,
    cluster: &Arc<Cluster>,
    outgoing: Outgoing,
    downstream: OnUpgrade,
    mut record: Record,
    mut in_flight: InFlight,
) -> hyper::Response<ProxyBody> {
    let Some((addr, index)) = choose_endpoint(cluster, conn.original_dst, &[], false) else {
        return fail(record, Failure::NoHealthyUpstream);
    };
    if cluster.needs_tls(index) {
        return fail(record, Failure::TlsRequired);
    }
    in_flight.at_endpoint(index);
    let target = Target {
        addr,
        version: hyper::Version::HTTP_11,
        bind: bind_for(cluster, addr),
        connect_timeout: cluster.connect_timeout,
        idle_timeout: cluster.http_idle_timeout,
    };
    let empty = Empty::new().map_err(|never| match never {}).boxed_unsync();
    let sent = match conn
        .pools
        .send_upgrade(&target, outgoing.build(empty, 1))
        .await
    {
        Ok(sent) => sent,
        Err(SendError::Connect(err)) => {
            tracing::debug!(cluster = %cluster.name, "{err}");
            return fail(record, Failure::Connect { exhausted: false });
        }
        Err(SendError::Reset { source, .. }) => {
            tracing::debug!(cluster = %cluster.name, "upgrade reset: {source}");
            let reset = Failure::Reset {
                stream: false,
                exhausted: false,
            };
            return fail(record, reset);
        }
    };
    record.upstream(addr, sent.local);
    let mut response = sent.response;
    record.response_code = response.status().as_u16();
    record.details = "via_upstream";
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Refused: an ordinary response, passed on as one.
        let (parts, body) = response.into_parts();
        let body = super::body::ResponseBody::new(
            body.map_err(Into::into).boxed_unsync(),
            record,
            super::body::Timers::none(),
            Some(in_flight),
        );
        return hyper::Response::from_parts(parts, body.boxed_unsync());
    }
    let upstream = hyper::upgrade::on(&mut response);
    let idle = conn.stream_idle.unwrap_or(DEFAULT_TCP_IDLE_TIMEOUT);
    tokio::spawn(async move {
        match tokio::try_join!(downstream, upstream) {
            Ok((down, up)) => {
                let transfer = tcp::forward(
                    tcp::Buffered(TokioIo::new(down)),
                    tcp::Buffered(TokioIo::new(up)),
                    &[],
                    idle,
                    |_, _| {},
                )
                .await;
                record.request_bytes = transfer.sent;
                record.response_bytes = transfer.received;
                match transfer.end {
                    tcp::End::Closed => {}
                    tcp::End::IdleTimeout => record.flags |= ResponseFlags::STREAM_IDLE_TIMEOUT,
                    tcp::End::Error => record.flags |= ResponseFlags::UPSTREAM_REMOTE_RESET,
                }
            }
            Err(err) => {
                tracing::debug!("upgrade failed: {err}");
                record.flags |= ResponseFlags::UPSTREAM_PROTOCOL_ERROR;
            }
        }
        record.finish();
        drop(in_flight);
    });
    let (parts, _) = response.into_parts();
    let empty = Empty::new().map_err(|never| match never {}).boxed_unsync();
    hyper::Response::from_parts(parts, empty)
}
