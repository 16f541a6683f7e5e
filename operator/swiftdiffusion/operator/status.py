"""Pure status computation: observed pool Deployments in, the workflow's `.status` out.

Conditions follow the Kubernetes conventions (type, status, reason, message,
lastTransitionTime, observedGeneration); a condition keeps its lastTransitionTime while
its status stays the same, so an unchanged world yields an identical status and the
controller writes nothing.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

READY, PROGRESSING, DEGRADED = "Ready", "Progressing", "Degraded"


@dataclass(frozen=True)
class PoolObservation:
    """One pool as the workflow sees it: where to call it and its live Deployment (None if absent)."""

    role: str
    name: str
    endpoint: str
    deployment: dict[str, Any] | None
    shared: bool = False
    controlnets: tuple[str, ...] = field(default=())


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


def pool_status(pool: PoolObservation) -> dict[str, Any]:
    desired, ready, updated = _replicas(pool)
    out: dict[str, Any] = {
        "name": pool.name, "endpoint": pool.endpoint, "shared": pool.shared, "ready": f"{ready}/{desired}",
        "desiredReplicas": desired, "readyReplicas": ready, "updatedReplicas": updated,
    }
    if pool.controlnets:
        out["controlnets"] = list(pool.controlnets)
    return out


def _condition(ctype: str, status: bool, reason: str, message: str, generation: int,
               previous: dict[str, dict[str, Any]], timestamp: str) -> dict[str, Any]:
    value = "True" if status else "False"
    before = previous.get(ctype, {})
    since = before["lastTransitionTime"] if before.get("status") == value and "lastTransitionTime" in before \
        else timestamp
    return {"type": ctype, "status": value, "reason": reason, "message": message,
            "lastTransitionTime": since, "observedGeneration": generation}


def compute_status(generation: int, pools: list[PoolObservation], previous: dict[str, Any],
                   error: str | None = None, timestamp: str | None = None) -> dict[str, Any]:
    """The full `.status` for a workflow whose pools were observed as `pools`."""
    timestamp = timestamp or now()
    before = {c["type"]: c for c in previous.get("conditions", []) if "type" in c}
    pending = [p for p in pools if not rolled_out(p)]
    summary = "; ".join(f"{p.role} pool {p.name} {pool_status(p)['ready']} ready" for p in pools)
    failing = error or next((msg for p in pools if (msg := _failing(p))), None)
    if error:
        ready = (False, "ReconcileFailed", error)
    elif pending:
        ready = (False, "PoolsNotReady", summary)
    else:
        ready = (True, "PoolsReady", summary)
    conditions = [
        _condition(READY, *ready, generation, before, timestamp),
        _condition(PROGRESSING, bool(pending), "RollingOut" if pending else "RolledOut",
                   ", ".join(f"{p.role} pool {p.name}" for p in pending) or "all pools rolled out",
                   generation, before, timestamp),
        _condition(DEGRADED, failing is not None, "ReconcileFailed" if error else
                   ("PoolFailing" if failing else "AsExpected"), failing or "", generation, before, timestamp),
    ]
    status: dict[str, Any] = {"observedGeneration": generation, "conditions": conditions}
    for pool in pools:
        status["basePool" if pool.role == "base" else "controlnetPool"] = pool_status(pool)
    return status
