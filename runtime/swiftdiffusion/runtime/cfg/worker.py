"""The follower worker: a process with its own UNet replica that computes the
unconditional CFG branch for each step the leader sends it.

It receives a request's set-up on its control connection, then serves steps over the
branch exchange until the leader ends the request (or its branch fails), restores its
weights, and reports idle. Its ControlNet residuals come from its own residual session
(the ControlNet service, for the unconditional branch only); LoRA merges happen exactly
at the steps the leader names.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

import torch

from swiftdiffusion.runtime.cfg.exchange import BranchExchange, BranchReply, StepLayout
from swiftdiffusion.runtime.config import ControlNetMode
from swiftdiffusion.runtime.pipeline.conditioning import TextConditioning
from swiftdiffusion.runtime.pipeline.residual_schedule import ResidualSchedule
from swiftdiffusion.runtime.pipeline.unet_split import predict_noise
from swiftdiffusion.runtime.transport.residual_source import ResidualRequest, ResidualSource

UNCOND, COND = 0, 1  # diffusers' CFG batch order; the follower computes UNCOND


class MergeFollower(Protocol):
    """Follower side of BAL: merge exactly the LoRAs the leader merged, at the same step."""

    def merge(self, mask: int) -> None: ...  # blocks until those LoRAs are loaded, then merges
    def close(self) -> None: ...  # restores the base weights exactly


MergeFollowerFactory = Callable[[Any, torch.nn.Module], MergeFollower]


@dataclass(frozen=True)
class ModelRef:
    """The base model as `from_pretrained` takes it: a pipeline folder or a model id."""

    model: str
    revision: str | None = None
    cache_dir: str | None = None

    def load(self, component: type, subfolder: str, dtype: torch.dtype | None = None) -> torch.nn.Module:
        typed = {} if dtype is None else {"dtype": dtype}
        return component.from_pretrained(
            self.model, subfolder=subfolder, revision=self.revision, cache_dir=self.cache_dir, **typed
        )


@dataclass(frozen=True)
class WorkerSpec:
    """How to start the follower: which model, where, on which cores, over which exchange.
    The factories must be picklable (module-level callables): they travel to the process."""

    model: ModelRef
    device: str = "cpu"
    dtype: str = "float32"
    cores: tuple[int, ...] | None = None  # CPU affinity (one core per worker on CPU)
    threads: int = 1
    exchange: str = "pipe"  # pipe | torch
    residual_source: Callable[[torch.device, torch.dtype], ResidualSource] | None = None
    merge_follower: MergeFollowerFactory | None = None


@dataclass(frozen=True)
class BranchRequest:
    """One request's set-up for the follower's branch; per-step data goes over the exchange."""

    text: TextConditioning  # the unconditional branch, batch of one
    layout: StepLayout
    residuals: ResidualRequest | None = None  # opened by the follower, for its branch
    loras: Any = None  # handed to WorkerSpec.merge_follower
    timeout_s: float | None = None
    mode: ControlNetMode = ControlNetMode.SYNCHRONOUS  # the leader loop's, which this branch must follow
    steps: int = 0


def pin(cores: tuple[int, ...] | None, threads: int) -> None:
    """Give this process its own cores: on CPU a core plays the role of one GPU."""
    if cores is not None:
        os.sched_setaffinity(0, set(cores))
    torch.set_num_threads(threads)


def load_unet(spec: WorkerSpec) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    unet = spec.model.load(UNet2DConditionModel, "unet", getattr(torch, spec.dtype))
    return unet.to(spec.device).eval().requires_grad_(False)


class FollowerRuntime:
    """What the follower keeps between requests: its UNet, residual source and factories."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.device = torch.device(spec.device)
        self.unet = load_unet(spec)
        self.dtype = self.unet.dtype
        self.source = None if spec.residual_source is None else spec.residual_source(self.device, self.dtype)
        self.merge_follower = spec.merge_follower

    def serve(self, request: BranchRequest, exchange: BranchExchange) -> str | None:
        """Serve one request's steps; None when the leader ended it, else why the branch failed."""
        text = request.text.to(self.device, self.dtype)
        exchange.prepare(request.layout)
        follower: MergeFollower | None = None
        residuals: ResidualSchedule | None = None
        try:
            try:
                if request.loras is not None:
                    if self.merge_follower is None:
                        raise RuntimeError("this worker has no LoRA loader")
                    follower = self.merge_follower(request.loras, self.unet)
                if request.residuals is not None:
                    if self.source is None:
                        raise RuntimeError("this worker has no ControlNet residual source")
                    session = self.source.open(request.residuals, request.timeout_s)
                    residuals = ResidualSchedule(session, request.mode, request.steps)
            except Exception as error:  # set-up failed: fail the first step, keep the protocol in step
                return _fail_next_step(exchange, error)
            while not (command := exchange.recv_step()).is_end:
                assert command.latent is not None and command.timestep is not None
                try:
                    if command.merges and follower is not None:
                        follower.merge(command.merges)
                    future = None if residuals is None else residuals.for_step(command.index, command.latent, command.timestep)
                    prediction = predict_noise(
                        self.unet, command.latent, command.timestep, text, None if future is None else future.result
                    )
                except Exception as error:  # the branch failed: tell the leader, never guess
                    exchange.send_reply(BranchReply(None))
                    return f"{type(error).__name__}: {error}"
                exchange.send_reply(BranchReply(prediction))
            return None
        finally:
            if residuals is not None:
                residuals.session.close()
            if follower is not None:
                follower.close()


def _fail_next_step(exchange: BranchExchange, error: Exception) -> str:
    """A set-up failure surfaces as the first step's failed reply (or not at all if none came)."""
    if not exchange.recv_step().is_end:
        exchange.send_reply(BranchReply(None))
    return f"{type(error).__name__}: {error}"


def follower_main(spec: WorkerSpec, control: Connection, endpoint: Any) -> None:
    """Process entry point of the follower (rank 1, unconditional branch)."""
    pin(spec.cores, spec.threads)
    if torch.device(spec.device).type == "cuda":
        torch.cuda.set_device(torch.device(spec.device))  # NCCL binds the rank to the current device
    runtime = FollowerRuntime(spec)
    control.send(("ready", os.getpid()))
    exchange = open_follower_exchange(spec, endpoint)
    while True:
        try:
            message = control.recv()
        except EOFError:  # the leader is gone: nothing left to serve
            return
        if message is None:
            exchange.close()
            return
        control.send(("idle", runtime.serve(message, exchange)))


def open_follower_exchange(spec: WorkerSpec, endpoint: Any) -> BranchExchange:
    device = torch.device(spec.device)
    if spec.exchange == "pipe":
        from swiftdiffusion.runtime.cfg.pipe_exchange import PipeExchange

        return PipeExchange(endpoint, device)
    from swiftdiffusion.runtime.cfg.dist_exchange import FOLLOWER, TorchDistributedExchange, follower_store

    host, port = endpoint
    return TorchDistributedExchange(follower_store(host, port), FOLLOWER, device)
