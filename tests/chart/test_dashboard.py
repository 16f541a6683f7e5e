"""The Grafana dashboard reads back with the SDK, queries only metrics the code defines, each the
way its type allows, and narrows every runtime query by the template variables.

The checked-in JSON equals the generated one: tests/reconcile/test_crd.py checks every file
`generate.artifacts()` writes, charts/swiftdiffusion/dashboards/swiftdiffusion.json included.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any

import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import prometheus, timeseries
from prometheus_client import REGISTRY, CollectorRegistry

from swiftdiffusion.operator import dashboard, render
from swiftdiffusion.operator import metrics as op
from swiftdiffusion.operator import model as m
from swiftdiffusion.runtime import metric_names as names
from swiftdiffusion.runtime.lora.metrics import LoraMetrics
from swiftdiffusion.runtime.serving.metrics import RuntimeMetrics

TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|\[[^\]]*\]|=~|!~|!=|[A-Za-z_:][\w:]*|\d+(?:\.\d+)?|\S')
IDENTIFIER = re.compile(r"[A-Za-z_:][\w:]*")
LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
"""Keywords a label list may follow; only `by`'s labels must be carried by the series it groups."""
BINARY_KEYWORDS = {"and", "or", "unless", "bool", "offset"}
RATES = {"rate", "increase"}
VARIABLE = re.compile(r"\$\{?(\w+)")
GRAFANA_BUILTINS = {"__rate_interval", "__all"}


@dataclass(frozen=True)
class Series:
    """A sample name we can query: its metric's type and name (as metric_names spells it), the
    labels it carries once scraped, and the label the workflow and pool variables filter it by
    (None: the operator's)."""

    kind: str
    metric: str
    labels: frozenset[str]
    pool_label: str | None


@dataclass(frozen=True)
class Reference:
    """One series a query reads: the calls around it (outermost first), the labels it is grouped
    by (or, in `label_values`, listed by) and its label matchers."""

    series: str
    calls: tuple[str, ...]
    labels: frozenset[str]
    matchers: frozenset[tuple[str, str, str]]


def _samples(families: list[Any], scraped: set[str], pool_label: str | None) -> dict[str, Series]:
    return {sample.name: Series(family.type, f"{family.name}_total" if family.type == "counter" else family.name,
                                frozenset(sample.labels) | scraped, pool_label)
            for family in families for sample in family.samples if not sample.name.endswith("_created")}


def defined_series() -> dict[str, Series]:
    """Sample name -> Series, read from the real metric objects plus the kube-state-metrics gauges.

    Scraping adds `namespace` to every series and the runtime ServiceMonitor adds `pool`.
    """
    runtime = CollectorRegistry()
    base = RuntimeMetrics("base", runtime)
    base.count("OK")
    base.observe_load("base", 1.0)
    LoraMetrics(runtime)
    op.RECONCILES.labels("workflow")
    op.RECONCILE_ERRORS.labels("workflow", "true")
    op.RECONCILE_SECONDS.labels("workflow")
    op.API_WRITES.labels("deployments")
    operator = [f for f in REGISTRY.collect() if f.name.startswith(f"{names.PREFIX}_operator")]
    kube_state = {name: Series("gauge", name, labels, dashboard.DEPLOYMENT_LABEL)
                  for name, labels in dashboard.KUBE_STATE_METRICS_GAUGES.items()}
    return {**_samples(list(runtime.collect()), {"namespace", dashboard.POOL_LABEL}, dashboard.POOL_LABEL),
            **_samples(operator, {"namespace"}, None), **kube_state}


def _matchers(tokens: list[str], start: int) -> tuple[frozenset[tuple[str, str, str]], int]:
    """The `{label op "value", ...}` at `start` (if any) and the index of its last token."""
    if start >= len(tokens) or tokens[start] != "{":
        return frozenset(), start - 1
    end = tokens.index("}", start)
    inside = [t for t in tokens[start + 1:end] if t != ","]
    return frozenset((inside[k], inside[k + 1], inside[k + 2][1:-1]) for k in range(0, len(inside), 3)), end


def _label_list(tokens: list[str], open_paren: int) -> tuple[frozenset[str], int]:
    """The labels of `(a, b)` starting at `open_paren`, and the index of its ")"."""
    end = tokens.index(")", open_paren)
    return frozenset(t for t in tokens[open_paren + 1:end] if t != ","), end


