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

/// A flavour that works, with the `X-save` output read while probing it (the state before
/// the probe rule), so the caller need not run `X-save` again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub iptables: Iptables,
    pub saved: String,
}

/// The probe: a rule for protocol 255, which never matches real traffic, added to the nat
/// table and deleted again. The nat table, not filter, because a filter probe passes on
/// kernels that cannot NAT (istio/istio#57380).
const PROBE: &str = "*nat\n-A INPUT -p 255 -j RETURN\n-D INPUT -p 255 -j RETURN\nCOMMIT\n";

/// Runs `X-save` for a flavour; the error says why that flavour is unusable.
fn save_dump(runner: &dyn Runner, ipt: &Iptables) -> Result<String, String> {
    let save = ipt.save();
    let out = runner.run(&save).map_err(|e| e.to_string())?;
    if out.success() {
        Ok(out.stdout)
    } else {
        Err(format!("{save} failed: {}", out.stderr.trim()))
    }
}

/// Checks that a flavour can write to the nat table; `saved` is its `X-save` output.
fn probe_writable(
    runner: &dyn Runner,
    mut ipt: Iptables,
    saved: String,
) -> Result<Detected, String> {
    // iptables-nft is nft by name and takes no lock; others must tell their version.
    if ipt.flavor != Flavor::Nft {
        let version = runner
            .run(&ipt.save().arg("--version"))
            .ok()
            .filter(|out| out.success() && !out.stderr.contains("unrecognized option"))
            .and_then(|out| parse_version(&out.stdout))
            // iptables 1.6.1 has no --version (istio/istio#49850): treat it as old legacy.
            .unwrap_or(Version {
                number: (0, 0, 0),
                nft: false,
            });
        ipt.wait = !version.nft && version.number >= LOCKING_SINCE;
    }
    // Add and delete in one transaction: the kernel must accept a nat-table change, and
    // nothing is ever visible to traffic. One process instead of two.
    let probe = runner
        .run(&ipt.restore(PROBE.to_string()))
        .map_err(|e| e.to_string())?;
    if !probe.success() {
        return Err(format!(
            "{} cannot change the nat table: {}",
            ipt.binary("-restore"),
            probe.stderr.trim()
        ));
    }
    Ok(Detected {
        iptables: ipt,
        saved,
    })
}

