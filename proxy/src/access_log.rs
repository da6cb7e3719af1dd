//! The HTTP access log: one line per request, in Istio's default text format or its JSON
//! encoding, written to stdout by a dedicated thread.
//!
//! Off by default (as in Istio, where `meshConfig.accessLogFile` is empty unless set): the
//! HTTP layer holds an `Option<Arc<AccessLog>>` and builds an [`AccessLogEntry`] only when it
//! is `Some`.
//!
//! The data path never waits for stdout: [`AccessLog::log`] formats the line on the calling
//! task and offers it to a bounded channel; when the writer thread is behind (a slow log
//! collector, a full pipe) the line is dropped and counted in
//! `skiff_proxy_access_log_dropped_total` instead of stalling requests.
//!
//! Values come from the network (headers, SNI), so the text format escapes them: a header
//! containing a quote, a newline or other control characters cannot end its field or forge a
//! second log line. Envoy itself writes such values raw; Skiff deliberately does not.

use std::fmt::Write as _;
use std::io::Write;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;

use crate::metrics::ResponseFlags;

#[cfg(test)]
mod tests;

/// Lines the channel holds before [`AccessLog::log`] starts dropping. About a second of a
/// busy sidecar's traffic, a few MiB at most.
pub const DEFAULT_CAPACITY: usize = 4096;

/// The writer coalesces queued lines into writes of about this size, so a burst costs a few
/// syscalls rather than one per line.
const MAX_BATCH_BYTES: usize = 64 * 1024;

/// Istio's default text format (`EnvoyTextLogFormat` in istiod, documented under "Default
/// access log format"): Envoy's default format plus response details, termination details,
/// the upstream transport failure reason, the upstream cluster, the four addresses, the SNI
/// and the route name. [`format`] produces exactly these fields in this order.
pub const TEXT_FORMAT: &str = concat!(
    r#"[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" "#,
    r#"%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "#,
    r#""%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "#,
    r#"%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "#,
    r#""%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% "#,
    r#"%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% "#,
    r#"%REQUESTED_SERVER_NAME% %ROUTE_NAME%"#
);

/// How lines are encoded, Istio's `meshConfig.accessLogEncoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Format {
    /// [`TEXT_FORMAT`].
    Text,
    /// One JSON object per line with Istio's JSON keys (`start_time`, `method`, `path`, …).
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    #[error("unknown access log encoding {0:?} (expected TEXT or JSON)")]
    UnknownFormat(String),
    #[error("starting the access log writer thread: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("the access log writer thread has stopped")]
    WriterGone,
}

/// Accepts Istio's spelling (`TEXT`, `JSON`) in any case.
impl FromStr for Format {
    type Err = AccessLogError;

    fn from_str(s: &str) -> Result<Format, AccessLogError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            _ => Err(AccessLogError::UnknownFormat(s.to_owned())),
        }
    }
}

/// What one request's line says. `None` (and empty strings) print as `-` in text and `null`
/// in JSON, as Envoy prints what it does not know.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogEntry {
    /// When the first byte of the request arrived.
    pub start_time: SystemTime,
    pub method: Option<String>,
    /// `x-envoy-original-path` if present (the path before a rewrite), else `:path`.
    pub path: Option<String>,
    /// `HTTP/1.1`, `HTTP/2`, …
    pub protocol: Option<String>,
    /// The status sent downstream; 0 when none was, as Envoy logs it.
    pub response_code: u16,
    pub response_flags: ResponseFlags,
    /// Why the proxy answered the way it did (`via_upstream`, `route_not_found`, …).
    pub response_code_details: Option<String>,
    pub connection_termination_details: Option<String>,
    pub upstream_transport_failure_reason: Option<String>,
    /// Body bytes received from downstream.
    pub bytes_received: u64,
    /// Body bytes sent downstream.
    pub bytes_sent: u64,
    /// From the first request byte to the last response byte.
    pub duration: Duration,
    /// The upstream's `x-envoy-upstream-service-time` response header.
    pub upstream_service_time: Option<String>,
    pub x_forwarded_for: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub authority: Option<String>,
    pub upstream_host: Option<SocketAddr>,
    pub upstream_cluster: Option<String>,
    pub upstream_local_address: Option<SocketAddr>,
    pub downstream_local_address: Option<SocketAddr>,
    pub downstream_remote_address: Option<SocketAddr>,
    pub requested_server_name: Option<String>,
    pub route_name: Option<String>,
}

impl Default for AccessLogEntry {
    fn default() -> Self {
        AccessLogEntry {
            start_time: UNIX_EPOCH,
            method: None,
            path: None,
            protocol: None,
            response_code: 0,
            response_flags: ResponseFlags::NONE,
            response_code_details: None,
            connection_termination_details: None,
            upstream_transport_failure_reason: None,
            bytes_received: 0,
            bytes_sent: 0,
            duration: Duration::ZERO,
            upstream_service_time: None,
            x_forwarded_for: None,
            user_agent: None,
            request_id: None,
            authority: None,
            upstream_host: None,
            upstream_cluster: None,
            upstream_local_address: None,
            downstream_local_address: None,
            downstream_remote_address: None,
            requested_server_name: None,
            route_name: None,
        }
    }
}

