"""`serve-base` with latentParallelism: two workers in one pod, gRPC health follows the follower."""
from __future__ import annotations

import io
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from swiftdiffusion.runtime.client import generate, generate_request
from swiftdiffusion.runtime.controlnet.control_image import encode_png
from swiftdiffusion.runtime.dev.ports import free_port
from swiftdiffusion.runtime.dev.local_stack import ServiceProcess, StackOptions, stack_configs, start_service
from swiftdiffusion.runtime.serving.grpc_common import check_health
from tests.runtime.helpers import control_image


def spawned_children(pid: int) -> list[int]:
    """Child processes started by multiprocessing's spawn (the follower, not its resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if parent == pid and b"spawn_main" in command:
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def split_base(tiny_stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A latent-parallel base service beside tiny_stack's batched one, sharing its ControlNet service."""
    options = StackOptions(
        tiny_stack.options.model_set, base_port=free_port(), base_metrics_port=free_port(), threads=1,
        defaults=tiny_stack.options.defaults,
    )
    config, _ = stack_configs(options)
    section = config.base.model_copy(
        update={"latent_parallelism": True, "controlnet_service": tiny_stack.controlnet.target}
    )
    service = start_service("base", config.model_copy(update={"base": section}), tmp_path_factory.mktemp("split-base"))
    try:
        service.wait_healthy(300)
        yield service
    finally:
        service.stop()


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)), dtype=np.int16)


def request(seed: int = 5):
    canny = encode_png(control_image(64, 0))
    return generate_request("a red cube on a table", seed=seed, controlnets=[("canny", canny, 0.8)])


def test_split_pod_serves_the_batched_pods_image(tiny_stack, split_base: ServiceProcess) -> None:
    ours = generate(split_base.target, request(), timeout=120)
    batched = generate(tiny_stack.base.target, request(), timeout=120)
    assert (ours.width, ours.height) == (batched.width, batched.height)
    assert np.abs(pixels(ours.png) - pixels(batched.png)).max() <= 1  # float rounding may flip a level


def test_killed_follower_turns_health_not_serving_until_it_is_replaced(split_base: ServiceProcess) -> None:
    before = generate(split_base.target, request(seed=9), timeout=120).png
    followers = spawned_children(split_base.process.pid)
    assert len(followers) == 1
    os.kill(followers[0], signal.SIGKILL)
    deadline = time.monotonic() + 15
    while check_health(split_base.target) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not check_health(split_base.target)
    deadline = time.monotonic() + 180
    while not check_health(split_base.target) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert check_health(split_base.target)
    assert spawned_children(split_base.process.pid) not in ([], followers)
    assert generate(split_base.target, request(seed=9), timeout=120).png == before
