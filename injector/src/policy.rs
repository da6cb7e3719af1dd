//! Whether a pod gets a sidecar, and why not when it does not.
//!
//! Istio decides in two places, and Skiff keeps both so that namespaces and pods labelled
//! for Istio behave the same under Skiff (spec/injector.md, section 1):
//!
//! - Stage A happens in the API server, before the webhook is ever called: the
//!   MutatingWebhookConfiguration's namespace and object selectors look at labels only.
//!   [`WebhookSet`] describes those selectors as data, so the chart and the decision
//!   cannot disagree, and so `skiff-injector` can explain a pod the webhook never saw.
//! - Stage B happens inside the webhook ([`inject_required`]), in Istio's fixed order.
//!
//! Everything here is plain data in and a [`Decision`] out, with no Kubernetes types and no
//! I/O, so that the webhook, `inject` and the tests share one answer.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use thiserror::Error;

mod selector;
#[cfg(test)]
mod tests;

pub use selector::{LabelSelector, Operator, Requirement, SelectorError, SelectorProblem};

/// Label and annotation through which a pod opts in or out. The label is the current API;
/// the annotation is deprecated but still honoured, so both names are the same string.
pub const INJECT_KEY: &str = "sidecar.istio.io/inject";
/// Namespace or pod label naming the control-plane revision that should inject.
pub const REVISION_LABEL: &str = "istio.io/rev";
/// Namespace label of the default revision; only the value `enabled` turns injection on.
pub const NAMESPACE_INJECTION_LABEL: &str = "istio-injection";
/// Kubernetes' own namespaces: a sidecar there could break the cluster's control plane,
/// so Istio refuses them even when asked, and the `auto.` webhook never selects them.
pub const SYSTEM_NAMESPACES: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];
/// Set by the API server on every namespace to its name; the only way a namespace selector
/// (used by the `auto.` webhook) can refer to namespaces by name.
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Labels or annotations; ordered so that error messages and debug output are stable.
pub type Labels = BTreeMap<String, String>;

/// The parts of a Pod (or pod template) the decision depends on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFacts {
    /// `metadata.namespace`. Pods created through a namespaced API call often leave it
    /// empty, so `None` and `Some("")` both mean "the request's namespace".
    pub namespace: Option<String>,
    pub labels: Labels,
    pub annotations: Labels,
    pub host_network: bool,
}

/// The namespace as the API server's namespace selectors see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceFacts {
    pub name: String,
    pub labels: Labels,
}

/// Istio's `policy` (`global.proxy.autoInject`): what happens to a pod that made no choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum InjectionPolicy {
    #[default]
    Enabled,
    Disabled,
}

impl FromStr for InjectionPolicy {
    type Err = PolicyError;

    /// Istio turns any other string into "never inject" and only logs it; Skiff's config is
    /// typed (spec section 0), so a typo is refused when the config is loaded instead of
    /// silently switching injection off for the whole mesh.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "enabled" => Ok(Self::Enabled),
            "disabled" => Ok(Self::Disabled),
            _ => Err(PolicyError::UnknownPolicy {
                value: value.to_owned(),
            }),
        }
    }
}

impl fmt::Display for InjectionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Enabled => "enabled",
            Self::Disabled => "disabled",
        })
    }
}

/// The injection config's share of the decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyConfig {
    pub policy: InjectionPolicy,
    /// OR'ed; the first match skips. Checked before `always_inject_selector`, so never wins.
    pub never_inject_selector: Vec<LabelSelector>,
    /// OR'ed; the first match injects, even under the `disabled` policy.
    pub always_inject_selector: Vec<LabelSelector>,
}

impl PolicyConfig {
    /// What `inject` (like `istioctl kube-inject`) uses: the user asked for injection by
    /// running the command, so only opt-outs count and the cluster's selectors do not apply.
    pub fn manual() -> Self {
        Self::default()
    }

