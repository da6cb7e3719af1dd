//! The scenarios: what client runs, with which flags, and which figures it yields.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use skiff_tests::netns::Netns;

use crate::loadgen::{BulkResult, RateResult};
use crate::paths::Mode;
use crate::proc::run_with_timeout;
use crate::tools::{parse_h2load, parse_wrk, require};

/// A scenario as named on the command line; some run as several cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// HTTP/1.1 small GETs, 64 keep-alive connections, max throughput (wrk).
    Http,
    /// HTTP/1.1 at fixed rates (1,000 and 10,000 req/s), open loop, latency percentiles.
    Rate,
    /// HTTP/2 h2c multiplexed (h2load -c4 -m32).
    H2,
    /// TCP bulk transfer, one stream.
    Tcp,
    /// New connections per second, no keep-alive (wrk, Connection: close).
    Conn,
    /// 1 KiB and 64 KiB POST bodies (wrk with a Lua script).
    Body,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Self::Http,
        Self::Rate,
        Self::H2,
        Self::Tcp,
        Self::Conn,
        Self::Body,
    ];
}

/// How one client run is driven.
#[derive(Clone, Debug)]
pub enum Client {
    Wrk {
        connections: usize,
        close: bool,
        body: Option<usize>,
    },
    Rate {
        rate: f64,
        connections: usize,
    },
    H2load {
        clients: usize,
        streams: usize,
    },
    Bulk,
}

/// One figure of a case.
#[derive(Clone, Copy, Debug)]
pub struct MetricDef {
    pub key: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
}

const fn m(key: &'static str, label: &'static str, unit: &'static str, higher: bool) -> MetricDef {
    MetricDef {
        key,
        label,
        unit,
        higher_is_better: higher,
    }
}

pub const RPS: MetricDef = m("rps", "requests/s", "req/s", true);
pub const P50: MetricDef = m("p50", "p50 latency", "µs", false);
pub const P90: MetricDef = m("p90", "p90 latency", "µs", false);
pub const P99: MetricDef = m("p99", "p99 latency", "µs", false);
pub const P999: MetricDef = m("p999", "p99.9 latency", "µs", false);
pub const MEAN: MetricDef = m("mean", "mean latency", "µs", false);
pub const GBPS: MetricDef = m("gbps", "throughput", "GB/s", true);
pub const UPLOAD: MetricDef = m("upload", "request bodies", "MB/s", true);
pub const CPS: MetricDef = m("rps", "new connections/s", "conn/s", true);
/// Proxy CPU per unit of work: set by the runner, not the client.
pub const CPU_PER_1K: MetricDef = m("cpu", "proxy CPU per 1,000 requests", "CPU s", false);
pub const CPU_PER_GB: MetricDef = m("cpu", "proxy CPU per GB", "CPU s", false);
pub const RSS_IDLE: MetricDef = m("rss_idle", "proxy RSS idle (VmRSS, both)", "MiB", false);
pub const RSS_PEAK: MetricDef = m("rss_peak", "proxy RSS peak (VmHWM, both)", "MiB", false);

pub struct Case {
    pub id: String,
    pub title: String,
    pub command: String,
    pub mode: Mode,
    pub client: Client,
    /// The client's figures, then the runner's (CPU, RSS).
    pub metrics: Vec<MetricDef>,
    /// Work in requests (CPU per 1,000 requests) or bytes (CPU per GB).
    pub per_gb: bool,
}

