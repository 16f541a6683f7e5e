"""The branch-exchange seam: the only per-step traffic between the two CFG workers.

Per step the leader (conditional branch, owner of the scheduler) sends one `StepCommand`
(step index, timestep, scaled latent, which LoRAs merge before this step) and the
follower (unconditional branch) answers with one `BranchReply` (its noise prediction).
Implementations move tensors only; request set-up and error text travel on the
worker's control connection, so an exchange stays a two-message-per-step pipe.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from swiftdiffusion.runtime.errors import Unavailable


class WorkerLost(Unavailable):
    """The peer worker died or stopped answering: the request fails (UNAVAILABLE), unguided."""


@dataclass(frozen=True)
class StepCommand:
    """Leader -> follower: compute your branch for this step (or stop, when `latent` is None)."""

    index: int
    timestep: torch.Tensor | None = None
    latent: torch.Tensor | None = None
    merges: int = 0  # bit i set: merge LoRA i before this step (decided by the leader)

    @property
    def is_end(self) -> bool:
        return self.latent is None


@dataclass(frozen=True)
class BranchReply:
    """Follower -> leader: the branch's noise prediction, or None when the branch failed."""

    prediction: torch.Tensor | None

    @property
    def ok(self) -> bool:
        return self.prediction is not None


@dataclass(frozen=True)
class StepLayout:
    """Shapes and dtypes fixed for one request, so per-step messages carry no metadata."""

    latent_shape: tuple[int, ...]
    latent_dtype: torch.dtype
    timestep_dtype: torch.dtype


class BranchExchange(Protocol):
    """Leader and follower ends of one worker pair; each side calls only its own half."""

    def prepare(self, layout: StepLayout) -> None: ...
    def send_step(self, command: StepCommand) -> None: ...
    def recv_step(self) -> StepCommand: ...
    def send_reply(self, reply: BranchReply) -> None: ...
    def recv_reply(self) -> BranchReply: ...
    def close(self) -> None: ...


HEADER_LEN = 4  # float64: [is_step, index, timestep, merges]; exact for int64 and float32 timesteps


def encode_header(command: StepCommand) -> torch.Tensor:
    if command.is_end:
        return torch.tensor([0.0, float(command.index), 0.0, 0.0], dtype=torch.float64)
    assert command.timestep is not None
    return torch.tensor(
        [1.0, float(command.index), float(command.timestep), float(command.merges)], dtype=torch.float64
    )


def decode_header(
    header: torch.Tensor, latent: torch.Tensor, layout: StepLayout
) -> StepCommand:
    is_step, index, timestep, merges = header.tolist()
    if not is_step:
        return StepCommand(int(index))
    return StepCommand(
        int(index), torch.tensor(timestep, dtype=layout.timestep_dtype), latent, int(merges)
    )
