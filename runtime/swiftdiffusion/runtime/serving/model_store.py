"""The model store: resolving model references, and making sure every configured model is
there before a server starts.

A reference is a folder (an absolute path or a path under `modelStore`), or a hub id found
in the store's hub cache (`models--org--name`, as `huggingface-cli download --cache-dir`
leaves it). With `modelDownloads` off the runtime never touches the network: a model not in
the store ends the start with one line naming it. With it on (a writable PVC), a missing
hub id is downloaded into the store on the first start and found there on every later one.

Nothing here imports torch: a pod that cannot start says why within a second, not after the
seconds torch and diffusers take to import.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from swiftdiffusion.runtime.config import RuntimeConfig

# What the loaders read, so a download fetches neither other formats nor variants: diffusers
# loads the non-variant safetensors of each component when no variant is asked for.
PIPELINE_FILES = ["*.json", "*.txt", "*/diffusion_pytorch_model.safetensors", "*/model.safetensors"]
CONTROLNET_FILES = ["config.json", "diffusion_pytorch_model.safetensors"]


class ModelStoreError(RuntimeError):
    """A model store or model the server cannot start with; the message names it in one line."""


def _hub_snapshot(reference: str, revision: str | None, model_store: str) -> str | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    try:
        return snapshot_download(reference, revision=revision, cache_dir=model_store, local_files_only=True)
    except (HFValidationError, LocalEntryNotFoundError):
        return None


def resolve(reference: str, model_store: str | None, revision: str | None = None) -> str:
    """A local folder if the reference names one (directly, under the store, or in the
    store's hub cache), else the reference itself."""
    if Path(reference).exists():
        return reference
    if model_store and (Path(model_store) / reference).exists():
        return str(Path(model_store) / reference)
    if model_store:
        return _hub_snapshot(reference, revision, model_store) or reference
    return reference


def check_store(config: RuntimeConfig) -> None:
    """The store is a folder this user can read, and write when downloads are on."""
    store = config.model_store
    if store is None:
        if config.model_downloads:
            raise ModelStoreError("modelDownloads is on but no modelStore is configured to download into")
        return
    who = f"uid {os.getuid()}"
    if not Path(store).is_dir():
        raise ModelStoreError(f"model store {store}: no such directory")
    if not os.access(store, os.R_OK | os.X_OK):
        raise ModelStoreError(f"model store {store}: not readable by {who}")
    if config.model_downloads and not os.access(store, os.W_OK):
        raise ModelStoreError(f"model store {store}: not writable by {who}, and modelDownloads is on")


def configured_models(config: RuntimeConfig) -> list[tuple[str, str, str | None, list[str]]]:
    """(what, reference, revision, files) of every model this server loads itself."""
    models = []
    if config.role == "base":
        base = config.require_base()
        models.append(("base model", base.model, base.revision, PIPELINE_FILES))
        if base.controlnet_service:
            return models  # its ControlNets run in the ControlNet pool
    return models + [(f"ControlNet {c.name}", c.model or c.name, None, CONTROLNET_FILES) for c in config.controlnets]


def _download(what: str, reference: str, revision: str | None, files: list[str], store: str) -> None:
    from huggingface_hub import snapshot_download

    print(f"{what} {reference}: not in the model store {store}; downloading it there (modelDownloads is on)",
          flush=True)
    started = time.monotonic()
    try:
        folder = snapshot_download(reference, revision=revision, cache_dir=store, allow_patterns=files)
    except Exception as error:  # unknown id, no network, no permission: the start ends the same way
        reason = " ".join(str(error).split())[:300]
        raise ModelStoreError(f"{what} {reference}: download into the model store {store} failed: "
                              f"{type(error).__name__}: {reason}") from None
    size = sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
    print(f"{what} {reference}: downloaded {size / 1e9:.2f} GB into {folder} in {time.monotonic() - started:.0f} s",
          flush=True)


def _check_readable(what: str, reference: str, folder: Path) -> None:
    """Every file of a model folder readable: a weight file saved owner-only by another user
    otherwise fails deep in the loader with a misleading "no such file"."""
    for path in [folder, *folder.rglob("*")]:
        if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
            raise ModelStoreError(f"{what} {reference}: {path} is not readable by uid {os.getuid()}")


def prepare_models(config: RuntimeConfig) -> None:
    """Before the server starts: every model it loads is in the store (downloaded there if
    allowed) and readable."""
    check_store(config)
    store = config.model_store
    for what, reference, revision, files in configured_models(config):
        if not Path(resolve(reference, store, revision)).is_dir():
            if not (store and config.model_downloads):
                where = f"the model store {store}" if store else "this container (no modelStore)"
                raise ModelStoreError(f"{what} {reference}: not in {where} and modelDownloads is off")
            _download(what, reference, revision, files, store)
        _check_readable(what, reference, Path(resolve(reference, store, revision)))
