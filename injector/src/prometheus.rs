//! The metrics merge (spec/injector.md, section 2, "Metrics merge").
//!
//! Under mutual TLS, Prometheus cannot scrape the application directly any more, for the
//! same reason the kubelet cannot probe it. Istio's answer, kept here, is to point the
//! pod's `prometheus.io/*` annotations at the proxy's status port, where the proxy serves
//! its own metrics together with the application's, and to hand the pod's original scrape
//! settings to the proxy in its `ISTIO_PROMETHEUS_ANNOTATIONS` environment variable.
//! [`merge`] does that; [`unmerge`] undoes it for uninject and re-injection. Whether to
//! merge at all (`prometheus.istio.io/merge-metrics`, the config) is the caller's decision.
//!
//! # Which annotations count
//!
//! Prometheus' Kubernetes discovery turns annotation keys into label names by replacing
//! every character other than ASCII letters, digits and `_` with `_`, so users write
//! `prometheus.io/port`, `prometheus_io_port`, `prometheus.io.port`... and mean the same
//! thing. Istio compares keys the same way (Prometheus' `strutil.SanitizeLabelName`), and so
//! does Skiff ([`sanitize_label_name`]): every key that sanitizes to one of
//! `prometheus_io_scrape`, `prometheus_io_port`, `prometheus_io_path` or
//! `prometheus_istio_io_scrape_targets` is read, and all of them are removed when merging,
//! so that Prometheus does not find two values. Where Istio picks one of several spellings
//! at random, Skiff refuses the pod if they disagree.
//!
//! # Rules
//!
//! - A status port of 0 means there is no endpoint to merge into: nothing happens.
//! - `prometheus.io/scrape` decides first: a false value (any of Go's `strconv.ParseBool`
//!   spellings: `false`, `0`, `f`, `F`, `FALSE`, `False`) leaves the pod alone. An empty
//!   value is the same as none. Any other non-boolean value is an error (Istio treats it as
//!   "not false" and merges).
//! - `prometheus.io/port` and every port of `prometheus.istio.io/scrape-targets` must be a
//!   port number (digits only, 1-65535), and neither the status port nor one of the ports
//!   the proxy itself listens on ([`RESERVED_PORTS`], Istio's list). Istio lets the exact
//!   text of the status port through unchanged, as a sign of an earlier injection; Skiff
//!   strips earlier injections with [`unmerge`] first, so it refuses that too, as the spec
//!   asks. An empty port is the same as none.
//! - `prometheus.istio.io/scrape-targets` is a comma-separated list of `port:path` (or just
//!   `port`, which means `/metrics`); whitespace around entries and parts is ignored. An
//!   entry without a port is an error (Istio only logs it and ignores the whole annotation).
//! - Otherwise the annotations are replaced by `prometheus.io/port=<status port>`,
//!   `prometheus.io/path=/stats/prometheus` and `prometheus.io/scrape=true`.
//!
//! # `ISTIO_PROMETHEUS_ANNOTATIONS`
//!
//! Istio's `PrometheusScrapeConfiguration`, byte for byte as Istio's Go encoder writes it:
//!
//! ```json
//! {"scrape":"true","path":"/metrics","port":"8080"}
//! {"scrape":"true","path":"/metrics","port":"8080",
//!  "targets":[{"port":"8080","path":"/metrics"},{"port":"9100","path":"/custom"}]}
//! ```
//!
//! - `scrape`, `path` and `port` are always present, `""` when the pod has no such
//!   annotation; with targets, `port` and `path` are those of the first target (so that an
//!   agent that knows no targets still scrapes the first one).
//! - `targets` is present only when the pod has `prometheus.istio.io/scrape-targets`, one
//!   `{"port","path"}` per entry, in order, with the default path filled in.
//! - `skiffAnnotations` (Skiff only; Istio's agent ignores unknown fields): the removed
//!   annotations exactly as written, key to value. It is written only when the Istio fields
//!   cannot give them back exactly (another spelling of a key, an empty value, a legacy
//!   port or path next to scrape-targets, scrape-targets written differently from its
//!   parsed form), so that [`unmerge`] can restore the pod exactly.
//!
//! The JSON is returned only when the pod had at least one of these annotations; like
//! Istio, a pod without any gets the merged annotations and no variable. A JSON whose
//! `scrape`, `path` and `port` are all empty and that has no targets (only possible with
//! `skiffAnnotations`, e.g. for `prometheus.io/path: ""`) means "do not scrape the app",
//! which is what Istio's agent does when it gets no variable: Skiff's proxy must read it so.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::probes::go_json;

