//! The command line, kept flag-for-flag compatible with Istio's `istio-iptables` so that the
//! injector can pass Istio's argument list unchanged and operators can reuse what they know.
//!
//! Everything here is raw text as the user gave it; `config` turns it into typed values and
//! rejects bad input with the flag's name. Keeping the two apart lets the error name exactly
//! the flag (or environment variable) the value came from.

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};

/// `istio-iptables` flags, their environment aliases, and Skiff's two host-independence flags.
///
/// An environment variable sets a flag's value before the command line is read, so an
/// explicit flag wins (clap's `env` has exactly this precedence).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "skiff-init",
    version,
    // pflag lets a repeated flag override the earlier value; so does skiff-init.
    args_override_self = true,
    about = "Programs iptables in a Pod's network namespace so that its TCP traffic goes \
             through the Skiff sidecar (Istio istio-iptables compatible)."
)]
pub struct Flags {
    /// Outbound capture port: outbound TCP is redirected here.
    #[arg(short = 'p', long = "envoy-port", default_value = "15001")]
    pub envoy_port: String,

    /// Inbound capture port: inbound TCP is redirected (or TPROXYed) here.
    #[arg(
        short = 'z',
        long,
        env = "INBOUND_CAPTURE_PORT",
        default_value = "15006"
    )]
    pub inbound_capture_port: String,

    /// HBONE tunnel port: inbound to it is never captured.
    #[arg(
        short = 'e',
        long,
        env = "INBOUND_TUNNEL_PORT",
        default_value = "15008"
    )]
    pub inbound_tunnel_port: String,

    /// Comma-separated UIDs whose traffic is not redirected (default: uid of $ENVOY_USER, else 1337).
    #[arg(short = 'u', long, env = "PROXY_UID", default_value = "")]
    pub proxy_uid: String,

    /// Comma-separated GIDs whose traffic is not redirected (default: same as the UIDs).
    #[arg(short = 'g', long, env = "PROXY_GID", default_value = "")]
    pub proxy_gid: String,

    /// Inbound interception mode: REDIRECT (default) or TPROXY.
    #[arg(
        short = 'm',
        long = "istio-inbound-interception-mode",
        env = "ISTIO_INBOUND_INTERCEPTION_MODE",
        default_value = ""
    )]
    pub interception_mode: String,

    /// Packet mark used by TPROXY.
    #[arg(
        short = 't',
        long = "istio-inbound-tproxy-mark",
        env = "ISTIO_INBOUND_TPROXY_MARK",
        default_value = "1337"
    )]
    pub tproxy_mark: String,

    /// Policy-routing table used by TPROXY.
    #[arg(
        short = 'r',
        long = "istio-inbound-tproxy-route-table",
        env = "ISTIO_INBOUND_TPROXY_ROUTE_TABLE",
        default_value = "133"
    )]
    pub tproxy_route_table: String,

    /// Inbound ports to capture: `*` for all, or a comma-separated list; empty captures none.
    #[arg(
        short = 'b',
        long = "istio-inbound-ports",
        env = "ISTIO_INBOUND_PORTS",
        default_value = ""
    )]
    pub inbound_ports: String,

    /// Inbound ports never captured (only with `-b '*'`).
    #[arg(
        short = 'd',
        long = "istio-local-exclude-ports",
        env = "ISTIO_LOCAL_EXCLUDE_PORTS",
        default_value = ""
    )]
    pub inbound_exclude_ports: String,

    /// Interfaces whose traffic is never captured, in or out.
    #[arg(
        short = 'c',
        long = "istio-exclude-interfaces",
        env = "ISTIO_EXCLUDE_INTERFACES",
        default_value = ""
    )]
    pub exclude_interfaces: String,

    /// Outbound destinations to capture: `*` or comma-separated CIDRs; empty captures none.
    #[arg(
        short = 'i',
        long = "istio-service-cidr",
        env = "ISTIO_SERVICE_CIDR",
        default_value = ""
    )]
    pub service_cidr: String,

    /// Outbound destination CIDRs never captured.
    #[arg(
        short = 'x',
        long = "istio-service-exclude-cidr",
        env = "ISTIO_SERVICE_EXCLUDE_CIDR",
        default_value = ""
    )]
    pub service_exclude_cidr: String,

    /// Outbound TCP ports always captured, whatever the destination.
    #[arg(
        short = 'q',
        long = "istio-outbound-ports",
        env = "ISTIO_OUTBOUND_PORTS",
        default_value = ""
    )]
    pub outbound_ports: String,

    /// Outbound ports (TCP and UDP) never captured.
    #[arg(
        short = 'o',
        long = "istio-local-outbound-ports-exclude",
        env = "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE",
        default_value = ""
    )]
    pub outbound_exclude_ports: String,

    /// Interfaces (e.g. of a KubeVirt VM) whose inbound traffic is treated as outbound.
    #[arg(
        short = 'k',
        long = "kube-virt-interfaces",
        env = "KUBE_VIRT_INTERFACES",
        default_value = ""
    )]
    pub kube_virt_interfaces: String,

    /// Print every command and its stdin instead of running it; changes nothing.
    #[arg(short = 'n', long, env = "DRY_RUN", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_go_bool)]
    pub dry_run: bool,

    /// Port the validation self-test dials as the "original destination".
    #[arg(long, env = "IPTABLES_PROBE_PORT", default_value = "15002")]
    pub iptables_probe_port: String,

    /// How long the validation self-test waits (Go duration: 5s, 500ms, 1m30s).
    #[arg(long, env = "PROBE_TIMEOUT", default_value = "5s")]
    pub probe_timeout: String,

    /// Do not program any rule (pairs with --run-validation).
    #[arg(long, env = "SKIP_RULE_APPLY", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_go_bool)]
    pub skip_rule_apply: bool,

    /// Run the redirect self-test after applying; exit 126 when redirection does not work.
    #[arg(long, env = "RUN_VALIDATION", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_go_bool)]
    pub run_validation: bool,

    /// Capture DNS (port 53 to the resolv.conf nameservers) to the agent on 15053.
    /// Environment: REDIRECT_DNS, then ISTIO_META_DNS_CAPTURE (the latter wins).
    #[arg(long, env = "REDIRECT_DNS", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_go_bool)]
    pub redirect_dns: bool,

    /// Capture all port-53 traffic, not only to the resolv.conf nameservers.
    #[arg(long, env = "CAPTURE_ALL_DNS", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_go_bool)]
    pub capture_all_dns: bool,

    /// Drop packets that conntrack marks INVALID (instead of letting them reset connections).
    /// Environment: DROP_INVALID, then INVALID_DROP (the latter wins).
    #[arg(long, env = "DROP_INVALID", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_go_bool)]
    pub drop_invalid: bool,

    /// Look for an IPv6 address on every interface rather than deciding on the first address.
    /// Environment: DUAL_STACK, then ISTIO_DUAL_STACK (the latter wins).
    #[arg(long, env = "DUAL_STACK", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_go_bool)]
    pub dual_stack: bool,

    /// Network namespace (a path such as /var/run/netns/pod) to program instead of the current one.
    #[arg(long, env = "NETWORK_NAMESPACE", default_value = "")]
    pub network_namespace: String,

    /// Istio's CNI mode; not supported by skiff-init (it runs as the Pod's init container).
    #[arg(long, env = "CNI_MODE", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_go_bool)]
    pub cni_mode: bool,

    /// Replace rules that differ from the planned ones (a re-run with new flags).
    #[arg(long, env = "RECONCILE", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_go_bool)]
    pub reconcile: bool,

    /// Remove Skiff's (ISTIO_*) chains and the rules that lead to them, and nothing else.
    #[arg(long, env = "CLEANUP_ONLY", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_go_bool)]
    pub cleanup_only: bool,

    /// Apply even when rules are already present (fails if the chains exist).
    #[arg(long, env = "FORCE_APPLY", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_go_bool)]
    pub force_apply: bool,

    /// Istio's native nftables backend; not supported (iptables-nft is detected and used instead).
    #[arg(long, env = "NATIVE_NFTABLES", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_go_bool)]
    pub native_nftables: bool,

    /// Use this iptables flavour instead of detecting it: `legacy` or `nft`.
    #[arg(long, env = "FORCE_IPTABLES_BINARY", default_value = "")]
    pub force_iptables_binary: String,

    /// Skiff: program IPv6 too: `auto` detects it from the interface addresses as Istio does.
    #[arg(long, default_value = "auto")]
    pub ipv6: String,

    /// Skiff: DNS servers to capture (comma-separated IPs) instead of /etc/resolv.conf's.
    #[arg(long)]
    pub dns_servers: Option<String>,

    /// Istio log levels, e.g. `default:info` (scope:level pairs, comma-separated).
    #[arg(long = "log_output_level", default_value = "default:info")]
    pub log_output_level: String,

    /// Log as JSON lines.
    #[arg(long = "log_as_json", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true", value_parser = parse_go_bool)]
    pub log_as_json: bool,

    /// Accepted for compatibility with Istio's logging flags; skiff-init logs to stderr.
    #[arg(long = "log_target", hide = true)]
    pub log_target: Option<String>,

    /// Accepted for compatibility with Istio's logging flags.
    #[arg(long = "log_caller", hide = true)]
    pub log_caller: Option<String>,

    /// Accepted for compatibility with Istio's logging flags.
    #[arg(long = "log_stacktrace_level", hide = true)]
    pub log_stacktrace_level: Option<String>,
}