/// One field's value, kept apart from its encoding so that the text and JSON encoders
/// cannot disagree on which fields exist or in what order.
enum Value<'a> {
    Str(Option<&'a str>),
    /// A string that has its own quotes in the text format, so spaces in it are harmless.
    Quoted(Option<&'a str>),
    Addr(Option<SocketAddr>),
    Num(u64),
    Time(SystemTime),
    Flags(ResponseFlags),
}

/// The fields with their JSON keys, in [`TEXT_FORMAT`]'s order.
fn fields(e: &AccessLogEntry) -> [(&'static str, Value<'_>); 24] {
    use Value::*;
    [
        ("start_time", Time(e.start_time)),
        ("method", Str(e.method.as_deref())),
        ("path", Str(e.path.as_deref())),
        ("protocol", Str(e.protocol.as_deref())),
        ("response_code", Num(e.response_code.into())),
        ("response_flags", Flags(e.response_flags)),
        (
            "response_code_details",
            Str(e.response_code_details.as_deref()),
        ),
        (
            "connection_termination_details",
            Str(e.connection_termination_details.as_deref()),
        ),
        (
            "upstream_transport_failure_reason",
            Quoted(e.upstream_transport_failure_reason.as_deref()),
        ),
        ("bytes_received", Num(e.bytes_received)),
        ("bytes_sent", Num(e.bytes_sent)),
        // Envoy's %DURATION% is whole milliseconds; saturate rather than wrap.
        (
            "duration",
            Num(u64::try_from(e.duration.as_millis()).unwrap_or(u64::MAX)),
        ),
        (
            "upstream_service_time",
            Str(e.upstream_service_time.as_deref()),
        ),
        ("x_forwarded_for", Quoted(e.x_forwarded_for.as_deref())),
        ("user_agent", Quoted(e.user_agent.as_deref())),
        ("request_id", Quoted(e.request_id.as_deref())),
        ("authority", Quoted(e.authority.as_deref())),
        ("upstream_host", Addr(e.upstream_host)),
        ("upstream_cluster", Str(e.upstream_cluster.as_deref())),
        ("upstream_local_address", Addr(e.upstream_local_address)),
        ("downstream_local_address", Addr(e.downstream_local_address)),
        (
            "downstream_remote_address",
            Addr(e.downstream_remote_address),
        ),
        (
            "requested_server_name",
            Str(e.requested_server_name.as_deref()),
        ),
        ("route_name", Str(e.route_name.as_deref())),
    ]
}

/// One access log line for `entry` in `format`, ending in `\n`.
pub fn format(entry: &AccessLogEntry, format: Format) -> String {
    let mut out = String::with_capacity(512);
    match format {
        Format::Text => write_text(&mut out, entry),
        Format::Json => write_json(&mut out, entry),
    }
    out.push('\n');
    out
}

/// The text between the fields of [`TEXT_FORMAT`]: `SEPARATORS[i]` precedes field `i`, and
/// the last element follows the last field.
const SEPARATORS: [&str; 25] = [
    "[", "] \"", " ", " ", "\" ", " ", " ", " ", " \"", "\" ", " ", " ", " ", " \"", "\" \"",
    "\" \"", "\" \"", "\" \"", "\" ", " ", " ", " ", " ", " ", "",
];

fn write_text(out: &mut String, entry: &AccessLogEntry) {
    for (i, (_, value)) in fields(entry).iter().enumerate() {
        out.push_str(SEPARATORS[i]);
        match value {
            Value::Str(s) => push_escaped(out, *s, false),
            Value::Quoted(s) => push_escaped(out, *s, true),
            Value::Addr(Some(addr)) => {
                let _ = write!(out, "{addr}");
            }
            Value::Addr(None) => out.push('-'),
            Value::Num(n) => {
                let _ = write!(out, "{n}");
            }
            Value::Time(t) => push_timestamp(out, *t),
            Value::Flags(flags) => {
                let _ = write!(out, "{flags}");
            }
        }
    }
    out.push_str(SEPARATORS[SEPARATORS.len() - 1]);
}

/// `value`, or `-` when absent or empty, with everything that could end the field or the
/// line escaped: backslash and quote, control characters (C0, DEL, C1), Unicode line and
/// paragraph separators, and, outside quotes, spaces (which separate unquoted fields).
fn push_escaped(out: &mut String, value: Option<&str>, quoted: bool) {
    let value = match value {
        Some(v) if !v.is_empty() => v,
        _ => {
            out.push('-');
            return;
        }
    };
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            ' ' if !quoted => out.push_str("\\x20"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                let code = u32::from(c);
                if code < 0x100 {
                    let _ = write!(out, "\\x{code:02x}");
                } else {
                    let _ = write!(out, "\\u{{{code:04x}}}");
                }
            }
            c => out.push(c),
        }
    }
}

