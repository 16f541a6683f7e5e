"""Every query of the Grafana dashboard and every alert expression, run on a real Prometheus that
scraped the real runtime and operator processes after they served requests.

tests/chart/test_dashboard.py proves each query names metrics the code defines, read the way their
type allows; it cannot tell whether Prometheus parses a query once Grafana has filled in its
variables, nor whether the series carry the labels the query narrows and groups by once scraped.
Here the tiny local stack's base and ControlNet services serve Generate requests with a ControlNet
and a LoRA, the operator reconciles workflows on the test bed, Prometheus scrapes all three each
second with the labels the chart's ServiceMonitors attach, and every query, filled in as Grafana
fills it in with every variable at "All", must return a series with a value, unless NOT_DRAWN
below says why it cannot here.
"""
from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from kubernetes import client
from kubernetes.client import ApiClient

from swiftdiffusion.operator import dashboard, kube, render
from swiftdiffusion.operator.local_process import LocalOperator
from swiftdiffusion.runtime import metric_names as names
from swiftdiffusion.runtime.client import generate, generate_request
from swiftdiffusion.runtime.config import Defaults, LoraEntry
from swiftdiffusion.runtime.controlnet.control_image import encode_png
from swiftdiffusion.runtime.dev.local_stack import StackOptions, local_stack
from swiftdiffusion.runtime.dev.synthetic_lora import write_random_lora
from tests.chart.helm import Helm, one
from tests.chart.test_alerts import ENABLED, alerts
from tests.monitoring.prometheus import Prometheus, QueryError, Target, running_prometheus
from tests.reconcile.fixtures import Cluster, wait_until
from tests.reconcile.workflows import CANNY, DEPTH
from tests.runtime.helpers import control_image
from tests.testbed.waiting import eventually

pytestmark = pytest.mark.cluster

WORKFLOW = "monitored"
"""The workflow whose pools the runtime targets stand for, and which the operator reconciles."""
REFUSED = "refused"
"""A workflow whose base Deployment name a foreign Deployment holds: its reconciles fail."""
LORA = "style"
POOLS = (render.base_pool_name(WORKFLOW), render.dedicated_controlnet_pool_name(WORKFLOW))
RATE_INTERVAL = "1m"
"""Grafana's $__rate_interval for a data source at its default 15 s scrape interval (4 x 15 s)."""

DATA, NO_SERIES, ONLY_NAN = "data", "no series", "only NaN"
NOT_DRAWN: dict[str, tuple[str, str]] = {
    "Desired vs ready replicas A": (NO_SERIES, "kube-state-metrics' gauge: the test bed runs no kube-state-metrics"),
    "Desired vs ready replicas B": (NO_SERIES, "kube-state-metrics' gauge: the test bed runs no kube-state-metrics"),
}
"""Panel targets (title and refId) that cannot draw a line under this load, with what they give and why."""

BOARD = dashboard.dashboard()
PANELS = [p for p in BOARD["panels"] if p["type"] != "row"]
QUERIES = {f'{p["title"]} {t["refId"]}': t["expr"] for p in PANELS for t in p["targets"]}
VARIABLES = {v["name"]: v for v in BOARD["templating"]["list"] if v["type"] == "query"}
VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
LABEL_VALUES = re.compile(r"label_values\((?:(?P<match>.+),\s*)?(?P<label>\w+)\)")
AT_ALL = {**{name: v["allValue"] for name, v in VARIABLES.items()}, "__rate_interval": RATE_INTERVAL}
"""What Grafana puts in for each variable while every one is at "All", as the dashboard opens:
the variable's custom all value, unescaped, and the rate window."""


# --- what Grafana sends, and what comes back ---

def filled(expr: str, values: Mapping[str, str]) -> str:
    """`expr` with `$name` and `${name}` replaced; a variable not in `values` raises KeyError, so
    a new Grafana variable fails here rather than reaching Prometheus as text."""
    def value(match: re.Match[str]) -> str:
        name = match[1] or match[2]
        if name not in values:
            raise KeyError(f"no value for ${name} in {expr!r}")
        return values[name]

    return VARIABLE.sub(value, expr)


def outcome(prometheus: Prometheus, expr: str, at: float) -> str:
    """What a panel draws from `expr` at `at`: DATA (a series with a number), NO_SERIES, ONLY_NAN
    (series, but no point Grafana can plot), or the error Prometheus answered."""
    try:
        data = prometheus.query(expr, at)
    except QueryError as error:
        return f"error: {error}"
    if data["resultType"] != "vector":
        return f"a {data['resultType']}, not series"
    values = [float(sample["value"][1]) for sample in data["result"]]
    if not values:
        return NO_SERIES
    return ONLY_NAN if all(math.isnan(v) for v in values) else DATA


