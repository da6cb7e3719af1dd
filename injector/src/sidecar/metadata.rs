//! The pod's identity as the mesh sees it: the workload it belongs to (from its controlling
//! owner reference), and the labels and annotations injection sets.
//!
//! At admission time a pod created by a controller has no name yet, only `generateName` and
//! an owner reference to, say, a ReplicaSet; Istio's heuristics (kept here) walk from that
//! to the Deployment, CronJob, Rollout or DeploymentConfig the user actually wrote, because
//! telemetry and the canonical service labels should name that, not a generated name.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::env::app_containers;
use super::{
    CANONICAL_NAME_LABEL, CANONICAL_REVISION_LABEL, DEFAULT_CONTAINER_ANNOTATION,
    DEFAULT_LOGS_CONTAINER_ANNOTATION, NETWORK_LABEL, REVISION_ANNOTATION, TLS_MODE_LABEL,
};
use crate::config::InjectionConfig;

/// Label values are at most 63 characters.
const MAX_LABEL_VALUE: usize = 63;

/// The workload a pod belongs to, named as its owner (Istio's `DeploymentMeta` and
/// `TypeMeta`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// The owner's name (e.g. the Deployment's), else the pod's own; empty when the pod has
    /// neither a name nor a controlling owner yet.
    pub name: String,
    /// `Deployment`, `CronJob`, ... or `Pod`.
    pub kind: String,
    /// The owner's apiVersion as Istio reports it (`apps/v1`, `batch/v1`, `v1`, ...).
    pub api_version: String,
    /// The pod's namespace, else the request's, else `default`.
    pub namespace: String,
    /// The pod's `generateName`, for [`Workload::display_name`].
    generate_name: String,
}

impl Workload {
    /// The workload named by the object that holds the template (manual injection).
    pub fn of_owner(
        owner: &super::Owner,
        metadata: &ObjectMeta,
        request_namespace: &str,
    ) -> Workload {
        Workload {
            name: owner.name.clone(),
            kind: owner.kind.clone(),
            api_version: owner.api_version.clone(),
            namespace: workload(metadata, request_namespace).namespace,
            generate_name: String::new(),
        }
    }

    /// `ISTIO_META_OWNER`, e.g.
    /// `kubernetes://apis/apps/v1/namespaces/default/deployments/hello`; `None` without a
    /// name, as in Istio (a guess from `generateName` would name an object that does not
    /// exist).
    pub fn owner_uri(&self) -> Option<String> {
        if self.name.is_empty() || self.api_version.is_empty() {
            return None;
        }
        Some(format!(
            "kubernetes://apis/{}/namespaces/{}/{}s/{}",
            self.api_version,
            self.namespace,
            self.kind.to_lowercase(),
            self.name
        ))
    }

    /// The name used for the workload-name variable and the canonical-name label: the
    /// owner's or pod's name, else the pod's `generateName` without its trailing `-` (Skiff;
    /// Istio leaves both empty for a pod that has neither a name nor a controller).
    pub fn display_name(&self) -> String {
        if self.name.is_empty() {
            self.generate_name.trim_end_matches('-').to_owned()
        } else {
            self.name.clone()
        }
    }
}

fn non_empty(value: Option<&String>) -> Option<&str> {
    value.map(String::as_str).filter(|v| !v.is_empty())
}

/// `<name>-<8 to 10 digits>`: the name of a Job a CronJob created (its scheduled time in
/// minutes).
fn cron_job_name(job: &str) -> Option<&str> {
    let (name, suffix) = job.rsplit_once('-')?;
    let digits = suffix.len();
    ((8..=10).contains(&digits) && suffix.bytes().all(|b| b.is_ascii_digit()) && !name.is_empty())
        .then_some(name)
}

