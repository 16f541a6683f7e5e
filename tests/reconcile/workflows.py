"""Workflow bodies for the reconcile tests, as the API server would hand them over."""
from __future__ import annotations

import copy
import pathlib
import uuid
from typing import Any

import yaml

from swiftdiffusion.operator import model as m

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


def example(name: str) -> list[dict[str, Any]]:
    """The documents of examples/<name>.yaml."""
    return [d for d in yaml.safe_load_all((EXAMPLES / f"{name}.yaml").read_text()) if d]


def body(name: str = "wf", namespace: str = "ns", created: str = "2026-01-01T00:00:00Z",
         **spec: Any) -> dict[str, Any]:
    spec = {"base": {"model": "stabilityai/stable-diffusion-xl-base-1.0"}, **spec}
    return {"apiVersion": f"{m.GROUP}/{m.VERSION}", "kind": m.KIND,
            "metadata": {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()), "generation": 1,
                         "creationTimestamp": created},
            "spec": copy.deepcopy(spec)}


def workflow(name: str = "wf", namespace: str = "ns", created: str = "2026-01-01T00:00:00Z",
             **spec: Any) -> m.Workflow:
    return m.Workflow.from_body(body(name, namespace, created, **spec))


CANNY = {"name": "canny", "model": "diffusers/controlnet-canny-sdxl-1.0", "conditioningScale": 0.5}
DEPTH = {"name": "depth", "model": "diffusers/controlnet-depth-sdxl-1.0", "conditioningScale": 0.6}
