//! The injection core, shared unchanged by `inject`, `uninject` and the webhook: decide,
//! then add the sidecar to a pod template, or take it away again.
//!
//! Injection is idempotent: a pod that carries `sidecar.istio.io/status` is first restored
//! to what it was (exactly what the status lists is removed, rewritten probes and merged
//! Prometheus annotations are put back) and then injected afresh, so nothing is duplicated
//! and a config change reaches pods that are injected again.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::annotations::{self, AnnotationError};
use crate::config::InjectionConfig;
use crate::policy::{self, Decision, PodFacts, PolicyConfig, SkipReason};
use crate::probes::{self, APP_PROBERS_ENV, ProbeError};
use crate::prometheus::{self, PROMETHEUS_ENV, PrometheusError};
use crate::sidecar::{
    self, Owner, PROXY_CONTAINER_NAME, Settings, Sidecar, SidecarError, SidecarInput,
};
use crate::status::{STATUS_KEY, Status};

/// What the caller knows about the request beyond the pod itself.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The request's namespace; the pod's own `metadata.namespace` wins when set.
    pub namespace: &'a str,
    pub config: &'a InjectionConfig,
    /// The webhook uses the config's policy; `inject` uses [`PolicyConfig::manual`].
    pub policy: &'a PolicyConfig,
    /// The object holding the template when it is not a Pod (`inject` of a Deployment).
    pub owner: Option<&'a Owner>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    Skipped(SkipReason),
}

