"""ControlNet residuals for one request: models from the cache, images preprocessed once.

`ControlNetEngine.prepare` resolves the request's models and preprocesses its control
images; `ControlNetEngine.compute` then runs every ControlNet on one step's latent and sums
the scaled residuals exactly as diffusers' MultiControlNetModel does.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from swiftdiffusion.runtime.conditioning import TextConditioning
from swiftdiffusion.runtime.control_image import decode_control_image, preprocess_control_image
from swiftdiffusion.runtime.controlnet_cache import ControlNetCache
from swiftdiffusion.runtime.errors import InvalidArgument
from swiftdiffusion.runtime.residual_source import ResidualRequest
from swiftdiffusion.runtime.residuals import Residuals, sum_residuals


@dataclass(frozen=True)
class PreparedControl:
    """A request's ControlNets, each with its preprocessed image and scale, and its conditioning."""

    models: tuple[torch.nn.Module, ...]
    images: tuple[torch.Tensor, ...]
    scales: tuple[float, ...]
    text: TextConditioning


class ControlNetEngine:
    def __init__(self, cache: ControlNetCache, device: torch.device, dtype: torch.dtype) -> None:
        self.cache = cache
        self.device = device
        self.dtype = dtype

    def prepare(self, request: ResidualRequest) -> PreparedControl:
        if not request.controlnets:
            raise InvalidArgument("controlnets", "a residual session needs at least one ControlNet")
        models = tuple(self.cache.get(use.name) for use in request.controlnets)
        text = _on(request.text, self.device, self.dtype)
        batch = text.prompt_embeds.shape[0]
        images = tuple(
            preprocess_control_image(
                decode_control_image(use.image, request.width, request.height, f"controlnets[{i}].image"),
                batch,
                self.device,
                self.dtype,
            )
            for i, use in enumerate(request.controlnets)
        )
        return PreparedControl(models, images, tuple(u.conditioning_scale for u in request.controlnets), text)

    @torch.no_grad()
    def compute(self, prepared: PreparedControl, latent: torch.Tensor, timestep: torch.Tensor) -> Residuals:
        """Residuals for one step; `latent` is repeated to the conditioning's (CFG) batch."""
        text = prepared.text
        latent = latent.to(self.device, self.dtype)
        batch = text.prompt_embeds.shape[0] // latent.shape[0]
        sample = torch.cat([latent] * batch) if batch > 1 else latent
        timestep = timestep.to(self.device)
        parts = []
        for model, image, scale in zip(prepared.models, prepared.images, prepared.scales, strict=True):
            down, mid = model(
                sample,
                timestep,
                encoder_hidden_states=text.prompt_embeds,
                controlnet_cond=image,
                conditioning_scale=scale,
                guess_mode=False,
                added_cond_kwargs=text.added_cond_kwargs,
                return_dict=False,
            )
            parts.append(Residuals(tuple(down), mid))
        return sum_residuals(parts)


def _on(text: TextConditioning, device: torch.device, dtype: torch.dtype) -> TextConditioning:
    return TextConditioning(
        text.prompt_embeds.to(device, dtype),
        text.text_embeds.to(device, dtype),
        text.time_ids.to(device, dtype),
        text.guidance_scale,
    )