/// Istio's `GetDeployMetaFromPod`. Owner references are only followed when the pod has a
/// `generateName`: a pod with a fixed name is its own workload.
pub fn workload(metadata: &ObjectMeta, request_namespace: &str) -> Workload {
    let labels = metadata.labels.clone().unwrap_or_default();
    let namespace = [metadata.namespace.as_deref(), Some(request_namespace)]
        .into_iter()
        .flatten()
        .find(|ns| !ns.is_empty())
        .unwrap_or("default")
        .to_owned();
    let generate_name = metadata.generate_name.clone().unwrap_or_default();
    let mut out = Workload {
        name: metadata.name.clone().unwrap_or_default(),
        kind: "Pod".to_owned(),
        api_version: "v1".to_owned(),
        namespace,
        generate_name: generate_name.clone(),
    };
    if generate_name.is_empty() {
        return out;
    }
    let controller = metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true));
    let Some(owner) = controller else {
        return out;
    };
    out.api_version = owner.api_version.clone();
    out.kind = owner.kind.clone();
    out.name = owner.name.clone();
    let hash = non_empty(labels.get("pod-template-hash"));
    let rollout_hash = non_empty(labels.get("rollouts-pod-template-hash"));
    match owner.kind.as_str() {
        "ReplicaSet" if hash.is_some_and(|h| owner.name.ends_with(h)) => {
            let suffix = format!("-{}", hash.unwrap_or_default());
            out.name = owner
                .name
                .strip_suffix(&suffix)
                .unwrap_or(&owner.name)
                .to_owned();
            out.kind = "Deployment".to_owned();
        }
        "ReplicaSet" if rollout_hash.is_some_and(|h| owner.name.ends_with(h)) => {
            let suffix = format!("-{}", rollout_hash.unwrap_or_default());
            out.name = owner
                .name
                .strip_suffix(&suffix)
                .unwrap_or(&owner.name)
                .to_owned();
            out.kind = "Rollout".to_owned();
            // Istio's value: Argo's group cannot be read from the pod.
            out.api_version = "v1alpha1".to_owned();
        }
        "ReplicationController" if non_empty(labels.get("deploymentconfig")).is_some() => {
            out.name = labels.get("deploymentconfig").cloned().unwrap_or_default();
            out.kind = "DeploymentConfig".to_owned();
        }
        "Job" => {
            if let Some(cron) = cron_job_name(&owner.name) {
                out.name = cron.to_owned();
                out.kind = "CronJob".to_owned();
                out.api_version = "batch/v1".to_owned();
            }
        }
        _ => {}
    }
    if out.name.is_empty() {
        out.name = metadata.name.clone().unwrap_or_default();
    }
    out
}

/// Istio's `trunc 63 | trimAll "-_."`: cut to a label value's length, then strip the
/// characters a label value may not start or end with.
fn label_cut(value: &str) -> String {
    let mut end = value.len().min(MAX_LABEL_VALUE);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end]
        .trim_matches(|c| matches!(c, '-' | '_' | '.'))
        .to_owned()
}

/// `service.istio.io/canonical-name`: the existing label, else `app.kubernetes.io/name`,
/// else `app`, else the workload's name; empty values are skipped, as Go's `default` does.
pub fn canonical_name(labels: &BTreeMap<String, String>, workload: &Workload) -> String {
    let chosen = [CANONICAL_NAME_LABEL, "app.kubernetes.io/name", "app"]
        .into_iter()
        .find_map(|key| non_empty(labels.get(key)))
        .map_or_else(|| workload.display_name(), str::to_owned);
    label_cut(&chosen)
}

/// `service.istio.io/canonical-revision`: the existing label, else
/// `app.kubernetes.io/version`, else `version`, else `latest`.
pub fn canonical_revision(labels: &BTreeMap<String, String>) -> String {
    [
        CANONICAL_REVISION_LABEL,
        "app.kubernetes.io/version",
        "version",
    ]
    .into_iter()
    .find_map(|key| non_empty(labels.get(key)))
    .unwrap_or("latest")
    .to_owned()
}

/// The labels injection sets. A label the pod has with a non-empty value stays as it is
/// and is not listed (so it is not recorded as added either).
pub(super) fn labels_to_add(
    labels: &BTreeMap<String, String>,
    workload: &Workload,
    network: Option<&str>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut add = |key: &str, value: String| {
        if non_empty(labels.get(key)).is_none() {
            out.insert(key.to_owned(), value);
        }
    };
    add(TLS_MODE_LABEL, "istio".to_owned());
    add(CANONICAL_NAME_LABEL, canonical_name(labels, workload));
    add(CANONICAL_REVISION_LABEL, canonical_revision(labels));
    if let Some(network) = network {
        add(NETWORK_LABEL, network.to_owned());
    }
    out
}

/// `istio.io/rev`, and the kubectl default-container annotations (naming the first app
/// container, so that `kubectl logs` and `exec` do not pick the proxy) unless the pod has
/// them, even empty.
pub(super) fn annotations_to_add(
    metadata: &ObjectMeta,
    spec: &PodSpec,
    config: &InjectionConfig,
) -> BTreeMap<String, String> {
    let existing = metadata.annotations.clone().unwrap_or_default();
    let mut out = BTreeMap::new();
    out.insert(REVISION_ANNOTATION.to_owned(), config.revision.clone());
    if let Some(first) = app_containers(spec).next() {
        for key in [
            DEFAULT_CONTAINER_ANNOTATION,
            DEFAULT_LOGS_CONTAINER_ANNOTATION,
        ] {
            if !existing.contains_key(key) {
                out.insert(key.to_owned(), first.name.clone());
            }
        }
    }
    out
}
