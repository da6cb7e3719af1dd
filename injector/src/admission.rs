//! The AdmissionReview contract, as a pure function from the request body to the answer:
//! the webhook server only adds HTTP, TLS, logging and metrics around it.
//!
//! The types are written here rather than taken from kube: kube's `AdmissionResponse`
//! serialises the patch as an array of numbers, while the API server wants base64
//! (kube-rs#1781), and the v1beta1 answer must echo the request's apiVersion.

use base64::Engine;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::InjectionConfig;
use crate::inject::{self, Outcome, Request};
use crate::patch;
use crate::policy::PolicyConfig;

/// The largest body accepted, as Istio's injector: a Pod is far smaller.
pub const MAX_BODY: usize = 6 * 1024 * 1024;
const V1: &str = "admission.k8s.io/v1";
const V1BETA1: &str = "admission.k8s.io/v1beta1";

/// What the server sends back.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// A plain HTTP error: the request could not be answered as a review at all.
    Http { status: u16, message: String },
    /// An AdmissionReview (always HTTP 200).
    Review(Value),
}

/// What happened, for the log line and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Injected,
    /// The pod stays as it is; the reason is the policy's, or "not a pod".
    Skipped {
        reason: String,
        code: &'static str,
    },
    /// The pod is rejected (`allowed: false`).
    Denied(String),
    /// Not a usable request (HTTP error or a review without a request).
    BadRequest(String),
}

/// The answer and what to log about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Handled {
    pub answer: Answer,
    pub decision: Decision,
    /// `namespace/name` (or `namespace/generateName*`) of the pod, when known.
    pub pod: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<RequestIn>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn {
    uid: String,
    kind: Option<GroupVersionKind>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    object: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct GroupVersionKind {
    #[serde(default)]
    group: String,
    #[serde(default)]
    kind: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut {
    uid: String,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
}

#[derive(Debug, Serialize)]
struct StatusOut {
    message: String,
}

fn review(api_version: &str, response: ResponseOut) -> Answer {
    Answer::Review(serde_json::json!({
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "response": response,
    }))
}

fn http(status: u16, message: impl Into<String>) -> Handled {
    let message = message.into();
    Handled {
        answer: Answer::Http {
            status,
            message: message.clone(),
        },
        decision: Decision::BadRequest(message),
        pod: String::new(),
    }
}

/// Answers one POST to `/inject`.
pub fn handle(
    body: &[u8],
    content_type: Option<&str>,
    config: &InjectionConfig,
    policy: &PolicyConfig,
) -> Handled {
    if body.is_empty() {
        return http(400, "empty body: expected an AdmissionReview");
    }
    if body.len() > MAX_BODY {
        return http(400, format!("body larger than {MAX_BODY} bytes"));
    }
    if content_type != Some("application/json") {
        return http(
            415,
            format!(
                "Content-Type {:?} is not application/json",
                content_type.unwrap_or_default()
            ),
        );
    }
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return http(400, format!("body is not JSON: {e}")),
    };
    // The uid is all that is needed to answer in the review format, so read it first.
    let uid = value
        .pointer("/request/uid")
        .and_then(Value::as_str)
        .map(str::to_string);
    let parsed: Result<ReviewIn, _> = serde_json::from_value(value);
    let (api_version, request) = match (parsed, uid) {
        (
            Ok(ReviewIn {
                api_version,
                kind,
                request: Some(request),
            }),
            _,
        ) if kind == "AdmissionReview" && (api_version == V1 || api_version == V1BETA1) => {
            (api_version, request)
        }
        (_, None) => return http(400, "not an AdmissionReview: no request.uid"),
        (parsed, Some(uid)) => {
            let message = match parsed {
                Err(e) => format!("not an AdmissionReview: {e}"),
                Ok(r) => format!(
                    "not an AdmissionReview of {V1} or {V1BETA1}: apiVersion {:?}, kind {:?}",
                    r.api_version, r.kind
                ),
            };
            let api_version = if matches!(parsed_version(body).as_deref(), Some(V1BETA1)) {
                V1BETA1
            } else {
                V1
            };
            return Handled {
                answer: review(api_version, deny(uid, &message)),
                decision: Decision::Denied(message),
                pod: String::new(),
            };
        }
    };
    let (response, decision, pod) = admit(request, config, policy);
    Handled {
        answer: review(&api_version, response),
        decision,
        pod,
    }
}

fn parsed_version(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(body)
        .ok()?
        .get("apiVersion")?
        .as_str()
        .map(str::to_string)
}

fn deny(uid: String, message: &str) -> ResponseOut {
    ResponseOut {
        uid,
        allowed: false,
        status: Some(StatusOut {
            message: message.to_string(),
        }),
        patch_type: None,
        patch: None,
    }
}

fn allow(uid: String) -> ResponseOut {
    ResponseOut {
        uid,
        allowed: true,
        status: None,
        patch_type: None,
        patch: None,
    }
}

/// Decides for one admission request.
fn admit(
    request: RequestIn,
    config: &InjectionConfig,
    policy: &PolicyConfig,
) -> (ResponseOut, Decision, String) {
    let RequestIn {
        uid,
        kind,
        namespace,
        object,
    } = request;
    let namespace = namespace.unwrap_or_default();
    let is_pod = kind
        .as_ref()
        .is_some_and(|k| k.group.is_empty() && k.kind == "Pod");
    let Some(mut object) = object.filter(|_| is_pod) else {
        let decision = Decision::Skipped {
            reason: "not a Pod".into(),
            code: "not_pod",
        };
        return (allow(uid), decision, String::new());
    };
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
    }
    let pod_name = describe(&object, &namespace);
    let pod: Pod = match serde_json::from_value(object.clone()) {
        Ok(pod) => pod,
        Err(e) => {
            let message = format!("cannot decode the pod: {e}");
            return (deny(uid, &message), Decision::Denied(message), pod_name);
        }
    };
    let original = PodTemplateSpec {
        metadata: Some(pod.metadata),
        spec: pod.spec,
    };
    let mut template = original.clone();
    let request = Request {
        namespace: &namespace,
        config,
        policy,
        owner: None,
    };
    match inject::inject(&mut template, &request) {
        Ok(Outcome::Skipped(reason)) => {
            let decision = Decision::Skipped {
                reason: reason.to_string(),
                code: crate::metrics::skip_code(&reason),
            };
            (allow(uid), decision, pod_name)
        }
        Ok(Outcome::Injected) => match patch_for(&object, &original, &template) {
            Ok(patch) => {
                let mut response = allow(uid);
                response.patch_type = Some("JSONPatch");
                response.patch = Some(base64::engine::general_purpose::STANDARD.encode(patch));
                (response, Decision::Injected, pod_name)
            }
            Err(message) => (deny(uid, &message), Decision::Denied(message), pod_name),
        },
        Err(e) => {
            let message = e.to_string();
            (deny(uid, &message), Decision::Denied(message), pod_name)
        }
    }
}

