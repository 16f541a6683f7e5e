"""The Grafana dashboard of the Helm chart, built from the metric name constants.

Queries name metrics only through `metric_names` and the operator's `metrics`, so a
renamed metric changes the dashboard too (tests/chart checks every reference is defined
with the type its query assumes). Runtime series are grouped by `pool`, the label the
chart's runtime ServiceMonitor copies from the pool Service's `swiftdiffusion.io/pool`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from swiftdiffusion.operator import metrics as op
from swiftdiffusion.runtime import metric_names as names

UID = "swiftdiffusion"
POOL_LABEL = "pool"
SELECTOR = f'namespace=~"$namespace", {POOL_LABEL}=~"$pool"'
RATE = "[$__rate_interval]"
PANEL_WIDTH, PANEL_HEIGHT, COLUMNS = 12, 8, 2


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    unit: str
    targets: tuple[Target, ...]


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


def rate(metric: str, by: str = POOL_LABEL, selector: str = SELECTOR) -> str:
    """Per-second rate of a counter (or a histogram's `_count`/`_sum`), summed by `by`."""
    return f"sum by ({by}) (rate({metric}{{{selector}}}{RATE}))"


def quantile(q: float, histogram: str, by: str = POOL_LABEL, selector: str = SELECTOR) -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({histogram}_bucket{{{selector}}}{RATE})))"


def mean(histogram: str, by: str = POOL_LABEL, selector: str = SELECTOR) -> str:
    return f"{rate(histogram + '_sum', by, selector)} / {rate(histogram + '_count', by, selector)}"


def gauge(metric: str, by: str = POOL_LABEL, selector: str = SELECTOR) -> str:
    return f"sum by ({by}) ({metric}{{{selector}}})"


def quantiles(histogram: str, by: str = POOL_LABEL, selector: str = SELECTOR) -> tuple[Target, ...]:
    return tuple(Target(quantile(q, histogram, by, selector), f"p{round(q * 100)} {{{{{by}}}}}")
                 for q in (0.5, 0.95, 0.99))


def per_pool(expr: str) -> tuple[Target, ...]:
    return (Target(expr, f"{{{{{POOL_LABEL}}}}}"),)


def ratio(hits: str, misses: str) -> str:
    return f"{rate(hits)} / ({rate(hits)} + {rate(misses)})"


def series(collector: MetricWrapperBase) -> str:
    """The name a collector's samples carry (counters add `_total`; histograms stay bare)."""
    family = collector.describe()[0]
    return f"{family.name}_total" if family.type == "counter" else family.name


OPERATOR_SELECTOR = 'namespace=~"$operator_namespace"'

