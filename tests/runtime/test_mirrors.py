"""Modules that mirror diffusers code notice when the installed diffusers' source changes
(as diffusers' own `# Copied from` + `make fix-copies` keep its copies honest)."""
from __future__ import annotations

import hashlib
import importlib
import inspect

import pytest

from swiftdiffusion.runtime.controlnet import forward
from swiftdiffusion.runtime.pipeline import unet_split

MIRRORED = [(module, target, digest) for module in (unet_split, forward) for target, digest in module.MIRRORS.items()]


def source_digest(target: str) -> str:
    module_name, qualified = target.split(":")
    obj = importlib.import_module(module_name)
    for part in qualified.split("."):
        obj = getattr(obj, part)
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


@pytest.mark.parametrize(("module", "target", "digest"), MIRRORED, ids=[target for _, target, _ in MIRRORED])
def test_mirrored_diffusers_source_is_unchanged(module, target: str, digest: str) -> None:
    current = source_digest(target)
    assert current == digest, (
        f"{target} changed in the installed diffusers (digest {current}, {module.__name__} mirrors {digest}): "
        f"port the change to {module.__name__}, run its exactness tests, then update MIRRORS"
    )

