//! The external tools: which are needed, where they come from, and reading their output.

use anyhow::{Context, Result, bail};

use crate::proc::which;

/// The Debian package that brings each external tool.
pub const PACKAGES: &[(&str, &str)] = &[
    ("wrk", "wrk"),
    ("h2load", "nghttp2-client"),
    ("nginx", "nginx-light"),
    ("haproxy", "haproxy"),
    ("taskset", "util-linux"),
    ("setpriv", "util-linux"),
];

pub fn install_hint(tool: &str) -> String {
    let package = PACKAGES
        .iter()
        .find(|(t, _)| *t == tool)
        .map_or(tool, |(_, p)| *p);
    format!("{tool} is missing: apt-get install -y {package} (scripts/bench installs it)")
}

/// Fails with the install hint when `tool` is not installed.
pub fn require(tool: &str) -> Result<()> {
    match which(tool) {
        Some(_) => Ok(()),
        None => bail!(install_hint(tool)),
    }
}

/// What one wrk run reported.
#[derive(Debug, Default)]
pub struct Wrk {
    pub requests: f64,
    pub seconds: f64,
    pub rps: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub errors: u64,
}

/// A wrk duration (`487.12us`, `1.20ms`, `2.00s`, `1.00m`) in microseconds.
fn duration_us(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let n: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        "m" => n * 60e6,
        "h" => n * 3600e6,
        _ => return None,
    })
}

/// Reads `wrk --latency` output.
pub fn parse_wrk(text: &str) -> Result<Wrk> {
    let mut w = Wrk::default();
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [n, "requests", "in", took, ..] => {
                w.requests = n.parse().context("wrk request count")?;
                w.seconds = duration_us(took.trim_end_matches(',')).unwrap_or(0.0) / 1e6;
            }
            ["Requests/sec:", n] => w.rps = n.parse().context("wrk requests/s")?,
            ["50%", d] => w.p50_us = duration_us(d).unwrap_or(f64::NAN),
            ["90%", d] => w.p90_us = duration_us(d).unwrap_or(f64::NAN),
            ["99%", d] => w.p99_us = duration_us(d).unwrap_or(f64::NAN),
            ["Socket", "errors:", rest @ ..] => {
                // connect 0, read 0, write 0, timeout 0
                w.errors += rest
                    .iter()
                    .filter_map(|t| t.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => w.errors += n.parse::<u64>().unwrap_or(0),
            _ => {}
        }
    }
    if w.requests == 0.0 || w.rps == 0.0 {
        bail!("wrk completed no request");
    }
    Ok(w)
}

/// What one h2load run reported.
#[derive(Debug, Default)]
pub struct H2load {
    pub succeeded: f64,
    pub seconds: f64,
    pub rps: f64,
    pub mean_us: f64,
    pub errors: u64,
}

/// Reads h2load's summary.
pub fn parse_h2load(text: &str) -> Result<H2load> {
    let mut h = H2load::default();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            // 5.00s, 123456.78 req/s, 4.56MB/s
            let parts: Vec<&str> = rest.split(", ").collect();
            h.seconds = parts.first().and_then(|d| duration_us(d)).unwrap_or(0.0) / 1e6;
            h.rps = parts
                .get(1)
                .and_then(|r| r.split_whitespace().next()?.parse().ok())
                .unwrap_or(0.0);
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            // 61728 total, 61760 started, 61728 done, 61728 succeeded, 0 failed, 0 errored, 0 timeout
            for item in rest.split(", ") {
                let mut it = item.split_whitespace();
                let (Some(n), Some(what)) = (it.next(), it.next()) else {
                    continue;
                };
                let n: f64 = n.parse().unwrap_or(0.0);
                match what {
                    "succeeded" => h.succeeded = n,
                    "failed" | "errored" | "timeout" => h.errors += n as u64,
                    _ => {}
                }
            }
        } else if let Some(rest) = line.strip_prefix("time for request:") {
            // min max mean sd +/-sd
            h.mean_us = rest
                .split_whitespace()
                .nth(2)
                .and_then(duration_us)
                .unwrap_or(f64::NAN);
        }
    }
    if h.succeeded == 0.0 {
        bail!("h2load completed no request");
    }
    if h.seconds > 0.0 {
        // In duration mode the headline req/s can count the warm-up; recompute.
        h.rps = h.succeeded / h.seconds;
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk() {
        let text = "Running 5s test @ http://10.77.0.2:9080/\n  1 threads and 64 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   487.12us  100.20us   5.00ms   90.00%\n    Req/Sec   130.00k     5.00k  140.00k    80.00%\n  Latency Distribution\n     50%  470.00us\n     75%  520.00us\n     90%  600.00us\n     99%    1.20ms\n  650000 requests in 5.00s, 70.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 3\nRequests/sec: 130000.00\nTransfer/sec:     14.00MB\n";
        let w = parse_wrk(text).unwrap();
        assert_eq!(w.requests, 650000.0);
        assert_eq!(w.seconds, 5.0);
        assert_eq!(w.rps, 130000.0);
        assert_eq!(w.p50_us, 470.0);
        assert_eq!(w.p99_us, 1200.0);
        assert_eq!(w.errors, 6);
    }

    #[test]
    fn reads_h2load() {
        let text = "finished in 5.00s, 12345.67 req/s, 1.23MB/s\nrequests: 61728 total, 61760 started, 61728 done, 61700 succeeded, 28 failed, 0 errored, 0 timeout\nstatus codes: 61728 2xx, 0 3xx, 0 4xx, 0 5xx\n                     min         max         mean         sd        +/- sd\ntime for request:      125us     12.34ms      1.23ms    456us    89.00%\n";
        let h = parse_h2load(text).unwrap();
        assert_eq!(h.succeeded, 61700.0);
        assert_eq!(h.errors, 28);
        assert_eq!(h.mean_us, 1230.0);
        assert_eq!(h.rps, 61700.0 / 5.0);
    }
}
