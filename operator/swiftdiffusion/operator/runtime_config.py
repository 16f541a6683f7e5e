"""The runtime's config.yaml, rendered to the container contract in docs/architecture.md."""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import yaml

from swiftdiffusion.operator.model import ControlNetSpec, LatentParallelism, LoraSpec, Workflow

GRPC_PORT = 50051
METRICS_PORT = 9400
CONFIG_DIR = "/etc/swiftdiffusion"
CONFIG_FILE = "config.yaml"


def _common(role: str, wf: Workflow) -> dict[str, Any]:
    return {
        "role": role,
        "grpcPort": GRPC_PORT,
        "metricsPort": METRICS_PORT,
        "modelStore": wf.spec.model_store.path,
        "maxWidth": wf.spec.serving.max_width,
        "maxHeight": wf.spec.serving.max_height,
    }


def _controlnet(cn: ControlNetSpec) -> dict[str, Any]:
    return {"name": cn.name, "model": cn.model, "conditioningScale": cn.conditioning_scale}


def _lora(lora: LoraSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"name": lora.name, "source": lora.source, "scale": lora.scale}
    if lora.k is not None:
        out["k"] = lora.k
    return out


def base_config(wf: Workflow, controlnet_endpoint: str | None) -> dict[str, Any]:
    spec = wf.spec
    base: dict[str, Any] = {
        "model": spec.base.model,
        "revision": spec.base.revision,
        "dtype": str(spec.base.dtype),
        "defaults": spec.base.defaults.model_dump(by_alias=True),
        "controlnetMode": str(spec.serving.controlnet_mode),
        "latentParallelism": spec.serving.latent_parallelism is LatentParallelism.ENABLED,
        "balDefaultK": spec.serving.bal_default_k,
        "loras": [_lora(lora) for lora in spec.loras],
    }
    if controlnet_endpoint:
        base["controlnetService"] = controlnet_endpoint
    return {**_common("base", wf), "base": base, "controlnets": [_controlnet(cn) for cn in spec.controlnets]}


def controlnet_config(settings_from: Workflow, controlnets: Sequence[ControlNetSpec]) -> dict[str, Any]:
    """A ControlNet pool serving `controlnets`, configured by the workflow that owns its settings."""
    return {
        **_common("controlnet", settings_from),
        "controlnets": [_controlnet(cn) for cn in controlnets],
        "controlnet": {"cacheBytes": settings_from.spec.controlnet_pool.cache_bytes},
    }


def to_yaml(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False)


def digest(text: str) -> str:
    """Short content hash, stamped on pod templates so a config change rolls the pool."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]
