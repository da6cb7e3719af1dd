#!/usr/bin/env python3
"""Offline tests of the Skiff Helm chart (charts/skiff), without a cluster.

The chart is rendered with the values files in tests/values/ (through helm-python-sdk, which
embeds Helm), linted strictly, validated with kubernetes-validate --strict against the
Kubernetes schemas of the oldest supported and the newest version, and the rendered objects
are checked field by field: the webhook selectors against the table of spec/injector.md
section 1 and against WebhookSet::webhooks() in injector/src/policy.rs, the injection config
against InjectionConfig in injector/src/config.rs, and finally (when cargo is available) the
rendered injection config is fed to the real `skiff-injector inject --config`.

Run: python3 charts/skiff/tests/test_chart.py [-v]   (charts/skiff/tests/run installs the
Python packages first). Environment: SKIFF_CHART_SKIP_CARGO=1 skips the injector check.
"""

from __future__ import annotations

import functools
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

CHART = Path(__file__).resolve().parents[1]
TESTS = CHART / "tests"
VALUES_DIR = TESTS / "values"
REPO = CHART.parents[1]
POLICY_RS = REPO / "injector" / "src" / "policy.rs"
CONFIG_RS = REPO / "injector" / "src" / "config.rs"
GOLDEN_POD = REPO / "injector" / "tests" / "golden" / "pod-basic.yaml"

RELEASE = "skiff"
NAMESPACE = "skiff-system"
# The chart's kubeVersion floor (native sidecars) and the newest schemas the validator has.
KUBE_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]

INJECT = "sidecar.istio.io/inject"
REV = "istio.io/rev"
NS_INJECTION = "istio-injection"
NS_NAME = "kubernetes.io/metadata.name"
SYSTEM_NAMESPACES = ["kube-system", "kube-public", "kube-node-lease", "local-path-storage"]
WEBHOOK_SUFFIX = "sidecar-injector.istio.io"

VALUES_FILES = sorted(p.stem for p in VALUES_DIR.glob("*.yaml"))
# The shared certificate Secret of each self-managed values file (`--cert-secret`, and the one
# Secret the Role lets the injector read and update).
CERT_SECRETS = {
    "default": "skiff-injector-certs",
    "revision": "skiff-injector-certs",
    "namespaces-by-default": "skiff-injector-certs",
    "custom": "mesh-webhook-certs",
}


# --------------------------------------------------------------------------------------------
# Rendering


def load_values(name: str) -> dict[str, Any]:
    return yaml.safe_load((VALUES_DIR / f"{name}.yaml").read_text()) or {}


@functools.lru_cache(maxsize=None)
def chart() -> helm.Chart:
    return helm.Chart.load(str(CHART))


class Rendered:
    """One rendering of the chart: the parsed objects and NOTES.txt."""

    def __init__(self, values: dict[str, Any], release: str = RELEASE, namespace: str = NAMESPACE):
        self.values = values
        self.namespace = namespace
        files = chart().render(values, name=release, namespace=namespace, is_install=True)
        self.notes = files.pop(f"{chart().name}/templates/NOTES.txt", "")
        self.files = files
        self.objects: list[dict[str, Any]] = []
        for path, text in sorted(files.items()):
            for doc in yaml.safe_load_all(text):
                if doc is not None:
                    assert isinstance(doc, dict), f"{path}: a document is not a mapping"
                    self.objects.append(doc)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.all(kind)
        assert len(found) == 1, f"expected one {kind}, found {len(found)}"
        return found[0]

    def kinds(self) -> list[str]:
        return sorted(o["kind"] for o in self.objects)

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def pod(self) -> dict[str, Any]:
        return self.deployment["spec"]["template"]

    @property
    def container(self) -> dict[str, Any]:
        containers = self.pod["spec"]["containers"]
        assert len(containers) == 1, containers
        return containers[0]

    @property
    def webhook_config(self) -> dict[str, Any]:
        return self.one("MutatingWebhookConfiguration")

    @property
    def injection_config(self) -> dict[str, Any]:
        data = self.one("ConfigMap")["data"]
        assert list(data) == ["config.yaml"], list(data)
        config = yaml.safe_load(data["config.yaml"])
        assert isinstance(config, dict), config
        return config


@functools.lru_cache(maxsize=None)
def rendered(name: str) -> Rendered:
    return Rendered(load_values(name))


def render_error(values: dict[str, Any]) -> str:
    """The message of a rendering that must fail."""
    try:
        chart().render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    except helm.HelmError as e:
        return str(e)
    raise AssertionError(f"rendering with {values} should have failed")


# --------------------------------------------------------------------------------------------
# The webhook table: spec/injector.md section 1, stage A, in the order of WebhookSet::webhooks()


def expr(key: str, operator: str, values: list[str] | None = None) -> dict[str, Any]:
    """A matchExpressions entry as the API expects it: no `values` for (Does Not) Exist."""
    e: dict[str, Any] = {"key": key, "operator": operator}
    if values is not None:
        e["values"] = values
    return e


def selector(*exprs: dict[str, Any]) -> dict[str, Any]:
    return {"matchExpressions": list(exprs)}


def expected_webhooks(revision: str, namespaces_by_default: bool) -> list[tuple[str, dict, dict]]:
    """(prefix, namespaceSelector, objectSelector) of every webhook, in order."""
    not_false = expr(INJECT, "NotIn", ["false"])
    hooks = [
        (
            "rev.namespace.",
            selector(expr(REV, "In", [revision]), expr(NS_INJECTION, "DoesNotExist")),
            selector(not_false),
        ),
        (
            "rev.object.",
            selector(expr(REV, "DoesNotExist"), expr(NS_INJECTION, "DoesNotExist")),
            selector(not_false, expr(REV, "In", [revision])),
        ),
    ]
    if revision != "default":
        return hooks
    hooks += [
        (
            "namespace.",
            selector(expr(NS_INJECTION, "In", ["enabled"])),
            selector(not_false),
        ),
        (
            "object.",
            selector(expr(NS_INJECTION, "DoesNotExist"), expr(REV, "DoesNotExist")),
            selector(expr(INJECT, "In", ["true"]), expr(REV, "DoesNotExist")),
        ),
    ]
    if namespaces_by_default:
        hooks.append(
            (
                "auto.",
                selector(
                    expr(NS_INJECTION, "DoesNotExist"),
                    expr(REV, "DoesNotExist"),
                    expr(NS_NAME, "NotIn", SYSTEM_NAMESPACES),
                ),
                selector(expr(INJECT, "DoesNotExist"), expr(REV, "DoesNotExist")),
            )
        )
    return hooks


