"""The fleet's model store: the tiny offline model set laid out under the names that
workflows use, so an example (hub ids, LoRAs under /models/loras) runs unchanged.

Hub ids become folders holding the tiny base model or ControlNet (by the ControlNet's kind,
read from its name); LoRA files named under the store's mount path become random LoRAs for
the tiny base. Files are hard links into the model set (copies across file systems), never
symlinks, so a pod sees them whatever its mounts cover. A real store holds the real
weights at the same names.
"""
from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from swiftdiffusion.runtime.dev.synthetic_lora import lora_for_model_set
from tests.testbed.api import ApiClient

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
# Where the runtime image keeps its models (a model store of type Image): the fleet's
# kubelet mounts the store there, as if the image held it.
IMAGE_MODEL_PATH = "/models"

CONTROLNET_KINDS = ("canny", "depth", "pose")


def example_workflows() -> list[dict[str, Any]]:
    return [doc for path in sorted(EXAMPLES.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def controlnet_kind(reference: str) -> str:
    """The tiny ControlNet standing in for `reference` (canny unless its name says otherwise)."""
    return next((kind for kind in CONTROLNET_KINDS if kind in reference.lower()), "canny")


def _place(path: Path, target: Path) -> None:
    """`target`'s files at `path`, hard-linked (copied across file systems), not a symlink: a
    pod sees the store through a bind mount, and a link pointing under /tmp (a model cache in
    a HOME there) would point into the pod's own emptyDir instead."""
    if path.exists():
        return  # placed before: a name always stands for the same model
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    if target.is_dir():
        shutil.copytree(target, partial, copy_function=_hard_link)
    else:
        _hard_link(target, partial)
    partial.rename(path)


def _hard_link(source: str | Path, destination: str | Path) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def populate(store: Path, model_set: Path, workflows: Iterable[dict[str, Any]]) -> Path:
    """Fills `store` (the host folder of a workflow's model store) for every workflow body."""
    for workflow in workflows:
        spec = workflow["spec"]
        mount = spec.get("modelStore", {}).get("path", "/models")
        _place(store / spec["base"]["model"], model_set / "base")
        for controlnet in spec.get("controlnets", []):
            reference = controlnet.get("model") or controlnet["name"]
            _place(store / reference, model_set / "controlnets" / controlnet_kind(reference))
        for lora in spec.get("loras", []):
            source = Path(lora["source"])
            if source.is_absolute() and source.is_relative_to(mount):
                name = source.stem
                _place(store / source.relative_to(mount), lora_for_model_set(model_set, name))
    return store


def bind_claim(api: ApiClient, namespace: str, store: Path, claim: str = "sdxl-models") -> str:
    """A PersistentVolume on `store`, pre-bound to `claim` in `namespace`, as an admin
    provides a model store; returns the volume's name (delete it when done)."""
    volume = f"{namespace}-{claim}"
    api.request("POST", "/api/v1/persistentvolumes", {
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
        "spec": {"capacity": {"storage": "1Ti"}, "accessModes": ["ReadOnlyMany"], "storageClassName": "",
                 "persistentVolumeReclaimPolicy": "Retain", "hostPath": {"path": str(store)},
                 "claimRef": {"namespace": namespace, "name": claim}}})
    api.request("POST", f"/api/v1/namespaces/{namespace}/persistentvolumeclaims", {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim},
        "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "", "volumeName": volume,
                 "resources": {"requests": {"storage": "1Ti"}}}})
    return volume
