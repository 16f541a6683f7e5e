"""The Grafana dashboard of the Helm chart, written with grafana-foundation-sdk.

Why the SDK: its builders and models are generated from Grafana's own dashboard schema, so
a field Grafana does not know cannot be written, and tests/chart reads the JSON back with
the same models. We use the classic dashboard model (schemaVersion 42), the one Grafana's
dashboard sidecar and Dashboards > Import read; the SDK's v2 model is for Grafana 12's
resource API, and the classic classes' deprecation warning says only that.

Queries name metrics only through `metric_names`, the operator's `metrics` and the two
kube-state-metrics gauges below, so a renamed metric changes the dashboard too
(tests/chart checks every reference is defined with the type its query assumes).

Runtime series carry `namespace` (Prometheus adds it) and `pool`, which the chart's runtime
ServiceMonitor copies from the pool Service's `swiftdiffusion.io/pool` label. No `workflow`
label reaches them, so the workflow variable is read from the pool names the operator gives
(`render.base_pool_name` and friends): a base pool serves exactly one workflow.
"""
from __future__ import annotations

import itertools
import json
import warnings
from collections.abc import Callable
from string import ascii_uppercase
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from swiftdiffusion.operator import metrics as op
from swiftdiffusion.operator import model as m
from swiftdiffusion.operator import render
from swiftdiffusion.runtime import metric_names as names

with warnings.catch_warnings():
    # The classic model's classes warn when their module is imported, used or not.
    warnings.filterwarnings("ignore", "Prefer using dashboardv2", DeprecationWarning)
    from grafana_foundation_sdk.builders import common as common_builders
    from grafana_foundation_sdk.builders import dashboard as builders
    from grafana_foundation_sdk.builders import prometheus, timeseries
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.cog.plugins import register_default_plugins
    from grafana_foundation_sdk.models import common, units
    from grafana_foundation_sdk.models import dashboard as grafana

UID = "swiftdiffusion"
POOL_LABEL = "pool"
POOL_LEGEND = f"{{{{{POOL_LABEL}}}}}"
DEPLOYMENT_LABEL = "deployment"
DATASOURCE = grafana.DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE_WINDOW = "[$__rate_interval]"
PANEL_WIDTH, PANEL_HEIGHT = 12, 8
QUANTILES = (0.5, 0.95, 0.99)
OK_CODE = "OK"
"""gRPC's name for success, the `code` the servers count a served request under."""
ALL = ".*"
"""Every variable's "All" value: matched with `=~`, it selects everything, even no series."""

KUBE_DEPLOYMENT_SPEC_REPLICAS = "kube_deployment_spec_replicas"
KUBE_DEPLOYMENT_READY_REPLICAS = "kube_deployment_status_replicas_ready"
KUBE_STATE_METRICS_GAUGES: dict[str, frozenset[str]] = {
    KUBE_DEPLOYMENT_SPEC_REPLICAS: frozenset({"namespace", DEPLOYMENT_LABEL}),
    KUBE_DEPLOYMENT_READY_REPLICAS: frozenset({"namespace", DEPLOYMENT_LABEL}),
}
"""The kube-state-metrics gauges the replica panel reads, with their labels (a pool's
Deployment is named after the pool): the only metrics the dashboard uses that we do not export."""


def _pools_of(workflow: str) -> str:
    """Regex of the pools serving `workflow`: its base pool, its own ControlNet pool, and every
    shared ControlNet pool, which serves several workflows and so stays in view whichever is picked."""
    return "|".join((render.base_pool_name(workflow), render.dedicated_controlnet_pool_name(workflow),
                     render.shared_controlnet_pool_name(".+")))


WORKFLOW_POOLS = _pools_of("(${workflow})")
WORKFLOW_FROM_BASE_POOL = f"/^{render.base_pool_name('(.+)')}$/"
"""The workflow variable's regex: the workflow's name out of its base pool's name."""


def scoped(metric: str, *matchers: str, pool_label: str = POOL_LABEL) -> str:
    """`metric{...}` narrowed to the picked namespaces, workflows and pools, plus `matchers`."""
    scope = ('namespace=~"$namespace"', f'{pool_label}=~"$pool"', f'{pool_label}=~"{WORKFLOW_POOLS}"', *matchers)
    return f"{metric}{{{', '.join(scope)}}}"


