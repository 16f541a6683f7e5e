"""The base model: SDXL components loaded with diffusers, and the steps around the loop.

Text encoding, time ids and latent initialisation use the loaded pipeline's own helpers
and the same call order as `StableDiffusionXLControlNetPipeline.__call__`, so a request
with a given seed starts from exactly diffusers' latents and conditioning.
"""
from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionXLPipeline
from diffusers.utils.torch_utils import randn_tensor

from swiftdiffusion.runtime.placement import DTYPES, pick_device
from swiftdiffusion.runtime.pipeline.conditioning import TextConditioning
from swiftdiffusion.runtime.pipeline.unet_split import check_supported

@dataclass(frozen=True)
class PreparedStart:
    """A fresh scheduler with its timesteps set, the initial latents and the step kwargs."""

    scheduler: Any
    timesteps: torch.Tensor
    latents: torch.Tensor
    step_kwargs: dict[str, Any]


class BaseModel:
    """An SDXL-architecture pipeline's components, shared by all requests of a base server."""

    def __init__(self, pipeline: StableDiffusionXLPipeline, load_seconds: float = 0.0) -> None:
        check_supported(pipeline.unet)
        self.pipeline = pipeline
        self.load_seconds = load_seconds
        # The pipeline's fast tokenizers keep padding/truncation settings as mutable state,
        # so concurrent requests must not tokenize at the same time.
        self._text_lock = threading.Lock()

    @classmethod
    def load(
        cls,
        model: str | Path,
        revision: str | None = None,
        dtype: str = "float32",
        cache_dir: str | Path | None = None,
        device: str = "auto",
    ) -> BaseModel:
        """Load with `from_pretrained` (a model id resolved in `cache_dir`, or a local folder)."""
        started = time.perf_counter()
        pipeline = StableDiffusionXLPipeline.from_pretrained(
            str(model), revision=revision, torch_dtype=DTYPES[dtype], cache_dir=cache_dir
        )
        pipeline.set_progress_bar_config(disable=True)
        pipeline.to(pick_device(device))
        if pipeline.vae.dtype == torch.float16 and pipeline.vae.config.force_upcast:
            pipeline.vae.to(torch.float32)  # diffusers upcasts for every decode; do it once
        return cls(pipeline, time.perf_counter() - started)

    @property
    def unet(self) -> torch.nn.Module:
        return self.pipeline.unet

    @property
    def device(self) -> torch.device:
        return self.pipeline.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.pipeline.unet.dtype

    @torch.no_grad()
    def encode_text(
        self, prompt: str, negative_prompt: str | None, guidance_scale: float, width: int, height: int
    ) -> TextConditioning:
        """Both CLIP encoders plus SDXL's size conditioning, batched [uncond; cond] under CFG."""
        pipe = self.pipeline
        uses_cfg = guidance_scale > 1.0
        with self._text_lock:
            embeds, negative_embeds, pooled, negative_pooled = pipe.encode_prompt(
                prompt,
                device=self.device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=uses_cfg,
                negative_prompt=negative_prompt or None,
            )
        time_ids = pipe._get_add_time_ids(
            (height, width),
            (0, 0),
            (height, width),
            dtype=embeds.dtype,
            text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim,
        )
        if uses_cfg:
            embeds = torch.cat([negative_embeds, embeds])
            pooled = torch.cat([negative_pooled, pooled])
            time_ids = torch.cat([time_ids, time_ids])
        return TextConditioning(embeds, pooled.to(self.device), time_ids.to(self.device), guidance_scale)

    def start(self, steps: int, width: int, height: int, seed: int, dtype: torch.dtype) -> PreparedStart:
        """A per-request scheduler (they are stateful) and seeded initial latents."""
        scheduler = type(self.pipeline.scheduler).from_config(self.pipeline.scheduler.config)
        scheduler.set_timesteps(steps, device=self.device)
        generator = torch.Generator("cpu").manual_seed(seed)
        scale = self.pipeline.vae_scale_factor
        shape = (1, self.unet.config.in_channels, height // scale, width // scale)
        latents = randn_tensor(shape, generator=generator, device=self.device, dtype=dtype)
        latents = latents * scheduler.init_noise_sigma
        step_kwargs = self.pipeline.prepare_extra_step_kwargs(generator, 0.0)
        return PreparedStart(scheduler, scheduler.timesteps, latents, step_kwargs)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents to an (H, W, 3) float image in [0, 1], as diffusers' output_type="np"."""
        vae = self.pipeline.vae
        mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
        latents = latents.to(vae.dtype)
        if mean is not None and std is not None:
            mean_t = torch.tensor(mean).view(1, 4, 1, 1).to(latents)
            std_t = torch.tensor(std).view(1, 4, 1, 1).to(latents)
            latents = latents * std_t / vae.config.scaling_factor + mean_t
        else:
            latents = latents / vae.config.scaling_factor
        image = vae.decode(latents, return_dict=False)[0]
        return self.pipeline.image_processor.postprocess(image, output_type="np")[0]


def to_png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((image * 255).round().astype("uint8")).save(buffer, format="PNG")
    return buffer.getvalue()
