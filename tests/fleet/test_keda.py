"""The fleet's autoscaling components, independent of the operator: Prometheus finds runtime
pods through the API server and labels their series as the chart's ServiceMonitor does, and
a KEDA ScaledObject with a Prometheus trigger scales a Deployment through the HPA controller
reading KEDA's external metrics API.

The pods are stand-ins that export one runtime gauge (a few lines of prometheus_client, as
the fleet's kubelet runs a pod's command with this checkout's interpreter), so the loop
Prometheus → KEDA → external metrics API → HPA → Deployment is tested without the runtime.
"""
from __future__ import annotations

import json
import os
import signal
import urllib.parse
import urllib.request
from typing import Any

from kubernetes import client

from swiftdiffusion.operator import autoscaling
from swiftdiffusion.runtime import metric_names
from swiftdiffusion.runtime.config import BIND_ADDRESS_ENV, METRICS_PORT
from tests.testbed import processes
from tests.testbed.cluster import TestBed
from tests.testbed.fleet import keda
from tests.testbed.fleet.prometheus import POOL_LABEL
from tests.testbed.waiting import eventually

RUNTIME_LABELS = {"app.kubernetes.io/name": "swiftdiffusion"}
QUEUE_DEPTH = 5


def exporter_deployment(name: str, labels: dict[str, str]) -> dict[str, Any]:
    """Pods exporting `swiftdiffusion_queue_depth 5` on their own address's metrics port."""
    serve = (f"import os, time; from prometheus_client import Gauge, start_http_server; "
             f"Gauge('{metric_names.QUEUE_DEPTH}', 'stand-in').set({QUEUE_DEPTH}); "
             f"start_http_server({METRICS_PORT}, addr=os.environ['{BIND_ADDRESS_ENV}']); time.sleep(3600)")
    pod_labels = {"app": name, **labels}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {
            "replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": pod_labels}, "spec": {
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": 1,
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                # The fleet's kubelet runs the command with this checkout's interpreter, not the image.
                "containers": [{"name": "exporter", "image": "python:3.11-slim", "command": ["python", "-c", serve],
                                "ports": [{"name": "metrics", "containerPort": METRICS_PORT}]}],
            }},
        },
    }


def prometheus_query(bed: TestBed, expr: str) -> list[dict[str, Any]]:
    url = f"{bed.prometheus_url()}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)["data"]["result"]


def test_the_demand_query_reads_zero_for_a_pool_without_targets_and_nothing_for_targets_without_its_series(
        fleet: TestBed, fleet_client: client.ApiClient, fleet_namespace: str) -> None:
    """The operator's query against Prometheus: a pool whose pods are starting reads zero
    demand (no fallback, no `MetricsUnavailable`); a pool whose targets do not give the
    in-flight gauge reads nothing, which KEDA takes as an error (the fallback holds)."""
    client.AppsV1Api(fleet_client).create_namespaced_deployment(
        fleet_namespace, exporter_deployment("silent", {**RUNTIME_LABELS, POOL_LABEL: "silent"}))
    eventually(lambda: prometheus_query(fleet, f'up{{namespace="{fleet_namespace}",pool="silent"}}'), timeout=90)

    assert prometheus_query(fleet, autoscaling.demand_query(fleet_namespace, "silent")) == []
    [starting] = prometheus_query(fleet, autoscaling.demand_query(fleet_namespace, "starting"))
    assert float(starting["value"][1]) == 0


def pod_names(k8s: client.ApiClient, namespace: str, app: str) -> set[str]:
    pods = client.CoreV1Api(k8s).list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return {pod.metadata.name for pod in pods}


def test_prometheus_scrapes_runtime_pods_with_the_service_monitor_labels(
        fleet: TestBed, fleet_client: client.ApiClient, fleet_namespace: str) -> None:
    apps = client.AppsV1Api(fleet_client)
    apps.create_namespaced_deployment(fleet_namespace, exporter_deployment("pool-a", {**RUNTIME_LABELS, POOL_LABEL: "pool-a"}))
    apps.create_namespaced_deployment(fleet_namespace, exporter_deployment("not-runtime", {}))
    pod = eventually(lambda: next(iter(pod_names(fleet_client, fleet_namespace, "pool-a"))), timeout=60)

    series = eventually(lambda: prometheus_query(fleet, f'{metric_names.QUEUE_DEPTH}{{namespace="{fleet_namespace}"}}'),
                        timeout=90)

    assert [s["metric"]["pool"] for s in series] == ["pool-a"]  # the unlabelled pods are not scraped
    assert series[0]["metric"]["pod"] == pod
    assert float(series[0]["value"][1]) == QUEUE_DEPTH


def test_keda_back_from_a_crash_scales_a_deployment_on_a_prometheus_query_through_the_hpa(
        fleet: TestBed, fleet_client: client.ApiClient, fleet_namespace: str) -> None:
    # KEDA's operator killed as a panic ends it: it comes back, as its pod would, and the
    # ScaledObject created next still gets its HPA and its metric.
    [crashed] = processes.members(fleet.state, "keda-operator")
    os.kill(crashed, signal.SIGKILL)
    eventually(lambda: processes.members(fleet.state, "keda-operator") not in ([], [crashed]), timeout=30)

    client.AppsV1Api(fleet_client).create_namespaced_deployment(
        fleet_namespace, exporter_deployment("demand", {**RUNTIME_LABELS, POOL_LABEL: "demand"}))
    query = f'max({metric_names.QUEUE_DEPTH}{{namespace="{fleet_namespace}",pool="demand"}})'
    scaled_object = {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "demand"},
        "spec": {"scaleTargetRef": {"name": "demand"}, "pollingInterval": 1, "minReplicaCount": 1,
                 "maxReplicaCount": 3,
                 "triggers": [{"type": "prometheus", "metadata": {
                     "serverAddress": fleet.prometheus_url(), "query": query, "threshold": "2"}}]},
    }
    client.CustomObjectsApi(fleet_client).create_namespaced_custom_object(
        "keda.sh", "v1alpha1", fleet_namespace, "scaledobjects", scaled_object)
    hpas = client.AutoscalingV2Api(fleet_client)

    hpa = eventually(lambda: hpas.read_namespaced_horizontal_pod_autoscaler(keda.hpa_name("demand"), fleet_namespace),
                     timeout=60)
    assert hpa.spec.scale_target_ref.name == "demand"
    metric = hpa.spec.metrics[0].external.metric
    selector = ",".join(f"{k}={v}" for k, v in metric.selector.match_labels.items())
    external = f"/apis/external.metrics.k8s.io/v1beta1/namespaces/{fleet_namespace}/{metric.name}?labelSelector={selector}"

    def external_values() -> list[str]:
        """What the HPA controller reads: aggregation layer → KEDA's adapter → operator → Prometheus
        (0 until Prometheus has scraped the first pod: KEDA reads an empty result as 0)."""
        return [item["value"] for item in fleet.api().request("GET", external)["items"]]

    eventually(lambda: external_values() == [str(QUEUE_DEPTH)], timeout=60)

    apps = client.AppsV1Api(fleet_client)
    eventually(lambda: apps.read_namespaced_deployment("demand", fleet_namespace).status.ready_replicas == 3,
               timeout=120)
    assert len(pod_names(fleet_client, fleet_namespace, "demand")) == 3  # ceil(5 / 2), within maxReplicaCount
