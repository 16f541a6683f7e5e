"""The leader's side of latent parallelism, plugged into the base engine's three seams.

`LatentParallel` hands the engine a noise predictor, a step-hook factory and a residual
source, so a base engine switches to two workers without a change of its own:

- `predictor`: computes the conditional branch here while the follower computes the
  unconditional one from the same latent, then combines them (diffusers' CFG formula);
- `step_hooks(factory)`: wraps each request's own hook (BAL). The wrapper is the
  request's state on the leader: it opens the follower's side of the request at step 0,
  tells the follower which LoRAs were merged before each step, and ends the request on
  the follower when the loop closes the hook;
- `residual_source(source)`: the leader's ControlNet session asks only for the
  conditional branch's residuals; the unconditional branch's request goes to the
  follower, which opens its own session with the ControlNet service.

LoRA merge steps: BAL merges a LoRA "as soon as it is loaded, at the latest at step K",
and "loaded" happens at different moments in two processes. So only the leader decides:
its hook merges when its own rule says so and reports the LoRAs it merged (`merged_mask`);
that mask rides on the step command with the latent, and the follower merges exactly
those LoRAs before computing that step, blocking until its own copy is loaded. Both
replicas run every step with the same weights and restore theirs when the request ends.

The engine runs one request at a time on its denoising thread, in this order: hook
built, residual session opened, `before_step(0)`, `predict` ..., `close`. The request
state moves along that order: `open` leaves the follower's residual request with the
leader, `before_step(0)` makes the hook the current request, `predict` at step 0 starts
the follower's side.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Protocol, runtime_checkable

import torch

from swiftdiffusion.runtime.cfg.exchange import StepLayout, WorkerLost
from swiftdiffusion.runtime.cfg.pair import PairSession, WorkerPair
from swiftdiffusion.runtime.cfg.worker import COND, UNCOND, BranchRequest, WorkerSpec
from swiftdiffusion.runtime.config import ControlNetMode
from swiftdiffusion.runtime.pipeline.conditioning import TextConditioning
from swiftdiffusion.runtime.pipeline.guidance import AwaitResiduals, BatchedCfg, combine_cfg
from swiftdiffusion.runtime.pipeline.step_hooks import LoraUse, StepHook, StepHookFactory
from swiftdiffusion.runtime.pipeline.unet_split import predict_noise
from swiftdiffusion.runtime.transport.residual_source import ResidualRequest, ResidualSession, ResidualSource


@runtime_checkable
class ReportsMerges(Protocol):
    """A step hook that says which of the request's LoRAs it has merged so far (BAL's BalHook)."""

    @property
    def merged_mask(self) -> int:
        """Bit i set once LoRA i of the request is merged."""
        ...


class SplitRequest:
    """One request's leader-side state; it is the StepHook the engine's loop drives."""

    def __init__(
        self, parent: LatentParallel, inner: StepHook, loras: Sequence[LoraUse], steps: int, mode: ControlNetMode
    ) -> None:
        self._parent, self._inner, self.loras = parent, inner, tuple(loras)
        self.steps, self.mode = steps, mode
        self.index, self.merges = 0, 0
        self._told = 0  # LoRAs the follower has been told to merge
        self.residuals: tuple[ResidualRequest, float | None] | None = None
        self.session: PairSession | None = None
        self._stack = ExitStack()
        self._closed = False

    def before_step(self, step_index: int) -> None:
        if step_index == 0:
            self.residuals, self._parent.pending_residuals = self._parent.pending_residuals, None
            self._parent.current = self
        self._inner.before_step(step_index)
        merged = self._inner.merged_mask if isinstance(self._inner, ReportsMerges) else 0
        self.index, self.merges = step_index, merged & ~self._told  # includes merges made in before_encode
        self._told = merged

    def before_encode(self) -> None:
        """BAL merges LoRAs with text-encoder parts here; the follower learns of them at step 0."""
        self._inner.before_encode()

    def open_session(self, text: TextConditioning, model_input: torch.Tensor, timestep: torch.Tensor) -> PairSession:
        """Start the follower's side of this request (at step 0, when shapes are known)."""
        if self.session is None:
            layout = StepLayout(tuple(model_input.shape), model_input.dtype, timestep.dtype)
            residuals, timeout = self.residuals if self.residuals is not None else (None, None)
            request = BranchRequest(
                text.branch(UNCOND).to("cpu"), layout, residuals, self.loras or None, timeout, self.mode, self.steps
            )
            self.session = self._stack.enter_context(self._parent.pair.session(request))
        return self.session

    def close(self) -> None:
        """End the follower's side (it restores its weights), then the leader's own hook. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._parent.current is self:
            self._parent.current = None
        self._parent.pending_residuals = None
        try:
            self._stack.close()
        finally:
            self._inner.close()


class SplitCfg:
    """NoisePredictor: conditional branch on this worker, unconditional on the follower."""

    def __init__(self, parent: LatentParallel) -> None:
        self._parent = parent
        self._single = BatchedCfg(parent.unet)

    @torch.no_grad()
    def predict(
        self,
        model_input: torch.Tensor,
        timestep: torch.Tensor,
        text: TextConditioning,
        residuals: AwaitResiduals | None,
    ) -> torch.Tensor:
        if not text.uses_cfg:
            return self._single.predict(model_input, timestep, text, residuals)
        request = self._parent.current
        if request is None:
            raise RuntimeError("latent parallelism needs the hooks from LatentParallel.step_hooks")
        session = request.open_session(text, model_input, timestep)
        session.dispatch(request.index, timestep, model_input, request.merges)
        unet = self._parent.unet
        cond = predict_noise(unet, model_input, timestep, text.branch(COND), residuals)
        uncond = session.collect().to(cond.device)
        return combine_cfg(uncond, cond, text.guidance_scale)

    def close(self) -> None:
        """Nothing per predictor: the follower belongs to LatentParallel."""


class BranchResidualSource:
    """The leader's residual source: conditional branch here, unconditional to the follower."""

    def __init__(self, parent: LatentParallel, inner: ResidualSource) -> None:
        self._parent, self._inner = parent, inner

    def open(self, request: ResidualRequest, timeout: float | None = None) -> ResidualSession:
        if not request.text.uses_cfg:
            return self._inner.open(request, timeout)
        uncond = dataclasses.replace(request, text=request.text.branch(UNCOND).to("cpu"))
        self._parent.pending_residuals = (uncond, timeout)
        return self._inner.open(dataclasses.replace(request, text=request.text.branch(COND)), timeout)


