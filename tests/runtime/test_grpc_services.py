"""The decoupled path across processes: ControlNet and base services as real subprocesses."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from swiftdiffusion.runtime import metric_names
from swiftdiffusion.runtime.client import generate, generate_request
from swiftdiffusion.runtime.pipeline.engine import BaseEngine
from swiftdiffusion.runtime.transport.grpc_source import GrpcResidualSource
from tests.runtime.helpers import diffusers_reference, metric_value, params_with


@pytest.fixture(scope="module")
def grpc_source(tiny_stack):
    source = GrpcResidualSource(tiny_stack.controlnet.target)
    yield source
    source.close()


@pytest.mark.parametrize("controlnets", [1, 2, 3])
def test_synchronous_latents_over_grpc_match_diffusers(tiny_base_model, tiny_model_set, grpc_source, controlnets) -> None:
    params = params_with(controlnets)
    ours = BaseEngine(tiny_base_model, grpc_source).generate(params, decode=False).latents.numpy()
    np.testing.assert_array_equal(ours, diffusers_reference(tiny_model_set, params))


def test_base_service_image_matches_diffusers_end_to_end(tiny_stack, tiny_model_set) -> None:
    params = params_with(2)
    request = generate_request(
        params.prompt, seed=params.seed, steps=params.steps, guidance_scale=params.guidance_scale,
        width=params.width, height=params.height,
        controlnets=[(u.name, u.image, u.conditioning_scale) for u in params.controlnets],
    )
    reply = generate(tiny_stack.base.target, request, timeout=120)
    ours = np.asarray(Image.open(io.BytesIO(reply.png)), dtype=np.float32) / 255
    reference = diffusers_reference(tiny_model_set, params, output_type="np")[0]
    assert ours.shape == (64, 64, 3)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1.01 / 255)
    assert {"text_encode", "denoise", "vae_decode", "total"} <= reply.timings.keys()


def test_unset_fields_take_the_deployment_defaults(tiny_stack, tiny_model_set) -> None:
    params = params_with(0)  # the stack's defaults: 3 steps, guidance 5, 64x64
    reply = generate(tiny_stack.base.target, generate_request(params.prompt, seed=params.seed), timeout=120)
    assert (reply.width, reply.height) == (64, 64)
    ours = np.asarray(Image.open(io.BytesIO(reply.png)), dtype=np.float32) / 255
    reference = diffusers_reference(tiny_model_set, params, output_type="np")[0]
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1.01 / 255)


def test_both_services_export_the_named_metrics(tiny_stack) -> None:
    canny = params_with(1).controlnets[0]
    generate(tiny_stack.base.target, generate_request("x", controlnets=[(canny.name, canny.image, None)]))
    base, controlnet = tiny_stack.options.base_metrics_port, tiny_stack.options.controlnet_metrics_port
    assert metric_value(base, metric_names.REQUEST_LATENCY_SECONDS + "_count", role="base") >= 1
    assert metric_value(base, metric_names.STEP_SECONDS + "_count", role="base") >= 3
    received = metric_value(base, metric_names.RESIDUAL_BYTES_TOTAL, role="base")
    assert received > 0
    assert metric_value(controlnet, metric_names.RESIDUAL_BYTES_TOTAL, role="controlnet") >= received
    assert metric_value(controlnet, metric_names.CONTROLNET_CACHE_MISSES_TOTAL, role="controlnet") >= 1
    assert metric_value(controlnet, metric_names.CONTROLNET_RESIDENT_BYTES, role="controlnet") > 0
    assert metric_value(base, metric_names.MODEL_LOAD_SECONDS + "_count", role="base", kind="base") == 1



def test_cli_generate_writes_a_png(tiny_stack, tmp_path, capsys) -> None:
    from swiftdiffusion.runtime.cli import main

    control = tmp_path / "edges.png"
    control.write_bytes(params_with(1).controlnets[0].image)
    out = tmp_path / "image.png"
    code = main(["generate", "a cube", "--target", tiny_stack.base.target, "--out", str(out),
                 "--controlnet", f"canny={control}@0.7", "--steps", "2"])
    assert code == 0
    assert Image.open(out).size == (64, 64)
    assert "denoise" in capsys.readouterr().out


def test_controlnet_service_serves_concurrent_base_sessions_exactly(tiny_base_model, grpc_source) -> None:
    from concurrent.futures import ThreadPoolExecutor

    requests = [params_with(1, seed=1), params_with(3, seed=2), params_with(2, seed=3)]
    alone = [BaseEngine(tiny_base_model, grpc_source).generate(p, decode=False).latents for p in requests]
    with ThreadPoolExecutor(3) as pool:  # three base engines (as three base servers) at once
        together = list(pool.map(lambda p: BaseEngine(tiny_base_model, grpc_source).generate(p, decode=False).latents, requests))
    for a, b in zip(alone, together):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=0, atol=1e-5)


def test_pipelined_mode_over_grpc_equals_pipelined_in_process(tiny_base_model, tiny_controlnet_engine, grpc_source) -> None:
    from swiftdiffusion.runtime.config import ControlNetMode
    from swiftdiffusion.runtime.transport.inprocess import InProcessResidualSource

    params = params_with(2, steps=4)
    local = InProcessResidualSource(tiny_controlnet_engine)
    expected = BaseEngine(tiny_base_model, local, mode=ControlNetMode.PIPELINED).generate(params, decode=False).latents
    remote = BaseEngine(tiny_base_model, grpc_source, mode=ControlNetMode.PIPELINED).generate(params, decode=False).latents
    np.testing.assert_allclose(remote.numpy(), expected.numpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize(("wire", "tolerance"), [("float16", 5e-3), ("bfloat16", 5e-2)])
def test_half_precision_residuals_on_the_wire_stay_close(tiny_base_model, tiny_stack, wire, tolerance) -> None:
    exact_source = GrpcResidualSource(tiny_stack.controlnet.target)
    half_source = GrpcResidualSource(tiny_stack.controlnet.target, wire_dtype=wire)
    params = params_with(1)
    exact = BaseEngine(tiny_base_model, exact_source).generate(params, decode=False).latents
    half = BaseEngine(tiny_base_model, half_source).generate(params, decode=False).latents
    exact_source.close(), half_source.close()
    assert 0 < (exact - half).abs().max() < tolerance * exact.abs().max()