#[cfg(test)]
mod tests;

/// The environment variable of the proxy container that carries [`merge`]'s JSON.
pub const PROMETHEUS_ENV: &str = "ISTIO_PROMETHEUS_ANNOTATIONS";
pub const SCRAPE: &str = "prometheus.io/scrape";
pub const PORT: &str = "prometheus.io/port";
pub const PATH: &str = "prometheus.io/path";
/// Several application endpoints to merge, as `port:path,port:path`.
pub const SCRAPE_TARGETS: &str = "prometheus.istio.io/scrape-targets";
/// Where the proxy serves the merged metrics on the status port.
pub const MERGED_PATH: &str = "/stats/prometheus";
/// What a scrape target without a path means, as for Prometheus itself.
pub const DEFAULT_METRICS_PATH: &str = "/metrics";

/// Ports of the proxy that an application's metrics cannot be on, with Istio's reason
/// (pilot-agent's `istioReservedPorts`). Scraping them would reach the proxy's admin,
/// capture or DNS listeners, or count the proxy's own metrics twice.
pub const RESERVED_PORTS: [(u16, &str); 9] = [
    (15000, "Envoy admin"),
    (15001, "outbound traffic capture"),
    (15004, "pilot debug"),
    (15006, "inbound traffic capture"),
    (15008, "HBONE tunnel"),
    (15020, "pilot-agent status / merged Prometheus"),
    (15021, "Envoy health"),
    (15053, "DNS proxy"),
    (15090, "Envoy Prometheus (already merged)"),
];

/// Annotation values can be up to 256 KiB; echoing all of that back through the API server
/// would bury the reason.
const SHOWN_VALUE_CHARS: usize = 200;

/// What the webhook rejects a pod with, or why saved settings cannot be put back.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PrometheusError {
    #[error("annotation {key}: {} {reason}", shown(.value))]
    Invalid {
        key: String,
        value: String,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// Prometheus reads both keys as the same label, so one of them would be ignored at
    /// random.
    #[error(
        "annotations {first} ({}) and {second} ({}) both set {canonical} (Prometheus reads \
         them as the same label), with different values; keep only {canonical}",
        shown(.first_value),
        shown(.second_value)
    )]
    Conflict {
        canonical: &'static str,
        first: String,
        first_value: String,
        second: String,
        second_value: String,
    },
    #[error("{PROMETHEUS_ENV} {reason}")]
    Saved { reason: String },
    /// Serialising these plain types cannot fail; the variant keeps a future field from
    /// ever turning into a panic.
    #[error("could not write {PROMETHEUS_ENV}: {reason}")]
    Encode { reason: String },
}

fn shown(value: &str) -> String {
    match value.char_indices().nth(SHOWN_VALUE_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!(
            "{:?}... ({} characters)",
            &value[..cut],
            value.chars().count()
        ),
    }
}

/// Prometheus' `strutil.SanitizeLabelName`: every character that is not an ASCII letter,
/// digit or `_` becomes one `_`. Case is kept, so `Prometheus.io/port` is not read.
pub fn sanitize_label_name(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The four settings, in the order their keys are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Scrape,
    Port,
    Path,
    ScrapeTargets,
}

impl Field {
    const ALL: [Field; 4] = [
        Field::Scrape,
        Field::Port,
        Field::Path,
        Field::ScrapeTargets,
    ];

    fn canonical(self) -> &'static str {
        match self {
            Self::Scrape => SCRAPE,
            Self::Port => PORT,
            Self::Path => PATH,
            Self::ScrapeTargets => SCRAPE_TARGETS,
        }
    }

    fn of(key: &str) -> Option<Field> {
        let sanitized = sanitize_label_name(key);
        Field::ALL
            .into_iter()
            .find(|f| sanitize_label_name(f.canonical()) == sanitized)
    }
}

/// One setting as the pod wrote it: the key it was read from and the value.
struct Setting<'a> {
    key: &'a str,
    value: &'a str,
}

/// The value of `field`, after checking that every spelling of its key agrees. The
/// canonical key is named first in a conflict, then the others in key order.
fn setting(
    annotations: &BTreeMap<String, String>,
    field: Field,
) -> Result<Option<Setting<'_>>, PrometheusError> {
    let canonical = field.canonical();
    let mut found: Vec<Setting<'_>> = annotations
        .iter()
        .filter(|(k, _)| Field::of(k) == Some(field))
        .map(|(k, v)| Setting { key: k, value: v })
        .collect();
    found.sort_by_key(|s| s.key != canonical);
    let mut found = found.into_iter();
    let Some(first) = found.next() else {
        return Ok(None);
    };
    if let Some(other) = found.find(|s| s.value != first.value) {
        return Err(PrometheusError::Conflict {
            canonical,
            first: first.key.to_owned(),
            first_value: first.value.to_owned(),
            second: other.key.to_owned(),
            second_value: other.value.to_owned(),
        });
    }
    Ok(Some(first))
}

