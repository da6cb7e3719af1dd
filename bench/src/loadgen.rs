//! The load generators this crate runs itself (hidden subcommands, started pinned in a
//! client pod; each prints one JSON object):
//!
//! - `load-rate`: open loop at a fixed rate over N HTTP/1.1 keep-alive connections. Request
//!   `k` of connection `i` is scheduled at `start + (k·N + i) / rate`, independently of how
//!   fast earlier answers came (no coordinated omission). Its latency runs from the
//!   *scheduled* time whenever the connection was still busy with an earlier request then
//!   (the system made it late); when the connection was idle and only the generator's timer
//!   (1 ms granularity) woke late, from the actual send. Recorded in an HDR histogram.
//!   Requests still unsent when the run ends (the system could not keep up) are recorded
//!   with their wait so far, a lower bound, and counted as `unsent`.
//! - `load-tcp`: one TCP stream writing framed 64 KiB chunks for the duration; the sink's
//!   acknowledgement of the byte count ends the measurement.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

use crate::app::{FRAME, LAST, MORE};

/// What `load-rate` prints.
#[derive(Debug, Serialize, Deserialize)]
pub struct RateResult {
    pub completed: u64,
    pub errors: u64,
    pub unsent: u64,
    pub seconds: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// What `load-tcp` prints.
#[derive(Debug, Serialize, Deserialize)]
pub struct BulkResult {
    pub bytes: u64,
    pub seconds: f64,
}

/// How long after the scheduled end the generator waits for a backlog to drain.
const GRACE: Duration = Duration::from_secs(2);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub fn rate(target: SocketAddr, rate: f64, connections: usize, seconds: f64) -> Result<()> {
    if rate <= 0.0 || connections == 0 {
        bail!("rate and connections must be positive");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(run_rate(target, rate, connections, seconds))?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

type Sender = http1::SendRequest<Empty<Bytes>>;

async fn connect(target: SocketAddr) -> Result<Sender> {
    let stream = TcpStream::connect(target)
        .await
        .with_context(|| format!("connect to {target}"))?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn get(sender: &mut Sender, host: &str) -> Result<()> {
    sender.ready().await?;
    let req = Request::get("/")
        .header("host", host)
        .header("user-agent", "skiff-bench")
        .body(Empty::new())?;
    let resp = sender.send_request(req).await?;
    let ok = resp.status().is_success();
    resp.into_body().collect().await?;
    if !ok {
        bail!("non-2xx answer");
    }
    Ok(())
}

struct ConnResult {
    hist: Histogram<u64>,
    completed: u64,
    errors: u64,
    unsent: u64,
}

async fn run_rate(
    target: SocketAddr,
    rate: f64,
    connections: usize,
    seconds: f64,
) -> Result<RateResult> {
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        senders.push(connect(target).await?);
    }
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(20);
    let end = start + Duration::from_secs_f64(seconds);
    let host = target.to_string();
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(i, sender)| {
            let host = host.clone();
            tokio::spawn(one_connection(
                target,
                sender,
                host,
                (start, end, interval),
                (i, connections),
            ))
        })
        .collect();
    let mut hist = new_histogram()?;
    let (mut completed, mut errors, mut unsent) = (0, 0, 0);
    for task in tasks {
        let r = task.await??;
        hist.add(&r.hist)?;
        completed += r.completed;
        errors += r.errors;
        unsent += r.unsent;
    }
    let q = |q: f64| hist.value_at_quantile(q) as f64;
    Ok(RateResult {
        completed,
        errors,
        unsent,
        seconds,
        p50_us: q(0.5),
        p90_us: q(0.9),
        p99_us: q(0.99),
        p999_us: q(0.999),
        max_us: hist.max() as f64,
    })
}

fn new_histogram() -> Result<Histogram<u64>> {
    // 1 µs .. 100 s, 3 significant digits.
    Ok(Histogram::new_with_bounds(1, 100_000_000, 3)?)
}

async fn one_connection(
    target: SocketAddr,
    mut sender: Sender,
    host: String,
    (start, end, interval): (Instant, Instant, Duration),
    (index, connections): (usize, usize),
) -> Result<ConnResult> {
    let mut r = ConnResult {
        hist: new_histogram()?,
        completed: 0,
        errors: 0,
        unsent: 0,
    };
    let scheduled =
        |k: u64| start + interval.mul_f64((k * connections as u64 + index as u64) as f64);
    let mut k = 0u64;
    let mut idle_since = start;
    loop {
        let at = scheduled(k);
        if at >= end {
            break;
        }
        let now = Instant::now();
        if now > end + GRACE {
            // Backlog that never went out: record the wait so far (a lower bound).
            while scheduled(k) < end {
                let waited = now.saturating_duration_since(scheduled(k));
                r.hist.saturating_record(waited.as_micros() as u64);
                r.unsent += 1;
                k += 1;
            }
            break;
        }
        if now < at {
            tokio::time::sleep_until(at.into()).await;
        }
        let sent = Instant::now();
        // Busy at the scheduled time: the wait counts; idle: only the timer was late.
        let from = if idle_since > at { at } else { sent };
        match tokio::time::timeout(REQUEST_TIMEOUT, get(&mut sender, &host)).await {
            Ok(Ok(())) => {
                let done = Instant::now();
                r.hist
                    .saturating_record(done.duration_since(from).as_micros().max(1) as u64);
                r.completed += 1;
                idle_since = done;
            }
            _ => {
                r.errors += 1;
                idle_since = Instant::now();
                match connect(target).await {
                    Ok(s) => sender = s,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        }
        k += 1;
    }
    Ok(r)
}

pub fn bulk(target: SocketAddr, seconds: f64) -> Result<()> {
    let mut stream =
        std::net::TcpStream::connect(target).with_context(|| format!("connect to {target}"))?;
    let mut frame = vec![0x5au8; FRAME];
    frame[0] = MORE;
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    let mut sent = 0u64;
    while Instant::now() < until {
        stream.write_all(&frame).context("write")?;
        sent += FRAME as u64;
    }
    frame[0] = LAST;
    stream.write_all(&frame).context("write")?;
    sent += FRAME as u64;
    let mut ack = [0u8; 8];
    stream
        .read_exact(&mut ack)
        .context("read the sink's byte count")?;
    let elapsed = started.elapsed().as_secs_f64();
    let received = u64::from_be_bytes(ack);
    if received != sent {
        bail!("sent {sent} bytes but the sink counted {received}");
    }
    let result = BulkResult {
        bytes: sent,
        seconds: elapsed,
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}
