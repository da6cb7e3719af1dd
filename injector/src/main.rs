//! `skiff-injector`: the sidecar injector's command line. `inject` and `uninject` work on
//! YAML files, like `istioctl kube-inject`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use skiff_injector::cli::{self, Mode};
use skiff_injector::config::InjectionConfig;
use skiff_injector::serve::{self as server};

#[derive(Parser)]
#[command(name = "skiff-injector", version, about = "Skiff's sidecar injector")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the mutating admission webhook over HTTPS.
    Serve(ServeArgs),
    /// Add the sidecar to every workload in a YAML file (like `istioctl kube-inject`).
    Inject(FileArgs),
    /// Remove a sidecar that Skiff (or Istio) injected, restoring the workloads.
    Uninject(FileArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    address: std::net::IpAddr,
    /// HTTPS port (Istio's injector uses 15017; the Service maps 443 to it). 0 picks one.
    #[arg(long, default_value_t = 15017)]
    port: u16,
    /// Injection config (YAML), re-read when it changes; without it the built-in defaults apply.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Serving certificate (PEM, leaf first), re-read when it changes.
    #[arg(long, required_unless_present = "self_signed")]
    tls_cert: Option<PathBuf>,
    /// Serving key (PEM), re-read when it changes.
    #[arg(long, required_unless_present = "self_signed")]
    tls_key: Option<PathBuf>,
    /// Share a generated CA and serving certificate with the other replicas through the
    /// Secret `--cert-secret` (created, or renewed, when needed), and keep the caBundle of
    /// the MutatingWebhookConfiguration `--webhook-config-name` equal to that CA.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"], requires_all = ["webhook_config_name", "service_name", "service_namespace"])]
    self_signed: bool,
    /// Where `--self-signed` writes tls.crt and tls.key.
    #[arg(long, default_value = "/var/run/skiff/certs")]
    cert_dir: PathBuf,
    /// The Secret in `--service-namespace` through which `--self-signed` replicas share the
    /// CA and serving certificate (needs get, update and create on it).
    #[arg(long, default_value = skiff_injector::certstore::DEFAULT_SECRET_NAME)]
    cert_secret: String,
    /// The MutatingWebhookConfiguration whose caBundle `--self-signed` manages.
    #[arg(long)]
    webhook_config_name: Option<String>,
    /// The injector's Service name, for the certificate's DNS names.
    #[arg(long)]
    service_name: Option<String>,
    /// The injector's namespace, for the certificate's DNS names.
    #[arg(long, env = "POD_NAMESPACE")]
    service_namespace: Option<String>,
    /// How long in-flight reviews may take to finish after SIGTERM, in seconds.
    #[arg(long, default_value_t = 30)]
    shutdown_grace: u64,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
}

#[derive(Args)]
struct FileArgs {
    /// Input file, or `-` for standard input.
    #[arg(short = 'f', long = "filename")]
    file: String,
    /// Output file (default: standard output). Nothing is written if any document fails.
    #[arg(short = 'o', long = "output")]
    output: Option<PathBuf>,
    /// Injection config (YAML); without it the built-in defaults apply.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Namespace for workloads that name none.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// With `inject`: remove the sidecar instead (same as the `uninject` command).
    #[arg(long)]
    uninject: bool,
    /// Print a unified diff of the input and the output instead of the output.
    #[arg(long)]
    diff: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (level, json) = match &cli.command {
        Command::Serve(args) => ("info", args.log_json),
        _ => ("warn", false),
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| level.into());
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter);
    if json {
        logs.json().init();
    } else {
        logs.init();
    }
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Inject(args) => {
            let mode = if args.uninject {
                Mode::Uninject
            } else {
                Mode::Inject
            };
            run(args, mode)
        }
        Command::Uninject(args) => run(args, Mode::Uninject),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("Error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(server::serve(server::Options {
        addr: std::net::SocketAddr::new(args.address, args.port),
        config: args.config,
        tls: match (args.self_signed, args.tls_cert, args.tls_key) {
            (false, Some(cert), Some(key)) => server::Tls::Files { cert, key },
            _ => server::Tls::SelfSigned {
                cert_dir: args.cert_dir,
                webhook_config: args.webhook_config_name.unwrap_or_default(),
                service: args.service_name.unwrap_or_default(),
                namespace: args.service_namespace.unwrap_or_default(),
                cert_secret: args.cert_secret,
            },
        },
        grace: std::time::Duration::from_secs(args.shutdown_grace),
    }))?;
    Ok(())
}

fn run(args: FileArgs, mode: Mode) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => InjectionConfig::load(path)?,
        None => InjectionConfig::default(),
    };
    let input = if args.file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading standard input")?;
        text
    } else {
        std::fs::read_to_string(&args.file).with_context(|| format!("reading {}", args.file))?
    };

    let result = cli::process(&input, mode, &config, &args.namespace)?;
    for skip in &result.skipped {
        eprintln!("{skip}");
    }
    let text = if args.diff {
        cli::unified_diff(&input, &result.output, &args.file)
    } else {
        result.output
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
    }
    Ok(())
}
