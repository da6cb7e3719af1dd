//! What is already programmed: `iptables-save` output parsed, compared with the plan, and
//! turned into the exact cleanup of Skiff's own chains and jumps. Pure functions only.

use std::collections::BTreeMap;

use crate::plan::{Rule, Table, is_built_in};
use crate::restore::{RestoreText, add_rules, new_chains};

/// Skiff keeps Istio's chain names, so this prefix is what "ours" means in a ruleset.
pub const CHAIN_PREFIX: &str = "ISTIO_";

/// One table of `iptables-save` output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableState {
    /// Every chain declared (`:NAME ...`), built-in or not, in order.
    pub chains: Vec<String>,
    /// Rules as `(chain, spec)` in save order, where spec is everything after `-A CHAIN `.
    pub rules: Vec<(String, String)>,
}

impl TableState {
    fn istio_chains(&self) -> impl Iterator<Item = &str> {
        self.chains
            .iter()
            .map(String::as_str)
            .filter(|c| c.starts_with(CHAIN_PREFIX))
    }

    fn rule_count(&self, chain: &str) -> usize {
        self.rules.iter().filter(|(c, _)| c == chain).count()
    }

    /// Rules in built-in chains that jump into one of our chains.
    fn jumps_into_ours(&self) -> impl Iterator<Item = &(String, String)> {
        self.rules.iter().filter(|(chain, spec)| {
            is_built_in(chain) && jump_target(spec).is_some_and(|t| t.starts_with(CHAIN_PREFIX))
        })
    }
}

/// A whole `iptables-save` output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaveState {
    pub tables: BTreeMap<Table, TableState>,
}

fn jump_target(spec: &str) -> Option<&str> {
    let mut words = spec.split_whitespace();
    while let Some(word) = words.next() {
        if word == "-j" || word == "--jump" {
            return words.next();
        }
    }
    None
}

/// Parses `iptables-save` output. Tables Skiff never touches (e.g. `security`) are skipped.
pub fn parse_save(text: &str) -> SaveState {
    let mut state = SaveState::default();
    let mut current: Option<Table> = None;
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(name) = line.strip_prefix('*') {
            current = Table::from_name(name.trim());
            if let Some(table) = current {
                state.tables.entry(table).or_default();
            }
            continue;
        }
        let Some(table) = current.and_then(|t| state.tables.get_mut(&t)) else {
            continue;
        };
        if let Some(decl) = line.strip_prefix(':') {
            if let Some(name) = decl.split_whitespace().next() {
                table.chains.push(name.to_string());
            }
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let (chain, spec) = rest.split_once(' ').unwrap_or((rest, ""));
            table.rules.push((chain.to_string(), spec.to_string()));
        }
    }
    state
}

/// How the present rules relate to the planned ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assessment {
    /// Nothing of ours is there: apply.
    Clean,
    /// Our chains are there and have the planned shape; whether every rule matches exactly is
    /// left to an `-C` check, which needs the kernel's own parser.
    SameShape,
    /// Our chains are there and differ; the string says how, for the operator.
    Differs(String),
}

