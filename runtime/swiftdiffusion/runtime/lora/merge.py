"""In-place LoRA merge with an exact restore.

Each LoRA adds its own delta, W += scale * (alpha / rank) * up @ down, so several LoRAs
give the sum of their own deltas. Restoring copies back the original values kept before
the first merge: subtracting the deltas back would drift in floating point.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch

from swiftdiffusion.runtime.lora.formats import LayerDelta


class WeightPatch:
    """The base weights one request has changed, and their original values."""

    def __init__(self) -> None:
        self._originals: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def touched(self) -> int:
        return len(self._originals)

    @torch.no_grad()
    def merge(self, deltas: Iterable[LayerDelta], scale: float) -> None:
        """Add each layer's delta in place; the first touch of a weight keeps its original."""
        for delta in deltas:
            weight = delta.weight.detach()
            if id(delta.weight) not in self._originals:
                self._originals[id(delta.weight)] = (weight, weight.clone())
            weight.view(weight.shape[0], -1).addmm_(delta.up, delta.down, alpha=scale * delta.scaling)

    @torch.no_grad()
    def restore(self) -> None:
        """Put every touched weight back to its original value, bit for bit."""
        for weight, original in self._originals.values():
            weight.copy_(original)
        self._originals.clear()
