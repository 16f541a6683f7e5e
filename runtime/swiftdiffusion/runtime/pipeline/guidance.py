"""The noise-prediction seam: one guided prediction per step.

The default, `BatchedCfg`, is what diffusers does on one device: the unconditional and
conditional branches run as one batch of two, then uncond + g * (cond - uncond). The UNet
runs as two halves so its encoder and middle block overlap the ControlNet service; the
residuals are awaited only between the halves. A latent-parallel implementation (one
worker per branch, runtime/cfg/) plugs in here with `Residuals.branch` and
`TextConditioning.branch`.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from swiftdiffusion.runtime.controlnet.residuals import Residuals
from swiftdiffusion.runtime.pipeline.conditioning import TextConditioning
from swiftdiffusion.runtime.pipeline.unet_split import predict_noise

AwaitResiduals = Callable[[], Residuals]


class NoisePredictor(Protocol):
    def predict(
        self,
        model_input: torch.Tensor,
        timestep: torch.Tensor,
        text: TextConditioning,
        residuals: AwaitResiduals | None,
    ) -> torch.Tensor:
        """Return the guided noise prediction for `model_input` (scaled latent, batch of one).

        `residuals`, if given, blocks until the ControlNet residuals for the CFG batch
        ([uncond; cond]) are there; call it as late as possible.
        """
        ...

    def close(self) -> None: ...


def combine_cfg(uncond: torch.Tensor, cond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    return uncond + guidance_scale * (cond - uncond)


class BatchedCfg:
    """Both CFG branches as one batch on this worker (diffusers' own arrangement)."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.unet = unet

    def predict(
        self,
        model_input: torch.Tensor,
        timestep: torch.Tensor,
        text: TextConditioning,
        residuals: AwaitResiduals | None,
    ) -> torch.Tensor:
        batch = torch.cat([model_input] * 2) if text.uses_cfg else model_input
        noise = predict_noise(self.unet, batch, timestep, text, residuals)
        if not text.uses_cfg:
            return noise
        uncond, cond = noise.chunk(2)
        return combine_cfg(uncond, cond, text.guidance_scale)

    def close(self) -> None:
        """Nothing to release: the UNet belongs to the base model."""
