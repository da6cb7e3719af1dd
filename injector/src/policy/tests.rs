//! Every expected value below is taken from spec/injector.md section 1 (and section 4 for
//! manual injection), or, for selector syntax, from the Kubernetes LabelSelector rules.

use super::*;

const LABEL: Source = Source::Label;
const ANNO: Source = Source::Annotation;

fn map(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A pod in an ordinary namespace; tests add what they need.
fn pod(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> PodFacts {
    PodFacts {
        namespace: Some("apps".to_owned()),
        labels: map(labels),
        annotations: map(annotations),
        host_network: false,
    }
}

fn host_network(mut p: PodFacts) -> PodFacts {
    p.host_network = true;
    p
}

fn in_ns(mut p: PodFacts, ns: Option<&str>) -> PodFacts {
    p.namespace = ns.map(str::to_owned);
    p
}

fn matching(key: &str, value: &str) -> LabelSelector {
    LabelSelector {
        match_labels: map(&[(key, value)]),
        match_expressions: vec![],
    }
}

/// Istio's test helper `parseToLabelSelector("foo")`: the label exists, any value.
fn has(key: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Labels::new(),
        match_expressions: vec![Requirement::new(key, Operator::Exists, &[])],
    }
}

fn config(
    policy: InjectionPolicy,
    never: Vec<LabelSelector>,
    always: Vec<LabelSelector>,
) -> PolicyConfig {
    PolicyConfig {
        policy,
        never_inject_selector: never,
        always_inject_selector: always,
    }
}

fn enabled() -> PolicyConfig {
    config(InjectionPolicy::Enabled, vec![], vec![])
}

fn disabled() -> PolicyConfig {
    config(InjectionPolicy::Disabled, vec![], vec![])
}

fn skip(reason: SkipReason) -> Decision {
    Decision::Skip(reason)
}

fn system(ns: &str) -> Decision {
    skip(SkipReason::SystemNamespace {
        namespace: ns.to_owned(),
    })
}

const INJECT: Decision = Decision::Inject;
const POLICY_DISABLED: Decision = Decision::Skip(SkipReason::PolicyDisabled);
const HOST_NETWORK: Decision = Decision::Skip(SkipReason::HostNetwork);
const K: &str = INJECT_KEY;

#[test]
fn stage_b_explicit_choice_and_policy() {
    use InjectionPolicy::{Disabled, Enabled};
    #[rustfmt::skip]
    let cases: Vec<(&str, PolicyConfig, PodFacts, Decision)> = vec![
        // Step 6: no choice, the policy decides.
        ("no choice, enabled", enabled(), pod(&[], &[]), INJECT),
        ("no choice, disabled", disabled(), pod(&[], &[]), POLICY_DISABLED),
        // Step 3: "true" injects and "false" skips, under either policy.
        ("anno true, enabled", enabled(), pod(&[], &[(K, "true")]), INJECT),
        ("anno true, disabled", disabled(), pod(&[], &[(K, "true")]), INJECT),
        ("anno false, enabled", enabled(), pod(&[], &[(K, "false")]), skip(SkipReason::OptedOut(ANNO))),
        ("anno false, disabled", disabled(), pod(&[], &[(K, "false")]), skip(SkipReason::OptedOut(ANNO))),
        ("label true, disabled", disabled(), pod(&[(K, "true")], &[]), INJECT),
        ("label false, enabled", enabled(), pod(&[(K, "false")], &[]), skip(SkipReason::OptedOut(LABEL))),
        // The label replaces the annotation whenever it is present.
        ("label true + anno false", enabled(), pod(&[(K, "true")], &[(K, "false")]), INJECT),
        ("label true + anno false, disabled", disabled(), pod(&[(K, "true")], &[(K, "false")]), INJECT),
        ("label false + anno true", enabled(), pod(&[(K, "false")], &[(K, "true")]), skip(SkipReason::OptedOut(LABEL))),
        ("empty label hides anno false", enabled(), pod(&[(K, "")], &[(K, "false")]), INJECT),
        ("empty label hides anno true", disabled(), pod(&[(K, "")], &[(K, "true")]), POLICY_DISABLED),
        ("label yes hides anno false", enabled(), pod(&[(K, "yes")], &[(K, "false")]), INJECT),
        // Empty or any other value means "use the default".
        ("empty anno, enabled", enabled(), pod(&[], &[(K, "")]), INJECT),
        ("empty anno, disabled", disabled(), pod(&[], &[(K, "")]), POLICY_DISABLED),
        ("anno yes, enabled", enabled(), pod(&[], &[(K, "yes")]), INJECT),
        ("anno yes, disabled", disabled(), pod(&[], &[(K, "yes")]), POLICY_DISABLED),
        ("anno on, disabled", disabled(), pod(&[], &[(K, "on")]), POLICY_DISABLED),
        ("anno y, disabled", disabled(), pod(&[], &[(K, "y")]), POLICY_DISABLED),
        ("anno no, enabled", enabled(), pod(&[], &[(K, "no")]), INJECT),
        ("anno True, disabled", disabled(), pod(&[], &[(K, "True")]), POLICY_DISABLED),
        ("anno FALSE, enabled", enabled(), pod(&[], &[(K, "FALSE")]), INJECT),
        ("label random, enabled", enabled(), pod(&[(K, "random")], &[]), INJECT),
        ("label 1, disabled", disabled(), pod(&[(K, "1")], &[]), POLICY_DISABLED),
        // Only the pod's own key counts.
        ("other key false", config(Enabled, vec![], vec![]), pod(&[("inject", "false")], &[]), INJECT),
        ("other key true", config(Disabled, vec![], vec![]), pod(&[], &[("inject", "true")]), POLICY_DISABLED),
    ];
    run_stage_b(cases, "apps");
}

#[test]
fn stage_b_host_network_and_system_namespaces() {
    #[rustfmt::skip]
    let cases: Vec<(&str, PolicyConfig, PodFacts, Decision)> = vec![
        // Step 1 comes before any choice the pod makes.
        ("hostNetwork", enabled(), host_network(pod(&[], &[])), HOST_NETWORK),
        ("hostNetwork + label true", enabled(), host_network(pod(&[(K, "true")], &[])), HOST_NETWORK),
        ("hostNetwork + anno true", disabled(), host_network(pod(&[], &[(K, "true")])), HOST_NETWORK),
        ("hostNetwork + always", config(InjectionPolicy::Enabled, vec![], vec![has("app")]), host_network(pod(&[("app", "x")], &[])), HOST_NETWORK),
        // Step 1 comes before step 2.
        ("hostNetwork in kube-system", enabled(), host_network(in_ns(pod(&[], &[]), Some("kube-system"))), HOST_NETWORK),
        // Step 2: the four system namespaces, even with an explicit opt-in.
        ("kube-system", enabled(), in_ns(pod(&[(K, "true")], &[]), Some("kube-system")), system("kube-system")),
        ("kube-public", enabled(), in_ns(pod(&[(K, "true")], &[]), Some("kube-public")), system("kube-public")),
        ("kube-node-lease", enabled(), in_ns(pod(&[], &[(K, "true")]), Some("kube-node-lease")), system("kube-node-lease")),
        ("local-path-storage", enabled(), in_ns(pod(&[], &[]), Some("local-path-storage")), system("local-path-storage")),
        ("system + always", config(InjectionPolicy::Enabled, vec![], vec![has("app")]), in_ns(pod(&[("app", "x")], &[]), Some("kube-system")), system("kube-system")),
        // Only those four names, spelled exactly.
        ("istio-system is not one", enabled(), in_ns(pod(&[], &[]), Some("istio-system")), INJECT),
        ("default is not one", enabled(), in_ns(pod(&[], &[]), Some("default")), INJECT),
        ("kube-system-apps is not one", enabled(), in_ns(pod(&[], &[]), Some("kube-system-apps")), INJECT),
        ("Kube-System is not one", enabled(), in_ns(pod(&[], &[]), Some("Kube-System")), INJECT),
        // The pod's namespace wins; the request's namespace is used when the pod has none.
        ("pod ns wins over request ns", enabled(), in_ns(pod(&[], &[]), Some("apps")), INJECT),
    ];
    run_stage_b(cases, "kube-system");

    #[rustfmt::skip]
    let from_request: Vec<(&str, PolicyConfig, PodFacts, Decision)> = vec![
        ("no pod ns, request kube-public", enabled(), in_ns(pod(&[], &[]), None), system("kube-public")),
        ("empty pod ns, request kube-public", enabled(), in_ns(pod(&[], &[]), Some("")), system("kube-public")),
        ("pod ns kube-system, request kube-public", enabled(), in_ns(pod(&[], &[]), Some("kube-system")), system("kube-system")),
    ];
    run_stage_b(from_request, "kube-public");
}

#[test]
fn stage_b_selectors() {
    use InjectionPolicy::{Disabled, Enabled};
    let never = |p| config(p, vec![matching("foo", "bar")], vec![]);
    let always = |p| config(p, vec![], vec![matching("foo", "bar")]);
    let both = |p| config(p, vec![has("never")], vec![has("always")]);
    let never_second = config(Enabled, vec![matching("a", "1"), has("b")], vec![]);
    let invalid_never = config(
        Enabled,
        vec![
            // NotIn with no values would match every pod, Exists with values and a bad
            // key would match this pod; all three are invalid and must be ignored.
            selector(vec![Requirement::new("foo", Operator::NotIn, &[])]),
            selector(vec![Requirement::new("foo", Operator::Exists, &["bar"])]),
            matching("bad key", "x"),
        ],
        vec![],
    );
    let not_in_nothing = selector(vec![Requirement::new("foo", Operator::NotIn, &[])]);
    let invalid_always = config(Disabled, vec![], vec![not_in_nothing]);
    let empty_never = config(Enabled, vec![LabelSelector::default()], vec![]);
    let empty_always = config(Disabled, vec![], vec![LabelSelector::default()]);
    let foo_bar = || pod(&[("foo", "bar")], &[]);
    let never_sel = |index| skip(SkipReason::NeverInjectSelector { index });

    #[rustfmt::skip]
    let cases: Vec<(&str, PolicyConfig, PodFacts, Decision)> = vec![
        // Step 4: neverInjectSelector, only when the pod made no explicit choice.
        ("never, no match, enabled", never(Enabled), pod(&[("foo", "baz")], &[]), INJECT),
        ("never, match, enabled", never(Enabled), foo_bar(), never_sel(0)),
        ("never, match, disabled", never(Disabled), foo_bar(), never_sel(0)),
        ("never, no labels, disabled", never(Disabled), pod(&[], &[]), POLICY_DISABLED),
        ("never vs label true", never(Enabled), pod(&[("foo", "bar"), (K, "true")], &[]), INJECT),
        ("never vs anno true", never(Enabled), pod(&[("foo", "bar")], &[(K, "true")]), INJECT),
        ("never vs anno yes", never(Enabled), pod(&[("foo", "bar")], &[(K, "yes")]), never_sel(0)),
        ("never vs empty label", never(Enabled), pod(&[("foo", "bar"), (K, "")], &[]), never_sel(0)),
        ("never: first match is reported", never_second.clone(), pod(&[("a", "2"), ("b", "")], &[]), never_sel(1)),
        ("never: exists matches empty value", config(Enabled, vec![has("foo")], vec![]), pod(&[("foo", ""), ("foo2", "bar2")], &[]), never_sel(0)),
        // Step 5: alwaysInjectSelector.
        ("always, match, disabled", always(Disabled), foo_bar(), INJECT),
        ("always, no match, disabled", always(Disabled), pod(&[("foo", "bar1")], &[]), POLICY_DISABLED),
        ("always, no labels, enabled", always(Enabled), pod(&[], &[]), INJECT),
        ("always vs anno false", always(Enabled), pod(&[("foo", "bar")], &[(K, "false")]), skip(SkipReason::OptedOut(ANNO))),
        ("always vs label false", always(Disabled), pod(&[("foo", "bar"), (K, "false")], &[]), skip(SkipReason::OptedOut(LABEL))),
        ("always: exists matches empty value", config(Disabled, vec![], vec![has("foo")]), pod(&[("foo", "")], &[]), INJECT),
        // Never wins over always.
        ("only always matches", both(Disabled), pod(&[("always", "x")], &[]), INJECT),
        ("only never matches", both(Disabled), pod(&[("never", "x")], &[]), never_sel(0)),
        ("both match, disabled", both(Disabled), pod(&[("always", "x"), ("never", "y")], &[]), never_sel(0)),
        ("both match, enabled", both(Enabled), pod(&[("always", "x"), ("never", "y")], &[]), never_sel(0)),
        ("both match, label true", both(Disabled), pod(&[("always", "x"), ("never", "y"), (K, "true")], &[]), INJECT),
        // Empty or invalid selectors are ignored.
        ("invalid never selectors", invalid_never, pod(&[("foo", "bar"), ("bad key", "x")], &[]), INJECT),
        ("invalid always selector", invalid_always, foo_bar(), POLICY_DISABLED),
        ("empty never selector", empty_never, foo_bar(), INJECT),
        ("empty always selector", empty_always, foo_bar(), POLICY_DISABLED),
    ];
    run_stage_b(cases, "apps");
}

#[test]
fn manual_injection_only_honours_opt_outs() {
    // Section 4: "Opt-outs are checked with the policy forced to enabled; selectors are not
    // applied".
    let manual = PolicyConfig::manual();
    assert_eq!(manual.policy, InjectionPolicy::Enabled);
    assert!(manual.never_inject_selector.is_empty() && manual.always_inject_selector.is_empty());
    #[rustfmt::skip]
    let cases: Vec<(&str, PolicyConfig, PodFacts, Decision)> = vec![
        ("no choice", manual.clone(), pod(&[], &[]), INJECT),
        ("anno false", manual.clone(), pod(&[], &[(K, "false")]), skip(SkipReason::OptedOut(ANNO))),
        ("label false", manual.clone(), pod(&[(K, "false")], &[]), skip(SkipReason::OptedOut(LABEL))),
        ("hostNetwork", manual.clone(), host_network(pod(&[], &[])), HOST_NETWORK),
        ("no namespace at all", manual, in_ns(pod(&[], &[]), None), INJECT),
    ];
    run_stage_b(cases, "");
}

fn run_stage_b(cases: Vec<(&str, PolicyConfig, PodFacts, Decision)>, request_ns: &str) {
    for (name, config, pod, want) in cases {
        assert_eq!(
            inject_required(&config, &pod, request_ns),
            want,
            "case {name:?}"
        );
    }
}

#[test]
fn explicit_choice_reports_source_and_unrecognized_values() {
    let unrecognized = |source, value: &str| ExplicitChoice::Unrecognized {
        source,
        value: value.to_owned(),
    };
    #[rustfmt::skip]
    let cases = [
        (pod(&[], &[]), ExplicitChoice::Unset),
        (pod(&[(K, "")], &[(K, "true")]), ExplicitChoice::Unset),
        (pod(&[], &[(K, "true")]), ExplicitChoice::Inject(ANNO)),
        (pod(&[(K, "false")], &[(K, "true")]), ExplicitChoice::Skip(LABEL)),
        (pod(&[(K, "yes")], &[(K, "true")]), unrecognized(LABEL, "yes")),
        (pod(&[], &[(K, "on")]), unrecognized(ANNO, "on")),
    ];
    for (pod, want) in cases {
        assert_eq!(explicit_choice(&pod), want, "{pod:?}");
    }
    let text = unrecognized(ANNO, "on").to_string();
    assert!(
        text.contains("annotation sidecar.istio.io/inject") && text.contains("\"on\""),
        "{text}"
    );
}

#[test]
fn label_selector_matching() {
    use Operator::{DoesNotExist, Exists, In, NotIn};
    let req = |key, op, values: &[&str]| selector(vec![Requirement::new(key, op, values)]);
    type Case<'a> = (&'a str, LabelSelector, &'a [(&'a str, &'a str)], bool);
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("empty selector matches all", LabelSelector::default(), &[], true),
        ("matchLabels equal", matching("app", "web"), &[("app", "web"), ("x", "y")], true),
        ("matchLabels other value", matching("app", "web"), &[("app", "db")], false),
        ("matchLabels missing", matching("app", "web"), &[], false),
        ("matchLabels empty value", matching("app", ""), &[("app", "")], true),
        ("In hit", req("tier", In, &["a", "b"]), &[("tier", "b")], true),
        ("In miss", req("tier", In, &["a", "b"]), &[("tier", "c")], false),
        ("In missing label", req("tier", In, &["a"]), &[], false),
        ("NotIn hit", req("tier", NotIn, &["a"]), &[("tier", "a")], false),
        ("NotIn other value", req("tier", NotIn, &["a"]), &[("tier", "b")], true),
        ("NotIn missing label", req("tier", NotIn, &["a"]), &[], true),
        ("Exists", req("tier", Exists, &[]), &[("tier", "")], true),
        ("Exists missing", req("tier", Exists, &[]), &[("other", "x")], false),
        ("DoesNotExist", req("tier", DoesNotExist, &[]), &[("other", "x")], true),
        ("DoesNotExist present", req("tier", DoesNotExist, &[]), &[("tier", "x")], false),
        ("terms are ANDed", LabelSelector { match_labels: map(&[("app", "web")]), match_expressions: vec![Requirement::new("tier", DoesNotExist, &[])] }, &[("app", "web"), ("tier", "x")], false),
    ];
    for (name, sel, labels, want) in cases {
        assert_eq!(sel.matches(&map(labels)), want, "case {name:?}");
    }
    assert!(LabelSelector::default().is_empty());
    assert!(!matching("a", "b").is_empty());
}

