"""The Grafana dashboard queries only metrics the code defines, each the way its type allows.

The checked-in JSON equals the generated one: tests/reconcile/test_crd.py checks every file
`generate.artifacts()` writes, charts/swiftdiffusion/dashboards/swiftdiffusion.json included.
"""
from __future__ import annotations

import re

import pytest
from prometheus_client import REGISTRY, CollectorRegistry

from swiftdiffusion.operator import dashboard
from swiftdiffusion.operator import metrics as op
from swiftdiffusion.runtime import metric_names as names
from swiftdiffusion.runtime.lora.metrics import LoraMetrics
from swiftdiffusion.runtime.serving.metrics import RuntimeMetrics

# Labels Prometheus adds when scraping (namespace), the chart's relabeling (pool), and `le`.
SCRAPE_LABELS = {"namespace", dashboard.POOL_LABEL}
SERIES = re.compile(r"\b(swiftdiffusion_\w+)")
RATED = re.compile(r"\brate\((swiftdiffusion_\w+)\{")
GROUPING = re.compile(r"sum by \(([^)]*)\) \((?:rate\()?(swiftdiffusion_\w+)")


def defined_series() -> dict[str, tuple[str, frozenset[str]]]:
    """Sample name -> (metric type, label names), read from the real metric objects."""
    runtime = CollectorRegistry()
    base = RuntimeMetrics("base", runtime)
    base.count("OK")
    base.observe_load("base", 1.0)
    LoraMetrics(runtime)
    op.RECONCILES.labels("workflow")
    op.RECONCILE_ERRORS.labels("workflow", "true")
    op.RECONCILE_SECONDS.labels("workflow")
    op.API_WRITES.labels("deployments")
    operator_families = [f for f in REGISTRY.collect() if f.name.startswith(f"{names.PREFIX}_operator")]
    series: dict[str, tuple[str, frozenset[str]]] = {}
    for family in [*runtime.collect(), *operator_families]:
        for sample in family.samples:
            if not sample.name.endswith("_created"):
                series[sample.name] = (family.type, frozenset(sample.labels))
    return series


def expressions() -> list[str]:
    board = dashboard.dashboard()
    queries = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    return queries + [v["definition"] for v in board["templating"]["list"] if "definition" in v]


def test_the_runtime_and_operator_define_every_name_the_dashboard_may_use() -> None:
    series = defined_series()
    missing = [n for n in names.ALL if not any(s == n or s == f"{n}_bucket" for s in series)]
    assert not missing, f"metric_names lists metrics the runtime does not register: {missing}"


@pytest.mark.parametrize("expr", expressions())
def test_every_series_a_query_names_is_defined(expr: str) -> None:
    defined = defined_series()
    for name in SERIES.findall(expr):
        assert name in defined, f"{name} in {expr!r} is no metric the code defines"


@pytest.mark.parametrize("expr", expressions())
def test_counters_and_histograms_are_read_through_rate_and_gauges_are_not(expr: str) -> None:
    defined = defined_series()
    rated = RATED.findall(expr)
    for name in rated:
        kind, _ = defined[name]
        assert kind in ("counter", "histogram"), f"rate() over the {kind} {name}"
    for name in set(SERIES.findall(expr)) - set(rated):
        kind, _ = defined[name]
        assert kind == "gauge" or "label_values" in expr, f"{kind} {name} read without rate() in {expr!r}"
    if "histogram_quantile" in expr:
        assert all(name.endswith("_bucket") and defined[name][0] == "histogram" for name in rated)


@pytest.mark.parametrize("expr", expressions())
def test_queries_group_only_by_labels_the_series_carry(expr: str) -> None:
    defined = defined_series()
    for by, name in GROUPING.findall(expr):
        labels = {label.strip() for label in by.split(",")}
        assert labels <= defined[name][1] | SCRAPE_LABELS, f"{name} has no label {labels - defined[name][1]}"


def test_the_dashboard_shows_the_signals_a_platform_engineer_needs() -> None:
    queries = " ".join(expressions())
    for histogram in (names.REQUEST_LATENCY_SECONDS, names.STEP_SECONDS, names.RESIDUAL_TRANSFER_SECONDS,
                      names.LORA_LOAD_SECONDS, names.LORA_MERGE_STEP):
        for q in ("0.5", "0.95", "0.99"):
            assert f"histogram_quantile({q}, sum by (pool, le) (rate({histogram}_bucket" in queries
    for gauge in (names.QUEUE_DEPTH, names.IN_FLIGHT_REQUESTS, names.CONTROLNET_RESIDENT_BYTES):
        assert f"sum by (pool) ({gauge}{{" in queries
    for counter in (names.RESIDUAL_BYTES_TOTAL, names.CONTROLNET_CACHE_HITS_TOTAL, names.CONTROLNET_CACHE_MISSES_TOTAL,
                    names.CONTROLNET_CACHE_EVICTIONS_TOTAL, names.LORA_BLOCKED_STEPS_TOTAL, names.REQUESTS_TOTAL):
        assert f"rate({counter}{{" in queries
    assert f"{names.MODEL_LOAD_SECONDS}_sum" in queries
    for metric in ("reconciles_total", "reconcile_errors_total", "reconcile_duration_seconds_bucket", "queue_depth"):
        assert f"{names.PREFIX}_operator_{metric}" in queries


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    panels = dashboard.dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells = [(p["gridPos"]["x"] + dx, p["gridPos"]["y"] + dy) for p in panels
             for dx in range(p["gridPos"]["w"]) for dy in range(p["gridPos"]["h"])]
    assert len(cells) == len(set(cells))
