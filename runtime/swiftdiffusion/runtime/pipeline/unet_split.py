"""UNet2DConditionModel.forward, split where ControlNet residuals enter.

The UNet adds ControlNet residuals only after its whole down path and its middle block,
so the encoder half (time embedding, conv_in, down blocks, middle block) can run while
the ControlNet service computes the residuals for the same inputs; the decoder half adds
them and runs the up blocks. Together the halves reproduce diffusers'
`UNet2DConditionModel.forward` operation for operation for SDXL-style configs (text_time
added embedding, no class embedding, no attention masks, no adapters).

Mirrors diffusers 0.42.1, `UNet2DConditionModel.forward`; `MIRRORS` holds the digest of
that source, and tests/runtime/test_mirrors.py fails when the installed diffusers' differs:
re-read the upstream change, port it here, then update the digest.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from swiftdiffusion.runtime.controlnet.residuals import Residuals
from swiftdiffusion.runtime.pipeline.conditioning import TextConditioning

MIRRORS = {"diffusers.models.unets.unet_2d_condition:UNet2DConditionModel.forward": "1204c3bdf748efbe"}


@dataclass(frozen=True)
class EncodedSample:
    """The encoder half's output: what the decoder half needs."""

    sample: torch.Tensor
    skips: tuple[torch.Tensor, ...]
    emb: torch.Tensor
    encoder_hidden_states: torch.Tensor
    upsample_to_skips: bool


def check_supported(unet: torch.nn.Module) -> None:
    """Refuse UNet configs whose forward has branches the split does not reproduce."""
    config = unet.config
    unsupported = {
        "center_input_sample": config.center_input_sample,
        "class_embed_type": config.class_embed_type is not None,
        "time_cond_proj_dim": config.time_cond_proj_dim is not None,
        "encoder_hid_dim_type": config.encoder_hid_dim_type is not None,
        "addition_embed_type image_hint": config.addition_embed_type == "image_hint",
    }
    bad = [name for name, present in unsupported.items() if present]
    if bad:
        raise ValueError(f"UNet split does not support {', '.join(bad)}")


@torch.no_grad()
def unet_encode(
    unet: torch.nn.Module, sample: torch.Tensor, timestep: torch.Tensor, text: TextConditioning
) -> EncodedSample:
    """Time embedding, conv_in, down blocks and middle block: everything before the residuals."""
    upsample_to_skips = any(dim % 2**unet.num_upsamplers != 0 for dim in sample.shape[-2:])
    emb = unet.time_embedding(unet.get_time_embed(sample=sample, timestep=timestep), None)
    aug_emb = unet.get_aug_embed(
        emb=emb, encoder_hidden_states=text.prompt_embeds, added_cond_kwargs=text.added_cond_kwargs
    )
    emb = emb + aug_emb if aug_emb is not None else emb
    if unet.time_embed_act is not None:
        emb = unet.time_embed_act(emb)
    hidden = unet.process_encoder_hidden_states(
        encoder_hidden_states=text.prompt_embeds, added_cond_kwargs=text.added_cond_kwargs
    )
    sample = unet.conv_in(sample)
    skips: tuple[torch.Tensor, ...] = (sample,)
    for block in unet.down_blocks:
        if getattr(block, "has_cross_attention", False):
            sample, res = block(hidden_states=sample, temb=emb, encoder_hidden_states=hidden)
        else:
            sample, res = block(hidden_states=sample, temb=emb)
        skips += res
    if unet.mid_block is not None:
        if getattr(unet.mid_block, "has_cross_attention", False):
            sample = unet.mid_block(sample, emb, encoder_hidden_states=hidden)
        else:
            sample = unet.mid_block(sample, emb)
    return EncodedSample(sample, skips, emb, hidden, upsample_to_skips)


@torch.no_grad()
def unet_decode(unet: torch.nn.Module, encoded: EncodedSample, residuals: Residuals | None) -> torch.Tensor:
    """Add the residuals (if any) to the skips and the middle output, then run the up blocks."""
    sample, skips = encoded.sample, encoded.skips
    if residuals is not None:
        skips = tuple(skip + extra for skip, extra in zip(skips, residuals.down, strict=True))
        sample = sample + residuals.mid
    upsample_size = None
    for index, block in enumerate(unet.up_blocks):
        res_samples, skips = skips[-len(block.resnets) :], skips[: -len(block.resnets)]
        if index < len(unet.up_blocks) - 1 and encoded.upsample_to_skips:
            upsample_size = skips[-1].shape[2:]
        if getattr(block, "has_cross_attention", False):
            sample = block(
                hidden_states=sample,
                temb=encoded.emb,
                res_hidden_states_tuple=res_samples,
                encoder_hidden_states=encoded.encoder_hidden_states,
                upsample_size=upsample_size,
            )
        else:
            sample = block(
                hidden_states=sample, temb=encoded.emb, res_hidden_states_tuple=res_samples, upsample_size=upsample_size
            )
    if unet.conv_norm_out:
        sample = unet.conv_act(unet.conv_norm_out(sample))
    return unet.conv_out(sample)


def predict_noise(
    unet: torch.nn.Module,
    sample: torch.Tensor,
    timestep: torch.Tensor,
    text: TextConditioning,
    await_residuals: Callable[[], Residuals] | None,
) -> torch.Tensor:
    """The whole UNet, awaiting the ControlNet residuals (if any) only between its halves."""
    encoded = unet_encode(unet, sample, timestep, text)
    return unet_decode(unet, encoded, await_residuals() if await_residuals else None)
