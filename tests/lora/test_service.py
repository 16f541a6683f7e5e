"""A Generate request with LoRAs through the base server's gRPC service, end to end."""
from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from swiftdiffusion.runtime.client import generate, generate_request
from swiftdiffusion.runtime.config import BaseSection, Defaults, LoraEntry, RuntimeConfig
from swiftdiffusion.runtime.serving.base_server import start_base_server
from tests.lora.engine_setup import diffusers_with_loras, params


@pytest.fixture(scope="module")
def base_service(tiny_model_set: Path, lora_dir: Path) -> Iterator[str]:
    config = RuntimeConfig(
        role="base", grpc_port=0, metrics_port=-1, bind_address="127.0.0.1", device="cpu",
        model_store=str(lora_dir.parent),
        base=BaseSection(
            model=str(tiny_model_set / "base"), dtype="float32", bal_default_k=0,
            defaults=Defaults(steps=4, guidance_scale=5.0, width=64, height=64),
            loras=[
                LoraEntry(name="a", source=str(lora_dir / "a.safetensors"), scale=0.8, k=0),
                LoraEntry(name="mismatched", source=str(lora_dir / "mismatched.safetensors")),
            ],
        ),
    )
    running = start_base_server(config)
    try:
        yield f"127.0.0.1:{running.port}"
    finally:
        running.stop()


def _image(reply) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(reply.png)), dtype=np.float32) / 255


def test_generate_with_a_configured_lora_matches_diffusers_fused(base_service, tiny_model_set, lora_dir):
    request = params()
    reply = generate(base_service, generate_request(request.prompt, seed=request.seed, loras=[("a", None)]), timeout=120)
    reference = diffusers_with_loras(tiny_model_set, [(lora_dir / "a.safetensors", 0.8)], output_type="np")[0]
    np.testing.assert_allclose(_image(reply), reference, rtol=0, atol=1.01 / 255)
    without = generate(base_service, generate_request(request.prompt, seed=request.seed), timeout=120)
    assert np.abs(_image(without) - reference).max() > 0.05


@pytest.mark.parametrize(
    ("name", "code", "message"),
    [("nobody", grpc.StatusCode.NOT_FOUND, "unknown LoRA"), ("mismatched", grpc.StatusCode.INVALID_ARGUMENT, "do not match")],
)
def test_refused_loras_answer_with_their_status_code(base_service, name, code, message):
    with pytest.raises(grpc.RpcError) as raised:
        generate(base_service, generate_request("x", loras=[(name, 1.0)]), timeout=120)
    assert raised.value.code() == code and message in raised.value.details()
