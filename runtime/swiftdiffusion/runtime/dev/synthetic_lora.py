"""Write random LoRA files for a base model: tests, the demo and the benchmark need
LoRAs with a visible effect and no download.

The PEFT-format file is written by diffusers' own `save_lora_weights`, the kohya-format
file by diffusers' `convert_state_dict_to_kohya`, so both are files diffusers itself
produces and loads.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import safetensors.torch
import torch

UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out")
TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
KeyFormat = Literal["peft", "kohya"]


def random_lora_factors(
    model: torch.nn.Module,
    targets: tuple[str, ...],
    rank: int,
    alpha: float,
    strength: float,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """PEFT-keyed factors for every Linear whose name ends with a target; each layer's
    delta (alpha / rank) * up @ down has `strength` times the Frobenius norm of its weight."""
    factors: dict[str, torch.Tensor] = {}
    for name, layer in model.named_modules():
        if not (isinstance(layer, torch.nn.Linear) and name.endswith(targets)):
            continue
        weight = layer.weight.detach().float()
        down = torch.randn(rank, weight.shape[1], generator=generator) / weight.shape[1] ** 0.5
        up = torch.randn(weight.shape[0], rank, generator=generator)
        delta_norm = (alpha / rank) * torch.linalg.matrix_norm(up @ down)
        up *= strength * torch.linalg.matrix_norm(weight) / delta_norm
        factors[f"{name}.lora_A.weight"] = down.contiguous()
        factors[f"{name}.lora_B.weight"] = up.contiguous()
    return factors


def write_random_lora(
    path: Path,
    components: Mapping[str, torch.nn.Module],
    *,
    rank: int = 4,
    alpha: float | None = None,
    strength: float = 0.2,
    seed: int = 0,
    key_format: KeyFormat = "peft",
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a LoRA over the attention, feed-forward and projection layers of `components`
    ("unet", and optionally "text_encoder"/"text_encoder_2") to `path` (.safetensors)."""
    alpha = float(rank if alpha is None else alpha)
    generator = torch.Generator().manual_seed(seed)
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for name, model in components.items():
        targets = UNET_TARGETS if name == "unet" else TEXT_TARGETS
        factors = random_lora_factors(model, targets, rank, alpha, strength, generator)
        layers[name] = {key: value.to(dtype) for key, value in factors.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if key_format == "kohya":
        _write_kohya(path, layers, alpha)
    else:
        _write_peft(path, layers, rank, alpha)
    return path


def _write_peft(path: Path, layers: dict[str, dict[str, torch.Tensor]], rank: int, alpha: float) -> None:
    from diffusers import StableDiffusionXLPipeline

    def metadata(name: str) -> dict | None:
        if name not in layers:
            return None
        targets = sorted({key.removesuffix(".lora_A.weight") for key in layers[name] if key.endswith("lora_A.weight")})
        return {"r": rank, "lora_alpha": alpha, "target_modules": targets}

    StableDiffusionXLPipeline.save_lora_weights(
        save_directory=path.parent,
        weight_name=path.name,
        unet_lora_layers=layers.get("unet"),
        text_encoder_lora_layers=layers.get("text_encoder"),
        text_encoder_2_lora_layers=layers.get("text_encoder_2"),
        unet_lora_adapter_metadata=metadata("unet"),
        text_encoder_lora_adapter_metadata=metadata("text_encoder"),
        text_encoder_2_lora_adapter_metadata=metadata("text_encoder_2"),
    )


def _write_kohya(path: Path, layers: dict[str, dict[str, torch.Tensor]], alpha: float) -> None:
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya

    prefixed = {f"{name}.{key}": value for name, factors in layers.items() for key, value in factors.items()}
    kohya = convert_state_dict_to_kohya(prefixed)
    for key in kohya:
        if key.endswith(".alpha"):
            kohya[key] = torch.tensor(alpha)
    safetensors.torch.save_file(kohya, str(path), metadata={"format": "pt"})


def lora_for_model_set(models: Path, name: str, *, rank: int = 8, seed: int = 0, strength: float = 0.2) -> Path:
    """`<models>/loras/<name>.safetensors`: a random UNet LoRA for a built model set, written once."""
    path = Path(models) / "loras" / f"{name}.safetensors"
    if not path.is_file():
        from diffusers import UNet2DConditionModel

        unet = UNet2DConditionModel.from_pretrained(Path(models) / "base" / "unet", local_files_only=True)
        partial = path.with_suffix(".partial")
        write_random_lora(partial, {"unet": unet}, rank=rank, seed=seed, strength=strength)
        partial.replace(path)
    return path