/// Istio's `ScrapeTarget`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Target {
    #[serde(default)]
    port: String,
    #[serde(default)]
    path: String,
}

/// Istio's `PrometheusScrapeConfiguration` plus Skiff's `skiffAnnotations`, in Go's field
/// order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Saved {
    #[serde(default)]
    scrape: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    port: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    targets: Vec<Target>,
    #[serde(
        rename = "skiffAnnotations",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    skiff_annotations: Option<BTreeMap<String, String>>,
}

impl Saved {
    /// The annotations the Istio fields stand for: the canonical keys of the non-empty
    /// values, and with targets the scrape-targets annotation in its parsed form instead of
    /// port and path (which then only repeat the first target).
    fn istio_annotations(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut put = |key: &str, value: &str| {
            if !value.is_empty() {
                out.insert(key.to_owned(), value.to_owned());
            }
        };
        put(SCRAPE, &self.scrape);
        if self.targets.is_empty() {
            put(PORT, &self.port);
            put(PATH, &self.path);
        } else {
            let written: Vec<String> = self
                .targets
                .iter()
                .map(|t| format!("{}:{}", t.port, t.path))
                .collect();
            put(SCRAPE_TARGETS, &written.join(","));
        }
        out
    }
}

/// Points the pod's Prometheus annotations at the proxy's merged endpoint on
/// `status_port` and returns the pod's own settings as `ISTIO_PROMETHEUS_ANNOTATIONS` (see
/// the module documentation), or `None` when the pod had none of these annotations or is
/// left alone. On error the annotations are unchanged.
pub fn merge(
    annotations: &mut BTreeMap<String, String>,
    status_port: u16,
) -> Result<Option<String>, PrometheusError> {
    if status_port == 0 {
        return Ok(None);
    }
    let scrape = setting(annotations, Field::Scrape)?;
    if let Some(s) = &scrape {
        match go_parse_bool(s.value) {
            Some(false) => return Ok(None),
            Some(true) => {}
            None if s.value.is_empty() => {}
            None => {
                return Err(invalid(
                    s,
                    "is not a boolean: use \"true\" or \"false\" (or another spelling Go's \
                     strconv.ParseBool accepts: 1, t, T, TRUE, True, 0, f, F, FALSE, False)",
                ));
            }
        }
    }
    let port = setting(annotations, Field::Port)?;
    let path = setting(annotations, Field::Path)?;
    let targets = setting(annotations, Field::ScrapeTargets)?;
    if let Some(p) = port.as_ref().filter(|p| !p.value.is_empty()) {
        check_port(p.value, status_port).map_err(|r| invalid(p, &r))?;
    }
    let targets = match &targets {
        Some(t) => parse_targets(t.value, status_port).map_err(|r| invalid(t, &r))?,
        None => Vec::new(),
    };
    let value = |s: &Option<Setting<'_>>| s.as_ref().map_or("", |s| s.value).to_owned();
    let mut saved = Saved {
        scrape: value(&scrape),
        path: value(&path),
        port: value(&port),
        targets,
        skiff_annotations: None,
    };
    if let Some(first) = saved.targets.first() {
        saved.port = first.port.clone();
        saved.path = first.path.clone();
    }
    let removed: BTreeMap<String, String> = annotations
        .iter()
        .filter(|(k, _)| Field::of(k).is_some())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let json = if removed.is_empty() {
        None
    } else {
        if saved.istio_annotations() != removed {
            saved.skiff_annotations = Some(removed.clone());
        }
        Some(
            go_json::to_string(&saved).map_err(|e| PrometheusError::Encode {
                reason: e.to_string(),
            })?,
        )
    };
    for key in removed.keys() {
        annotations.remove(key);
    }
    for (key, value) in merged(status_port) {
        annotations.insert(key.to_owned(), value);
    }
    Ok(json)
}

