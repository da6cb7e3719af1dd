//! Putting a plan into the kernel: per family, read what is there, decide (apply, nothing
//! to do, reconcile, refuse, clean up), then one `iptables-restore --noflush` per family.
//! The decision is a pure function of the save state; this module only sequences I/O.

use crate::config::{Action, Config};
use crate::detect::{self, Iptables};
use crate::error::InitError;
use crate::exec::{Cmd, Runner, ensure_success};
use crate::plan::{Family, Plan, Rule, TproxyRoute};
use crate::restore::{apply_text, check_text};
use crate::state::{self, Assessment, SaveState};

/// What happened to one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// The same rules were already in place (a restarted init container): nothing changed.
    AlreadyInPlace,
    Reconciled,
    CleanedUp,
    /// Nothing of ours was there to clean up.
    NothingToClean,
}

/// The decision for one family, made before anything is changed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Restore { input: String, outcome: Outcome },
    Keep,
    Nothing,
}

/// Every command a fresh apply (or cleanup) runs, for `--dry-run`. Nothing is read from the
/// host: the iptables flavour is the forced one or plain `iptables`, and a cleanup assumes
/// the planned rules are present.
pub fn dry_run_commands(cfg: &Config, plan: &Plan) -> Vec<Cmd> {
    let mut cmds = Vec::new();
    for (family, rules) in plan.families() {
        let ipt = Iptables::assumed(family, cfg.force_flavor);
        match cfg.action {
            Action::Apply => cmds.push(ipt.restore(apply_text(rules))),
            Action::CleanupOnly => {
                let plain = state::owned_plain_rules(rules);
                cmds.push(ipt.restore(state::cleanup_text(&state::state_after(rules), &plain)));
            }
            Action::Nothing => {}
        }
    }
    cmds.extend(route_commands(cfg, plan));
    cmds
}

/// `ip` commands that accompany the rules: `::6` on lo (IPv6 loopback is a /128, so the
/// passthrough source address must be added), and TPROXY's policy routing.
fn route_commands(cfg: &Config, plan: &Plan) -> Vec<Cmd> {
    let v6 = plan.v6.is_some();
    let mut cmds = Vec::new();
    match cfg.action {
        Action::Apply => {
            if v6 {
                cmds.push(Cmd::new("ip").args(["-6", "addr", "add", "::6/128", "dev", "lo"]));
            }
            if let Some(route) = plan.tproxy_route {
                cmds.extend(tproxy_route_commands(route, v6, "add"));
            }
        }
        Action::CleanupOnly => {
            if let Some(route) = plan.tproxy_route {
                cmds.extend(tproxy_route_commands(route, v6, "del"));
            }
        }
        Action::Nothing => {}
    }
    cmds
}

fn tproxy_route_commands(route: TproxyRoute, v6: bool, verb: &str) -> Vec<Cmd> {
    let mark = route.mark.to_string();
    let table = route.table.to_string();
    let mut cmds = Vec::new();
    for (flag, all) in [("-4", "0.0.0.0/0"), ("-6", "::/0")] {
        if flag == "-6" && !v6 {
            continue;
        }
        cmds.push(Cmd::new("ip").args([flag, "rule", verb, "fwmark", &mark, "lookup", &table]));
        cmds.push(Cmd::new("ip").args([
            flag, "route", verb, "local", all, "dev", "lo", "table", &table,
        ]));
    }
    cmds
}

