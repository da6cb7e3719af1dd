//! Images, the pod-level switches and the pod's ProxyConfig, as [`Settings::resolve`]
//! merges them (spec section 3: the pod's annotation wins over the config).

use super::*;

#[test]
fn images_pull_policy_and_secrets() {
    let config = InjectionConfig {
        proxy_image: "registry.example/mesh/proxy:2.0-distroless".to_owned(),
        init_image: "registry.example:5000/init".to_owned(),
        image_pull_policy: Some(crate::config::ImagePullPolicy::IfNotPresent),
        image_pull_secrets: strings(&["regcred"]),
        ..InjectionConfig::default()
    };
    let s = inject_with(&config, &[]);
    assert_eq!(
        s.proxy.image.as_deref(),
        Some("registry.example/mesh/proxy:2.0-distroless")
    );
    assert_eq!(s.proxy.image_pull_policy.as_deref(), Some("IfNotPresent"));
    let init = s.init_container.clone().expect("init");
    assert_eq!(init.image_pull_policy.as_deref(), Some("IfNotPresent"));
    assert_eq!(
        s.image_pull_secrets,
        vec![LocalObjectReference {
            name: "regcred".to_owned()
        }]
    );

    // proxyImageType replaces a known suffix (Istio's updateImageTypeIfPresent); an image
    // without a tag is `latest`; a registry port is not a tag.
    let cases = [
        (
            "debug",
            "registry.example/mesh/proxy:2.0-debug",
            "registry.example:5000/init:latest-debug",
        ),
        (
            "distroless",
            "registry.example/mesh/proxy:2.0-distroless",
            "registry.example:5000/init:latest-distroless",
        ),
        (
            "default",
            "registry.example/mesh/proxy:2.0",
            "registry.example:5000/init:latest",
        ),
    ];
    for (image_type, proxy, init) in cases {
        let s = inject_with(&config, &[(key::PROXY_IMAGE_TYPE, image_type)]);
        assert_eq!(s.proxy.image.as_deref(), Some(proxy), "{image_type}");
        assert_eq!(
            s.init_container.and_then(|c| c.image).as_deref(),
            Some(init)
        );
    }

    // proxyImage names both images and wins over the type.
    let s = inject(&[
        (key::PROXY_IMAGE, "my.registry/skiff/all-in-one:7"),
        (key::PROXY_IMAGE_TYPE, "debug"),
    ]);
    assert_eq!(
        s.proxy.image.as_deref(),
        Some("my.registry/skiff/all-in-one:7")
    );
    assert_eq!(
        s.init_container.and_then(|c| c.image).as_deref(),
        Some("my.registry/skiff/all-in-one:7")
    );

    // A digest cannot take a suffix.
    let pinned = InjectionConfig {
        proxy_image: "r.example/p@sha256:0123".to_owned(),
        ..InjectionConfig::default()
    };
    let (meta, spec) = hello_pod(&[(key::PROXY_IMAGE_TYPE, "debug")]);
    let e = build_for(&pinned, &meta, &spec).expect_err("digest");
    assert!(matches!(e, SidecarError::ImageType { .. }), "{e:?}");
    assert!(
        e.to_string().contains("sidecar.istio.io/proxyImageType"),
        "{e}"
    );
}

#[test]
fn settings_carry_the_pod_level_switches() {
    let s = settings(&[]);
    assert!(s.rewrite_app_probes && s.prometheus_merge && !s.cap_net_bind_service);
    let s = settings(&[
        (key::REWRITE_APP_HTTP_PROBERS, "false"),
        (key::MERGE_METRICS, "f"),
    ]);
    assert!(!s.rewrite_app_probes && !s.prometheus_merge);
    let config = InjectionConfig {
        rewrite_app_probes: false,
        enable_prometheus_merge: false,
        ..InjectionConfig::default()
    };
    let s = settings_with(&config, &[(key::REWRITE_APP_HTTP_PROBERS, "true")]);
    assert!(s.rewrite_app_probes && !s.prometheus_merge);
}

#[test]
fn bad_proxy_config_fields_are_refused() {
    let cases = [
        (
            "holdApplicationUntilProxyStarts: yes-please",
            "holdApplicationUntilProxyStarts",
        ),
        ("interceptionMode: redirect", "interceptionMode"),
        ("statusPort: 70000", "statusPort"),
        ("statusPort: -1", "statusPort"),
        ("statusPort: \"http\"", "statusPort"),
        ("proxyMetadata: [a]", "proxyMetadata"),
        ("proxyMetadata: {A: 1}", "proxyMetadata.A"),
        ("proxyMetadata: {\"1A\": x}", "proxyMetadata.1A"),
    ];
    for (value, field) in cases {
        let e = inject_err(&[(key::PROXY_CONFIG, value)]);
        match &e {
            SidecarError::ProxyConfig { field: got, .. } => assert_eq!(got, field, "{value}"),
            other => panic!("{value}: expected ProxyConfig, got {other:?}"),
        }
        assert!(
            e.to_string().starts_with(&format!(
                "annotation proxy.istio.io/config: field {field}: "
            )),
            "{e}"
        );
    }
}