/// Why a pod cannot be injected; the webhook answers `allowed: false` with this message.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    #[error(transparent)]
    Sidecar(#[from] SidecarError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(transparent)]
    Prometheus(#[from] PrometheusError),
}

/// Injects the sidecar into `template` unless the policy says not to. On error the
/// template is left exactly as it was.
pub fn inject(
    template: &mut PodTemplateSpec,
    request: &Request<'_>,
) -> Result<Outcome, InjectError> {
    let empty_meta = ObjectMeta::default();
    let empty_spec = PodSpec::default();
    let facts = pod_facts(
        template.metadata.as_ref().unwrap_or(&empty_meta),
        template.spec.as_ref().unwrap_or(&empty_spec),
    );
    if let Decision::Skip(reason) =
        policy::inject_required(request.policy, &facts, request.namespace)
    {
        return Ok(Outcome::Skipped(reason));
    }

    let mut work = template.clone();
    uninject(&mut work, request.config)?;
    let mut meta = work.metadata.take().unwrap_or_default();
    let mut spec = work.spec.take().unwrap_or_default();

    let mut pod_annotations = meta.annotations.take().unwrap_or_default();
    let overrides = annotations::parse(&pod_annotations)?;
    let settings = Settings::resolve(request.config, &overrides)?;
    let app_probers = if settings.rewrite_app_probes && settings.status_port != 0 {
        probes::rewrite(&mut spec, settings.status_port)?
    } else {
        None
    };
    let prometheus_saved = if settings.prometheus_merge {
        prometheus::merge(&mut pod_annotations, settings.status_port)?
    } else {
        None
    };
    meta.annotations = Some(pod_annotations);

    let namespace = meta.namespace.clone().filter(|n| !n.is_empty());
    let sidecar = sidecar::build(&SidecarInput {
        metadata: &meta,
        spec: &spec,
        namespace: namespace.as_deref().unwrap_or(request.namespace),
        config: request.config,
        overrides: &overrides,
        app_probers: app_probers.as_deref(),
        prometheus_annotations: prometheus_saved.as_deref(),
        owner: request.owner,
    })?;
    let status = add_sidecar(&mut meta, &mut spec, sidecar, &request.config.revision);
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(STATUS_KEY.to_string(), status.to_json());

    template.metadata = Some(meta);
    template.spec = Some(spec);
    Ok(Outcome::Injected)
}

fn pod_facts(meta: &ObjectMeta, spec: &PodSpec) -> PodFacts {
    PodFacts {
        namespace: meta.namespace.clone(),
        labels: meta.labels.clone().unwrap_or_default(),
        annotations: meta.annotations.clone().unwrap_or_default(),
        host_network: spec.host_network.unwrap_or(false),
    }
}

/// Puts the sidecar's parts into the pod and returns the status record of what was added.
/// Native layout: `istio-init`, `istio-proxy`, then the pod's init containers. Classic:
/// the pod's init containers, then `istio-init`; the proxy last among the containers, or
/// first when the application must wait for it.
fn add_sidecar(
    meta: &mut ObjectMeta,
    spec: &mut PodSpec,
    sidecar: Sidecar,
    revision: &str,
) -> Status {
    let mut status = Status {
        revision: revision.to_string(),
        ..Status::default()
    };
    let inits = spec.init_containers.get_or_insert_with(Vec::new);
    let mut front: Vec<Container> = Vec::new();
    if let Some(init) = sidecar.init_container {
        status.init_containers.push(init.name.clone());
        if sidecar.native {
            front.push(init);
        } else {
            inits.push(init);
        }
    }
    if sidecar.native {
        status.init_containers.push(sidecar.proxy.name.clone());
        front.push(sidecar.proxy);
        inits.splice(0..0, front);
    } else {
        status.containers.push(sidecar.proxy.name.clone());
        if sidecar.hold_application {
            spec.containers.insert(0, sidecar.proxy);
        } else {
            spec.containers.push(sidecar.proxy);
        }
    }
    if spec.init_containers.as_ref().is_some_and(Vec::is_empty) {
        spec.init_containers = None;
    }

    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    for volume in sidecar.volumes {
        status.volumes.push(volume.name.clone());
        volumes.push(volume);
    }
    let secrets = spec.image_pull_secrets.get_or_insert_with(Vec::new);
    for secret in sidecar.image_pull_secrets {
        if !secrets.iter().any(|s| s.name == secret.name) {
            status.image_pull_secrets.push(secret.name.clone());
            secrets.push(secret);
        }
    }
    if secrets.is_empty() {
        spec.image_pull_secrets = None;
    }

    status.added_labels = add_missing(&mut meta.labels, sidecar.labels);
    status.added_annotations = add_missing(&mut meta.annotations, sidecar.annotations);
    status
}

/// Sets each key the map does not have yet and returns those keys: values the user wrote
/// are never overwritten, so uninject can restore the pod by removing exactly these.
fn add_missing(
    map: &mut Option<BTreeMap<String, String>>,
    add: BTreeMap<String, String>,
) -> Vec<String> {
    let map = map.get_or_insert_with(BTreeMap::new);
    let mut added = Vec::new();
    for (key, value) in add {
        if let std::collections::btree_map::Entry::Vacant(slot) = map.entry(key) {
            added.push(slot.key().clone());
            slot.insert(value);
        }
    }
    added
}

/// Removes what `sidecar.istio.io/status` says injection added and restores what it
/// changed. Returns whether the template was injected. A template without a (parseable)
/// status is left alone.
pub fn uninject(
    template: &mut PodTemplateSpec,
    config: &InjectionConfig,
) -> Result<bool, InjectError> {
    let Some(meta) = template.metadata.as_mut() else {
        return Ok(false);
    };
    let Some(status) = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(STATUS_KEY))
        .and_then(|s| Status::parse(s))
    else {
        return Ok(false);
    };
    let spec = template.spec.get_or_insert_with(PodSpec::default);

    let proxy_env = |name: &str| -> Option<String> {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .filter(|c| c.name == PROXY_CONTAINER_NAME)
            .flat_map(|c| c.env.iter().flatten())
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    let app_probers = proxy_env(APP_PROBERS_ENV);
    let prometheus_saved = proxy_env(PROMETHEUS_ENV);

    spec.containers
        .retain(|c| !status.containers.contains(&c.name));
    remove_named(&mut spec.init_containers, &status.init_containers, |c| {
        &c.name
    });
    remove_named(&mut spec.volumes, &status.volumes, |v| &v.name);
    remove_named(
        &mut spec.image_pull_secrets,
        &status.image_pull_secrets,
        |s| &s.name,
    );
    if let Some(json) = &app_probers {
        probes::restore(spec, json)?;
    }

    let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
    annotations.remove(STATUS_KEY);
    let overrides = annotations::parse(annotations)?;
    let settings = Settings::resolve(config, &overrides)?;
    prometheus::unmerge(
        annotations,
        prometheus_saved.as_deref(),
        settings.status_port,
    )?;
    for key in &status.added_annotations {
        annotations.remove(key);
    }
    if let Some(labels) = meta.labels.as_mut() {
        for key in &status.added_labels {
            labels.remove(key);
        }
    }
    for map in [&mut meta.labels, &mut meta.annotations] {
        if map.as_ref().is_some_and(BTreeMap::is_empty) {
            *map = None;
        }
    }
    // A template written without metadata gets it only from injection.
    if *meta == ObjectMeta::default() {
        template.metadata = None;
    }
    Ok(true)
}

fn remove_named<T>(list: &mut Option<Vec<T>>, names: &[String], name: impl Fn(&T) -> &String) {
    if let Some(items) = list.as_mut() {
        items.retain(|item| !names.contains(name(item)));
        if items.is_empty() {
            *list = None;
        }
    }
}

#[cfg(test)]
#[path = "inject_tests.rs"]
mod tests;