fn write_json(out: &mut String, entry: &AccessLogEntry) {
    out.push('{');
    for (i, (key, value)) in fields(entry).iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(out, key);
        out.push(':');
        match value {
            Value::Str(s) | Value::Quoted(s) => match s {
                Some(s) if !s.is_empty() => push_json_string(out, s),
                _ => out.push_str("null"),
            },
            Value::Addr(Some(addr)) => {
                let _ = write!(out, "\"{addr}\"");
            }
            Value::Addr(None) => out.push_str("null"),
            Value::Num(n) => {
                let _ = write!(out, "{n}");
            }
            Value::Time(t) => {
                out.push('"');
                push_timestamp(out, *t);
                out.push('"');
            }
            Value::Flags(flags) => {
                let _ = write!(out, "\"{flags}\"");
            }
        }
    }
    out.push('}');
}

/// `s` as a JSON string. Escapes more than JSON requires (and more than serde_json does):
/// every control character, DEL and C1 included, and the Unicode line separators, so that no
/// header can move a terminal's cursor or split the line for a collector that honours them.
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Envoy's default `%START_TIME%`: UTC with milliseconds, `2020-11-25T21:26:18.409Z`.
/// Times before 1970 (a broken clock) print as the epoch.
fn push_timestamp(out: &mut String, t: SystemTime) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let _ = write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    );
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`), so timestamps need no date crate.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

enum Message {
    Line(String),
    /// Answered once every line queued before it has been written.
    Flush(mpsc::Sender<()>),
}

/// The access log: formats on the caller, writes on its own thread. Share it with `Arc`.
#[derive(Debug)]
pub struct AccessLog {
    format: Format,
    tx: SyncSender<Message>,
    dropped: Counter,
}

impl AccessLog {
    /// Writes to stdout with [`DEFAULT_CAPACITY`]. `dropped` is
    /// [`ProxyMetrics::access_log_dropped`](crate::metrics::ProxyMetrics::access_log_dropped).
    pub fn stdout(format: Format, dropped: Counter) -> Result<AccessLog, AccessLogError> {
        AccessLog::new(
            format,
            Box::new(std::io::stdout()),
            DEFAULT_CAPACITY,
            dropped,
        )
    }

    /// Writes to `sink` from a new thread; at most `capacity` lines wait in between (at
    /// least one). The thread ends once the `AccessLog` is dropped and the queue is written.
    pub fn new(
        format: Format,
        sink: Box<dyn Write + Send>,
        capacity: usize,
        dropped: Counter,
    ) -> Result<AccessLog, AccessLogError> {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let writer_dropped = dropped.clone();
        thread::Builder::new()
            .name("access-log".into())
            .spawn(move || run_writer(rx, sink, writer_dropped))
            .map_err(AccessLogError::Spawn)?;
        Ok(AccessLog {
            format,
            tx,
            dropped,
        })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// Queues one line; never blocks. Drops (and counts) the line when the queue is full.
    pub fn log(&self, entry: &AccessLogEntry) {
        let line = format(entry, self.format);
        // Full: the writer is behind. Disconnected: its thread died. Either way the line is
        // lost, and counted.
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.tx.try_send(Message::Line(line))
        {
            self.dropped.inc();
        }
    }

    /// Blocks until every line queued so far has been written (or dropped by a failing
    /// sink). For shutdown and tests, not for the data path.
    pub fn flush(&self) -> Result<(), AccessLogError> {
        let (ack_tx, ack_rx) = mpsc::channel();
        self.tx
            .send(Message::Flush(ack_tx))
            .map_err(|_| AccessLogError::WriterGone)?;
        ack_rx.recv().map_err(|_| AccessLogError::WriterGone)
    }
}

fn run_writer(rx: Receiver<Message>, mut sink: Box<dyn Write + Send>, dropped: Counter) {
    let mut batch = String::new();
    let mut acks = Vec::new();
    let mut warned = false;
    while let Ok(first) = rx.recv() {
        let mut lines = 0u64;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Line(line) => {
                    batch.push_str(&line);
                    lines += 1;
                }
                Message::Flush(ack) => acks.push(ack),
            }
            if batch.len() < MAX_BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let written = sink.write_all(batch.as_bytes()).and_then(|()| sink.flush());
            if let Err(e) = written {
                dropped.inc_by(lines);
                if !warned {
                    warned = true;
                    tracing::warn!(error = %e, "writing the access log failed; dropping lines");
                }
            }
            batch.clear();
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
    let _ = sink.flush();
}
