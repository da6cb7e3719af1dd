//! One request's account — what Istio's request metrics and the access log say of it —
//! kept from the first byte to the last and reported exactly once: when the response has
//! been sent, when it failed, or when the request was abandoned (the client went away),
//! whichever comes first. Dropping an unfinished record reports it with Envoy's `DC`.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use prometheus_client::metrics::counter::Counter;

use tokio::time::Instant;

use crate::access_log::{AccessLog, AccessLogEntry, Format};
use crate::listener::Telemetry;
use crate::metrics::{RequestOutcome, RequestProtocol, ResponseFlags};
use crate::snapshot::Direction;

/// Where a request's account goes.
pub struct Sink {
    pub telemetry: Arc<dyn Telemetry>,
    pub access_log: Option<Arc<AccessLog>>,
}

pub struct Record {
    sink: Arc<Sink>,
    direction: Direction,
    started: Instant,
    pub protocol: RequestProtocol,
    pub cluster: Option<Arc<str>>,
    pub response_code: u16,
    pub flags: ResponseFlags,
    pub grpc_status: Option<u32>,
    /// Why the response is what it is (Envoy's `%RESPONSE_CODE_DETAILS%`).
    pub details: &'static str,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// Present only when the access log is on: its fields cost allocations.
    pub log: Option<Box<AccessLogEntry>>,
    done: bool,
}

impl Record {
    pub fn new(sink: Arc<Sink>, direction: Direction, protocol: RequestProtocol) -> Record {
        let log = sink.access_log.as_ref().map(|_| {
            Box::new(AccessLogEntry {
                start_time: SystemTime::now(),
                ..AccessLogEntry::default()
            })
        });
        Record {
            sink,
            direction,
            started: Instant::now(),
            protocol,
            cluster: None,
            response_code: 0,
            flags: ResponseFlags::NONE,
            grpc_status: None,
            details: "",
            request_bytes: 0,
            response_bytes: 0,
            log,
            done: false,
        }
    }

    pub fn logging(&self) -> bool {
        self.log.is_some()
    }

    /// Fills in access-log fields when the log is on; the closure does not run otherwise.
    pub fn with_log(&mut self, fill: impl FnOnce(&mut AccessLogEntry)) {
        if let Some(entry) = self.log.as_deref_mut() {
            fill(entry);
        }
    }

    pub fn upstream(&mut self, host: SocketAddr, local: Option<SocketAddr>) {
        self.with_log(|e| {
            e.upstream_host = Some(host);
            e.upstream_local_address = local;
        });
    }

    /// Reports the request now; later calls (and the drop) do nothing.
    pub fn finish(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let duration = self.started.elapsed();
        let outcome = RequestOutcome {
            protocol: self.protocol,
            response_code: self.response_code,
            flags: self.flags,
            grpc_status: self.grpc_status,
            duration,
            request_bytes: self.request_bytes,
            response_bytes: self.response_bytes,
        };
        if let (Some(log), Some(entry)) = (&self.sink.access_log, self.log.as_deref_mut()) {
            entry.response_code = self.response_code;
            entry.response_flags = self.flags;
            entry.response_code_details = Some(self.details.to_owned()).filter(|d| !d.is_empty());
            entry.bytes_received = self.request_bytes;
            entry.bytes_sent = self.response_bytes;
            entry.duration = duration;
            entry.upstream_cluster = self.cluster.as_deref().map(str::to_owned);
            log.log(entry);
        }
        // Last, so that whoever learns of the request from the metrics finds its log line
        // already queued.
        let cluster = self.cluster.as_deref().unwrap_or("");
        self.sink
            .telemetry
            .request(self.direction, cluster, outcome);
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if !self.done {
            // Dropped before the response was sent: the downstream connection went away.
            self.flags |= ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION;
            if self.details.is_empty() {
                self.details = "downstream_remote_disconnect";
            }
            self.finish();
        }
    }
}

type MakeLog = dyn Fn(Format) -> Option<AccessLog> + Send + Sync;

/// The access log writers, one per encoding, started the first time a configuration turns
/// the log on: a proxy that never logs never starts the writer thread.
pub struct AccessLogs {
    make: Box<MakeLog>,
    text: OnceLock<Option<Arc<AccessLog>>>,
    json: OnceLock<Option<Arc<AccessLog>>>,
}

impl AccessLogs {
    /// Writers to stdout, counting dropped lines in `dropped`.
    pub fn stdout(dropped: Counter) -> AccessLogs {
        AccessLogs::new(
            move |format| match AccessLog::stdout(format, dropped.clone()) {
                Ok(log) => Some(log),
                Err(err) => {
                    tracing::warn!("access log disabled: {err}");
                    None
                }
            },
        )
    }

    pub fn new(make: impl Fn(Format) -> Option<AccessLog> + Send + Sync + 'static) -> AccessLogs {
        AccessLogs {
            make: Box::new(make),
            text: OnceLock::new(),
            json: OnceLock::new(),
        }
    }

    pub fn get(&self, format: Format) -> Option<Arc<AccessLog>> {
        let slot = match format {
            Format::Text => &self.text,
            Format::Json => &self.json,
        };
        slot.get_or_init(|| (self.make)(format).map(Arc::new))
            .clone()
    }
}
