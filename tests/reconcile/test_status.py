"""Status from observed Deployments: conditions, per-pool replicas, endpoints, no churn."""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

from swiftdiffusion.operator.status import (
    PodProblem,
    PoolObservation,
    awaiting_volumes,
    compute_status,
    pod_problem,
)


def _deployment(desired: int, ready: int, updated: int | None = None, generation: int = 1,
                observed: int = 1, replicas: int | None = None) -> dict[str, Any]:
    return {"metadata": {"generation": generation}, "spec": {"replicas": desired},
            "status": {"observedGeneration": observed, "readyReplicas": ready,
                       "updatedReplicas": ready if updated is None else updated,
                       "replicas": desired if replicas is None else replicas}}


def _pools(base: dict[str, Any] | None, cn: dict[str, Any] | None) -> list[PoolObservation]:
    return [PoolObservation("base", "swd-wf-base", "swd-wf-base.ns.svc:50051", base),
            PoolObservation("controlnet", "swd-cn-p", "swd-cn-p.ns.svc:50051", cn, shared=True,
                            controlnets=("canny",))]


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_all_pools_rolled_out_is_ready_with_endpoints_and_counts() -> None:
    status = compute_status(3, _pools(_deployment(2, 2), _deployment(1, 1)), {}, timestamp="t0")
    conditions = _conditions(status)
    assert conditions["Ready"]["status"] == "True" and conditions["Ready"]["observedGeneration"] == 3
    assert conditions["Progressing"]["status"] == "False" and conditions["Degraded"]["status"] == "False"
    assert status["observedGeneration"] == 3
    assert status["basePool"] == {"name": "swd-wf-base", "endpoint": "swd-wf-base.ns.svc:50051", "shared": False,
                                  "ready": "2/2", "desiredReplicas": 2, "readyReplicas": 2, "updatedReplicas": 2}
    assert status["controlnetPool"]["controlnets"] == ["canny"] and status["controlnetPool"]["shared"] is True


def test_missing_or_rolling_pool_is_progressing_not_ready() -> None:
    for base in (None, _deployment(2, 1), _deployment(2, 2, updated=1, replicas=3), _deployment(2, 2, 2, 2, 1)):
        conditions = _conditions(compute_status(1, _pools(base, _deployment(1, 1)), {}, timestamp="t0"))
        assert conditions["Ready"]["status"] == "False", base
        assert conditions["Ready"]["reason"] == "PoolsNotReady"
        assert conditions["Progressing"]["status"] == "True"


def test_reconcile_error_is_degraded_with_its_message() -> None:
    conditions = _conditions(compute_status(1, _pools(_deployment(1, 1), _deployment(1, 1)), {},
                                            error="422 Unprocessable", timestamp="t0"))
    assert conditions["Ready"]["reason"] == "ReconcileFailed"
    assert conditions["Degraded"]["status"] == "True" and conditions["Degraded"]["message"] == "422 Unprocessable"


def test_unchanged_world_gives_identical_status_and_transitions_keep_their_time() -> None:
    pools = _pools(_deployment(1, 1), _deployment(1, 1))
    first = compute_status(1, pools, {}, timestamp="t0")
    assert compute_status(1, pools, first, timestamp="t1") == first
    rolling = compute_status(1, _pools(_deployment(1, 0), _deployment(1, 1)), first, timestamp="t2")
    conditions = _conditions(rolling)
    assert conditions["Ready"]["lastTransitionTime"] == "t2"
    assert conditions["Degraded"]["lastTransitionTime"] == "t0"


def _pod(phase: str = "Pending", conditions: list[dict] | None = None, waiting: dict | None = None,
         running: bool = False, **status: object) -> dict:
    container: dict = {"name": "runtime", "image": "swiftdiffusion/runtime:0.1.0", "restartCount": 0}
    if waiting:
        container["state"] = {"waiting": waiting}
    elif running:
        container["state"] = {"running": {}}
    return {"metadata": {"name": "p"}, "status": {"phase": phase, "conditions": conditions or [],
                                                  "containerStatuses": [container] if waiting or running else [],
                                                  **status}}