    /// Istio ignores an invalid selector at decision time with a warning per pod; checking
    /// once at load time lets the config loader say which entry is wrong and how to fix it.
    /// The decision itself still ignores invalid selectors, exactly as Istio does.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let lists = [
            ("neverInjectSelector", &self.never_inject_selector),
            ("alwaysInjectSelector", &self.always_inject_selector),
        ];
        for (name, selectors) in lists {
            for (i, selector) in selectors.iter().enumerate() {
                selector.validate().map_err(|mut e| {
                    e.field = format!("{name}[{i}].{}", e.field);
                    PolicyError::Selector(e)
                })?;
            }
        }
        Ok(())
    }
}

/// Configuration the policy cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    #[error(
        "policy: unknown value {value:?}; use \"enabled\" (inject unless the pod opts out) \
         or \"disabled\" (inject only when the pod opts in)"
    )]
    UnknownPolicy { value: String },
    #[error(transparent)]
    Selector(#[from] SelectorError),
}

/// Where a pod's explicit choice came from; reported so that users can find what to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Label,
    Annotation,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Label => "label",
            Self::Annotation => "annotation",
        })
    }
}

/// What the pod itself says through `sidecar.istio.io/inject`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExplicitChoice {
    Inject(Source),
    Skip(Source),
    /// Absent or empty: the selectors and the policy decide.
    Unset,
    /// Istio treats `yes`, `on`, `True`... like no choice at all and only warns, so pods
    /// that worked under Istio keep working; the caller should log this variant.
    Unrecognized {
        source: Source,
        value: String,
    },
}

impl fmt::Display for ExplicitChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inject(source) => write!(f, "{source} {INJECT_KEY}=true"),
            Self::Skip(source) => write!(f, "{source} {INJECT_KEY}=false"),
            Self::Unset => write!(f, "no {INJECT_KEY} label or annotation"),
            Self::Unrecognized { source, value } => write!(
                f,
                "{source} {INJECT_KEY} has the value {value:?}, but only \"true\" and \
                 \"false\" are accepted; the injection policy decides instead"
            ),
        }
    }
}

/// The label replaces the annotation whenever it is present, even with an empty value: the
/// label is the API Istio moved to, and the annotation is only looked at without it.
pub fn explicit_choice(pod: &PodFacts) -> ExplicitChoice {
    let (source, value) = match pod.labels.get(INJECT_KEY) {
        Some(value) => (Source::Label, value),
        None => match pod.annotations.get(INJECT_KEY) {
            Some(value) => (Source::Annotation, value),
            None => return ExplicitChoice::Unset,
        },
    };
    match value.as_str() {
        "true" => ExplicitChoice::Inject(source),
        "false" => ExplicitChoice::Skip(source),
        "" => ExplicitChoice::Unset,
        other => ExplicitChoice::Unrecognized {
            source,
            value: other.to_owned(),
        },
    }
}

/// The outcome. A skip is not an error: the webhook answers `allowed: true` with no patch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Inject,
    Skip(SkipReason),
}

