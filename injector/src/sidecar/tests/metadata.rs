//! Owner and workload derivation (Istio's `GetDeployMetaFromPod`, spec section 2 "The
//! owner comes from the controlling ownerRef"), canonical labels and the annotations.

use super::*;

struct Case {
    what: &'static str,
    name: Option<&'static str>,
    generate_name: Option<&'static str>,
    labels: &'static [(&'static str, &'static str)],
    owners: Vec<OwnerReference>,
    /// (name, kind, apiVersion)
    want: (&'static str, &'static str, &'static str),
    owner_uri: Option<&'static str>,
}

#[test]
fn owner_derivation() {
    let cases = vec![
        Case {
            what: "ReplicaSet with pod-template-hash is a Deployment",
            name: None,
            generate_name: Some("hello-5d8f9c7b6d-"),
            labels: &[("pod-template-hash", "5d8f9c7b6d")],
            owners: vec![owner("ReplicaSet", "apps/v1", "hello-5d8f9c7b6d", true)],
            want: ("hello", "Deployment", "apps/v1"),
            owner_uri: Some("kubernetes://apis/apps/v1/namespaces/shop/deployments/hello"),
        },
        Case {
            what: "a ReplicaSet whose name does not end with the hash stays a ReplicaSet",
            name: None,
            generate_name: Some("rs-"),
            labels: &[("pod-template-hash", "abc123")],
            owners: vec![owner("ReplicaSet", "apps/v1", "standalone-rs", true)],
            want: ("standalone-rs", "ReplicaSet", "apps/v1"),
            owner_uri: Some("kubernetes://apis/apps/v1/namespaces/shop/replicasets/standalone-rs"),
        },
        Case {
            what: "Argo Rollout, with Istio's apiVersion",
            name: None,
            generate_name: Some("web-6b7c8d9f-"),
            labels: &[("rollouts-pod-template-hash", "6b7c8d9f")],
            owners: vec![owner("ReplicaSet", "apps/v1", "web-6b7c8d9f", true)],
            want: ("web", "Rollout", "v1alpha1"),
            owner_uri: Some("kubernetes://apis/v1alpha1/namespaces/shop/rollouts/web"),
        },
        Case {
            what: "OpenShift DeploymentConfig from the RC's deploymentconfig label",
            name: None,
            generate_name: Some("app-3-"),
            labels: &[("deploymentconfig", "app")],
            owners: vec![owner("ReplicationController", "v1", "app-3", true)],
            want: ("app", "DeploymentConfig", "v1"),
            owner_uri: Some("kubernetes://apis/v1/namespaces/shop/deploymentconfigs/app"),
        },
        Case {
            what: "a plain ReplicationController",
            name: None,
            generate_name: Some("rc-"),
            labels: &[],
            owners: vec![owner("ReplicationController", "v1", "rc", true)],
            want: ("rc", "ReplicationController", "v1"),
            owner_uri: Some("kubernetes://apis/v1/namespaces/shop/replicationcontrollers/rc"),
        },
        Case {
            what: "a Job with an 8-digit suffix belongs to a CronJob",
            name: None,
            generate_name: Some("backup-28765430-"),
            labels: &[],
            owners: vec![owner("Job", "batch/v1", "backup-28765430", true)],
            want: ("backup", "CronJob", "batch/v1"),
            owner_uri: Some("kubernetes://apis/batch/v1/namespaces/shop/cronjobs/backup"),
        },
        Case {
            what: "a 10-digit suffix too; the name may contain dashes and digits",
            name: None,
            generate_name: Some("x-"),
            labels: &[],
            owners: vec![owner("Job", "batch/v1", "db-2-backup-2876543012", true)],
            want: ("db-2-backup", "CronJob", "batch/v1"),
            owner_uri: Some("kubernetes://apis/batch/v1/namespaces/shop/cronjobs/db-2-backup"),
        },
        Case {
            what: "a 7-digit suffix is a plain Job",
            name: None,
            generate_name: Some("x-"),
            labels: &[],
            owners: vec![owner("Job", "batch/v1", "migrate-1234567", true)],
            want: ("migrate-1234567", "Job", "batch/v1"),
            owner_uri: Some("kubernetes://apis/batch/v1/namespaces/shop/jobs/migrate-1234567"),
        },
        Case {
            what: "an 11-digit suffix is a plain Job",
            name: None,
            generate_name: Some("x-"),
            labels: &[],
            owners: vec![owner("Job", "batch/v1", "migrate-12345678901", true)],
            want: ("migrate-12345678901", "Job", "batch/v1"),
            owner_uri: Some("kubernetes://apis/batch/v1/namespaces/shop/jobs/migrate-12345678901"),
        },
        Case {
            what: "StatefulSet pods have a name and a generateName",
            name: Some("web-0"),
            generate_name: Some("web-"),
            labels: &[],
            owners: vec![owner("StatefulSet", "apps/v1", "web", true)],
            want: ("web", "StatefulSet", "apps/v1"),
            owner_uri: Some("kubernetes://apis/apps/v1/namespaces/shop/statefulsets/web"),
        },
        Case {
            what: "only the controlling reference counts",
            name: None,
            generate_name: Some("ds-"),
            labels: &[],
            owners: vec![
                owner("Node", "v1", "node-1", false),
                owner("DaemonSet", "apps/v1", "agent", true),
            ],
            want: ("agent", "DaemonSet", "apps/v1"),
            owner_uri: Some("kubernetes://apis/apps/v1/namespaces/shop/daemonsets/agent"),
        },
        Case {
            what: "without generateName the pod is its own workload",
            name: Some("standalone"),
            generate_name: None,
            labels: &[],
            owners: vec![owner("ReplicaSet", "apps/v1", "hello-5d8f9c7b6d", true)],
            want: ("standalone", "Pod", "v1"),
            owner_uri: Some("kubernetes://apis/v1/namespaces/shop/pods/standalone"),
        },
        Case {
            what: "generateName without a controller: no name yet, so no owner",
            name: None,
            generate_name: Some("batch-run-"),
            labels: &[],
            owners: vec![owner("ConfigMap", "v1", "cm", false)],
            want: ("", "Pod", "v1"),
            owner_uri: None,
        },
    ];
    for case in cases {
        let meta = ObjectMeta {
            name: case.name.map(str::to_owned),
            generate_name: case.generate_name.map(str::to_owned),
            namespace: Some("shop".to_owned()),
            labels: Some(map(case.labels)),
            owner_references: Some(case.owners),
            ..ObjectMeta::default()
        };
        let w = workload(&meta, "ignored");
        assert_eq!(
            (w.name.as_str(), w.kind.as_str(), w.api_version.as_str()),
            case.want,
            "{}",
            case.what
        );
        assert_eq!(w.owner_uri().as_deref(), case.owner_uri, "{}", case.what);
    }
}

#[test]
fn workload_namespace_and_display_name() {
    let meta = ObjectMeta {
        generate_name: Some("batch-run-".to_owned()),
        ..ObjectMeta::default()
    };
    // The request's namespace when the pod has none; `default` when neither has one.
    assert_eq!(workload(&meta, "jobs").namespace, "jobs");
    assert_eq!(workload(&meta, "").namespace, "default");
    let with_ns = ObjectMeta {
        namespace: Some("own".to_owned()),
        ..meta.clone()
    };
    assert_eq!(workload(&with_ns, "jobs").namespace, "own");
    let empty_ns = ObjectMeta {
        namespace: Some(String::new()),
        ..meta.clone()
    };
    assert_eq!(workload(&empty_ns, "jobs").namespace, "jobs");
    // Skiff: the generateName (without its dash) names such a pod's workload.
    assert_eq!(workload(&meta, "jobs").display_name(), "batch-run");
    let s = build_for(&InjectionConfig::default(), &meta, &PodSpec::default()).expect("injects");
    assert_eq!(
        env_value(&s.proxy, "ISTIO_META_WORKLOAD_NAME").as_deref(),
        Some("batch-run")
    );
    assert_eq!(env_value(&s.proxy, "ISTIO_META_OWNER"), None);
    assert_eq!(
        s.labels.get(CANONICAL_NAME_LABEL).map(String::as_str),
        Some("batch-run")
    );
}

fn hello() -> Workload {
    let (meta, _) = hello_pod(&[]);
    workload(&meta, "default")
}

#[test]
fn canonical_name_chain() {
    let cases: [(&[(&str, &str)], &str); 7] = [
        (&[(CANONICAL_NAME_LABEL, "given")], "given"),
        (
            &[("app.kubernetes.io/name", "k8s-name"), ("app", "app-label")],
            "k8s-name",
        ),
        (&[("app", "app-label")], "app-label"),
        // Empty values are skipped, as Go templates' `default` does.
        (
            &[
                (CANONICAL_NAME_LABEL, ""),
                ("app.kubernetes.io/name", ""),
                ("app", "app-label"),
            ],
            "app-label",
        ),
        (&[("app", "")], "hello"),
        (&[], "hello"),
        (&[("version", "v1")], "hello"),
    ];
    for (labels, want) in cases {
        assert_eq!(canonical_name(&map(labels), &hello()), want, "{labels:?}");
    }
}

#[test]
fn canonical_name_is_cut_to_a_label_value() {
    let mut w = hello();
    // 70 characters: cut to 63.
    w.name = "a".repeat(70);
    assert_eq!(canonical_name(&map(&[]), &w), "a".repeat(63));
    // The cut ends on '-': Istio's trimAll "-_." removes it (and any '.', '_').
    w.name = format!("{}-._{}", "b".repeat(60), "c".repeat(10));
    assert_eq!(canonical_name(&map(&[]), &w), "b".repeat(60));
    // Leading separators are trimmed too.
    w.name = "-_.svc".to_owned();
    assert_eq!(canonical_name(&map(&[]), &w), "svc");
}

#[test]
fn canonical_revision_chain() {
    let cases: [(&[(&str, &str)], &str); 6] = [
        (&[(CANONICAL_REVISION_LABEL, "r1"), ("version", "v2")], "r1"),
        (
            &[("app.kubernetes.io/version", "1.2.3"), ("version", "v2")],
            "1.2.3",
        ),
        (&[("version", "v2")], "v2"),
        (&[(CANONICAL_REVISION_LABEL, ""), ("version", "v3")], "v3"),
        (&[("version", "")], "latest"),
        (&[], "latest"),
    ];
    for (labels, want) in cases {
        assert_eq!(canonical_revision(&map(labels)), want, "{labels:?}");
    }
}

#[test]
fn labels_to_add() {
    // The hello pod: app=hello, no version.
    let s = inject(&[]);
    assert_eq!(
        s.labels,
        map(&[
            (TLS_MODE_LABEL, "istio"),
            (CANONICAL_NAME_LABEL, "hello"),
            (CANONICAL_REVISION_LABEL, "latest"),
        ])
    );
    // Existing non-empty labels are kept, so they are not listed; an empty one is set.
    let (mut meta, spec) = hello_pod(&[]);
    let labels = meta.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(TLS_MODE_LABEL.to_owned(), "disabled".to_owned());
    labels.insert(CANONICAL_NAME_LABEL.to_owned(), String::new());
    labels.insert(CANONICAL_REVISION_LABEL.to_owned(), "v7".to_owned());
    let s = build_for(&InjectionConfig::default(), &meta, &spec).expect("injects");
    assert_eq!(s.labels, map(&[(CANONICAL_NAME_LABEL, "hello")]));
}

#[test]
fn annotations_to_add() {
    let s = inject(&[]);
    assert_eq!(
        s.annotations,
        map(&[
            (REVISION_ANNOTATION, "default"),
            (DEFAULT_CONTAINER_ANNOTATION, "hello"),
            (DEFAULT_LOGS_CONTAINER_ANNOTATION, "hello"),
        ])
    );
    // A present annotation (even empty) is respected; the other is still added.
    let s = inject(&[(DEFAULT_CONTAINER_ANNOTATION, "")]);
    assert_eq!(
        s.annotations,
        map(&[
            (REVISION_ANNOTATION, "default"),
            (DEFAULT_LOGS_CONTAINER_ANNOTATION, "hello"),
        ])
    );
    // The configured revision; no app container, no default-container annotations.
    let config = InjectionConfig {
        revision: "canary".to_owned(),
        ..InjectionConfig::default()
    };
    let s = build_for(&config, &ObjectMeta::default(), &PodSpec::default()).expect("injects");
    assert_eq!(s.annotations, map(&[(REVISION_ANNOTATION, "canary")]));
}