UNSCHEDULABLE = _pod(conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                  "message": "0/6 nodes are available: 6 Insufficient nvidia.com/gpu."}])


def test_pod_problems_name_the_cause_in_the_order_a_user_fixes_them() -> None:
    pulling = _pod(waiting={"reason": "ImagePullBackOff", "message": "Back-off pulling image"})
    crashing = _pod("Running", waiting={"reason": "CrashLoopBackOff"}, running=False)
    crashing["status"]["containerStatuses"][0].update(
        restartCount=5, lastState={"terminated": {"exitCode": 2, "reason": "Error"}})
    not_ready = _pod("Running", [{"type": "Ready", "status": "False", "message": "containers with unready status"}],
                     running=True)
    loading = copy.deepcopy(not_ready)
    not_ready["status"]["containerStatuses"][0].update(started=True, ready=False)
    assert pod_problem([pulling, UNSCHEDULABLE]) == PodProblem(
        "Unschedulable", "1 of 2 pods: unschedulable: 0/6 nodes are available: 6 Insufficient nvidia.com/gpu.")
    assert pod_problem([pulling]) == PodProblem(
        "ImagePullFailed", "1 of 1 pods: container runtime cannot pull image swiftdiffusion/runtime:0.1.0: "
                           "ImagePullBackOff (Back-off pulling image)")
    assert pod_problem([crashing, not_ready]).message == (
        "1 of 2 pods: container runtime is crash looping after 5 restarts, last exit code 2 (Error)")
    assert pod_problem([not_ready]) == PodProblem(
        "ProbesFailing", "1 of 1 pods: container runtime started but fails its readiness probe "
                         "(containers with unready status)")
    assert pod_problem([loading]) is None, "a pod still loading its model (startup probe) is not failing"
    assert pod_problem([_pod(), _pod("Running", running=True)]) is None, "pods still starting are not a problem"


def _creating(name: str) -> dict:
    """A scheduled pod whose container waits to be created (a kubelet mounting its volumes)."""
    pod = _pod(conditions=[{"type": "PodScheduled", "status": "True"}], waiting={"reason": "ContainerCreating"})
    pod["metadata"] = {"name": name, "uid": f"uid-{name}"}
    return pod


def _event(pod: str, reason: str, at: str, message: str = "", **fields: object) -> dict:
    return {"involvedObject": {"kind": "Pod", "name": pod, "uid": f"uid-{pod}"}, "reason": reason,
            "message": message, "lastTimestamp": at, **fields}


FAILED_MOUNT = 'MountVolume.SetUp failed for volume "models" : hostPath   /data/models does not exist'