/// Why a pod is left alone, worded for `kubectl` users and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The init container's iptables rules would land in the node's network namespace.
    HostNetwork,
    SystemNamespace {
        namespace: String,
    },
    /// From stage A as well: the label `false` keeps the API server from calling at all.
    OptedOut(Source),
    /// The index lets an operator find the entry in the config.
    NeverInjectSelector {
        index: usize,
    },
    PolicyDisabled,
    /// Stage A from here on: the API server never calls the webhook for these pods, so
    /// these reasons are only ever given by [`decide`], never by the webhook.
    NamespaceInjectionNotEnabled {
        namespace: String,
        value: String,
    },
    /// A named revision's webhooks require the namespace to carry no `istio-injection`.
    NamespaceLabelOfDefaultRevision {
        namespace: String,
        revision: String,
    },
    NamespaceOtherRevision {
        namespace: String,
        revision: String,
        ours: String,
    },
    PodOtherRevision {
        revision: String,
        ours: String,
    },
    /// Injection is opt-in per namespace or pod unless `enableNamespacesByDefault` is on.
    NotOptedIn {
        namespace: String,
        revision: Revision,
    },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HostNetwork => f.write_str("pod has hostNetwork: true"),
            Self::SystemNamespace { namespace } => {
                write!(f, "namespace {namespace} is a system namespace")
            }
            Self::OptedOut(source) => write!(f, "{source} {INJECT_KEY}=false"),
            Self::NeverInjectSelector { index } => {
                write!(f, "matches neverInjectSelector[{index}]")
            }
            Self::PolicyDisabled => {
                f.write_str("injection policy is disabled and the pod does not ask for it")
            }
            Self::NamespaceInjectionNotEnabled { namespace, value } => write!(
                f,
                "namespace {namespace} has {NAMESPACE_INJECTION_LABEL}={value}; only \
                 \"enabled\" turns injection on"
            ),
            Self::NamespaceLabelOfDefaultRevision {
                namespace,
                revision,
            } => write!(
                f,
                "namespace {namespace} has {NAMESPACE_INJECTION_LABEL}, which only the default \
                 revision honours; revision {revision} needs {REVISION_LABEL}={revision} on the \
                 namespace and no {NAMESPACE_INJECTION_LABEL}"
            ),
            Self::NamespaceOtherRevision {
                namespace,
                revision,
                ours,
            } => write!(
                f,
                "namespace {namespace} has {REVISION_LABEL}={revision}, not {ours}; the \
                 namespace's revision beats the pod's"
            ),
            Self::PodOtherRevision { revision, ours } => {
                write!(f, "pod has {REVISION_LABEL}={revision}, not {ours}")
            }
            Self::NotOptedIn {
                namespace,
                revision: Revision::Default,
            } => write!(
                f,
                "namespace {namespace} has neither {NAMESPACE_INJECTION_LABEL}=enabled nor \
                 {REVISION_LABEL}, and the pod has neither the label {INJECT_KEY}=true nor \
                 {REVISION_LABEL}"
            ),
            Self::NotOptedIn {
                namespace,
                revision: Revision::Named(rev),
            } => write!(
                f,
                "namespace {namespace} has no {REVISION_LABEL} label, and the pod has no label \
                 {REVISION_LABEL}={rev}"
            ),
        }
    }
}

/// Stage B, Istio's `injectRequired()`, run by the webhook and by `inject`. The order is
/// the contract: an earlier step always wins, so hostNetwork beats an explicit opt-in and an
/// explicit choice beats both selectors and the policy.
pub fn inject_required(config: &PolicyConfig, pod: &PodFacts, request_namespace: &str) -> Decision {
    if pod.host_network {
        return Decision::Skip(SkipReason::HostNetwork);
    }
    let namespace = match pod.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => ns,
        _ => request_namespace,
    };
    if SYSTEM_NAMESPACES.contains(&namespace) {
        return Decision::Skip(SkipReason::SystemNamespace {
            namespace: namespace.to_owned(),
        });
    }
    match explicit_choice(pod) {
        ExplicitChoice::Inject(_) => return Decision::Inject,
        ExplicitChoice::Skip(source) => return Decision::Skip(SkipReason::OptedOut(source)),
        ExplicitChoice::Unset | ExplicitChoice::Unrecognized { .. } => {}
    }
    if let Some(index) = first_match(&config.never_inject_selector, &pod.labels) {
        return Decision::Skip(SkipReason::NeverInjectSelector { index });
    }
    if first_match(&config.always_inject_selector, &pod.labels).is_some() {
        return Decision::Inject;
    }
    match config.policy {
        InjectionPolicy::Enabled => Decision::Inject,
        InjectionPolicy::Disabled => Decision::Skip(SkipReason::PolicyDisabled),
    }
}

