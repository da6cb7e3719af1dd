//! Choosing between iptables-legacy and iptables-nft for each family, as istio-iptables
//! does: a flavour that already holds rules wins; otherwise nft; the probe writes (and
//! removes) a rule in the *nat* table, because a filter-table probe passes on kernels that
//! cannot do NAT (istio/istio#57380).

use crate::config::IptablesFlavor;
use crate::error::InitError;
use crate::exec::{Cmd, Runner};
use crate::plan::Family;

/// iptables-restore learned `--wait` in 1.6.2; nft needs no lock at all.
const LOCKING_SINCE: (u32, u32, u32) = (1, 6, 2);

/// Which binary names to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Legacy,
    Nft,
    /// Plain `iptables`, whatever the distribution's alternative points at.
    Default,
}

impl From<IptablesFlavor> for Flavor {
    fn from(f: IptablesFlavor) -> Flavor {
        match f {
            IptablesFlavor::Legacy => Flavor::Legacy,
            IptablesFlavor::Nft => Flavor::Nft,
        }
    }
}

/// A usable iptables for one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iptables {
    pub family: Family,
    pub flavor: Flavor,
    /// Legacy iptables that takes the xtables lock: writes pass `--wait=30`.
    pub wait: bool,
}

impl Iptables {
    /// The binaries `--dry-run` prints: no probing, since a dry run must not touch the host.
    pub fn assumed(family: Family, forced: Option<IptablesFlavor>) -> Iptables {
        Iptables {
            family,
            flavor: forced.map(Flavor::from).unwrap_or(Flavor::Default),
            wait: false,
        }
    }

    fn binary(&self, suffix: &str) -> String {
        let base = self.family.iptables();
        match self.flavor {
            Flavor::Legacy => format!("{base}-legacy{suffix}"),
            Flavor::Nft => format!("{base}-nft{suffix}"),
            Flavor::Default => format!("{base}{suffix}"),
        }
    }

    pub fn save(&self) -> Cmd {
        Cmd::new(self.binary("-save"))
    }

    /// `iptables-restore --noflush`: one atomic transaction per table for the whole input.
    pub fn restore(&self, input: String) -> Cmd {
        let cmd = Cmd::new(self.binary("-restore")).arg("--noflush");
        let cmd = if self.wait { cmd.arg("--wait=30") } else { cmd };
        cmd.stdin(input)
    }

    /// A single iptables command, e.g. `-t nat -C PREROUTING ...`.
    pub fn command<'a>(&self, args: impl IntoIterator<Item = &'a str>) -> Cmd {
        let cmd = Cmd::new(self.binary("")).args(args);
        if self.wait { cmd.arg("--wait=30") } else { cmd }
    }
}

/// What `X-save --version` says: `iptables-save v1.8.9 (nf_tables)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub number: (u32, u32, u32),
    pub nft: bool,
}

pub fn parse_version(text: &str) -> Option<Version> {
    let word = text.split_whitespace().find(|w| w.starts_with('v'))?;
    let mut parts = word[1..].split('.').map(|p| p.parse::<u32>().ok());
    let number = (
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
        parts.next().flatten().unwrap_or(0),
    );
    Some(Version {
        number,
        nft: text.contains("nf_tables"),
    })
}

/// The outcome of probing one flavour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub iptables: Iptables,
    /// `X-save` showed a rule or a chain of its own: this flavour is what the node uses.
    pub has_rules: bool,
}

/// The probe rule: protocol 255 never matches real traffic, and it is deleted right after.
const PROBE_RULE: [&str; 8] = ["-t", "nat", "-A", "INPUT", "-p", "255", "-j", "RETURN"];

/// Tries one flavour; the error text says why it cannot be used.
pub fn probe(runner: &dyn Runner, family: Family, flavor: Flavor) -> Result<Probe, String> {
    let mut ipt = Iptables {
        family,
        flavor,
        wait: false,
    };
    let save = ipt.save();
    let dump = runner
        .run(&save)
        .map_err(|e| e.to_string())
        .and_then(|out| {
            if out.success() {
                Ok(out.stdout)
            } else {
                Err(format!("{save} failed: {}", out.stderr.trim()))
            }
        })?;
    let version = runner
        .run(&save.clone().arg("--version"))
        .ok()
        .filter(|out| out.success() && !out.stderr.contains("unrecognized option"))
        .and_then(|out| parse_version(&out.stdout))
        // iptables 1.6.1 has no --version (istio/istio#49850): treat it as old legacy.
        .unwrap_or(Version {
            number: (0, 0, 0),
            nft: false,
        });
    ipt.wait = !version.nft && version.number >= LOCKING_SINCE;

    let add = runner
        .run(&ipt.command(PROBE_RULE))
        .map_err(|e| e.to_string())?;
    if !add.success() || add.stderr.contains("does not exist") {
        return Err(format!(
            "{} cannot add a rule to the nat table: {}",
            ipt.binary(""),
            add.stderr.trim()
        ));
    }
    let mut delete = PROBE_RULE;
    delete[2] = "-D";
    if let Ok(out) = runner.run(&ipt.command(delete))
        && !out.success()
    {
        tracing::warn!("could not remove the probe rule: {}", out.stderr.trim());
    }
    Ok(Probe {
        iptables: ipt,
        has_rules: holds_rules(&dump),
    })
}

