//! Walking a multi-document YAML file for `inject`/`uninject`: find the pod template in every
//! workload kind, hand it to the caller, and write the file back.
//!
//! Documents the caller does not change (other kinds, skipped pods, comments-only
//! documents) are written back byte for byte, so comments, key order and formatting of
//! everything Skiff did not touch survive. Changed documents are re-serialised with sorted
//! keys, as `istioctl kube-inject` does.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::Value;

/// The workload kinds whose pod template Skiff injects, as `istioctl kube-inject` knows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pod,
    ReplicationController,
    Deployment,
    DaemonSet,
    ReplicaSet,
    StatefulSet,
    Job,
    CronJob,
    DeploymentConfig,
}

impl Kind {
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        Some(match (api_version, kind) {
            ("v1", "Pod") => Kind::Pod,
            ("v1", "ReplicationController") => Kind::ReplicationController,
            ("apps/v1", "Deployment") => Kind::Deployment,
            ("apps/v1", "DaemonSet") => Kind::DaemonSet,
            ("apps/v1", "ReplicaSet") => Kind::ReplicaSet,
            ("apps/v1", "StatefulSet") => Kind::StatefulSet,
            ("batch/v1", "Job") => Kind::Job,
            ("batch/v1", "CronJob") => Kind::CronJob,
            ("apps.openshift.io/v1", "DeploymentConfig") => Kind::DeploymentConfig,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Pod => "Pod",
            Kind::ReplicationController => "ReplicationController",
            Kind::Deployment => "Deployment",
            Kind::DaemonSet => "DaemonSet",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::StatefulSet => "StatefulSet",
            Kind::Job => "Job",
            Kind::CronJob => "CronJob",
            Kind::DeploymentConfig => "DeploymentConfig",
        }
    }

    /// Where the pod template sits in an object of this kind (empty: the object is the pod).
    fn template_path(self) -> &'static [&'static str] {
        match self {
            Kind::Pod => &[],
            Kind::CronJob => &["spec", "jobTemplate", "spec", "template"],
            _ => &["spec", "template"],
        }
    }
}

/// The workload a template belongs to, for messages and for the injector's owner metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub kind: Kind,
    pub api_version: String,
    pub name: String,
    pub namespace: Option<String>,
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} \"{ns}/{}\"", self.kind.name(), self.name),
            None => write!(f, "{} \"{}\"", self.kind.name(), self.name),
        }
    }
}

/// Whether the caller changed a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Changed,
    Unchanged,
}

/// Why a file could not be processed; nothing is written then.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error(
        "document {index} (starting at line {first_line}): invalid YAML at line {line}, column {column}: {message}"
    )]
    Yaml {
        index: usize,
        first_line: usize,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("document {index} ({workload}): {message}")]
    Template {
        index: usize,
        workload: String,
        message: String,
    },
    #[error("document {index} ({workload}): {source}")]
    Inject {
        index: usize,
        workload: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Splits a YAML stream into its documents' text. A document ends at a `---` line (which
/// may carry content after a space) or a `...` line; YAML forbids both inside a document at
/// column 0, so a line-based split is exact. Returns each document with its first line
/// number (1-based) in the file.
pub fn split_documents(input: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut first_line = 1;
    let mut offset = 0;
    for (number, line) in input.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        let marker = bare == "---" || bare.starts_with("--- ") || bare == "...";
        if marker {
            if offset > start {
                docs.push((first_line, &input[start..offset]));
            }
            // Content after `--- ` starts the next document on the marker's own line.
            let content = if bare.starts_with("--- ") {
                4
            } else {
                line.len()
            };
            start = offset + content;
            first_line = number + 1 + usize::from(content == line.len());
        }
        offset += line.len();
    }
    if offset > start {
        docs.push((first_line, &input[start..]));
    }
    docs
}

fn is_blank(doc: &str) -> bool {
    doc.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#')
    })
}

