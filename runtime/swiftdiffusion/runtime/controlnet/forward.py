"""ControlNetModel.forward with the control image's embedding computed once per request.

The conditioning embedding (a stack of convolutions at the control image's full
resolution) depends only on the control image, not on the latent or the timestep, yet
diffusers recomputes it at every step. Here it is computed once when a request's
ControlNets are prepared; each step then runs the rest of the forward pass operation
for operation as diffusers does for SDXL-style configs (text_time added embedding, no
class embedding, no guess mode, no global pooling), so residuals stay bit-identical.

Mirrors diffusers 0.42.1, `ControlNetModel.forward`; `MIRRORS` holds the digest of that
source, and tests/runtime/test_mirrors.py fails when the installed diffusers' differs:
re-read the upstream change, port it here, then update the digest.
"""
from __future__ import annotations

import torch

from swiftdiffusion.runtime.controlnet.residuals import Residuals
from swiftdiffusion.runtime.pipeline.conditioning import TextConditioning

MIRRORS = {"diffusers.models.controlnets.controlnet:ControlNetModel.forward": "e6d7483145eb97b7"}


def check_supported(model: torch.nn.Module) -> None:
    """Refuse ControlNet configs whose forward has branches this one does not reproduce."""
    config = model.config
    unsupported = {
        "class_embed_type": config.class_embed_type is not None or config.num_class_embeds is not None,
        "addition_embed_type other than text_time": config.addition_embed_type != "text_time",
        "global_pool_conditions": config.global_pool_conditions,
    }
    bad = [name for name, present in unsupported.items() if present]
    if bad:
        raise ValueError(f"ControlNet forward does not support {', '.join(bad)}")


@torch.no_grad()
def embed_control_image(model: torch.nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The conditioning embedding of a preprocessed control image: once per request."""
    if model.config.controlnet_conditioning_channel_order == "bgr":
        image = torch.flip(image, dims=[1])
    return model.controlnet_cond_embedding(image)


@torch.no_grad()
def controlnet_residuals(
    model: torch.nn.Module,
    sample: torch.Tensor,
    timestep: torch.Tensor,
    text: TextConditioning,
    control_embedding: torch.Tensor,
    conditioning_scale: float,
) -> Residuals:
    """One step of one ControlNet: its scaled down-block and middle-block residuals."""
    timesteps = timestep[None] if timestep.ndim == 0 else timestep
    timesteps = timesteps.to(sample.device).expand(sample.shape[0])
    emb = model.time_embedding(model.time_proj(timesteps).to(dtype=sample.dtype), None)
    text_embeds, time_ids = text.added_cond_kwargs["text_embeds"], text.added_cond_kwargs["time_ids"]
    time_embeds = model.add_time_proj(time_ids.flatten()).reshape((text_embeds.shape[0], -1))
    emb = emb + model.add_embedding(torch.concat([text_embeds, time_embeds], dim=-1).to(emb.dtype))

    sample = model.conv_in(sample) + control_embedding
    skips: tuple[torch.Tensor, ...] = (sample,)
    for block in model.down_blocks:
        if getattr(block, "has_cross_attention", False):
            sample, res = block(hidden_states=sample, temb=emb, encoder_hidden_states=text.prompt_embeds)
        else:
            sample, res = block(hidden_states=sample, temb=emb)
        skips += res
    if getattr(model.mid_block, "has_cross_attention", False):
        sample = model.mid_block(sample, emb, encoder_hidden_states=text.prompt_embeds)
    else:
        sample = model.mid_block(sample, emb)

    down = tuple(
        block(skip) * conditioning_scale for skip, block in zip(skips, model.controlnet_down_blocks, strict=True)
    )
    return Residuals(down, model.controlnet_mid_block(sample) * conditioning_scale)
