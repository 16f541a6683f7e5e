"""The in-process residual transport: the ControlNet engine on a worker thread of this process."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import torch

from swiftdiffusion.runtime.controlnet.engine import ControlNetEngine, PreparedControl
from swiftdiffusion.runtime.controlnet.residuals import Residuals
from swiftdiffusion.runtime.transport.residual_source import ResidualRequest


class InProcessSession:
    def __init__(self, engine: ControlNetEngine, prepared: PreparedControl) -> None:
        self._engine = engine
        self._prepared = prepared
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="controlnet", initializer=torch.set_num_threads, initargs=(torch.get_num_threads(),))

    def request(self, step: int, latent: torch.Tensor, timestep: torch.Tensor) -> Future[Residuals]:
        return self._worker.submit(self._engine.compute, self._prepared, latent, timestep)

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)


class InProcessResidualSource:
    def __init__(self, engine: ControlNetEngine) -> None:
        self.engine = engine

    def open(self, request: ResidualRequest, timeout: float | None = None) -> InProcessSession:
        return InProcessSession(self.engine, self.engine.prepare(request))