/// Applies (or cleans up) `plan` on this host; returns what happened per family.
pub fn run(
    cfg: &Config,
    plan: &Plan,
    runner: &dyn Runner,
) -> Result<Vec<(Family, Outcome)>, InitError> {
    if cfg.action == Action::Nothing {
        return Ok(Vec::new());
    }
    // Decide for every family before changing anything, so a refusal leaves the host as it was.
    let mut steps = Vec::new();
    for (family, rules) in plan.families() {
        let detected = detect::detect(runner, family, cfg.force_flavor)?;
        let ipt = detected.iptables;
        tracing::info!(family = family.iptables(), flavor = ?ipt.flavor, "using iptables");
        let saved = state::parse_save(&detected.saved);
        let step = decide(cfg, family, &ipt, rules, &saved, runner)?;
        steps.push((family, ipt, step));
    }

    let mut outcomes = Vec::new();
    for (family, ipt, step) in &steps {
        let family = *family;
        match step.clone() {
            Step::Restore { input, outcome } => {
                tracing::info!(
                    family = family.iptables(),
                    "running {} with:\n{}",
                    ipt.restore(String::new()),
                    input.trim_end()
                );
                runner.run_ok(&ipt.restore(input))?;
                outcomes.push((family, outcome));
            }
            Step::Keep => outcomes.push((family, Outcome::AlreadyInPlace)),
            Step::Nothing => outcomes.push((family, Outcome::NothingToClean)),
        }
    }

    for cmd in route_commands(cfg, plan) {
        run_route_command(cfg, runner, &cmd)?;
    }

    for (family, ipt, _) in &steps {
        if let Ok(out) = runner.run(&ipt.save()) {
            tracing::info!(
                "final {} state:\n{}",
                family.iptables(),
                out.stdout.trim_end()
            );
        }
    }
    Ok(outcomes)
}

/// Runs one `ip` command so that re-runs converge: an existing address or route is fine,
/// a policy rule is added only when missing (the kernel would add a duplicate under a new
/// priority), and removal takes out every copy and tolerates there being none.
fn run_route_command(cfg: &Config, runner: &dyn Runner, cmd: &Cmd) -> Result<(), InitError> {
    let is_rule = cmd.args.get(1).is_some_and(|a| a == "rule");
    if cfg.action == Action::CleanupOnly {
        // Bounded: each successful delete removes one copy.
        for _ in 0..16 {
            if !runner.run(cmd)?.success() || !is_rule {
                break;
            }
        }
        return Ok(());
    }
    if is_rule {
        let mut list = cmd.clone();
        list.args[2] = "list".to_string();
        let existing = runner.run(&list)?;
        if existing.success() && !existing.stdout.trim().is_empty() {
            return Ok(());
        }
    }
    let out = runner.run(cmd)?;
    if out.stderr.contains("File exists") || out.stderr.contains("already assigned") {
        return Ok(());
    }
    ensure_success(cmd, out).map(|_| ())
}

fn decide(
    cfg: &Config,
    family: Family,
    ipt: &Iptables,
    rules: &[Rule],
    saved: &SaveState,
    runner: &dyn Runner,
) -> Result<Step, InitError> {
    let present_plain = || -> Vec<&Rule> {
        state::owned_plain_rules(rules)
            .into_iter()
            .filter(|r| {
                let check = r.check_command();
                let args = ["-t", r.table.name()].into_iter().chain(check.split(' '));
                runner.run(&ipt.command(args)).is_ok_and(|o| o.success())
            })
            .collect()
    };

    if cfg.action == Action::CleanupOnly {
        let plain = present_plain();
        let input = state::cleanup_text(saved, &plain);
        return Ok(if input.is_empty() {
            Step::Nothing
        } else {
            Step::Restore {
                input,
                outcome: Outcome::CleanedUp,
            }
        });
    }
    let fresh = Step::Restore {
        input: apply_text(rules),
        outcome: Outcome::Applied,
    };
    if cfg.force_apply {
        return Ok(fresh);
    }
    let differs = match state::assess(saved, rules) {
        Assessment::Clean => return Ok(fresh),
        Assessment::SameShape => {
            let check = runner.run(&ipt.restore(check_text(rules)))?;
            if check.success() {
                tracing::info!(
                    family = family.iptables(),
                    "the planned rules are already in place; nothing to do"
                );
                return Ok(Step::Keep);
            }
            format!("a planned rule is not present: {}", check.stderr.trim())
        }
        Assessment::Differs(why) => why,
    };
    if !cfg.reconcile {
        return Err(InitError::Drift {
            family: family.iptables(),
            why: differs,
        });
    }
    tracing::info!(
        family = family.iptables(),
        "replacing rules that differ from the plan: {differs}"
    );
    Ok(Step::Restore {
        input: state::reconcile_text(saved, &present_plain(), rules),
        outcome: Outcome::Reconciled,
    })
}

#[cfg(test)]
#[path = "apply_tests.rs"]
mod tests;
