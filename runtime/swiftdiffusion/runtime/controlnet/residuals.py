"""ControlNet residuals and the one way they are combined.

diffusers' `MultiControlNetModel` scales each ControlNet's residuals by its conditioning
scale (inside `ControlNetModel.forward`) and sums them in request order; `Residuals.plus`
reproduces that sum, in that order, so the decoupled path stays bit-exact.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Residuals:
    """What the UNet decoder adds: one tensor per skip connection, one for the middle block."""

    down: tuple[torch.Tensor, ...]
    mid: torch.Tensor

    def plus(self, other: Residuals) -> Residuals:
        return Residuals(tuple(a + b for a, b in zip(self.down, other.down, strict=True)), self.mid + other.mid)

    def branch(self, index: int, branches: int = 2) -> Residuals:
        """The residuals of one CFG branch (0 = unconditional, 1 = conditional) of a batched step."""
        return Residuals(tuple(t.chunk(branches)[index] for t in self.down), self.mid.chunk(branches)[index])


def sum_residuals(parts: Sequence[Residuals]) -> Residuals:
    """Sum already-scaled residuals of several ControlNets, first to last."""
    total = parts[0]
    for part in parts[1:]:
        total = total.plus(part)
    return total
