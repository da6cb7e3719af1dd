//! Expected values come from Istio's webhook (`applyPrometheusMerge`,
//! `getPrometheusScrapeConfiguration`, `clearPrometheusAnnotations`) and agent
//! (`PrometheusScrapeConfiguration`, `ParseScrapeTargets`, `istioReservedPorts`), from
//! Istio's golden file testdata/inject/hello-multiport-metrics.yaml(.injected), from
//! spec/injector.md sections 2 and 3, and from the rules in the module documentation. None of
//! them was produced by running this code.

use super::*;

mod property;

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// What every merged pod carries for status port 15020, plus `other`.
fn merged_with(other: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut out = map(other);
    out.extend(map(&[
        ("prometheus.io/port", "15020"),
        ("prometheus.io/path", "/stats/prometheus"),
        ("prometheus.io/scrape", "true"),
    ]));
    out
}

struct Case {
    name: &'static str,
    before: BTreeMap<String, String>,
    status_port: u16,
    after: BTreeMap<String, String>,
    json: Option<&'static str>,
}

#[test]
fn merge_table() {
    let other = ("app", "web");
    let cases = vec![
        Case {
            name: "the usual three: Istio's shape, fields in Go's order scrape, path, port",
            before: map(&[
                other,
                ("prometheus.io/scrape", "true"),
                ("prometheus.io/port", "8080"),
                ("prometheus.io/path", "/metrics"),
            ]),
            status_port: 15020,
            after: merged_with(&[other]),
            json: Some(r#"{"scrape":"true","path":"/metrics","port":"8080"}"#),
        },
        Case {
            name: "absent settings are empty strings, as Go writes them",
            before: map(&[("prometheus.io/port", "9102")]),
            status_port: 15020,
            after: merged_with(&[]),
            json: Some(r#"{"scrape":"","path":"","port":"9102"}"#),
        },
        Case {
            name: "no prometheus annotations: merged annotations, no variable (Istio's IsEmpty)",
            before: map(&[other]),
            status_port: 15020,
            after: merged_with(&[other]),
            json: None,
        },
        Case {
            name: "scrape false: left alone",
            before: map(&[
                ("prometheus.io/scrape", "false"),
                ("prometheus.io/port", "8080"),
            ]),
            status_port: 15020,
            after: map(&[
                ("prometheus.io/scrape", "false"),
                ("prometheus.io/port", "8080"),
            ]),
            json: None,
        },
        Case {
            name: "scrape 0 is false for Go's ParseBool; the port is not even checked",
            before: map(&[
                ("prometheus.io/scrape", "0"),
                ("prometheus.io/port", "15000"),
            ]),
            status_port: 15020,
            after: map(&[
                ("prometheus.io/scrape", "0"),
                ("prometheus.io/port", "15000"),
            ]),
            json: None,
        },
        Case {
            name: "scrape False via another spelling of the key",
            before: map(&[("prometheus_io_scrape", "False")]),
            status_port: 15020,
            after: map(&[("prometheus_io_scrape", "False")]),
            json: None,
        },
        Case {
            name: "scrape T is true",
            before: map(&[("prometheus.io/scrape", "T")]),
            status_port: 15020,
            after: merged_with(&[]),
            json: Some(r#"{"scrape":"T","path":"","port":""}"#),
        },
        Case {
            name: "status port other than 15020",
            before: map(&[
                ("prometheus.io/scrape", "true"),
                ("prometheus.io/port", "8080"),
            ]),
            status_port: 16000,
            after: map(&[
                ("prometheus.io/port", "16000"),
                ("prometheus.io/path", "/stats/prometheus"),
                ("prometheus.io/scrape", "true"),
            ]),
            json: Some(r#"{"scrape":"true","path":"","port":"8080"}"#),
        },
        Case {
            name: "status port 0: no endpoint to merge into",
            before: map(&[("prometheus.io/port", "8080")]),
            status_port: 0,
            after: map(&[("prometheus.io/port", "8080")]),
            json: None,
        },
        Case {
            name: "Istio's hello-multiport-metrics golden file",
            before: map(&[
                ("prometheus.io/scrape", "true"),
                (
                    "prometheus.istio.io/scrape-targets",
                    "8080:/metrics,9100:/custom-metrics",
                ),
            ]),
            status_port: 15020,
            after: merged_with(&[]),
            json: Some(concat!(
                r#"{"scrape":"true","path":"/metrics","port":"8080","targets":"#,
                r#"[{"port":"8080","path":"/metrics"},{"port":"9100","path":"/custom-metrics"}]}"#
            )),
        },
        Case {
            name: "scrape-targets written loosely: whitespace, default path; Skiff keeps the text",
            before: map(&[(
                "prometheus.istio.io/scrape-targets",
                " 8080 , 9100: /custom ,",
            )]),
            status_port: 15020,
            after: merged_with(&[]),
            json: Some(concat!(
                r#"{"scrape":"","path":"/metrics","port":"8080","targets":"#,
                r#"[{"port":"8080","path":"/metrics"},{"port":"9100","path":"/custom"}],"#,
                r#""skiffAnnotations":{"prometheus.istio.io/scrape-targets":" 8080 , 9100: /custom ,"}}"#
            )),
        },
        Case {
            name: "legacy port and path next to scrape-targets: the first target wins in the Istio fields",
            before: map(&[
                ("prometheus.io/port", "8080"),
                ("prometheus.io/path", "/health"),
                ("prometheus.istio.io/scrape-targets", "9100:/m"),
            ]),
            status_port: 15020,
            after: merged_with(&[]),
            json: Some(concat!(
                r#"{"scrape":"","path":"/m","port":"9100","targets":[{"port":"9100","path":"/m"}],"#,
                r#""skiffAnnotations":{"prometheus.io/path":"/health","prometheus.io/port":"8080","#,
                r#""prometheus.istio.io/scrape-targets":"9100:/m"}}"#
            )),
        },
        Case {
            name: "sanitized spellings are read and all removed; Skiff keeps the spellings",
            before: map(&[
                ("prometheus_io_port", "8080"),
                ("prometheus.io.path", "/m"),
                ("prometheus-io/scrape", "true"),
            ]),
            status_port: 15020,
            after: merged_with(&[]),
            json: Some(concat!(
                r#"{"scrape":"true","path":"/m","port":"8080","skiffAnnotations":"#,
                r#"{"prometheus-io/scrape":"true","prometheus.io.path":"/m","prometheus_io_port":"8080"}}"#
            )),
        },
        Case {
            name: "two spellings with the same value agree",
            before: map(&[
                ("prometheus.io/port", "8080"),
                ("prometheus_io_port", "8080"),
            ]),
            status_port: 15020,
            after: merged_with(&[]),
            json: Some(concat!(
                r#"{"scrape":"","path":"","port":"8080","skiffAnnotations":"#,
                r#"{"prometheus.io/port":"8080","prometheus_io_port":"8080"}}"#
            )),
        },
        Case {
            name: "case matters: Prometheus.io/port is not read",
            before: map(&[("Prometheus.io/port", "15000")]),
            status_port: 15020,
            after: merged_with(&[("Prometheus.io/port", "15000")]),
            json: None,
        },
        Case {
            name: "an empty value is the same as none but is kept for uninject",
            before: map(&[("prometheus.io/path", "")]),
            status_port: 15020,
            after: merged_with(&[]),
            json: Some(
                r#"{"scrape":"","path":"","port":"","skiffAnnotations":{"prometheus.io/path":""}}"#,
            ),
        },
        Case {
            name: "other prometheus.istio.io annotations are not ours",
            before: map(&[
                ("prometheus.istio.io/merge-metrics", "true"),
                ("prometheus.istio.io/secure-port", "15092"),
            ]),
            status_port: 15020,
            after: merged_with(&[
                ("prometheus.istio.io/merge-metrics", "true"),
                ("prometheus.istio.io/secure-port", "15092"),
            ]),
            json: None,
        },
        Case {
            name: "a leading zero is a port number",
            before: map(&[("prometheus.io/port", "08080")]),
            status_port: 15020,
            after: merged_with(&[]),
            json: Some(r#"{"scrape":"","path":"","port":"08080"}"#),
        },
        Case {
            name: "Go's HTML escaping",
            before: map(&[("prometheus.io/path", "/m?a=1&b=<2>")]),
            status_port: 15020,
            after: merged_with(&[]),
            json: Some(r#"{"scrape":"","path":"/m?a=1\u0026b=\u003c2\u003e","port":""}"#),
        },
    ];
    for case in cases {
        let mut got = case.before.clone();
        let json = merge(&mut got, case.status_port)
            .unwrap_or_else(|e| panic!("{}: merge failed: {e}", case.name));
        assert_eq!(json.as_deref(), case.json, "{}", case.name);
        assert_eq!(got, case.after, "{}", case.name);
        unmerge(&mut got, json.as_deref(), case.status_port)
            .unwrap_or_else(|e| panic!("{}: unmerge failed: {e}", case.name));
        assert_eq!(got, case.before, "{}: round trip", case.name);
    }
}

#[test]
fn merge_errors_name_the_annotation_and_value() {
    let cases: [(&[(&str, &str)], &str); 14] = [
        (
            &[("prometheus.io/port", "http")],
            "annotation prometheus.io/port: \"http\" is not a port number: use 1-65535",
        ),
        (
            &[("prometheus.io/port", "0")],
            "annotation prometheus.io/port: \"0\" is not a port number: use 1-65535",
        ),
        (
            &[("prometheus.io/port", "65536")],
            "annotation prometheus.io/port: \"65536\" is not a port number: use 1-65535",
        ),
        (
            &[("prometheus.io/port", "+8080")],
            "annotation prometheus.io/port: \"+8080\" is not a port number: use 1-65535",
        ),
        (
            &[("prometheus.io/port", " 8080")],
            "annotation prometheus.io/port: \" 8080\" is not a port number: use 1-65535",
        ),
        (
            &[("prometheus.io/port", "15020")],
            "annotation prometheus.io/port: \"15020\" is the proxy's status port, where the \
             merged metrics are served; give the port the application serves its own metrics \
             on, or turn merging off with prometheus.istio.io/merge-metrics: \"false\"",
        ),
        (
            &[("prometheus.io/port", "015020")],
            "annotation prometheus.io/port: \"015020\" is the proxy's status port",
        ),
        (
            &[("prometheus.io/port", "15000")],
            "annotation prometheus.io/port: \"15000\" is a port of the proxy (Envoy admin), not \
             of the application; give the port the application serves its metrics on",
        ),
        (
            &[("prometheus_io_port", "15090")],
            "annotation prometheus_io_port: \"15090\" is a port of the proxy (Envoy Prometheus \
             (already merged))",
        ),
        (
            &[("prometheus.io/scrape", "yes")],
            "annotation prometheus.io/scrape: \"yes\" is not a boolean: use \"true\" or \"false\"",
        ),
        (
            &[(
                "prometheus.istio.io/scrape-targets",
                "8080:/metrics,15000:/metrics",
            )],
            "annotation prometheus.istio.io/scrape-targets: \"8080:/metrics,15000:/metrics\" has \
             the entry \"15000:/metrics\", whose port \"15000\" is a port of the proxy (Envoy \
             admin)",
        ),
        (
            &[("prometheus.istio.io/scrape-targets", "15020:/metrics")],
            "annotation prometheus.istio.io/scrape-targets: \"15020:/metrics\" has the entry \
             \"15020:/metrics\", whose port \"15020\" is the proxy's status port",
        ),
        (
            &[("prometheus.istio.io/scrape-targets", ":/metrics")],
            "annotation prometheus.istio.io/scrape-targets: \":/metrics\" is not a list of \
             port:path: the entry \":/metrics\" has no port (write e.g. \
             8080:/metrics,9100:/custom)",
        ),
        (
            &[
                ("prometheus.io/port", "8080"),
                ("prometheus_io_port", "9090"),
            ],
            "annotations prometheus.io/port (\"8080\") and prometheus_io_port (\"9090\") both set \
             prometheus.io/port (Prometheus reads them as the same label), with different \
             values; keep only prometheus.io/port",
        ),
    ];
    for (pairs, message) in cases {
        let before = map(pairs);
        let mut got = before.clone();
        match merge(&mut got, 15020) {
            Ok(json) => panic!("{pairs:?} should be refused, got {json:?}"),
            Err(e) => assert!(e.to_string().starts_with(message), "{pairs:?}: {e}"),
        }
        assert_eq!(
            got, before,
            "{pairs:?}: annotations must be unchanged on error"
        );
    }
    // With the status port moved, the status port is refused, and 15020 stays reserved
    // (Istio's list does not follow the status port).
    let cases = [
        ("16000", "is the proxy's status port"),
        (
            "15020",
            "is a port of the proxy (pilot-agent status / merged Prometheus)",
        ),
    ];
    for (port, reason) in cases {
        let before = map(&[("prometheus.io/port", port)]);
        let mut got = before.clone();
        let message = format!("annotation prometheus.io/port: {port:?} {reason}");
        match merge(&mut got, 16000) {
            Ok(json) => panic!("{port} should be refused, got {json:?}"),
            Err(e) => assert!(e.to_string().starts_with(&message), "{port}: {e}"),
        }
        assert_eq!(got, before);
    }
}

#[test]
fn conflicting_scrape_spellings_are_refused_before_deciding() {
    let before = map(&[
        ("prometheus.io/scrape", "false"),
        ("prometheus_io_scrape", "true"),
    ]);
    let mut got = before.clone();
    assert!(matches!(
        merge(&mut got, 15020),
        Err(PrometheusError::Conflict {
            canonical: SCRAPE,
            ..
        })
    ));
    assert_eq!(got, before);
}

#[test]
fn long_values_are_cut_in_messages() {
    let long = "9".repeat(1000);
    let mut annotations = map(&[("prometheus.io/port", &long)]);
    let message = merge(&mut annotations, 15020)
        .expect_err("a 1000-digit port")
        .to_string();
    assert!(message.contains("... (1000 characters)"), "{message}");
    assert!(message.len() < 400, "{message}");
}

#[test]
fn sanitize_is_prometheus_label_sanitizing() {
    let cases = [
        ("prometheus.io/port", "prometheus_io_port"),
        ("prometheus-io.port", "prometheus_io_port"),
        ("Prometheus.IO/Port", "Prometheus_IO_Port"),
        ("a_b9", "a_b9"),
        ("é/x", "__x"),
        ("", ""),
    ];
    for (key, want) in cases {
        assert_eq!(sanitize_label_name(key), want, "{key}");
    }
}

#[test]
fn unmerge_of_istio_json() {
    // What Istio's own webhook writes: no skiffAnnotations, so the Istio fields are used.
    let cases = [
        (
            r#"{"scrape":"true","path":"/metrics","port":"8080"}"#,
            map(&[
                ("prometheus.io/scrape", "true"),
                ("prometheus.io/path", "/metrics"),
                ("prometheus.io/port", "8080"),
            ]),
        ),
        (
            r#"{"scrape":"","path":"","port":"9102"}"#,
            map(&[("prometheus.io/port", "9102")]),
        ),
        (
            concat!(
                r#"{"scrape":"true","path":"/metrics","port":"8080","targets":"#,
                r#"[{"port":"8080","path":"/metrics"},{"port":"9100","path":"/custom-metrics"}]}"#
            ),
            map(&[
                ("prometheus.io/scrape", "true"),
                (
                    "prometheus.istio.io/scrape-targets",
                    "8080:/metrics,9100:/custom-metrics",
                ),
            ]),
        ),
        // Unknown fields are ignored, as Go's decoder ignores them.
        (
            r#"{"port":"81","future":1}"#,
            map(&[("prometheus.io/port", "81")]),
        ),
    ];
    for (json, want) in cases {
        let mut got = merged_with(&[("app", "web")]);
        unmerge(&mut got, Some(json), 15020).expect("unmerge");
        let mut want = want;
        want.insert("app".to_owned(), "web".to_owned());
        assert_eq!(got, want, "{json}");
    }
}

#[test]
fn unmerge_without_json_removes_only_exactly_merged_values() {
    let cases = [
        (
            merged_with(&[("app", "web")]),
            15020,
            map(&[("app", "web")]),
        ),
        // Not our values: left alone.
        (
            map(&[
                ("prometheus.io/port", "15020"),
                ("prometheus.io/scrape", "true"),
            ]),
            15020,
            map(&[
                ("prometheus.io/port", "15020"),
                ("prometheus.io/scrape", "true"),
            ]),
        ),
        (
            map(&[
                ("prometheus.io/port", "15020"),
                ("prometheus.io/path", "/stats/prometheus"),
                ("prometheus.io/scrape", "false"),
            ]),
            15020,
            map(&[
                ("prometheus.io/port", "15020"),
                ("prometheus.io/path", "/stats/prometheus"),
                ("prometheus.io/scrape", "false"),
            ]),
        ),
        // Merged for another status port.
        (merged_with(&[]), 16000, merged_with(&[])),
        (merged_with(&[]), 0, merged_with(&[])),
    ];
    for (before, status_port, want) in cases {
        let mut got = before.clone();
        unmerge(&mut got, None, status_port).expect("unmerge");
        assert_eq!(got, want, "{before:?} with status port {status_port}");
    }
}

#[test]
fn unmerge_errors() {
    let cases = [
        (
            r#"{"scrape":"true","skiffAnnotations":{"app":"web"}}"#,
            "ISTIO_PROMETHEUS_ANNOTATIONS lists the annotation \"app\" under skiffAnnotations, \
             which is not a Prometheus scrape annotation",
        ),
        (
            "",
            "ISTIO_PROMETHEUS_ANNOTATIONS is not a Prometheus scrape configuration in JSON: ",
        ),
        (
            "[]",
            "ISTIO_PROMETHEUS_ANNOTATIONS is not a Prometheus scrape configuration in JSON: ",
        ),
        (
            r#"{"port":8080}"#,
            "ISTIO_PROMETHEUS_ANNOTATIONS is not a Prometheus scrape configuration in JSON: ",
        ),
    ];
    for (json, message) in cases {
        let before = merged_with(&[]);
        let mut got = before.clone();
        match unmerge(&mut got, Some(json), 15020) {
            Ok(()) => panic!("{json:?} should be refused"),
            Err(e) => assert!(e.to_string().starts_with(message), "{json:?}: {e}"),
        }
        assert_eq!(
            got, before,
            "{json:?}: annotations must be unchanged on error"
        );
    }
}

#[test]
fn reserved_ports_are_istios() {
    let ports: Vec<u16> = RESERVED_PORTS.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        ports,
        [
            15000, 15001, 15004, 15006, 15008, 15020, 15021, 15053, 15090
        ]
    );
}

/// Varied maps for the round-trip property, beyond the table above.
#[test]
fn round_trip_over_varied_maps() {
    let maps = [
        map(&[]),
        map(&[("prometheus.io/scrape", "")]),
        map(&[("prometheus.io/scrape", "1"), ("prometheus.io/path", "/x")]),
        map(&[("prometheus.istio.io/scrape-targets", "")]),
        map(&[("prometheus.istio.io/scrape-targets", ",")]),
        map(&[("prometheus_istio_io_scrape_targets", "1:/a,2")]),
        map(&[
            ("prometheus.io/port", "15020"),
            ("prometheus.io/scrape", "false"),
        ]),
        map(&[
            ("prometheus.io/port", "65535"),
            ("prometheus.io/path", "/stats/prometheus"),
            ("prometheus.io/scrape", "true"),
        ]),
        map(&[
            ("sidecar.istio.io/inject", "true"),
            ("prometheus.io.scrape", "t"),
        ]),
    ];
    for before in maps {
        let mut got = before.clone();
        let json = merge(&mut got, 15020).expect("merge");
        unmerge(&mut got, json.as_deref(), 15020).expect("unmerge");
        assert_eq!(got, before);
    }
}