def operator_scoped(metric: str) -> str:
    """`metric{...}` of the operator, found in the namespace it is installed in."""
    return f'{metric}{{namespace=~"$operator_namespace"}}'


def series(collector: MetricWrapperBase) -> str:
    """The name a collector's samples carry (counters add `_total`; histograms and gauges stay bare)."""
    family = collector.describe()[0]
    return f"{family.name}_total" if family.type == "counter" else family.name


def rate(selector: str) -> str:
    return f"rate({selector}{RATE_WINDOW})"


def aggregate(operation: str, labels: str, expr: str) -> str:
    return f"{operation} by ({labels}) ({expr})"


def pool_rate(metric: str) -> str:
    """Per-second rate of a runtime counter, summed over each pool's replicas."""
    return aggregate("sum", POOL_LABEL, rate(scoped(metric)))


def hit_ratio(hits: str, misses: str) -> str:
    return f"{pool_rate(hits)} / ({pool_rate(hits)} + {pool_rate(misses)})"


def mean(histogram: str, labels: str) -> str:
    """Mean observation of a runtime histogram over the rate window, by `labels`."""
    sums, counts = (aggregate("sum", labels, rate(scoped(f"{histogram}{suffix}"))) for suffix in ("_sum", "_count"))
    return f"{sums} / {counts}"


def target(expr: str, legend: str = POOL_LEGEND) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend)


def quantiles(histogram: str, select: Callable[[str], str] = scoped,
              label: str = POOL_LABEL) -> list[prometheus.Dataquery]:
    """p50, p95 and p99 of a histogram by `label`, from its `_bucket` rates."""
    by = aggregate("sum", f"{label}, le", rate(select(f"{histogram}_bucket")))
    return [target(f"histogram_quantile({q}, {by})", f"p{round(q * 100)} {{{{{label}}}}}") for q in QUANTILES]


def panel(title: str, description: str, unit: str, *targets: prometheus.Dataquery) -> timeseries.Panel:
    """A half-width time series of `targets` (refIds A, B, ...) on the data source variable."""
    built = (timeseries.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
             .span(PANEL_WIDTH).height(PANEL_HEIGHT)
             .legend(common_builders.VizLegendOptions().display_mode(common.LegendDisplayMode.LIST)
                     .placement(common.LegendPlacement.BOTTOM).show_legend(True))
             .tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI)
                      .sort(common.SortOrder.DESCENDING)))
    for ref_id, query in zip(ascii_uppercase, targets):
        built.with_target(query.ref_id(ref_id))
    return built


def dashed_line_at(built: timeseries.Panel, value: float) -> timeseries.Panel:
    """Draws `value` across the panel as a dashed line (a threshold the series are read against)."""
    steps = [grafana.Threshold(value=None, color="green"), grafana.Threshold(value=value, color="red")]
    dashed = common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
    thresholds = builders.ThresholdsConfig().mode(grafana.ThresholdsMode.ABSOLUTE).steps(steps)
    return built.thresholds(thresholds).thresholds_style(dashed)


def _requests() -> tuple[timeseries.Panel, ...]:
    return (
        panel("Requests per second", "Finished requests per pool, every status code. A base pool "
              "(swd-<workflow>-base) serves one workflow; a ControlNet pool counts residual sessions.",
              units.RequestsPerSecond, target(pool_rate(names.REQUESTS_TOTAL))),
        panel("Errors per second by code", "Requests that ended with a gRPC status other than OK, by code.",
              units.RequestsPerSecond,
              target(aggregate("sum", f"{POOL_LABEL}, code", rate(scoped(names.REQUESTS_TOTAL, f'code!="{OK_CODE}"'))),
                     f"{POOL_LEGEND} {{{{code}}}}")),
        panel("Request latency", "Generate (base) or residual session (ControlNet) wall time.", units.Seconds,
              *quantiles(names.REQUEST_LATENCY_SECONDS)),
        panel("Step time", "One denoising step (base) or one residual computation (ControlNet).", units.Seconds,
              *quantiles(names.STEP_SECONDS)),
    )


