"""Runtime fixtures: offline-built model sets, cached across sessions by their parameters."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import diffusers
import pytest
import transformers

from swiftdiffusion.runtime.dev.model_factory import MODEL_SET_VERSION, build_model_set

CACHE = Path(os.environ.get("SWIFTDIFFUSION_MODEL_CACHE", Path.home() / ".cache" / "swiftdiffusion" / "models"))


def cached_model_set(size: str, controlnets: tuple[str, ...] = ("canny", "depth", "pose"), seed: int = 0) -> Path:
    """A built model set in the shared cache, keyed by everything that shapes its weights."""
    key = json.dumps([MODEL_SET_VERSION, size, controlnets, seed, diffusers.__version__, transformers.__version__])
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return build_model_set(CACHE / f"{size}-{digest}", size, controlnets, seed)


@pytest.fixture(scope="session")
def tiny_model_set() -> Path:
    """The tiny SDXL-architecture set (base + canny, depth, pose ControlNets)."""
    return cached_model_set("tiny")


@pytest.fixture(scope="session")
def tiny_base_model(tiny_model_set: Path):
    from swiftdiffusion.runtime.pipeline.base_model import BaseModel

    return BaseModel.load(tiny_model_set / "base", device="cpu")


@pytest.fixture(scope="session")
def tiny_controlnet_engine(tiny_model_set: Path):
    """An in-process ControlNet engine over the tiny set's ControlNets."""
    import torch
    from diffusers import ControlNetModel

    from swiftdiffusion.runtime.controlnet.cache import ControlNetCache
    from swiftdiffusion.runtime.controlnet.engine import ControlNetEngine
    from swiftdiffusion.runtime.serving.metrics import RuntimeMetrics

    folder = tiny_model_set / "controlnets"
    cache = ControlNetCache(
        [p.name for p in folder.iterdir()],
        lambda name: ControlNetModel.from_pretrained(folder / name),
        budget_bytes=1 << 30,
        metrics=RuntimeMetrics("controlnet"),
    )
    return ControlNetEngine(cache, torch.device("cpu"), torch.float32)


@pytest.fixture(scope="session")
def tiny_stack(tiny_model_set: Path, tmp_path_factory: pytest.TempPathFactory):
    """ControlNet and base services as real subprocesses on free ports, one torch thread each."""
    from swiftdiffusion.runtime.config import Defaults
    from swiftdiffusion.runtime.dev.local_stack import StackOptions, local_stack

    options = StackOptions.on_free_ports(
        tiny_model_set,
        threads=1,
        defaults=Defaults(steps=3, guidance_scale=5.0, width=64, height=64),
    )
    with local_stack(options, tmp_path_factory.mktemp("stack")) as stack:
        yield stack
