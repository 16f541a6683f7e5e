"""The operator's pools run for real on the fleet: every example serves through its Service
name, ControlNet sessions spread over the pool and follow it as it scales, rolling
updates and scale-downs lose no request, and broken pods end in a state that says why (a
model store that cannot be mounted included), and a pool's pod can be timed outside its pool
(the calibration's scale-out).

Clients resolve names through the fleet's CoreDNS (`dns://<cluster DNS>/…`), reach a base
pool's ClusterIP through the fleet's service proxy, and base pods reach their ControlNet
pool through its headless Service, as in a cluster.
"""
from __future__ import annotations

import pathlib
import statistics
import time
from typing import Any

import yaml

from swiftdiffusion.operator import kube, render
from swiftdiffusion.operator.local_process import LocalOperator
from swiftdiffusion.runtime.client import generate
from swiftdiffusion.runtime.config import RuntimeConfig
from tests.fleet import calibration
from tests.fleet.traffic import (
    PNG,
    Load,
    patch_workflow,
    ready_pods,
    served_requests,
    service_target,
    small_request,
)
from tests.reconcile.fixtures import Cluster
from tests.testbed.cluster import TestBed
from tests.testbed.fleet import model_store
from tests.testbed.waiting import eventually


def test_every_example_serves_through_its_service_name(fleet: TestBed, fleet_cluster: Cluster,
                                                       fleet_operator: LocalOperator) -> None:
    workflows = model_store.example_workflows()
    for workflow in workflows:
        fleet_cluster.apply_workflow(workflow)
    for workflow in workflows:
        fleet_cluster.wait_ready(workflow["metadata"]["name"], timeout=240)
    for config_map in fleet_cluster.list("v1", "configmaps", ",".join(f"{k}={v}" for k, v in render.MANAGED_BY.items())):
        RuntimeConfig.model_validate(yaml.safe_load(config_map["data"]["config.yaml"]))
    for workflow in workflows:
        name = workflow["metadata"]["name"]
        target = service_target(fleet, fleet_cluster.namespace, render.base_pool_name(name))
        reply = generate(target, small_request(workflow), timeout=120)
        assert reply.png.startswith(PNG), name
        assert (reply.width, reply.height) == (64, 64)
        assert reply.timings.get("residual_wait", 0) > 0 or not workflow["spec"].get("controlnets"), name


def test_controlnet_sessions_spread_follow_scaling_and_survive_rollouts(fleet: TestBed, fleet_cluster: Cluster,
                                                                        fleet_operator: LocalOperator) -> None:
    workflow = next(w for w in model_store.example_workflows() if w["metadata"]["name"] == "sdxl-canny-depth")
    workflow["spec"]["basePool"]["replicas"] = 2
    workflow["spec"]["controlnetPool"]["replicas"] = 3
    name = workflow["metadata"]["name"]
    base_pool, cn_pool = render.base_pool_name(name), render.dedicated_controlnet_pool_name(name)
    fleet_cluster.apply_workflow(workflow)
    fleet_cluster.wait_ready(name, timeout=240)
    target = service_target(fleet, fleet_cluster.namespace, base_pool)
    base_uids = {p["metadata"]["uid"] for p in fleet_cluster.pods(base_pool)}

    # Balance: 60 requests from 6 clients over 2 base and 3 ControlNet replicas, once every
    # ControlNet replica is in the base pods' resolution (one Ready after a base pod resolved
    # joins at its next re-resolution, as the scale-out below measures).
    cn_pods = ready_pods(fleet_cluster, cn_pool)
    with Load(target, workflow) as load:
        eventually(lambda: all(served_requests(p) > 0 for p in cn_pods), timeout=60, interval=0.5)
        before = {p["metadata"]["name"]: served_requests(p) for p in cn_pods}
        load.wait_for(len(load.latencies) + 60)
    assert load.failures == []
    counts = {p["metadata"]["name"]: served_requests(p) - before[p["metadata"]["name"]] for p in cn_pods}
    mean = statistics.mean(counts.values())
    print(f"sessions per ControlNet replica: {counts}; latency p50 {statistics.median(load.latencies):.2f} s, "
          f"p99 {sorted(load.latencies)[int(0.99 * (len(load.latencies) - 1))]:.2f} s")
    assert len(counts) == 3 and all(abs(n - mean) <= 0.25 * mean for n in counts.values()), counts

    # Scale-out: a fourth ControlNet replica takes sessions within 30 s of Ready, no base restart.
    patch_workflow(fleet_cluster, name, {"controlnetPool": {"replicas": 4}})
    eventually(lambda: len(ready_pods(fleet_cluster, cn_pool)) == 4, timeout=120)
    newcomer = next(p for p in ready_pods(fleet_cluster, cn_pool) if p["metadata"]["name"] not in counts)
    ready_at = time.monotonic()
    with Load(target, workflow) as load:
        eventually(lambda: served_requests(newcomer) > 0, timeout=30, interval=0.5)
    print(f"new ControlNet replica served its first session {time.monotonic() - ready_at:.1f} s after Ready")
    assert load.failures == []
    assert {p["metadata"]["uid"] for p in fleet_cluster.pods(base_pool)} == base_uids

    # Drain: a rolling update of the base pool and a scale-down of the ControlNet pool, under load.
    with Load(target, workflow) as load:
        load.wait_for(6)
        patch_workflow(fleet_cluster, name, {"base": {"defaults": {"steps": 20}}, "controlnetPool": {"replicas": 2}})
        eventually(lambda: not base_uids & {p["metadata"]["uid"] for p in ready_pods(fleet_cluster, base_pool)}
                   and len(fleet_cluster.pods(base_pool)) == 2 and len(fleet_cluster.pods(cn_pool)) == 2,
                   timeout=240, interval=1)
        served = len(load.latencies)
        load.wait_for(served + 6)
    print(f"drain: {len(load.latencies)} requests served across the rollout, {len(load.failures)} failed")
    assert load.failures == []


