//! Rendering rules as `iptables-restore --noflush` input, in istio-iptables' canonical form:
//! tables in alphabetical order, `-N` lines first (chains with rules in order of first rule,
//! then chains only jumped to), no `:CHAIN` headers, no comments.

use std::collections::BTreeMap;

use crate::plan::{Rule, Table, is_built_in};

/// Groups lines per table and prints the tables that have any, in alphabetical order.
#[derive(Debug, Default)]
pub struct RestoreText {
    tables: BTreeMap<Table, Vec<String>>,
}

impl RestoreText {
    pub fn push(&mut self, table: Table, line: impl Into<String>) {
        self.tables.entry(table).or_default().push(line.into());
    }

    pub fn is_empty(&self) -> bool {
        self.tables.values().all(Vec::is_empty)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (table, lines) in &self.tables {
            if lines.is_empty() {
                continue;
            }
            out.push_str("* ");
            out.push_str(table.name());
            out.push('\n');
            for line in lines {
                out.push_str(line);
                out.push('\n');
            }
            out.push_str("COMMIT\n");
        }
        out
    }
}

/// The chains `rules` create, per table, in the order their `-N` lines are written.
pub fn new_chains(rules: &[Rule]) -> Vec<(Table, &str)> {
    let mut seen: Vec<(Table, &str)> = Vec::new();
    let mut note = |table: Table, chain: &'static str| {
        if !is_built_in(chain) && !seen.contains(&(table, chain)) {
            seen.push((table, chain));
        }
    };
    for rule in rules {
        note(rule.table, rule.chain);
    }
    for rule in rules {
        if let Some(target) = rule.jump_target().and_then(known_chain) {
            note(rule.table, target);
        }
    }
    seen
}

/// Jump targets are only chains Skiff itself names; anything else (REDIRECT, MARK, ...)
/// carries options and never reaches here, or is a built-in.
fn known_chain(name: &str) -> Option<&'static str> {
    use crate::plan::*;
    [
        ISTIO_INBOUND,
        ISTIO_REDIRECT,
        ISTIO_IN_REDIRECT,
        ISTIO_OUTPUT,
        ISTIO_OUTPUT_DNS,
        ISTIO_DIVERT,
        ISTIO_TPROXY,
        ISTIO_DROP,
    ]
    .into_iter()
    .find(|c| *c == name)
}

/// Appends the rules (with their `-N` lines) to `text`.
pub fn add_rules(text: &mut RestoreText, rules: &[Rule]) {
    for (table, chain) in new_chains(rules) {
        text.push(table, format!("-N {chain}"));
    }
    for rule in rules {
        text.push(rule.table, rule.command());
    }
}

/// The restore input that programs `rules` from scratch.
pub fn apply_text(rules: &[Rule]) -> String {
    let mut text = RestoreText::default();
    add_rules(&mut text, rules);
    text.render()
}

/// A restore input of `-C` lines only: it changes nothing and fails unless every planned rule
/// is present, so one process checks a whole family.
pub fn check_text(rules: &[Rule]) -> String {
    let mut text = RestoreText::default();
    for rule in rules {
        text.push(rule.table, rule.check_command());
    }
    text.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(table: Table, chain: &'static str, spec: &str) -> Rule {
        Rule {
            table,
            chain,
            position: None,
            spec: spec.to_string(),
        }
    }

    #[test]
    fn tables_are_alphabetical_and_chains_declared_first() {
        let rules = vec![
            rule(Table::Raw, "OUTPUT", "-j ISTIO_OUTPUT_DNS"),
            rule(Table::Nat, "OUTPUT", "-j ISTIO_OUTPUT"),
            rule(
                Table::Nat,
                "ISTIO_REDIRECT",
                "-p tcp -j REDIRECT --to-ports 15001",
            ),
            rule(Table::Mangle, "ISTIO_DROP", "-j DROP"),
        ];
        let expected = "\
* mangle
-N ISTIO_DROP
-A ISTIO_DROP -j DROP
COMMIT
* nat
-N ISTIO_REDIRECT
-N ISTIO_OUTPUT
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
COMMIT
* raw
-N ISTIO_OUTPUT_DNS
-A OUTPUT -j ISTIO_OUTPUT_DNS
COMMIT
";
        assert_eq!(apply_text(&rules), expected);
    }

    #[test]
    fn checks_drop_insert_positions() {
        let mut r = rule(Table::Nat, "PREROUTING", "-i eth1 -j RETURN");
        r.position = Some(1);
        assert_eq!(r.command(), "-I PREROUTING 1 -i eth1 -j RETURN");
        assert_eq!(
            check_text(&[r]),
            "* nat\n-C PREROUTING -i eth1 -j RETURN\nCOMMIT\n"
        );
    }

    #[test]
    fn jump_target_needs_a_bare_final_target() {
        assert_eq!(
            rule(Table::Nat, "OUTPUT", "-j ISTIO_OUTPUT").jump_target(),
            Some("ISTIO_OUTPUT")
        );
        assert_eq!(
            rule(
                Table::Nat,
                "ISTIO_REDIRECT",
                "-p tcp -j REDIRECT --to-ports 15001"
            )
            .jump_target(),
            None
        );
    }
}
