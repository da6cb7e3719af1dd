//! The report: every figure with min – median – max over the rounds, and as ratios to the
//! direct path and to the nginx pair (computed round by round, since the paths run
//! interleaved); Markdown for people, JSON for tools.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::xds_push::XdsPush;

use crate::paths::PathKind;
use crate::runner::{CaseResult, PathResult};
use crate::scenarios::MetricDef;

#[derive(Serialize)]
pub struct Report {
    pub meta: Meta,
    pub cases: Vec<CaseReport>,
}

#[derive(Serialize)]
pub struct Meta {
    pub rounds: usize,
    pub seconds: u64,
    pub warmup_seconds: u64,
    pub smoke: bool,
    pub order: String,
    pub pinning: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub tools: BTreeMap<String, String>,
    /// Skiff's RSS after an xDS push of 1,000 services / 10,000 endpoints (`all` only).
    pub xds_push: Option<XdsPush>,
}

#[derive(Serialize)]
pub struct CaseReport {
    pub id: String,
    pub title: String,
    pub command: String,
    pub paths: Vec<PathInfo>,
    pub metrics: Vec<MetricReport>,
}

#[derive(Serialize)]
pub struct PathInfo {
    pub path: &'static str,
    pub label: &'static str,
    pub available: bool,
    pub unavailable: Option<String>,
    pub note: Option<String>,
    pub errors: u64,
}

#[derive(Serialize)]
pub struct MetricReport {
    pub key: &'static str,
    pub label: &'static str,
    pub unit: &'static str,
    pub higher_is_better: bool,
    pub values: Vec<PathValues>,
}

#[derive(Serialize)]
pub struct PathValues {
    pub path: &'static str,
    pub value: Spread,
    pub vs_direct: Option<Spread>,
    pub vs_nginx: Option<Spread>,
}

#[derive(Serialize, Clone)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
    pub rounds: Vec<f64>,
}

impl Spread {
    fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            min: v[0],
            median,
            max: v[n - 1],
            rounds: values.to_vec(),
        })
    }
}

/// Round-by-round ratios `a[i] / b[i]`.
fn ratios(a: &[f64], b: &[f64]) -> Option<Spread> {
    let r: Vec<f64> = a
        .iter()
        .zip(b)
        .filter(|(_, b)| **b != 0.0)
        .map(|(a, b)| a / b)
        .collect();
    Spread::of(&r)
}

pub fn case_report(result: &CaseResult) -> CaseReport {
    let find = |kind: PathKind| result.paths.iter().find(|p| p.kind == kind);
    let values = |p: &PathResult, key: &str| p.values.get(key).cloned().unwrap_or_default();
    let metrics = result
        .case
        .metrics
        .iter()
        .map(|def: &MetricDef| {
            let base = |kind| find(kind).map(|p| values(p, def.key)).unwrap_or_default();
            let (direct, nginx) = (base(PathKind::Direct), base(PathKind::Nginx));
            let values = result
                .paths
                .iter()
                .filter_map(|p| {
                    let own = values(p, def.key);
                    Some(PathValues {
                        path: p.kind.key(),
                        value: Spread::of(&own)?,
                        vs_direct: ratios(&own, &direct),
                        vs_nginx: ratios(&own, &nginx),
                    })
                })
                .collect();
            MetricReport {
                key: def.key,
                label: def.label,
                unit: def.unit,
                higher_is_better: def.higher_is_better,
                values,
            }
        })
        .collect();
    CaseReport {
        id: result.case.id.clone(),
        title: result.case.title.clone(),
        command: result.case.command.clone(),
        paths: result
            .paths
            .iter()
            .map(|p| PathInfo {
                path: p.kind.key(),
                label: p.kind.label(),
                available: p.unavailable.is_none(),
                unavailable: p.unavailable.clone(),
                note: p.note.clone(),
                errors: p.errors,
            })
            .collect(),
        metrics,
    }
}

/// A figure with about three significant digits.
fn num(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        "n/a".into()
    } else if a >= 1_000.0 {
        let s = format!("{:.0}", v);
        let (sign, digits) = s.split_at(usize::from(v < 0.0));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a >= 0.01 {
        format!("{v:.3}")
    } else {
        format!("{v:.4}")
    }
}

fn spread(s: &Spread, ratio: bool) -> String {
    let f = |v: f64| if ratio { format!("{v:.2}") } else { num(v) };
    if s.rounds.len() == 1 {
        f(s.median)
    } else {
        format!("{} – {} – {}", f(s.min), f(s.median), f(s.max))
    }
}

fn opt(s: &Option<Spread>) -> String {
    s.as_ref().map_or("–".into(), |s| spread(s, true))
}

fn label(kind: &str) -> &'static str {
    PathKind::ALL
        .iter()
        .find(|k| k.key() == kind)
        .map_or("?", |k| k.label())
}

