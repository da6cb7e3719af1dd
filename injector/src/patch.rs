//! The RFC 6902 JSON Patch that turns the pod the API server sent into the injected pod:
//! what the webhook answers with. Computed as a diff of the two documents, so whatever the
//! injection core does, the patch cannot disagree with `inject`'s output.

use serde_json::Value;

/// The patch that, applied to `original`, yields `mutated` exactly.
pub fn diff(original: &Value, mutated: &Value) -> json_patch::Patch {
    json_patch::diff(original, mutated)
}

/// Applies `patch` to a copy of `original` (what the API server will do), for checking.
pub fn apply(original: &Value, patch: &json_patch::Patch) -> Result<Value, json_patch::PatchError> {
    let mut doc = original.clone();
    json_patch::patch(&mut doc, patch)?;
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip(a: Value, b: Value) {
        let patch = diff(&a, &b);
        assert_eq!(
            apply(&a, &patch).unwrap(),
            b,
            "patch: {}",
            serde_json::to_string(&patch).unwrap()
        );
    }

    #[test]
    fn sidecar_shapes_round_trip() {
        round_trip(
            json!({"spec": {"initContainers": [{"name": "user"}], "containers": [{"name": "app"}]}}),
            json!({"spec": {"initContainers": [{"name": "istio-init"}, {"name": "istio-proxy"}, {"name": "user"}],
                            "containers": [{"name": "app"}]}}),
        );
        round_trip(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}}),
            json!({"metadata": {"name": "p", "annotations": {"sidecar.istio.io/status": "{}"}},
                   "spec": {"containers": [{"name": "b"}]}}),
        );
    }

    #[test]
    fn keys_with_slashes_and_tildes_are_escaped() {
        let patch = diff(&json!({"a": {}}), &json!({"a": {"x/y~z": "1"}}));
        let text = serde_json::to_string(&patch).unwrap();
        assert!(text.contains("/a/x~1y~0z"), "{text}");
    }
}
