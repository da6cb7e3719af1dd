//! The `sidecar.istio.io/status` annotation: the record of what injection added, which makes
//! re-injection idempotent and `uninject` exact.
//!
//! Istio's fields (`initContainers`, `containers`, `volumes`, `imagePullSecrets`, `revision`)
//! keep their names and meaning so Istio tooling reads a Skiff pod's status. Skiff adds
//! `addedLabels` and `addedAnnotations`: the keys injection set that the pod did not have,
//! so that uninject can take exactly those away again. Istio ignores unknown fields.

use serde::{Deserialize, Serialize};

/// The annotation's key.
pub const STATUS_KEY: &str = "sidecar.istio.io/status";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// Istio writes `null` rather than `[]` for an empty list; Skiff does the same.
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        serialize_with = "empty_as_null"
    )]
    pub init_containers: Vec<String>,
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        serialize_with = "empty_as_null"
    )]
    pub containers: Vec<String>,
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        serialize_with = "empty_as_null"
    )]
    pub volumes: Vec<String>,
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        serialize_with = "empty_as_null"
    )]
    pub image_pull_secrets: Vec<String>,
    #[serde(default)]
    pub revision: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added_labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub added_annotations: Vec<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

fn empty_as_null<S: serde::Serializer>(list: &[String], s: S) -> Result<S::Ok, S::Error> {
    if list.is_empty() {
        s.serialize_none()
    } else {
        list.serialize(s)
    }
}

impl Status {
    /// Reads the annotation value. `None` for something that is not a status record (then
    /// the pod is treated as not injected, as Istio does when the JSON does not parse).
    pub fn parse(value: &str) -> Option<Status> {
        serde_json::from_str(value).ok()
    }

    pub fn to_json(&self) -> String {
        // Serialising a struct of strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_istios_own_status() {
        let istio = r#"{"initContainers":["istio-init","istio-proxy"],"containers":null,"volumes":["workload-socket","istio-envoy"],"imagePullSecrets":null,"revision":"default"}"#;
        let status = Status::parse(istio).unwrap();
        assert_eq!(status.init_containers, vec!["istio-init", "istio-proxy"]);
        assert!(status.containers.is_empty());
        assert_eq!(status.revision, "default");
        assert_eq!(
            status.to_json(),
            istio,
            "written back in Istio's exact form"
        );
    }

    #[test]
    fn skiff_fields_round_trip() {
        let status = Status {
            containers: vec!["istio-proxy".into()],
            added_labels: vec!["security.istio.io/tlsMode".into()],
            ..Status::default()
        };
        let json = status.to_json();
        assert!(
            json.contains(r#""addedLabels":["security.istio.io/tlsMode"]"#),
            "{json}"
        );
        assert_eq!(Status::parse(&json), Some(status));
    }

    #[test]
    fn garbage_is_not_a_status() {
        assert_eq!(Status::parse("injected"), None);
        assert_eq!(Status::parse("[1,2]"), None);
    }
}
