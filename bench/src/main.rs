//! `skiff-bench`: Skiff's performance harness (not a test; CI does not run it). Runs the
//! same clients and the same app through four paths in the same run, interleaved — direct,
//! a Skiff proxy pair, an nginx pair and a haproxy pair — and reports every figure as a
//! ratio to direct and to nginx: a Markdown table on stdout, JSON in a file.
//!
//! `scripts/bench` installs the tools, builds in release mode and runs `skiff-bench all`.
//! Needs root (network namespaces, iptables).

mod app;
mod loadgen;
mod paths;
mod proc;
mod proxies;
mod report;
mod runner;
mod scenarios;
mod tools;
mod xds_push;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::paths::Testbed;
use crate::report::{Meta, Report, case_report, markdown};
use crate::runner::Options;
use crate::scenarios::Scenario;

#[derive(Parser)]
#[command(
    name = "skiff-bench",
    about = "Skiff's data-plane benchmark: direct vs skiff vs nginx vs haproxy pairs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Interleaved rounds (A B C D A B C D ...).
    #[arg(long, global = true, default_value_t = 3)]
    rounds: usize,
    /// Seconds per path, case and round.
    #[arg(long, global = true, default_value_t = 5)]
    seconds: u64,
    /// A quick check: one round of about one second per case (figures are rough).
    #[arg(long, global = true)]
    smoke: bool,
    /// Where the JSON report goes (default: target/bench-report.json).
    #[arg(long, global = true)]
    out: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Every scenario.
    All,
    /// One scenario.
    #[command(flatten)]
    One(OneScenario),
    /// (internal) The app in a server pod.
    #[command(hide = true)]
    App {
        #[arg(long)]
        http_port: u16,
        #[arg(long)]
        sink_port: u16,
    },
    /// (internal) The open-loop fixed-rate generator.
    #[command(hide = true)]
    LoadRate {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long)]
        rate: f64,
        #[arg(long)]
        connections: usize,
        /// Seconds (named apart from the global `--seconds`).
        #[arg(long)]
        duration: f64,
    },
    /// (internal) The TCP bulk client.
    #[command(hide = true)]
    LoadTcp {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long)]
        duration: f64,
    },
}

#[derive(Subcommand)]
enum OneScenario {
    /// HTTP/1.1 small GETs, 64 keep-alive connections, max throughput (wrk).
    Http,
    /// HTTP/1.1 at 1,000 and 10,000 req/s, open loop, p50/p90/p99/p99.9.
    Rate,
    /// HTTP/2 h2c multiplexed (h2load -c4 -m32).
    H2,
    /// TCP bulk transfer, one stream (GB/s).
    Tcp,
    /// New connections per second without keep-alive (wrk, Connection: close).
    Conn,
    /// 1 KiB and 64 KiB request bodies (wrk, Lua script).
    Body,
}

impl OneScenario {
    fn scenario(&self) -> Scenario {
        match self {
            Self::Http => Scenario::Http,
            Self::Rate => Scenario::Rate,
            Self::H2 => Scenario::H2,
            Self::Tcp => Scenario::Tcp,
            Self::Conn => Scenario::Conn,
            Self::Body => Scenario::Body,
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let scenarios = match &cli.command {
        Command::App {
            http_port,
            sink_port,
        } => return app::run(*http_port, *sink_port),
        Command::LoadRate {
            target,
            rate,
            connections,
            duration,
        } => return loadgen::rate(*target, *rate, *connections, *duration),
        Command::LoadTcp { target, duration } => return loadgen::bulk(*target, *duration),
        Command::All => Scenario::ALL.to_vec(),
        Command::One(one) => vec![one.scenario()],
    };
    let opts = if cli.smoke {
        Options {
            rounds: 1,
            seconds: 1,
            warmup: 0,
            smoke: true,
        }
    } else {
        Options {
            rounds: cli.rounds.max(1),
            seconds: cli.seconds.max(1),
            warmup: 1,
            smoke: false,
        }
    };
    runner::preflight(&scenarios)?;
    let out_path = match cli.out {
        Some(p) => p,
        None => default_out()?,
    };
    let pin = runner::pinning();
    let dir = std::env::temp_dir().join(format!("skiff-bench-{}", std::process::id()));
    let results = {
        let bed = Testbed::new(&dir, pin).context("set up the pods")?;
        runner::run(&bed, &scenarios, &opts)
    };
    let _ = std::fs::remove_dir_all(&dir);
    // After the pods are gone: the push runs its own proxy and control plane.
    let xds_push = if matches!(cli.command, Command::All) {
        eprintln!("== xds: RSS around a push of 1,000 services / 10,000 endpoints");
        match xds_push::measure(opts.rounds) {
            Ok(push) => Some(push),
            Err(err) => {
                eprintln!("xds push not measured: {err:#}");
                None
            }
        }
    } else {
        None
    };
    let report = Report {
        meta: meta(&opts, pin, xds_push),
        cases: results.iter().map(case_report).collect(),
    };
    if let Some(parent) = out_path.parent() {
        std::fs::create_dir_all(parent).ok();
    }
    std::fs::write(&out_path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("write {}", out_path.display()))?;
    println!("{}", markdown(&report));
    eprintln!("JSON report: {}", out_path.display());
    Ok(())
}

/// target/bench-report.json: the binary runs from target/<profile>/.
fn default_out() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("current_exe")?;
    let target = exe
        .parent()
        .and_then(|p| p.parent())
        .context("the binary's target directory")?;
    Ok(target.join("bench-report.json"))
}

fn meta(opts: &Options, pin: paths::Pinning, xds_push: Option<xds_push::XdsPush>) -> Meta {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    Meta {
        rounds: opts.rounds,
        seconds: opts.seconds,
        warmup_seconds: opts.warmup,
        smoke: opts.smoke,
        order: "interleaved A B C D per round: direct, skiff pair, nginx pair, haproxy pair".into(),
        pinning: format!(
            "every proxy one worker thread (skiff-proxy SKIFF_CONCURRENCY=1, nginx worker_processes 1, haproxy nbthread 1), both proxies of a pair pinned with `taskset -c {}`; clients (wrk, h2load, skiff-bench's generators) and the app pinned to CPU {}",
            pin.proxy, pin.client
        ),
        cpus: proc::cpus(),
        cpu_model,
        kernel,
        tools: tool_versions(),
        xds_push,
    }
}

fn tool_versions() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (tool, arg) in [
        ("wrk", "-v"),
        ("h2load", "--version"),
        ("nginx", "-v"),
        ("haproxy", "-v"),
    ] {
        let Ok(o) = std::process::Command::new(tool).arg(arg).output() else {
            out.insert(tool.to_owned(), "missing".to_owned());
            continue;
        };
        let text =
            String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
        let version = text
            .split_whitespace()
            .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()) || w.contains('/'))
            .map(|w| w.rsplit('/').next().unwrap_or(w).to_owned())
            .unwrap_or_default();
        out.insert(tool.to_owned(), version);
    }
    out
}
