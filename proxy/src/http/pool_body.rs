//! The body of a pooled upstream response, which hands its HTTP/1.1 connection back to the
//! pool when the response has been read.

use std::pin::Pin;
use std::sync::Weak;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use tokio::time::Instant;

use super::{H1, Key, Pools, after};

/// An upstream response body. An HTTP/1.1 connection goes back to the pool when its
/// response has been read to the end: at once when hyper already reports it ready for the
/// next request (the usual case, as its task has run by the time the proxy sees the last
/// frame), else from a small task that waits for that. A body dropped unfinished closes
/// its connection, which is how a cancelled request ends upstream.
pub struct UpstreamBody {
    pub(super) inner: Incoming,
    pub(super) park: Option<Park>,
}

pub(super) struct Park {
    pub(super) pools: Weak<Pools>,
    pub(super) key: Key,
    pub(super) conn: H1,
    pub(super) idle_timeout: Duration,
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("inner", &self.inner)
            .field("pooled", &self.park.is_some())
            .finish()
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            this.finished();
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl UpstreamBody {
    fn finished(&mut self) {
        if let Some(park) = self.park.take() {
            park.when_ready();
        }
    }
}

impl Park {
    fn when_ready(mut self) {
        if self.conn.sender.is_ready() {
            return self.store();
        }
        // Without a runtime (a body dropped at shutdown) the connection simply closes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if self.conn.sender.ready().await.is_ok() {
                    self.store();
                }
            });
        }
    }

    fn store(self) {
        if let Some(pools) = self.pools.upgrade() {
            // Looked up again: the entry may have been reaped while the body streamed.
            pools
                .endpoint(self.key)
                .park(self.conn, after(Instant::now(), self.idle_timeout));
            pools.start_reaper();
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.finished();
        }
    }
}
