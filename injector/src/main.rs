//! `skiff-injector`: the sidecar injector's command line. `inject` and `uninject` work on
//! YAML files, like `istioctl kube-inject`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use skiff_injector::cli::{self, Mode};
use skiff_injector::config::InjectionConfig;

#[derive(Parser)]
#[command(name = "skiff-injector", version, about = "Skiff's sidecar injector")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Add the sidecar to every workload in a YAML file (like `istioctl kube-inject`).
    Inject(FileArgs),
    /// Remove a sidecar that Skiff (or Istio) injected, restoring the workloads.
    Uninject(FileArgs),
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
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("Error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let (args, mode) = match cli.command {
        Command::Inject(args) if args.uninject => (args, Mode::Uninject),
        Command::Inject(args) => (args, Mode::Inject),
        Command::Uninject(args) => (args, Mode::Uninject),
    };
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
