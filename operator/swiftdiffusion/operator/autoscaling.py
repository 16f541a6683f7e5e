"""KEDA ScaledObjects for pools with autoscaling on: pure functions of a pool's plan.

A pool's demand is the work its replicas hold: the runtime's in-flight gauge, which counts
every call a server has accepted, queued for the denoising worker or running (so adding
the queue-depth gauge would count queued requests twice; a ControlNet pool's in-flight
calls are its open residual sessions), summed over the pool from Prometheus. KEDA hands the HPA one external metric
per pool with an AverageValue target of `targetInFlightPerReplica`, so the HPA asks for
ceil(demand / target) replicas.

A ControlNet pool's demand is made by the base pools that call it: every base request
that is queued or running will hold (or holds) one residual session. Its ScaledObject
takes the larger of its own sessions and the sum of its callers' demand
(`advanced.scalingModifiers`), so a burst on a base pool scales both pools in the same
cycle instead of the ControlNet pool following one scrape (and one HPA sync) behind.

While Prometheus cannot be read, `fallback` holds the current replica count: a metrics
outage must not scale a serving fleet down.

Scale to zero is refused by the CRD: with no replica there is no queue to measure, and a
request reaching an empty pool would fail, not wait.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from swiftdiffusion.operator import model as m
from swiftdiffusion.runtime import metric_names

API_VERSION = "keda.sh/v1alpha1"
KIND = "ScaledObject"
TYPE = (API_VERSION, KIND)
POOL_SERIES_LABEL = "pool"  # the ServiceMonitor copies the pool Service's swiftdiffusion.io/pool label
FALLBACK_FAILURES = 3  # failed metric reads (polling intervals) before the fallback holds replicas


@dataclass(frozen=True)
class Settings:
    """The operator's autoscaling configuration (chart values `autoscaling.*`)."""

    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    polling_interval_seconds: int = 15


DEFAULT = Settings()


def shared_bounds(members: Sequence[m.Autoscaling]) -> m.Autoscaling:
    """A shared ControlNet pool's autoscaling, from its members' ControlNet pool settings.

    On if any member turns it on; its floor is the highest member floor (no member gets less
    than it asked for), its ceiling the sum of the members' ceilings (each member's peak may
    land at once), its per-replica target the lowest (the strictest latency wins) and its
    scale-down window the longest.
    """
    enabled = [a for a in members if a.enabled]
    if not enabled:
        return m.Autoscaling()
    return m.Autoscaling(
        enabled=True,
        min_replicas=max(a.min_replicas for a in enabled),
        max_replicas=max(sum(a.max_replicas for a in enabled), max(a.min_replicas for a in enabled)),
        target_in_flight_per_replica=min(a.target_in_flight_per_replica for a in enabled),
        scale_down_stabilization_seconds=max(a.scale_down_stabilization_seconds for a in enabled),
    )


def demand_query(namespace: str, pool: str) -> str:
    """Calls accepted (queued or running) over every replica of `pool`; zero while Prometheus
    has no scrape target in the pool at all (its pods are still starting).

    Otherwise an empty answer stays empty, and KEDA reads it as an error: the runtime exports
    its gauges from start-up, so a target without the series is one Prometheus cannot
    scrape, and the fallback must hold replicas rather than scale a busy pool in. A new pool
    reads zero, not an error, so it never starts in fallback (which would report
    `MetricsUnavailable` for a pool that is only starting, and is the state in which KEDA
    v2.21.0 can crash: docs/operator.md).
    """
    pool_series = f'{{namespace="{namespace}",{POOL_SERIES_LABEL}="{pool}"}}'
    return f"sum({metric_names.IN_FLIGHT_REQUESTS}{pool_series}) or on() (0 * absent(up{pool_series}))"


def _trigger(name: str, query: str, target: int, settings: Settings) -> dict[str, Any]:
    """An empty answer is an error, not zero (`demand_query` says when it is empty)."""
    return {"type": "prometheus", "name": name, "metricType": "AverageValue", "metadata": {
        "serverAddress": settings.prometheus_url, "query": query, "threshold": str(target),
        "ignoreNullValues": "false"}}


def scaled_object(metadata: dict[str, Any], deployment: str, autoscaling: m.Autoscaling, namespace: str,
                  callers: Sequence[str], settings: Settings) -> dict[str, Any]:
    """The ScaledObject of one pool. `callers`: for a ControlNet pool, the base pools that
    call it (empty for a base pool)."""
    target = autoscaling.target_in_flight_per_replica
    triggers = [_trigger("own", demand_query(namespace, deployment), target, settings)]
    advanced: dict[str, Any] = {"horizontalPodAutoscalerConfig": {"behavior": {
        "scaleDown": {"stabilizationWindowSeconds": autoscaling.scale_down_stabilization_seconds},
    }}}
    if callers:
        triggers += [_trigger(f"caller{i}", demand_query(namespace, base), target, settings)
                     for i, base in enumerate(callers)]
        callers_sum = " + ".join(f"caller{i}" for i in range(len(callers)))
        advanced["scalingModifiers"] = {"formula": f"max(own, {callers_sum})", "target": str(target),
                                        "metricType": "AverageValue"}
    return {
        "apiVersion": API_VERSION, "kind": KIND, "metadata": metadata,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment},
            "pollingInterval": settings.polling_interval_seconds,
            "minReplicaCount": autoscaling.min_replicas,
            "maxReplicaCount": autoscaling.max_replicas,
            "fallback": {"failureThreshold": FALLBACK_FAILURES, "replicas": autoscaling.min_replicas,
                         "behavior": "currentReplicas"},
            "advanced": advanced,
            "triggers": triggers,
        },
    }
