"""A base server spreads its residual sessions over every ControlNet pod it resolves
(round_robin over all addresses, as a headless Service's DNS name yields them), instead of
pinning every session to the first pod, so scaling the ControlNet pool out takes load."""
from __future__ import annotations

import dataclasses
from contextlib import ExitStack
from pathlib import Path

import pytest

from swiftdiffusion.runtime import metric_names
from swiftdiffusion.runtime.dev.ports import free_port
from swiftdiffusion.runtime.dev.local_stack import StackOptions, stack_configs, start_service
from swiftdiffusion.runtime.pipeline.engine import BaseEngine
from swiftdiffusion.runtime.serving.grpc_common import balanced_target
from swiftdiffusion.runtime.transport.grpc_source import GrpcResidualSource
from tests.runtime.helpers import metric_value, params_with

pytestmark = pytest.mark.slow


def test_host_port_targets_resolve_every_address_and_explicit_resolvers_are_kept() -> None:
    assert balanced_target("swd-cn-shared.ns.svc:50051") == "dns:///swd-cn-shared.ns.svc:50051"
    assert balanced_target("ipv4:127.0.0.1:1,127.0.0.1:2") == "ipv4:127.0.0.1:1,127.0.0.1:2"
    assert balanced_target("dns:///a:1") == "dns:///a:1"


def test_residual_sessions_are_spread_over_every_controlnet_pod(tiny_model_set: Path, tiny_base_model,
                                                                tmp_path: Path) -> None:
    _, config = stack_configs(StackOptions.on_free_ports(tiny_model_set, threads=1))
    pods = [config.model_copy(update={"grpc_port": free_port(), "metrics_port": free_port()}) for _ in range(2)]
    with ExitStack() as stack:
        services = []
        for index, pod in enumerate(pods):
            service = start_service("controlnet", pod, tmp_path / f"pod{index}")
            stack.callback(service.stop)
            services.append(service)
        for service in services:
            service.wait_healthy()
        addresses = ",".join(f"127.0.0.1:{pod.grpc_port}" for pod in pods)
        source = GrpcResidualSource(f"ipv4:{addresses}")
        stack.callback(source.close)
        engine = BaseEngine(tiny_base_model, source)
        for seed in range(6):
            engine.generate(dataclasses.replace(params_with(1, steps=2), seed=seed), decode=False)
        sessions = [metric_value(pod.metrics_port, metric_names.REQUESTS_TOTAL, role="controlnet", code="OK")
                    for pod in pods]
    # round_robin starts on whichever pod connects first; pick_first would give [6, 0].
    assert sum(sessions) == 6 and min(sessions) >= 2, f"sessions per ControlNet pod: {sessions}"
