//! The round-trip property `unmerge(merge(x)) == x` over generated annotation maps, plus:
//! a refused map is left unchanged.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::prometheus::{merge, unmerge};

/// One annotation: a spelling of one setting with a value that fits it most of the time.
fn arb_entry() -> impl Strategy<Value = (String, String)> {
    fn pick(options: &'static [&'static str]) -> impl Strategy<Value = String> {
        prop::sample::select(options).prop_map(str::to_owned)
    }
    prop_oneof![
        (
            pick(&["prometheus.io/scrape", "prometheus_io_scrape"]),
            pick(&["true", "true", "1", "", "false", "False", "yes"]),
        ),
        (
            pick(&["prometheus.io/port", "prometheus-io.port"]),
            pick(&["8080", "9102", "08080", "", "15020", "15000", "http"]),
        ),
        (
            pick(&["prometheus.io/path", "prometheus_io/path"]),
            pick(&["/metrics", "/stats/prometheus", "", "/a&b"]),
        ),
        (
            pick(&[
                "prometheus.istio.io/scrape-targets",
                "prometheus_istio_io_scrape-targets",
            ]),
            pick(&[
                "8080:/metrics,9100",
                " 9100 : /x , ",
                "9100:/metrics",
                "",
                ":/m",
                "15090"
            ]),
        ),
        (
            pick(&[
                "prometheus.istio.io/merge-metrics",
                "Prometheus.io/port",
                "app"
            ]),
            pick(&["true", "15020", "web"]),
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// unmerge(merge(x)) == x for every map that merge accepts; merge never panics and
    /// leaves a refused map unchanged.
    #[test]
    fn unmerge_inverts_merge(
        before in prop::collection::vec(arb_entry(), 0..5)
            .prop_map(|entries| entries.into_iter().collect::<BTreeMap<_, _>>()),
        status_port in prop_oneof![4 => Just(15020u16), 1 => Just(16000u16), 1 => Just(0u16)],
    ) {
        let mut got = before.clone();
        match merge(&mut got, status_port) {
            Ok(json) => {
                unmerge(&mut got, json.as_deref(), status_port).expect("unmerge of merge's JSON");
                prop_assert_eq!(got, before);
            }
            Err(_) => prop_assert_eq!(got, before),
        }
    }
}