def references(expr: str) -> list[Reference]:
    """Every series `expr` names, read the way PromQL (and Grafana's `label_values`) nests them."""
    tokens = TOKEN.findall(expr)
    found: list[Reference] = []
    frames: list[tuple[str, frozenset[str], int]] = []  # per open "(": its call, the call's `by`, first ref inside
    call, grouping = "", frozenset[str]()
    i = 0
    while i < len(tokens):
        token, following = tokens[i], tokens[i + 1] if i + 1 < len(tokens) else ""
        if token in LABEL_LISTS:
            if following == "(":
                labels, i = _label_list(tokens, i + 1)
                grouping = labels if token == "by" else grouping
        elif token == "(":
            frames.append((call, grouping, len(found)))
            call, grouping = "", frozenset()
        elif token == ")":
            _, labels, first = frames.pop()
            if tokens[i + 1:i + 3] == ["by", "("]:  # `sum(...) by (labels)`
                postfix, i = _label_list(tokens, i + 2)
                labels |= postfix
            found[first:] = [replace(r, labels=r.labels | labels) for r in found[first:]]
        elif IDENTIFIER.fullmatch(token) and token not in BINARY_KEYWORDS:
            if following == "(" or following in LABEL_LISTS:
                call = token
            elif frames and frames[-1][0] == "label_values" and tokens[i - 1] == ",":
                found[-1] = replace(found[-1], labels=found[-1].labels | {token})
            else:
                matchers, i = _matchers(tokens, i + 1)
                found.append(Reference(token, tuple(c for c, _, _ in frames if c), frozenset(), matchers))
        i += 1
    return found


def problems(expr: str, defined: dict[str, Series]) -> list[str]:
    """What is wrong with the series `expr` reads: names nothing defines, reads their type does
    not allow (counters through rate()/increase(), histograms through _bucket/_sum/_count),
    labels they do not carry."""
    refs = references(expr)
    if not refs:
        return [f"{expr!r} reads no series"]
    found = []
    for ref in refs:
        known = defined.get(ref.series)
        if known is None:
            bucket = defined.get(f"{ref.series}_bucket")
            found.append(f"the histogram {ref.series} read without _bucket, _sum or _count" if bucket
                         else f"{ref.series} is no metric the code defines")
            continue
        innermost = ref.calls[-1] if ref.calls else ""
        if innermost in RATES and known.kind not in ("counter", "histogram"):
            found.append(f"{innermost}() over the {known.kind} {ref.series}")
        if innermost not in RATES | {"label_values"} and known.kind != "gauge":
            found.append(f"the {known.kind} {ref.series} read without rate() or increase()")
        if "histogram_quantile" in ref.calls and not (known.kind == "histogram" and ref.series.endswith("_bucket")):
            found.append(f"histogram_quantile over {ref.series}, not a histogram's _bucket")
        missing = (ref.labels | {label for label, _, _ in ref.matchers}) - known.labels
        if missing:
            found.append(f"{ref.series} carries no label {sorted(missing)}")
    return found


def targets(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for p in board["panels"] for t in p.get("targets", [])]


def query_variables(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in board["templating"]["list"] if v["type"] == "query"]


def named_expressions() -> list[Any]:
    """Every query (panels' and variables'), named by its panel and refId or its variable."""
    board = dashboard.dashboard()
    return ([pytest.param(t["expr"], id=f'{p["title"]} {t["refId"]}') for p in board["panels"]
             for t in p.get("targets", [])]
            + [pytest.param(v["definition"], id=f'${v["name"]}') for v in query_variables(board)])


def expressions() -> list[str]:
    return [param.values[0] for param in named_expressions()]


def test_the_dashboard_reads_back_with_the_sdk_and_encodes_unchanged() -> None:
    board = dashboard.dashboard()
    model = dashboard.read(board)
    assert json.loads(JSONEncoder().encode(model)) == board
    panels = [p for p in model.panels if p.type_val == "timeseries"]
    assert panels and all(isinstance(p.options, timeseries.Options) for p in panels)
    assert all(isinstance(t, prometheus.Dataquery) for p in panels for t in p.targets)


def test_every_panel_has_targets_with_distinct_ref_ids_on_the_data_source_variable() -> None:
    for panel in dashboard.dashboard()["panels"]:
        if panel["type"] == "row":
            continue
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(set(refs)) == len(refs), panel["title"]
        assert all(t["expr"] and t["legendFormat"] for t in panel["targets"]), panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["description"] and panel["fieldConfig"]["defaults"]["unit"], panel["title"]


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    panels = dashboard.dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = [(p["gridPos"]["x"] + dx, p["gridPos"]["y"] + dy) for p in panels
             for dx in range(p["gridPos"]["w"]) for dy in range(p["gridPos"]["h"])]
    assert len(cells) == len(set(cells))


def test_the_runtime_registers_every_name_metric_names_lists() -> None:
    metrics = {s.metric for s in defined_series().values()}
    missing = set(names.ALL) - metrics
    assert not missing, f"metric_names lists metrics the runtime does not register: {missing}"


@pytest.mark.parametrize("expr", named_expressions())
def test_every_series_a_query_reads_is_defined_with_the_type_the_query_assumes(expr: str) -> None:
    assert problems(expr, defined_series()) == []