def test_broken_pods_say_why_and_the_rest_keep_serving(fleet: TestBed, fleet_cluster: Cluster,
                                                       fleet_operator: LocalOperator) -> None:
    healthy = next(w for w in model_store.example_workflows() if w["metadata"]["name"] == "sdxl-canny-depth")
    healthy["spec"]["basePool"]["replicas"] = 1
    missing = {**healthy, "metadata": {"name": "missing-model"},
               "spec": {**healthy["spec"], "base": {**healthy["spec"]["base"], "model": "nobody/no-such-model"}}}
    fleet_cluster.apply_workflow(healthy)
    fleet_cluster.apply_workflow(missing)
    fleet_cluster.wait_ready("sdxl-canny-depth", timeout=240)

    # A model the store lacks: the runtime exits, the pod crash-loops, the workflow says so.
    degraded = eventually(lambda: (c := fleet_cluster.condition("missing-model", "Degraded")).get("status") == "True"
                          and c["reason"] == "CrashLooping" and c, timeout=120)
    assert "exit code 1" in degraded["message"]
    pod = fleet_cluster.pods(render.base_pool_name("missing-model"))[0]
    last = pod["status"]["containerStatuses"][0]["lastState"]["terminated"]
    assert "nobody/no-such-model" in last["message"]

    # A config with a misspelled key: the runtime refuses it naming the key (exit 2).
    deployment = fleet_cluster.get("apps/v1", "Deployment", render.base_pool_name("sdxl-canny-depth"))
    config_map = fleet_cluster.get("v1", "ConfigMap", render.base_pool_name("sdxl-canny-depth"))
    bad = config_map["data"]["config.yaml"].replace("grpcWorkers:", "grpcWorkerz:")
    kube.request(fleet_cluster.api, "POST", f"/api/v1/namespaces/{fleet_cluster.namespace}/configmaps",
                 body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "misspelled"},
                       "data": {"config.yaml": bad}})
    template = deployment["spec"]["template"]
    volumes = [{"name": v["name"], "configMap": {"name": "misspelled"}} if "configMap" in v else v
               for v in template["spec"]["volumes"]]
    kube.request(fleet_cluster.api, "POST", f"/api/v1/namespaces/{fleet_cluster.namespace}/pods", body={
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "misspelled", "labels": {"test": "misspelled"}},
        "spec": {**template["spec"], "volumes": volumes}})

    def refused() -> dict[str, Any] | None:
        path = f"/api/v1/namespaces/{fleet_cluster.namespace}/pods/misspelled"
        status = kube.request(fleet_cluster.api, "GET", path).get("status", {})
        terminated = (status.get("containerStatuses") or [{}])[0].get("lastState", {}).get("terminated")
        return terminated if terminated and terminated["exitCode"] == 2 else None

    terminated = eventually(refused, timeout=90)
    assert "grpcWorkerz" in terminated["message"]
    eventually(lambda: any(e["involvedObject"]["name"] == "misspelled" and e["reason"] == "BackOff"
                           for e in fleet_cluster.list("v1", "events")), timeout=30)

    # Meanwhile the healthy workflow keeps serving.
    target = service_target(fleet, fleet_cluster.namespace, render.base_pool_name("sdxl-canny-depth"))
    assert generate(target, small_request(healthy), timeout=120).png.startswith(PNG)
    assert fleet_cluster.condition("sdxl-canny-depth")["status"] == "True"


