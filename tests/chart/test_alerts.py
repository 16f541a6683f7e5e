"""The chart's PrometheusRule: valid for promtool, each alert unit-tested firing and silent,
every metric it names defined by the runtime or the operator, every runbook a docs heading.

promtool comes from `scripts/prometheus install` (a prerequisite of `make test`); without it
these tests error and say so rather than skip, since a skipped alert test passes silently.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from swiftdiffusion.operator import metrics as op
from swiftdiffusion.runtime import metric_names as names
from swiftdiffusion.runtime.lora.metrics import LoraMetrics
from swiftdiffusion.runtime.serving.metrics import RuntimeMetrics
from tests.chart.helm import CHART, Helm, by_kind, one
from tests.monitoring.prometheus import binary

REPO = CHART.parents[1]
UNIT_TESTS = sorted((Path(__file__).parent / "alerts").glob("*.yaml"))
RUNBOOKS = REPO / "docs" / "monitoring-gitops.md"
ENABLED = ("alerts.enabled=true", "serviceMonitor.enabled=true")
COUNTER_FUNCTIONS = {"rate", "irate", "increase", "resets"}
# What each group's summaries must name: where a runtime alert's pool is, or the operator's kind.
SUBJECTS = {"swiftdiffusion-runtime": ("namespace", "pool"), "swiftdiffusion-operator": ("namespace", "kind")}


@pytest.fixture(scope="module")
def promtool() -> Path:
    return binary("promtool")


@pytest.fixture(scope="module")
def rules(helm: Helm) -> dict[str, Any]:
    """The rule groups as `helm template` renders them with the default thresholds."""
    return one(helm.template(*ENABLED), "PrometheusRule")["spec"]


@pytest.fixture(scope="module")
def rules_dir(rules: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the rendered rules as `rules.yaml`, the name the unit tests load."""
    folder = tmp_path_factory.mktemp("alerts")
    (folder / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    return folder


def alerts(rules: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


# --- the metric-name check: a small PromQL tokenizer, enough to find every vector selector ---

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+\b)
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<identifier>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<punctuation>[(){},]|[-+*/%^=!<>~@]+)
""", re.VERBOSE)
_GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
_KEYWORDS = _GROUPING | {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}


@dataclass(frozen=True)
class Selector:
    """A metric an expression reads, and the function it is passed to (None: none)."""

    metric: str
    function: str | None


def tokens(expr: str) -> list[tuple[str, str]]:
    """(kind, text) of every token but spaces; refuses what it cannot read rather than guess."""
    found: list[tuple[str, str]] = []
    position = 0
    for match in _TOKEN.finditer(expr):
        if match.start() != position:
            break
        position = match.end()
        if match.lastgroup != "space":
            found.append((str(match.lastgroup), match.group()))
    if position != len(expr):
        raise ValueError(f"cannot read {expr[position:position + 20]!r} in {expr!r}")
    return found


def _skip_group(items: list[tuple[str, str]], start: int, opening: str, closing: str) -> int:
    """Index after the bracket that closes the one at `start`."""
    depth = 0
    for index in range(start, len(items)):
        depth += {opening: 1, closing: -1}.get(items[index][1], 0)
        if depth == 0:
            return index + 1
    raise ValueError(f"unbalanced {opening}{closing}")


def selectors(expr: str) -> list[Selector]:
    """The vector selectors of `expr`: identifiers that are no function, keyword, label (inside
    `{}`) or grouping label (`by (...)`, `on (...)`, ...)."""
    if "__name__" in expr:
        raise ValueError(f"name metrics by their name, not a __name__ matcher: {expr!r}")
    items = tokens(expr)
    found: list[Selector] = []
    calls: list[str | None] = []  # the function (None: a bare parenthesis) each open "(" belongs to
    index = 0
    while index < len(items):
        kind, text = items[index]
        following = items[index + 1][1] if index + 1 < len(items) else ""
        if text == "{":
            index = _skip_group(items, index, "{", "}")
            continue
        if kind == "identifier" and text in _GROUPING and following == "(":
            index = _skip_group(items, index + 1, "(", ")")
            continue
        if kind == "identifier" and following in ("by", "without"):  # `sum by (pool) (...)`
            index = _skip_group(items, index + 2, "(", ")")  # now at the aggregation's own "("
            calls.append(text)
            index += 1
            continue
        if kind == "identifier" and following == "(":
            calls.append(text)
            index += 2
            continue
        if text == "(":
            calls.append(None)
        elif text == ")":
            calls.pop()
        elif kind == "identifier" and text.lower() not in _KEYWORDS:
            found.append(Selector(text, calls[-1] if calls else None))
        index += 1
    return found


def _sample_names(name: str, kind: str) -> dict[str, str]:
    """Series a metric family is scraped as, each with what it is read like: a counter or gauge."""
    if kind == "counter":
        return {f"{name}_total": "counter"}
    if kind == "histogram":
        return {f"{name}_bucket": "counter", f"{name}_sum": "counter", f"{name}_count": "counter"}
    return {name: "gauge"}


def defined_series() -> dict[str, str]:
    """Every series the runtime (names in metric_names) and the operator (metrics) export."""
    registry = CollectorRegistry()
    RuntimeMetrics("base", registry)
    LoraMetrics(registry)
    listed = set(names.ALL)
    runtime = [f for f in registry.collect() if f.name in listed or f"{f.name}_total" in listed]
    operator = [c.describe()[0] for c in vars(op).values() if isinstance(c, MetricWrapperBase)]
    return {series: kind for family in [*runtime, *operator]
            for series, kind in _sample_names(family.name, family.type).items()}


def undefined_metrics(expr: str) -> set[str]:
    defined = defined_series()
    return {s.metric for s in selectors(expr) if s.metric not in defined}


def misread_metrics(expr: str) -> set[str]:
    """Counters read without rate(), increase() or resets(), and gauges read through them."""
    defined = defined_series()
    return {s.metric for s in selectors(expr)
            if (defined.get(s.metric) == "counter") != (s.function in COUNTER_FUNCTIONS)}


def misspelled(expr: str) -> tuple[str, str]:
    """`expr` with the last letter of its first metric's name changed, and that new name."""
    metric = selectors(expr)[0].metric
    typo = metric[:-1] + ("x" if metric[-1] != "x" else "y")
    return expr.replace(metric, typo, 1), typo