def _scaling() -> tuple[timeseries.Panel, ...]:
    default_target = m.Autoscaling().target_in_flight_per_replica
    return (
        dashed_line_at(panel(
            "Load per replica vs the autoscaling target",
            "Mean in-flight and queued requests per replica of each pool. The dashed line is the CRD's default "
            f"targetInFlightPerReplica ({default_target}); a workflow's own target is exported by no metric.",
            units.Short,
            target(aggregate("avg", POOL_LABEL, scoped(names.IN_FLIGHT_REQUESTS)), f"in flight {POOL_LEGEND}"),
            target(aggregate("avg", POOL_LABEL, scoped(names.QUEUE_DEPTH)), f"queued {POOL_LEGEND}"),
        ), default_target),
        panel("Desired vs ready replicas", "Desired and ready replicas of each pool's Deployment, from "
              "kube-state-metrics (kube_deployment_spec_replicas, kube_deployment_status_replicas_ready); "
              "scraped: the replicas Prometheus scrapes, from the runtime's own series.", units.Short,
              target(aggregate("sum", DEPLOYMENT_LABEL,
                               scoped(KUBE_DEPLOYMENT_SPEC_REPLICAS, pool_label=DEPLOYMENT_LABEL)),
                     "desired {{deployment}}"),
              target(aggregate("sum", DEPLOYMENT_LABEL,
                               scoped(KUBE_DEPLOYMENT_READY_REPLICAS, pool_label=DEPLOYMENT_LABEL)),
                     "ready {{deployment}}"),
              target(aggregate("count", POOL_LABEL, scoped(names.QUEUE_DEPTH)), f"scraped {POOL_LEGEND}")),
    )


def _controlnet() -> tuple[timeseries.Panel, ...]:
    return (
        panel("Residual wait per request", "Per request: time the base's denoising loop was blocked on "
              "ControlNet residuals.", units.Seconds, *quantiles(names.RESIDUAL_WAIT_SECONDS)),
        panel("Residual transfer time", "Per step: latent sent to residuals received (base side).", units.Seconds,
              *quantiles(names.RESIDUAL_TRANSFER_SECONDS)),
        panel("Residual throughput", "Residual bytes sent (ControlNet) or received (base) per second.",
              units.BytesPerSecondSI, target(pool_rate(names.RESIDUAL_BYTES_TOTAL))),
        panel("ControlNet cache hit ratio", "Share of residual sessions whose ControlNet was resident.",
              units.PercentUnit,
              target(hit_ratio(names.CONTROLNET_CACHE_HITS_TOTAL, names.CONTROLNET_CACHE_MISSES_TOTAL))),
        panel("Resident ControlNet bytes", "ControlNet weights resident under the cache budget, per pool.",
              units.BytesIEC, target(aggregate("sum", POOL_LABEL, scoped(names.CONTROLNET_RESIDENT_BYTES)))),
        panel("ControlNet evictions", "Models evicted per second to stay under the cache budget.",
              units.OpsPerSecond, target(pool_rate(names.CONTROLNET_CACHE_EVICTIONS_TOTAL))),
        panel("Model load time (mean)", "Loading one model, by kind (base, controlnet).", units.Seconds,
              target(mean(names.MODEL_LOAD_SECONDS, f"{POOL_LABEL}, kind"), f"{POOL_LEGEND} {{{{kind}}}}")),
    )


def _lora() -> tuple[timeseries.Panel, ...]:
    return (
        panel("LoRA load time", "Storage to device-ready factors (BAL's background load).", units.Seconds,
              *quantiles(names.LORA_LOAD_SECONDS)),
        panel("LoRA merge step", "Denoising step before which a LoRA was merged (0: before the first).",
              units.Short, *quantiles(names.LORA_MERGE_STEP)),
        panel("Steps blocked on LoRAs", "Steps per second at which the loop reached its bound K with a LoRA "
              "still loading.", units.Short, target(pool_rate(names.LORA_BLOCKED_STEPS_TOTAL))),
        panel("Time blocked on LoRAs", "Share of its time a replica's denoising loop waited for LoRAs, "
              "averaged over the pool's replicas.", units.PercentUnit,
              target(aggregate("avg", POOL_LABEL, rate(scoped(names.LORA_BLOCKED_SECONDS_TOTAL))))),
        panel("LoRA host cache hit ratio", "Share of LoRA loads served without reading storage.", units.PercentUnit,
              target(hit_ratio(names.LORA_CACHE_HITS_TOTAL, names.LORA_CACHE_MISSES_TOTAL))),
        panel("LoRA bytes read from storage", "LoRA file bytes read per second (host cache hits read none).",
              units.BytesPerSecondSI, target(pool_rate(names.LORA_LOAD_BYTES_TOTAL))),
    )


