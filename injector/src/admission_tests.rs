use super::*;
use serde_json::json;

fn config() -> InjectionConfig {
    InjectionConfig::default()
}

fn review_of(pod: Value, api_version: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": api_version,
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "object": pod,
        }
    }))
    .unwrap()
}

fn pod(extra_meta: Value) -> Value {
    // As a ReplicaSet creates it: no name, no namespace yet, a controller reference.
    let mut meta = json!({
        "generateName": "web-7d4b9c-",
        "labels": {"app": "web", "pod-template-hash": "7d4b9c"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9c",
                             "uid": "1", "controller": true}]
    });
    if let (Some(m), Some(extra)) = (meta.as_object_mut(), extra_meta.as_object()) {
        m.extend(extra.clone());
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]},
        "status": {}
    })
}

fn answer(body: &[u8]) -> Handled {
    handle(
        body,
        Some("application/json"),
        &config(),
        &config().policy_config(),
    )
}

fn response(handled: &Handled) -> &Value {
    match &handled.answer {
        Answer::Review(review) => &review["response"],
        other => panic!("expected a review, got {other:?}"),
    }
}

#[test]
fn a_pod_is_injected_with_a_base64_json_patch() {
    let original = pod(json!({"managedFields": [{"manager": "kubectl"}]}));
    let handled = answer(&review_of(original.clone(), "admission.k8s.io/v1"));
    assert_eq!(handled.decision, Decision::Injected);
    assert_eq!(handled.pod, "shop/web-7d4b9c-*");
    let Answer::Review(review) = &handled.answer else {
        panic!()
    };
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    let r = &review["response"];
    assert_eq!(r["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(r["allowed"], true);
    assert_eq!(r["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(r["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    let mut received = original.clone();
    received["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    let patched = patch::apply(&received, &patch).unwrap();
    assert_eq!(patched["spec"]["initContainers"][1]["name"], "istio-proxy");
    assert_eq!(
        patched["status"],
        json!({}),
        "fields outside metadata and spec untouched"
    );
    // The workload is the Deployment behind the ReplicaSet, in the request's namespace.
    let env = patched["spec"]["initContainers"][1]["env"]
        .as_array()
        .unwrap();
    let owner = env
        .iter()
        .find(|e| e["name"] == "ISTIO_META_OWNER")
        .unwrap();
    assert_eq!(
        owner["value"],
        "kubernetes://apis/apps/v1/namespaces/shop/deployments/web"
    );
}

#[test]
fn v1beta1_is_answered_in_v1beta1() {
    let handled = answer(&review_of(pod(json!({})), "admission.k8s.io/v1beta1"));
    let Answer::Review(review) = &handled.answer else {
        panic!()
    };
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(review["response"]["allowed"], true);
}

#[test]
fn opted_out_and_host_network_pods_get_no_patch() {
    for extra in [
        json!({"labels": {"sidecar.istio.io/inject": "false"}}),
        json!({"annotations": {"sidecar.istio.io/inject": "false"}}),
    ] {
        let handled = answer(&review_of(pod(extra), "admission.k8s.io/v1"));
        let r = response(&handled);
        assert_eq!(r["allowed"], true);
        assert!(r.get("patch").is_none());
        assert!(matches!(
            handled.decision,
            Decision::Skipped {
                code: "opted_out",
                ..
            }
        ));
    }
    let mut host = pod(json!({}));
    host["spec"]["hostNetwork"] = json!(true);
    let handled = answer(&review_of(host, "admission.k8s.io/v1"));
    assert!(response(&handled).get("patch").is_none());
    assert!(matches!(
        handled.decision,
        Decision::Skipped {
            code: "host_network",
            ..
        }
    ));
}

#[test]
fn a_bad_annotation_rejects_the_pod_with_a_message() {
    let bad =
        pod(json!({"annotations": {"traffic.sidecar.istio.io/excludeInboundPorts": "80,http"}}));
    let handled = answer(&review_of(bad, "admission.k8s.io/v1"));
    let r = response(&handled);
    assert_eq!(r["allowed"], false);
    let message = r["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("traffic.sidecar.istio.io/excludeInboundPorts"),
        "{message}"
    );
}

#[test]
fn other_objects_are_allowed_untouched() {
    let body = serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "u1", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"}, "object": {}}
    }))
    .unwrap();
    let handled = answer(&body);
    assert_eq!(response(&handled)["allowed"], true);
    assert!(response(&handled).get("patch").is_none());
}

#[test]
fn bad_input_gets_its_documented_answer() {
    let http_status = |h: Handled| match h.answer {
        Answer::Http { status, .. } => status,
        other => panic!("expected an HTTP error, got {other:?}"),
    };
    assert_eq!(http_status(answer(b"")), 400);
    assert_eq!(http_status(answer(&vec![b' '; MAX_BODY + 1])), 400);
    let body = review_of(pod(json!({})), "admission.k8s.io/v1");
    assert_eq!(
        http_status(handle(
            &body,
            Some("text/plain"),
            &config(),
            &PolicyConfig::default()
        )),
        415
    );
    assert_eq!(
        http_status(handle(&body, None, &config(), &PolicyConfig::default())),
        415
    );
    assert_eq!(http_status(answer(b"{not json")), 400);
    assert_eq!(
        http_status(answer(br#"{"hello": "world"}"#)),
        400,
        "no uid to answer to"
    );

    // A uid can be read, so the answer is a review that refuses.
    let wrong_kind =
        br#"{"apiVersion": "admission.k8s.io/v1", "kind": "Nope", "request": {"uid": "u2"}}"#;
    let handled = answer(wrong_kind);
    assert_eq!(response(&handled)["uid"], "u2");
    assert_eq!(response(&handled)["allowed"], false);

    let undecodable = review_of(
        json!({"metadata": {"name": "p"}, "spec": {"containers": "nope"}}),
        "admission.k8s.io/v1",
    );
    let handled = answer(&undecodable);
    assert_eq!(response(&handled)["allowed"], false);
    assert!(
        response(&handled)["status"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot decode the pod")
    );
}
