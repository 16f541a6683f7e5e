"""A lost or failing follower fails the request cleanly; the replica reports it and recovers."""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from swiftdiffusion.runtime.cfg import BranchFailed, ModelRef, WorkerLost, WorkerSpec
from swiftdiffusion.runtime.cfg.plugins import LocalControlNets
from swiftdiffusion.runtime.errors import Unavailable
from swiftdiffusion.runtime.pipeline.engine import BaseEngine
from tests.cfg.branches import SequentialCfg
from tests.cfg.fixtures import Replica, split_engine, start_replica
from tests.runtime.helpers import params_with


class KillFollowerAt:
    """A leader step hook that SIGKILLs the follower process before a given step."""

    def __init__(self, replica: Replica, step: int) -> None:
        self.replica, self.step = replica, step

    def before_encode(self) -> None:
        """No LoRA to merge."""

    def before_step(self, step_index: int) -> None:
        if step_index == self.step:
            pid = self.replica.parallel.pair.follower_pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)

    def close(self) -> None:
        """Nothing to restore."""


@pytest.fixture(scope="module")
def fragile_replica(tiny_model_set: Path, tiny_base_model, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    """A replica whose follower knows no ControlNets (an empty folder): its branch fails."""
    empty = tmp_path_factory.mktemp("no-controlnets")
    spec = WorkerSpec(ModelRef(str(tiny_model_set / "base")), residual_source=LocalControlNets(str(empty)))
    replica = start_replica(tiny_base_model, spec)
    yield replica
    replica.parallel.close()


def test_killed_follower_fails_the_request_marks_unhealthy_and_recovers(tiny_base_model, fragile_replica: Replica) -> None:
    params = params_with(0, steps=4)
    before = split_engine(tiny_base_model, fragile_replica).generate(params, decode=False).latents
    first_pid = fragile_replica.parallel.pair.follower_pid
    reported = len(fragile_replica.health)
    killer = split_engine(tiny_base_model, fragile_replica, lambda loras, unet, steps: KillFollowerAt(fragile_replica, 2))

    with pytest.raises(WorkerLost) as failure:
        killer.generate(params, decode=False)
    assert isinstance(failure.value, Unavailable)  # UNAVAILABLE at the gRPC edge: clients retry elsewhere
    assert not fragile_replica.parallel.healthy
    assert fragile_replica.health[-1] is False
    with pytest.raises(WorkerLost):  # refused while recovering, before any work
        split_engine(tiny_base_model, fragile_replica).generate(params, decode=False)

    assert fragile_replica.parallel.pair.wait_healthy(120)
    assert fragile_replica.health[reported:] == [False, True]
    assert fragile_replica.parallel.pair.follower_pid not in (None, first_pid)
    after = split_engine(tiny_base_model, fragile_replica).generate(params, decode=False).latents
    assert torch.equal(before, after)


def test_failing_follower_branch_fails_the_request_but_keeps_the_replica_serving(
    tiny_base_model, tiny_controlnet_engine, fragile_replica: Replica
) -> None:
    reported = len(fragile_replica.health)
    with pytest.raises(BranchFailed, match="ControlNet"):
        split_engine(tiny_base_model, fragile_replica, controlnets=tiny_controlnet_engine).generate(
            params_with(1, steps=3), decode=False
        )
    assert fragile_replica.parallel.healthy and len(fragile_replica.health) == reported
    plain = split_engine(tiny_base_model, fragile_replica).generate(params_with(0, steps=3), decode=False).latents
    assert torch.equal(plain, split_engine(tiny_base_model, fragile_replica).generate(params_with(0, steps=3), decode=False).latents)


def test_follower_dying_between_requests_is_noticed_and_replaced(tiny_base_model, fragile_replica: Replica) -> None:
    pair = fragile_replica.parallel.pair
    assert pair.wait_healthy(120)
    reported, first_pid = len(fragile_replica.health), pair.follower_pid
    assert first_pid is not None
    os.kill(first_pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pair.healthy and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pair.healthy  # NOT_SERVING before any request has to fail
    assert pair.wait_healthy(120)
    assert fragile_replica.health[reported:] == [False, True] and pair.follower_pid != first_pid
    params = params_with(0, steps=2)
    ours = split_engine(tiny_base_model, fragile_replica).generate(params, decode=False).latents
    assert torch.equal(ours, BaseEngine(tiny_base_model, predictor=SequentialCfg(tiny_base_model.unet)).generate(params, decode=False).latents)