def _operator() -> tuple[timeseries.Panel, ...]:
    return (
        panel("Reconciles", "Reconciles and failed reconciles per second, by kind.", units.OpsPerSecond,
              target(aggregate("sum", "kind", rate(operator_scoped(series(op.RECONCILES)))), "{{kind}}"),
              target(aggregate("sum", "kind, retried", rate(operator_scoped(series(op.RECONCILE_ERRORS)))),
                     "errors {{kind}} retried={{retried}}")),
        panel("Reconcile duration", "Wall time of one reconcile.", units.Seconds,
              *quantiles(series(op.RECONCILE_SECONDS), operator_scoped, "kind")),
        panel("Operator queue depth and API writes", "Objects waiting to be reconciled; writes per second.",
              units.Short,
              target(aggregate("sum", "namespace", operator_scoped(series(op.QUEUE_DEPTH))), "queue {{namespace}}"),
              target(aggregate("sum", "resource", rate(operator_scoped(series(op.API_WRITES)))),
                     "writes {{resource}}")),
    )


def rows() -> tuple[tuple[str, tuple[timeseries.Panel, ...]], ...]:
    """Row titles and their panels, built afresh on every call (builders are mutable)."""
    return (("Requests", _requests()), ("Scaling", _scaling()), ("ControlNet service", _controlnet()),
            ("LoRA (bounded asynchronous loading)", _lora()), ("Operator", _operator()))


def query_variable(name: str, label: str, query: str) -> builders.QueryVariable:
    """A multi-value variable whose "All" is `.*`, so queries match it with `=~`."""
    return (builders.QueryVariable(name).label(label).datasource(DATASOURCE).query(query).definition(query)
            .multi(True).include_all(True).all_value(ALL)
            .refresh(grafana.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(grafana.VariableSort.ALPHABETICAL_ASC)
            .current(grafana.VariableOption(selected=True, text="All", value="$__all")))


def variables() -> list[builders.DatasourceVariable | builders.QueryVariable]:
    """Data source, then namespace, workflow and pool (each narrowing the next), then the operator's namespace.

    They list values from the queue depth gauges, which every replica exports from its start.
    """
    runtime, in_namespace = names.QUEUE_DEPTH, 'namespace=~"$namespace"'
    return [
        builders.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        query_variable("namespace", "namespace", f"label_values({runtime}, namespace)"),
        query_variable("workflow", "workflow", f"label_values({runtime}{{{in_namespace}}}, {POOL_LABEL})")
        .regex(WORKFLOW_FROM_BASE_POOL),
        query_variable("pool", "pool", f'label_values({runtime}{{{in_namespace}, {POOL_LABEL}=~"{WORKFLOW_POOLS}"}}, '
                                       f"{POOL_LABEL})"),
        query_variable("operator_namespace", "operator namespace",
                       f"label_values({series(op.QUEUE_DEPTH)}, namespace)"),
    ]


def dashboard() -> dict[str, Any]:
    """The dashboard model Grafana imports: a row per subsystem, two panels a line."""
    board = (builders.Dashboard("SwiftDiffusion").uid(UID).tags(["swiftdiffusion", "kubernetes", "diffusion"])
             .description("Runtime pools (requests, scaling, ControlNet service, LoRA loading) and the operator.")
             .editable().tooltip(grafana.DashboardCursorSync.CROSSHAIR).refresh("30s").time("now-1h", "now")
             .variables(variables()))
    ids = itertools.count(1)
    for title, panels in rows():
        board.with_row(builders.Row(title).id(next(ids)))
        for built in panels:
            board.with_panel(built.id(next(ids)))
    return json.loads(JSONEncoder().encode(board.build()))


def read(board: dict[str, Any]) -> grafana.Dashboard:
    """`board` decoded by the SDK's models (panel options and queries typed by their plugin),
    as a tool that edits the JSON would read it."""
    register_default_plugins()
    return grafana.Dashboard.from_json(board)
