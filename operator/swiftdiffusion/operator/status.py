"""Pure status computation: observed pool Deployments in, the workflow's `.status` out.

Conditions follow the Kubernetes conventions (type, status, reason, message,
lastTransitionTime, observedGeneration); a condition keeps its lastTransitionTime while
its status stays the same, so an unchanged world yields an identical status and the
controller writes nothing.
"""
from __future__ import annotations

import datetime
import functools
from dataclasses import dataclass, field
from typing import Any

from swiftdiffusion.operator.api_errors import shorten

READY, PROGRESSING, DEGRADED, STALLED = "Ready", "Progressing", "Degraded", "Stalled"
# Degraded reasons that waiting will not fix: kstatus (Flux, `kubectl wait`-style tools)
# reads Stalled=True as Failed, where Ready=False alone reads as InProgress forever.
# VolumeMountFailed is not among them: a claim still binding or a volume still attaching
# mounts on the kubelet's next try, and its FailedMount event reads like a missing path's.
STALLED_REASONS = ("PoolFailing", "ImagePullFailed", "SharedPoolMismatch")
AUTOSCALING_READY = "AutoscalingReady"
SCALING_ACTIVE = "Active"


@dataclass(frozen=True)
class PodProblem:
    """Why a pool's pods are not ready, as its pods say it: a short reason and one sentence."""

    reason: str  # Unschedulable | ImagePullFailed | VolumeMountFailed | CrashLooping | ProbesFailing
    message: str


@dataclass(frozen=True)
class ScalingObservation:
    """A pool's autoscaling as its ScaledObject (and KEDA) report it."""

    min_replicas: int
    max_replicas: int
    reason: str  # Active | KedaNotInstalled | ScaledObjectPending | ScaledObjectNotReady | MetricsUnavailable
    message: str


@dataclass(frozen=True)
class PoolObservation:
    """One pool as the workflow sees it: where to call it, its live Deployment (None if absent)
    and, while it is not rolled out, what its pods say is wrong."""

    role: str
    name: str
    endpoint: str
    deployment: dict[str, Any] | None
    shared: bool = False
    controlnets: tuple[str, ...] = field(default=())
    problem: PodProblem | None = None
    mismatch: str | None = None  # a shared pool set up for another member than this workflow needs
    scaling: ScalingObservation | None = None  # None: autoscaling is off for this pool


# Ready reasons that explain a failure: a Warning event goes with each new one.
PROBLEM_REASONS = ("ReconcileFailed", "Unschedulable", "ImagePullFailed", "VolumeMountFailed", "CrashLooping",
                   "ProbesFailing")
_IMAGE_PULL = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
# Pod events that say a volume is not there: the kubelet's, and the attach/detach controller's.
VOLUME_EVENTS = ("FailedMount", "FailedAttachVolume")
# A pod waiting for its containers was scheduled: its scheduling events are older than any mount.
_SCHEDULING_EVENTS = ("Scheduled", "FailedScheduling")


def pod_problem(pods: list[dict[str, Any]], events: list[dict[str, Any]] | None = None) -> PodProblem | None:
    """The most telling problem among a pool's pods, in the order a user fixes them: a pod
    that cannot be placed, then one whose image cannot be pulled, one that cannot mount a
    volume (only its `events` say so: those of the pods `awaiting_volumes` names), one that
    keeps crashing, one whose probes fail. None when nothing is wrong yet (pods still starting)."""
    live = _live(pods)
    volumes = functools.partial(_volume_mount, events=events or [])
    for check in (*_BEFORE_VOLUMES, volumes, _crash_loop, _probes):
        found = [(pod, detail) for pod in live if (detail := check(pod))]
        if found:
            reason, detail = found[0][1]
            return PodProblem(reason, f"{len(found)} of {len(live)} pods: {detail}")
    return None


def awaiting_volumes(pods: list[dict[str, Any]]) -> list[str]:
    """Names of the live pods whose containers wait to be created, when no cause ranked before a
    volume applies: pod status does not say that a volume cannot be mounted, only the pods'
    events do, so the caller reads those for these pods (and only when there are any)."""
    live = _live(pods)
    if any(check(pod) for check in _BEFORE_VOLUMES for pod in live):
        return []
    return [pod["metadata"]["name"] for pod in live if _creating(pod)]