#[test]
fn label_selector_validation() {
    use Operator::{DoesNotExist, Exists, In, NotIn};
    use SelectorProblem::{InvalidKey, InvalidValue, MissingValues, UnexpectedValues};
    let req = |key: &str, op, values: &[&str]| selector(vec![Requirement::new(key, op, values)]);
    let long = "a".repeat(64);
    let max = "a".repeat(63);
    let long_prefix = format!("{}/x", "a".repeat(254));
    let valid = [
        req("app", In, &["web"]),
        req("app.kubernetes.io/name", NotIn, &["", "a-b_c.d"]),
        req("example.com/x", Exists, &[]),
        req("A_b-9", DoesNotExist, &[]),
        req(&max, In, &[max.as_str()]),
        matching("app", ""),
        LabelSelector::default(),
    ];
    for sel in &valid {
        assert_eq!(sel.validate(), Ok(()), "{sel:?}");
    }

    type IsExpected = fn(&SelectorProblem) -> bool;
    #[rustfmt::skip]
    let cases: Vec<(LabelSelector, &str, IsExpected)> = vec![
        (req("app", In, &[]), "matchExpressions[0].values", |p| matches!(p, MissingValues { .. })),
        (req("app", NotIn, &[]), "matchExpressions[0].values", |p| matches!(p, MissingValues { .. })),
        (req("app", Exists, &["x"]), "matchExpressions[0].values", |p| matches!(p, UnexpectedValues { .. })),
        (req("app", DoesNotExist, &["x"]), "matchExpressions[0].values", |p| matches!(p, UnexpectedValues { .. })),
        (req("", Exists, &[]), "matchExpressions[0].key", |p| matches!(p, InvalidKey { .. })),
        (req("bad key", Exists, &[]), "matchExpressions[0].key", |p| matches!(p, InvalidKey { .. })),
        (req("-app", Exists, &[]), "matchExpressions[0].key", |p| matches!(p, InvalidKey { .. })),
        (req("app.", Exists, &[]), "matchExpressions[0].key", |p| matches!(p, InvalidKey { .. })),
        (req(&long, Exists, &[]), "matchExpressions[0].key", |p| matches!(p, InvalidKey { .. })),
        (req("/app", Exists, &[]), "matchExpressions[0].key", |p| matches!(p, InvalidKey { .. })),
        (req("Example.com/app", Exists, &[]), "matchExpressions[0].key", |p| matches!(p, InvalidKey { .. })),
        (req("a/b/c", Exists, &[]), "matchExpressions[0].key", |p| matches!(p, InvalidKey { .. })),
        (req("example.com/", Exists, &[]), "matchExpressions[0].key", |p| matches!(p, InvalidKey { .. })),
        (req(&long_prefix, Exists, &[]), "matchExpressions[0].key", |p| matches!(p, InvalidKey { .. })),
        (req("app", In, &["ok", "-no"]), "matchExpressions[0].values[1]", |p| matches!(p, InvalidValue { .. })),
        (req("app", In, &[long.as_str()]), "matchExpressions[0].values[0]", |p| matches!(p, InvalidValue { .. })),
        (matching("app", "a b"), "matchLabels[\"app\"]", |p| matches!(p, InvalidValue { .. })),
        (matching("a b", "x"), "matchLabels[\"a b\"]", |p| matches!(p, InvalidKey { .. })),
    ];
    for (sel, field, is_expected) in cases {
        let err = sel
            .validate()
            .expect_err(&format!("{sel:?} must be invalid"));
        assert_eq!(err.field, field, "{sel:?}");
        assert!(is_expected(&err.problem), "{sel:?}: {err}");
    }
}

