//! Changing the log filter at run time (`/logging` on the admin port), through the
//! `tracing_subscriber::reload` handle `main` creates around its `EnvFilter`.
//!
//! Accepted values: an `EnvFilter` directive string (`info`, `skiff_proxy::tcp=debug,warn`),
//! or one of Envoy's level names (`warning`, `critical`), which people type from Istio habit.
//! A single bare word that is not a level is refused: `EnvFilter` would read `verbose` as
//! "trace everything from the target `verbose`", which is never what was meant.

use thiserror::Error;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::reload;

#[derive(Debug, Error)]
pub enum LogError {
    #[error(
        "{0:?} is not a log level: use trace, debug, info, warn (warning), error (critical) or off, \
         or tracing directives such as \"info,skiff_proxy=debug\""
    )]
    UnknownLevel(String),
    #[error("{value:?} is not a valid log filter: {reason}")]
    BadFilter { value: String, reason: String },
    /// The subscriber holding the filter is gone (only during shutdown).
    #[error("the log filter cannot be changed: {0}")]
    Reload(String),
}

/// The log filter of the running process, as the admin server sees it. Implemented for
/// `reload::Handle<EnvFilter, S>`, so that the admin code does not depend on the
/// subscriber's type.
pub trait LogControl: Send + Sync {
    /// The filter in effect, as directives.
    fn current(&self) -> Result<String, LogError>;
    /// Replaces the filter with `filter` (see [`parse_filter`]).
    fn set(&self, filter: &str) -> Result<(), LogError>;
}

impl<S: 'static> LogControl for reload::Handle<EnvFilter, S> {
    fn current(&self) -> Result<String, LogError> {
        self.with_current(|filter| filter.to_string())
            .map_err(|e| LogError::Reload(e.to_string()))
    }

    fn set(&self, filter: &str) -> Result<(), LogError> {
        let filter = parse_filter(filter)?;
        self.reload(filter)
            .map_err(|e| LogError::Reload(e.to_string()))
    }
}

/// Reads a `/logging?level=` value (see the module documentation).
pub fn parse_filter(value: &str) -> Result<EnvFilter, LogError> {
    let value = value.trim();
    let is_single_word = !value.is_empty() && !value.contains([',', '=', '[', ':']);
    let directives = if is_single_word {
        envoy_level(value).ok_or_else(|| LogError::UnknownLevel(value.to_owned()))?
    } else {
        value
    };
    if directives.is_empty() {
        return Err(LogError::UnknownLevel(String::new()));
    }
    EnvFilter::builder()
        .parse(directives)
        .map_err(|e| LogError::BadFilter {
            value: value.to_owned(),
            reason: e.to_string(),
        })
}

/// A level name in tracing's or Envoy's spelling, as tracing spells it.
fn envoy_level(word: &str) -> Option<&'static str> {
    Some(match word.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "critical" => "error",
        "off" => "off",
        _ => return None,
    })
}
