"""The autoscaling loop closed on the fleet: runtime pods → Prometheus → KEDA → HPA →
Deployment → the kubelet stand-in starts the pods, all real components.

A burst on a workflow scales its base pool and its ControlNet pool follows in the same
cycles; a metrics outage holds replicas and says so; a restarted operator writes nothing
that undoes the autoscaler; after the load both pools return to their minimum. A shared
ControlNet pool scales on the sum of its members' demand.
"""
from __future__ import annotations

import time
from typing import Any


from swiftdiffusion.operator import render
from swiftdiffusion.operator.local_process import LocalOperator
from tests.fleet.traffic import Load, ready_pods, ready_since, seconds_between, served_requests, service_target
from tests.reconcile.fixtures import Cluster
from tests.testbed import processes
from tests.testbed.cluster import TestBed
from tests.testbed.fleet import model_store, prometheus
from tests.testbed.waiting import eventually

SCALING = {"enabled": True, "minReplicas": 1, "maxReplicas": 3, "targetInFlightPerReplica": 1,
           "scaleDownStabilizationSeconds": 15}


def example(name: str) -> dict[str, Any]:
    return next(w for w in model_store.example_workflows() if w["metadata"]["name"] == name)


def replicas(cluster: Cluster, pool: str) -> int:
    return cluster.get("apps/v1", "Deployment", pool)["spec"].get("replicas", 1)


def autoscaling_reason(cluster: Cluster, workflow: str) -> str:
    return cluster.condition(workflow, "AutoscalingReady").get("reason", "")


def test_a_burst_scales_both_pools_and_they_return_to_their_minimum(
        fleet: TestBed, fleet_cluster: Cluster, scaling_operator: LocalOperator) -> None:
    workflow = example("sdxl-canny-depth")
    workflow["spec"]["basePool"] = {**workflow["spec"]["basePool"], "autoscaling": SCALING}
    workflow["spec"]["controlnetPool"] = {**workflow["spec"]["controlnetPool"], "autoscaling": SCALING}
    name = workflow["metadata"]["name"]
    base, cn = render.base_pool_name(name), render.dedicated_controlnet_pool_name(name)
    fleet_cluster.apply_workflow(workflow)
    fleet_cluster.wait_ready(name, timeout=240)
    eventually(lambda: autoscaling_reason(fleet_cluster, name) == "Active", timeout=90)
    assert (replicas(fleet_cluster, base), replicas(fleet_cluster, cn)) == (1, 1)

    target = service_target(fleet, fleet_cluster.namespace, base)
    with Load(target, workflow, clients=6, steps=8) as load:
        burst = time.monotonic()
        first_extra: dict[str, float] = {}

        def both_scaled() -> bool:
            for pool in (base, cn):
                if pool not in first_extra and len(ready_pods(fleet_cluster, pool)) >= 2:
                    first_extra[pool] = time.monotonic() - burst
            return len(first_extra) == 2

        eventually(both_scaled, timeout=180, interval=0.5)
        for pool in (base, cn):
            newest = max(ready_pods(fleet_cluster, pool), key=lambda p: p["metadata"]["creationTimestamp"])
            starting = seconds_between(newest["metadata"]["creationTimestamp"], ready_since(newest))
            print(f"{pool}: burst -> first extra Ready replica {first_extra[pool]:.1f} s, of which the pod's own "
                  f"start (created -> Ready) {starting:.0f} s; the rest is scrape, KEDA poll and HPA sync")

        # The operator restarted mid scale-up writes nothing back: replicas stay the HPA's.
        scaled = replicas(fleet_cluster, base)
        scaling_operator.stop()
        scaling_operator.start()
        time.sleep(10)
        assert replicas(fleet_cluster, base) >= scaled
        assert scaling_operator.metrics().get("swiftdiffusion_operator_api_writes_total{resource=deployments}", 0) == 0

        # The load spreads: more than one base pod serves.
        eventually(lambda: sum(served_requests(p) > 0 for p in ready_pods(fleet_cluster, base)) >= 2, timeout=60)

        # Prometheus down: KEDA's fallback holds the replicas, and the workflow says why.
        held = replicas(fleet_cluster, base), replicas(fleet_cluster, cn)
        processes.stop(fleet.state, "prometheus")
        try:
            eventually(lambda: autoscaling_reason(fleet_cluster, name) == "MetricsUnavailable", timeout=90)
            assert (replicas(fleet_cluster, base), replicas(fleet_cluster, cn)) == held
        finally:
            processes.start("prometheus", prometheus.install(fleet), fleet.state, tied_to_parent=True)
        eventually(lambda: autoscaling_reason(fleet_cluster, name) == "Active", timeout=120)
    assert load.failures == []

    # Load gone: both pools return to their minimum after the scale-down window.
    stopped = time.monotonic()
    eventually(lambda: replicas(fleet_cluster, base) == 1 and replicas(fleet_cluster, cn) == 1, timeout=180,
               interval=1)
    print(f"load stopped -> both pools at minimum: {time.monotonic() - stopped:.1f} s; "
          f"{len(load.latencies)} requests served, none failed")


def test_a_shared_controlnet_pool_scales_on_the_sum_of_its_members_demand(
        fleet: TestBed, fleet_cluster: Cluster, scaling_operator: LocalOperator) -> None:
    members = [w for w in model_store.example_workflows()
               if w["spec"].get("controlnetPool", {}).get("sharedPoolName")]
    for workflow in members:
        workflow["spec"]["controlnetPool"] = {**workflow["spec"]["controlnetPool"], "autoscaling": {
            **SCALING, "maxReplicas": 2}}
        fleet_cluster.apply_workflow(workflow)
    for workflow in members:
        fleet_cluster.wait_ready(workflow["metadata"]["name"], timeout=240)
    pool = render.shared_controlnet_pool_name(members[0]["spec"]["controlnetPool"]["sharedPoolName"])
    eventually(lambda: all(autoscaling_reason(fleet_cluster, w["metadata"]["name"]) == "Active" for w in members),
               timeout=90)
    scaled = fleet_cluster.get("keda.sh/v1alpha1", "ScaledObject", pool)["spec"]
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (1, 4)  # ceilings summed

    targets = [service_target(fleet, fleet_cluster.namespace, render.base_pool_name(w["metadata"]["name"]))
               for w in members]
    # One member loaded (2 requests at a time), the other idle: two replicas.
    with Load(targets[0], members[0], clients=2, steps=8):
        eventually(lambda: replicas(fleet_cluster, pool) == 2, timeout=150, interval=1)
        # Both loaded: the demand adds up and the pool goes to its summed ceiling.
        with Load(targets[1], members[1], clients=2, steps=8):
            eventually(lambda: replicas(fleet_cluster, pool) == 4, timeout=150, interval=1)