# --- the tests ---

def test_the_rendered_rules_pass_promtool_check_rules(promtool: Path, rules: dict[str, Any], rules_dir: Path) -> None:
    result = subprocess.run([str(promtool), "check", "rules", str(rules_dir / "rules.yaml")],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts(rules))} rules found" in result.stdout


@pytest.mark.parametrize("unit_test", UNIT_TESTS, ids=lambda path: path.stem)
def test_promtool_unit_tests_of_the_alerts_pass(promtool: Path, rules_dir: Path, unit_test: Path) -> None:
    shutil.copy(unit_test, rules_dir / unit_test.name)
    result = subprocess.run([str(promtool), "test", "rules", unit_test.name],
                            cwd=rules_dir, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_stays_silent(rules: dict[str, Any]) -> None:
    cases = [case for path in UNIT_TESTS for group in yaml.safe_load(path.read_text())["tests"]
             for case in group["alert_rule_test"]]
    rendered = {rule["alert"] for rule in alerts(rules)}
    assert {case["alertname"] for case in cases} <= rendered, "a unit test of an alert that does not exist passes vacuously"
    for alert in rendered:
        outcomes = {bool(case.get("exp_alerts")) for case in cases if case["alertname"] == alert}
        assert outcomes == {True, False}, f"{alert}: unit tests that fire and stay silent, got {outcomes}"


def test_every_metric_an_alert_names_is_defined_by_the_runtime_or_the_operator(rules: dict[str, Any]) -> None:
    for rule in alerts(rules):
        assert selectors(rule["expr"]), rule["alert"]
        assert not undefined_metrics(rule["expr"]), f"{rule['alert']} reads undefined metrics"


def test_a_misspelled_metric_name_in_any_alert_fails_the_check(rules: dict[str, Any]) -> None:
    for rule in alerts(rules):
        expr, typo = misspelled(rule["expr"])
        assert undefined_metrics(expr) == {typo}, rule["alert"]


def test_counters_are_read_through_rate_and_gauges_are_not(rules: dict[str, Any]) -> None:
    for rule in alerts(rules):
        assert not misread_metrics(rule["expr"]), rule["alert"]
    gauge_rate = f"rate({names.QUEUE_DEPTH}[5m]) + {names.REQUESTS_TOTAL}"
    assert misread_metrics(gauge_rate) == {names.QUEUE_DEPTH, names.REQUESTS_TOTAL}


def test_the_tokenizer_skips_labels_grouping_functions_and_durations() -> None:
    expr = ('sum by (pool, code) (rate(a_total{code!~"OK|x", pool="b_total"}[5m] offset 1h)) '
            '/ on (pool) group_left (kind) max without (pod) (g) > bool 0.5e1 unless c_total @ 100')
    assert selectors(expr) == [Selector("a_total", "rate"), Selector("g", "max"), Selector("c_total", None)]


def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook_heading(rules: dict[str, Any]) -> None:
    headings = {re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
                for line in RUNBOOKS.read_text().splitlines() if line.startswith("### ")}
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
            annotations = rule["annotations"]
            assert set(annotations) == {"summary", "description", "runbook_url"}, rule["alert"]
            subject = SUBJECTS[group["name"]]
            assert all(f"{{{{ $labels.{label} }}}}" in annotations["summary"] for label in subject), rule["alert"]
            page, anchor = annotations["runbook_url"].split("#")
            assert page == "https://github.com/swiftdiffusion/swiftdiffusion/blob/main/docs/monitoring-gitops.md"
            assert anchor == rule["alert"].lower() and anchor in headings, f"no heading '### {rule['alert']}'"


def test_annotations_name_only_labels_the_expression_keeps(rules: dict[str, Any]) -> None:
    for rule in alerts(rules):
        kept = set.intersection(*({label.strip() for label in by.split(",")}
                                  for by in re.findall(r"\bby \(([^)]*)\)", rule["expr"])))
        used = set(re.findall(r"\$labels\.(\w+)", " ".join(rule["annotations"].values())))
        assert used <= kept, f"{rule['alert']} annotations read {used - kept}, which its expression drops"


def test_no_rule_renders_by_default(helm: Helm) -> None:
    assert not by_kind(helm.template(), "PrometheusRule")


def test_alerts_without_the_service_monitors_are_refused(helm: Helm) -> None:
    result = helm.run("template", "swd", str(CHART), "--set", "alerts.enabled=true", check=False)
    assert result.returncode != 0
    assert "alerts.enabled needs serviceMonitor.enabled" in result.stderr


def test_without_runtime_pool_scraping_only_the_operator_alerts_render(helm: Helm) -> None:
    spec = one(helm.template(*ENABLED, "serviceMonitor.runtimePools=false"), "PrometheusRule")["spec"]
    assert [rule["alert"] for rule in alerts(spec)] == ["SwiftDiffusionOperatorReconcileErrors"]


def test_thresholds_durations_severities_and_labels_come_from_values(helm: Helm) -> None:
    rule = one(helm.template(*ENABLED, "alerts.generateErrors.percent=25", "alerts.generateErrors.for=30m",
                             "alerts.generateErrors.severity=page", "alerts.labels.release=kube-prometheus-stack",
                             "alerts.runbookUrl=https://wiki.example.com/swd", release="prod", namespace="ops"),
               "PrometheusRule")
    assert rule["metadata"]["name"] == "prod-swiftdiffusion" and rule["metadata"]["namespace"] == "ops"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (errors,) = [r for r in alerts(rule["spec"]) if r["alert"] == "SwiftDiffusionGenerateErrors"]
    assert errors["expr"].endswith("> 0.25") and errors["for"] == "30m" and errors["labels"]["severity"] == "page"
    assert "above 25% (alerts.generateErrors.percent)" in errors["annotations"]["description"]
    assert errors["annotations"]["runbook_url"] == "https://wiki.example.com/swd#swiftdiffusiongenerateerrors"


@pytest.mark.parametrize("bad", ["alerts.generateErrors.percent=101", "alerts.baseQueueSaturated.for=soon",
                                 "alerts.operatorReconcileErrors.errorsPerMinute=-1", "alerts.runtimePodRestarted.restarts=0",
                                 "alerts.baseQueueSaturated.inFlightPerReplica=0",
                                 "alerts.loraLoadsFailing.severity=Not A Label", "alerts.runbookUrl=docs#x",
                                 "alerts.latentParallelFollowerDown.unavailableRatio=50"])
def test_the_values_schema_rejects_invalid_alert_settings(helm: Helm, bad: str) -> None:
    result = helm.run("template", "swd", str(CHART), *(arg for value in (*ENABLED, bad) for arg in ("--set", value)),
                      check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr


def test_lint_passes_in_strict_mode_with_alerts_enabled(helm: Helm) -> None:
    out = helm.run("lint", "--strict", str(CHART), *(arg for value in ENABLED for arg in ("--set", value))).stdout
    assert "1 chart(s) linted, 0 chart(s) failed" in out