#[test]
fn config_validation_names_the_field_and_the_fix() {
    let bad = config(
        InjectionPolicy::Enabled,
        vec![has("ok")],
        vec![
            has("ok"),
            selector(vec![Requirement::new("tier", Operator::In, &[])]),
        ],
    );
    let err = bad.validate().unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("alwaysInjectSelector[1].matchExpressions[0].values: "),
        "{text}"
    );
    assert!(text.contains("add `values` or use Exists"), "{text}");
    assert_eq!(enabled().validate(), Ok(()));

    let bad_never = config(InjectionPolicy::Enabled, vec![matching("a", "-")], vec![]);
    let text = bad_never.validate().unwrap_err().to_string();
    assert!(
        text.starts_with("neverInjectSelector[0].matchLabels[\"a\"]: "),
        "{text}"
    );
}

#[test]
fn policy_and_operator_parsing() {
    assert_eq!("enabled".parse(), Ok(InjectionPolicy::Enabled));
    assert_eq!("disabled".parse(), Ok(InjectionPolicy::Disabled));
    assert_eq!(InjectionPolicy::default(), InjectionPolicy::Enabled);
    for bad in ["", "Enabled", "on", "true", "wrong_policy"] {
        let err = bad.parse::<InjectionPolicy>().unwrap_err();
        assert_eq!(
            err,
            PolicyError::UnknownPolicy {
                value: bad.to_owned()
            }
        );
        let text = err.to_string();
        assert!(
            text.starts_with("policy: ") && text.contains("\"enabled\""),
            "{text}"
        );
    }
    for (text, op) in [
        ("In", Operator::In),
        ("NotIn", Operator::NotIn),
        ("Exists", Operator::Exists),
        ("DoesNotExist", Operator::DoesNotExist),
    ] {
        assert_eq!(text.parse(), Ok(op));
        assert_eq!(op.to_string(), text);
    }
    for bad in ["in", "notin", "Gt", "Equals", ""] {
        assert!(matches!(
            bad.parse::<Operator>(),
            Err(SelectorProblem::UnknownOperator { .. })
        ));
    }
}

