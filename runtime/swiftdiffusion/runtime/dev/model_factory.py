"""Build an SDXL-architecture model set offline, from configs with fixed seeds.

Tests, the demo and the CPU benchmarks need real diffusers/transformers classes with
deterministic weights but no download. The folders written here load with the same
`from_pretrained` code path as real SDXL model ids. The "sdxl" size is the real SDXL-base
architecture (a 2.6B-parameter UNet) for GPU benchmarks: build it on the GPU, in float16.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

ModelSize = Literal["tiny", "mid", "sdxl"]
MODEL_SET_VERSION = 1
_STAMP = "swiftdiffusion-model-set.json"


@dataclass(frozen=True)
class SetShape:
    """The few numbers that differ between the model set sizes."""

    unet_channels: tuple[int, ...]
    transformer_layers: tuple[int, ...]
    head_dim: int
    text_width: int
    text_width_2: int
    text_layers: int
    vae_channels: tuple[int, ...]
    sample_size: int
    time_embed_dim: int
    text_layers_2: int | None = None  # the second text encoder's depth where it differs
    vae_layers: int = 1


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
    # stabilityai/stable-diffusion-xl-base-1.0's architecture: UNet (320, 640, 1280) with
    # (1, 2, 10) transformer layers, cross-attention 2048, a text_time embedding of
    # 6 * 256 + 1280 = 2816; CLIP ViT-L (768 wide, 12 layers) and OpenCLIP bigG (1280 wide,
    # 32 layers); the SDXL VAE (128, 256, 512, 512), two layers per block.
    "sdxl": SetShape(
        unet_channels=(320, 640, 1280),
        transformer_layers=(0, 2, 10),
        head_dim=64,
        text_width=768,
        text_width_2=1280,
        text_layers=12,
        text_layers_2=32,
        vae_channels=(128, 256, 512, 512),
        vae_layers=2,
        sample_size=128,
        time_embed_dim=256,
    ),
}


def build_model_set(
    root: Path,
    size: ModelSize = "tiny",
    controlnets: Sequence[str] = ("canny", "depth", "pose"),
    seed: int = 0,
    *,
    device: str = "cpu",
    dtype: str = "float32",
) -> Path:
    """Write `root/base` (an SDXL pipeline folder) and `root/controlnets/<name>`; return root.

    Idempotent: a folder already built with the same parameters is left alone. The set is
    written to a scratch folder and renamed into place, so concurrent builders never see
    half a model set.

    `device` is where the weights are initialised (a GPU builds the "sdxl" size in seconds,
    a CPU in minutes; their random numbers differ), `dtype` the dtype they are saved in.
    """
    import torch

    root = Path(root)
    params = {"version": MODEL_SET_VERSION, "size": size, "controlnets": list(controlnets), "seed": seed}
    device = torch.device(device).type
    if (device, dtype) != ("cpu", "float32"):  # the stamp of a default build stays as it was
        params.update(device=device, dtype=dtype)
    if model_set_params(root) == params:
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        with torch.device(device):
            unet = _save_base(scratch / "base", SHAPES[size], seed, getattr(torch, dtype))
            for index, name in enumerate(controlnets):
                _save_controlnet(scratch / "controlnets" / name, unet, seed + 1000 * (index + 1), getattr(torch, dtype))
        (scratch / _STAMP).write_text(json.dumps(params))
        if model_set_params(root) == params:  # another builder won the race
            return root
        if root.exists():
            shutil.rmtree(root)
        os.replace(scratch, root)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return root


def _save_base(folder: Path, shape: SetShape, seed: int, dtype: torch.dtype):  # -> UNet2DConditionModel
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
        layers_per_block=shape.vae_layers,
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
        hidden_act="gelu",
        layer_norm_eps=1e-5,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=shape.text_width,
            intermediate_size=4 * shape.text_width,
            num_attention_heads=_text_heads(shape.text_width),
            projection_dim=shape.text_width,
            num_hidden_layers=shape.text_layers,
            **text_config,
        )
    )
    text_encoder_2 = CLIPTextModelWithProjection(
        CLIPTextConfig(
            hidden_size=shape.text_width_2,
            intermediate_size=4 * shape.text_width_2,
            num_attention_heads=_text_heads(shape.text_width_2),
            projection_dim=projection_dim,
            num_hidden_layers=shape.text_layers_2 or shape.text_layers,
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
    _cast(pipeline, dtype)
    pipeline.save_pretrained(folder, safe_serialization=True)
    return unet


def _text_heads(width: int) -> int:
    return width // 64 if width >= 64 else 4


def _cast(model, dtype: torch.dtype):  # (pipeline or model) -> the same
    """Cast only when needed: diffusers warns on every `.to(dtype)`, even a no-op one."""
    return model if model.dtype == dtype else model.to(dtype=dtype)


def _save_controlnet(folder: Path, unet, seed: int, dtype: torch.dtype) -> None:
    """A ControlNet copied from the UNet, with its zero convolutions randomised so it acts.
    The random values are drawn on the CPU whatever the build device, so they are the same."""
    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    controlnet = _cast(ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 96, 256)), dtype)
    zero_convs = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]
    generator = torch.Generator("cpu").manual_seed(seed)

    def randn(shape: torch.Size) -> torch.Tensor:
        return torch.randn(shape, generator=generator, device="cpu")

    with torch.no_grad():
        for conv in zero_convs:
            conv.weight.copy_(randn(conv.weight.shape) * 0.05)
            conv.bias.copy_(randn(conv.bias.shape) * 0.01)
        last = controlnet.controlnet_cond_embedding.conv_out
        last.weight.copy_(randn(last.weight.shape) * 0.05)
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


