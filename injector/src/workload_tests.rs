use super::*;

type EditResult = Result<Change, Box<dyn std::error::Error + Send + Sync>>;

/// An edit that labels every template `touched=yes` and records what it saw.
fn labeler(
    seen: &mut Vec<String>,
) -> impl FnMut(&Workload, &mut PodTemplateSpec) -> EditResult + '_ {
    move |workload, template| {
        seen.push(workload.to_string());
        let meta = template.metadata.get_or_insert_with(Default::default);
        meta.labels
            .get_or_insert_with(Default::default)
            .insert("touched".into(), "yes".into());
        Ok(Change::Changed)
    }
}

#[test]
fn splits_on_markers_and_keeps_line_numbers() {
    let input = "---\na: 1\n---\n# only a comment\n--- b: 2\n...\nc: 3\n";
    let docs = split_documents(input);
    assert_eq!(
        docs,
        vec![
            (2, "a: 1\n"),
            (4, "# only a comment\n"),
            (5, "b: 2\n"),
            (7, "c: 3\n")
        ]
    );
    assert_eq!(split_documents("a: 1"), vec![(1, "a: 1")]);
    assert_eq!(split_documents(""), vec![]);
}

#[test]
fn other_kinds_pass_through_byte_for_byte() {
    let service = "# the service\napiVersion: v1\nkind: Service\nmetadata:   {name: web}   # odd spacing\nspec:\n  ports: [{port: 80}]\n";
    let mut seen = Vec::new();
    let out = process(service, labeler(&mut seen)).unwrap();
    assert_eq!(out, format!("{service}---\n"));
    assert!(seen.is_empty());
}

#[test]
fn every_workload_kind_finds_its_template() {
    let cases = [
        ("v1", "Pod", ""),
        (
            "v1",
            "ReplicationController",
            "spec:\n  template:\n    metadata: {}\n",
        ),
        (
            "apps/v1",
            "Deployment",
            "spec:\n  template:\n    metadata: {}\n",
        ),
        (
            "apps/v1",
            "DaemonSet",
            "spec:\n  template:\n    metadata: {}\n",
        ),
        (
            "apps/v1",
            "ReplicaSet",
            "spec:\n  template:\n    metadata: {}\n",
        ),
        (
            "apps/v1",
            "StatefulSet",
            "spec:\n  template:\n    metadata: {}\n",
        ),
        ("batch/v1", "Job", "spec:\n  template:\n    metadata: {}\n"),
        (
            "batch/v1",
            "CronJob",
            "spec:\n  jobTemplate:\n    spec:\n      template:\n        metadata: {}\n",
        ),
        (
            "apps.openshift.io/v1",
            "DeploymentConfig",
            "spec:\n  template:\n    metadata: {}\n",
        ),
    ];
    for (api, kind, body) in cases {
        let doc = format!(
            "apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: w\n  namespace: ns\n{body}"
        );
        let mut seen = Vec::new();
        let out = process(&doc, labeler(&mut seen)).unwrap();
        assert_eq!(seen, vec![format!("{kind} \"ns/w\"")]);
        let value: Value = yaml_serde::from_str(out.trim_end_matches("---\n")).unwrap();
        let mut at = &value;
        for key in Kind::from_type(api, kind).unwrap().template_path() {
            at = &at[*key];
        }
        assert_eq!(at["metadata"]["labels"]["touched"], "yes", "{kind}: {out}");
        assert_eq!(value["kind"], kind, "the rest of the object is kept");
    }
}

#[test]
fn list_items_are_edited_and_unknown_items_kept() {
    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: a}\n  spec: {containers: [{name: app, image: nginx}]}\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: c}\n  data: {k: v}\n";
    let mut seen = Vec::new();
    let out = process(list, labeler(&mut seen)).unwrap();
    assert_eq!(seen, vec!["Pod \"a\""]);
    let value: Value = yaml_serde::from_str(out.trim_end_matches("---\n")).unwrap();
    assert_eq!(value["items"][0]["metadata"]["labels"]["touched"], "yes");
    assert_eq!(value["items"][1]["data"]["k"], "v");
}

#[test]
fn unchanged_workloads_keep_their_text() {
    let doc = "apiVersion: apps/v1\nkind: Deployment   # keep me\nmetadata: {name: w}\nspec:\n  template:\n    metadata: {}\n";
    let out = process(doc, |_: &Workload, _: &mut PodTemplateSpec| -> EditResult {
        Ok(Change::Unchanged)
    })
    .unwrap();
    assert_eq!(out, format!("{doc}---\n"));
}

#[test]
fn malformed_yaml_names_the_document_and_the_file_line() {
    let input = "apiVersion: v1\nkind: Service\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: [unclosed\n";
    let err = process(input, labeler(&mut Vec::new()))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("document 2 (starting at line 4): invalid YAML at line"),
        "{err}"
    );
}

#[test]
fn a_workload_without_a_template_is_an_error() {
    let input = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\nspec: {replicas: 1}\n";
    let err = process(input, labeler(&mut Vec::new()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("Deployment \"w\""), "{err}");
    assert!(err.contains("spec.template"), "{err}");
}

#[test]
fn edit_errors_carry_the_document_and_workload() {
    let input =
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: n}\nspec: {containers: []}\n";
    let err = process(
        input,
        |_: &Workload, _: &mut PodTemplateSpec| -> EditResult { Err("bad annotation".into()) },
    )
    .unwrap_err()
    .to_string();
    assert_eq!(err, "document 1 (Pod \"n/p\"): bad annotation");
}
