"""The per-request inputs every noise prediction and every ControlNet call needs."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TextConditioning:
    """SDXL text conditioning, batched as diffusers batches it: [unconditional; conditional] under CFG.

    `prompt_embeds` is the UNet's `encoder_hidden_states`; `text_embeds` and `time_ids` are
    its `added_cond_kwargs`. `guidance_scale` <= 1 means no CFG and a batch of one.
    """

    prompt_embeds: torch.Tensor
    text_embeds: torch.Tensor
    time_ids: torch.Tensor
    guidance_scale: float

    @property
    def uses_cfg(self) -> bool:
        return self.guidance_scale > 1.0

    @property
    def added_cond_kwargs(self) -> dict[str, torch.Tensor]:
        return {"text_embeds": self.text_embeds, "time_ids": self.time_ids}

    def branch(self, index: int) -> TextConditioning:
        """One CFG branch's conditioning (batch of one), for latent-parallel workers."""
        return TextConditioning(
            self.prompt_embeds.chunk(2)[index],
            self.text_embeds.chunk(2)[index],
            self.time_ids.chunk(2)[index],
            self.guidance_scale,
        )

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> TextConditioning:
        """The same conditioning on another device (and dtype), detached from any graph."""
        parts = (self.prompt_embeds, self.text_embeds, self.time_ids)
        return TextConditioning(*(t.detach().to(device, dtype) for t in parts), self.guidance_scale)