// ---- Stage A ----

fn ns(name: &str, labels: &[(&str, &str)]) -> NamespaceFacts {
    NamespaceFacts {
        name: name.to_owned(),
        labels: map(labels),
    }
}

fn default_set(auto: bool) -> WebhookSet {
    WebhookSet {
        revision: Revision::Default,
        enable_namespaces_by_default: auto,
    }
}

fn canary_set(auto: bool) -> WebhookSet {
    WebhookSet {
        revision: Revision::new("canary"),
        enable_namespaces_by_default: auto,
    }
}

const INJ: &str = NAMESPACE_INJECTION_LABEL;
const REV: &str = REVISION_LABEL;

#[test]
fn webhook_sets_install_the_spec_table() {
    use WebhookKind::{Auto, Namespace, Object, RevNamespace, RevObject};
    let kinds = |set: WebhookSet| set.webhooks().iter().map(|w| w.kind).collect::<Vec<_>>();
    assert_eq!(
        kinds(default_set(false)),
        [RevNamespace, RevObject, Namespace, Object]
    );
    assert_eq!(
        kinds(default_set(true)),
        [RevNamespace, RevObject, Namespace, Object, Auto]
    );
    // A named revision installs only rev.namespace. and rev.object., with the value [R].
    assert_eq!(kinds(canary_set(false)), [RevNamespace, RevObject]);
    assert_eq!(kinds(canary_set(true)), [RevNamespace, RevObject]);
    let hooks = canary_set(false).webhooks();
    assert_eq!(
        hooks[0].namespace_selector.match_expressions[0],
        Requirement::new(REV, Operator::In, &["canary"])
    );
    assert_eq!(
        hooks[1].object_selector.match_expressions[1],
        Requirement::new(REV, Operator::In, &["canary"])
    );
    let prefixes: Vec<_> = default_set(true)
        .webhooks()
        .iter()
        .map(|w| w.kind.prefix())
        .collect();
    assert_eq!(
        prefixes,
        [
            "rev.namespace.",
            "rev.object.",
            "namespace.",
            "object.",
            "auto."
        ]
    );
    for set in [default_set(true), canary_set(false)] {
        for hook in set.webhooks() {
            assert_eq!(hook.namespace_selector.validate(), Ok(()), "{hook:?}");
            assert_eq!(hook.object_selector.validate(), Ok(()), "{hook:?}");
        }
    }
    assert_eq!(Revision::new(""), Revision::Default);
    assert_eq!(Revision::new("default"), Revision::Default);
    assert_eq!(Revision::new("canary").value(), "canary");
}

