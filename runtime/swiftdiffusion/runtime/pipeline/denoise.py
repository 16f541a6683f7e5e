"""The denoising loop: diffusers' SDXL loop with its ControlNet call, CFG and LoRA merge behind seams.

Per step: the hook runs (LoRA merge / BAL wait), the latent is scaled, the ControlNet
residuals for it are requested from the residual session (on the `ResidualSchedule`:
synchronous or pipelined), and the noise predictor runs the UNet encoder while they are
computed, then awaits them for the decoder.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import torch

from swiftdiffusion.runtime.config import ControlNetMode
from swiftdiffusion.runtime.controlnet.residuals import Residuals
from swiftdiffusion.runtime.errors import Cancelled, DeadlineExceeded
from swiftdiffusion.runtime.pipeline.conditioning import TextConditioning
from swiftdiffusion.runtime.pipeline.guidance import NoisePredictor
from swiftdiffusion.runtime.pipeline.residual_schedule import ResidualSchedule
from swiftdiffusion.runtime.pipeline.step_hooks import StepHook
from swiftdiffusion.runtime.transport.residual_source import ResidualSession


@dataclass
class LoopTimings:
    """Wall time of each step and the time spent blocked on residuals."""

    step_seconds: list[float] = field(default_factory=list)
    residual_wait_seconds: float = 0.0


@dataclass(frozen=True)
class LoopInputs:
    latents: torch.Tensor
    timesteps: torch.Tensor
    text: TextConditioning
    scheduler: Any
    step_kwargs: dict[str, Any]


def denoise(
    inputs: LoopInputs,
    predictor: NoisePredictor,
    hook: StepHook,
    session: ResidualSession | None = None,
    mode: ControlNetMode = ControlNetMode.SYNCHRONOUS,
    is_cancelled: Callable[[], bool] = lambda: False,
    deadline: float | None = None,
    timings: LoopTimings | None = None,
) -> torch.Tensor:
    """Run every step and return the final latents.

    `deadline` is a `time.monotonic()` value bounding waits for residuals. The caller owns
    `hook` and closes it in a `finally` (see `BaseEngine.generate`).
    """
    timings = timings if timings is not None else LoopTimings()
    latents, scheduler, steps = inputs.latents, inputs.scheduler, len(inputs.timesteps)
    schedule = None if session is None else ResidualSchedule(session, mode, steps)
    for index, timestep in enumerate(inputs.timesteps):
        started = time.perf_counter()
        if is_cancelled():
            raise Cancelled(f"cancelled before step {index}")
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlineExceeded(f"deadline passed before step {index}")
        hook.before_step(index)
        model_input = scheduler.scale_model_input(latents, timestep)
        awaited = None
        if schedule is not None:
            awaited = _waiter(schedule.for_step(index, model_input, timestep), deadline, timings)
        noise = predictor.predict(model_input, timestep, inputs.text, awaited)
        latents = scheduler.step(noise, timestep, latents, **inputs.step_kwargs, return_dict=False)[0]
        timings.step_seconds.append(time.perf_counter() - started)
    return latents


def _waiter(future: Future[Residuals], deadline: float | None, timings: LoopTimings) -> Callable[[], Residuals]:
    def wait() -> Residuals:
        started = time.perf_counter()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            raise DeadlineExceeded("ControlNet residuals did not arrive before the deadline") from None
        finally:
            timings.residual_wait_seconds += time.perf_counter() - started

    return wait
