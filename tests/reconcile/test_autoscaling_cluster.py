"""Autoscaling objects on the test bed: without KEDA the workflow says so and still serves;
with KEDA's API served the operator applies, reports on and prunes ScaledObjects. (The
closed loop, with KEDA running and real load, is tests/fleet/test_autoscaling.py.)"""
from __future__ import annotations

from typing import Any

import pytest

from swiftdiffusion.operator import autoscaling
from swiftdiffusion.operator.local_process import LocalOperator
from tests.reconcile.fixtures import Cluster, wait_until
from tests.reconcile.workflows import CANNY, body

pytestmark = pytest.mark.cluster
ON = {"enabled": True, "minReplicas": 1, "maxReplicas": 3, "targetInFlightPerReplica": 2}


def autoscaled(name: str = "auto", base_pool: dict[str, Any] | None = None) -> dict[str, Any]:
    """A workflow whose two pools autoscale (or whose base pool is `base_pool`), as a user writes it."""
    doc = body(name, controlnets=[CANNY], basePool=base_pool or {"autoscaling": ON},
               controlnetPool={"autoscaling": ON})
    return {**doc, "metadata": {"name": name}}


def test_without_keda_the_workflow_serves_and_says_autoscaling_is_missing(operator: LocalOperator,
                                                                         cluster: Cluster) -> None:
    cluster.apply_workflow(autoscaled())
    cluster.wait_ready("auto")
    condition = wait_until(lambda: (c := cluster.condition("auto", "AutoscalingReady")) and c)
    assert (condition["status"], condition["reason"]) == ("False", "KedaNotInstalled")
    assert "install KEDA" in condition["message"]
    deployment = cluster.get("apps/v1", "Deployment", "swd-auto-base")
    assert deployment["spec"]["replicas"] == 1  # the Deployment's default: the operator leaves it to the autoscaler


def test_with_keda_served_scaled_objects_are_applied_reported_and_pruned(keda_crds: list[str], operator: LocalOperator,
                                                                         cluster: Cluster) -> None:
    cluster.apply_workflow(autoscaled())
    for pool, callers in (("swd-auto-base", 0), ("swd-auto-cn", 1)):
        scaled = wait_until(lambda p=pool: cluster.get(*autoscaling.TYPE, p))
        assert scaled["metadata"]["ownerReferences"][0]["name"] == "auto"
        assert scaled["spec"]["scaleTargetRef"]["name"] == pool
        assert len(scaled["spec"]["triggers"]) == 1 + callers
    # No KEDA controller runs here: the ScaledObjects are never reconciled, and status says so.
    condition = wait_until(lambda: (c := cluster.condition("auto", "AutoscalingReady")).get("reason")
                           == "ScaledObjectNotReady" and c)
    assert condition["status"] == "False"
    assert cluster.workflow("auto")["status"]["basePool"]["autoscaling"] == {
        "minReplicas": 1, "maxReplicas": 3, "state": "ScaledObjectNotReady"}

    # Autoscaling off for the base pool: its ScaledObject goes, the spec's replicas come back.
    cluster.apply_workflow(autoscaled(base_pool={"replicas": 2}))
    wait_until(lambda: cluster.get(*autoscaling.TYPE, "swd-auto-base") is None)
    wait_until(lambda: cluster.get("apps/v1", "Deployment", "swd-auto-base")["spec"]["replicas"] == 2)
    assert cluster.get(*autoscaling.TYPE, "swd-auto-cn") is not None

    # The workflow deleted: the garbage collector takes the rest (owner references).
    cluster.delete_workflow("auto")
    wait_until(lambda: cluster.get(*autoscaling.TYPE, "swd-auto-cn") is None, timeout=90)
