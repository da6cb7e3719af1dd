//! skiff-init: programs iptables in a Pod's network namespace so that its TCP traffic goes
//! through the Skiff sidecar. Flag- and rule-compatible with Istio's `istio-iptables`.
//!
//! The pipeline is `flags` → `config` (validated) → `plan` (pure: rules per family) →
//! `restore` (iptables-restore text) → `apply` (detect the iptables flavour, compare with
//! `state`, one restore per family) → optionally `validate` (the redirect self-test).

pub mod apply;
pub mod config;
pub mod detect;
pub mod error;
pub mod exec;
pub mod flags;
pub mod host;
pub mod plan;
pub mod restore;
pub mod state;
pub mod validate;

pub use config::Config;
pub use error::InitError;
pub use flags::Flags;
pub use plan::{HostFacts, Plan, plan};

use std::io::Write;

use config::Action;

/// Runs skiff-init for parsed flags: the whole program but logging set-up and exit codes.
/// Dry-run output goes to `out`.
pub fn run(flags: &Flags, out: &mut dyn Write) -> Result<(), InitError> {
    let cfg = Config::from_flags(flags, &config::EnvSettings::from_process())?;
    if let Some(path) = &cfg.network_namespace {
        enter_netns(path)?;
    }
    let host = host::gather(&cfg);
    tracing::info!(?cfg, ?host, "configuration");
    let plan = plan::plan(&cfg, &host);

    if cfg.dry_run {
        for cmd in apply::dry_run_commands(&cfg, &plan) {
            writeln!(out, "{cmd}")?;
            if let Some(stdin) = &cmd.stdin {
                out.write_all(stdin.as_bytes())?;
            }
        }
        if cfg.run_validation {
            tracing::info!("dry run: skipping the validation self-test");
        }
        return Ok(());
    }

    for (family, outcome) in apply::run(&cfg, &plan, &exec::System)? {
        tracing::info!(family = family.iptables(), ?outcome, "done");
    }
    if cfg.run_validation && cfg.action != Action::CleanupOnly {
        let families: Vec<plan::Family> = plan.families().map(|(f, _)| f).collect();
        validate::run(&cfg, &families)?;
    }
    Ok(())
}

/// `--network-namespace`: switch this (single-threaded) process into the namespace before
/// any command runs, so every iptables child inherits it.
fn enter_netns(path: &str) -> Result<(), InitError> {
    let fail = |reason: String| InitError::Netns {
        path: path.to_string(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| fail(e.to_string()))
}