/// Empty and invalid selectors are skipped rather than failing the pod, as in Istio: a bad
/// config entry must not block pod creation cluster-wide (the webhook fails closed).
fn first_match(selectors: &[LabelSelector], labels: &Labels) -> Option<usize> {
    selectors
        .iter()
        .position(|s| !s.is_empty() && s.validate().is_ok() && s.matches(labels))
}

/// Which control-plane revision a webhook configuration belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revision {
    /// Istio's unnamed revision; its selectors use the value `default`.
    Default,
    Named(String),
}

impl Revision {
    /// Istio's install labels its unnamed revision `default`, so both spellings mean it.
    pub fn new(name: &str) -> Self {
        match name {
            "" | "default" => Self::Default,
            other => Self::Named(other.to_owned()),
        }
    }

    /// The value the `istio.io/rev` selectors compare against.
    pub fn value(&self) -> &str {
        match self {
            Self::Default => "default",
            Self::Named(name) => name,
        }
    }
}

/// The webhooks of one MutatingWebhookConfiguration, named by their Istio prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookKind {
    RevNamespace,
    RevObject,
    Namespace,
    Object,
    Auto,
}

impl WebhookKind {
    /// Kubernetes wants unique webhook names, so Istio prefixes `sidecar-injector.istio.io`.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::RevNamespace => "rev.namespace.",
            Self::RevObject => "rev.object.",
            Self::Namespace => "namespace.",
            Self::Object => "object.",
            Self::Auto => "auto.",
        }
    }
}

/// One webhook's selectors: the API server calls it when both match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub kind: WebhookKind,
    pub namespace_selector: LabelSelector,
    pub object_selector: LabelSelector,
}

/// One installed webhook configuration. A revision tag gets its own configuration, so it
/// is described by another `WebhookSet` whose revision is the tag's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSet {
    pub revision: Revision,
    /// `sidecarInjectorWebhook.enableNamespacesByDefault`: adds the `auto.` webhook.
    pub enable_namespaces_by_default: bool,
}

fn selector(expressions: Vec<Requirement>) -> LabelSelector {
    LabelSelector {
        match_labels: Labels::new(),
        match_expressions: expressions,
    }
}

impl WebhookSet {
    /// The selectors Istio's chart installs. They are built so that at most one webhook of
    /// a configuration matches a pod, which is why the order below does not change results.
    pub fn webhooks(&self) -> Vec<Webhook> {
        use Operator::{DoesNotExist, In, NotIn};
        let rev = self.revision.value();
        let not_false = || Requirement::new(INJECT_KEY, NotIn, &["false"]);
        let absent = |key: &str| Requirement::new(key, DoesNotExist, &[]);
        let mut hooks = vec![
            Webhook {
                kind: WebhookKind::RevNamespace,
                namespace_selector: selector(vec![
                    Requirement::new(REVISION_LABEL, In, &[rev]),
                    absent(NAMESPACE_INJECTION_LABEL),
                ]),
                object_selector: selector(vec![not_false()]),
            },
            Webhook {
                kind: WebhookKind::RevObject,
                namespace_selector: selector(vec![
                    absent(REVISION_LABEL),
                    absent(NAMESPACE_INJECTION_LABEL),
                ]),
                object_selector: selector(vec![
                    not_false(),
                    Requirement::new(REVISION_LABEL, In, &[rev]),
                ]),
            },
        ];
        if self.revision != Revision::Default {
            return hooks;
        }
        hooks.push(Webhook {
            kind: WebhookKind::Namespace,
            namespace_selector: selector(vec![Requirement::new(
                NAMESPACE_INJECTION_LABEL,
                In,
                &["enabled"],
            )]),
            object_selector: selector(vec![not_false()]),
        });
        hooks.push(Webhook {
            kind: WebhookKind::Object,
            namespace_selector: selector(vec![
                absent(NAMESPACE_INJECTION_LABEL),
                absent(REVISION_LABEL),
            ]),
            object_selector: selector(vec![
                Requirement::new(INJECT_KEY, In, &["true"]),
                absent(REVISION_LABEL),
            ]),
        });
        if self.enable_namespaces_by_default {
            hooks.push(Webhook {
                kind: WebhookKind::Auto,
                namespace_selector: selector(vec![
                    absent(NAMESPACE_INJECTION_LABEL),
                    absent(REVISION_LABEL),
                    Requirement::new(NAMESPACE_NAME_LABEL, NotIn, &SYSTEM_NAMESPACES),
                ]),
                object_selector: selector(vec![absent(INJECT_KEY), absent(REVISION_LABEL)]),
            });
        }
        hooks
    }