def webhooks_from_policy_rs() -> dict[str, tuple[dict, dict]]:
    """WebhookSet::webhooks() read from the Rust source: prefix -> (namespace, object)
    selectors, with `rev` standing for the revision. Reads the body token by token: a
    `WebhookKind::X` starts a webhook, `namespace_selector`/`object_selector` starts a
    selector, and `Requirement::new(..)`, `absent(..)` and `not_false()` add expressions."""
    source = POLICY_RS.read_text()
    consts = dict(re.findall(r'const (\w+): &str = "([^"]*)";', source))
    arrays = {
        name: re.findall(r'"([^"]*)"', body)
        for name, body in re.findall(r"const (\w+): \[&str; \d+\] = \[(.*?)\];", source, re.S)
    }
    start = source.index("pub fn webhooks(&self)")
    end = source.index("\n    }\n", start)
    body = source[start:end]
    prefixes = {
        "RevNamespace": "rev.namespace.",
        "RevObject": "rev.object.",
        "Namespace": "namespace.",
        "Object": "object.",
        "Auto": "auto.",
    }

    def value_list(text: str) -> list[str]:
        text = text.strip()
        if text.startswith("&["):
            items = [t.strip() for t in text[2:-1].split(",") if t.strip()]
            return [t.strip('"') if t.startswith('"') else ("rev" if t == "rev" else consts[t]) for t in items]
        return arrays[text.lstrip("&")]

    token = re.compile(
        r"WebhookKind::(?P<kind>\w+)"
        r"|(?P<sel>namespace_selector|object_selector)"
        r"|Requirement::new\(\s*(?P<key>\w+),\s*(?P<op>\w+),\s*(?P<vals>&\[[^\]]*\]|&\w+)\s*,?\s*\)"
        r"|absent\((?P<absent>\w+)\)"
        r"|(?P<notfalse>not_false\(\))"
    )
    hooks: dict[str, tuple[dict, dict]] = {}
    current: list[dict] | None = None
    kind = None
    for m in token.finditer(body):
        if m["kind"]:
            kind = prefixes[m["kind"]]
            hooks[kind] = (selector(), selector())
            current = None
        elif kind is None:
            continue  # the closures' own definitions, before the first webhook
        elif m["sel"]:
            current = hooks[kind][0 if m["sel"] == "namespace_selector" else 1]["matchExpressions"]
        elif m["key"]:
            op = m["op"]
            vals = value_list(m["vals"])
            current.append(expr(consts[m["key"]], op, vals if op in ("In", "NotIn") else None))
        elif m["absent"]:
            current.append(expr(consts[m["absent"]], "DoesNotExist"))
        elif m["notfalse"]:
            current.append(expr(consts["INJECT_KEY"], "NotIn", ["false"]))
    return hooks


# A tiny Kubernetes label-selector evaluator, to check what the rendered selectors select.


def matches(sel: dict[str, Any], labels: dict[str, str]) -> bool:
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in sel.get("matchExpressions") or []:
        key, op, values = e["key"], e["operator"], e.get("values") or []
        if op == "In" and not (key in labels and labels[key] in values):
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def reference_decision(revision: str, auto: bool, ns_name: str, ns: dict, pod: dict) -> str | None:
    """Which webhook the API server calls, from the rules spelled out in spec section 1
    ("What this means"), written independently of the selectors."""
    if pod.get(INJECT) == "false":
        return None  # the pod label false: the webhook is never called
    if NS_INJECTION in ns:
        # istio-injection beats istio.io/rev; only `enabled`, and only the default revision
        return "namespace." if revision == "default" and ns[NS_INJECTION] == "enabled" else None
    if REV in ns:  # a namespace revision beats a pod revision
        return "rev.namespace." if ns[REV] == revision else None
    if REV in pod:
        return "rev.object." if pod[REV] == revision else None
    if revision != "default":
        return None
    if pod.get(INJECT) == "true":
        return "object."
    if auto and INJECT not in pod and ns_name not in SYSTEM_NAMESPACES:
        return "auto."
    return None


# --------------------------------------------------------------------------------------------
# The injection config's keys, from injector/src/config.rs


def camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(w.capitalize() for w in rest)


def struct_keys(source: str, struct: str) -> list[str]:
    """The YAML keys of a serde struct: camelCase field names, or their `rename`."""
    m = re.search(r"pub struct " + struct + r" \{(.*?)\n\}", source, re.S)
    assert m, f"struct {struct} not found in {CONFIG_RS}"
    keys = []
    rename = None
    for line in m.group(1).splitlines():
        r = re.search(r'rename = "(\w+)"', line)
        if r:
            rename = r.group(1)
        f = re.match(r"\s*pub (\w+):", line)
        if f:
            keys.append(rename or camel(f.group(1)))
            rename = None
    return keys


# --------------------------------------------------------------------------------------------
# Tests


class Lint(unittest.TestCase):
    def test_lint_strict_with_every_values_file(self):
        for name in VALUES_FILES:
            with self.subTest(values=name):
                report = helm.lint(str(CHART), load_values(name), strict=True, namespace=NAMESPACE)
                self.assertEqual(report["errors"], [])
                # Severity 2 is a warning, 3 an error; only the "icon is recommended" info remains.
                serious = [m for m in report["messages"] if m["severity"] >= 2]
                self.assertEqual(serious, [])

    def test_lint_strict_with_oldest_supported_kubernetes(self):
        report = helm.lint(str(CHART), strict=True, namespace=NAMESPACE, kube_version="v1.29.0")
        self.assertEqual(report["errors"], [])

    def test_packaged_chart_leaves_out_the_tests(self):
        names = [f["name"] for f in chart().files]
        self.assertFalse([n for n in names if n.startswith("tests/")], names)


