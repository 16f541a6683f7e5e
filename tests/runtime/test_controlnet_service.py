"""The ControlNet service's model cache, seen through its gRPC API and metrics."""
from __future__ import annotations

import pytest

from swiftdiffusion.runtime import metric_names
from swiftdiffusion.runtime.controlnet.cache import model_bytes
from swiftdiffusion.runtime.dev.local_stack import StackOptions, stack_configs
from swiftdiffusion.runtime.pipeline.engine import BaseEngine
from swiftdiffusion.runtime.serving.controlnet_server import start_controlnet_server
from swiftdiffusion.runtime.transport.grpc_source import GrpcResidualSource
from tests.runtime.helpers import metric_value, params_with


@pytest.fixture
def one_model_service(tiny_model_set, tiny_controlnet_engine):
    """An in-process ControlNet service whose budget holds exactly one tiny ControlNet."""
    _, config = stack_configs(StackOptions.on_free_ports(tiny_model_set, threads=1))
    budget = model_bytes(tiny_controlnet_engine.cache.get("canny"))
    config = config.model_copy(update={"controlnet": config.controlnet.model_copy(update={"cache_bytes": budget})})
    running = start_controlnet_server(config)
    yield f"127.0.0.1:{running.port}", running.metrics_port
    running.stop(grace=0)


def test_service_loads_on_demand_and_evicts_least_recently_used(tiny_base_model, one_model_service) -> None:
    target, metrics_port = one_model_service
    source = GrpcResidualSource(target)
    engine = BaseEngine(tiny_base_model, source)
    canny, depth = params_with(1, steps=1), params_with(2, steps=1)  # depth request also uses canny
    for params in (canny, canny, depth):
        engine.generate(params, decode=False)
    source.close()

    def value(name: str) -> float:
        return metric_value(metrics_port, name, role="controlnet")

    assert value(metric_names.CONTROLNET_CACHE_HITS_TOTAL) == 2  # canny again, then canny in the pair
    assert value(metric_names.CONTROLNET_CACHE_MISSES_TOTAL) == 2  # canny first, depth
    assert value(metric_names.CONTROLNET_CACHE_EVICTIONS_TOTAL) == 1  # canny made room for depth
    assert value(metric_names.CONTROLNET_RESIDENT_BYTES) > 0
    assert metric_value(metrics_port, metric_names.MODEL_LOAD_SECONDS + "_count", role="controlnet", kind="controlnet") == 2
