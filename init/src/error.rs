//! skiff-init's errors. Each says what failed and what to check, because the reader is an
//! operator looking at a Pod stuck in `Init:Error`, not someone with a debugger.

/// Exit code for bad flags or environment values (as clap uses for bad arguments).
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the redirect self-test fails (Istio's `istio-validation` uses 126).
pub const EXIT_VALIDATION: u8 = 126;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("invalid value {value:?} for {flag}: {reason}")]
    InvalidFlag {
        flag: &'static str,
        value: String,
        reason: String,
    },

    #[error(
        "no usable {family} found:\n{details}\nCheck that the image contains the iptables package \
         (iptables-legacy/iptables-nft), that the node's kernel supports the nat table \
         (load nf_nat, iptable_nat or nf_tables, xt_REDIRECT, xt_owner via /etc/modules-load.d), \
         and that this container has the NET_ADMIN and NET_RAW capabilities and runs as root"
    )]
    NoIptables {
        family: &'static str,
        details: String,
    },

    #[error("could not run {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{command} failed (exit code {code}){problem}: {stderr}{hint}")]
    Command {
        command: String,
        code: i32,
        /// For iptables commands, what xtables' exit code means.
        problem: String,
        stderr: String,
        hint: &'static str,
    },

    #[error(
        "{family} already holds Skiff/Istio rules that differ from the ones these flags plan ({why}). \
         Re-run with --reconcile to replace them, or with --cleanup-only to remove them"
    )]
    Drift { family: &'static str, why: String },

    #[error("cannot enter network namespace {path}: {reason}")]
    Netns { path: String, reason: String },

    #[error(
        "iptables validation failed; workload is not ready for the mesh: {reason}. Connections to \
         {probe} were not redirected to the inbound capture port. Check that the rules were applied \
         (iptables-save in the pod's network namespace), that the proxy UID matches -u, and that \
         nothing else in the pod's netns rewrites traffic"
    )]
    Validation { probe: String, reason: String },

    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl InitError {
    /// The process exit code for this error: usage errors and validation failures are told
    /// apart from the rest so that scripts and the kubelet can react to them.
    pub fn exit_code(&self) -> u8 {
        match self {
            InitError::InvalidFlag { .. } => EXIT_USAGE,
            InitError::Validation { .. } => EXIT_VALIDATION,
            _ => 1,
        }
    }
}

/// The meaning of xtables' exit codes (xtables.h `enum xtables_exittype`).
pub fn xtables_problem(code: i32) -> &'static str {
    match code {
        1 => "other",
        2 => "parameter",
        3 => "version",
        4 => "resource",
        _ => "unknown",
    }
}

/// A hint for the stderr patterns behind the usual field failures.
pub fn xtables_hint(stderr: &str) -> &'static str {
    if stderr.contains("Permission denied") || stderr.contains("Operation not permitted") {
        " (the container needs the NET_ADMIN and NET_RAW capabilities and must run as root)"
    } else if stderr.contains("does not exist")
        || stderr.contains("Table does not exist")
        || stderr.contains("unable to initialize table")
        || stderr.contains("No chain/target/match")
        || stderr.contains("Couldn't load")
    {
        " (the kernel lacks a module: load nf_nat, xt_REDIRECT, xt_owner, xt_conntrack, xt_mark, \
          xt_TPROXY/xt_CT as needed, or check that the nft/legacy flavour matches the node)"
    } else if stderr.contains("Chain already exists") {
        " (rules from an earlier run are present: use --reconcile or --cleanup-only)"
    } else {
        ""
    }
}