def wrong(prometheus: Prometheus, name: str, expr: str, at: float) -> str | None:
    """What is wrong with panel target `name` run as `expr`: None when it draws what it should."""
    expected, why = NOT_DRAWN.get(name, (DATA, "it should draw a line"))
    got = outcome(prometheus, expr, at)
    return None if got == expected else f"{name}: {expr} gave {got}, not {expected}: {why}"


# --- the processes and the load ---

@dataclass(frozen=True)
class Scraped:
    """Prometheus once it has scraped the load twice: `since` it started, `at` the time to query."""

    prometheus: Prometheus
    namespace: str
    since: float
    at: float


@pytest.fixture(scope="module")
def monitored_namespace(k8s_client: ApiClient) -> Iterator[str]:
    """A namespace of its own for the module's workflows (the `namespace` fixture is per test)."""
    core = client.CoreV1Api(k8s_client)
    name = f"t-monitoring-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        eventually(lambda: core.read_namespaced_service_account("default", name), timeout=60)
        yield name
    finally:
        core.delete_namespace(name, propagation_policy="Background")


@pytest.fixture(scope="module")
def operator_process(t2i_crd: str, kube_config: str, monitored_namespace: str,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalOperator]:
    """The operator watching the module's namespace (admin credentials: its RBAC is tested elsewhere)."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    process = LocalOperator(monitored_namespace, kube_config, log).start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def stack_options(tiny_model_set: Path, tmp_path_factory: pytest.TempPathFactory) -> StackOptions:
    """The tiny stack on free ports, serving one LoRA written for its base model."""
    from diffusers import UNet2DConditionModel

    lora = tmp_path_factory.mktemp("loras") / f"{LORA}.safetensors"
    unet = UNet2DConditionModel.from_pretrained(tiny_model_set / "base" / "unet", local_files_only=True)
    write_random_lora(lora, {"unet": unet}, rank=4, seed=0, strength=0.2)
    return StackOptions.on_free_ports(tiny_model_set, threads=1,
                                      defaults=Defaults(steps=4, guidance_scale=5.0, width=64, height=64),
                                      loras=[LoraEntry(name=LORA, source=str(lora), scale=0.8, k=1)])


def targets(options: StackOptions, operator: LocalOperator, namespace: str) -> list[Target]:
    """The three processes with the labels a scrape through the chart's ServiceMonitors gives them:
    `namespace` and `pod` from the Prometheus Operator, `pool` from the pool Service's label."""
    base, controlnet = POOLS
    return [Target("runtime-pools", f"127.0.0.1:{options.base_metrics_port}",
                   {"namespace": namespace, "pool": base, "pod": f"{base}-0"}),
            Target("runtime-pools", f"127.0.0.1:{options.controlnet_metrics_port}",
                   {"namespace": namespace, "pool": controlnet, "pod": f"{controlnet}-0"}),
            Target("operator", f"127.0.0.1:{operator.metrics_port}",
                   {"namespace": namespace, "pod": "swiftdiffusion-operator-0"})]


def workflow(name: str, steps: int) -> dict[str, Any]:
    return {"apiVersion": "swiftdiffusion.io/v1alpha1", "kind": "T2IWorkflow", "metadata": {"name": name},
            "spec": {"base": {"model": "stabilityai/stable-diffusion-xl-base-1.0", "defaults": {"steps": steps}},
                     "controlnets": [CANNY, DEPTH]}}