def _live(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [pod for pod in pods if not pod.get("metadata", {}).get("deletionTimestamp")]


def _conditions_of(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type", ""): c for c in pod.get("status", {}).get("conditions", [])}


def _unschedulable(pod: dict[str, Any]) -> tuple[str, str] | None:
    scheduled = _conditions_of(pod).get("PodScheduled", {})
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        return "Unschedulable", f"unschedulable: {scheduled.get('message', 'no node fits')}"
    return None


def _waiting(pod: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    statuses = pod.get("status", {}).get("containerStatuses", []) + pod.get("status", {}).get(
        "initContainerStatuses", [])
    return [(s.get("name", "?"), s) for s in statuses if "waiting" in s.get("state", {})]


def _image_pull(pod: dict[str, Any]) -> tuple[str, str] | None:
    for name, status in _waiting(pod):
        waiting = status["state"]["waiting"]
        if waiting.get("reason") in _IMAGE_PULL:
            detail = f" ({waiting['message']})" if waiting.get("message") else ""
            return "ImagePullFailed", f"container {name} cannot pull image {status.get('image', '?')}: " \
                                      f"{waiting['reason']}{detail}"
    return None


# Causes ranked before a volume that cannot be mounted: with one of them, pod events are not read.
_BEFORE_VOLUMES = (_unschedulable, _image_pull)


def _creating(pod: dict[str, Any]) -> bool:
    return any(status["state"]["waiting"].get("reason") == "ContainerCreating" for _, status in _waiting(pod))


def _when(event: dict[str, Any]) -> datetime.datetime:
    """When an event was last seen (a repeated one counts up in `series` or `lastTimestamp`)."""
    stamp = ((event.get("series") or {}).get("lastObservedTime") or event.get("lastTimestamp")
             or event.get("eventTime") or event.get("firstTimestamp")
             or event.get("metadata", {}).get("creationTimestamp"))
    return datetime.datetime.fromisoformat(stamp) if stamp else datetime.datetime.min.replace(tzinfo=datetime.UTC)


def _volume_mount(pod: dict[str, Any], events: list[dict[str, Any]]) -> tuple[str, str] | None:
    """A pod still creating its containers whose newest event (after its scheduling) is a failed
    mount or attach; a newer one (pulling the image, say) means its volumes are in place."""
    if not _creating(pod):
        return None
    meta = pod["metadata"]
    own = [e for e in events if e.get("involvedObject", {}).get("name") == meta["name"]
           and e["involvedObject"].get("uid") in (None, meta.get("uid")) and e.get("reason") not in _SCHEDULING_EVENTS]
    newest = max(own, key=_when, default=None)
    if newest is None or newest.get("reason") not in VOLUME_EVENTS:
        return None
    return "VolumeMountFailed", f"pod {meta['name']} cannot mount volume: " \
                                f"{shorten(newest.get('message') or newest['reason'])}"


def _crash_loop(pod: dict[str, Any]) -> tuple[str, str] | None:
    for name, status in _waiting(pod):
        if status["state"]["waiting"].get("reason") == "CrashLoopBackOff":
            last = status.get("lastState", {}).get("terminated", {})
            exit_code = f", last exit code {last['exitCode']} ({last.get('reason', 'Error')})" if last else ""
            return "CrashLooping", f"container {name} is crash looping after " \
                                   f"{status.get('restartCount', 0)} restarts{exit_code}"
    return None


def _probes(pod: dict[str, Any]) -> tuple[str, str] | None:
    """Only after the startup probe passed (`started`): a pod loading its model is not failing."""
    for status in pod.get("status", {}).get("containerStatuses", []):
        if status.get("started") and not status.get("ready") and "running" in status.get("state", {}):
            ready = _conditions_of(pod).get("Ready", {})
            return "ProbesFailing", f"container {status.get('name', '?')} started but fails its readiness probe " \
                                    f"({ready.get('message') or 'not ready'})"
    return None


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _replicas(pool: PoolObservation) -> tuple[int, int, int]:
    """(desired, ready, updated); desired follows the live Deployment, which an autoscaler may set."""
    if pool.deployment is None:
        return 0, 0, 0
    desired = pool.deployment.get("spec", {}).get("replicas", 1)
    observed = pool.deployment.get("status", {})
    return desired, observed.get("readyReplicas", 0), observed.get("updatedReplicas", 0)


def rolled_out(pool: PoolObservation) -> bool:
    """The Deployment has seen its latest spec and every replica is updated, ready and alone."""
    if pool.deployment is None:
        return False
    desired, ready, updated = _replicas(pool)
    observed = pool.deployment.get("status", {})
    current = observed.get("observedGeneration", 0) >= pool.deployment["metadata"].get("generation", 1)
    return current and updated >= desired and ready >= desired and observed.get("replicas", 0) == desired


def _failing(pool: PoolObservation) -> str | None:
    for cond in (pool.deployment or {}).get("status", {}).get("conditions", []):
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            return f"{pool.role} pool {pool.name}: {cond.get('message', 'replica failure')}"
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            return f"{pool.role} pool {pool.name}: {cond.get('message', 'progress deadline exceeded')}"
    return None


def _degraded(error: str | None, failing: str | None, problem: tuple[bool, str, str] | None,
              pools: list[PoolObservation]) -> tuple[bool, str, str]:
    """(status, reason, message), the most pressing cause first."""
    mismatch = next((p.mismatch for p in pools if p.mismatch), None)
    if error:
        return True, "ReconcileFailed", error
    if failing:
        return True, "PoolFailing", failing
    if problem:
        return True, problem[1], problem[2]
    if mismatch:
        return True, "SharedPoolMismatch", mismatch
    return False, "AsExpected", ""


def _stalled(degraded: tuple[bool, str, str], transient: bool) -> tuple[bool, str, str]:
    failed, reason, message = degraded
    if failed and (reason in STALLED_REASONS or (reason == "ReconcileFailed" and not transient)):
        return True, reason, message
    return False, "AsExpected" if not failed else "MayRecover", ""


def pool_status(pool: PoolObservation) -> dict[str, Any]:
    desired, ready, updated = _replicas(pool)
    out: dict[str, Any] = {
        "name": pool.name, "endpoint": pool.endpoint, "shared": pool.shared, "ready": f"{ready}/{desired}",
        "desiredReplicas": desired, "readyReplicas": ready, "updatedReplicas": updated,
    }
    if pool.controlnets:
        out["controlnets"] = list(pool.controlnets)
    if pool.scaling:
        out["autoscaling"] = {"minReplicas": pool.scaling.min_replicas, "maxReplicas": pool.scaling.max_replicas,
                              "state": pool.scaling.reason}
    return out


def _autoscaling(pools: list[PoolObservation]) -> tuple[bool, str, str] | None:
    """AutoscalingReady: None when no pool autoscales; else the first pool that is not active."""
    scaled = [p for p in pools if p.scaling]
    if not scaled:
        return None
    waiting = next((p for p in scaled if p.scaling.reason != SCALING_ACTIVE), None)
    if waiting:
        return False, waiting.scaling.reason, f"{waiting.role} pool {waiting.name}: {waiting.scaling.message}"
    return True, SCALING_ACTIVE, "; ".join(f"{p.role} pool {p.name}: {p.scaling.message}" for p in scaled)


def _condition(ctype: str, status: bool, reason: str, message: str, generation: int,
               previous: dict[str, dict[str, Any]], timestamp: str) -> dict[str, Any]:
    value = "True" if status else "False"
    before = previous.get(ctype, {})
    since = before["lastTransitionTime"] if before.get("status") == value and "lastTransitionTime" in before \
        else timestamp
    return {"type": ctype, "status": value, "reason": reason, "message": message,
            "lastTransitionTime": since, "observedGeneration": generation}


def compute_status(generation: int, pools: list[PoolObservation], previous: dict[str, Any],
                   error: str | None = None, timestamp: str | None = None, *,
                   transient: bool = True) -> dict[str, Any]:
    """The full `.status` for a workflow whose pools were observed as `pools`; `transient`:
    whether `error` may go away on a retry (a refused child will not)."""
    timestamp = timestamp or now()
    before = {c["type"]: c for c in previous.get("conditions", []) if "type" in c}
    pending = [p for p in pools if not rolled_out(p)]
    summary = "; ".join(f"{p.role} pool {p.name} {pool_status(p)['ready']} ready" for p in pools)
    failing = error or next((msg for p in pools if (msg := _failing(p))), None)
    problem = next(((p, p.problem) for p in pending if p.problem), None)
    if error:
        ready = (False, "ReconcileFailed", error)
    elif problem:
        pool, found = problem
        ready = (False, found.reason, f"{pool.role} pool {pool.name}: {found.message}")
    elif pending:
        ready = (False, "PoolsNotReady", summary)
    else:
        ready = (True, "PoolsReady", summary)
    degraded = _degraded(error, failing, ready if problem else None, pools)
    conditions = [
        _condition(READY, *ready, generation, before, timestamp),
        _condition(PROGRESSING, bool(pending), "RollingOut" if pending else "RolledOut",
                   ", ".join(f"{p.role} pool {p.name}" for p in pending) or "all pools rolled out",
                   generation, before, timestamp),
        _condition(DEGRADED, *degraded, generation, before, timestamp),
        _condition(STALLED, *_stalled(degraded, transient), generation, before, timestamp),
    ]
    if scaling := _autoscaling(pools):
        conditions.append(_condition(AUTOSCALING_READY, *scaling, generation, before, timestamp))
    status: dict[str, Any] = {"observedGeneration": generation, "conditions": conditions}
    for pool in pools:
        status["basePool" if pool.role == "base" else "controlnetPool"] = pool_status(pool)
    return status