#[test]
fn stage_a_selects_the_spec_webhook() {
    use WebhookKind::{Auto, Namespace, Object, RevNamespace, RevObject};
    type Case<'a> = (
        &'a str,
        WebhookSet,
        NamespaceFacts,
        &'a [(&'a str, &'a str)],
        WebhookKind,
    );
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("ns enabled", default_set(false), ns("apps", &[(INJ, "enabled")]), &[], Namespace),
        ("ns enabled + ns rev", default_set(false), ns("apps", &[(INJ, "enabled"), (REV, "canary")]), &[], Namespace),
        ("ns rev default", default_set(false), ns("apps", &[(REV, "default")]), &[], RevNamespace),
        ("ns rev canary", canary_set(false), ns("apps", &[(REV, "canary")]), &[(REV, "default")], RevNamespace),
        ("pod rev default", default_set(false), ns("apps", &[]), &[(REV, "default")], RevObject),
        ("pod rev canary", canary_set(false), ns("apps", &[]), &[(REV, "canary"), (K, "true")], RevObject),
        ("pod label true", default_set(false), ns("apps", &[]), &[(K, "true")], Object),
        ("auto", default_set(true), ns("apps", &[]), &[], Auto),
    ];
    for (name, set, namespace, pod_labels, want) in cases {
        assert_eq!(
            set.select(&namespace, &map(pod_labels)),
            Ok(want),
            "case {name:?}"
        );
    }
    // auto. leaves out the system namespaces itself, so stage B never sees those pods.
    for system in SYSTEM_NAMESPACES {
        let reason = SkipReason::SystemNamespace {
            namespace: system.to_owned(),
        };
        let selected = default_set(true).select(&ns(system, &[]), &Labels::new());
        assert_eq!(selected, Err(reason));
    }
}

