"""Two CFG workers reproduce one worker's batched CFG and diffusers' pipelines."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from swiftdiffusion.runtime.cfg import ModelRef, WorkerSpec
from swiftdiffusion.runtime.config import ControlNetMode
from swiftdiffusion.runtime.pipeline.engine import BaseEngine
from swiftdiffusion.runtime.transport.inprocess import InProcessResidualSource
from tests.cfg.branches import SequentialCfg
from tests.cfg.fixtures import Replica, split_engine, start_replica
from tests.runtime.helpers import diffusers_reference, params_with

# Batch 2 and two batches of 1 round differently (~1e-5 here, ~1e-6 relative): float tolerance.
ATOL = 1e-4


def test_two_workers_match_batched_cfg_and_diffusers(tiny_model_set: Path, tiny_base_model, cfg_replica: Replica) -> None:
    params = params_with(0, steps=4)
    ours = split_engine(tiny_base_model, cfg_replica).generate(params, decode=False).latents
    batched = BaseEngine(tiny_base_model).generate(params, decode=False).latents
    np.testing.assert_allclose(ours.numpy(), batched.numpy(), rtol=0, atol=ATOL)
    np.testing.assert_allclose(ours.numpy(), diffusers_reference(tiny_model_set, params), rtol=0, atol=ATOL)
    assert cfg_replica.parallel.healthy


def test_two_workers_equal_both_branches_computed_apart_in_one_process(tiny_base_model, cfg_replica: Replica) -> None:
    params = params_with(0, steps=3)
    ours = split_engine(tiny_base_model, cfg_replica).generate(params, decode=False).latents
    alone = BaseEngine(tiny_base_model, predictor=SequentialCfg(tiny_base_model.unet)).generate(params, decode=False)
    assert torch.equal(ours, alone.latents)


def test_each_worker_gets_its_own_branch_residuals_and_matches_diffusers_with_two_controlnets(
    tiny_model_set: Path, tiny_base_model, tiny_controlnet_engine, cfg_replica: Replica
) -> None:
    params = params_with(2, steps=3)
    engine = split_engine(tiny_base_model, cfg_replica, controlnets=tiny_controlnet_engine)
    ours = engine.generate(params, decode=False).latents
    source = InProcessResidualSource(tiny_controlnet_engine)
    batched = BaseEngine(tiny_base_model, source).generate(params, decode=False).latents
    np.testing.assert_allclose(ours.numpy(), batched.numpy(), rtol=0, atol=ATOL)
    np.testing.assert_allclose(ours.numpy(), diffusers_reference(tiny_model_set, params), rtol=0, atol=ATOL)


def test_pipelined_controlnet_mode_is_followed_by_both_workers(
    tiny_base_model, tiny_controlnet_engine, cfg_replica: Replica
) -> None:
    params = params_with(1, steps=4)
    pipelined = ControlNetMode.PIPELINED
    ours = split_engine(tiny_base_model, cfg_replica, controlnets=tiny_controlnet_engine, mode=pipelined)
    source = InProcessResidualSource(tiny_controlnet_engine)
    batched = BaseEngine(tiny_base_model, source, mode=pipelined).generate(params, decode=False).latents
    synchronous = BaseEngine(tiny_base_model, source).generate(params, decode=False).latents
    latents = ours.generate(params, decode=False).latents
    np.testing.assert_allclose(latents.numpy(), batched.numpy(), rtol=0, atol=ATOL)
    assert (latents - synchronous).abs().max() > 10 * ATOL  # the mode matters, so the check has teeth


def test_request_without_guidance_runs_on_the_leader_alone(tiny_base_model, cfg_replica: Replica) -> None:
    params = params_with(0, steps=2, guidance=1.0)
    ours = split_engine(tiny_base_model, cfg_replica).generate(params, decode=False).latents
    assert torch.equal(ours, BaseEngine(tiny_base_model).generate(params, decode=False).latents)


@pytest.mark.slow
def test_torch_distributed_exchange_gives_the_same_latents_as_the_socket_pair(
    tiny_model_set: Path, tiny_base_model, cfg_replica: Replica
) -> None:
    params = params_with(0, steps=3)
    over_pipe = split_engine(tiny_base_model, cfg_replica).generate(params, decode=False).latents
    gloo = start_replica(tiny_base_model, WorkerSpec(ModelRef(str(tiny_model_set / "base")), exchange="torch"))
    try:
        over_gloo = split_engine(tiny_base_model, gloo).generate(params, decode=False).latents
    finally:
        gloo.parallel.close()
    assert torch.equal(over_pipe, over_gloo)