def reconcile_workflows(cluster: Cluster) -> None:
    """One workflow that becomes Ready, and one whose reconciles fail (so the error series exists)."""
    foreign = {"app": "foreign"}
    kube.request(cluster.api, "POST", f"/apis/apps/v1/namespaces/{cluster.namespace}/deployments", body={
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": render.base_pool_name(REFUSED)},
        "spec": {"replicas": 0, "selector": {"matchLabels": foreign}, "template": {
            "metadata": {"labels": foreign}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
    for name in (WORKFLOW, REFUSED):
        cluster.apply_workflow(workflow(name, steps=30))
    cluster.wait_ready(WORKFLOW)
    wait_until(lambda: cluster.condition(REFUSED).get("reason") == "ReconcileFailed")


def generate_with(target: str, controlnet: str, lora: str = LORA, seed: int = 0) -> None:
    control = encode_png(control_image(64))
    generate(target, generate_request("a red cube", seed=seed, controlnets=[(controlnet, control, 0.8)],
                                      loras=[(lora, None)]), timeout=120)


def send_load(target: str, cluster: Cluster) -> None:
    """A workflow change and Generate requests: two with the LoRA and a ControlNet (one loaded now,
    one a cache hit), and one naming an unknown LoRA."""
    cluster.apply_workflow(workflow(WORKFLOW, steps=40))
    cluster.wait_ready(WORKFLOW)
    for seed, controlnet in enumerate(("depth", "canny"), start=1):
        generate_with(target, controlnet, seed=seed)
    with pytest.raises(grpc.RpcError) as refused:
        generate_with(target, "canny", lora="no-such-lora")
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.fixture(scope="module")
def scraped(stack_options: StackOptions, operator_process: LocalOperator, k8s_client: ApiClient,
            monitored_namespace: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scraped]:
    """Prometheus scraping the stack and the operator through two phases: in the first the
    operator's and the runtime's labelled series come into being (prometheus_client creates a label
    set at its first increment, and rate() cannot count the increment a series is born with), in
    the second the load happens that the rates show."""
    folder = tmp_path_factory.mktemp("monitoring")
    started = time.time()
    with (running_prometheus(targets(stack_options, operator_process, monitored_namespace),
                             folder / "prometheus") as prometheus,
          local_stack(stack_options, folder / "stack") as stack):
        cluster = Cluster(k8s_client, monitored_namespace)
        reconcile_workflows(cluster)
        generate_with(stack.base.target, "canny")
        prometheus.wait_scraped_twice_since(time.time())
        send_load(stack.base.target, cluster)
        loaded = time.time()
        prometheus.wait_scraped_twice_since(loaded)
        yield Scraped(prometheus, monitored_namespace, started, time.time())


@pytest.fixture(scope="module")
def alert_rules(helm: Helm) -> dict[str, Any]:
    """The chart's rule groups as `helm template` renders them with the default thresholds."""
    return one(helm.template(*ENABLED), "PrometheusRule")["spec"]


# --- the tests ---

@pytest.mark.parametrize("name", QUERIES)
def test_every_panel_query_draws_on_real_data(scraped: Scraped, name: str) -> None:
    problem = wrong(scraped.prometheus, name, filled(QUERIES[name], AT_ALL), scraped.at)
    assert problem is None, problem


@pytest.mark.parametrize("name", VARIABLES)
def test_every_variable_lists_the_scraped_values(scraped: Scraped, name: str) -> None:
    """Grafana runs `label_values(match, label)` as the label values API over the time range, then
    keeps what the variable's regex captures."""
    expected = {"namespace": [scraped.namespace], "workflow": [WORKFLOW], "pool": sorted(POOLS),
                "operator_namespace": [scraped.namespace]}
    variable = VARIABLES[name]
    query = LABEL_VALUES.fullmatch(filled(variable["definition"], AT_ALL))
    assert query, variable["definition"]
    values = scraped.prometheus.label_values(query["label"], query["match"], scraped.since, scraped.at)
    if variable.get("regex"):
        pattern = re.compile(variable["regex"].strip("/"))
        values = [found[1] for found in map(pattern.fullmatch, values) if found]
    assert sorted(values) == expected[name]


def test_every_alert_expression_parses(scraped: Scraped, alert_rules: dict[str, Any]) -> None:
    """Parsing is what is checked: under this load no alert should fire, so most select nothing."""
    assert [group["name"] for group in alert_rules["groups"]] == ["swiftdiffusion-runtime", "swiftdiffusion-operator"]
    results = {rule["alert"]: outcome(scraped.prometheus, rule["expr"], scraped.at) for rule in alerts(alert_rules)}
    assert {alert: result for alert, result in results.items() if result not in (DATA, NO_SERIES, ONLY_NAN)} == {}


def test_the_checker_reports_a_metric_the_runtime_does_not_export(scraped: Scraped) -> None:
    """A panel query as written passes; naming a metric nothing exports, or cut short, it fails."""
    name = "Requests per second A"
    expr = filled(QUERIES[name], AT_ALL)
    assert wrong(scraped.prometheus, name, expr, scraped.at) is None
    missing = expr.replace(names.REQUESTS_TOTAL, f"{names.PREFIX}_not_exported_total")
    assert wrong(scraped.prometheus, name, missing, scraped.at) == \
        f"{name}: {missing} gave no series, not data: it should draw a line"
    assert "gave error: bad_data: " in str(wrong(scraped.prometheus, name, expr.removesuffix(")"), scraped.at))


def test_every_panel_draws_a_line_and_every_exception_names_a_query() -> None:
    """NOT_DRAWN may excuse a target, never a whole panel, and goes stale loudly."""
    assert set(NOT_DRAWN) <= set(QUERIES)
    for panel in PANELS:
        assert any(f'{panel["title"]} {t["refId"]}' not in NOT_DRAWN for t in panel["targets"]), panel["title"]


def test_a_variable_grafana_would_fill_in_differently_is_refused() -> None:
    with pytest.raises(KeyError, match=r"\$__interval"):
        filled("rate(swiftdiffusion_requests_total[$__interval])", AT_ALL)