#[test]
fn both_stages() {
    let not_enabled = |value: &str| {
        skip(SkipReason::NamespaceInjectionNotEnabled {
            namespace: "apps".to_owned(),
            value: value.to_owned(),
        })
    };
    let default_only = skip(SkipReason::NamespaceLabelOfDefaultRevision {
        namespace: "apps".to_owned(),
        revision: "canary".to_owned(),
    });
    let ns_other_rev = |revision: &str, ours: &str| {
        skip(SkipReason::NamespaceOtherRevision {
            namespace: "apps".to_owned(),
            revision: revision.to_owned(),
            ours: ours.to_owned(),
        })
    };
    let pod_other_rev = |revision: &str, ours: &str| {
        skip(SkipReason::PodOtherRevision {
            revision: revision.to_owned(),
            ours: ours.to_owned(),
        })
    };
    let not_opted_in = |namespace: &str, revision: Revision| {
        skip(SkipReason::NotOptedIn {
            namespace: namespace.to_owned(),
            revision,
        })
    };
    let canary = || Revision::new("canary");
    let plain = || pod(&[], &[]);
    let enabled_ns = || ns("apps", &[(INJ, "enabled")]);
    let unlabeled = || ns("apps", &[]);
    let never_db = config(
        InjectionPolicy::Enabled,
        vec![matching("app", "db")],
        vec![],
    );

    type Case<'a> = (
        &'a str,
        WebhookSet,
        PolicyConfig,
        NamespaceFacts,
        PodFacts,
        Decision,
    );
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        // istio-injection=enabled beats any istio.io/rev; the default revision injects.
        ("ns enabled", default_set(false), enabled(), enabled_ns(), plain(), INJECT),
        ("ns enabled + rev canary", default_set(false), enabled(), ns("apps", &[(INJ, "enabled"), (REV, "canary")]), plain(), INJECT),
        ("ns enabled + rev canary, canary install", canary_set(false), enabled(), ns("apps", &[(INJ, "enabled"), (REV, "canary")]), plain(), default_only.clone()),
        ("ns enabled, canary install", canary_set(false), enabled(), enabled_ns(), pod(&[(REV, "canary")], &[]), default_only.clone()),
        // istio-injection with any other value: never, even with the pod label inject=true.
        ("ns disabled + label true", default_set(false), enabled(), ns("apps", &[(INJ, "disabled")]), pod(&[(K, "true")], &[]), not_enabled("disabled")),
        ("ns Enabled (case)", default_set(false), enabled(), ns("apps", &[(INJ, "Enabled")]), plain(), not_enabled("Enabled")),
        ("ns empty value", default_set(true), enabled(), ns("apps", &[(INJ, "")]), plain(), not_enabled("")),
        ("ns disabled + ns rev default", default_set(false), enabled(), ns("apps", &[(INJ, "disabled"), (REV, "default")]), plain(), not_enabled("disabled")),
        // A namespace istio.io/rev beats a pod istio.io/rev.
        ("ns rev canary, pod rev default", default_set(false), enabled(), ns("apps", &[(REV, "canary")]), pod(&[(REV, "default")], &[]), ns_other_rev("canary", "default")),
        ("ns rev canary, pod rev default, canary install", canary_set(false), enabled(), ns("apps", &[(REV, "canary")]), pod(&[(REV, "default")], &[]), INJECT),
        ("ns rev default, pod rev canary, canary install", canary_set(false), enabled(), ns("apps", &[(REV, "default")]), pod(&[(REV, "canary")], &[]), ns_other_rev("default", "canary")),
        ("ns rev default", default_set(false), enabled(), ns("apps", &[(REV, "default")]), plain(), INJECT),
        ("ns rev canary + label true", default_set(false), enabled(), ns("apps", &[(REV, "canary")]), pod(&[(K, "true")], &[]), ns_other_rev("canary", "default")),
        // In an unlabeled namespace the pod needs the label inject=true or istio.io/rev.
        ("unlabeled, plain pod", default_set(false), enabled(), unlabeled(), plain(), not_opted_in("apps", Revision::Default)),
        ("unlabeled, label true", default_set(false), disabled(), unlabeled(), pod(&[(K, "true")], &[]), INJECT),
        ("unlabeled, pod rev default", default_set(false), enabled(), unlabeled(), pod(&[(REV, "default")], &[]), INJECT),
        ("unlabeled, pod rev default, policy disabled", default_set(false), disabled(), unlabeled(), pod(&[(REV, "default")], &[]), POLICY_DISABLED),
        ("unlabeled, pod rev canary", default_set(false), enabled(), unlabeled(), pod(&[(REV, "canary")], &[]), pod_other_rev("canary", "default")),
        ("unlabeled, pod rev canary + label true", default_set(false), enabled(), unlabeled(), pod(&[(REV, "canary"), (K, "true")], &[]), pod_other_rev("canary", "default")),
        ("unlabeled, pod rev canary, canary install", canary_set(false), enabled(), unlabeled(), pod(&[(REV, "canary")], &[]), INJECT),
        ("unlabeled, label true, canary install", canary_set(false), enabled(), unlabeled(), pod(&[(K, "true")], &[]), not_opted_in("apps", canary())),
        ("unlabeled, label yes", default_set(false), enabled(), unlabeled(), pod(&[(K, "yes")], &[]), not_opted_in("apps", Revision::Default)),
        // An annotation never causes a call.
        ("unlabeled, anno true", default_set(false), enabled(), unlabeled(), pod(&[], &[(K, "true")]), not_opted_in("apps", Revision::Default)),
        // The pod label inject=false means the webhook is never called.
        ("ns enabled, label false + anno true", default_set(false), enabled(), enabled_ns(), pod(&[(K, "false")], &[(K, "true")]), skip(SkipReason::OptedOut(LABEL))),
        ("ns rev, label false", canary_set(false), enabled(), ns("apps", &[(REV, "canary")]), pod(&[(K, "false")], &[]), skip(SkipReason::OptedOut(LABEL))),
        ("unlabeled, label false + rev", default_set(true), enabled(), unlabeled(), pod(&[(K, "false"), (REV, "default")], &[]), skip(SkipReason::OptedOut(LABEL))),
        // Selected by stage A, then stage B decides.
        ("ns enabled, anno false", default_set(false), enabled(), enabled_ns(), pod(&[], &[(K, "false")]), skip(SkipReason::OptedOut(ANNO))),
        ("ns enabled, empty label + anno false", default_set(false), enabled(), enabled_ns(), pod(&[(K, "")], &[(K, "false")]), INJECT),
        ("ns enabled, policy disabled", default_set(false), disabled(), enabled_ns(), plain(), POLICY_DISABLED),
        ("ns enabled, policy disabled, label true", default_set(false), disabled(), enabled_ns(), pod(&[(K, "true")], &[]), INJECT),
        ("ns enabled, hostNetwork", default_set(false), enabled(), enabled_ns(), host_network(plain()), HOST_NETWORK),
        ("ns enabled, never selector", default_set(false), never_db, enabled_ns(), pod(&[("app", "db")], &[]), skip(SkipReason::NeverInjectSelector { index: 0 })),
        ("kube-system labelled enabled", default_set(false), enabled(), ns("kube-system", &[(INJ, "enabled")]), in_ns(plain(), None), system("kube-system")),
        // auto.: neither label on the namespace or the pod, and not a system namespace.
        ("auto, unlabeled", default_set(true), enabled(), unlabeled(), plain(), INJECT),
        ("auto, unlabeled, policy disabled", default_set(true), disabled(), unlabeled(), plain(), POLICY_DISABLED),
        ("auto, kube-system", default_set(true), enabled(), ns("kube-system", &[]), in_ns(plain(), None), system("kube-system")),
        ("auto, kube-public", default_set(true), enabled(), ns("kube-public", &[]), in_ns(plain(), None), system("kube-public")),
        ("auto, kube-node-lease", default_set(true), enabled(), ns("kube-node-lease", &[]), in_ns(plain(), None), system("kube-node-lease")),
        ("auto, local-path-storage", default_set(true), enabled(), ns("local-path-storage", &[]), in_ns(plain(), None), system("local-path-storage")),
        ("auto, istio-system", default_set(true), enabled(), ns("istio-system", &[]), in_ns(plain(), None), INJECT),
        ("auto, label yes", default_set(true), enabled(), unlabeled(), pod(&[(K, "yes")], &[]), not_opted_in("apps", Revision::Default)),
        ("auto, empty label", default_set(true), enabled(), unlabeled(), pod(&[(K, "")], &[]), not_opted_in("apps", Revision::Default)),
        ("auto, label true", default_set(true), disabled(), unlabeled(), pod(&[(K, "true")], &[]), INJECT),
        ("auto, anno false", default_set(true), enabled(), unlabeled(), pod(&[], &[(K, "false")]), skip(SkipReason::OptedOut(ANNO))),
        ("auto, ns disabled", default_set(true), enabled(), ns("apps", &[(INJ, "disabled")]), plain(), not_enabled("disabled")),
        ("auto, ns rev canary", default_set(true), enabled(), ns("apps", &[(REV, "canary")]), plain(), ns_other_rev("canary", "default")),
        ("auto, pod rev canary", default_set(true), enabled(), unlabeled(), pod(&[(REV, "canary")], &[]), pod_other_rev("canary", "default")),
        ("auto has no effect on a named revision", canary_set(true), enabled(), unlabeled(), plain(), not_opted_in("apps", canary())),
    ];
    for (name, set, config, namespace, pod, want) in cases {
        assert_eq!(
            decide(&set, &config, &namespace, &pod),
            want,
            "case {name:?}"
        );
    }
}