/// The three annotations a merged pod carries.
fn merged(status_port: u16) -> [(&'static str, String); 3] {
    [
        (PORT, status_port.to_string()),
        (PATH, MERGED_PATH.to_owned()),
        (SCRAPE, "true".to_owned()),
    ]
}

fn invalid(setting: &Setting<'_>, reason: &str) -> PrometheusError {
    PrometheusError::Invalid {
        key: setting.key.to_owned(),
        value: setting.value.to_owned(),
        reason: reason.to_owned(),
    }
}

/// What Go's `strconv.ParseBool` accepts, which is how Istio reads `prometheus.io/scrape`.
fn go_parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Digits only (leading zeros allowed, as Go's `Atoi` allows them; a sign is not), then
/// compared by number, so `015020` is the status port too.
fn check_port(text: &str, status_port: u16) -> Result<u16, String> {
    let number = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse::<u16>().ok().filter(|n| *n > 0)
    } else {
        None
    };
    let Some(number) = number else {
        return Err("is not a port number: use 1-65535".to_owned());
    };
    if number == status_port {
        return Err(
            "is the proxy's status port, where the merged metrics are served; give \
                    the port the application serves its own metrics on, or turn merging off \
                    with prometheus.istio.io/merge-metrics: \"false\""
                .to_owned(),
        );
    }
    if let Some((_, reason)) = RESERVED_PORTS.iter().find(|(p, _)| *p == number) {
        return Err(format!(
            "is a port of the proxy ({reason}), not of the application; give the port the \
             application serves its metrics on"
        ));
    }
    Ok(number)
}

/// Istio's `ParseScrapeTargets`, with every port checked like `prometheus.io/port`.
fn parse_targets(value: &str, status_port: u16) -> Result<Vec<Target>, String> {
    let mut targets = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (port, path) = match entry.split_once(':') {
            Some((port, path)) => (port.trim(), path.trim()),
            None => (entry, ""),
        };
        if port.is_empty() {
            return Err(format!(
                "is not a list of port:path: the entry {entry:?} has no port (write e.g. \
                 8080:/metrics,9100:/custom)"
            ));
        }
        check_port(port, status_port)
            .map_err(|reason| format!("has the entry {entry:?}, whose port {port:?} {reason}"))?;
        let path = if path.is_empty() {
            DEFAULT_METRICS_PATH
        } else {
            path
        };
        targets.push(Target {
            port: port.to_owned(),
            path: path.to_owned(),
        });
    }
    Ok(targets)
}

/// The inverse of [`merge`]: removes the three merged annotations and puts back the pod's
/// own, from `saved_json` (the value of `ISTIO_PROMETHEUS_ANNOTATIONS`) when the proxy has
/// it.
///
/// - With `saved_json`: the three canonical keys are removed whatever their values, and
///   `skiffAnnotations` is put back when present, otherwise what the Istio fields stand
///   for (`scrape`, `port`, `path` when not empty; with `targets`, `scrape` and the
///   scrape-targets annotation rebuilt from them, as Istio's JSON does not keep a legacy
///   port or path next to targets).
/// - Without it (the pod had none of these annotations, or was left alone): the three are
///   removed only when they hold exactly the merged values for `status_port`, so a pod that
///   was left alone (e.g. `prometheus.io/scrape: "false"`) keeps its own.
///
/// Malformed JSON is an error, and then the annotations are unchanged.
pub fn unmerge(
    annotations: &mut BTreeMap<String, String>,
    saved_json: Option<&str>,
    status_port: u16,
) -> Result<(), PrometheusError> {
    let Some(json) = saved_json else {
        if status_port == 0 {
            return Ok(());
        }
        let is_merged = merged(status_port)
            .iter()
            .all(|(key, value)| annotations.get(*key) == Some(value));
        if is_merged {
            for (key, _) in merged(status_port) {
                annotations.remove(key);
            }
        }
        return Ok(());
    };
    let not_config = |detail: String| PrometheusError::Saved {
        reason: format!("is not a Prometheus scrape configuration in JSON: {detail}"),
    };
    // Checked first because serde would also read a JSON array as the struct's fields.
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| not_config(e.to_string()))?;
    if !value.is_object() {
        return Err(not_config("it is not a JSON object".to_owned()));
    }
    let saved: Saved = serde_json::from_value(value).map_err(|e| not_config(e.to_string()))?;
    let restored = match saved.skiff_annotations.clone() {
        Some(written) => {
            if let Some(key) = written.keys().find(|k| Field::of(k).is_none()) {
                return Err(PrometheusError::Saved {
                    reason: format!(
                        "lists the annotation {key:?} under skiffAnnotations, which is not a \
                         Prometheus scrape annotation; only keys read as prometheus.io/scrape, \
                         port, path or prometheus.istio.io/scrape-targets can be restored"
                    ),
                });
            }
            written
        }
        None => saved.istio_annotations(),
    };
    for key in [PORT, PATH, SCRAPE] {
        annotations.remove(key);
    }
    annotations.extend(restored);
    Ok(())
}
