"""A runtime container that cannot start says why in one line naming the path or model, and
exits non-zero, before it binds a port: what `kubectl logs` shows for a crash-looping pod."""
from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from swiftdiffusion.operator import render
from tests.images.fixtures import example_workflow_with
from tests.images.podman import run_detached
from tests.images.pods import pool_manifests, run_options, write_config_map

pytestmark = pytest.mark.slow

BASE_MODEL = "stabilityai/stable-diffusion-xl-base-1.0"
DOWNLOADING = f"base model {BASE_MODEL}: not in the model store /models; downloading it there (modelDownloads is on)"


def base_pod(writable_store: bool) -> tuple[dict, dict]:
    """(ConfigMap, Deployment) of the example's base pool; its store a writable PVC if asked."""
    workflow = example_workflow_with(read_only_store=not writable_store)
    return pool_manifests(render.render_workflow(workflow), render.base_pool_name(workflow.name))


def empty_folder(path: Path, mode: int = 0o755, owner: int | None = None) -> Path:
    path.mkdir()
    path.chmod(mode)
    if owner is not None:
        os.chown(path, owner, owner)
    return path


def _missing_config(tmp: Path, deployment: dict, model_set: Path) -> dict[str, Path]:
    return {"config": empty_folder(tmp / "config"), "models": empty_folder(tmp / "models")}


def _unreadable_store(tmp: Path, deployment: dict, model_set: Path) -> dict[str, Path]:
    return {"models": empty_folder(tmp / "models", mode=0o700)}


def _model_missing_from_read_only_store(tmp: Path, deployment: dict, model_set: Path) -> dict[str, Path]:
    return {"models": empty_folder(tmp / "models")}


def _weights_readable_by_owner_only(tmp: Path, deployment: dict, model_set: Path) -> dict[str, Path]:
    store = empty_folder(tmp / "models")
    shutil.copytree(model_set / "base", store / BASE_MODEL)
    for path in (store / BASE_MODEL).rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    (store / BASE_MODEL / "text_encoder" / "model.safetensors").chmod(0o600)  # as save_pretrained leaves it
    return {"models": store}


def _writable_store_mounted_read_only(tmp: Path, deployment: dict, model_set: Path) -> dict[str, Path]:
    for mount in deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]:
        if mount["name"] == "models":
            mount["readOnly"] = True  # a ReadOnlyMany claim
    return {"models": empty_folder(tmp / "models", owner=render.RUNTIME_UID)}


def _download_without_network(tmp: Path, deployment: dict, model_set: Path) -> dict[str, Path]:
    return {"models": empty_folder(tmp / "models", owner=render.RUNTIME_UID)}


Setup = Callable[[Path, dict, Path], dict[str, Path]]
CASES: dict[str, tuple[bool, Setup, int, str]] = {
    "missing config file": (False, _missing_config, 2,
                            "config /etc/swiftdiffusion/config.yaml: no such file or directory"),
    "unreadable model store": (False, _unreadable_store, 1, "model store /models: not readable by uid 10001"),
    "model missing, downloads off": (False, _model_missing_from_read_only_store, 1,
                                     f"base model {BASE_MODEL}: not in the model store /models and modelDownloads is off"),
    "weights readable by their owner only": (False, _weights_readable_by_owner_only, 1,
                                             f"base model {BASE_MODEL}: /models/{BASE_MODEL}/text_encoder/"
                                             "model.safetensors is not readable by uid 10001"),
    "downloads on, store read-only": (True, _writable_store_mounted_read_only, 1,
                                      "model store /models: not writable by uid 10001, and modelDownloads is on"),
    "downloads on, no network": (True, _download_without_network, 1,
                                 f"base model {BASE_MODEL}: download into the model store /models failed: "),
}


@pytest.mark.parametrize("case", CASES)
def test_container_that_cannot_start_names_the_path_in_one_line(case: str, images: dict[str, str],
                                                                tiny_model_set: Path, tmp_path: Path) -> None:
    writable, setup, code, message = CASES[case]
    config_map, deployment = base_pod(writable)
    sources = {"config": write_config_map(config_map, tmp_path / "configmap"), **setup(tmp_path, deployment, tiny_model_set)}
    # No network: nothing here may depend on one, and a download must fail, not hang.
    container = run_detached(run_options(deployment, images["runtime"], sources, "none"),
                             f"bad-input-{uuid.uuid4().hex[:6]}")
    try:
        assert container.wait_exit(timeout=120) == code
        lines = container.logs().strip().splitlines()
        assert lines[-1].startswith(message), lines[-5:]
        assert sum(message in line for line in lines) == 1
        if case == "downloads on, no network":
            assert DOWNLOADING in lines
        assert "Traceback" not in lines
    finally:
        container.remove()