/// The arguments Istio's injector passes to istio-iptables for a default pod, which Skiff's
/// injector passes to skiff-init too (spec/init.md section 1). Tests and examples start here.
pub const INJECTED_DEFAULT_ARGS: &[&str] = &[
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "REDIRECT",
    "-i",
    "*",
    "-x",
    "",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
];

/// Flags with a second environment alias: istio-iptables binds both names, and the second one
/// is applied last, so it wins when both are set. clap binds one name; we apply the other.
const SECOND_ENV_ALIASES: &[(&str, &str)] = &[
    ("redirect_dns", "ISTIO_META_DNS_CAPTURE"),
    ("drop_invalid", "INVALID_DROP"),
    ("dual_stack", "ISTIO_DUAL_STACK"),
];

impl Flags {
    /// Parses the command line and the environment with istio-iptables' precedence.
    pub fn parse_from_env_and_args<I, T>(args: I) -> Result<Flags, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::parse_with_env(args, |name| std::env::var(name).ok())
    }

    /// Like [`Flags::parse_from_env_and_args`], reading the second aliases through `env`
    /// so tests need not change the process environment.
    pub fn parse_with_env<I, T>(
        args: I,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Flags, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Self::command().try_get_matches_from(args)?;
        let mut flags = Self::from_arg_matches(&matches)?;
        for (id, var) in SECOND_ENV_ALIASES {
            if from_command_line(&matches, id) {
                continue;
            }
            let Some(raw) = env(var).filter(|v| !v.is_empty()) else {
                continue;
            };
            let value = parse_go_bool(&raw).map_err(|reason| {
                Self::command().error(
                    clap::error::ErrorKind::ValueValidation,
                    format!("invalid value {raw:?} for environment variable {var}: {reason}"),
                )
            })?;
            match *id {
                "redirect_dns" => flags.redirect_dns = value,
                "drop_invalid" => flags.drop_invalid = value,
                _ => flags.dual_stack = value,
            }
        }
        Ok(flags)
    }
}

