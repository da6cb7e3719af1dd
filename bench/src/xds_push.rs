//! Skiff's memory after a large control-plane push, measured by running the workspace's
//! `skiff-bench-xds` (one proxy under a test xDS server: 1,000 services / 10,000 endpoints)
//! and reading the summary line it prints for this harness.

use anyhow::{Context, Result, bail};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct XdsPush {
    pub command: String,
    pub idle_mib: f64,
    /// After the push that adds the 1,000 services.
    pub after_first_mib: f64,
    /// After the last of the pushes that replace every one of them.
    pub after_replace_mib: f64,
    pub peak_mib: f64,
}

/// The line `skiff-bench-xds` ends with.
const PREFIX: &str = "skiff-bench-xds rss_kib:";

pub fn measure(rounds: usize) -> Result<XdsPush> {
    let binary = skiff_tests::binary("skiff-bench-xds");
    let rounds = rounds.max(1).to_string();
    let output = std::process::Command::new(&binary)
        .args([rounds.as_str(), "delta"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("run {}", binary.display()))?;
    if !output.status.success() {
        bail!("{} failed: {}", binary.display(), output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut push = parse(&stdout)?;
    push.command = format!("skiff-bench-xds {rounds} delta");
    Ok(push)
}

fn parse(stdout: &str) -> Result<XdsPush> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(PREFIX))
        .with_context(|| format!("no line starting {PREFIX:?} in skiff-bench-xds's output"))?;
    let field = |name: &str| -> Result<f64> {
        let kib: u64 = line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .with_context(|| format!("{name}= missing from {line:?}"))?
            .parse()
            .with_context(|| format!("{name}= is not a number in {line:?}"))?;
        Ok(kib as f64 / 1024.0)
    };
    Ok(XdsPush {
        command: String::new(),
        idle_mib: field("idle")?,
        after_first_mib: field("first")?,
        after_replace_mib: field("replace")?,
        peak_mib: field("peak")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_line_is_read_among_the_others() {
        let out = "| push | ... |\nproxy RSS: idle 7.4 MiB\nskiff-bench-xds rss_kib: idle=7577 first=17408 replace=20480 peak=40960\n";
        let push = parse(out).unwrap();
        assert_eq!(push.idle_mib, 7577.0 / 1024.0);
        assert_eq!(push.after_first_mib, 17.0);
        assert_eq!(push.after_replace_mib, 20.0);
        assert_eq!(push.peak_mib, 40.0);
    }

    #[test]
    fn a_missing_field_is_named() {
        let err = parse("skiff-bench-xds rss_kib: idle=1 first=2 peak=3\n").unwrap_err();
        assert!(err.to_string().contains("replace="), "{err}");
        assert!(parse("nothing here\n").is_err());
    }
}
