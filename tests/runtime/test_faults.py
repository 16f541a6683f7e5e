"""Bad input and faults: each maps to the right gRPC status, and the base server survives."""
from __future__ import annotations

import socket
import threading
import time

import grpc
import numpy as np
import pytest
import torch

from swiftdiffusion.runtime import metric_names
from swiftdiffusion.runtime.client import generate, generate_request
from swiftdiffusion.runtime.config import Defaults
from swiftdiffusion.runtime.controlnet.control_image import encode_png
from swiftdiffusion.runtime.dev.ports import free_port
from swiftdiffusion.runtime.dev.local_stack import StackOptions, stack_configs
from swiftdiffusion.runtime.pipeline.engine import GenerateResult
from swiftdiffusion.runtime.serving.api import base_pb2_grpc
from swiftdiffusion.runtime.serving.grpc_common import check_health
from tests.runtime.helpers import control_image, metric_value
from tests.testbed.waiting import eventually

GOOD = encode_png(control_image(64))


def _status(target: str, timeout: float = 60, **fields) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        generate(target, generate_request("a cube", **fields), timeout=timeout)
    return caught.value


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"controlnets": [("scribble", GOOD, None)]}, "scribble"),
        ({"loras": [("pixel-art", 0.8)]}, "pixel-art"),
    ],
)
def test_unknown_model_names_are_not_found(tiny_stack, fields, named) -> None:
    error = _status(tiny_stack.base.target, **fields)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert named in error.details()


@pytest.mark.parametrize(
    ("fields", "field_name"),
    [
        ({"controlnets": [("canny", b"not an image", None)]}, "controlnets[0].image"),
        ({"controlnets": [("canny", encode_png(control_image(128))[:200], None)]}, "controlnets[0].image"),
        ({"width": 100}, "width"),
        ({"height": 4096}, "height"),
        ({"steps": 0}, "steps"),
        ({"steps": 10_000}, "steps"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"guidance_scale": float("nan")}, "guidance_scale"),
    ],
)
def test_bad_fields_are_invalid_argument_naming_the_field(tiny_stack, fields, field_name) -> None:
    error = _status(tiny_stack.base.target, **fields)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(field_name)
    assert "0x" not in error.details() and "<" not in error.details(), "no Python reprs in messages"


@pytest.fixture
def base_server_to(tiny_model_set):
    """An in-process base server whose ControlNet service is at a given target."""
    from swiftdiffusion.runtime.serving.base_server import start_base_server

    started = []

    def start(controlnet_target: str):
        base, _ = stack_configs(StackOptions.on_free_ports(tiny_model_set, defaults=Defaults(steps=3, width=64, height=64)))
        config = base.model_copy(update={"base": base.base.model_copy(update={"controlnet_service": controlnet_target})})
        running = start_base_server(config)
        started.append(running)
        return f"127.0.0.1:{running.port}"

    yield start
    for running in started:
        running.stop(grace=0)


