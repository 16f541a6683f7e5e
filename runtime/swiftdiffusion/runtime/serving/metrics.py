"""The runtime's Prometheus metrics, one registry per service (names in metric_names)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from swiftdiffusion.runtime import metric_names as names

_STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Every label value a series can take is created at 0 when the service starts: rate() sees
# nothing of a series' first increment, so a first error would otherwise never show.
STATUS_CODES = ("OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                "RESOURCE_EXHAUSTED", "INTERNAL", "UNAVAILABLE")
MODEL_KINDS = ("base", "controlnet")
_REQUEST_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class RuntimeMetrics:
    """Every runtime metric, already labelled with this service's role."""

    def __init__(self, role: str, registry: CollectorRegistry | None = None) -> None:
        self.role = role
        self.registry = registry or CollectorRegistry()
        r, role_label = self.registry, [names.ROLE_LABEL]
        self.request_latency = Histogram(
            names.REQUEST_LATENCY_SECONDS, "Request wall time.", role_label, registry=r, buckets=_REQUEST_BUCKETS
        ).labels(role)
        self.requests = Counter(names.REQUESTS_TOTAL, "Finished requests by status code.", [*role_label, "code"], registry=r)
        self.queue_depth = Gauge(names.QUEUE_DEPTH, "Requests waiting for the worker.", role_label, registry=r).labels(role)
        self.in_flight = Gauge(names.IN_FLIGHT_REQUESTS, "Requests being served.", role_label, registry=r).labels(role)
        self.step_seconds = Histogram(
            names.STEP_SECONDS, "One denoising step or residual computation.", role_label, registry=r, buckets=_STEP_BUCKETS
        ).labels(role)
        self.residual_bytes = Counter(
            names.RESIDUAL_BYTES_TOTAL, "Residual tensor bytes sent or received.", role_label, registry=r
        ).labels(role)
        self.residual_transfer_seconds = Histogram(
            names.RESIDUAL_TRANSFER_SECONDS, "Latent sent to residuals received.", role_label, registry=r,
            buckets=_STEP_BUCKETS,
        ).labels(role)
        self.residual_wait_seconds = Histogram(
            names.RESIDUAL_WAIT_SECONDS, "Loop time blocked on residuals per request.", role_label, registry=r,
            buckets=_REQUEST_BUCKETS,
        ).labels(role)
        self.cache_hits = Counter(names.CONTROLNET_CACHE_HITS_TOTAL, "ControlNet cache hits.", role_label, registry=r).labels(role)
        self.cache_misses = Counter(
            names.CONTROLNET_CACHE_MISSES_TOTAL, "ControlNet cache misses.", role_label, registry=r
        ).labels(role)
        self.cache_evictions = Counter(
            names.CONTROLNET_CACHE_EVICTIONS_TOTAL, "ControlNet cache evictions.", role_label, registry=r
        ).labels(role)
        self.resident_bytes = Gauge(
            names.CONTROLNET_RESIDENT_BYTES, "Resident ControlNet weight bytes.", role_label, registry=r
        ).labels(role)
        self.model_load_seconds = Histogram(
            names.MODEL_LOAD_SECONDS, "Loading one model.", [*role_label, "kind"], registry=r, buckets=_REQUEST_BUCKETS
        )
        for code in STATUS_CODES:
            self.requests.labels(role, code)
        for kind in MODEL_KINDS:
            self.model_load_seconds.labels(role, kind)

    def count(self, code: str) -> None:
        self.requests.labels(self.role, code).inc()

    def observe_load(self, kind: str, seconds: float) -> None:
        self.model_load_seconds.labels(self.role, kind).observe(seconds)

    def serve(self, port: int, bind_address: str = "[::]") -> int:
        """Expose /metrics over HTTP on the gRPC server's bind address (a wildcard means every
        IPv4 address, as before); returns the bound port (0 picks a free one)."""
        host = bind_address.strip("[]")
        addr = "0.0.0.0" if host in ("", "::", "0.0.0.0") else host
        server, _ = start_http_server(port, addr=addr, registry=self.registry)
        return server.server_port