/// Probes one flavour from scratch.
pub fn probe(runner: &dyn Runner, family: Family, flavor: Flavor) -> Result<Detected, String> {
    let ipt = Iptables {
        family,
        flavor,
        wait: false,
    };
    let saved = save_dump(runner, &ipt)?;
    probe_writable(runner, ipt, saved)
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

/// Finds the iptables to use for `family`, or explains why there is none. The preference
/// is istio-iptables': legacy if it is usable and already holds rules (the node uses it),
/// else nft, else plain `iptables`, else legacy after all. Flavours are only probed as far as
/// the choice needs, since every probe is a few processes.
pub fn detect(
    runner: &dyn Runner,
    family: Family,
    forced: Option<IptablesFlavor>,
) -> Result<Detected, InitError> {
    let no_iptables = |details: String| InitError::NoIptables {
        family: family.iptables(),
        details,
    };
    if let Some(forced) = forced {
        return probe(runner, family, forced.into())
            .map_err(|why| no_iptables(format!("  forced {forced:?}: {why}")));
    }
    let legacy = Iptables {
        family,
        flavor: Flavor::Legacy,
        wait: false,
    };
    let mut failures = Vec::new();
    let mut empty_legacy = None;
    match save_dump(runner, &legacy) {
        Ok(saved) if holds_rules(&saved) => match probe_writable(runner, legacy.clone(), saved) {
            Ok(found) => return Ok(found),
            Err(why) => failures.push(format!("  legacy: {why}")),
        },
        Ok(saved) => empty_legacy = Some(saved),
        Err(why) => failures.push(format!("  legacy: {why}")),
    }
    for flavor in [Flavor::Nft, Flavor::Default] {
        match probe(runner, family, flavor) {
            Ok(found) => return Ok(found),
            Err(why) => failures.push(format!("  {flavor:?}: {why}")),
        }
    }
    if let Some(saved) = empty_legacy {
        match probe_writable(runner, legacy, saved) {
            Ok(found) => return Ok(found),
            Err(why) => failures.push(format!("  legacy: {why}")),
        }
    }
    Err(no_iptables(failures.join("\n")))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    use crate::exec::Output;
    use std::cell::RefCell;

    /// Answers like a host where each flavour has the given save output (None: missing)
    /// and can or cannot write to nat; records the commands.
    struct Host {
        legacy: Option<&'static str>,
        nft: Option<&'static str>,
        plain: Option<&'static str>,
        writable: bool,
        log: RefCell<Vec<String>>,
    }

    impl Runner for Host {
        fn run(&self, cmd: &Cmd) -> Result<Output, InitError> {
            self.log.borrow_mut().push(cmd.to_string());
            let dump = if cmd.program.contains("legacy") {
                self.legacy
            } else if cmd.program.contains("nft") {
                self.nft
            } else {
                self.plain
            };
            let Some(dump) = dump else {
                return Err(InitError::Spawn {
                    command: cmd.to_string(),
                    source: std::io::ErrorKind::NotFound.into(),
                });
            };
            let out = |code: i32, stdout: &str| Output {
                code,
                stdout: stdout.to_string(),
                stderr: String::new(),
            };
            Ok(if cmd.args.iter().any(|a| a == "--version") {
                out(0, "iptables-save v1.8.9 (legacy)")
            } else if cmd.program.ends_with("-save") {
                out(0, dump)
            } else {
                out(if self.writable { 0 } else { 4 }, "")
            })
        }
    }

    const EMPTY: &str = "*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n";
    const RULES: &str = "*nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j RETURN\nCOMMIT\n";

    fn host(
        legacy: Option<&'static str>,
        nft: Option<&'static str>,
        plain: Option<&'static str>,
    ) -> Host {
        Host {
            legacy,
            nft,
            plain,
            writable: true,
            log: RefCell::new(Vec::new()),
        }
    }

    #[test]
    fn legacy_with_rules_wins_and_its_dump_is_kept() {
        let h = host(Some(RULES), Some(RULES), None);
        let found = detect(&h, Family::V4, None).unwrap();
        assert_eq!(found.iptables.flavor, Flavor::Legacy);
        assert!(found.iptables.wait, "legacy 1.8.9 takes the lock");
        assert_eq!(found.saved, RULES);
        assert!(
            !h.log.borrow().iter().any(|c| c.contains("nft")),
            "nft never probed"
        );
    }

    #[test]
    fn nft_wins_when_legacy_is_empty_and_needs_no_version_call() {
        let h = host(Some(EMPTY), Some(EMPTY), Some(EMPTY));
        let found = detect(&h, Family::V4, None).unwrap();
        assert_eq!(found.iptables.flavor, Flavor::Nft);
        assert!(!found.iptables.wait);
        let log = h.log.borrow();
        assert_eq!(
            *log,
            vec![
                "iptables-legacy-save",
                "iptables-nft-save",
                "iptables-nft-restore --noflush",
            ]
        );
    }

    #[test]
    fn plain_then_empty_legacy_are_fallbacks() {
        let found = detect(&host(Some(EMPTY), None, Some(EMPTY)), Family::V4, None).unwrap();
        assert_eq!(found.iptables.flavor, Flavor::Default);
        let found = detect(&host(Some(EMPTY), None, None), Family::V4, None).unwrap();
        assert_eq!(found.iptables.flavor, Flavor::Legacy);
    }

    #[test]
    fn nothing_usable_lists_every_reason() {
        let mut h = host(Some(EMPTY), Some(EMPTY), None);
        h.writable = false;
        let err = detect(&h, Family::V6, None).unwrap_err().to_string();
        assert!(err.contains("no usable ip6tables"), "{err}");
        assert!(
            err.contains("ip6tables-nft-restore cannot change the nat table"),
            "{err}"
        );
        assert!(
            err.contains("ip6tables-legacy-restore cannot change"),
            "{err}"
        );
        assert!(err.contains("kernel"), "{err}");
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
