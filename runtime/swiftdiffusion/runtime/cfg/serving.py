"""`serve-base` with `base.latentParallelism: true`: the pod's second CFG worker.

The pod gets two devices (two GPUs; on CPU, the pod's cores split in two). This process
keeps the first and serves gRPC as the leader; the follower process gets the second,
its own replica of the base UNet, its own ControlNet client (the same ControlNet service,
asked for the unconditional branch only) and its own LoRA loader over the same store.
The follower's state drives the pod's gRPC health: NOT_SERVING while it is being
restarted, so readiness probes take the pod out of its Service meanwhile.
"""
from __future__ import annotations

import os
from collections.abc import Callable

import torch
from grpc_health.v1 import health_pb2
from grpc_health.v1.health import HealthServicer

from swiftdiffusion.runtime.cfg.leader import LatentParallel
from swiftdiffusion.runtime.cfg.plugins import LoraFollowers
from swiftdiffusion.runtime.cfg.worker import ModelRef, WorkerSpec
from swiftdiffusion.runtime.config import ControlNetMode, RuntimeConfig
from swiftdiffusion.runtime.pipeline.base_model import BaseModel
from swiftdiffusion.runtime.pipeline.guidance import NoisePredictor
from swiftdiffusion.runtime.pipeline.step_hooks import StepHookFactory
from swiftdiffusion.runtime.transport.residual_source import ResidualSource


class ConfiguredControlNets:
    """The follower's residual source, built from the pod's config exactly as the leader's is."""

    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config

    def __call__(self, device: torch.device, dtype: torch.dtype) -> ResidualSource:
        from swiftdiffusion.runtime.serving.metrics import RuntimeMetrics
        from swiftdiffusion.runtime.serving.residual_sources import residual_source_for

        source = residual_source_for(self.config, device, dtype, RuntimeMetrics("base"))
        if source is None:
            raise RuntimeError("no ControlNet service or ControlNets configured")
        return source


def follower_spec(config: RuntimeConfig, model: BaseModel) -> WorkerSpec:
    """The second worker's device: `cuda:1` beside the leader's `cuda:0`, or on CPU the second
    half of the pod's cores (the leader keeps the first half: `split_cores`, called after)."""
    from swiftdiffusion.runtime.lora.service import lora_entries
    from swiftdiffusion.runtime.serving.model_store import resolve

    base = config.require_base()
    ref = ModelRef(resolve(base.model, config.model_store, base.revision), base.revision, config.model_store)
    entries = lora_entries(config)
    on_gpu = model.device.type == "cuda"
    cores = None if on_gpu else _halves(config)[1]
    return WorkerSpec(
        ref,
        device="cuda:1" if on_gpu else "cpu",
        dtype=base.dtype,
        cores=cores,
        threads=len(cores) if cores else (config.torch_threads or torch.get_num_threads()),
        exchange="torch" if on_gpu else "pipe",
        residual_source=ConfiguredControlNets(config) if base.controlnet_service or config.controlnets else None,
        merge_follower=LoraFollowers(ref, entries, config.model_store),
    )


def split_cores(config: RuntimeConfig) -> None:
    """On CPU, keep the first half of the pod's cores for the leader (the follower takes the rest)."""
    leader, _ = _halves(config)
    os.sched_setaffinity(0, set(leader))
    torch.set_num_threads(len(leader))


def _halves(config: RuntimeConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
    cores = tuple(sorted(config.cpu_affinity or os.sched_getaffinity(0)))
    if len(cores) < 2:
        raise ValueError("latentParallelism on CPU needs at least two cores (one per CFG worker)")
    middle = len(cores) // 2
    return cores[:middle], cores[middle:]


def grpc_health_reporter(health: HealthServicer) -> Callable[[bool], None]:
    """The pod's gRPC health (service "") follows the worker pair's health."""
    statuses = {True: health_pb2.HealthCheckResponse.SERVING, False: health_pb2.HealthCheckResponse.NOT_SERVING}
    return lambda serving: health.set("", statuses[serving])


def latent_parallel_parts(
    config: RuntimeConfig,
    model: BaseModel,
    residual_source: ResidualSource | None,
    step_hooks: StepHookFactory,
    health: HealthServicer,
) -> tuple[ResidualSource | None, StepHookFactory, NoisePredictor]:
    """Start the follower; return the engine's residual source, hook factory and predictor."""
    if model.device.type == "cuda" and torch.cuda.device_count() < 2:
        raise RuntimeError("latentParallelism needs two GPUs in the pod")
    spec = follower_spec(config, model)
    if model.device.type != "cuda":
        split_cores(config)
    parallel = LatentParallel(model.unet, spec, grpc_health_reporter(health))
    parallel.start()
    source = None if residual_source is None else parallel.residual_source(residual_source)
    mode = ControlNetMode(config.require_base().controlnet_mode)
    return source, parallel.step_hooks(step_hooks, mode), parallel.predictor