/// The patch from the pod as received to the injected pod. Both sides are the received
/// object with metadata and spec re-serialised, so the patch touches only what injection
/// changed and fields this build does not know elsewhere in the object are left alone.
fn patch_for(
    object: &Value,
    original: &PodTemplateSpec,
    injected: &PodTemplateSpec,
) -> Result<Vec<u8>, String> {
    let with = |template: &PodTemplateSpec| -> Result<Value, String> {
        let mut pod = object.clone();
        let map = pod.as_object_mut().ok_or("the pod is not a JSON object")?;
        for (key, value) in [
            ("metadata", serde_json::to_value(&template.metadata)),
            ("spec", serde_json::to_value(&template.spec)),
        ] {
            map.insert(key.to_string(), value.map_err(|e| e.to_string())?);
        }
        Ok(pod)
    };
    let patch = patch::diff(&with(original)?, &with(injected)?);
    serde_json::to_vec(&patch).map_err(|e| e.to_string())
}

/// `namespace/name`, or `namespace/generateName*` for a pod a controller is creating.
fn describe(object: &Value, request_namespace: &str) -> String {
    let meta = object.get("metadata");
    let text = |key: &str| {
        meta.and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let namespace = text("namespace").unwrap_or(request_namespace);
    match (text("name"), text("generateName")) {
        (Some(name), _) => format!("{namespace}/{name}"),
        (None, Some(prefix)) => format!("{namespace}/{prefix}*"),
        (None, None) => format!("{namespace}/<unnamed>"),
    }
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod tests;
