"""What both services and their clients share: message limits, status mapping, health."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from swiftdiffusion.runtime.errors import (
    Cancelled,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    RemoteStatus,
    RequestError,
    Unavailable,
)
from swiftdiffusion.runtime.serving.connections import CONNECTION_AGE_SECONDS, RESOLUTION_INTERVAL_SECONDS
from swiftdiffusion.runtime.serving.metrics import RuntimeMetrics

MAX_MESSAGE_BYTES = 1 << 30  # SDXL residuals are ~51 MB per step in fp16; gRPC's default is 4 MiB
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]
# Servers end each connection after a while (streams in flight may finish for up to the
# request timeout), so clients re-resolve the pool's addresses and find pods added since.
SERVER_OPTIONS = [
    *CHANNEL_OPTIONS,
    ("grpc.max_connection_age_ms", round(CONNECTION_AGE_SECONDS * 1000)),
    ("grpc.max_connection_age_grace_ms", 600_000),
]


def retry_unstarted(service: str) -> list[tuple[str, object]]:
    """Channel options that retry a call of `service` refused with UNAVAILABLE: a pod
    draining or a connection closed by its age refuses calls it never started. gRPC
    retries a call only until its first response, so nothing runs twice."""
    config = {"methodConfig": [{"name": [{"service": service}], "retryPolicy": {
        "maxAttempts": 4, "initialBackoff": "0.2s", "maxBackoff": "2s", "backoffMultiplier": 2,
        "retryableStatusCodes": ["UNAVAILABLE"]}}]}
    return [("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(config))]


# A pool behind a headless Service resolves to every ready pod: one session per pod in turn.
BALANCED_CHANNEL_OPTIONS = [
    *CHANNEL_OPTIONS,
    ("grpc.lb_policy_name", "round_robin"),
    ("grpc.dns_min_time_between_resolutions_ms", round(RESOLUTION_INTERVAL_SECONDS * 1000)),
    *retry_unstarted("swiftdiffusion.v1.ControlNetService"),
]
_RESOLVERS = ("dns:", "ipv4:", "ipv6:", "unix:", "unix-abstract:", "vsock:")


def balanced_target(address: str) -> str:
    """host:port as a DNS target that resolves to every address (gRPC's default would pick one);
    explicit resolver targets (dns:, ipv4:, unix:, ...) are kept as they are."""
    return address if address.startswith(_RESOLVERS) else f"dns:///{address}"


_CODES: dict[type[RequestError], grpc.StatusCode] = {
    NotFound: grpc.StatusCode.NOT_FOUND,
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    Cancelled: grpc.StatusCode.CANCELLED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_of(error: RequestError) -> grpc.StatusCode:
    if isinstance(error, RemoteStatus):
        return error.code
    return next((_CODES[kind] for kind in type(error).__mro__ if kind in _CODES), grpc.StatusCode.INTERNAL)


# Server threads kept from requests for health checks and refusals. A request the other
# threads cannot take is refused at once: waiting for a thread, it would be in no metric (the
# autoscaler would not see it) and the kubelet's probes would wait behind it.
RESERVED_THREADS = 2


class Admission:
    """The requests in a service's handlers, refused with UNAVAILABLE past the server's
    threads less the reserved ones (a client retries another replica)."""

    def __init__(self, threads: int) -> None:
        self.limit = threads - RESERVED_THREADS
        self._count = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            if self._count >= self.limit:
                raise Unavailable(f"this replica has {self._count} requests, its limit (grpcWorkers less "
                                  f"{RESERVED_THREADS} threads kept for health checks): try another replica")
            self._count += 1

    def leave(self) -> None:
        with self._lock:
            self._count -= 1


@contextmanager
def accounted(metrics: RuntimeMetrics, context: grpc.ServicerContext, admission: Admission) -> Iterator[float]:
    """One RPC in the service's metrics, under the status the client sees: a RequestError
    aborts with its code, anything else is gRPC's UNKNOWN, a client gone is CANCELLED.
    Yields the start time."""
    started = time.perf_counter()
    code = grpc.StatusCode.OK
    admitted = False
    try:
        admission.enter()
        admitted = True
        metrics.in_flight.inc()
        yield started
    except RequestError as error:
        code = status_of(error)
        context.abort(code, str(error))
    except Exception:  # a bug or an exhausted device
        code = grpc.StatusCode.UNKNOWN
        raise
    finally:
        if admitted:
            metrics.in_flight.dec()
            admission.leave()
        metrics.count(code.name if code is not grpc.StatusCode.OK or context.is_active() else "CANCELLED")
        metrics.request_latency.observe(time.perf_counter() - started)


def error_from_rpc(error: grpc.RpcError) -> RequestError:
    """A remote service's status, kept as is, so the base server passes it on unchanged."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    return RemoteStatus(code, f"ControlNet service: {details}")


def add_health(server: grpc.Server) -> health.HealthServicer:
    """The standard health service, NOT_SERVING until the caller marks it ready."""
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer


def mark_serving(servicer: health.HealthServicer) -> None:
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)


def check_health(target: str, timeout: float = 2.0) -> bool:
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING
