"""Which ControlNet residuals each denoising step uses: the one schedule both the
single-worker loop and the latent-parallel follower follow.

Synchronous (exact): step t requests and waits for its own residuals. Pipelined: step t
uses the residuals requested at step t-1 (step 0 has none and waits for its own) and
requests its own for step t+1, except on the last step, whose request nobody would use;
the transfer of step t's residuals then overlaps a whole step.
"""
from __future__ import annotations

from concurrent.futures import Future

import torch

from swiftdiffusion.runtime.config import ControlNetMode
from swiftdiffusion.runtime.controlnet.residuals import Residuals
from swiftdiffusion.runtime.transport.residual_source import ResidualSession


class ResidualSchedule:
    """One request's residual futures over a session, step by step."""

    def __init__(self, session: ResidualSession, mode: ControlNetMode, steps: int) -> None:
        self.session, self._mode, self._steps = session, mode, steps
        self._next: Future[Residuals] | None = None

    def for_step(self, index: int, latent: torch.Tensor, timestep: torch.Tensor) -> Future[Residuals]:
        """The future step `index` uses; call once per step, in order, with its scaled latent."""
        if self._mode is ControlNetMode.SYNCHRONOUS or self._next is None:
            self._next = self.session.request(index, latent, timestep)
            return self._next
        use = self._next
        self._next = self.session.request(index, latent, timestep) if index < self._steps - 1 else use
        return use
