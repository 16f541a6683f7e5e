"""Autoscaling objects and status, with no cluster: what the operator renders for KEDA, the
shared pool's bounds rule, and the AutoscalingReady condition."""
from __future__ import annotations

from typing import Any

from swiftdiffusion.operator import autoscaling, render
from swiftdiffusion.operator import model as m
from swiftdiffusion.operator.status import PoolObservation, ScalingObservation, compute_status
from tests.reconcile.workflows import CANNY, DEPTH, workflow

ON = {"enabled": True, "minReplicas": 1, "maxReplicas": 4, "targetInFlightPerReplica": 2,
      "scaleDownStabilizationSeconds": 30}
SETTINGS = autoscaling.Settings("http://prometheus.test:9090", 5)


def _one(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(x for x in manifests if x["kind"] == kind and x["metadata"]["name"] == name)


def _kinds(manifests: list[dict[str, Any]], name: str) -> list[str]:
    return sorted(x["kind"] for x in manifests if x["metadata"]["name"] == name)


def test_without_autoscaling_no_scaled_object_and_the_deployment_keeps_its_replicas() -> None:
    manifests = render.render_workflow(workflow(basePool={"replicas": 3}), scaling=SETTINGS)
    assert autoscaling.KIND not in _kinds(manifests, "swd-wf-base")
    assert _one(manifests, "Deployment", "swd-wf-base")["spec"]["replicas"] == 3


def test_an_autoscaled_base_pool_gets_a_scaled_object_on_its_own_demand_and_no_replica_count() -> None:
    manifests = render.render_workflow(workflow(basePool={"replicas": 3, "autoscaling": ON}), scaling=SETTINGS)
    assert "replicas" not in _one(manifests, "Deployment", "swd-wf-base")["spec"]  # the HPA's field
    scaled = _one(manifests, autoscaling.KIND, "swd-wf-base")
    spec = scaled["spec"]
    assert scaled["metadata"]["ownerReferences"][0]["name"] == "wf"
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "swd-wf-base"}
    assert (spec["minReplicaCount"], spec["maxReplicaCount"], spec["pollingInterval"]) == (1, 4, 5)
    assert spec["fallback"]["behavior"] == "currentReplicas"
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"] == {
        "stabilizationWindowSeconds": 30}
    [trigger] = spec["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    assert trigger["metadata"]["serverAddress"] == "http://prometheus.test:9090"
    assert trigger["metadata"]["threshold"] == "2"
    assert trigger["metadata"]["ignoreNullValues"] == "false"  # no data is not zero demand
    query = trigger["metadata"]["query"]
    assert 'namespace="ns",pool="swd-wf-base"' in query
    assert query.startswith("sum(swiftdiffusion_inflight_requests{")  # queued calls are in flight already
    assert "scalingModifiers" not in spec["advanced"]


def test_a_controlnet_pool_scales_on_the_larger_of_its_sessions_and_its_callers_demand() -> None:
    wf = workflow(controlnets=[CANNY], controlnetPool={"autoscaling": ON})
    spec = _one(render.render_workflow(wf, scaling=SETTINGS), autoscaling.KIND, "swd-wf-cn")["spec"]
    names = {t["name"]: t["metadata"]["query"] for t in spec["triggers"]}
    assert 'pool="swd-wf-cn"' in names["own"] and 'pool="swd-wf-base"' in names["caller0"]
    assert spec["advanced"]["scalingModifiers"] == {"formula": "max(own, caller0)", "target": "2",
                                                    "metricType": "AverageValue"}


def test_a_shared_pool_follows_every_member_by_the_documented_rule() -> None:
    first = workflow("a", created="2026-01-01T00:00:00Z", controlnets=[CANNY],
                     controlnetPool={"sharedPoolName": "shared", "autoscaling": {**ON, "minReplicas": 2}})
    second = workflow("b", created="2026-01-02T00:00:00Z", controlnets=[DEPTH], controlnetPool={
        "sharedPoolName": "shared", "autoscaling": {**ON, "maxReplicas": 3, "targetInFlightPerReplica": 1,
                                                    "scaleDownStabilizationSeconds": 60}})
    idle = workflow("c", created="2026-01-03T00:00:00Z", controlnets=[DEPTH],
                    controlnetPool={"sharedPoolName": "shared"})
    spec = _one(render.render_shared_pool("shared", [first, second, idle], scaling=SETTINGS),
                autoscaling.KIND, "swd-cn-shared")["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (2, 7)  # highest floor, sum of ceilings
    assert spec["advanced"]["scalingModifiers"]["target"] == "1"  # the strictest target
    assert spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] \
        == 60
    assert spec["advanced"]["scalingModifiers"]["formula"] == "max(own, caller0 + caller1 + caller2)"
    assert autoscaling.shared_bounds([m.Autoscaling(), m.Autoscaling()]) == m.Autoscaling()


def _pools(scaling: ScalingObservation | None) -> list[PoolObservation]:
    deployment = {"metadata": {"generation": 1}, "spec": {"replicas": 2},
                  "status": {"observedGeneration": 1, "replicas": 2, "readyReplicas": 2, "updatedReplicas": 2,
                             "availableReplicas": 2}}
    return [PoolObservation("base", "swd-wf-base", "swd-wf-base.ns.svc:50051", deployment, scaling=scaling)]


def test_autoscaling_ready_says_why_not_and_is_absent_without_autoscaling() -> None:
    conditions = {c["type"]: c for c in compute_status(1, _pools(None), {})["conditions"]}
    assert "AutoscalingReady" not in conditions
    missing = ScalingObservation(0, 0, "KedaNotInstalled", "the keda.sh/v1alpha1 ScaledObject API is not served")
    status = compute_status(1, _pools(missing), {})
    condition = next(c for c in status["conditions"] if c["type"] == "AutoscalingReady")
    assert (condition["status"], condition["reason"]) == ("False", "KedaNotInstalled")
    assert condition["message"].startswith("base pool swd-wf-base: the keda.sh")
    assert next(c for c in status["conditions"] if c["type"] == "Ready")["status"] == "True"  # pools still serve
    active = compute_status(1, _pools(ScalingObservation(1, 4, "Active", "1-4 replicas")), {})
    condition = next(c for c in active["conditions"] if c["type"] == "AutoscalingReady")
    assert (condition["status"], condition["reason"]) == ("True", "Active")
    assert active["basePool"]["autoscaling"] == {"minReplicas": 1, "maxReplicas": 4, "state": "Active"}