@pytest.mark.parametrize(("expr", "problem"), [
    ('sum by (pool) (rate(swiftdiffusion_no_such_total{namespace=~"$namespace"}[5m]))',
     "swiftdiffusion_no_such_total is no metric the code defines"),
    ("rate(node_cpu_seconds_total[5m])", "node_cpu_seconds_total is no metric the code defines"),
    ('sum by (pool) (rate(swiftdiffusion_queue_depth{pool=~".*"}[5m]))',
     "rate() over the gauge swiftdiffusion_queue_depth"),
    ("sum by (pool) (swiftdiffusion_requests_total)",
     "the counter swiftdiffusion_requests_total read without rate() or increase()"),
    ("histogram_quantile(0.9, sum by (le) (rate(swiftdiffusion_step_seconds[5m])))",
     "the histogram swiftdiffusion_step_seconds read without _bucket, _sum or _count"),
    ("histogram_quantile(0.9, sum by (le) (rate(swiftdiffusion_step_seconds_count[5m])))",
     "histogram_quantile over swiftdiffusion_step_seconds_count"),
    ("sum by (workflow) (increase(swiftdiffusion_requests_total[1h]))",
     "swiftdiffusion_requests_total carries no label ['workflow']"),
    ("sum(swiftdiffusion_queue_depth) by (workflow)", "swiftdiffusion_queue_depth carries no label ['workflow']"),
    ('sum(rate(swiftdiffusion_operator_reconciles_total{pool="x"}[5m]))',
     "swiftdiffusion_operator_reconciles_total carries no label ['pool']"),
    ("label_values(swiftdiffusion_queue_depth, workflow)", "swiftdiffusion_queue_depth carries no label ['workflow']"),
    ("vector(1)", "reads no series"),
])
def test_the_checker_catches_a_query_the_metrics_do_not_allow(expr: str, problem: str) -> None:
    found = problems(expr, defined_series())
    assert any(problem in p for p in found), found


def test_every_metric_the_runtime_and_operator_export_has_a_panel() -> None:
    defined = defined_series()
    read = {defined[r.series].metric for expr in expressions() for r in references(expr)}
    assert read == {s.metric for s in defined.values()}


def test_latency_like_histograms_show_p50_p95_p99() -> None:
    shown = set()
    for panel in dashboard.dashboard()["panels"]:
        exprs = [t["expr"] for t in panel.get("targets", [])]
        quantiles = [float(q) for e in exprs for q in re.findall(r"histogram_quantile\(([\d.]+),", e)]
        if quantiles:
            assert quantiles == [0.5, 0.95, 0.99], panel["title"]
            shown |= {r.series.removesuffix("_bucket") for e in exprs for r in references(e)}
    assert {names.REQUEST_LATENCY_SECONDS, names.STEP_SECONDS, names.RESIDUAL_WAIT_SECONDS,
            names.LORA_LOAD_SECONDS, names.LORA_MERGE_STEP} <= shown


def test_the_variables_select_everything_by_default_and_match_as_regexes() -> None:
    board = dashboard.dashboard()
    assert [v["name"] for v in board["templating"]["list"]] == [
        "datasource", "namespace", "workflow", "pool", "operator_namespace"]
    for variable in query_variables(board):
        assert variable["includeAll"] and variable["multi"] and variable["allValue"] == dashboard.ALL == ".*"
        assert variable["current"]["value"] == "$__all"
        assert variable["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    known = {v["name"] for v in board["templating"]["list"]} | GRAFANA_BUILTINS
    used = {name for expr in expressions() for name in VARIABLE.findall(expr)}
    assert used <= known


def test_every_runtime_query_is_narrowed_by_namespace_workflow_and_pool() -> None:
    defined = defined_series()
    for expr in [t["expr"] for t in targets(dashboard.dashboard())]:
        for ref in references(expr):
            label = defined[ref.series].pool_label
            scope = ({("namespace", "=~", "$namespace"), (label, "=~", "$pool"),
                      (label, "=~", dashboard.WORKFLOW_POOLS)} if label
                     else {("namespace", "=~", "$operator_namespace")})
            assert scope <= ref.matchers, f"{ref.series} in {expr!r}"


def test_the_workflow_variable_finds_each_workflows_pools_by_the_operators_names() -> None:
    workflow_of = re.compile(dashboard.WORKFLOW_FROM_BASE_POOL.strip("/"))
    assert workflow_of.fullmatch(render.base_pool_name("sdxl-canny"))[1] == "sdxl-canny"
    assert not workflow_of.fullmatch(render.dedicated_controlnet_pool_name("sdxl-canny"))
    picked = re.compile(dashboard.WORKFLOW_POOLS.replace("${workflow}", "sdxl-canny"))  # Prometheus anchors
    for pool in (render.base_pool_name("sdxl-canny"), render.dedicated_controlnet_pool_name("sdxl-canny"),
                 render.shared_controlnet_pool_name("edges")):
        assert picked.fullmatch(pool)
    assert not picked.fullmatch(render.base_pool_name("other"))
    everything = re.compile(dashboard.WORKFLOW_POOLS.replace("${workflow}", dashboard.ALL))
    for pool in (render.base_pool_name("a"), render.dedicated_controlnet_pool_name("b"),
                 render.shared_controlnet_pool_name("c")):
        assert everything.fullmatch(pool)
    assert not everything.fullmatch("unrelated-deployment")


def test_load_per_replica_is_drawn_against_the_default_autoscaling_target() -> None:
    (panel,) = [p for p in dashboard.dashboard()["panels"]
                if any(names.IN_FLIGHT_REQUESTS in t["expr"] for t in p.get("targets", []))]
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1]["value"] == m.Autoscaling().target_in_flight_per_replica
    assert panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "dashed"