/// Runs `edit` on the pod template of every workload in `input` and returns the new file.
/// Every document is followed by `---`, as `istioctl kube-inject` writes it.
pub fn process<E>(input: &str, mut edit: E) -> Result<String, WorkloadError>
where
    E: FnMut(
        &Workload,
        &mut PodTemplateSpec,
    ) -> Result<Change, Box<dyn std::error::Error + Send + Sync>>,
{
    let mut out = String::with_capacity(input.len() + input.len() / 2);
    for (index, (first_line, text)) in split_documents(input).into_iter().enumerate() {
        let index = index + 1;
        let rewritten = if is_blank(text) {
            None
        } else {
            let mut value: Value = yaml_serde::from_str(text).map_err(|e| {
                let (line, column) = e
                    .location()
                    .map(|l| (l.line(), l.column()))
                    .unwrap_or((0, 0));
                WorkloadError::Yaml {
                    index,
                    first_line,
                    line: first_line + line.saturating_sub(1),
                    column,
                    message: e.to_string(),
                }
            })?;
            if edit_object(&mut value, index, &mut edit)? == Change::Changed {
                Some(
                    yaml_serde::to_string(&value).map_err(|e| WorkloadError::Template {
                        index,
                        workload: "output".into(),
                        message: e.to_string(),
                    })?,
                )
            } else {
                None
            }
        };
        let doc = rewritten.as_deref().unwrap_or(text);
        out.push_str(doc);
        if !doc.is_empty() && !doc.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("---\n");
    }
    Ok(out)
}

/// Edits one object: a known workload's template, every item of a `List`, or nothing.
fn edit_object<E>(value: &mut Value, index: usize, edit: &mut E) -> Result<Change, WorkloadError>
where
    E: FnMut(
        &Workload,
        &mut PodTemplateSpec,
    ) -> Result<Change, Box<dyn std::error::Error + Send + Sync>>,
{
    let text = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let (api_version, kind) = (text(value, "apiVersion"), text(value, "kind"));
    if api_version == "v1" && kind == "List" {
        let mut change = Change::Unchanged;
        if let Some(items) = value.get_mut("items").and_then(Value::as_array_mut) {
            for item in items {
                if edit_object(item, index, edit)? == Change::Changed {
                    change = Change::Changed;
                }
            }
        }
        return Ok(change);
    }
    let Some(kind) = Kind::from_type(&api_version, &kind) else {
        return Ok(Change::Unchanged);
    };
    let metadata = value.get("metadata");
    let workload = Workload {
        kind,
        api_version,
        name: metadata
            .and_then(|m| m.get("name").or_else(|| m.get("generateName")))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        namespace: metadata
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .map(str::to_string),
    };
    let template_error = |message: String| WorkloadError::Template {
        index,
        workload: workload.to_string(),
        message,
    };
    let mut slot = &mut *value;
    for key in kind.template_path() {
        slot = slot
            .get_mut(*key)
            .filter(|v| v.is_object())
            .ok_or_else(|| {
                template_error(format!(
                    "has no pod template at {}",
                    kind.template_path().join(".")
                ))
            })?;
    }
    let mut template = PodTemplateSpec {
        metadata: field(slot, "metadata").map_err(template_error)?,
        spec: field(slot, "spec").map_err(template_error)?,
    };
    let change = edit(&workload, &mut template).map_err(|source| WorkloadError::Inject {
        index,
        workload: workload.to_string(),
        source,
    })?;
    if change == Change::Changed {
        set_field(slot, "metadata", &template.metadata).map_err(template_error)?;
        set_field(slot, "spec", &template.spec).map_err(template_error)?;
    }
    Ok(change)
}

fn field<T: serde::de::DeserializeOwned>(object: &Value, key: &str) -> Result<Option<T>, String> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => T::deserialize(v)
            .map(Some)
            .map_err(|e| format!("{key}: {e}")),
    }
}

fn set_field<T: serde::Serialize>(
    object: &mut Value,
    key: &str,
    value: &Option<T>,
) -> Result<(), String> {
    let Some(map) = object.as_object_mut() else {
        return Err("not an object".into());
    };
    match value {
        Some(v) => {
            map.insert(
                key.to_string(),
                serde_json::to_value(v).map_err(|e| format!("{key}: {e}"))?,
            );
        }
        None => {
            map.remove(key);
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "workload_tests.rs"]
mod tests;
