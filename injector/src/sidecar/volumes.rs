//! The volumes injection adds to the pod and the proxy's mounts of them, with Istio's names
//! and paths (the proxy finds its token, CA certificate, pod labels and sockets there).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, DownwardAPIVolumeFile, DownwardAPIVolumeSource, EmptyDirVolumeSource,
    ObjectFieldSelector, ProjectedVolumeSource, ServiceAccountTokenProjection, Volume, VolumeMount,
    VolumeProjection,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::SidecarError;
use crate::annotations::{PodOverrides, key};

/// The audience istiod's CA accepts for the pod's service-account token.
pub const TOKEN_AUDIENCE: &str = "istio-ca";
/// Twelve hours; the kubelet refreshes the token well before.
pub const TOKEN_EXPIRATION_SECONDS: i64 = 43200;
/// The ConfigMap istiod writes its root certificate into, in every namespace.
pub const ROOT_CERT_CONFIGMAP: &str = "istio-ca-root-cert";
/// istiod's certificate revocation list; optional, so pods start without it.
pub const CRL_CONFIGMAP: &str = "istio-ca-crl";
/// The volume of `sidecar.istio.io/bootstrapOverride`.
pub const CUSTOM_BOOTSTRAP_VOLUME: &str = "custom-bootstrap-volume";

fn empty_dir(name: &str, medium: Option<&str>) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: medium.map(str::to_owned),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn config_map(name: &str, config_map: &str, optional: bool) -> Volume {
    Volume {
        name: name.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map.to_owned(),
            optional: optional.then_some(true),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn pod_field(path: &str, field: &str) -> DownwardAPIVolumeFile {
    DownwardAPIVolumeFile {
        path: path.to_owned(),
        field_ref: Some(ObjectFieldSelector {
            api_version: None,
            field_path: field.to_owned(),
        }),
        ..DownwardAPIVolumeFile::default()
    }
}

/// The pod volumes, in the order of Istio's template.
pub(super) fn volumes(bootstrap_override: Option<&str>) -> Vec<Volume> {
    let mut out = vec![
        empty_dir("workload-socket", None),
        empty_dir("credential-socket", None),
        empty_dir("workload-certs", None),
    ];
    if let Some(configmap) = bootstrap_override {
        out.push(config_map(CUSTOM_BOOTSTRAP_VOLUME, configmap, false));
    }
    out.extend([
        // The proxy's SDS socket and bootstrap live here: in memory, never on the node's disk.
        empty_dir("istio-envoy", Some("Memory")),
        empty_dir("istio-data", None),
        Volume {
            name: "istio-podinfo".to_owned(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![
                    pod_field("labels", "metadata.labels"),
                    pod_field("annotations", "metadata.annotations"),
                ]),
                ..DownwardAPIVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "istio-token".to_owned(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(TOKEN_AUDIENCE.to_owned()),
                        expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
                        path: "istio-token".to_owned(),
                        ..ServiceAccountTokenProjection::default()
                    }),
                    ..VolumeProjection::default()
                }]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        },
        config_map("istiod-ca-cert", ROOT_CERT_CONFIGMAP, false),
        config_map("istio-ca-crl", CRL_CONFIGMAP, true),
    ]);
    out
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        ..VolumeMount::default()
    }
}

/// The proxy's mounts, in the order of Istio's template.
pub(super) fn proxy_mounts(bootstrap_override: bool) -> Vec<VolumeMount> {
    let mut out = vec![
        mount("workload-socket", "/var/run/secrets/workload-spiffe-uds"),
        mount("credential-socket", "/var/run/secrets/credential-uds"),
        mount(
            "workload-certs",
            "/var/run/secrets/workload-spiffe-credentials",
        ),
        mount("istiod-ca-cert", "/var/run/secrets/istio"),
        mount("istio-ca-crl", "/var/run/secrets/istio/crl"),
        mount("istio-data", "/var/lib/istio/data"),
    ];
    if bootstrap_override {
        out.push(mount(
            CUSTOM_BOOTSTRAP_VOLUME,
            "/etc/istio/custom-bootstrap",
        ));
    }
    out.extend([
        mount("istio-envoy", "/etc/istio/proxy"),
        mount("istio-token", "/var/run/secrets/tokens"),
        mount("istio-podinfo", "/etc/istio/pod"),
    ]);
    out
}

