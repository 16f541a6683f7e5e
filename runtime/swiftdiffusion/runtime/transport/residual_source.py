"""The transport seam between the base server's denoising loop and the ControlNet service.

A `ResidualSource` opens one `ResidualSession` per generation request: the control
images, ControlNet names and scales and the text conditioning travel once, at open;
each step then sends only the scaled latent and the timestep and gets back a future of
the summed, scaled residuals for every ControlNet of the request. Implementations:
`transport_inprocess.InProcessResidualSource` (same process, a worker thread) and
`transport_grpc.GrpcResidualSource` (a bidirectional gRPC stream to the ControlNet
service). Whether step t waits for its own residuals (synchronous, exact) or uses step
t-1's (pipelined) is decided by the denoising loop, not by the transport.
"""
from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

import torch

from swiftdiffusion.runtime.controlnet.residuals import Residuals
from swiftdiffusion.runtime.pipeline.conditioning import TextConditioning


@dataclass(frozen=True)
class ControlNetUse:
    """One ControlNet of a request: its name, encoded control image (PNG/JPEG bytes) and scale."""

    name: str
    image: bytes
    conditioning_scale: float


@dataclass(frozen=True)
class ResidualRequest:
    """Everything about a request that stays fixed across its steps."""

    controlnets: tuple[ControlNetUse, ...]
    width: int
    height: int
    text: TextConditioning


class ResidualSession(Protocol):
    def request(self, step: int, latent: torch.Tensor, timestep: torch.Tensor) -> Future[Residuals]:
        """Start computing residuals for `latent` (scaled model input, batch of one per image).

        The service repeats the latent to the conditioning's batch (CFG), as diffusers
        does, so the residuals have the conditioning's batch size.
        """
        ...

    def close(self) -> None:
        """Release the session on both ends; outstanding futures are cancelled. Idempotent."""
        ...


class ResidualSource(Protocol):
    def open(self, request: ResidualRequest, timeout: float | None = None) -> ResidualSession:
        """Open a session; `timeout` (seconds) bounds the whole session on the remote side."""
        ...
