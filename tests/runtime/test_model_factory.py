"""The offline model set loads through diffusers' ordinary from_pretrained path."""
from pathlib import Path

import torch
from diffusers import ControlNetModel, StableDiffusionXLPipeline

from swiftdiffusion.runtime.dev.model_factory import build_model_set, model_set_params


def test_tiny_set_loads_as_sdxl_pipeline_with_image_sized_latents(tiny_model_set: Path) -> None:
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_model_set / "base", local_files_only=True)
    assert pipe.vae_scale_factor == 8
    latents = pipe(
        "a red cube", num_inference_steps=1, height=64, width=64, output_type="latent",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert latents.shape == (1, 4, 8, 8)
    assert pipe.tokenizer("ab").input_ids[0] == pipe.text_encoder.config.bos_token_id


def test_controlnets_differ_and_are_not_zero_initialised(tiny_model_set: Path) -> None:
    canny = ControlNetModel.from_pretrained(tiny_model_set / "controlnets" / "canny")
    depth = ControlNetModel.from_pretrained(tiny_model_set / "controlnets" / "depth")
    assert canny.controlnet_mid_block.weight.abs().sum() > 0
    assert not torch.equal(canny.controlnet_mid_block.weight, depth.controlnet_mid_block.weight)


def test_build_is_idempotent_and_deterministic(tmp_path: Path) -> None:
    first = build_model_set(tmp_path / "a", "tiny", ("canny",), seed=3)
    stamp_time = (first / "swiftdiffusion-model-set.json").stat().st_mtime_ns
    assert build_model_set(first, "tiny", ("canny",), seed=3) == first
    assert (first / "swiftdiffusion-model-set.json").stat().st_mtime_ns == stamp_time
    second = build_model_set(tmp_path / "b", "tiny", ("canny",), seed=3)
    weights = "controlnets/canny/diffusion_pytorch_model.safetensors"
    assert (first / weights).read_bytes() == (second / weights).read_bytes()
    assert model_set_params(first) == {"version": 1, "size": "tiny", "controlnets": ["canny"], "seed": 3}
