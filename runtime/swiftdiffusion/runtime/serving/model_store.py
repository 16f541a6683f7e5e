"""Resolving model references (a hub id, an absolute path, or a path under modelStore)."""
from __future__ import annotations

from pathlib import Path

import torch

from swiftdiffusion.runtime.config import RuntimeConfig
from swiftdiffusion.runtime.pipeline.base_model import DTYPES


def resolve(reference: str, model_store: str | None) -> str:
    """A local folder if the reference names one (directly or under the store), else the id."""
    if Path(reference).exists():
        return reference
    if model_store and (Path(model_store) / reference).exists():
        return str(Path(model_store) / reference)
    return reference


def controlnet_loader(config: RuntimeConfig, device: torch.device, dtype: str):
    """name -> ControlNetModel on `device`, for the models listed under `controlnets:`."""
    from diffusers import ControlNetModel

    references = {entry.name: entry.model or entry.name for entry in config.controlnets}

    def load(name: str) -> torch.nn.Module:
        model = ControlNetModel.from_pretrained(
            resolve(references[name], config.model_store), cache_dir=config.model_store, torch_dtype=DTYPES[dtype]
        )
        return model.to(device).eval()

    return load