#[test]
fn stage_a_webhooks_are_mutually_exclusive() {
    // The spec's table gives each webhook disjoint selectors, so the API server calls at
    // most one webhook of a configuration; a pod is never mutated twice by one install.
    let ns_values = [None, Some("enabled"), Some("disabled")];
    let rev_values = [None, Some("default"), Some("canary"), Some("other")];
    let inject_values = [None, Some("true"), Some("false"), Some("yes")];
    fn with(labels: &mut Labels, key: &str, value: Option<&str>) {
        if let Some(v) = value {
            labels.insert(key.to_owned(), v.to_owned());
        }
    }
    for set in [default_set(true), default_set(false), canary_set(false)] {
        for ns_name in ["apps", "kube-system"] {
            for inj in ns_values {
                for ns_rev in rev_values {
                    for pod_rev in rev_values {
                        for pod_inject in inject_values {
                            let mut ns_labels = Labels::new();
                            with(&mut ns_labels, INJ, inj);
                            with(&mut ns_labels, REV, ns_rev);
                            ns_labels.insert(
                                "kubernetes.io/metadata.name".to_owned(),
                                ns_name.to_owned(),
                            );
                            let mut pod_labels = Labels::new();
                            with(&mut pod_labels, REV, pod_rev);
                            with(&mut pod_labels, K, pod_inject);
                            let hits = set
                                .webhooks()
                                .iter()
                                .filter(|w| {
                                    w.namespace_selector.matches(&ns_labels)
                                        && w.object_selector.matches(&pod_labels)
                                })
                                .count();
                            assert!(hits <= 1, "{set:?} {ns_labels:?} {pod_labels:?}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn skip_reasons_read_well() {
    #[rustfmt::skip]
    let cases = [
        (SkipReason::HostNetwork, "pod has hostNetwork: true"),
        (SkipReason::SystemNamespace { namespace: "kube-system".to_owned() }, "namespace kube-system is a system namespace"),
        (SkipReason::OptedOut(LABEL), "label sidecar.istio.io/inject=false"),
        (SkipReason::OptedOut(ANNO), "annotation sidecar.istio.io/inject=false"),
        (SkipReason::NeverInjectSelector { index: 2 }, "matches neverInjectSelector[2]"),
        (SkipReason::PolicyDisabled, "injection policy is disabled and the pod does not ask for it"),
        (SkipReason::NamespaceInjectionNotEnabled { namespace: "apps".to_owned(), value: "disabled".to_owned() }, "namespace apps has istio-injection=disabled; only \"enabled\" turns injection on"),
        (SkipReason::PodOtherRevision { revision: "canary".to_owned(), ours: "default".to_owned() }, "pod has istio.io/rev=canary, not default"),
    ];
    for (reason, text) in cases {
        assert_eq!(reason.to_string(), text);
    }
    let named = SkipReason::NotOptedIn {
        namespace: "apps".to_owned(),
        revision: Revision::new("canary"),
    };
    assert!(named.to_string().contains("istio.io/rev=canary"), "{named}");
}
