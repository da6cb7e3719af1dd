//! Volumes and mounts: names, sources and paths from spec section 2 ("Volumes (and mount
//! paths)") in the order of Istio's template, plus the annotations that add to them.

use k8s_openapi::api::core::v1::{Volume, VolumeMount};

use super::*;

fn volume_names(s: &Sidecar) -> Vec<String> {
    s.volumes.iter().map(|v| v.name.clone()).collect()
}

fn mounts(s: &Sidecar) -> Vec<(String, String)> {
    s.proxy
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.clone(), m.mount_path.clone()))
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

fn by_name<'a>(s: &'a Sidecar, name: &str) -> &'a Volume {
    s.volumes
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("volume {name}"))
}

#[test]
fn default_volumes_and_mounts() {
    let s = inject(&[]);
    assert_eq!(
        volume_names(&s),
        strings(&[
            "workload-socket",
            "credential-socket",
            "workload-certs",
            "istio-envoy",
            "istio-data",
            "istio-podinfo",
            "istio-token",
            "istiod-ca-cert",
            "istio-ca-crl",
        ])
    );
    for name in [
        "workload-socket",
        "credential-socket",
        "workload-certs",
        "istio-data",
    ] {
        let dir = by_name(&s, name).empty_dir.clone().expect(name);
        assert_eq!(dir.medium, None, "{name}");
    }
    let envoy = by_name(&s, "istio-envoy")
        .empty_dir
        .clone()
        .expect("emptyDir");
    assert_eq!(envoy.medium.as_deref(), Some("Memory"));

    let podinfo = by_name(&s, "istio-podinfo")
        .downward_api
        .clone()
        .expect("downwardAPI");
    let items: Vec<(String, String)> = podinfo
        .items
        .unwrap_or_default()
        .into_iter()
        .map(|i| {
            (
                i.path,
                i.field_ref.map(|f| f.field_path).unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        items,
        pairs(&[
            ("labels", "metadata.labels"),
            ("annotations", "metadata.annotations")
        ])
    );

    let token = by_name(&s, "istio-token")
        .projected
        .clone()
        .and_then(|p| p.sources)
        .expect("projected");
    assert_eq!(token.len(), 1);
    let sa = token[0].service_account_token.clone().expect("token");
    assert_eq!(sa.audience.as_deref(), Some("istio-ca"));
    assert_eq!(sa.expiration_seconds, Some(43200));
    assert_eq!(sa.path, "istio-token");

    let ca = by_name(&s, "istiod-ca-cert")
        .config_map
        .clone()
        .expect("cm");
    assert_eq!(ca.name, "istio-ca-root-cert");
    assert_eq!(ca.optional, None);
    let crl = by_name(&s, "istio-ca-crl").config_map.clone().expect("cm");
    assert_eq!(crl.name, "istio-ca-crl");
    assert_eq!(crl.optional, Some(true));

    assert_eq!(
        mounts(&s),
        pairs(&[
            ("workload-socket", "/var/run/secrets/workload-spiffe-uds"),
            ("credential-socket", "/var/run/secrets/credential-uds"),
            (
                "workload-certs",
                "/var/run/secrets/workload-spiffe-credentials"
            ),
            ("istiod-ca-cert", "/var/run/secrets/istio"),
            ("istio-ca-crl", "/var/run/secrets/istio/crl"),
            ("istio-data", "/var/lib/istio/data"),
            ("istio-envoy", "/etc/istio/proxy"),
            ("istio-token", "/var/run/secrets/tokens"),
            ("istio-podinfo", "/etc/istio/pod"),
        ])
    );
    // The init container mounts nothing.
    assert_eq!(s.init_container.and_then(|c| c.volume_mounts), None);
}

#[test]
fn bootstrap_override_adds_a_configmap_volume() {
    let s = inject(&[(key::BOOTSTRAP_OVERRIDE, "my-bootstrap")]);
    let names = volume_names(&s);
    // After workload-certs, before istio-envoy (Istio's template order).
    assert_eq!(names[3], "custom-bootstrap-volume");
    assert_eq!(names[4], "istio-envoy");
    let cm = by_name(&s, "custom-bootstrap-volume")
        .config_map
        .clone()
        .expect("cm");
    assert_eq!(cm.name, "my-bootstrap");
    let m = mounts(&s);
    let at = m
        .iter()
        .position(|(n, _)| n == "custom-bootstrap-volume")
        .expect("mounted");
    assert_eq!(m[at].1, "/etc/istio/custom-bootstrap");
    assert_eq!(m[at - 1].0, "istio-data");
    assert_eq!(m[at + 1].0, "istio-envoy");
}

#[test]
fn user_volumes_and_mounts_are_appended() {
    let s = inject(&[
        (
            key::USER_VOLUME,
            r#"{"zdata": {"emptyDir": {"sizeLimit": "1Gi"}}, "certs": {"secret": {"secretName": "my-certs"}}}"#,
        ),
        (
            key::USER_VOLUME_MOUNT,
            r#"{"certs": {"mountPath": "/etc/my-certs", "readOnly": true}}"#,
        ),
    ]);
    let names = volume_names(&s);
    // Ordered by name, after the injected ones.
    assert_eq!(&names[names.len() - 2..], &strings(&["certs", "zdata"]));
    let certs = by_name(&s, "certs").secret.clone().expect("secret");
    assert_eq!(certs.secret_name.as_deref(), Some("my-certs"));
    let zdata = by_name(&s, "zdata").empty_dir.clone().expect("emptyDir");
    assert_eq!(zdata.size_limit, Some(K8sQuantity("1Gi".to_owned())));
    let last = s
        .proxy
        .volume_mounts
        .clone()
        .and_then(|m| m.last().cloned())
        .expect("mount");
    assert_eq!(
        last,
        VolumeMount {
            name: "certs".to_owned(),
            mount_path: "/etc/my-certs".to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        }
    );
}

#[test]
fn bad_user_volumes_are_refused_naming_the_entry() {
    let cases = [
        (
            key::USER_VOLUME,
            r#"{"data": {"emptyDirr": {}}}"#,
            "data",
            "emptyDirr is not a field",
        ),
        (
            key::USER_VOLUME,
            r#"{"data": {"configMap": {"nmae": "x"}}}"#,
            "data",
            "configMap.nmae is not a field",
        ),
        (
            key::USER_VOLUME,
            r#"{"data": {"emptyDir": {"medium": 5}}}"#,
            "data",
            "is not a Kubernetes Volume",
        ),
        (
            key::USER_VOLUME,
            r#"{"istio-envoy": {"emptyDir": {}}}"#,
            "istio-envoy",
            "name of a volume injection adds",
        ),
        (
            key::USER_VOLUME,
            r#"{"data": {}}"#,
            "data",
            "has no volume source",
        ),
        (
            key::USER_VOLUME_MOUNT,
            r#"{"data": {"readOnly": true}}"#,
            "data",
            "has no mountPath",
        ),
        (
            key::USER_VOLUME_MOUNT,
            r#"{"data": {"mountPath": 7}}"#,
            "data",
            "is not a Kubernetes VolumeMount",
        ),
        (
            key::USER_VOLUME_MOUNT,
            r#"{"data": {"mountPath": "/etc/istio/proxy/"}}"#,
            "data",
            "already used by the proxy",
        ),
    ];
    for (annotation, value, entry, fragment) in cases {
        let e = inject_err(&[(annotation, value)]);
        match &e {
            SidecarError::UserVolume { key, name, .. } => {
                assert_eq!(key, annotation, "{value}");
                assert_eq!(name, entry, "{value}");
            }
            other => panic!("{value}: expected UserVolume, got {other:?}"),
        }
        let message = e.to_string();
        assert!(
            message.starts_with(&format!("annotation {annotation}: entry {entry:?}: ")),
            "{message}"
        );
        assert!(message.contains(fragment), "{value}: {message}");
    }
}
