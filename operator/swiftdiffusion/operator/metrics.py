"""The operator's own Prometheus metrics (served on --metrics-port, default 9090)."""
from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("swiftdiffusion_operator_reconciles_total",
                     "Reconciles run, by object kind (workflow or shared-pool).", ["kind"])
RECONCILE_ERRORS = Counter("swiftdiffusion_operator_reconcile_errors_total",
                           "Reconciles that failed, by object kind and whether they are retried.",
                           ["kind", "retried"])
RECONCILE_SECONDS = Histogram("swiftdiffusion_operator_reconcile_duration_seconds",
                              "Wall time of one reconcile.", ["kind"],
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
API_WRITES = Counter("swiftdiffusion_operator_api_writes_total",
                     "Write calls the operator made to the API server, by resource.", ["resource"])
QUEUE_DEPTH = Gauge("swiftdiffusion_operator_queue_depth", "Objects waiting to be reconciled.")


def create_series(kinds: Iterable[str], resources: Iterable[str]) -> None:
    """Every labelled series at 0 from the start: rate() misses a series' first increment, so a
    first failed reconcile would otherwise not show on the dashboard or fire an alert."""
    for kind in kinds:
        RECONCILES.labels(kind=kind)
        RECONCILE_SECONDS.labels(kind=kind)
        for retried in ("true", "false"):
            RECONCILE_ERRORS.labels(kind=kind, retried=retried)
    for resource in resources:
        API_WRITES.labels(resource=resource)
