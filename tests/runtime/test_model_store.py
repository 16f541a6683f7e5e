"""Model references resolve offline: folders, folders under the store, and hub ids in the
store's hub cache; a model that is none of these stops the start naming it."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from swiftdiffusion.runtime.config import ControlNetEntry, RuntimeConfig
from swiftdiffusion.runtime.controlnet.loader import controlnet_loader
from swiftdiffusion.runtime.serving.model_store import ModelStoreError, prepare_models, resolve

CANNY_ID = "diffusers/controlnet-canny-sdxl-1.0"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(store: Path, repo: str, folder: Path) -> Path:
    """`folder` as `huggingface-cli download --cache-dir store` leaves a repo (refs/main -> snapshot)."""
    repo_folder = store / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, repo_folder / "snapshots" / COMMIT)
    (repo_folder / "refs").mkdir()
    (repo_folder / "refs" / "main").write_text(COMMIT)
    return repo_folder / "snapshots" / COMMIT


def controlnet_config(store: Path, reference: str, downloads: bool = False) -> RuntimeConfig:
    return RuntimeConfig(role="controlnet", model_store=str(store), model_downloads=downloads,
                         controlnets=[ControlNetEntry(name="canny", model=reference)])


def test_hub_id_in_the_stores_hub_cache_loads_without_network(tiny_model_set: Path, tmp_path: Path) -> None:
    snapshot = hub_cache(tmp_path, CANNY_ID, tiny_model_set / "controlnets" / "canny")
    assert resolve(CANNY_ID, str(tmp_path)) == str(snapshot)
    config = controlnet_config(tmp_path, CANNY_ID)
    prepare_models(config)
    model = controlnet_loader(config, torch.device("cpu"), "float32")("canny")
    assert model.config.conditioning_channels == 3


def test_folder_under_the_store_wins_and_unknown_names_stay_as_given(tiny_model_set: Path, tmp_path: Path) -> None:
    (tmp_path / "diffusers").mkdir()
    shutil.copytree(tiny_model_set / "controlnets" / "canny", tmp_path / CANNY_ID)
    assert resolve(CANNY_ID, str(tmp_path)) == str(tmp_path / CANNY_ID)
    assert resolve("other/model", str(tmp_path)) == "other/model"
    assert resolve("not a repo id!", str(tmp_path)) == "not a repo id!"


def test_missing_model_with_downloads_off_stops_the_start_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ModelStoreError) as error:
        prepare_models(controlnet_config(tmp_path, CANNY_ID))
    assert str(error.value) == f"ControlNet canny {CANNY_ID}: not in the model store {tmp_path} and modelDownloads is off"


def test_a_missing_store_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelStoreError, match=f"^model store {tmp_path / 'absent'}: no such directory$"):
        prepare_models(controlnet_config(tmp_path / "absent", CANNY_ID))