class KubernetesSchemas(unittest.TestCase):
    """kubernetes-validate --strict on every rendered manifest (built-in kinds); cert-manager's
    kinds, which it has no schema for, against the fields of cert-manager.io/v1 used here."""

    CERT_MANAGER_SCHEMAS = {
        "Issuer": {
            "type": "object",
            "additionalProperties": False,
            "required": ["apiVersion", "kind", "metadata", "spec"],
            "properties": {
                "apiVersion": {"const": "cert-manager.io/v1"},
                "kind": {"const": "Issuer"},
                "metadata": {"type": "object"},
                "spec": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"selfSigned": {"type": "object", "additionalProperties": False}},
                    "required": ["selfSigned"],
                },
            },
        },
        "Certificate": {
            "type": "object",
            "additionalProperties": False,
            "required": ["apiVersion", "kind", "metadata", "spec"],
            "properties": {
                "apiVersion": {"const": "cert-manager.io/v1"},
                "kind": {"const": "Certificate"},
                "metadata": {"type": "object"},
                "spec": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["secretName", "issuerRef"],
                    "properties": {
                        "secretName": {"type": "string"},
                        "dnsNames": {"type": "array", "items": {"type": "string"}},
                        "usages": {
                            "type": "array",
                            "items": {"enum": ["server auth", "digital signature", "key encipherment"]},
                        },
                        "duration": {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"},
                        "renewBefore": {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"},
                        "privateKey": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                                "size": {"type": "integer"},
                                "rotationPolicy": {"enum": ["Never", "Always"]},
                                "encoding": {"enum": ["PKCS1", "PKCS8"]},
                            },
                        },
                        "issuerRef": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "kind": {"type": "string"},
                                "group": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    }

    def test_kubernetes_validate_strict(self):
        for name in VALUES_FILES:
            r = rendered(name)
            builtin = [o for o in r.objects if not o["apiVersion"].startswith("cert-manager.io/")]
            with tempfile.TemporaryDirectory() as tmp:
                paths = []
                for i, obj in enumerate(builtin):
                    path = Path(tmp) / f"{i:02d}-{obj['kind']}.yaml"
                    path.write_text(yaml.safe_dump(obj))
                    paths.append(str(path))
                for version in KUBE_VERSIONS:
                    with self.subTest(values=name, kubernetes=version):
                        proc = subprocess.run(
                            [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, *paths],
                            capture_output=True,
                            text=True,
                        )
                        output = proc.stdout + proc.stderr
                        self.assertEqual(proc.returncode, 0, output)
                        self.assertNotIn("ERROR", output)
                        self.assertNotIn("WARN", output)
                        self.assertEqual(output.count("INFO"), len(paths), output)

    def test_cert_manager_objects_have_the_cert_manager_v1_shape(self):
        seen = 0
        for name in VALUES_FILES:
            for obj in rendered(name).objects:
                if obj["apiVersion"].startswith("cert-manager.io/"):
                    with self.subTest(values=name, kind=obj["kind"]):
                        jsonschema.validate(obj, self.CERT_MANAGER_SCHEMAS[obj["kind"]])
                        seen += 1
        self.assertGreaterEqual(seen, 3)

    def test_api_server_rules_that_schemas_do_not_express(self):
        """Rules of the admissionregistration API validation (beyond the OpenAPI schema)."""
        label_value = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?$")
        for name in VALUES_FILES:
            r = rendered(name)
            hooks = r.webhook_config["webhooks"]
            with self.subTest(values=name):
                names = [h["name"] for h in hooks]
                self.assertEqual(len(names), len(set(names)), "webhook names must be unique")
                for hook in hooks:
                    self.assertRegex(hook["name"], r"^[a-z0-9.-]+\.[a-z0-9-]+\.[a-z]+$")
                    if "timeoutSeconds" in hook:
                        self.assertTrue(1 <= hook["timeoutSeconds"] <= 30)
                    for sel in (hook["namespaceSelector"], hook["objectSelector"]):
                        for e in sel["matchExpressions"]:
                            if e["operator"] in ("In", "NotIn"):
                                self.assertTrue(e.get("values"), e)
                            else:
                                self.assertNotIn("values", e)
                            for v in e.get("values", []):
                                self.assertRegex(v, label_value)
                for obj in r.objects:
                    self.assertRegex(obj["metadata"]["name"], r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
                    if obj["kind"] in ("Service", "Deployment"):
                        self.assertLessEqual(len(obj["metadata"]["name"]), 63)


class Webhooks(unittest.TestCase):
    CASES = {
        # values file: (revision, enableNamespacesByDefault as the selectors see it)
        "default": ("default", False),
        "cert-manager": ("default", False),
        "cert-manager-issuer": ("default", False),
        "namespaces-by-default": ("default", True),
        "revision": ("canary", True),  # a named revision ignores enableNamespacesByDefault
        "custom": ("default", False),
    }

    def test_every_values_file_has_a_case(self):
        self.assertEqual(sorted(self.CASES), VALUES_FILES)

    def test_names_and_exact_selectors(self):
        for name, (revision, auto) in self.CASES.items():
            with self.subTest(values=name):
                hooks = rendered(name).webhook_config["webhooks"]
                got = [(h["name"], h["namespaceSelector"], h["objectSelector"]) for h in hooks]
                want = [(p + WEBHOOK_SUFFIX, ns, obj) for p, ns, obj in expected_webhooks(revision, auto)]
                self.assertEqual(got, want)

    def test_named_revision_installs_only_the_rev_webhooks(self):
        hooks = rendered("revision").webhook_config["webhooks"]
        self.assertEqual(
            [h["name"] for h in hooks],
            ["rev.namespace.sidecar-injector.istio.io", "rev.object.sidecar-injector.istio.io"],
        )

    def test_auto_webhook_only_with_enable_namespaces_by_default(self):
        for name, (revision, auto) in self.CASES.items():
            with self.subTest(values=name):
                names = [h["name"] for h in rendered(name).webhook_config["webhooks"]]
                self.assertEqual("auto." + WEBHOOK_SUFFIX in names, auto and revision == "default")

    def test_table_agrees_with_policy_rs(self):
        if not POLICY_RS.exists():
            self.skipTest(f"{POLICY_RS} not found (chart used outside the Skiff repository)")
        from_rust = webhooks_from_policy_rs()
        self.assertEqual(list(from_rust), ["rev.namespace.", "rev.object.", "namespace.", "object.", "auto."])
        for revision in ("default", "canary"):
            for p, ns, obj in expected_webhooks(revision, True):
                with self.subTest(webhook=p, revision=revision):
                    rust_ns, rust_obj = from_rust[p]
                    subst = lambda sel: {  # noqa: E731 - `rev` in the source is the revision
                        "matchExpressions": [
                            {**e, "values": [revision if v == "rev" else v for v in e["values"]]} if "values" in e else e
                            for e in sel["matchExpressions"]
                        ]
                    }
                    self.assertEqual(subst(rust_ns), ns)
                    self.assertEqual(subst(rust_obj), obj)

    def test_selectors_behave_as_spec_section_1_says(self):
        """Every combination of namespace and pod labels: at most one webhook matches (the API
        server calls the injector at most once), and it is the one the spec's rules name."""
        ns_injection = [None, "enabled", "disabled"]
        ns_rev = [None, "default", "canary", "other"]
        ns_names = ["apps", "kube-system", "local-path-storage"]
        pod_inject = [None, "true", "false", "yes", ""]
        pod_rev = [None, "default", "canary", "other"]
        for name, (revision, auto) in self.CASES.items():
            hooks = rendered(name).webhook_config["webhooks"]
            checked = 0
            for inj, nrev, nname, pinj, prev in itertools.product(ns_injection, ns_rev, ns_names, pod_inject, pod_rev):
                ns = {k: v for k, v in ((NS_INJECTION, inj), (REV, nrev)) if v is not None}
                pod = {k: v for k, v in ((INJECT, pinj), (REV, prev)) if v is not None}
                ns_labels = {**ns, NS_NAME: nname}  # set by the API server on every namespace
                hit = [
                    h["name"][: -len(WEBHOOK_SUFFIX)]
                    for h in hooks
                    if matches(h["namespaceSelector"], ns_labels) and matches(h["objectSelector"], pod)
                ]
                ctx = f"values={name} namespace={ns_labels} pod={pod}"
                self.assertLessEqual(len(hit), 1, f"{ctx}: {hit}")
                self.assertEqual(hit[0] if hit else None, reference_decision(revision, auto, nname, ns, pod), ctx)
                checked += 1
            self.assertEqual(checked, 3 * 4 * 3 * 5 * 4)

    def test_common_fields_of_every_webhook(self):
        for name in VALUES_FILES:
            r = rendered(name)
            custom = r.values.get("webhook", {})
            for hook in r.webhook_config["webhooks"]:
                with self.subTest(values=name, webhook=hook["name"]):
                    self.assertEqual(
                        hook["rules"],
                        [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
                    )
                    self.assertEqual(hook["failurePolicy"], "Fail")
                    self.assertEqual(hook["sideEffects"], "None")
                    self.assertEqual(hook["admissionReviewVersions"], ["v1"])
                    self.assertEqual(hook["reinvocationPolicy"], custom.get("reinvocationPolicy", "Never"))
                    if custom.get("timeoutSeconds") is None:
                        self.assertNotIn("timeoutSeconds", hook)  # the API server's 10 s default
                    else:
                        self.assertEqual(hook["timeoutSeconds"], custom["timeoutSeconds"])
                    self.assertEqual(
                        hook["clientConfig"],
                        {
                            "service": {
                                "name": r.one("Service")["metadata"]["name"],
                                "namespace": NAMESPACE,
                                "path": "/inject",
                                "port": 443,
                            }
                        },
                    )  # no caBundle and no url
                    self.assertNotIn("matchPolicy", hook)
                    self.assertNotIn("matchConditions", hook)
                    self.assertEqual(
                        sorted(hook),
                        sorted(
                            ["name", "clientConfig", "rules", "failurePolicy", "sideEffects", "admissionReviewVersions",
                             "reinvocationPolicy", "namespaceSelector", "objectSelector"]
                            + (["timeoutSeconds"] if "timeoutSeconds" in hook else [])
                        ),
                    )

    def test_custom_reinvocation_and_timeout(self):
        hooks = rendered("custom").webhook_config["webhooks"]
        self.assertEqual({h["reinvocationPolicy"] for h in hooks}, {"IfNeeded"})
        self.assertEqual({h["timeoutSeconds"] for h in hooks}, {7})

    def test_configuration_labels_and_ca_bundle_source(self):
        for name, (revision, _) in self.CASES.items():
            r = rendered(name)
            meta = r.webhook_config["metadata"]
            with self.subTest(values=name):
                self.assertEqual(meta["labels"][REV], revision)
                self.assertNotIn("namespace", meta)  # cluster-scoped
                annotations = meta.get("annotations") or {}
                if r.values.get("certManager", {}).get("enabled"):
                    cert = r.one("Certificate")["metadata"]
                    self.assertEqual(
                        annotations, {"cert-manager.io/inject-ca-from": f"{cert['namespace']}/{cert['name']}"}
                    )
                else:
                    self.assertEqual(annotations, {})

    def test_name_is_unique_per_release_and_namespace(self):
        a = Rendered({}, release="skiff", namespace="one").webhook_config["metadata"]["name"]
        b = Rendered({}, release="skiff", namespace="two").webhook_config["metadata"]["name"]
        self.assertNotEqual(a, b)


class InjectionConfigMap(unittest.TestCase):
    def test_default_config(self):
        r = rendered("default")
        version = chart().metadata["appVersion"]
        self.assertEqual(
            r.injection_config,
            {
                "policy": "enabled",
                "revision": "default",
                "proxyImage": f"ghcr.io/skiff-mesh/skiff-proxy:{version}",
                "initImage": f"ghcr.io/skiff-mesh/skiff-init:{version}",
            },
        )

    def test_revision_flows_into_the_config(self):
        self.assertEqual(rendered("revision").injection_config["revision"], "canary")

    def test_custom_config_is_passed_through_unchanged(self):
        values = load_values("custom")
        want = dict(values["injection"])
        want["revision"] = "default"
        want["proxyImage"] = "registry.example.com:5000/skiff/proxy:1.2.3"
        want["initImage"] = "registry.example.com:5000/skiff/init:1.2.4"
        self.assertEqual(rendered("custom").injection_config, want)

    def test_images_and_revision_cannot_be_set_twice(self):
        for key, value in (("proxyImage", "images.proxy"), ("initImage", "images.init"), ("revision", "revision")):
            with self.subTest(key=key):
                message = render_error({"injection": {key: "x"}})
                self.assertIn(f"injection.{key}", message)
                self.assertIn(value, message)

    def test_unknown_injection_key_is_refused_by_the_schema(self):
        message = render_error({"injection": {"proxyImag": "x"}})
        self.assertIn("proxyImag", message)

    def test_schema_knows_exactly_the_injectors_keys(self):
        if not CONFIG_RS.exists():
            self.skipTest(f"{CONFIG_RS} not found")
        source = CONFIG_RS.read_text()
        schema = chart().schema["properties"]["injection"]["properties"]
        self.assertEqual(sorted(schema), sorted(struct_keys(source, "InjectionConfig")))
        self.assertEqual(sorted(schema["startupProbe"]["properties"]), sorted(struct_keys(source, "StartupProbe")))
        self.assertEqual(sorted(schema["traffic"]["properties"]), sorted(struct_keys(source, "TrafficConfig")))
        self.assertEqual(sorted(schema["resources"]["properties"]), sorted(struct_keys(source, "Resources")))

    def test_values_yaml_documents_every_injection_key(self):
        if not CONFIG_RS.exists():
            self.skipTest(f"{CONFIG_RS} not found")
        text = (CHART / "values.yaml").read_text()
        section = text[text.index("\ninjection:") :]
        chart_owned = {"proxyImage", "initImage", "revision"}
        for key in struct_keys(CONFIG_RS.read_text(), "InjectionConfig"):
            if key in chart_owned:
                continue
            with self.subTest(key=key):
                self.assertRegex(section, rf"\n  (# )?{key}:")

    def test_config_is_mounted_as_a_directory(self):
        """No subPath: the kubelet then updates the file when the ConfigMap changes, and the
        injector reloads it."""
        for name in VALUES_FILES:
            r = rendered(name)
            with self.subTest(values=name):
                mount = [m for m in r.container["volumeMounts"] if m["name"] == "config"]
                self.assertEqual(mount, [{"name": "config", "mountPath": "/etc/skiff/config", "readOnly": True}])
                volume = [v for v in r.pod["spec"]["volumes"] if v["name"] == "config"]
                self.assertEqual(volume, [{"name": "config", "configMap": {"name": r.one("ConfigMap")["metadata"]["name"]}}])


class Deployment(unittest.TestCase):
    def test_replicas(self):
        self.assertEqual(rendered("default").deployment["spec"]["replicas"], 2)
        self.assertEqual(rendered("custom").deployment["spec"]["replicas"], 1)

    def test_images(self):
        version = chart().metadata["appVersion"]
        self.assertEqual(rendered("default").container["image"], f"ghcr.io/skiff-mesh/skiff-injector:{version}")
        self.assertEqual(rendered("default").container["imagePullPolicy"], "IfNotPresent")
        self.assertEqual(rendered("custom").container["image"], "registry.example.com:5000/skiff/injector:1.2.3-rc.1")
        self.assertEqual(rendered("custom").container["imagePullPolicy"], "Always")
        self.assertEqual(rendered("custom").pod["spec"]["imagePullSecrets"], [{"name": "regcred"}])

    def test_command_self_managed(self):
        for name, secret in CERT_SECRETS.items():
            r = rendered(name)
            with self.subTest(values=name):
                self.assertEqual(
                    r.container["command"] + r.container["args"],
                    [
                        "skiff-injector", "serve", "--port", "15017",
                        "--config", "/etc/skiff/config/config.yaml",
                        "--self-signed", "--cert-dir", "/var/run/skiff/certs",
                        "--webhook-config-name", r.webhook_config["metadata"]["name"],
                        "--service-name", r.one("Service")["metadata"]["name"],
                        "--service-namespace", NAMESPACE,
                        "--cert-secret", secret,
                    ],
                )

    def test_cert_secret_name_fits_long_release_names(self):
        r = Rendered({}, release="a-very-long-release-name-for-testing-the-limit-x", namespace="ns")
        args = r.container["args"]
        secret = args[args.index("--cert-secret") + 1]
        self.assertLessEqual(len(secret), 63)
        self.assertRegex(secret, r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
        self.assertTrue(secret.endswith("-certs"), secret)

    def test_command_cert_manager(self):
        for name in ("cert-manager", "cert-manager-issuer"):
            r = rendered(name)
            with self.subTest(values=name):
                self.assertEqual(
                    r.container["command"] + r.container["args"],
                    [
                        "skiff-injector", "serve", "--port", "15017",
                        "--config", "/etc/skiff/config/config.yaml",
                        "--tls-cert", "/etc/skiff/tls/tls.crt",
                        "--tls-key", "/etc/skiff/tls/tls.key",
                    ],
                )

    def test_probes_and_port(self):
        for name in VALUES_FILES:
            c = rendered(name).container
            with self.subTest(values=name):
                self.assertEqual(c["ports"], [{"name": "https-webhook", "containerPort": 15017, "protocol": "TCP"}])
                self.assertEqual(c["readinessProbe"]["httpGet"], {"path": "/ready", "port": 15017, "scheme": "HTTPS"})
                self.assertEqual(c["livenessProbe"]["httpGet"], {"path": "/healthz", "port": 15017, "scheme": "HTTPS"})

    def test_security_context(self):
        for name, uid, gid in (("default", 1337, 1337), ("custom", 2000, 3000)):
            r = rendered(name)
            with self.subTest(values=name):
                self.assertEqual(
                    r.container["securityContext"],
                    {
                        "runAsNonRoot": True,
                        "runAsUser": uid,
                        "runAsGroup": gid,
                        "allowPrivilegeEscalation": False,
                        "privileged": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                )
                self.assertEqual(
                    r.pod["spec"]["securityContext"],
                    {
                        "runAsNonRoot": True,
                        "runAsUser": uid,
                        "runAsGroup": gid,
                        "fsGroup": gid,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                )

    def test_root_is_refused(self):
        self.assertIn("runAsUser", render_error({"securityContext": {"runAsUser": 0, "runAsGroup": 1337}}))

    def test_resources_from_values(self):
        self.assertEqual(
            rendered("default").container["resources"],
            {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        )
        self.assertEqual(rendered("custom").container["resources"], load_values("custom")["resources"])

    def test_certificate_volumes_per_mode(self):
        for name in VALUES_FILES:
            r = rendered(name)
            cert_manager = r.values.get("certManager", {}).get("enabled", False)
            mounts = {m["name"]: m for m in r.container["volumeMounts"]}
            volumes = {v["name"]: v for v in r.pod["spec"]["volumes"]}
            with self.subTest(values=name):
                self.assertEqual(sorted(mounts), sorted(volumes))
                if cert_manager:
                    self.assertEqual(sorted(volumes), ["config", "tls"])
                    self.assertEqual(mounts["tls"], {"name": "tls", "mountPath": "/etc/skiff/tls", "readOnly": True})
                    self.assertEqual(
                        volumes["tls"]["secret"],
                        {"secretName": r.one("Certificate")["spec"]["secretName"], "defaultMode": 0o440},
                    )
                else:
                    self.assertEqual(sorted(volumes), ["certs", "config"])
                    self.assertEqual(mounts["certs"], {"name": "certs", "mountPath": "/var/run/skiff/certs"})
                    self.assertIn("emptyDir", volumes["certs"])

    def test_injector_pods_are_never_injected(self):
        for name in VALUES_FILES:
            labels = rendered(name).pod["metadata"]["labels"]
            with self.subTest(values=name):
                self.assertEqual(labels[INJECT], "false")
                self.assertNotIn(REV, labels)
        self.assertEqual(rendered("custom").pod["metadata"]["labels"]["team"], "platform")

    def test_no_webhook_selects_the_injector_pods(self):
        """Whatever the namespace's labels, the injector's own pods match no webhook, so a
        failing injector can always be restarted (failurePolicy is Fail)."""
        for name in VALUES_FILES:
            r = rendered(name)
            pod_labels = r.pod["metadata"]["labels"]
            for ns in ({}, {NS_INJECTION: "enabled"}, {REV: "default"}, {REV: "canary"}):
                ns_labels = {**ns, NS_NAME: NAMESPACE}
                for hook in r.webhook_config["webhooks"]:
                    with self.subTest(values=name, namespace=ns, webhook=hook["name"]):
                        self.assertFalse(
                            matches(hook["namespaceSelector"], ns_labels) and matches(hook["objectSelector"], pod_labels)
                        )

    def test_selector_labels(self):
        for name in VALUES_FILES:
            r = rendered(name)
            selector_labels = r.deployment["spec"]["selector"]["matchLabels"]
            pod_labels = r.pod["metadata"]["labels"]
            with self.subTest(values=name):
                self.assertTrue(selector_labels.items() <= pod_labels.items())
                self.assertEqual(r.one("Service")["spec"]["selector"], selector_labels)
                pdb = r.all("PodDisruptionBudget")
                self.assertEqual(pdb[0]["spec"]["selector"], {"matchLabels": selector_labels})

    def test_anti_affinity(self):
        r = rendered("default")
        self.assertEqual(
            r.pod["spec"]["affinity"],
            {
                "podAntiAffinity": {
                    "preferredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "weight": 100,
                            "podAffinityTerm": {
                                "topologyKey": "kubernetes.io/hostname",
                                "labelSelector": {"matchLabels": r.deployment["spec"]["selector"]["matchLabels"]},
                            },
                        }
                    ]
                }
            },
        )
        custom_affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["mesh"]}]}]}}}
        self.assertEqual(Rendered({"affinity": custom_affinity}).pod["spec"]["affinity"], custom_affinity)

    def test_scheduling_values(self):
        spec = rendered("custom").pod["spec"]
        self.assertEqual(spec["nodeSelector"], {"kubernetes.io/os": "linux"})
        self.assertEqual(spec["tolerations"], load_values("custom")["tolerations"])
        self.assertEqual(spec["priorityClassName"], "system-cluster-critical")
        self.assertEqual(rendered("custom").pod["metadata"]["annotations"], {"example.com/owner": "platform"})
        self.assertEqual(rendered("custom").container["env"], [{"name": "RUST_LOG", "value": "debug"}])
        for key in ("nodeSelector", "tolerations", "priorityClassName", "imagePullSecrets"):
            self.assertNotIn(key, rendered("default").pod["spec"])

    def test_rollout_keeps_an_injector_available(self):
        strategy = rendered("default").deployment["spec"]["strategy"]
        self.assertEqual(strategy, {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}})