ROWS: tuple[Row, ...] = (
    Row("Requests", (
        Panel("Request rate by status code", "Finished requests per second.", "reqps",
              (Target(rate(names.REQUESTS_TOTAL, f"{POOL_LABEL}, code"), f"{{{{{POOL_LABEL}}}}} {{{{code}}}}"),)),
        Panel("Request latency", "Generate (base) or residual session (ControlNet) wall time.", "s",
              quantiles(names.REQUEST_LATENCY_SECONDS)),
    )),
    Row("Autoscaling signals", (
        Panel("Queue depth", "Requests accepted but waiting for the worker: the autoscaling signal.", "short",
              per_pool(gauge(names.QUEUE_DEPTH))),
        Panel("In-flight requests", "Generate calls (base) or open residual sessions (ControlNet) being served.",
              "short", per_pool(gauge(names.IN_FLIGHT_REQUESTS))),
    )),
    Row("Denoising and residuals", (
        Panel("Step time", "One denoising step (base) or one residual computation (ControlNet).", "s",
              quantiles(names.STEP_SECONDS)),
        Panel("Residual throughput", "Residual bytes sent (ControlNet) or received (base) per second.", "Bps",
              per_pool(rate(names.RESIDUAL_BYTES_TOTAL))),
        Panel("Residual transfer time", "Per step: latent sent to residuals received (base side).", "s",
              quantiles(names.RESIDUAL_TRANSFER_SECONDS)),
        Panel("Loop blocked on residuals", "Per request: time the denoising loop waited for residuals.", "s",
              quantiles(names.RESIDUAL_WAIT_SECONDS)),
    )),
    Row("ControlNet cache", (
        Panel("ControlNet cache hit ratio", "Share of residual sessions whose ControlNet was resident.", "percentunit",
              per_pool(ratio(names.CONTROLNET_CACHE_HITS_TOTAL, names.CONTROLNET_CACHE_MISSES_TOTAL))),
        Panel("ControlNet evictions", "Models evicted per second to stay under the cache budget.", "ops",
              per_pool(rate(names.CONTROLNET_CACHE_EVICTIONS_TOTAL))),
        Panel("Resident ControlNet bytes", "Weights resident under the cache budget.", "bytes",
              per_pool(gauge(names.CONTROLNET_RESIDENT_BYTES))),
        Panel("Model load time (mean)", "Loading one model, by kind (base, controlnet).", "s",
              (Target(mean(names.MODEL_LOAD_SECONDS, f"{POOL_LABEL}, kind"), f"{{{{{POOL_LABEL}}}}} {{{{kind}}}}"),)),
    )),
    Row("LoRA (bounded asynchronous loading)", (
        Panel("LoRA load time", "Storage to device-ready factors (BAL's background load).", "s",
              quantiles(names.LORA_LOAD_SECONDS)),
        Panel("LoRA merge step", "Denoising step before which a LoRA was merged (0: before the first).", "short",
              quantiles(names.LORA_MERGE_STEP)),
        Panel("Steps blocked on LoRAs", "Steps per second at which the loop reached K with the LoRA unloaded.",
              "short", per_pool(rate(names.LORA_BLOCKED_STEPS_TOTAL))),
        Panel("LoRA host cache hit ratio", "Share of LoRA loads served without reading storage.", "percentunit",
              per_pool(ratio(names.LORA_CACHE_HITS_TOTAL, names.LORA_CACHE_MISSES_TOTAL))),
    )),
    Row("Operator", (
        Panel("Reconciles", "Reconciles and failed reconciles per second, by kind.", "ops", (
            Target(rate(series(op.RECONCILES), "kind", OPERATOR_SELECTOR), "{{kind}}"),
            Target(rate(series(op.RECONCILE_ERRORS), "kind, retried", OPERATOR_SELECTOR),
                   "errors {{kind}} retried={{retried}}"),
        )),
        Panel("Reconcile duration", "Wall time of one reconcile.", "s",
              quantiles(series(op.RECONCILE_SECONDS), "kind", OPERATOR_SELECTOR)),
        Panel("Operator queue depth and API writes", "Objects waiting to be reconciled; writes per second.", "short", (
            Target(gauge(series(op.QUEUE_DEPTH), "namespace", OPERATOR_SELECTOR), "queue {{namespace}}"),
            Target(rate(series(op.API_WRITES), "resource", OPERATOR_SELECTOR), "writes {{resource}}"),
        )),
    )),
)


def _variable(name: str, label: str, metric: str) -> dict[str, Any]:
    query = f"label_values({metric}, {label})"
    return {"name": name, "label": name.replace("_", " "), "type": "query",
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": {"query": query, "refId": name}, "definition": query,
            "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2, "sort": 1,
            "current": {"selected": True, "text": "All", "value": "$__all"}}


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    return {
        "id": panel_id, "type": "timeseries", "title": panel.title, "description": panel.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": PANEL_HEIGHT, "w": PANEL_WIDTH, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [{"refId": chr(ord("A") + i), "expr": t.expr, "legendFormat": t.legend,
                     "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                    for i, t in enumerate(panel.targets)],
    }


def dashboard() -> dict[str, Any]:
    """The dashboard model Grafana imports (rows of two time-series panels each)."""
    panels: list[dict[str, Any]] = []
    y = 0
    for row in ROWS:
        panels.append({"id": len(panels) + 1, "type": "row", "title": row.title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        y += 1
        for i, panel in enumerate(row.panels):
            x, dy = (i % COLUMNS) * PANEL_WIDTH, (i // COLUMNS) * PANEL_HEIGHT
            panels.append(_panel(panel, len(panels) + 1, x, y + dy))
        y += -(-len(row.panels) // COLUMNS) * PANEL_HEIGHT
    datasource = {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
                  "current": {}, "hide": 0}
    return {
        "uid": UID, "title": "SwiftDiffusion", "tags": ["swiftdiffusion", "kubernetes", "diffusion"],
        "description": "Runtime pools (requests, autoscaling signals, ControlNet service, LoRA loading) "
                       "and the operator.",
        "editable": True, "graphTooltip": 1, "refresh": "30s", "schemaVersion": 39, "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            datasource,
            _variable("namespace", "namespace", names.REQUESTS_TOTAL),
            _variable("pool", POOL_LABEL, f'{names.REQUESTS_TOTAL}{{namespace=~"$namespace"}}'),
            _variable("operator_namespace", "namespace", series(op.RECONCILES)),
        ]},
        "annotations": {"list": []},
        "panels": panels,
    }