fn from_command_line(matches: &ArgMatches, id: &str) -> bool {
    matches.value_source(id) == Some(ValueSource::CommandLine)
}

/// Go's `strconv.ParseBool`, which pflag and Istio's env bindings use, so `DRY_RUN=1` and
/// `--dry-run=T` mean the same as they do for istio-iptables.
pub fn parse_go_bool(value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        other => Err(format!(
            "{other:?} is not a boolean (use true/false, 1/0, t/f)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Flags {
        let mut all = vec!["skiff-init"];
        all.extend_from_slice(args);
        Flags::parse_with_env(all, |_| None).expect("flags parse")
    }

    #[test]
    fn injected_default_arguments_parse() {
        let f = parse(&[INJECTED_DEFAULT_ARGS, &["--log_output_level=default:info"]].concat());
        assert_eq!(f.envoy_port, "15001");
        assert_eq!(f.inbound_capture_port, "15006");
        assert_eq!(f.proxy_uid, "1337");
        assert_eq!(f.interception_mode, "REDIRECT");
        assert_eq!(f.service_cidr, "*");
        assert_eq!(f.service_exclude_cidr, "");
        assert_eq!(f.inbound_ports, "*");
        assert_eq!(f.inbound_exclude_ports, "15090,15021,15020");
        assert!(!f.dry_run);
    }

    #[test]
    fn long_forms_and_bool_spellings() {
        let f = parse(&[
            "--envoy-port",
            "16001",
            "--istio-inbound-ports=8080",
            "--dry-run",
            "--redirect-dns=T",
            "--capture-all-dns=0",
            "--istio-local-outbound-ports-exclude",
            "5555",
        ]);
        assert_eq!(f.envoy_port, "16001");
        assert_eq!(f.inbound_ports, "8080");
        assert_eq!(f.outbound_exclude_ports, "5555");
        assert!(f.dry_run);
        assert!(f.redirect_dns);
        assert!(!f.capture_all_dns);
    }

    #[test]
    fn second_env_alias_wins_unless_the_flag_is_given() {
        let env = |name: &str| match name {
            "ISTIO_META_DNS_CAPTURE" => Some("true".to_string()),
            "INVALID_DROP" => Some("1".to_string()),
            _ => None,
        };
        let f = Flags::parse_with_env(["skiff-init"], env).unwrap();
        assert!(f.redirect_dns);
        assert!(f.drop_invalid);

        let f = Flags::parse_with_env(["skiff-init", "--redirect-dns=false"], env).unwrap();
        assert!(!f.redirect_dns, "an explicit flag beats the environment");
    }

    #[test]
    fn bad_bool_in_second_alias_is_an_error_naming_the_variable() {
        let env = |name: &str| (name == "INVALID_DROP").then(|| "maybe".to_string());
        let err = Flags::parse_with_env(["skiff-init"], env).unwrap_err();
        assert!(err.to_string().contains("INVALID_DROP"), "{err}");
    }

    #[test]
    fn go_bool_rejects_yes() {
        assert!(parse_go_bool("yes").is_err());
        assert_eq!(parse_go_bool("False"), Ok(false));
    }
}