/// What one client run measured.
#[derive(Debug, Default)]
pub struct Sample {
    pub values: Vec<(&'static str, f64)>,
    /// Requests completed, or bytes moved.
    pub work: f64,
    pub errors: u64,
}

pub fn cases(scenario: Scenario, seconds: u64) -> Vec<Case> {
    let resources = |cpu: MetricDef| [cpu, RSS_IDLE, RSS_PEAK];
    let wrk = |id: &str, title: &str, flags: &str, client: Client, head: &[MetricDef]| Case {
        id: id.to_owned(),
        title: title.to_owned(),
        command: format!("wrk -t1 {flags} -d{seconds}s --latency"),
        mode: Mode::Http1,
        client,
        metrics: head.iter().copied().chain(resources(CPU_PER_1K)).collect(),
        per_gb: false,
    };
    match scenario {
        Scenario::Http => vec![wrk(
            "http",
            "HTTP/1.1 small GETs, 64 keep-alive connections, max throughput (closed loop)",
            "-c64",
            Client::Wrk {
                connections: 64,
                close: false,
                body: None,
            },
            &[RPS, P50, P99],
        )],
        Scenario::Rate => [1_000.0, 10_000.0]
            .into_iter()
            .map(|rate| Case {
                id: format!("rate-{}k", rate as u64 / 1000),
                title: format!(
                    "HTTP/1.1 small GETs at a fixed {rate:.0} req/s, open loop on 16 keep-alive connections, latency from the scheduled send time (HDR histogram)"
                ),
                command: format!(
                    "skiff-bench load-rate --rate {rate:.0} --connections 16 --duration {seconds}"
                ),
                mode: Mode::Http1,
                client: Client::Rate {
                    rate,
                    connections: 16,
                },
                metrics: [RPS, P50, P90, P99, P999]
                    .into_iter()
                    .chain(resources(CPU_PER_1K))
                    .collect(),
                per_gb: false,
            })
            .collect(),
        Scenario::H2 => vec![Case {
            id: "h2".to_owned(),
            title: "HTTP/2 h2c (prior knowledge) small GETs, 4 connections × 32 concurrent streams, max throughput".to_owned(),
            command: format!("h2load -t1 -c4 -m32 -D {seconds}"),
            mode: Mode::H2,
            client: Client::H2load {
                clients: 4,
                streams: 32,
            },
            metrics: [RPS, MEAN].into_iter().chain(resources(CPU_PER_1K)).collect(),
            per_gb: false,
        }],
        Scenario::Tcp => vec![Case {
            id: "tcp".to_owned(),
            title: "TCP bulk transfer, one stream, 64 KiB writes".to_owned(),
            command: format!("skiff-bench load-tcp --duration {seconds}"),
            mode: Mode::Tcp,
            client: Client::Bulk,
            metrics: [GBPS].into_iter().chain(resources(CPU_PER_GB)).collect(),
            per_gb: true,
        }],
        Scenario::Conn => vec![wrk(
            "conn",
            "new connections per second: one small GET per connection (Connection: close), 64 concurrent",
            "-c64 -H 'Connection: close'",
            Client::Wrk {
                connections: 64,
                close: true,
                body: None,
            },
            &[CPS, P50, P99],
        )],
        Scenario::Body => [(1024, "1k"), (65536, "64k")]
            .into_iter()
            .map(|(size, name)| {
                wrk(
                    &format!("body-{name}"),
                    &format!(
                        "HTTP/1.1 POSTs with a {} KiB body (the app answers its length), 64 keep-alive connections, max throughput",
                        size / 1024
                    ),
                    &format!("-c64 -s post-{size}.lua"),
                    Client::Wrk {
                        connections: 64,
                        close: false,
                        body: Some(size),
                    },
                    &[RPS, UPLOAD, P50, P99],
                )
            })
            .collect(),
    }
}

/// The external tools a scenario's client needs.
pub fn client_tool(scenario: Scenario) -> Option<&'static str> {
    match scenario {
        Scenario::Http | Scenario::Conn | Scenario::Body => Some("wrk"),
        Scenario::H2 => Some("h2load"),
        Scenario::Rate | Scenario::Tcp => None,
    }
}