/// The first key of `input` (as a dotted path) that `output` lacks: a field the Kubernetes
/// type does not have, which the deserializer would otherwise drop without a word.
fn unknown_field(input: &Value, output: &Value, path: &str) -> Option<String> {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => i.iter().find_map(|(k, v)| {
            let here = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            match o.get(k) {
                // An explicit null is "unset": the serializer leaves it out.
                None if v.is_null() => None,
                None => Some(here),
                Some(out) => unknown_field(v, out, &here),
            }
        }),
        (Value::Array(i), Value::Array(o)) => i
            .iter()
            .zip(o)
            .enumerate()
            .find_map(|(n, (v, out))| unknown_field(v, out, &format!("{path}[{n}]"))),
        _ => None,
    }
}

/// One entry of `userVolume` or `userVolumeMount` as a Kubernetes object, named by its key.
fn typed<T: DeserializeOwned + Serialize>(
    annotation: &str,
    name: &str,
    fields: &Value,
    what: &str,
) -> Result<T, SidecarError> {
    let error = |reason: String| SidecarError::UserVolume {
        key: annotation.to_owned(),
        name: name.to_owned(),
        reason,
    };
    let mut object = fields.clone();
    if let Value::Object(map) = &mut object {
        map.insert("name".to_owned(), Value::String(name.to_owned()));
    }
    let parsed: T = serde_json::from_value(object.clone())
        .map_err(|e| error(format!("is not a Kubernetes {what}: {e}")))?;
    let written = serde_json::to_value(&parsed)
        .map_err(|e| error(format!("is not a Kubernetes {what}: {e}")))?;
    if let Some(field) = unknown_field(&object, &written, "") {
        return Err(error(format!(
            "{field} is not a field of a Kubernetes {what}; check its spelling"
        )));
    }
    Ok(parsed)
}

/// The volumes and proxy mounts of `sidecar.istio.io/userVolume` and `userVolumeMount`,
/// ordered by name. A name or mount path that injection uses itself is refused: the API
/// server would reject the pod with a message that does not mention the annotation.
pub(super) fn user_volumes(
    overrides: &PodOverrides,
) -> Result<(Vec<Volume>, Vec<VolumeMount>), SidecarError> {
    let empty = BTreeMap::new();
    let injected_volumes: Vec<String> = volumes(Some("x")).into_iter().map(|v| v.name).collect();
    let injected_paths: Vec<String> = proxy_mounts(true)
        .into_iter()
        .map(|m| m.mount_path)
        .collect();

    let mut out_volumes = Vec::new();
    for (name, fields) in overrides.user_volumes.as_ref().unwrap_or(&empty) {
        if injected_volumes.contains(name) {
            return Err(SidecarError::UserVolume {
                key: key::USER_VOLUME.to_owned(),
                name: name.clone(),
                reason: "is the name of a volume injection adds; choose another name".to_owned(),
            });
        }
        let volume = typed::<Volume>(key::USER_VOLUME, name, fields, "Volume")?;
        let has_source = match serde_json::to_value(&volume) {
            Ok(Value::Object(fields)) => fields.keys().any(|k| k != "name"),
            _ => false,
        };
        if !has_source {
            return Err(SidecarError::UserVolume {
                key: key::USER_VOLUME.to_owned(),
                name: name.clone(),
                reason: "has no volume source; add one, e.g. \"emptyDir\": {}".to_owned(),
            });
        }
        out_volumes.push(volume);
    }
    let mut out_mounts = Vec::new();
    for (name, fields) in overrides.user_volume_mounts.as_ref().unwrap_or(&empty) {
        let mount = typed::<VolumeMount>(key::USER_VOLUME_MOUNT, name, fields, "VolumeMount")?;
        if mount.mount_path.is_empty() {
            return Err(SidecarError::UserVolume {
                key: key::USER_VOLUME_MOUNT.to_owned(),
                name: name.clone(),
                reason: "has no mountPath; add e.g. \"mountPath\": \"/etc/extra\"".to_owned(),
            });
        }
        let path = mount.mount_path.trim_end_matches('/');
        if injected_paths.iter().any(|p| p == path) {
            return Err(SidecarError::UserVolume {
                key: key::USER_VOLUME_MOUNT.to_owned(),
                name: name.clone(),
                reason: format!(
                    "mountPath {:?} is already used by the proxy; choose another path",
                    mount.mount_path
                ),
            });
        }
        out_mounts.push(mount);
    }
    Ok((out_volumes, out_mounts))
}
