"""Runtime fixtures: offline-built model sets, cached across sessions by their parameters."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import diffusers
import pytest
import transformers

from swiftdiffusion.runtime.model_factory import MODEL_SET_VERSION, build_model_set

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
