"""The UNet's encoder and decoder halves together are exactly UNet2DConditionModel.forward."""
from __future__ import annotations

import pytest
import torch

from swiftdiffusion.runtime.controlnet.residuals import Residuals
from swiftdiffusion.runtime.pipeline.unet_split import unet_decode, unet_encode


@pytest.mark.parametrize("size", [64, 72])  # 72 px: latent 9x9, odd sizes take the upsample_size path
def test_halves_reproduce_forward_with_and_without_residuals(tiny_base_model, size: int) -> None:
    unet = tiny_base_model.unet
    text = tiny_base_model.encode_text("a cube", None, 5.0, size, size)
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 4, size // 8, size // 8, generator=generator)
    timestep = torch.tensor(500.0)
    encoded = unet_encode(unet, sample, timestep, text)
    residuals = Residuals(
        tuple(torch.randn(s.shape, generator=generator) for s in encoded.skips),
        torch.randn(encoded.sample.shape, generator=generator),
    )
    with torch.no_grad():
        plain = unet(sample, timestep, encoder_hidden_states=text.prompt_embeds, added_cond_kwargs=text.added_cond_kwargs).sample
        controlled = unet(
            sample, timestep, encoder_hidden_states=text.prompt_embeds, added_cond_kwargs=text.added_cond_kwargs,
            down_block_additional_residuals=residuals.down, mid_block_additional_residual=residuals.mid,
        ).sample
    assert torch.equal(unet_decode(unet, encoded, None), plain)
    assert torch.equal(unet_decode(unet, encoded, residuals), controlled)
