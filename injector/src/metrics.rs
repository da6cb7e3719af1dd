//! The webhook's Prometheus metrics. The counters keep Istio's names
//! (`sidecar_injection_{requests,success,skip,failure}_total`) so existing dashboards and
//! alerts work; latency and config reloads are Skiff's additions.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::admission::Decision;
use crate::policy::SkipReason;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Counter,
    pub injections: Counter,
    pub skips: Family<ReasonLabel, Counter>,
    pub failures: Family<ReasonLabel, Counter>,
    pub latency: Histogram,
    pub config_reloads: Counter,
    pub config_reload_failures: Counter,
    pub cert_reloads: Counter,
    pub cert_reload_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Counter::default();
        let injections = Counter::default();
        let skips = Family::<ReasonLabel, Counter>::default();
        let failures = Family::<ReasonLabel, Counter>::default();
        // 100 µs to ~3 s: a review takes around a millisecond; the API server gives up at 10 s.
        let latency = Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
            0.0001, 2.0, 16,
        ));
        let config_reloads = Counter::default();
        let config_reload_failures = Counter::default();
        let cert_reloads = Counter::default();
        let cert_reload_failures = Counter::default();
        registry.register(
            "sidecar_injection_requests",
            "Admission reviews received",
            requests.clone(),
        );
        registry.register(
            "sidecar_injection_success",
            "Pods injected",
            injections.clone(),
        );
        registry.register(
            "sidecar_injection_skip",
            "Pods left alone, by reason",
            skips.clone(),
        );
        registry.register(
            "sidecar_injection_failure",
            "Reviews answered with allowed=false or an HTTP error, by reason",
            failures.clone(),
        );
        registry.register(
            "skiff_injector_review_duration_seconds",
            "Time to answer a review",
            latency.clone(),
        );
        registry.register(
            "skiff_injector_config_reloads",
            "Injection config files loaded after a change",
            config_reloads.clone(),
        );
        registry.register(
            "skiff_injector_config_reload_failures",
            "Changed injection config files that were rejected (the last good one stays)",
            config_reload_failures.clone(),
        );
        registry.register(
            "skiff_injector_cert_reloads",
            "Serving certificates loaded after a change",
            cert_reloads.clone(),
        );
        registry.register(
            "skiff_injector_cert_reload_failures",
            "Changed certificate files that could not be loaded (the last good one stays)",
            cert_reload_failures.clone(),
        );
        Metrics {
            registry,
            requests,
            injections,
            skips,
            failures,
            latency,
            config_reloads,
            config_reload_failures,
            cert_reloads,
            cert_reload_failures,
        }
    }

    /// Counts one answered review.
    pub fn record(&self, decision: &Decision, seconds: f64) {
        self.requests.inc();
        self.latency.observe(seconds);
        match decision {
            Decision::Injected => {
                self.injections.inc();
            }
            Decision::Skipped { code, .. } => {
                self.skips
                    .get_or_create(&ReasonLabel { reason: code })
                    .inc();
            }
            Decision::Denied(_) => {
                self.failures
                    .get_or_create(&ReasonLabel { reason: "denied" })
                    .inc();
            }
            Decision::BadRequest(_) => {
                self.failures
                    .get_or_create(&ReasonLabel {
                        reason: "bad_request",
                    })
                    .inc();
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A short, stable label value for each skip reason (metric labels must not carry pod names).
pub fn skip_code(reason: &SkipReason) -> &'static str {
    match reason {
        SkipReason::HostNetwork => "host_network",
        SkipReason::SystemNamespace { .. } => "system_namespace",
        SkipReason::OptedOut(_) => "opted_out",
        SkipReason::NeverInjectSelector { .. } => "never_inject_selector",
        SkipReason::PolicyDisabled => "policy_disabled",
        SkipReason::NamespaceInjectionNotEnabled { .. }
        | SkipReason::NamespaceLabelOfDefaultRevision { .. }
        | SkipReason::NamespaceOtherRevision { .. }
        | SkipReason::PodOtherRevision { .. }
        | SkipReason::NotOptedIn { .. } => "not_selected",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_use_istios_names_and_reason_labels() {
        let m = Metrics::new();
        m.record(&Decision::Injected, 0.001);
        m.record(
            &Decision::Skipped {
                reason: "pod has hostNetwork: true".into(),
                code: "host_network",
            },
            0.001,
        );
        m.record(&Decision::Denied("bad".into()), 0.001);
        let text = m.encode();
        assert!(
            text.contains("sidecar_injection_requests_total 3"),
            "{text}"
        );
        assert!(text.contains("sidecar_injection_success_total 1"), "{text}");
        assert!(
            text.contains("sidecar_injection_skip_total{reason=\"host_network\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sidecar_injection_failure_total{reason=\"denied\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("skiff_injector_review_duration_seconds_count 3"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