def test_a_pod_that_cannot_mount_its_volume_says_so_from_its_newest_event() -> None:
    pods = [_creating("a"), _creating("b")]
    mount = _event("a", "FailedMount", "2030-01-01T00:00:05Z", FAILED_MOUNT)
    assert awaiting_volumes(pods) == ["a", "b"], "their status cannot tell: read their events"
    assert pod_problem(pods) is None and pod_problem(pods, []) is None, "no events: still starting"
    assert pod_problem(pods, [mount]) == PodProblem(
        "VolumeMountFailed", '1 of 2 pods: pod a cannot mount volume: MountVolume.SetUp failed for volume "models" '
                             ': hostPath /data/models does not exist')
    # Attach failures count too; the scheduler's event, though newer (micro- against whole seconds), does not.
    attach = _event("b", "FailedAttachVolume", "", "AttachVolume.Attach failed for volume \"pv-1\"",
                    eventTime="2030-01-01T00:00:04.000000Z")
    scheduled = _event("b", "Scheduled", "", "Successfully assigned", eventTime="2030-01-01T00:00:04.900000Z")
    assert pod_problem(pods, [mount, attach, scheduled]).message.startswith("2 of 2 pods: pod a cannot mount")
    # A newer event past the volumes (the image pulling), a repeat in `series`, another pod of that name.
    pulling = _event("a", "Pulling", "2030-01-01T00:00:06Z", "Pulling image")
    assert pod_problem(pods, [mount, pulling]) is None, "its volumes are mounted: the image is on its way"
    repeated = {**mount, "series": {"count": 3, "lastObservedTime": "2030-01-01T00:00:07.000000Z"}}
    assert pod_problem(pods, [repeated, pulling]).reason == "VolumeMountFailed"
    earlier_pod = {**mount, "involvedObject": {**mount["involvedObject"], "uid": "uid-gone"}}
    assert pod_problem(pods, [earlier_pod]) is None
    assert pod_problem([_pod("Running", running=True)], [mount]) is None, "a running pod mounted its volumes"
    base, cn = _pools(_deployment(1, 0), _deployment(1, 1))
    stuck = dataclasses.replace(base, problem=pod_problem(pods, [mount]))
    conditions = _conditions(compute_status(1, [stuck, cn], {}, timestamp="t0"))
    assert conditions["Ready"]["reason"] == conditions["Degraded"]["reason"] == "VolumeMountFailed"
    assert conditions["Stalled"]["status"] == "False", "a claim still binding mounts on a later try"


def test_a_volume_ranks_after_placement_and_image_and_before_crash_loops() -> None:
    pulling = _pod(waiting={"reason": "ImagePullBackOff"})
    crashing = _pod("Running", waiting={"reason": "CrashLoopBackOff"})
    mount = _event("a", "FailedMount", "2030-01-01T00:00:05Z", FAILED_MOUNT)
    for first, reason in ((UNSCHEDULABLE, "Unschedulable"), (pulling, "ImagePullFailed")):
        assert awaiting_volumes([_creating("a"), first]) == [], "the pods' events are not needed"
        assert pod_problem([_creating("a"), first], [mount]).reason == reason
    assert awaiting_volumes([_creating("a"), crashing]) == ["a"]
    assert pod_problem([crashing, _creating("a")], [mount]).reason == "VolumeMountFailed"


def test_a_pod_problem_sets_ready_reason_and_degraded_until_the_pool_rolls_out() -> None:
    base, cn = _pools(_deployment(1, 0), _deployment(1, 1))
    stuck = dataclasses.replace(base, problem=pod_problem([UNSCHEDULABLE]))
    conditions = _conditions(compute_status(1, [stuck, cn], {}, timestamp="t0"))
    assert conditions["Ready"]["reason"] == "Unschedulable"
    assert conditions["Ready"]["message"].startswith("base pool swd-wf-base: 1 of 1 pods: unschedulable: 0/6 nodes")
    assert conditions["Degraded"]["status"] == "True" and conditions["Degraded"]["reason"] == "Unschedulable"
    rolled = _pools(_deployment(1, 1), _deployment(1, 1))
    healed = _conditions(compute_status(1, rolled, compute_status(1, [stuck, cn], {}, timestamp="t0"), timestamp="t1"))
    assert healed["Ready"]["status"] == "True" and healed["Degraded"]["status"] == "False"


def test_a_shared_pool_set_up_for_another_dtype_is_degraded_but_ready() -> None:
    base, cn = _pools(_deployment(1, 1), _deployment(1, 1))
    odd = dataclasses.replace(cn, mismatch="shared ControlNet pool swd-cn-p runs its ControlNets in float16 ...")
    conditions = _conditions(compute_status(1, [base, odd], {}, timestamp="t0"))
    assert conditions["Ready"]["status"] == "True", "it serves; its residuals are cast"
    assert conditions["Degraded"]["status"] == "True" and conditions["Degraded"]["reason"] == "SharedPoolMismatch"
    assert conditions["Degraded"]["message"].startswith("shared ControlNet pool swd-cn-p runs")
