//! Runs the cases: per case, start every path's proxies afresh, read their idle memory,
//! warm each path up, then `rounds` rounds of A B C D (direct, skiff, nginx, haproxy),
//! reading the proxies' CPU time around every run, and finally their peak memory.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::paths::{PathKind, Pinning, ProxyPair, Testbed};
use crate::proc::{cpus, which};
use crate::scenarios::{Case, Sample, Scenario, cases, require_clients, run_client};
use crate::tools::install_hint;

pub struct Options {
    pub rounds: usize,
    pub seconds: u64,
    /// Seconds of warm-up per path and case, not counted.
    pub warmup: u64,
    pub smoke: bool,
}

/// One path's figures in one case.
pub struct PathResult {
    pub kind: PathKind,
    /// Why the path has no (or not all) figures.
    pub unavailable: Option<String>,
    pub note: Option<String>,
    /// Metric key → one value per round (one value in all for the memory figures).
    pub values: BTreeMap<&'static str, Vec<f64>>,
    pub errors: u64,
}

impl PathResult {
    fn push(&mut self, key: &'static str, value: f64) {
        self.values.entry(key).or_default().push(value);
    }
}

pub struct CaseResult {
    pub case: Case,
    pub paths: Vec<PathResult>,
}

/// Root, the namespace tools, the workspace binaries and the clients, or what to do.
pub fn preflight(scenarios: &[Scenario]) -> Result<()> {
    if !skiff_tests::can_run_as_root("skiff-bench") {
        bail!("skiff-bench needs root and ip/iptables (apt-get install -y iproute2 iptables)");
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    for bin in ["skiff-proxy", "skiff-init", "skiff-injector"] {
        if !dir.join(bin).is_file() {
            bail!(
                "{} is missing: build the workspace binaries first (cargo build --release --workspace --bins)",
                dir.join(bin).display()
            );
        }
    }
    for tool in ["taskset", "setpriv", "sysctl"] {
        if which(tool).is_none() {
            bail!(install_hint(tool));
        }
    }
    require_clients(scenarios)
}

/// Clients and apps on CPU 0, proxies on CPU 1 (both on 0 on a one-CPU machine).
pub fn pinning() -> Pinning {
    Pinning {
        client: 0,
        proxy: usize::from(cpus() > 1),
    }
}

pub fn run(bed: &Testbed, scenarios: &[Scenario], opts: &Options) -> Vec<CaseResult> {
    let mut out = Vec::new();
    for scenario in scenarios {
        for case in cases(*scenario, opts.seconds) {
            out.push(run_case(bed, case, opts));
        }
    }
    out
}

struct Running {
    result: PathResult,
    proxies: Option<ProxyPair>,
}

fn run_case(bed: &Testbed, case: Case, opts: &Options) -> CaseResult {
    eprintln!("== {}: {}", case.id, case.title);
    let mut paths: Vec<Running> = PathKind::ALL
        .iter()
        .map(|&kind| {
            let mut result = PathResult {
                kind,
                unavailable: None,
                note: None,
                values: BTreeMap::new(),
                errors: 0,
            };
            let proxies = match bed.start(kind, case.mode) {
                Ok(p) => p,
                Err(err) => {
                    eprintln!("   {}: n/a: {err:#}", kind.label());
                    result.unavailable = Some(format!("{err:#}"));
                    None
                }
            };
            result.note = proxies.as_ref().and_then(|p| p.note.clone());
            Running { result, proxies }
        })
        .collect();
    for p in &mut paths {
        if let Some(proxies) = &p.proxies {
            p.result
                .push("rss_idle", proxies.status_kib("VmRSS:") as f64 / 1024.0);
        }
    }
    for p in &mut paths {
        if opts.warmup > 0
            && p.result.unavailable.is_none()
            && let Err(err) = measure(bed, &case, p, opts.warmup, false)
        {
            eprintln!("   {}: warm-up failed: {err:#}", p.result.kind.label());
            p.result.unavailable = Some(format!("warm-up failed: {err:#}"));
            p.proxies = None;
        }
    }
    for round in 1..=opts.rounds {
        for p in &mut paths {
            if p.result.unavailable.is_some() {
                continue;
            }
            match measure(bed, &case, p, opts.seconds, true) {
                Ok(line) => eprintln!(
                    "   round {round}/{} {:<12} {line}",
                    opts.rounds,
                    p.result.kind.label()
                ),
                Err(err) => {
                    eprintln!(
                        "   round {round} {}: failed: {err:#}",
                        p.result.kind.label()
                    );
                    p.result.unavailable = Some(format!("round {round} failed: {err:#}"));
                }
            }
        }
    }
    for p in &mut paths {
        if let Some(proxies) = p.proxies.take() {
            p.result
                .push("rss_peak", proxies.status_kib("VmHWM:") as f64 / 1024.0);
        }
    }
    CaseResult {
        case,
        paths: paths.into_iter().map(|p| p.result).collect(),
    }
}

/// One client run on `p`'s path; when `record`, its figures and the proxies' CPU time.
fn measure(
    bed: &Testbed,
    case: &Case,
    p: &mut Running,
    seconds: u64,
    record: bool,
) -> Result<String> {
    let kind = p.result.kind;
    let pod = &bed.pair(kind).pod;
    let target = Testbed::target(kind, case.mode);
    let cpu_before = p.proxies.as_ref().map(ProxyPair::cpu_seconds);
    let sample: Sample = run_client(case, pod, target, seconds, bed.pin.client, &bed.dir)?;
    let cpu = match (&p.proxies, cpu_before) {
        (Some(proxies), Some(before)) => Some(proxies.cpu_seconds() - before),
        _ => None,
    };
    if let Some(proxies) = &mut p.proxies {
        proxies.check()?;
    }
    if !record {
        return Ok(String::new());
    }
    let mut line = Vec::new();
    for (key, value) in &sample.values {
        p.result.push(key, *value);
        line.push(format!("{key} {value:.1}"));
    }
    if let Some(cpu) = cpu {
        let units = if case.per_gb {
            sample.work / 1e9
        } else {
            sample.work / 1e3
        };
        if units > 0.0 {
            p.result.push("cpu", cpu / units);
            line.push(format!("cpu {:.4}", cpu / units));
        }
    }
    if sample.errors > 0 {
        line.push(format!("errors {}", sample.errors));
    }
    p.result.errors += sample.errors;
    Ok(line.join(", "))
}
