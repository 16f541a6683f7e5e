"""Build an SDXL-architecture model set offline, from configs with fixed seeds.

Tests, the demo and the CPU benchmarks need real diffusers/transformers classes with
deterministic weights but no download. The folders written here load with the same
`from_pretrained` code path as real SDXL model ids.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ModelSize = Literal["tiny", "mid"]
MODEL_SET_VERSION = 1
_STAMP = "swiftdiffusion-model-set.json"


@dataclass(frozen=True)
class SetShape:
    """The few numbers that differ between the tiny and the mid model set."""

    unet_channels: tuple[int, ...]
    transformer_layers: tuple[int, ...]
    head_dim: int
    text_width: int
    text_width_2: int
    text_layers: int
    vae_channels: tuple[int, ...]
    sample_size: int
    time_embed_dim: int


SHAPES: dict[str, SetShape] = {
    "tiny": SetShape(
        unet_channels=(32, 64),
        transformer_layers=(1, 2),
        head_dim=8,
        text_width=32,
        text_width_2=32,
        text_layers=2,
        vae_channels=(32, 32, 32, 32),
        sample_size=16,
        time_embed_dim=8,
    ),
    "mid": SetShape(
        unet_channels=(128, 256, 512),
        transformer_layers=(0, 1, 2),
        head_dim=64,
        text_width=256,
        text_width_2=512,
        text_layers=4,
        vae_channels=(64, 128, 128, 128),
        sample_size=64,
        time_embed_dim=256,
    ),
}


def build_model_set(
    root: Path,
    size: ModelSize = "tiny",
    controlnets: Sequence[str] = ("canny", "depth", "pose"),
    seed: int = 0,
) -> Path:
    """Write `root/base` (an SDXL pipeline folder) and `root/controlnets/<name>`; return root.

    Idempotent: a folder already built with the same parameters is left alone. The set is
    written to a scratch folder and renamed into place, so concurrent builders never see
    half a model set.
    """
    root = Path(root)
    params = {"version": MODEL_SET_VERSION, "size": size, "controlnets": list(controlnets), "seed": seed}
    if model_set_params(root) == params:
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        unet = _save_base(scratch / "base", SHAPES[size], seed)
        for index, name in enumerate(controlnets):
            _save_controlnet(scratch / "controlnets" / name, unet, seed + 1000 * (index + 1))
        (scratch / _STAMP).write_text(json.dumps(params))
        if model_set_params(root) == params:  # another builder won the race
            return root
        if root.exists():
            shutil.rmtree(root)
        os.replace(scratch, root)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return root


def _save_base(folder: Path, shape: SetShape, seed: int):  # -> UNet2DConditionModel
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    levels = len(shape.unet_channels)
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1)
    up = ("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",)
    if shape.transformer_layers[0]:
        down, up = ("CrossAttnDownBlock2D",) * levels, ("CrossAttnUpBlock2D",) * levels
    projection_dim = shape.text_width_2
    unet = UNet2DConditionModel(
        sample_size=shape.sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=shape.unet_channels,
        layers_per_block=2,
        attention_head_dim=[max(1, c // shape.head_dim) for c in shape.unet_channels],
        transformer_layers_per_block=[max(1, n) for n in shape.transformer_layers],
        cross_attention_dim=shape.text_width + shape.text_width_2,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=shape.time_embed_dim,
        projection_class_embeddings_input_dim=6 * shape.time_embed_dim + projection_dim,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        block_out_channels=shape.vae_channels,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(shape.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(shape.vae_channels),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=32,
        sample_size=shape.sample_size * 8,
        scaling_factor=0.13025,
    )
    tokenizer = byte_level_clip_tokenizer()
    text_config = dict(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        vocab_size=len(tokenizer),
        max_position_embeddings=tokenizer.model_max_length,
        num_hidden_layers=shape.text_layers,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=shape.text_width,
            intermediate_size=4 * shape.text_width,
            num_attention_heads=_text_heads(shape.text_width),
            projection_dim=shape.text_width,
            **text_config,
        )
    )
    text_encoder_2 = CLIPTextModelWithProjection(
        CLIPTextConfig(
            hidden_size=shape.text_width_2,
            intermediate_size=4 * shape.text_width_2,
            num_attention_heads=_text_heads(shape.text_width_2),
            projection_dim=projection_dim,
            **text_config,
        )
    )
    scheduler = EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type="epsilon",
    )
    pipeline = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=byte_level_clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
    )
    pipeline.save_pretrained(folder, safe_serialization=True)
    return unet


def _text_heads(width: int) -> int:
    return width // 64 if width >= 64 else 4


def _save_controlnet(folder: Path, unet, seed: int) -> None:
    """A ControlNet copied from the UNet, with its zero convolutions randomised so it acts."""
    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 96, 256))
    zero_convs = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for conv in zero_convs:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * 0.05)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator) * 0.01)
        last = controlnet.controlnet_cond_embedding.conv_out
        last.weight.copy_(torch.randn(last.weight.shape, generator=generator) * 0.05)
    controlnet.save_pretrained(folder, safe_serialization=True)


def byte_level_clip_tokenizer():  # -> CLIPTokenizer
    """A CLIP tokenizer over the 256 byte symbols (plus their end-of-word forms): no files needed."""
    from transformers import CLIPTokenizer

    symbols = [chr(c) for c in _byte_symbols()]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for symbol in symbols:
        vocab[symbol] = len(vocab)
    for symbol in symbols:
        vocab[symbol + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _byte_symbols() -> list[int]:
    """GPT-2's printable stand-ins for the 256 byte values (what ByteLevel pre-tokenises to)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    extra = [256 + n for n in range(256 - len(printable))]
    others = [b for b in range(256) if b not in printable]
    return printable + extra[: len(others)]


def model_set_params(root: Path) -> dict[str, object] | None:
    """The parameters a folder was built with, or None if it is not a built model set."""
    stamp = Path(root) / _STAMP
    return json.loads(stamp.read_text()) if stamp.is_file() else None


