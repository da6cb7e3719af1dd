//! The body of every response sent downstream: the upstream's body (or a local reply)
//! streamed frame by frame, counted for the metrics, bounded by the route timeout and the
//! stream idle timeout, and closing the request's [`Record`] when it ends.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Frame, SizeHint};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::time::{Instant, Sleep};

use super::record::Record;
use super::retry::grpc_status;
use super::{BoxError, ProxyBody};
use crate::metrics::ResponseFlags;
use crate::snapshot::Cluster;

/// A request in flight to a cluster and (once chosen) one of its endpoints: the counters
/// that least-request balancing and the retry budget read, held until the response ends.
pub struct InFlight {
    cluster: Arc<Cluster>,
    endpoint: Option<usize>,
}

impl InFlight {
    pub fn new(cluster: Arc<Cluster>) -> InFlight {
        cluster.load.requests.fetch_add(1, Ordering::Relaxed);
        InFlight {
            cluster,
            endpoint: None,
        }
    }

    /// Moves the request's endpoint count to `index` (a retry may pick another).
    pub fn at_endpoint(&mut self, index: Option<usize>) {
        self.leave_endpoint();
        if let Some(e) = index.and_then(|i| self.cluster.endpoints.get(i)) {
            e.active.fetch_add(1, Ordering::Relaxed);
            self.endpoint = index;
        }
    }

    fn leave_endpoint(&mut self) {
        if let Some(e) = self
            .endpoint
            .take()
            .and_then(|i| self.cluster.endpoints.get(i))
        {
            e.active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.leave_endpoint();
        self.cluster.load.requests.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The timers that can end a response while it streams.
pub struct Timers {
    /// What is left of the route timeout (Envoy's covers the whole response).
    pub deadline: Option<Instant>,
    /// The stream idle timeout: reset by every frame.
    pub idle: Option<Duration>,
}

impl Timers {
    pub fn none() -> Timers {
        Timers {
            deadline: None,
            idle: None,
        }
    }
}

pub struct ResponseBody {
    inner: ProxyBody,
    record: Record,
    deadline: Option<Instant>,
    idle: Option<Duration>,
    /// Since when the body has been waiting for its next frame.
    waiting_since: Option<Instant>,
    /// Armed only when the body has to wait: a response whose frames are there when hyper
    /// asks (most small ones) never touches the timer wheel.
    timer: Option<Pin<Box<Sleep>>>,
    _in_flight: Option<InFlight>,
}

impl ResponseBody {
    pub fn new(
        inner: ProxyBody,
        record: Record,
        timers: Timers,
        in_flight: Option<InFlight>,
    ) -> ResponseBody {
        ResponseBody {
            inner,
            record,
            deadline: timers.deadline,
            idle: timers.idle,
            waiting_since: None,
            timer: None,
            _in_flight: in_flight,
        }
    }

    fn fail(&mut self, flag: ResponseFlags, details: &'static str, error: BoxError) -> BoxError {
        self.record.flags |= flag;
        self.record.details = details;
        self.record.finish();
        error
    }

    /// While the body waits: arms the timer for the earlier of the route deadline and the
    /// end of the idle period; the error to end the stream with once it fires.
    fn poll_timers(&mut self, cx: &mut Context<'_>) -> Option<BoxError> {
        let now = Instant::now();
        let since = *self.waiting_since.get_or_insert(now);
        let idle_due = self.idle.map(|p| since + p);
        let due = match (self.deadline, idle_due) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if timer.deadline() != due {
            timer.as_mut().reset(due);
        }
        if timer.as_mut().poll(cx).is_pending() {
            return None;
        }
        Some(if self.deadline.is_some_and(|d| d <= Instant::now()) {
            self.fail(
                ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
                "response_timeout",
                Ended::Timeout.into(),
            )
        } else {
            self.fail(
                ResponseFlags::STREAM_IDLE_TIMEOUT,
                "stream_idle_timeout",
                Ended::Idle.into(),
            )
        })
    }
}

#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("upstream request timeout while streaming the response")]
    Timeout,
    #[error("stream idle timeout while streaming the response")]
    Idle,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                return match this.poll_timers(cx) {
                    Some(e) => Poll::Ready(Some(Err(e))),
                    None => Poll::Pending,
                };
            }
        };
        this.waiting_since = None;
        if this.deadline.is_some_and(|d| d <= Instant::now()) {
            let e = this.fail(
                ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
                "response_timeout",
                Ended::Timeout.into(),
            );
            return Poll::Ready(Some(Err(e)));
        }
        match frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.record.response_bytes += data.len() as u64;
                } else if let Some(trailers) = frame.trailers_ref() {
                    this.record.grpc_status = grpc_status(trailers).or(this.record.grpc_status);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(error)) => {
                let e = this.fail(
                    ResponseFlags::UPSTREAM_REMOTE_RESET,
                    "upstream_reset_after_response_started",
                    error,
                );
                Poll::Ready(Some(Err(e)))
            }
            None => {
                this.record.finish();
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // hyper does not poll a body that reports its end up front (an empty reply): that
        // is a finished response, not an abandoned one.
        if self.inner.is_end_stream() {
            self.record.finish();
        }
    }
}

/// A body of a response the proxy makes itself.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A response the proxy answers itself (no route, no cluster, a timeout), with Envoy's
/// short plain-text bodies so clients and logs read as they would with Envoy.
pub fn local_reply(status: StatusCode, text: &'static str) -> Response<Bytes> {
    let mut response = Response::new(Bytes::from_static(text.as_bytes()));
    *response.status_mut() = status;
    if !text.is_empty() {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    response
}