/// Runs the case's client in `pod` against `target` for `seconds`, pinned to `cpu`.
pub fn run_client(
    case: &Case,
    pod: &Netns,
    target: SocketAddr,
    seconds: u64,
    cpu: usize,
    dir: &Path,
) -> Result<Sample> {
    let mut cmd = pod.command("taskset");
    cmd.args(["-c", &cpu.to_string()]);
    let me = std::env::current_exe().context("current_exe")?;
    let url = format!("http://{target}/");
    match &case.client {
        Client::Wrk {
            connections,
            close,
            body,
        } => {
            cmd.args(["wrk", "-t1", &format!("-c{connections}")])
                .args([format!("-d{seconds}s"), "--latency".into()])
                .args(["--timeout", "5s"]);
            if *close {
                cmd.args(["-H", "Connection: close"]);
            }
            if let Some(size) = body {
                let script = dir.join(format!("post-{size}.lua"));
                std::fs::write(
                    &script,
                    format!(
                        "wrk.method = \"POST\"\nwrk.body = string.rep(\"x\", {size})\nwrk.headers[\"Content-Type\"] = \"application/octet-stream\"\n"
                    ),
                )?;
                cmd.arg("-s").arg(script);
            }
            cmd.arg(&url);
        }
        Client::Rate { rate, connections } => {
            cmd.arg(me)
                .args(["load-rate", "--target", &target.to_string()])
                .args(["--rate", &rate.to_string()])
                .args(["--connections", &connections.to_string()])
                .args(["--duration", &seconds.to_string()]);
        }
        Client::H2load { clients, streams } => {
            cmd.args([
                "h2load",
                "-t1",
                &format!("-c{clients}"),
                &format!("-m{streams}"),
            ])
            .args(["-D", &seconds.to_string(), &url]);
        }
        Client::Bulk => {
            cmd.arg(me)
                .args(["load-tcp", "--target", &target.to_string()])
                .args(["--duration", &seconds.to_string()]);
        }
    }
    let out = run_with_timeout(cmd, Duration::from_secs(seconds + 30))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "the client failed ({}): {}{}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    sample(case, &stdout)
}

fn sample(case: &Case, stdout: &str) -> Result<Sample> {
    Ok(match &case.client {
        Client::Wrk { body, .. } => {
            let w = parse_wrk(stdout).with_context(|| format!("reading wrk's output: {stdout}"))?;
            let mut values = vec![("rps", w.rps), ("p50", w.p50_us), ("p99", w.p99_us)];
            if let Some(size) = body {
                values.push(("upload", w.rps * *size as f64 / 1e6));
            }
            Sample {
                values,
                work: w.requests,
                errors: w.errors,
            }
        }
        Client::Rate { .. } => {
            let r: RateResult = serde_json::from_str(stdout.trim())
                .with_context(|| format!("reading load-rate's output: {stdout}"))?;
            Sample {
                values: vec![
                    ("rps", r.completed as f64 / r.seconds),
                    ("p50", r.p50_us),
                    ("p90", r.p90_us),
                    ("p99", r.p99_us),
                    ("p999", r.p999_us),
                ],
                work: r.completed as f64,
                errors: r.errors + r.unsent,
            }
        }
        Client::H2load { .. } => {
            let h = parse_h2load(stdout)
                .with_context(|| format!("reading h2load's output: {stdout}"))?;
            Sample {
                values: vec![("rps", h.rps), ("mean", h.mean_us)],
                work: h.succeeded,
                errors: h.errors,
            }
        }
        Client::Bulk => {
            let b: BulkResult = serde_json::from_str(stdout.trim())
                .with_context(|| format!("reading load-tcp's output: {stdout}"))?;
            Sample {
                values: vec![("gbps", b.bytes as f64 / b.seconds / 1e9)],
                work: b.bytes as f64,
                errors: 0,
            }
        }
    })
}

/// Checks that the clients of `scenarios` are installed.
pub fn require_clients(scenarios: &[Scenario]) -> Result<()> {
    for s in scenarios {
        if let Some(tool) = client_tool(*s) {
            require(tool)?;
        }
    }
    Ok(())
}