def test_a_model_store_that_cannot_be_mounted_is_named(fleet: TestBed, fleet_cluster: Cluster,
                                                       fleet_operator: LocalOperator, tmp_path: pathlib.Path) -> None:
    """The model store's claim is bound to a hostPath that does not exist: the pods stay in
    ContainerCreating, the kubelet posts FailedMount, and the workflow names the volume and path."""
    missing = tmp_path / "no-such-store"
    volume = model_store.bind_claim(fleet.api(), fleet_cluster.namespace, missing, claim="missing-models")
    try:
        example = next(w for w in model_store.example_workflows() if w["metadata"]["name"] == "sdxl-canny-depth")
        spec = example["spec"]
        fleet_cluster.apply_workflow({**example, "metadata": {"name": "unmountable"}, "spec": {
            **spec, "modelStore": {**spec["modelStore"], "claimName": "missing-models"},
            "basePool": {**spec["basePool"], "replicas": 1}}})
        ready = eventually(lambda: (c := fleet_cluster.condition("unmountable")).get("reason") == "VolumeMountFailed"
                           and c["message"].startswith("base pool") and c, timeout=120)  # the first of two pools
        pod = fleet_cluster.pods(render.base_pool_name("unmountable"))[0]
        assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ContainerCreating"
        assert ready["status"] == "False"
        assert ready["message"] == (f"base pool swd-unmountable-base: 1 of 1 pods: pod {pod['metadata']['name']} "
                                    f'cannot mount volume: MountVolume.SetUp failed for volume "models": hostPath '
                                    f"{missing} does not exist")
        assert fleet_cluster.condition("unmountable", "Degraded")["reason"] == "VolumeMountFailed"
        assert fleet_cluster.condition("unmountable", "Stalled")["status"] == "False", "a claim may still bind"
        columns, rows = fleet_cluster.table()
        assert rows["unmountable"][columns.index("Reason")] == "VolumeMountFailed", "kubectl get t2i shows it"
        assert [e for e in fleet_cluster.list("v1", "events") if e["involvedObject"]["kind"] == "T2IWorkflow"
                and e["reason"] == "VolumeMountFailed" and e["type"] == "Warning"]
    finally:
        fleet.api().request("DELETE", f"/api/v1/persistentvolumes/{volume}")


def test_a_scale_out_probe_times_a_pool_pod_outside_the_pool(fleet_cluster: Cluster,
                                                               fleet_operator: LocalOperator) -> None:
    """The calibration's pod start (`calibration.scale_out_pod_starts`): one pod of each pool's
    template, timed created -> Ready and deleted, while the pools keep their own pods."""
    workflow = next(w for w in model_store.example_workflows() if w["metadata"]["name"] == "sdxl-canny-depth")
    workflow["spec"]["basePool"]["replicas"] = 1
    fleet_cluster.apply_workflow(workflow)
    fleet_cluster.wait_ready("sdxl-canny-depth", timeout=240)
    pools = (render.base_pool_name("sdxl-canny-depth"), render.dedicated_controlnet_pool_name("sdxl-canny-depth"))
    before = {pool: fleet_cluster.pods(pool) for pool in pools}
    starts = calibration.scale_out_pod_starts(fleet_cluster, pools)
    first = statistics.mean(calibration.pod_start(pod) for pods in before.values() for pod in pods)
    assert len(starts) == 2 and 0.5 < statistics.mean(starts) / first < 2, (starts, first)
    assert {pool: [p["metadata"]["name"] for p in fleet_cluster.pods(pool)] for pool in pools} == \
        {pool: [p["metadata"]["name"] for p in pods] for pool, pods in before.items()}
    assert fleet_cluster.list("v1", "pods", calibration.PROBE_LABEL) == []
