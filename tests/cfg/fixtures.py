"""Latent-parallel fixtures: a leader on the tiny base model with its follower process."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from swiftdiffusion.runtime.cfg import LatentParallel, ModelRef, WorkerSpec
from swiftdiffusion.runtime.cfg.plugins import LocalControlNets, LoraFollowers
from swiftdiffusion.runtime.config import ControlNetMode
from swiftdiffusion.runtime.lora.store import LoraEntry
from swiftdiffusion.runtime.pipeline.engine import BaseEngine
from swiftdiffusion.runtime.pipeline.step_hooks import StepHookFactory, without_loras
from swiftdiffusion.runtime.transport.inprocess import InProcessResidualSource


@dataclass
class Replica:
    """A started LatentParallel and every health change it reported."""

    parallel: LatentParallel
    health: list[bool] = field(default_factory=list)


def split_engine(
    model,
    replica: Replica,
    step_hooks: StepHookFactory = without_loras,
    controlnets=None,
    mode: ControlNetMode = ControlNetMode.SYNCHRONOUS,
) -> BaseEngine:
    """A base engine whose CFG runs on the replica's two workers (the engine's three seams)."""
    parallel = replica.parallel
    source = None if controlnets is None else parallel.residual_source(InProcessResidualSource(controlnets))
    hooks = parallel.step_hooks(step_hooks, mode)
    return BaseEngine(model, source, predictor=parallel.predictor, step_hooks=hooks, mode=mode)


def start_replica(model, spec: WorkerSpec) -> Replica:
    health: list[bool] = []
    parallel = LatentParallel(model.unet, spec, health.append)
    parallel.start()
    return Replica(parallel, health)


@pytest.fixture(scope="session")
def cfg_lora(tmp_path_factory: pytest.TempPathFactory, tiny_base_model) -> LoraEntry:
    """A random UNet LoRA for the tiny base model."""
    from swiftdiffusion.runtime.dev.synthetic_lora import write_random_lora

    path = tmp_path_factory.mktemp("cfg-loras") / "ink.safetensors"
    write_random_lora(path, {"unet": tiny_base_model.unet}, rank=4, seed=11, strength=0.3)
    return LoraEntry("ink", str(path), scale=0.9)


@pytest.fixture(scope="session")
def cfg_replica(tiny_model_set: Path, tiny_base_model, cfg_lora: LoraEntry) -> Iterator[Replica]:
    """Two workers over the socket-pair exchange, with ControlNets and LoRAs on the follower."""
    base = ModelRef(str(tiny_model_set / "base"))
    spec = WorkerSpec(
        base,
        residual_source=LocalControlNets(str(tiny_model_set / "controlnets")),
        merge_follower=LoraFollowers(base, [cfg_lora]),
    )
    replica = start_replica(tiny_base_model, spec)
    yield replica
    replica.parallel.close()
