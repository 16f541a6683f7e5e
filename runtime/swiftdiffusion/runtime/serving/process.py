"""Process-level setup shared by both services: CPU pinning, torch threads, the gRPC server."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import torch
from grpc_health.v1 import health

from swiftdiffusion.runtime.config import RuntimeConfig
from swiftdiffusion.runtime.serving.grpc_common import SERVER_OPTIONS, add_health


def apply_process_settings(config: RuntimeConfig) -> None:
    """Pin to CPUs and fix torch's thread count before any model is loaded."""
    if config.cpu_affinity:
        os.sched_setaffinity(0, set(config.cpu_affinity))
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)


@dataclass
class RunningServer:
    server: grpc.Server
    health: health.HealthServicer
    port: int
    metrics_port: int | None

    def stop(self, grace: float = 2.0) -> None:
        """NOT_SERVING first (readiness takes the pod out), then refuse new RPCs and give those
        in flight `grace` seconds to finish before they are cancelled."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()


def new_grpc_server(config: RuntimeConfig) -> tuple[grpc.Server, health.HealthServicer, int]:
    server = grpc.server(ThreadPoolExecutor(max_workers=config.grpc_workers), options=SERVER_OPTIONS)
    health_servicer = add_health(server)
    port = server.add_insecure_port(f"{config.bind_address}:{config.grpc_port}")
    if port == 0:
        raise OSError(f"cannot bind gRPC port {config.grpc_port}")
    return server, health_servicer, port
