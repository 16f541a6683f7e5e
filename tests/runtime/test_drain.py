"""Draining on SIGTERM, as a rolling update or a scale-down sends it: the request in flight
finishes, new ones are refused (the client retries elsewhere), the process exits cleanly.

The kernel hands a signal sent to a process to any of its threads, so the test sends it to
one of the service's other threads (gRPC's, torch's): the main thread must still drain."""
from __future__ import annotations

import ctypes
import errno
import os
import platform
import signal
import threading
import time
from pathlib import Path

import grpc
import pytest

from swiftdiffusion.runtime import metric_names
from swiftdiffusion.runtime.client import generate, generate_request
from swiftdiffusion.runtime.config import Defaults
from swiftdiffusion.runtime.dev.local_stack import StackOptions, local_stack
from swiftdiffusion.runtime.serving.grpc_common import check_health
from tests.runtime.helpers import metric_value

pytestmark = pytest.mark.slow

SYS_TGKILL = {"x86_64": 234, "aarch64": 131}


def signal_another_thread(pid: int, sig: int) -> None:
    """`sig` to one of the process's threads other than its main one (tgkill(2)): the oldest
    that is still there (a short-lived one may end between the listing and the signal)."""
    libc, threads = ctypes.CDLL(None, use_errno=True), sorted(int(t) for t in os.listdir(f"/proc/{pid}/task")
                                                              if int(t) != pid)
    for thread in threads:
        if libc.syscall(SYS_TGKILL[platform.machine()], pid, thread, sig) == 0:
            return
        if ctypes.get_errno() != errno.ESRCH:
            raise OSError(ctypes.get_errno(), f"tgkill {pid} {thread}")
    raise ProcessLookupError(f"no thread of {pid} but its main one took the signal: {threads}")


def test_sigterm_lets_the_request_in_flight_finish_and_refuses_new_ones(tiny_model_set: Path,
                                                                        tmp_path: Path) -> None:
    # The request runs a few seconds on a quiet machine and over a minute on a busy one: the
    # grace is long enough for either, so what is tested is that the drain waits for it.
    options = StackOptions.on_free_ports(tiny_model_set, threads=1, shutdown_grace_seconds=300,
                                         defaults=Defaults(steps=3, guidance_scale=5.0, width=64, height=64))
    with local_stack(options, tmp_path) as stack:
        outcome: dict[str, object] = {}

        def long_request() -> None:
            try:
                request = generate_request("a cube", steps=200, width=96, height=96)  # several seconds
                outcome["reply"] = generate(stack.base.target, request, timeout=300)
            except grpc.RpcError as error:
                outcome["error"] = error

        worker = threading.Thread(target=long_request)
        worker.start()
        deadline = time.monotonic() + 60
        while metric_value(options.base_metrics_port, metric_names.IN_FLIGHT_REQUESTS, role="base") < 1:
            assert time.monotonic() < deadline, "the request never started"
            time.sleep(0.05)
        signal_another_thread(stack.base.process.pid, signal.SIGTERM)
        signalled = time.monotonic()
        while check_health(stack.base.target):
            assert time.monotonic() - signalled < 30, "still SERVING 30 s after SIGTERM: it never drains"
            time.sleep(0.1)
        with pytest.raises(grpc.RpcError) as refused:
            generate(stack.base.target, generate_request("another", steps=1), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        worker.join(timeout=300)  # minutes on a busy machine (with TEST_WORKERS=3, 92 s)
        assert "error" not in outcome, outcome.get("error")
        assert outcome["reply"].png.startswith(b"\x89PNG"), "the request in flight finished"
        assert time.monotonic() - signalled > 3, "it outlived a short fixed grace: the drain waited for it"
        assert stack.base.process.wait(timeout=30) == 0
        assert "draining" in stack.base.log.read_text()