class LatentParallel:
    """A base replica's two CFG workers: this process (leader) and one follower process."""

    def __init__(
        self, unet: torch.nn.Module, spec: WorkerSpec, on_health: Callable[[bool], None] = lambda serving: None
    ) -> None:
        self.unet = unet
        self.pair = WorkerPair(spec, on_health)
        self.predictor = SplitCfg(self)
        self.current: SplitRequest | None = None
        self.pending_residuals: tuple[ResidualRequest, float | None] | None = None

    def start(self) -> None:
        self.pair.start()

    def close(self) -> None:
        self.pair.close()

    @property
    def healthy(self) -> bool:
        return self.pair.healthy

    def step_hooks(self, inner: StepHookFactory, mode: ControlNetMode = ControlNetMode.SYNCHRONOUS) -> StepHookFactory:
        """`mode` must be the engine's ControlNet mode: the follower schedules its residuals alike."""

        def build(loras: Sequence[LoraUse], unet: torch.nn.Module, steps: int) -> StepHook:
            if not self.pair.healthy:
                raise WorkerLost("latent-parallel replica is recovering its second worker")
            return SplitRequest(self, inner(loras, unet, steps), loras, steps, mode)

        return build

    def residual_source(self, inner: ResidualSource) -> ResidualSource:
        return BranchResidualSource(self, inner)
