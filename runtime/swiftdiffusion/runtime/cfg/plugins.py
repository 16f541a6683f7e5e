"""What the follower builds inside its own process: a ControlNet residual source for its
branch and LoRA merge followers. Both are picklable factories (they travel in WorkerSpec)
that build their heavy state only once they run in the follower.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from swiftdiffusion.runtime.cfg.worker import MergeFollower, ModelRef
from swiftdiffusion.runtime.lora.loader import LoraLoad, LoraLoader
from swiftdiffusion.runtime.lora.merge import WeightPatch
from swiftdiffusion.runtime.lora.store import LoraEntry, LoraStore
from swiftdiffusion.runtime.pipeline.step_hooks import LoraUse
from swiftdiffusion.runtime.transport.residual_source import ResidualSource


class LocalControlNets:
    """Residuals computed in the follower from ControlNet folders (`<folder>/<name>`):
    for tests and one-machine setups; a pod uses the ControlNet service instead."""

    def __init__(self, folder: str, budget_bytes: int = 1 << 34) -> None:
        self.folder, self.budget_bytes = folder, budget_bytes

    def __call__(self, device: torch.device, dtype: torch.dtype) -> ResidualSource:
        from diffusers import ControlNetModel

        from swiftdiffusion.runtime.controlnet.cache import ControlNetCache
        from swiftdiffusion.runtime.controlnet.engine import ControlNetEngine
        from swiftdiffusion.runtime.serving.metrics import RuntimeMetrics
        from swiftdiffusion.runtime.transport.inprocess import InProcessResidualSource

        folder = Path(self.folder)

        def load(name: str) -> torch.nn.Module:
            model = ControlNetModel.from_pretrained(folder / name, torch_dtype=dtype, local_files_only=True)
            return model.to(device).eval()

        names = [path.name for path in folder.iterdir() if path.is_dir()]
        cache = ControlNetCache(names, load, self.budget_bytes, RuntimeMetrics("base"))
        return InProcessResidualSource(ControlNetEngine(cache, device, dtype))


class LoraMergeFollower:
    """One request's LoRAs on the follower: loading from the start, merged when told."""

    def __init__(self, loads: Sequence[tuple[LoraLoad, float]]) -> None:
        self._loads = tuple(loads)
        self._patch = WeightPatch()

    def merge(self, mask: int) -> None:
        """Merge LoRA i for each bit i, in request order (the leader's order, so rounding matches)."""
        for index, (load, scale) in enumerate(self._loads):
            if mask >> index & 1:
                self._patch.merge(load.result(), scale)

    def close(self) -> None:
        try:
            self._patch.restore()
        finally:
            for load, _ in self._loads:
                load.cancel()


class LoraFollowers:
    """MergeFollower factory: the follower's own LoRA store and loader over the same config as
    the leader's. Text encoders are loaded (host memory only) because a LoRA file binds as a
    whole; their merged parts are never used here, the leader encodes the prompt."""

    def __init__(self, model: ModelRef, entries: Sequence[LoraEntry] = (), model_store: str | None = None) -> None:
        self.model, self.entries, self.model_store = model, tuple(entries), model_store
        self._built: tuple[LoraStore, LoraLoader] | None = None

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_built": None}

    def __call__(self, loras: Sequence[LoraUse], unet: torch.nn.Module) -> MergeFollower:
        store, loader = self._build()
        loads = []
        try:
            for use in loras:
                entry = store.entry(use.name)
                loads.append((loader.start(entry, unet), entry.scale if use.scale is None else use.scale))
        except BaseException:
            for load, _ in loads:
                load.cancel()
            raise
        return LoraMergeFollower(loads)

    def _build(self) -> tuple[LoraStore, LoraLoader]:
        if self._built is None:
            from transformers import CLIPTextModel, CLIPTextModelWithProjection

            text_encoders = {
                "text_encoder": self.model.load(CLIPTextModel, "text_encoder"),
                "text_encoder_2": self.model.load(CLIPTextModelWithProjection, "text_encoder_2"),
            }
            store = LoraStore(self.entries, None if self.model_store is None else Path(self.model_store))
            self._built = (store, LoraLoader(store, text_encoders))
        return self._built
