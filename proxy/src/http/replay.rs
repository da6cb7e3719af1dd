//! The bounded retry buffer for request bodies.
//!
//! A retry must send the client's body again, but bodies stream and uploads can be far larger
//! than memory should hold for a retry that may never happen. So every attempt reads from one
//! shared state: first the chunks earlier attempts already pulled from the client, then the
//! client's body itself, appending what it pulls. Past the limit the buffer is freed and the
//! request simply stops being retryable, which is what Envoy and Linkerd do too.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use http_body_util::BodyExt;
use hyper::HeaderMap;
use hyper::body::{Body, Bytes, Frame, SizeHint};
use tokio::sync::Notify;

use super::BoxError;

/// Linkerd and Envoy both bound this; 64 KiB covers typical JSON/gRPC requests.
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

type Source = Pin<Box<dyn Body<Data = Bytes, Error = BoxError> + Send>>;

/// Errors a `ReplayBody` reports itself, so the router can tell them from the client's own
/// (by downcasting) and not blame the client for an attempt it abandoned.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("request body retired: a later attempt replaced it")]
    Retired,
    #[error("request body failed while another read was in progress")]
    Failed,
}

/// Shared handle on one request's body, held by the router across its attempts.
#[derive(Clone)]
pub struct Replay {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    // Outside the lock so metrics and the route timeout never wait on a body being polled.
    received: AtomicU64,
    complete: AtomicBool,
    completed: Notify,
}

struct State {
    /// The client's body while it has more to give; dropped at its end so the downstream
    /// connection is released as early as possible.
    source: Option<Source>,
    /// Everything read so far, in order; `None` once the limit was passed or the body failed,
    /// which is exactly when no further attempt is possible.
    buffer: Option<Vec<Chunk>>,
    failed: bool,
    /// Serial of the newest attempt: only that one may read, so one task at a time holds the
    /// source's waker and a stale attempt cannot steal frames from the live one.
    current: u64,
    limit: u64,
}

// `Frame` is not `Clone`, so the buffer keeps its own copy of each frame's content.
enum Chunk {
    Data(Bytes),
    Trailers(HeaderMap),
}

impl Replay {
    pub fn new<B>(body: B, limit: usize) -> Replay
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        // An empty body (GET, most requests) should cost nothing: no boxing, no polling.
        let complete = body.is_end_stream();
        let source = (!complete).then(|| Box::pin(body.map_err(Into::into)) as Source);
        Replay {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    source,
                    buffer: Some(Vec::new()),
                    failed: false,
                    current: 0,
                    limit: u64::try_from(limit).unwrap_or(u64::MAX),
                }),
                received: AtomicU64::new(0),
                complete: AtomicBool::new(complete),
                completed: Notify::new(),
            }),
        }
    }

    /// The body of the next attempt. Starting an attempt retires every earlier attempt's body:
    /// polled again, it ends with an error, and it never polls the client's body again (so only
    /// one task ever registers a waker on the source). None when the request can no longer be
    /// replayed (the buffer was dropped); the first call always returns Some.
    pub fn attempt(&self) -> Option<ReplayBody> {
        let mut state = self.shared.lock();
        state.buffer.as_ref()?;
        state.current += 1;
        Some(ReplayBody {
            shared: Arc::clone(&self.shared),
            cursor: Cursor {
                attempt: state.current,
                ..Cursor::default()
            },
        })
    }

    /// Whether another attempt could still be made.
    pub fn replayable(&self) -> bool {
        self.shared.lock().buffer.is_some()
    }

    /// Body bytes read from the client so far (for istio_request_bytes).
    pub fn received(&self) -> u64 {
        self.shared.received.load(Ordering::Relaxed)
    }

    /// Whether the client's body has ended (end of stream reached, trailers included, or it
    /// failed).
    pub fn is_complete(&self) -> bool {
        self.shared.complete.load(Ordering::Acquire)
    }

    /// Resolves once the client's body has ended (at once if it already has). Envoy's route
    /// timeout counts from the end of the request, so the router starts it here.
    /// Cancel-safe; several waiters allowed.
    pub async fn complete(&self) {
        loop {
            let notified = self.shared.completed.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a completion in between still wakes us.
            notified.as_mut().enable();
            if self.is_complete() {
                return;
            }
            notified.await;
        }
    }

    #[cfg(test)]
    pub(crate) fn buffered_bytes(&self) -> usize {
        let state = self.shared.lock();
        let data = state.buffer.iter().flatten().filter_map(|c| match c {
            Chunk::Data(d) => Some(d.len()),
            Chunk::Trailers(_) => None,
        });
        data.sum()
    }
}

impl Shared {
    /// A panic while the lock was held can only come from the client's body being polled, so a
    /// poisoned lock means that body failed: say so to every attempt instead of panicking too.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| {
            let mut state = poisoned.into_inner();
            self.state.clear_poison();
            state.fail();
            self.finish();
            state
        })
    }

    fn finish(&self) {
        self.complete.store(true, Ordering::Release);
        self.completed.notify_waiters();
    }
}

