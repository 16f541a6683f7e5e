"""Shared test helpers: control images and diffusers reference runs on the tiny model set."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    ControlNetModel,
    StableDiffusionXLControlNetPipeline,
    StableDiffusionXLPipeline,
)
from PIL import Image, ImageDraw

from swiftdiffusion.runtime.controlnet.control_image import encode_png
from swiftdiffusion.runtime.pipeline.requests import GenerateParams
from swiftdiffusion.runtime.transport.residual_source import ControlNetUse

NAMES = ("canny", "depth", "pose")
SCALES = (0.8, 0.5, 1.1)


def control_image(size: int, variant: int = 0) -> Image.Image:
    """A deterministic synthetic control image (white shapes on black)."""
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    inset = size // (4 + variant)
    draw.rectangle([inset, inset, size - inset, size - inset // 2], outline="white", width=2)
    draw.ellipse([size // 3, size // 4, size - size // 5, size - size // 3], outline=(200, 255, 90), width=2)
    return image


def params_with(count: int, size: int = 64, steps: int = 3, seed: int = 7, guidance: float = 5.0,
                control_size: int | None = None) -> GenerateParams:
    """A request with `count` ControlNets whose control images are `control_size` px (default: `size`)."""
    side = control_size or size
    uses = tuple(ControlNetUse(NAMES[i], encode_png(control_image(side, i)), SCALES[i]) for i in range(count))
    return GenerateParams(
        prompt="a red cube on a table", negative_prompt="", seed=seed, steps=steps,
        guidance_scale=guidance, width=size, height=size, controlnets=uses,
    )


def diffusers_reference(model_set: Path, params: GenerateParams, output_type: str = "latent") -> np.ndarray:
    """The same request run by diffusers' own SDXL (ControlNet) pipeline."""
    base = model_set / "base"
    kwargs = dict(
        prompt=params.prompt, num_inference_steps=params.steps, guidance_scale=params.guidance_scale,
        width=params.width, height=params.height, output_type=output_type,
        generator=torch.Generator().manual_seed(params.seed),
    )
    if not params.controlnets:
        pipe = StableDiffusionXLPipeline.from_pretrained(base, local_files_only=True)
    else:
        nets = [ControlNetModel.from_pretrained(model_set / "controlnets" / u.name) for u in params.controlnets]
        images = [Image.open(io.BytesIO(u.image)) for u in params.controlnets]  # the very bytes we were sent
        scales = [u.conditioning_scale for u in params.controlnets]
        single = len(nets) == 1
        pipe = StableDiffusionXLControlNetPipeline.from_pretrained(
            base, controlnet=nets[0] if single else nets, local_files_only=True
        )
        kwargs.update(image=images[0] if single else images, controlnet_conditioning_scale=scales[0] if single else scales)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(**kwargs).images
    return out.numpy() if isinstance(out, torch.Tensor) else np.asarray(out)


def metric_value(port: int, name: str, **labels: str) -> float:
    """One sample from a service's /metrics endpoint (0 if absent)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0
