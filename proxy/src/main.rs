//! `skiff-proxy`: the sidecar's command line. The injector runs it as
//! `skiff-proxy proxy sidecar --domain ... --proxyLogLevel=... --log_output_level=...`,
//! like Istio's `pilot-agent proxy sidecar`; `request` and `wait` serve the container's
//! lifecycle hooks.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use skiff_proxy::admin::{self, LogControl};
use skiff_proxy::metrics::Workload;
use skiff_proxy::run::{self, Exit, Options, Ports};
use skiff_proxy::xds::client::{DEFAULT_WARMING_TIMEOUT, XdsAddress, XdsOptions};
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, reload};

#[derive(Parser)]
#[command(name = "skiff-proxy", version, about = "Skiff's sidecar proxy")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a proxy (`proxy sidecar`, as Istio's pilot-agent is invoked).
    Proxy {
        /// The proxy kind; only `sidecar` exists.
        #[arg(value_parser = ["sidecar"])]
        kind: String,
        #[command(flatten)]
        args: Box<ProxyArgs>,
    },
    /// Send a request to the local agent, e.g. `request --debug-port=15020 POST drain`.
    Request {
        #[arg(long = "debug-port", default_value_t = 15020)]
        debug_port: u16,
        /// HTTP method (GET or POST).
        method: String,
        /// Path, with or without the leading slash.
        path: String,
    },
    /// Wait until the local proxy is ready (the classic layout's postStart hook).
    Wait {
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

#[derive(Args)]
struct ProxyArgs {
    /// A static configuration file (Skiff's YAML), reloaded on change and on SIGHUP.
    #[arg(long, env = "SKIFF_CONFIG")]
    config: Option<PathBuf>,
    /// The control plane, when there is no --config: `http://host:port` (plaintext),
    /// `https://host:port` or `host:port` (TLS, istiod's 15012), `unix:/path`. Default: the
    /// `discoveryAddress` of PROXY_CONFIG, else istiod.istio-system.svc:15012.
    #[arg(long = "xds-address", env = "SKIFF_XDS_ADDRESS")]
    xds_address: Option<String>,
    /// `delta` (incremental xDS, istiod's default) or `sotw` (state of the world).
    #[arg(long = "xds-protocol", env = "SKIFF_XDS_PROTOCOL", default_value = "delta", value_parser = ["delta", "sotw"])]
    xds_protocol: String,
    /// istiod's root certificate, for TLS addresses.
    #[arg(
        long = "xds-root-cert",
        env = "SKIFF_XDS_ROOT_CERT",
        default_value = "/var/run/secrets/istio/root-cert.pem"
    )]
    xds_root_cert: PathBuf,
    /// The service-account token sent to istiod as `authorization: Bearer`.
    #[arg(
        long = "xds-token",
        env = "SKIFF_XDS_TOKEN",
        default_value = "/var/run/secrets/tokens/istio-token"
    )]
    xds_token: PathBuf,
    /// Seconds open connections may take to finish after SIGTERM before the proxy exits.
    #[arg(long, default_value_t = 30)]
    drain_timeout: u64,
    /// Worker threads.
    #[arg(long, env = "SKIFF_CONCURRENCY", default_value_t = 2)]
    concurrency: usize,
    /// The cluster DNS domain (Istio flag; accepted).
    #[arg(long)]
    domain: Option<String>,
    /// The proxy's log level (Istio flag: trace, debug, info, warning, error, critical, off).
    #[arg(long = "proxyLogLevel")]
    proxy_log_level: Option<String>,
    /// Per-component levels (Istio flag; accepted, the proxy has one level).
    #[arg(long = "proxyComponentLogLevel")]
    proxy_component_log_level: Option<String>,
    /// Agent log levels (Istio flag), e.g. `default:info`.
    #[arg(long = "log_output_level")]
    log_output_level: Option<String>,
    /// Log as JSON lines.
    #[arg(long = "log_as_json")]
    log_as_json: bool,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Proxy { args, .. } => proxy(*args),
        Command::Request {
            debug_port,
            method,
            path,
        } => {
            let path = if path.starts_with('/') {
                path
            } else {
                format!("/{path}")
            };
            match admin::request(debug_port, &method, &path) {
                Ok(body) => {
                    print!("{body}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("Error: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Wait { timeout } => {
            let options = admin::WaitOptions {
                timeout: Duration::from_secs(timeout),
                ..admin::WaitOptions::default()
            };
            match admin::wait(&options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    eprintln!("Error: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The control plane's address and the node identity, from the flags and the environment
/// the injector set.
fn xds_options(args: &ProxyArgs) -> anyhow::Result<XdsOptions> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let address = match &args.xds_address {
        Some(a) => a.clone(),
        None => env("PROXY_CONFIG")
            .and_then(|json| serde_json::from_str::<serde_json::Value>(&json).ok())
            .and_then(|v| v.get("discoveryAddress")?.as_str().map(str::to_owned))
            .unwrap_or_else(|| "istiod.istio-system.svc:15012".to_owned()),
    };
    let address: XdsAddress = address.parse()?;
    let node = skiff_proxy::xds::node::node(&env)?;
    Ok(XdsOptions {
        address,
        delta: args.xds_protocol == "delta",
        node,
        root_cert: args.xds_root_cert.clone(),
        token_file: Some(args.xds_token.clone()),
        cluster_id: Some(env("ISTIO_META_CLUSTER_ID").unwrap_or_else(|| "Kubernetes".to_owned())),
        warming_timeout: DEFAULT_WARMING_TIMEOUT,
    })
}

/// The log filter from Istio's flags: `RUST_LOG` wins, then `--proxyLogLevel`.
fn log_filter(args: &ProxyArgs) -> EnvFilter {
    if let Ok(filter) = EnvFilter::try_from_default_env() {
        return filter;
    }
    let level = match args.proxy_log_level.as_deref() {
        Some("warning") => "warn",
        Some("critical") => "error",
        Some(level) => level,
        None => "info",
    };
    EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"))
}

fn proxy(args: ProxyArgs) -> ExitCode {
    let (filter, handle) = reload::Layer::new(log_filter(&args));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let registry = tracing_subscriber::registry().with(filter);
    if args.log_as_json {
        registry.with(fmt.json()).init();
    } else {
        registry.with(fmt).init();
    }
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    let workload_name = Some(env("ISTIO_META_WORKLOAD_NAME"))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| env("POD_NAME"));
    let xds = if args.config.is_some() {
        None
    } else {
        match xds_options(&args) {
            Ok(x) => Some(x),
            Err(err) => {
                tracing::error!("{err}");
                return ExitCode::FAILURE;
            }
        }
    };
    let options = Options {
        config: args.config.clone(),
        xds,
        ports: Ports::default(),
        drain_timeout: Duration::from_secs(args.drain_timeout),
        workload: Workload::new(&workload_name, &env("POD_NAMESPACE")),
        log: Some(Arc::new(handle) as Arc<dyn LogControl>),
    };
    // One worker: a current-thread runtime, which spares the work-stealing scheduler's
    // cross-thread wake-ups (the proxy then runs on exactly one core, like Envoy with
    // --concurrency 1).
    let runtime = if args.concurrency <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.concurrency)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(err) => {
            eprintln!("Error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run::run(options)) {
        Ok(Exit::Quit) => {
            tracing::info!("exiting on /quitquitquit");
            ExitCode::SUCCESS
        }
        Ok(Exit::Drained { left_open }) => {
            if left_open > 0 {
                tracing::warn!(left_open, "drain deadline reached with connections open");
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            tracing::error!("{err}");
            ExitCode::FAILURE
        }
    }
}