class PodDisruptionBudgetAndService(unittest.TestCase):
    def test_pdb(self):
        self.assertEqual(rendered("default").one("PodDisruptionBudget")["spec"]["minAvailable"], 1)
        self.assertEqual(rendered("custom").one("PodDisruptionBudget")["spec"]["minAvailable"], "50%")
        self.assertEqual(Rendered({"podDisruptionBudget": {"enabled": False}}).all("PodDisruptionBudget"), [])

    def test_service_ports(self):
        for name in VALUES_FILES:
            svc = rendered(name).one("Service")
            with self.subTest(values=name):
                self.assertEqual(svc["spec"]["type"], "ClusterIP")
                self.assertEqual(
                    svc["spec"]["ports"], [{"name": "https-webhook", "port": 443, "targetPort": 15017, "protocol": "TCP"}]
                )


class Rbac(unittest.TestCase):
    GROUP = "admissionregistration.k8s.io"
    RESOURCE = "mutatingwebhookconfigurations"

    def rules(self, r: Rendered, by_name: bool) -> list[dict]:
        name = r.webhook_config["metadata"]["name"]
        list_watch = {"apiGroups": [self.GROUP], "resources": [self.RESOURCE], "verbs": ["list", "watch"]}
        if by_name:
            list_watch["resourceNames"] = [name]
        return [
            {"apiGroups": [self.GROUP], "resources": [self.RESOURCE], "resourceNames": [name], "verbs": ["get", "patch"]},
            list_watch,
        ]

    def test_self_managed_needs_only_its_own_webhook_configuration(self):
        for name, by_name in (("default", True), ("revision", True), ("namespaces-by-default", True), ("custom", False)):
            r = rendered(name)
            with self.subTest(values=name):
                role = r.one("ClusterRole")
                self.assertEqual(role["rules"], self.rules(r, by_name))
                binding = r.one("ClusterRoleBinding")
                self.assertEqual(
                    binding["roleRef"],
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]},
                )
                sa = r.one("ServiceAccount")["metadata"]
                self.assertEqual(sa["namespace"], NAMESPACE)
                self.assertEqual(
                    binding["subjects"], [{"kind": "ServiceAccount", "name": sa["name"], "namespace": NAMESPACE}]
                )
                self.assertEqual(r.pod["spec"]["serviceAccountName"], sa["name"])
                self.assertIs(r.pod["spec"]["automountServiceAccountToken"], True)

    def test_self_managed_may_share_only_its_own_certificate_secret(self):
        self_managed = [n for n in VALUES_FILES if not rendered(n).values.get("certManager", {}).get("enabled")]
        self.assertEqual(sorted(CERT_SECRETS), self_managed)
        for name, secret in CERT_SECRETS.items():
            r = rendered(name)
            with self.subTest(values=name):
                role = r.one("Role")
                self.assertEqual(role["metadata"]["namespace"], NAMESPACE)
                self.assertEqual(
                    role["rules"],
                    [
                        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [secret], "verbs": ["get", "update"]},
                        # create cannot be limited by name
                        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
                    ],
                )
                binding = r.one("RoleBinding")
                self.assertEqual(binding["metadata"]["namespace"], NAMESPACE)
                self.assertEqual(
                    binding["roleRef"],
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role["metadata"]["name"]},
                )
                sa = r.one("ServiceAccount")["metadata"]["name"]
                self.assertEqual(binding["subjects"], [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}])
                args = r.container["args"]
                self.assertEqual(args[args.index("--cert-secret") + 1], secret)

    def test_cert_manager_mode_has_no_api_access(self):
        for name in ("cert-manager", "cert-manager-issuer"):
            r = rendered(name)
            with self.subTest(values=name):
                self.assertNotIn("--cert-secret", r.container["args"])
                for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
                    self.assertEqual(r.all(kind), [], kind)
                self.assertIs(r.pod["spec"]["automountServiceAccountToken"], False)
                self.assertEqual(r.pod["spec"]["serviceAccountName"], r.one("ServiceAccount")["metadata"]["name"])

    def test_rbac_and_service_account_can_be_left_to_the_user(self):
        r = Rendered({"rbac": {"create": False}, "serviceAccount": {"create": False, "name": "existing"}})
        for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "ServiceAccount"):
            self.assertEqual(r.all(kind), [], kind)
        self.assertEqual(r.pod["spec"]["serviceAccountName"], "existing")
        self.assertIn("serviceAccount.name", render_error({"serviceAccount": {"create": False}}))

    def test_custom_service_account_name(self):
        r = rendered("custom")
        sa = r.one("ServiceAccount")["metadata"]
        self.assertEqual(sa["name"], "mesh-webhook")
        self.assertEqual(sa["annotations"], {"example.com/role": "injector"})


