//! `skiff-init`: see the library for what it does; this file only wires up logging and exit codes.

use std::process::ExitCode;

use skiff_init::Flags;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let flags = match Flags::parse_from_env_and_args(std::env::args_os()) {
        Ok(flags) => flags,
        Err(err) => err.exit(),
    };
    init_logging(&flags);
    match skiff_init::run(&flags, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// Maps Istio's `--log_output_level=default:info,scope:debug` onto a tracing filter:
/// the `default` scope sets the level; `RUST_LOG`, when set, wins.
fn init_logging(flags: &Flags) {
    let level = flags
        .log_output_level
        .split(',')
        .find_map(|pair| match pair.split_once(':') {
            Some(("default", level)) => Some(level),
            None => Some(pair),
            _ => None,
        })
        .map(|level| match level {
            "none" => "off",
            "fatal" => "error",
            other => other,
        })
        .unwrap_or("info");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if flags.log_as_json {
        builder.json().init();
    } else {
        builder.init();
    }
}
