"""Test-side references: the two CFG branches computed one after the other in this process."""
from __future__ import annotations

import torch

from swiftdiffusion.runtime.pipeline.conditioning import TextConditioning
from swiftdiffusion.runtime.pipeline.guidance import AwaitResiduals, combine_cfg
from swiftdiffusion.runtime.pipeline.unet_split import unet_decode, unet_encode


class SequentialCfg:
    """Each branch as its own batch of one, on this worker: the same arithmetic as two
    workers, so two workers must reproduce it bit for bit."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.unet = unet

    def predict(
        self, model_input: torch.Tensor, timestep: torch.Tensor, text: TextConditioning, residuals: AwaitResiduals | None
    ) -> torch.Tensor:
        both = residuals() if residuals else None
        uncond, cond = (
            unet_decode(
                self.unet,
                unet_encode(self.unet, model_input, timestep, text.branch(index)),
                None if both is None else both.branch(index),
            )
            for index in (0, 1)
        )
        return combine_cfg(uncond, cond, text.guidance_scale)

    def close(self) -> None:
        """Nothing to release."""