/// Whether a save dump shows anything someone configured. istio-iptables counts lines
/// instead, but a legacy table that was merely initialised (by an earlier probe, say)
/// prints its built-in chains, which would make every re-run pick legacy on nft hosts.
pub fn holds_rules(dump: &str) -> bool {
    dump.lines().any(|line| {
        line.starts_with("-A ")
            || line
                .strip_prefix(':')
                .and_then(|decl| decl.split_whitespace().next())
                .is_some_and(|chain| !crate::plan::is_built_in(chain))
    })
}

/// The choice, given each flavour's probe: legacy if it is usable and already has rules,
/// else nft if usable, else plain iptables.
pub fn choose(
    legacy: &Result<Probe, String>,
    nft: &Result<Probe, String>,
    plain: &Result<Probe, String>,
) -> Option<Iptables> {
    match (legacy, nft, plain) {
        (Ok(p), _, _) if p.has_rules => Some(p.iptables.clone()),
        (_, Ok(p), _) => Some(p.iptables.clone()),
        (_, _, Ok(p)) => Some(p.iptables.clone()),
        (Ok(p), _, _) => Some(p.iptables.clone()),
        _ => None,
    }
}

/// Finds the iptables to use for `family`, or explains why there is none.
pub fn detect(
    runner: &dyn Runner,
    family: Family,
    forced: Option<IptablesFlavor>,
) -> Result<Iptables, InitError> {
    let no_iptables = |details: String| InitError::NoIptables {
        family: family.iptables(),
        details,
    };
    if let Some(forced) = forced {
        return probe(runner, family, forced.into())
            .map(|p| p.iptables)
            .map_err(|why| no_iptables(format!("  forced {forced:?}: {why}")));
    }
    let legacy = probe(runner, family, Flavor::Legacy);
    let nft = probe(runner, family, Flavor::Nft);
    // Plain iptables is only worth probing when neither named flavour works.
    let plain = if legacy.is_err() && nft.is_err() {
        probe(runner, family, Flavor::Default)
    } else {
        Err("not needed".to_string())
    };
    choose(&legacy, &nft, &plain).ok_or_else(|| {
        let why = |r: &Result<Probe, String>| r.as_ref().err().cloned().unwrap_or_default();
        no_iptables(format!(
            "  legacy: {}\n  nft: {}\n  plain: {}",
            why(&legacy),
            why(&nft),
            why(&plain)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usable(flavor: Flavor, has_rules: bool) -> Result<Probe, String> {
        Ok(Probe {
            iptables: Iptables {
                family: Family::V4,
                flavor,
                wait: false,
            },
            has_rules,
        })
    }

    fn unusable() -> Result<Probe, String> {
        Err("no".into())
    }

    #[test]
    fn versions() {
        assert_eq!(
            parse_version("iptables-save v1.8.9 (nf_tables)\n"),
            Some(Version {
                number: (1, 8, 9),
                nft: true
            })
        );
        assert_eq!(
            parse_version("iptables-save v1.6.2\n"),
            Some(Version {
                number: (1, 6, 2),
                nft: false
            })
        );
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn initialised_but_empty_tables_hold_no_rules() {
        let empty = "# Generated by iptables-save v1.8.9\n*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\nCOMMIT\n";
        assert!(!holds_rules(empty));
        assert!(holds_rules(
            &empty.replace("COMMIT", "-A INPUT -j DROP\nCOMMIT")
        ));
        assert!(holds_rules(
            &empty.replace("COMMIT", ":KUBE-SERVICES - [0:0]\nCOMMIT")
        ));
    }

    #[test]
    fn legacy_with_rules_wins() {
        let chosen = choose(
            &usable(Flavor::Legacy, true),
            &usable(Flavor::Nft, true),
            &unusable(),
        );
        assert_eq!(chosen.unwrap().flavor, Flavor::Legacy);
    }

    #[test]
    fn nft_wins_when_legacy_is_empty() {
        let chosen = choose(
            &usable(Flavor::Legacy, false),
            &usable(Flavor::Nft, false),
            &unusable(),
        );
        assert_eq!(chosen.unwrap().flavor, Flavor::Nft);
    }

    #[test]
    fn plain_then_empty_legacy_are_fallbacks() {
        let chosen = choose(
            &usable(Flavor::Legacy, false),
            &unusable(),
            &usable(Flavor::Default, false),
        );
        assert_eq!(chosen.unwrap().flavor, Flavor::Default);
        let chosen = choose(&usable(Flavor::Legacy, false), &unusable(), &unusable());
        assert_eq!(chosen.unwrap().flavor, Flavor::Legacy);
        assert_eq!(choose(&unusable(), &unusable(), &unusable()), None);
    }

    #[test]
    fn legacy_writes_wait_for_the_lock() {
        let ipt = Iptables {
            family: Family::V6,
            flavor: Flavor::Legacy,
            wait: true,
        };
        assert_eq!(
            ipt.restore(String::new()).to_string(),
            "ip6tables-legacy-restore --noflush --wait=30"
        );
        assert_eq!(ipt.save().to_string(), "ip6tables-legacy-save");
    }
}