impl State {
    fn fail(&mut self) {
        self.failed = true;
        self.buffer = None;
        self.source = None;
    }
}

/// One attempt's request body.
pub struct ReplayBody {
    shared: Arc<Shared>,
    cursor: Cursor,
}

#[derive(Default)]
struct Cursor {
    attempt: u64,
    /// Next buffered chunk to replay; equal to the buffer's length once caught up with the source.
    pos: usize,
    /// Data bytes this attempt has yielded, for its size hint.
    sent: u64,
    /// Ended (cleanly or with an error): later polls yield nothing and touch no shared state.
    done: bool,
}

type PollFrame = Poll<Option<Result<Frame<Bytes>, BoxError>>>;

impl Cursor {
    fn end(&mut self, error: Option<BoxError>) -> PollFrame {
        self.done = true;
        Poll::Ready(error.map(Err))
    }

    fn poll(&mut self, shared: &Shared, state: &mut State, cx: &mut Context<'_>) -> PollFrame {
        if state.current != self.attempt {
            return self.end(Some(ReplayError::Retired.into()));
        }
        if state.failed {
            return self.end(Some(ReplayError::Failed.into()));
        }
        if let Some(chunk) = state.buffer.as_ref().and_then(|b| b.get(self.pos)) {
            self.pos += 1;
            let frame = match chunk {
                Chunk::Data(data) => {
                    self.sent += data.len() as u64;
                    Frame::data(data.clone())
                }
                Chunk::Trailers(trailers) => Frame::trailers(trailers.clone()),
            };
            return Poll::Ready(Some(Ok(frame)));
        }
        let Some(source) = state.source.as_mut() else {
            return self.end(None);
        };
        let frame = match source.as_mut().poll_frame(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(None) => {
                state.source = None;
                shared.finish();
                return self.end(None);
            }
            Poll::Ready(Some(Err(error))) => {
                state.fail();
                shared.finish();
                return self.end(Some(error));
            }
            Poll::Ready(Some(Ok(frame))) => frame,
        };
        let ended = source.is_end_stream();
        let chunk = if let Some(data) = frame.data_ref() {
            let len = data.len() as u64;
            let received = shared.received.load(Ordering::Relaxed).saturating_add(len);
            shared.received.store(received, Ordering::Relaxed);
            self.sent += len;
            (received <= state.limit).then(|| Chunk::Data(data.clone()))
        } else {
            frame.trailers_ref().map(|t| Chunk::Trailers(t.clone()))
        };
        match (chunk, state.buffer.as_mut()) {
            (Some(chunk), Some(buffer)) => {
                buffer.push(chunk);
                self.pos = buffer.len();
            }
            // Over the limit (or a frame kind this buffer cannot copy): free it right away,
            // so memory stays bounded however long this attempt keeps streaming.
            _ => state.buffer = None,
        }
        if ended {
            state.source = None;
            shared.finish();
        }
        Poll::Ready(Some(Ok(frame)))
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> PollFrame {
        let ReplayBody { shared, cursor } = self.get_mut();
        if cursor.done {
            return Poll::Ready(None);
        }
        let mut guard = shared.lock();
        cursor.poll(shared, &mut guard, cx)
    }

    fn is_end_stream(&self) -> bool {
        if self.cursor.done {
            return true;
        }
        let state = self.shared.lock();
        // A retired or failed attempt is not at its end: its next poll must report the error.
        state.current == self.cursor.attempt
            && !state.failed
            && state.source.is_none()
            && state
                .buffer
                .as_ref()
                .is_none_or(|b| self.cursor.pos >= b.len())
    }

    fn size_hint(&self) -> SizeHint {
        if self.cursor.done {
            return SizeHint::with_exact(0);
        }
        let state = self.shared.lock();
        if state.current != self.cursor.attempt || state.failed {
            return SizeHint::default();
        }
        // Bytes already read from the client that this attempt has yet to replay, plus what the
        // client still has: exact when the client's is (Content-Length), which hyper relies on.
        let received = self.shared.received.load(Ordering::Relaxed);
        let pending = received.saturating_sub(self.cursor.sent);
        let Some(source) = state.source.as_ref() else {
            return SizeHint::with_exact(pending);
        };
        let rest = source.size_hint();
        // Equal bounds make an exact hint, so this keeps Content-Length exact.
        let mut hint = SizeHint::new();
        hint.set_lower(pending.saturating_add(rest.lower()));
        if let Some(upper) = rest.upper() {
            hint.set_upper(pending.saturating_add(upper).max(hint.lower()));
        }
        hint
    }
}

#[cfg(test)]
#[path = "replay_tests.rs"]
mod tests;
