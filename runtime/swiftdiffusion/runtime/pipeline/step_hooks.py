"""The step-hook seam: code that must run on the denoising thread between steps.

BAL (bounded asynchronous LoRA loading, runtime/lora/) is such a hook: `before_step`
merges a LoRA once it is loaded and blocks at step K until it is; `close` restores the
base weights exactly. The loop calls `close` in a `finally`, so it runs after a
finished, failed or cancelled request alike.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from swiftdiffusion.runtime.errors import NotFound


@dataclass(frozen=True)
class LoraUse:
    """One LoRA of a request: name, scale (None: the configured default) and BAL bound K (None: default)."""

    name: str
    scale: float | None = None
    k: int | None = None


class StepHook(Protocol):
    def before_encode(self) -> None: ...  # on the worker, before the prompt is encoded (text-encoder LoRAs)

    def before_step(self, step_index: int) -> None: ...

    def close(self) -> None: ...


class StepHookFactory(Protocol):
    def __call__(self, loras: Sequence[LoraUse], unet: torch.nn.Module, steps: int) -> StepHook:
        """Build the hook for one request; raise `errors.NotFound("LoRA", name)` for an unknown LoRA."""
        ...


class NoStepHook:
    def before_encode(self) -> None:
        """No text encoder to patch."""

    def before_step(self, step_index: int) -> None:
        """Nothing to do between steps."""

    def close(self) -> None:
        """Nothing to restore."""


def without_loras(loras: Sequence[LoraUse], unet: torch.nn.Module, steps: int) -> StepHook:
    """The factory used until a LoRA store is wired in: every named LoRA is unknown."""
    if loras:
        raise NotFound("LoRA", loras[0].name)
    return NoStepHook()