/// Compares a family's save state with its planned rules: chains present, rule counts of our
/// chains, no stray chain of ours, and as many jumps into our chains as planned.
pub fn assess(state: &SaveState, planned: &[Rule]) -> Assessment {
    let residue = state
        .tables
        .values()
        .any(|t| t.istio_chains().next().is_some() || t.jumps_into_ours().next().is_some());
    if !residue {
        return Assessment::Clean;
    }
    let empty = TableState::default();
    let table = |t: Table| state.tables.get(&t).unwrap_or(&empty);

    let expected_chains = new_chains(planned);
    for (t, chain) in &expected_chains {
        if !table(*t).chains.iter().any(|c| c == chain) {
            return Assessment::Differs(format!(
                "chain {chain} is missing from table {}",
                t.name()
            ));
        }
        let want = planned
            .iter()
            .filter(|r| r.table == *t && r.chain == *chain)
            .count();
        let have = table(*t).rule_count(chain);
        if want != have {
            return Assessment::Differs(format!(
                "chain {chain} in table {} has {have} rules, {want} planned",
                t.name()
            ));
        }
    }
    for (t, ts) in &state.tables {
        if let Some(stray) = ts
            .istio_chains()
            .find(|c| !expected_chains.contains(&(*t, c)))
        {
            return Assessment::Differs(format!(
                "chain {stray} in table {} is not planned",
                t.name()
            ));
        }
        let want = planned
            .iter()
            .filter(|r| r.table == *t && is_built_in(r.chain))
            .filter(|r| r.jump_target().is_some_and(|j| j.starts_with(CHAIN_PREFIX)))
            .count();
        let have = ts.jumps_into_ours().count();
        if want != have {
            return Assessment::Differs(format!(
                "table {} has {have} jumps into ISTIO_ chains, {want} planned",
                t.name()
            ));
        }
    }
    Assessment::SameShape
}

/// Planned rules in built-in chains that do not jump into our chains (e.g. `-A PREROUTING -i
/// nic -j RETURN`): they are ours too, but only an `-C` check can find them in a save dump,
/// because the kernel rewrites their spelling.
pub fn owned_plain_rules(planned: &[Rule]) -> Vec<&Rule> {
    planned
        .iter()
        .filter(|r| is_built_in(r.chain))
        .filter(|r| !r.jump_target().is_some_and(|j| j.starts_with(CHAIN_PREFIX)))
        .collect()
}

/// Adds to `text` the removal of everything of ours in `state`: the jumps into our chains
/// and `present_plain` (owned rules in built-in chains, known to be present), then a flush
/// of every one of our chains, then their deletion (a chain can only go once nothing
/// references it, hence the three passes). Nothing else is touched.
pub fn add_cleanup(text: &mut RestoreText, state: &SaveState, present_plain: &[&Rule]) {
    for (table, ts) in &state.tables {
        for (chain, spec) in ts.jumps_into_ours().collect::<Vec<_>>().into_iter().rev() {
            text.push(*table, format!("-D {chain} {spec}"));
        }
        for rule in present_plain.iter().rev().filter(|r| r.table == *table) {
            text.push(*table, format!("-D {} {}", rule.chain, rule.spec));
        }
        for chain in ts.istio_chains() {
            text.push(*table, format!("-F {chain}"));
        }
        for chain in ts.istio_chains() {
            text.push(*table, format!("-X {chain}"));
        }
    }
}

/// The restore input that removes everything of ours.
pub fn cleanup_text(state: &SaveState, present_plain: &[&Rule]) -> String {
    let mut text = RestoreText::default();
    add_cleanup(&mut text, state, present_plain);
    text.render()
}

/// One restore input that removes what is there and programs the plan. Each table is
/// committed atomically, so no packet sees a half-programmed table (which is why Skiff needs
/// none of istio-iptables' temporary DROP guardrails while reconciling).
pub fn reconcile_text(state: &SaveState, present_plain: &[&Rule], planned: &[Rule]) -> String {
    let mut text = RestoreText::default();
    add_cleanup(&mut text, state, present_plain);
    add_rules(&mut text, planned);
    text.render()
}

/// The save state that applying `planned` on a clean host produces, up to the kernel's
/// spelling of specs: what `--dry-run --cleanup-only` assumes is there.
pub fn state_after(planned: &[Rule]) -> SaveState {
    let mut state = SaveState::default();
    for (table, chain) in new_chains(planned) {
        state
            .tables
            .entry(table)
            .or_default()
            .chains
            .push(chain.to_string());
    }
    for rule in planned {
        state
            .tables
            .entry(rule.table)
            .or_default()
            .rules
            .push((rule.chain.to_string(), rule.spec.clone()));
    }
    state
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