    /// Stage A: the webhook the API server would call for this pod, or why it calls none.
    /// Only labels are consulted, which is why an annotation alone never injects.
    pub fn select(
        &self,
        namespace: &NamespaceFacts,
        pod_labels: &Labels,
    ) -> Result<WebhookKind, SkipReason> {
        let mut ns_labels = namespace.labels.clone();
        ns_labels.insert(NAMESPACE_NAME_LABEL.to_owned(), namespace.name.clone());
        self.webhooks()
            .into_iter()
            .find(|w| {
                w.namespace_selector.matches(&ns_labels) && w.object_selector.matches(pod_labels)
            })
            .map(|w| w.kind)
            .ok_or_else(|| self.why_not_selected(namespace, pod_labels))
    }

    /// Explains a miss of [`Self::select`] in the order a user would check things; each
    /// branch relies on the earlier ones having failed to match.
    fn why_not_selected(&self, namespace: &NamespaceFacts, pod_labels: &Labels) -> SkipReason {
        let ns = || namespace.name.clone();
        let ours = self.revision.value();
        if pod_labels.get(INJECT_KEY).is_some_and(|v| v == "false") {
            return SkipReason::OptedOut(Source::Label);
        }
        if let Some(value) = namespace.labels.get(NAMESPACE_INJECTION_LABEL) {
            return match self.revision {
                Revision::Default => SkipReason::NamespaceInjectionNotEnabled {
                    namespace: ns(),
                    value: value.clone(),
                },
                Revision::Named(_) => SkipReason::NamespaceLabelOfDefaultRevision {
                    namespace: ns(),
                    revision: ours.to_owned(),
                },
            };
        }
        if let Some(revision) = namespace.labels.get(REVISION_LABEL) {
            return SkipReason::NamespaceOtherRevision {
                namespace: ns(),
                revision: revision.clone(),
                ours: ours.to_owned(),
            };
        }
        if let Some(revision) = pod_labels.get(REVISION_LABEL) {
            return SkipReason::PodOtherRevision {
                revision: revision.clone(),
                ours: ours.to_owned(),
            };
        }
        let auto_applies = self.revision == Revision::Default
            && self.enable_namespaces_by_default
            && !pod_labels.contains_key(INJECT_KEY);
        if auto_applies && SYSTEM_NAMESPACES.contains(&namespace.name.as_str()) {
            return SkipReason::SystemNamespace { namespace: ns() };
        }
        SkipReason::NotOptedIn {
            namespace: ns(),
            revision: self.revision.clone(),
        }
    }
}

/// Both stages, for a pod the webhook configuration `webhooks` governs: what a user sees
/// after `kubectl apply`. The webhook itself only runs [`inject_required`], because the API
/// server has already done stage A by the time it is called.
pub fn decide(
    webhooks: &WebhookSet,
    config: &PolicyConfig,
    namespace: &NamespaceFacts,
    pod: &PodFacts,
) -> Decision {
    match webhooks.select(namespace, &pod.labels) {
        Ok(_) => inject_required(config, pod, &namespace.name),
        Err(reason) => Decision::Skip(reason),
    }
}