@pytest.fixture
def black_hole():
    """A TCP port that accepts connections and never answers: a hung ControlNet service."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def _assert_still_serving(target: str) -> None:
    assert check_health(target)
    reply = generate(target, generate_request("still here", seed=1), timeout=60)
    assert reply.png.startswith(b"\x89PNG")


def test_unreachable_controlnet_service_is_unavailable_and_base_stays_healthy(base_server_to) -> None:
    target = base_server_to(f"127.0.0.1:{free_port()}")
    started = time.monotonic()
    error = _status(target, timeout=10, controlnets=[("canny", GOOD, None)])
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert time.monotonic() - started < 10
    _assert_still_serving(target)


def test_hung_controlnet_service_fails_within_the_deadline(base_server_to, black_hole) -> None:
    target = base_server_to(black_hole)
    started = time.monotonic()
    error = _status(target, timeout=3, controlnets=[("canny", GOOD, None)])
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 4
    _assert_still_serving(target)


def test_client_cancel_frees_work_on_both_services(tiny_stack) -> None:
    request = generate_request(
        "a long one", steps=150, width=128, height=128,
        controlnets=[("canny", encode_png(control_image(128)), None), ("depth", encode_png(control_image(128, 1)), None)],
    )
    base_port, cn_port = tiny_stack.options.base_metrics_port, tiny_stack.options.controlnet_metrics_port
    with grpc.insecure_channel(tiny_stack.base.target) as channel:
        call = base_pb2_grpc.BaseServiceStub(channel).Generate.future(request, timeout=120)
        _wait_for(lambda: metric_value(cn_port, metric_names.IN_FLIGHT_REQUESTS, role="controlnet") == 1)
        assert metric_value(base_port, metric_names.IN_FLIGHT_REQUESTS, role="base") == 1
        call.cancel()
    _wait_for(lambda: metric_value(base_port, metric_names.IN_FLIGHT_REQUESTS, role="base") == 0)
    _wait_for(lambda: metric_value(cn_port, metric_names.IN_FLIGHT_REQUESTS, role="controlnet") == 0)
    assert metric_value(base_port, metric_names.REQUESTS_TOTAL, role="base", code="CANCELLED") >= 1


def _wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)



class BrokenEngine:
    """An engine whose denoising fails with an error the servicer does not know (a bug, an OOM)."""

    def generate(self, *args, **kwargs):
        raise RuntimeError("device out of memory")


def test_an_unexpected_failure_is_counted_as_the_unknown_status_the_client_sees() -> None:
    from swiftdiffusion.runtime.client import generate, generate_request
    from swiftdiffusion.runtime.config import BaseSection, RuntimeConfig
    from swiftdiffusion.runtime.serving.api import base_pb2_grpc
    from swiftdiffusion.runtime.serving.base_server import BaseServicer
    from swiftdiffusion.runtime.serving.metrics import RuntimeMetrics
    from swiftdiffusion.runtime.serving.process import new_grpc_server

    config = RuntimeConfig(role="base", grpc_port=0, bind_address="127.0.0.1", base=BaseSection(model="unused"))
    metrics = RuntimeMetrics("base")
    servicer = BaseServicer(config, metrics)
    servicer.engine = BrokenEngine()
    server, _, port = new_grpc_server(config)
    base_pb2_grpc.add_BaseServiceServicer_to_server(servicer, server)
    server.start()
    try:
        with pytest.raises(grpc.RpcError) as caught:
            generate(f"127.0.0.1:{port}", generate_request("a cube", steps=1), timeout=30)
        assert caught.value.code() == grpc.StatusCode.UNKNOWN
        sample = metrics.registry.get_sample_value
        assert sample(metric_names.REQUESTS_TOTAL, {"role": "base", "code": "UNKNOWN"}) == 1
        assert sample(metric_names.REQUESTS_TOTAL, {"role": "base", "code": "OK"}) == 0
        assert sample(metric_names.IN_FLIGHT_REQUESTS, {"role": "base"}) == 0
    finally:
        server.stop(0).wait()


def test_every_status_code_and_model_kind_series_exists_at_zero_from_the_start() -> None:
    """rate() sees nothing of a series' first increment: a first error must already have a series."""
    from swiftdiffusion.runtime.serving.metrics import MODEL_KINDS, STATUS_CODES, RuntimeMetrics

    metrics = RuntimeMetrics("base")
    sample = metrics.registry.get_sample_value
    assert all(sample(metric_names.REQUESTS_TOTAL, {"role": "base", "code": code}) == 0 for code in STATUS_CODES)
    assert all(sample(metric_names.MODEL_LOAD_SECONDS + "_count", {"role": "base", "kind": kind}) == 0
               for kind in MODEL_KINDS)


class HeldEngine:
    """An engine whose requests wait until released: a replica with a long queue."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def generate(self, *args, **kwargs) -> GenerateResult:
        self.release.wait(30)
        return GenerateResult(torch.zeros(1), np.zeros((8, 8, 3)), {})


def test_past_its_threads_a_replica_refuses_requests_and_still_answers_health_checks() -> None:
    """With every request thread taken, a new request is refused at once (a client retries
    another replica) instead of waiting unseen for a thread, and the kubelet's probe is answered."""
    from swiftdiffusion.runtime.config import BaseSection, RuntimeConfig
    from swiftdiffusion.runtime.serving.base_server import BaseServicer
    from swiftdiffusion.runtime.serving.grpc_common import RESERVED_THREADS, mark_serving
    from swiftdiffusion.runtime.serving.metrics import RuntimeMetrics
    from swiftdiffusion.runtime.serving.process import new_grpc_server

    config = RuntimeConfig(role="base", grpc_port=0, bind_address="127.0.0.1", base=BaseSection(model="unused"),
                           grpc_workers=RESERVED_THREADS + 2)
    metrics = RuntimeMetrics("base")
    servicer = BaseServicer(config, metrics)
    servicer.engine = engine = HeldEngine()
    server, health, port = new_grpc_server(config)
    base_pb2_grpc.add_BaseServiceServicer_to_server(servicer, server)
    server.start()
    mark_serving(health)
    target = f"127.0.0.1:{port}"
    held = [threading.Thread(target=generate, args=(target, generate_request("held", steps=1)), kwargs={"timeout": 30})
            for _ in range(2)]
    try:
        for thread in held:
            thread.start()
        eventually(lambda: metrics.registry.get_sample_value(metric_names.IN_FLIGHT_REQUESTS, {"role": "base"}) == 2,
                   timeout=10, interval=0.05)
        assert check_health(target, timeout=1.0)
        with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as refused:
            base_pb2_grpc.BaseServiceStub(channel).Generate(generate_request("one too many", steps=1), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "its limit" in refused.value.details()
        assert metrics.registry.get_sample_value(metric_names.REQUESTS_TOTAL, {"role": "base", "code": "UNAVAILABLE"}) == 1
    finally:
        engine.release.set()
        for thread in held:
            thread.join(timeout=30)
        server.stop(0).wait()
    assert metrics.registry.get_sample_value(metric_names.REQUESTS_TOTAL, {"role": "base", "code": "OK"}) == 2
    assert metrics.registry.get_sample_value(metric_names.IN_FLIGHT_REQUESTS, {"role": "base"}) == 0
