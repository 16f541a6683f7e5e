"""One generation on the base server: validate, encode text, denoise with residuals, decode.

The engine serialises requests on one denoising worker (one model, in-place LoRA merges);
requests waiting for it are the queue depth the autoscaler reads.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from swiftdiffusion.runtime.config import ControlNetMode
from swiftdiffusion.runtime.errors import DeadlineExceeded, Unavailable
from swiftdiffusion.runtime.pipeline.base_model import BaseModel
from swiftdiffusion.runtime.pipeline.denoise import LoopInputs, LoopTimings, denoise
from swiftdiffusion.runtime.pipeline.guidance import BatchedCfg, NoisePredictor
from swiftdiffusion.runtime.pipeline.requests import GenerateParams, Limits, validate
from swiftdiffusion.runtime.pipeline.step_hooks import StepHook, StepHookFactory, without_loras
from swiftdiffusion.runtime.serving.metrics import RuntimeMetrics
from swiftdiffusion.runtime.transport.residual_source import ResidualRequest, ResidualSession, ResidualSource

# Small enough to cost a fraction of a second on a CPU; the first-call costs it takes away
# (allocators, lazily loaded kernels, library handles) are mostly independent of the size.
WARM_UP_SIZE = 64


@dataclass
class GenerateResult:
    latents: torch.Tensor
    image: np.ndarray | None
    timings: dict[str, float] = field(default_factory=dict)


class BaseEngine:
    def __init__(
        self,
        model: BaseModel,
        residual_source: ResidualSource | None = None,
        *,
        predictor: NoisePredictor | None = None,
        step_hooks: StepHookFactory = without_loras,
        mode: ControlNetMode = ControlNetMode.SYNCHRONOUS,
        limits: Limits = Limits(),
        controlnet_names: Collection[str] | None = None,
        metrics: RuntimeMetrics | None = None,
    ) -> None:
        self.model = model
        self.residual_source = residual_source
        self.predictor = predictor or BatchedCfg(model.unet)
        self.step_hooks = step_hooks
        self.mode = mode
        self.limits = limits
        self.controlnet_names = controlnet_names
        self.metrics = metrics or RuntimeMetrics("base")
        self._worker = threading.Lock()

    def generate(
        self,
        params: GenerateParams,
        *,
        is_cancelled: Callable[[], bool] = lambda: False,
        deadline: float | None = None,
        decode: bool = True,
    ) -> GenerateResult:
        """Run one request; `deadline` is a `time.monotonic()` value."""
        validate(params, self.limits, self.controlnet_names)
        hook = self.step_hooks(params.loras, self.model.unet, params.steps)
        timings: dict[str, float] = {}
        try:
            with self._turn(deadline, timings):
                latents = self._denoise(params, hook, is_cancelled, deadline, timings)
        finally:
            hook.close()
        image = None
        if decode:
            with _phase(timings, "vae_decode"):
                image = self.model.decode(latents)
        return GenerateResult(latents, image, timings)

    def warm_up(self, guidance_scale: float, size: int = WARM_UP_SIZE) -> None:
        """One denoising step and a decode at `size` px, outside the queue and the metrics,
        run before the server reports SERVING: a fresh process's first calls (kernel and
        allocator set-up, lazily loaded code) would otherwise slow its first request, and
        they belong to the start the autoscaler already waits for."""
        model = self.model
        text = model.encode_text("", None, guidance_scale, size, size)
        start = model.start(1, size, size, 0, text.prompt_embeds.dtype)
        hook = self.step_hooks((), model.unet, 1)  # the deployment's own (latent parallelism needs its hooks)
        try:
            with self._worker:
                latents = denoise(LoopInputs(start.latents, start.timesteps, text, start.scheduler, start.step_kwargs),
                                  self.predictor, hook)
        finally:
            hook.close()
        model.decode(latents)

    @contextmanager
    def _turn(self, deadline: float | None, timings: dict[str, float]) -> Iterator[None]:
        started = time.perf_counter()
        self.metrics.queue_depth.inc()
        try:
            timeout = -1 if deadline is None else max(0.0, deadline - time.monotonic())
            acquired = self._worker.acquire(timeout=timeout)
        finally:
            self.metrics.queue_depth.dec()
        if not acquired:
            raise DeadlineExceeded("deadline passed while queued for the denoising worker")
        timings["queue"] = time.perf_counter() - started
        try:
            yield
        finally:
            self._worker.release()

    def _denoise(
        self,
        params: GenerateParams,
        hook: StepHook,
        is_cancelled: Callable[[], bool],
        deadline: float | None,
        timings: dict[str, float],
    ) -> torch.Tensor:
        model = self.model
        hook.before_encode()
        with _phase(timings, "text_encode"):
            text = model.encode_text(params.prompt, params.negative_prompt, params.guidance_scale, params.width, params.height)
        start = model.start(params.steps, params.width, params.height, params.seed, text.prompt_embeds.dtype)
        session: ResidualSession | None = None
        try:
            if params.controlnets:
                with _phase(timings, "controlnet_open"):
                    session = self._open(ResidualRequest(params.controlnets, params.width, params.height, text), deadline)
            loop = LoopTimings()
            with _phase(timings, "denoise"):
                latents = denoise(
                    LoopInputs(start.latents, start.timesteps, text, start.scheduler, start.step_kwargs),
                    self.predictor,
                    hook,
                    session,
                    self.mode,
                    is_cancelled,
                    deadline,
                    loop,
                )
        finally:
            if session is not None:
                session.close()
        for seconds in loop.step_seconds:
            self.metrics.step_seconds.observe(seconds)
        timings["residual_wait"] = loop.residual_wait_seconds
        if params.controlnets:
            self.metrics.residual_wait_seconds.observe(loop.residual_wait_seconds)
        return latents

    def _open(self, request: ResidualRequest, deadline: float | None) -> ResidualSession:
        if self.residual_source is None:
            raise Unavailable("this base server has no ControlNet service configured")
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        return self.residual_source.open(request, timeout)


@contextmanager
def _phase(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = time.perf_counter() - started