class CertManager(unittest.TestCase):
    def test_objects_only_in_cert_manager_mode(self):
        for name in VALUES_FILES:
            r = rendered(name)
            enabled = r.values.get("certManager", {}).get("enabled", False)
            with self.subTest(values=name):
                self.assertEqual(len(r.all("Certificate")), 1 if enabled else 0)
                own_issuer = enabled and not r.values["certManager"].get("issuerRef")
                self.assertEqual(len(r.all("Issuer")), 1 if own_issuer else 0)
                self.assertFalse([o for o in r.objects if o["apiVersion"].startswith("cert-manager.io/")
                                  and o["kind"] not in ("Issuer", "Certificate")])

    def test_certificate_for_the_service(self):
        r = rendered("cert-manager")
        svc = r.one("Service")["metadata"]["name"]
        spec = r.one("Certificate")["spec"]
        self.assertEqual(
            spec["dnsNames"],
            [svc, f"{svc}.{NAMESPACE}", f"{svc}.{NAMESPACE}.svc", f"{svc}.{NAMESPACE}.svc.cluster.local"],
        )
        self.assertIn("server auth", spec["usages"])
        issuer = r.one("Issuer")
        self.assertEqual(issuer["spec"], {"selfSigned": {}})
        self.assertEqual(issuer["metadata"]["namespace"], NAMESPACE)
        self.assertEqual(
            spec["issuerRef"], {"name": issuer["metadata"]["name"], "kind": "Issuer", "group": "cert-manager.io"}
        )
        self.assertNotIn("duration", spec)
        self.assertNotIn("renewBefore", spec)

    def test_user_named_issuer(self):
        spec = rendered("cert-manager-issuer").one("Certificate")["spec"]
        self.assertEqual(spec["issuerRef"], {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
        self.assertEqual(spec["duration"], "2160h")
        self.assertEqual(spec["renewBefore"], "360h")
        self.assertIn("issuerRef.name", render_error({"certManager": {"enabled": True, "issuerRef": {"kind": "Issuer"}}}))


class ValuesFile(unittest.TestCase):
    def test_every_value_has_a_comment(self):
        """Every key in values.yaml has a comment line right above it (free-form
        Kubernetes maps under resources.requests/limits excepted)."""
        lines = (CHART / "values.yaml").read_text().splitlines()
        stack: list[tuple[int, str]] = []
        missing = []
        for i, line in enumerate(lines):
            m = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
            if not m:
                continue
            indent, key = len(m.group(1)), m.group(2)
            while stack and stack[-1][0] >= indent:
                stack.pop()
            parents = [k for _, k in stack]
            stack.append((indent, key))
            if parents[:1] == ["resources"] and len(parents) == 2:
                continue
            if i == 0 or not lines[i - 1].strip().startswith("#"):
                missing.append(".".join(parents + [key]))
        self.assertEqual(missing, [])

    def test_schema_rejects_bad_values(self):
        for values, needle in (
            ({"webhook": {"reinvocationPolicy": "Sometimes"}}, "reinvocationPolicy"),
            ({"webhook": {"timeoutSeconds": 31}}, "timeoutSeconds"),
            ({"webhook": {"timeoutSeconds": 0}}, "timeoutSeconds"),
            ({"revision": "not a label"}, "revision"),
            ({"replicaCount": 0}, "replicaCount"),
            ({"images": {"proxy": {"repository": "x/proxy:1.0"}}}, "repository"),
            ({"images": {"init": {"repository": "x/init:10"}}}, "repository"),
            ({"images": {"injector": {"repository": "x/injector@sha256"}}}, "repository"),
            ({"certManager": {"enabled": "yes"}}, "enabled"),
            ({"certSecretName": "Not_A_Secret"}, "certSecretName"),
            ({"certSecretName": "a" * 254}, "certSecretName"),
            ({"webhooks": {}}, "webhooks"),
            ({"injection": {"policy": "sometimes"}}, "policy"),
        ):
            with self.subTest(values=values):
                self.assertIn(needle, render_error(values))

    def test_names_stay_short_with_long_release_names(self):
        r = Rendered({}, release="a-very-long-release-name-for-testing-the-limit-x", namespace="ns")
        for obj in r.objects:
            if obj["kind"] in ("Service", "Deployment", "ConfigMap", "ServiceAccount", "PodDisruptionBudget"):
                self.assertLessEqual(len(obj["metadata"]["name"]), 63, obj["metadata"]["name"])
        self.assertEqual(Rendered({}, release="my-skiff").one("Service")["metadata"]["name"], "my-skiff-injector")


class Notes(unittest.TestCase):
    def test_default_revision_notes(self):
        notes = rendered("default").notes
        self.assertIn("Secret\n   skiff-injector-certs", notes)
        self.assertIn("kubectl label namespace <namespace> istio-injection=enabled", notes)
        self.assertIn('sidecar.istio.io/inject: "true"', notes)
        self.assertIn(rendered("default").webhook_config["metadata"]["name"], notes)
        self.assertIn(f"deployment/{rendered('default').deployment['metadata']['name']}", notes)
        self.assertIn("istio-init", notes)
        self.assertIn("istio-proxy", notes)

    def test_named_revision_notes(self):
        notes = rendered("revision").notes
        self.assertIn("istio.io/rev=canary", notes)
        self.assertNotIn("istio-injection=enabled", notes)

    def test_cert_manager_notes(self):
        self.assertIn("kubectl -n skiff-system get certificate", rendered("cert-manager").notes)


class InjectorAcceptsTheConfig(unittest.TestCase):
    """The rendered config.yaml is read by the real injector (`inject --config`), so a key the
    chart writes that the injector does not know, or a value it refuses, fails here."""

    def setUp(self):
        if os.environ.get("SKIFF_CHART_SKIP_CARGO") == "1":
            self.skipTest("SKIFF_CHART_SKIP_CARGO=1")
        if shutil.which("cargo") is None:
            self.skipTest("cargo is not installed")
        if not (REPO / "Cargo.toml").exists() or not GOLDEN_POD.exists():
            self.skipTest("not inside the Skiff repository")

    def inject(self, command: list[str], config: dict[str, Any]) -> subprocess.CompletedProcess:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(yaml.safe_dump(config))
        try:
            return subprocess.run(
                [*command, "inject", "--config", f.name, "-f", str(GOLDEN_POD)],
                cwd=REPO,
                capture_output=True,
                text=True,
            )
        finally:
            os.unlink(f.name)

    def test_rendered_configs_are_accepted(self):
        # One `cargo run` (it builds the injector if needed), for the default values...
        default = rendered("default").injection_config
        proc = self.inject(["cargo", "run", "-q", "-p", "skiff-injector", "--bin", "skiff-injector", "--"], default)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn(default["proxyImage"], proc.stdout)
        self.assertIn("istio-proxy", proc.stdout)
        # ...then the binary it built, without building again, for the other values files.
        target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
        binary = target / "debug" / "skiff-injector"
        if not binary.exists():
            return
        for name in VALUES_FILES:
            with self.subTest(values=name):
                config = rendered(name).injection_config
                proc = self.inject([str(binary)], config)
                self.assertEqual(proc.returncode, 0, proc.stderr)
                self.assertIn(config["proxyImage"], proc.stdout)


if __name__ == "__main__":
    unittest.main()
