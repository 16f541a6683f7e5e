"""LoRA merge with an exact restore.

Each LoRA adds its own delta, W + scale * (alpha / rank) * up @ down, so several LoRAs
give the sum of their own deltas. The first merge into a weight writes the merged values
into a new buffer and points the parameter at it, leaving the original tensor untouched;
later merges into that weight add in place to the buffer. Restoring points the parameter
back at its original tensor: exact by construction, no copy, and nothing is subtracted
(subtracting the deltas back drifts in floating point). During a request the touched
layers exist twice (original and merged), as they would with a copy of the originals.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch

from swiftdiffusion.runtime.lora.formats import LayerDelta


class WeightPatch:
    """The base weights one request has changed, and their original tensors."""

    def __init__(self) -> None:
        self._originals: dict[int, tuple[torch.nn.Parameter, torch.Tensor]] = {}

    @torch.no_grad()
    def merge(self, deltas: Iterable[LayerDelta], scale: float) -> None:
        for delta in deltas:
            weight = delta.weight
            rows = weight.shape[0]
            if id(weight) in self._originals:
                weight.data.view(rows, -1).addmm_(delta.up, delta.down, alpha=scale * delta.scaling)
                continue
            original = weight.data
            merged = torch.addmm(original.reshape(rows, -1), delta.up, delta.down, alpha=scale * delta.scaling)
            self._originals[id(weight)] = (weight, original)
            weight.data = merged.view(original.shape)

    @torch.no_grad()
    def restore(self) -> None:
        """Point every touched weight back at its original tensor, bit for bit."""
        for weight, original in self._originals.values():
            weight.data = original
        self._originals.clear()
