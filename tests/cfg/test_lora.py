"""With LoRAs, both workers merge at the step the leader decides and both restore exactly."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from swiftdiffusion.runtime.lora.bal import BalHookFactory
from swiftdiffusion.runtime.lora.formats import bind_lora
from swiftdiffusion.runtime.lora.merge import WeightPatch
from swiftdiffusion.runtime.lora.store import LoraEntry, LoraStore
from swiftdiffusion.runtime.pipeline.engine import BaseEngine
from swiftdiffusion.runtime.pipeline.step_hooks import LoraUse, StepHookFactory, without_loras
from tests.cfg.branches import SequentialCfg
from tests.cfg.fixtures import Replica, split_engine
from tests.runtime.helpers import params_with

ATOL = 1e-4


class MergeAtStep:
    """A leader hook that merges the request's one LoRA before a fixed step (BAL's merge,
    with the step pinned so the test knows it) and reports it like BAL's BalHook."""

    def __init__(self, unet: torch.nn.Module, entry: LoraEntry, step: int) -> None:
        self._deltas = bind_lora(Path(entry.source).read_bytes(), {"unet": unet})
        self._scale, self._step = entry.scale, step
        self._patch = WeightPatch()
        self.merged_mask = 0

    def before_encode(self) -> None:
        """A UNet-only LoRA: nothing to merge before the prompt is encoded."""

    def before_step(self, step_index: int) -> None:
        if step_index == self._step:
            self._patch.merge(self._deltas, self._scale)
            self.merged_mask = 1

    def close(self) -> None:
        self._patch.restore()


def merge_at(entry: LoraEntry, step: int) -> StepHookFactory:
    return lambda loras, unet, steps: MergeAtStep(unet, entry, step) if loras else without_loras(loras, unet, steps)


def one_process(model, hooks: StepHookFactory) -> BaseEngine:
    """Both branches in this process, each as a batch of one: the two workers' arithmetic."""
    return BaseEngine(model, predictor=SequentialCfg(model.unet), step_hooks=hooks)


def weights(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in unet.state_dict().items()}


def test_follower_merges_the_lora_at_the_step_the_leader_merged_it(
    tiny_base_model, cfg_replica: Replica, cfg_lora: LoraEntry
) -> None:
    params = params_with(0, steps=4)
    with_lora = params.__class__(**{**params.__dict__, "loras": (LoraUse(cfg_lora.name),)})
    plain = split_engine(tiny_base_model, cfg_replica, without_loras).generate(params, decode=False).latents
    results = {}
    for step in (0, 2):
        ours = split_engine(tiny_base_model, cfg_replica, merge_at(cfg_lora, step)).generate(with_lora, decode=False).latents
        alone = one_process(tiny_base_model, merge_at(cfg_lora, step)).generate(with_lora, decode=False).latents
        assert torch.equal(ours, alone)  # a follower merging one step early or late would differ
        results[step] = ours
    assert (results[0] - results[2]).abs().max() > 1e-3 and (results[2] - plain).abs().max() > 1e-3
    after = split_engine(tiny_base_model, cfg_replica, without_loras).generate(params, decode=False).latents
    assert torch.equal(after, plain)  # both workers restored their base weights exactly


def test_two_workers_with_bal_match_one_worker_with_bal(tiny_base_model, cfg_replica: Replica, cfg_lora: LoraEntry) -> None:
    pipeline = tiny_base_model.pipeline
    text_encoders = {"text_encoder": pipeline.text_encoder, "text_encoder_2": pipeline.text_encoder_2}

    def bal() -> BalHookFactory:  # K = 0: merged before step 0, whenever the load finishes
        return BalHookFactory(LoraStore([cfg_lora]), text_encoders, default_k=0)

    original = weights(tiny_base_model.unet)
    params = params_with(0, steps=3)
    with_lora = params.__class__(**{**params.__dict__, "loras": (LoraUse(cfg_lora.name),)})
    ours = split_engine(tiny_base_model, cfg_replica, bal()).generate(with_lora, decode=False).latents
    batched = BaseEngine(tiny_base_model, step_hooks=bal()).generate(with_lora, decode=False).latents
    alone = one_process(tiny_base_model, bal()).generate(with_lora, decode=False).latents
    assert torch.equal(ours, alone)
    np.testing.assert_allclose(ours.numpy(), batched.numpy(), rtol=0, atol=ATOL)
    assert all(torch.equal(tensor, original[name]) for name, tensor in tiny_base_model.unet.state_dict().items())
