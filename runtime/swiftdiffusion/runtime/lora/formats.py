"""Read a safetensors LoRA into per-layer factors bound to the base model's weights.

Key formats (diffusers/PEFT, kohya with SGM or diffusers module names) are converted by
diffusers' own loaders, so a file loads here exactly when and as diffusers would load it;
this module adds what diffusers only warns about: every factor in the file must land on
a base layer of the right shape, or the LoRA is refused.
"""
from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass

import safetensors
import safetensors.torch
import torch
from diffusers import StableDiffusionXLPipeline
from diffusers.utils.peft_utils import _create_lora_config
from diffusers.utils.state_dict_utils import (
    convert_state_dict_to_diffusers,
    convert_state_dict_to_peft,
    convert_unet_state_dict_to_peft,
)
from peft.utils.other import get_pattern_key

from swiftdiffusion.runtime.lora.errors import LoraFormatError, LoraMismatchError

UNET = "unet"
TEXT_ENCODERS = ("text_encoder", "text_encoder_2")
_METADATA_KEY = "lora_adapter_metadata"  # diffusers' LORA_ADAPTER_METADATA_KEY


@dataclass(frozen=True)
class LayerDelta:
    """One base weight's low-rank update: weight += scale * scaling * up @ down."""

    component: str
    module: str
    weight: torch.Tensor
    up: torch.Tensor  # [out, rank], on the host until the loader moves it
    down: torch.Tensor  # [rank, in * kernel]
    scaling: float  # alpha / rank, as peft computes it

    def to(self, device: torch.device, non_blocking: bool = False) -> LayerDelta:
        """Factors in the base weight's dtype on `device`."""
        dtype = self.weight.dtype
        return LayerDelta(
            self.component,
            self.module,
            self.weight,
            self.up.to(device=device, dtype=dtype, non_blocking=non_blocking),
            self.down.to(device=device, dtype=dtype, non_blocking=non_blocking),
            self.scaling,
        )


def read_safetensors(data: bytes) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Tensors and diffusers' adapter metadata; never unpickles."""
    try:
        tensors = safetensors.torch.load(data)
        (header_size,) = struct.unpack("<Q", data[:8])
        file_metadata = json.loads(data[8 : 8 + header_size]).get("__metadata__") or {}
    except (safetensors.SafetensorError, struct.error, ValueError) as error:
        raise LoraFormatError(f"not a readable safetensors file: {error}") from error
    raw = file_metadata.get(_METADATA_KEY)
    return tensors, (json.loads(raw) if raw else None)


def bind_lora(data: bytes, components: Mapping[str, torch.nn.Module]) -> tuple[LayerDelta, ...]:
    """Every LoRA layer in `data`, bound to the weight it patches in `components`.

    `components` maps "unet", "text_encoder", "text_encoder_2" to the base modules.
    Raises LoraFormatError or LoraMismatchError; touches no weight.
    """
    tensors, metadata = read_safetensors(data)
    if not tensors:
        raise LoraFormatError("the file holds no tensors")
    if any("dora_scale" in key or "lora_magnitude_vector" in key for key in tensors):
        raise LoraFormatError("DoRA checkpoints are not supported")
    factor_count = sum(1 for key in tensors if not key.endswith(".alpha"))
    try:
        state_dict, alphas = StableDiffusionXLPipeline.lora_state_dict(
            dict(tensors), unet_config=components[UNET].config
        )
    except (ValueError, KeyError, IndexError) as error:
        raise LoraFormatError(f"diffusers cannot read these LoRA keys: {error}") from error
    if not all("lora" in key for key in state_dict):
        raise LoraFormatError("not a LoRA: some keys do not name LoRA factors")
    deltas: list[LayerDelta] = []
    unmatched: list[str] = []
    for name, module in components.items():
        factors, config = _component_factors(name, module, state_dict, alphas, metadata)
        if config is not None:
            _bind_component(name, module, factors, config, deltas, unmatched)
    if unmatched or 2 * len(deltas) != factor_count:
        listed = ", ".join(sorted(unmatched)[:5]) or "keys the converter did not recognise"
        raise LoraMismatchError(
            f"{factor_count - 2 * len(deltas)} of {factor_count} LoRA tensors do not match the base model "
            f"(e.g. {listed}); refusing a partial LoRA"
        )
    return tuple(deltas)


def _component_factors(
    name: str,
    module: torch.nn.Module,
    state_dict: dict[str, torch.Tensor],
    alphas: dict[str, float] | None,
    metadata: dict | None,
) -> tuple[dict[str, torch.Tensor], object]:
    """One component's factors in PEFT keys and its LoraConfig, converted as diffusers' loaders do."""
    prefix = f"{name}."
    factors = {k.removeprefix(prefix): v for k, v in state_dict.items() if k.startswith(prefix)}
    if not factors:
        return factors, None
    own_alphas = {k.removeprefix(prefix): v for k, v in (alphas or {}).items() if k.startswith(prefix)}
    own_metadata = {k.removeprefix(prefix): v for k, v in metadata.items() if k.startswith(prefix)} if metadata else None
    if name == UNET:
        if "lora_A" not in next(iter(factors)):
            factors = convert_unet_state_dict_to_peft(factors)
        ranks = {f"^{k}": v.shape[1] for k, v in factors.items() if "lora_B" in k and v.ndim > 1}
        is_unet = True
    else:
        if not any(".lora_A." in k for k in factors):
            factors = convert_state_dict_to_peft(convert_state_dict_to_diffusers(factors))
        if not hasattr(module, "text_model"):
            factors = {k.removeprefix("text_model."): v for k, v in factors.items()}
        ranks = {k: v.shape[1] for k, v in factors.items() if k.endswith("lora_B.weight") and v.ndim > 1}
        is_unet = False
    if not ranks:
        raise LoraFormatError(f"{name}: no lora_B factors found")
    config = _create_lora_config(factors, own_alphas or None, own_metadata, ranks, is_unet=is_unet)
    return factors, config


def _bind_component(
    name: str,
    root: torch.nn.Module,
    factors: dict[str, torch.Tensor],
    config,  # peft.LoraConfig
    deltas: list[LayerDelta],
    unmatched: list[str],
) -> None:
    for key, down in factors.items():
        if not key.endswith(".lora_A.weight"):
            if not key.endswith(".lora_B.weight"):
                unmatched.append(f"{name}.{key}")
            continue
        module_name = key.removesuffix(".lora_A.weight")
        up = factors.get(f"{module_name}.lora_B.weight")
        layer = _find_layer(root, module_name)
        if up is None or layer is None or not _shapes_fit(layer.weight, up, down):
            unmatched.append(f"{name}.{module_name}")
            continue
        rank = down.shape[0]
        alpha = config.alpha_pattern.get(get_pattern_key(config.alpha_pattern.keys(), module_name), config.lora_alpha)
        scaling = alpha / math.sqrt(rank) if config.use_rslora else alpha / rank
        deltas.append(LayerDelta(name, module_name, layer.weight, up.flatten(1), down.flatten(1), float(scaling)))


def _find_layer(root: torch.nn.Module, module_name: str) -> torch.nn.Linear | torch.nn.Conv2d | None:
    try:
        layer = root.get_submodule(module_name)
    except AttributeError:
        return None
    return layer if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)) else None


def _shapes_fit(weight: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> bool:
    rank = down.shape[0]
    up_ok = up.shape[:2] == (weight.shape[0], rank) and all(d == 1 for d in up.shape[2:])
    return up_ok and tuple(down.shape[1:]) == tuple(weight.shape[1:])