pub fn markdown(report: &Report) -> String {
    let m = &report.meta;
    let mut out = String::new();
    let _ = writeln!(out, "## Skiff data-plane benchmark\n");
    let _ = writeln!(
        out,
        "- paths, {}: direct (client pod → server pod, no proxy, no iptables); skiff pair (outbound + inbound skiff-proxy, skiff-init's rules, static config routing); nginx pair and haproxy pair (the same two hops as reverse proxies: 127.0.0.1:9090 in the client pod → 10.77.0.2:9091 in the server pod → app on 127.0.0.1). Each path on its own pod pair.",
        m.order
    );
    let _ = writeln!(out, "- CPU budget: {}", m.pinning);
    let _ = writeln!(
        out,
        "- {} round(s) × {} s per path and case (+{} s warm-up, not counted){}; machine: {} CPU(s), {}, kernel {}",
        m.rounds,
        m.seconds,
        m.warmup_seconds,
        if m.smoke {
            ", SMOKE MODE (figures are rough)"
        } else {
            ""
        },
        m.cpus,
        m.cpu_model,
        m.kernel
    );
    let tools: Vec<String> = m.tools.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let _ = writeln!(out, "- tools: {}", tools.join(", "));
    let _ = writeln!(
        out,
        "- figures: min – median – max over the rounds; ratios are computed per round (path ÷ direct, path ÷ nginx pair), then min – median – max. ↑ higher is better, ↓ lower is better. Proxy CPU and RSS are the two proxies of a pair together (nginx: master + worker)."
    );
    let push = match &m.xds_push {
        Some(p) => format!(
            "idle {:.1} MiB; after the push that adds them {:.1} MiB; after pushes that replace every one {:.1} MiB; peak {:.1} MiB (one proxy, `{}`)",
            p.idle_mib, p.after_first_mib, p.after_replace_mib, p.peak_mib, p.command
        ),
        None => "not measured (only `skiff-bench all` runs the push)".to_owned(),
    };
    let _ = writeln!(
        out,
        "- skiff RSS around an xDS push of 1,000 services / 10,000 endpoints: {push}\n"
    );
    summary(&mut out, report);
    for case in &report.cases {
        let _ = writeln!(out, "\n### {} — {}\n", case.id, case.title);
        let _ = writeln!(out, "client: `{}`\n", case.command);
        let _ = writeln!(
            out,
            "| figure | path | min – median – max | ÷ direct | ÷ nginx pair |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|");
        for metric in &case.metrics {
            let arrow = if metric.higher_is_better {
                "↑"
            } else {
                "↓"
            };
            for (i, v) in metric.values.iter().enumerate() {
                let name = if i == 0 {
                    format!("{} ({}) {arrow}", metric.label, metric.unit)
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "| {name} | {} | {} | {} | {} |",
                    label(v.path),
                    spread(&v.value, false),
                    opt(&v.vs_direct),
                    opt(&v.vs_nginx)
                );
            }
        }
        for p in &case.paths {
            if let Some(why) = &p.unavailable {
                let _ = writeln!(out, "\n- {}: n/a — {}", p.label, one_line(why));
            }
            if let Some(note) = &p.note {
                let _ = writeln!(out, "\n- {}: {note}", p.label);
            }
            if p.errors > 0 {
                let _ = writeln!(
                    out,
                    "\n- {}: {} client errors (socket errors, non-2xx, or requests not sent in time)",
                    p.label, p.errors
                );
            }
        }
    }
    out
}

fn one_line(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > 300 {
        line.chars().take(300).collect::<String>() + "…"
    } else {
        line
    }
}

/// Medians of the headline figures of every case, one row each.
fn summary(out: &mut String, report: &Report) {
    let _ = writeln!(out, "### Summary (medians)\n");
    let _ = writeln!(
        out,
        "| case | figure | direct | skiff pair | nginx pair | haproxy pair | skiff ÷ direct | skiff ÷ nginx | haproxy ÷ nginx |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    for case in &report.cases {
        for metric in &case.metrics {
            let headline = matches!(metric.key, "rps" | "gbps" | "cpu" | "rss_peak")
                || (case.id.starts_with("rate") && matches!(metric.key, "p50" | "p99"));
            if !headline {
                continue;
            }
            let get = |path: &str| metric.values.iter().find(|v| v.path == path);
            let value = |path: &str| get(path).map_or("n/a".into(), |v| num(v.value.median));
            let ratio = |path: &str, direct: bool| {
                get(path)
                    .and_then(|v| if direct { &v.vs_direct } else { &v.vs_nginx }.as_ref())
                    .map_or("–".into(), |s| format!("{:.2}", s.median))
            };
            let arrow = if metric.higher_is_better {
                "↑"
            } else {
                "↓"
            };
            let _ = writeln!(
                out,
                "| {} | {} ({}) {arrow} | {} | {} | {} | {} | {} | {} | {} |",
                case.id,
                metric.label,
                metric.unit,
                value("direct"),
                value("skiff"),
                value("nginx"),
                value("haproxy"),
                ratio("skiff", true),
                ratio("skiff", false),
                ratio("haproxy", false),
            );
        }
    }
}
