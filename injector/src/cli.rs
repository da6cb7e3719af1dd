//! What `inject` and `uninject` do to a YAML file, apart from reading and writing it.

use crate::config::InjectionConfig;
use crate::inject::{self, Outcome, Request};
use crate::policy::PolicyConfig;
use crate::sidecar::Owner;
use crate::workload::{self, Change, Kind, WorkloadError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Inject,
    Uninject,
}

/// The new file, and a line per workload that was left alone and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processed {
    pub output: String,
    pub skipped: Vec<String>,
}

/// Injects (or uninjects) every workload in `input`. Manual injection applies only the
/// pod's own opt-outs: running the command is the opt-in, so the config's policy and
/// selectors are not consulted, as with `istioctl kube-inject`.
pub fn process(
    input: &str,
    mode: Mode,
    config: &InjectionConfig,
    namespace: &str,
) -> Result<Processed, WorkloadError> {
    let policy = PolicyConfig::manual();
    let mut skipped = Vec::new();
    let output = workload::process(input, |workload, template| {
        let namespace = workload.namespace.as_deref().unwrap_or(namespace);
        // A pod is its own workload; any other kind names the workload for its template.
        let owner = (workload.kind != Kind::Pod).then(|| Owner {
            kind: workload.kind.name().to_string(),
            api_version: workload.api_version.clone(),
            name: workload.name.clone(),
        });
        match mode {
            Mode::Inject => {
                let request = Request {
                    namespace,
                    config,
                    policy: &policy,
                    owner: owner.as_ref(),
                };
                match inject::inject(template, &request)? {
                    Outcome::Injected => Ok(Change::Changed),
                    Outcome::Skipped(reason) => {
                        skipped.push(format!(
                            "===> Skipping injection because {workload}: {reason}"
                        ));
                        Ok(Change::Unchanged)
                    }
                }
            }
            Mode::Uninject => Ok(if inject::uninject(template, config)? {
                Change::Changed
            } else {
                Change::Unchanged
            }),
        }
    })?;
    Ok(Processed { output, skipped })
}

/// A unified diff of the file before and after, for `--diff`.
pub fn unified_diff(before: &str, after: &str, name: &str) -> String {
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header(name, &format!("{name} (injected)"))
        .to_string()
}
