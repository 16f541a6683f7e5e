"""Process-level setup shared by both services: CPU pinning, torch threads, the C library's
allocator, the gRPC server."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import torch
from grpc_health.v1 import health

from swiftdiffusion.runtime.config import RuntimeConfig
from swiftdiffusion.runtime.serving.grpc_common import SERVER_OPTIONS, add_health


# glibc's mallopt parameters, and the largest mmap threshold it takes on a 64-bit machine.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: in effect, never trim


def keep_freed_memory() -> bool:
    """Keeps the memory a request frees for the next one. By default glibc hands a freed block
    of 128 KiB or more back to the kernel, so a request faults its tensors' pages in afresh:
    up to 1,100 faults for an 8-step 64 px request on this project's test machine, a VM whose host
    takes free guest memory back (a fault then costs up to 9 us). Kept: 0-6 once a worker thread's
    heap has grown, and 0.2-core services served 2.8% faster, interleaved (docs/runtime.md).
    Blocks over 32 MiB are still mapped and unmapped. False where the C library is not glibc,
    which then keeps its own policy."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def apply_process_settings(config: RuntimeConfig) -> None:
    """Pin to CPUs, fix torch's thread count and keep freed memory before any model is loaded."""
    keep_freed_memory()
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
