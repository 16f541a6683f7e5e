"""The one residual schedule shared by the denoising loop and the latent-parallel follower."""
from __future__ import annotations

from concurrent.futures import Future

import pytest
import torch

from swiftdiffusion.runtime.config import ControlNetMode
from swiftdiffusion.runtime.pipeline.residual_schedule import ResidualSchedule


class RecordingSession:
    """Returns a distinct future per request and remembers which steps asked."""

    def __init__(self) -> None:
        self.requested: list[int] = []
        self.futures: dict[int, Future] = {}

    def request(self, step: int, latent: torch.Tensor, timestep: torch.Tensor) -> Future:
        self.requested.append(step)
        self.futures[step] = Future()
        return self.futures[step]

    def close(self) -> None:
        pass


def run(mode: ControlNetMode, steps: int) -> tuple[RecordingSession, list[int]]:
    session = RecordingSession()
    schedule = ResidualSchedule(session, mode, steps)
    used = []
    for index in range(steps):
        future = schedule.for_step(index, torch.zeros(1), torch.tensor(index))
        used.append(next(step for step, f in session.futures.items() if f is future))
    return session, used


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_synchronous_step_uses_its_own_residuals(steps: int) -> None:
    session, used = run(ControlNetMode.SYNCHRONOUS, steps)
    assert session.requested == list(range(steps))
    assert used == list(range(steps))


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_pipelined_step_uses_previous_residuals_and_last_step_requests_none(steps: int) -> None:
    session, used = run(ControlNetMode.PIPELINED, steps)
    assert session.requested == list(range(max(steps - 1, 1)))
    assert used == [0] + list(range(steps - 1))[:steps - 1]
