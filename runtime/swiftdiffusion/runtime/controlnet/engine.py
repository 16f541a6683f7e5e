"""ControlNet residuals for one request: models from the cache, images embedded once.

`ControlNetEngine.prepare` resolves the request's models, preprocesses its control images
and computes each ControlNet's conditioning embedding of its image (it does not depend on
the step); `ControlNetEngine.compute` then runs every ControlNet on one step's latent and
sums the scaled residuals exactly as diffusers' MultiControlNetModel does.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from swiftdiffusion.runtime.controlnet.cache import ControlNetCache
from swiftdiffusion.runtime.controlnet.control_image import decode_control_image, preprocess_control_image
from swiftdiffusion.runtime.controlnet.forward import check_supported, controlnet_residuals, embed_control_image
from swiftdiffusion.runtime.controlnet.residuals import Residuals, sum_residuals
from swiftdiffusion.runtime.errors import InvalidArgument
from swiftdiffusion.runtime.pipeline.conditioning import TextConditioning
from swiftdiffusion.runtime.transport.residual_source import ResidualRequest


@dataclass(frozen=True)
class PreparedControl:
    """A request's ControlNets, each with its control image's embedding and scale, and its conditioning."""

    models: tuple[torch.nn.Module, ...]
    embeddings: tuple[torch.Tensor, ...]
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
        for model in models:
            check_supported(model)
        text = request.text.to(self.device, self.dtype)
        batch = text.prompt_embeds.shape[0]
        images = tuple(
            preprocess_control_image(
                decode_control_image(use.image, f"controlnets[{i}].image"),
                request.width,
                request.height,
                batch,
                self.device,
                self.dtype,
            )
            for i, use in enumerate(request.controlnets)
        )
        embeddings = tuple(embed_control_image(model, image) for model, image in zip(models, images, strict=True))
        return PreparedControl(models, embeddings, tuple(u.conditioning_scale for u in request.controlnets), text)

    @torch.no_grad()
    def compute(self, prepared: PreparedControl, latent: torch.Tensor, timestep: torch.Tensor) -> Residuals:
        """Residuals for one step; `latent` is repeated to the conditioning's (CFG) batch."""
        text = prepared.text
        latent = latent.to(self.device, self.dtype)
        batch = text.prompt_embeds.shape[0] // latent.shape[0]
        sample = torch.cat([latent] * batch) if batch > 1 else latent
        timestep = timestep.to(self.device)
        parts = [
            controlnet_residuals(model, sample, timestep, text, embedding, scale)
            for model, embedding, scale in zip(prepared.models, prepared.embeddings, prepared.scales, strict=True)
        ]
        return sum_residuals(parts)
