"""ControlNet models read from the model store, for a ControlNet pool's cache (or a base
pod that runs its ControlNets itself)."""
from __future__ import annotations

from collections.abc import Callable

import torch

from swiftdiffusion.runtime.config import RuntimeConfig
from swiftdiffusion.runtime.placement import DTYPES
from swiftdiffusion.runtime.serving.model_store import resolve


def controlnet_loader(config: RuntimeConfig, device: torch.device, dtype: str) -> Callable[[str], torch.nn.Module]:
    """name -> ControlNetModel on `device`, for the models listed under `controlnets:`."""
    from diffusers import ControlNetModel

    references = {entry.name: entry.model or entry.name for entry in config.controlnets}

    def load(name: str) -> torch.nn.Module:
        model = ControlNetModel.from_pretrained(
            resolve(references[name], config.model_store), cache_dir=config.model_store, torch_dtype=DTYPES[dtype]
        )
        return model.to(device).eval()

    return load
